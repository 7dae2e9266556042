//! `haproxy -sf/-st`: taking a listening address over from the processes
//! being replaced without losing a connection.
//!
//! The new process binds next to the old ones in one SO_REUSEPORT group
//! ([`crate::sockets::Sharing::TakingOver`]). The kernel spreads new
//! connections over every socket of the group, and a socket that closes
//! resets the connections still in its accept queue (unless the host set
//! `net.ipv4.tcp_migrate_req`). So before the old processes are told to
//! stop, the new one steers the group to its own sockets with a classic
//! BPF program (`SO_ATTACH_REUSEPORT_CBPF`: pick one of *our* indices in
//! the group), waits until the old sockets' accept queues are empty (their
//! workers still accept), and only then signals them.
//!
//! # Lifecycle
//!
//! [`Steering::attach`] (old sockets counted from `/proc/net/tcp*`, program
//! attached) → [`Steering::old_queued`] is 0 → [`Steering::pin`] (one
//! socket of ours, safe while the old sockets leave) → old processes
//! signalled →
//! [`Steering::old_listening`] reaches 0 (they closed their sockets) →
//! [`Steering::detach`]: the kernel's own hash spreads connections again.
//! Between `pin` and `detach` one worker of ours takes every new
//! connection on the address (the old sockets close within milliseconds
//! of the signal). A program index past the end of the group makes the
//! kernel fall back to its hash, so no connection is ever misrouted.

use std::io::{self, BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

use crate::sockets::ListenerSockets;

const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;
const SO_DETACH_REUSEPORT_BPF: libc::c_int = 68;

/// One address being taken over.
#[derive(Debug)]
pub struct Steering {
    bind: SocketAddr,
    /// Our sockets' inodes (to tell them from the old ones in /proc).
    own: Vec<u64>,
    /// A socket of ours (a duplicate), to detach the program through.
    fd: OwnedFd,
    attached: bool,
    /// Sockets in the group before ours, and ours.
    old: u32,
    ours: u32,
}

/// A listening socket of `/proc/net/tcp*`: its inode and accept queue.
struct Listening {
    inode: u64,
    queued: u64,
}

impl Steering {
    /// Steers new connections for `sockets`' address to them. Without old
    /// sockets on the address nothing is attached.
    pub fn attach(sockets: &ListenerSockets) -> io::Result<Steering> {
        let fds = sockets.raw_fds();
        let own = fds
            .iter()
            .map(|&fd| std::fs::metadata(format!("/proc/self/fd/{fd}")).map(|m| m.ino()))
            .collect::<io::Result<Vec<u64>>>()?;
        // SAFETY: `fds` are open as long as `sockets`, which we borrow.
        let fd = unsafe { BorrowedFd::borrow_raw(fds[0]) }.try_clone_to_owned()?;
        let mut steering = Steering {
            bind: sockets.bind(),
            own,
            fd,
            attached: false,
            old: 0,
            ours: 0,
        };
        let group = listening(steering.bind)?;
        let old = group.iter().filter(|l| !steering.is_own(l)).count() as u32;
        if old == 0 {
            return Ok(steering);
        }
        // Our sockets joined the group after the old ones: indices
        // old..old+ours.
        steering.old = old;
        steering.ours = fds.len() as u32;
        attach_program(&steering.fd, old, Some(steering.ours))?;
        steering.attached = true;
        Ok(steering)
    }

    /// Just before the old processes close their sockets: every new
    /// connection goes to our first socket (index `old`).
    ///
    /// Each socket that leaves the group is replaced in its slot by the
    /// group's last one, so a program spreading over `old..old+ours` would
    /// point past the end as the old sockets close, and the kernel would
    /// fall back to its hash over every socket, old ones included. Index
    /// `old` stays one of ours while any old socket is left, provided we
    /// have at least as many sockets as the old ones (the old sockets
    /// never move: the last slot is always ours); past the end, once they
    /// are all gone, the hash only sees ours. Returns false (program
    /// unchanged) when we have fewer sockets than the old ones.
    pub fn pin(&mut self) -> io::Result<bool> {
        if !self.attached || self.ours < self.old {
            return Ok(false);
        }
        attach_program(&self.fd, self.old, None)?;
        Ok(true)
    }

    pub fn bind(&self) -> SocketAddr {
        self.bind
    }

    fn is_own(&self, l: &Listening) -> bool {
        self.own.contains(&l.inode)
    }

    /// Connections waiting in the old sockets' accept queues.
    pub fn old_queued(&self) -> io::Result<u64> {
        Ok(listening(self.bind)?
            .iter()
            .filter(|l| !self.is_own(l))
            .map(|l| l.queued)
            .sum())
    }

    /// How many old sockets still listen on the address.
    pub fn old_listening(&self) -> io::Result<usize> {
        Ok(listening(self.bind)?
            .iter()
            .filter(|l| !self.is_own(l))
            .count())
    }

    /// Removes the program (the old sockets are gone): back to the
    /// kernel's hash.
    pub fn detach(&mut self) -> io::Result<()> {
        if !self.attached {
            return Ok(());
        }
        let zero: libc::c_int = 0;
        // SAFETY: setsockopt with an int option value.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_DETACH_REUSEPORT_BPF,
                (&zero as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        self.attached = false;
        Ok(())
    }
}

/// Attaches the group's program: `A = random % ours + old`, or with no
/// `ours`, `A = old`.
fn attach_program(fd: &OwnedFd, old: u32, ours: Option<u32>) -> io::Result<()> {
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let program: Vec<libc::sock_filter> = match ours {
        Some(ours) => vec![
            stmt(
                libc::BPF_LD | libc::BPF_W | libc::BPF_ABS,
                (libc::SKF_AD_OFF + libc::SKF_AD_RANDOM) as u32,
            ),
            stmt(libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K, ours),
            stmt(libc::BPF_ALU | libc::BPF_ADD | libc::BPF_K, old),
            stmt(libc::BPF_RET | libc::BPF_A, 0),
        ],
        None => vec![stmt(libc::BPF_RET | libc::BPF_K, old)],
    };
    let prog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: `prog` points at `program`, alive for the call; the kernel
    // copies it.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_REUSEPORT_CBPF,
            (&prog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The listening TCP sockets on exactly `bind` in this network namespace.
fn listening(bind: SocketAddr) -> io::Result<Vec<Listening>> {
    let table = match bind.ip() {
        IpAddr::V4(_) => "/proc/net/tcp",
        IpAddr::V6(_) => "/proc/net/tcp6",
    };
    // The kernel lists the listening sockets first, then every other
    // (established, TIME_WAIT...): tens of thousands on a busy host, and
    // reading them all in small pieces took seconds under load (each read
    // of /proc/net/tcp walks the socket tables again). So read in large
    // pieces and stop at the first socket that is not listening.
    let file = std::fs::File::open(table)?;
    let mut found = Vec::new();
    let mut seen_listening = false;
    for line in BufReader::with_capacity(256 * 1024, file).lines().skip(1) {
        let line = line?;
        if !is_listening(&line) {
            if seen_listening {
                break;
            }
            continue;
        }
        seen_listening = true;
        found.extend(parse_line(&line, bind));
    }
    Ok(found)
}

/// Whether a `/proc/net/tcp*` line is a listening socket (state `0A`).
fn is_listening(line: &str) -> bool {
    line.split_whitespace().nth(3) == Some("0A")
}

/// One `/proc/net/tcp*` line if it is a socket listening on `bind`.
fn parse_line(line: &str, bind: SocketAddr) -> Option<Listening> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (local, state, queues, inode) = (
        fields.get(1)?,
        fields.get(3)?,
        fields.get(4)?,
        fields.get(9)?,
    );
    if *state != "0A" {
        return None;
    }
    let (addr, port) = local.split_once(':')?;
    if u16::from_str_radix(port, 16).ok()? != bind.port() || parse_addr(addr)? != bind.ip() {
        return None;
    }
    let queued = u64::from_str_radix(queues.split_once(':')?.1, 16).ok()?;
    Some(Listening {
        inode: inode.parse().ok()?,
        queued,
    })
}

/// The kernel prints addresses as 32-bit words in host order (x86: each
/// word's bytes reversed).
fn parse_addr(hex: &str) -> Option<IpAddr> {
    let words: Vec<u32> = (0..hex.len() / 8)
        .map(|i| u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok())
        .collect::<Option<_>>()?;
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    match bytes.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tcp_lines() {
        let bind: SocketAddr = "127.0.0.1:8080".parse().expect("addr");
        let line = "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000003 00:00000000 00000000     0        0 4173468 1 0000000088138c86 100 0 0 10 0";
        let l = parse_line(line, bind).expect("listening");
        assert_eq!((l.inode, l.queued), (4173468, 3));
        // Another port, or not listening.
        assert!(parse_line(&line.replace("1F90", "1F91"), bind).is_none());
        assert!(parse_line(&line.replace(" 0A ", " 01 "), bind).is_none());
        let v6: SocketAddr = "[::1]:8080".parse().expect("addr");
        let line6 = "   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 77 1 0";
        assert_eq!(parse_line(line6, v6).expect("v6").inode, 77);
    }

    #[test]
    fn steering_a_group_taken_over() {
        // "Old" sockets, then ours, in one group; connections made after
        // the program is attached all land on ours.
        let bind = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let old = ListenerSockets::open(
            bind,
            lbd_config::Protocol::Tcp,
            2,
            false,
            true,
            crate::sockets::Sharing::Exclusive,
        )
        .expect("old");
        let ours = ListenerSockets::open(
            bind,
            lbd_config::Protocol::Tcp,
            2,
            false,
            true,
            crate::sockets::Sharing::TakingOver,
        )
        .expect("ours");
        let mut steering = Steering::attach(&ours).expect("attach");
        assert_eq!(steering.old_listening().expect("proc"), 2);
        let clients: Vec<_> = (0..40)
            .map(|_| std::net::TcpStream::connect(bind).expect("connect"))
            .collect();
        assert_eq!(
            steering.old_queued().expect("proc"),
            0,
            "none on the old sockets"
        );
        assert!(steering.attached);
        drop(clients);
        assert!(steering.pin().expect("pin"));
        old.close();
        assert_eq!(steering.old_listening().expect("proc"), 0);
        steering.detach().expect("detach");
    }
}
