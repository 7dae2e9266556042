//! The sockmap relay experiment (issue 19): established connections
//! relayed by the kernel instead of lbd's copy loop. The program
//! (`bpf/sk_relay.c`) is a stream verdict on a SOCKHASH: each socket of a
//! pair is stored under its peer's socket cookie, and data arriving on one
//! is redirected to the egress of the other without waking userspace.
//!
//! The hand-over: pair the sockets before userspace reads anything from
//! them (a PROXY header written to the member first is fine), then
//! [`kick`] both so that what they queued before the pairing is relayed
//! too, in order. Userspace then only waits for the end (EOF, errors), and
//! passes an EOF on with `shutdown` once the peer has queued all that was
//! relayed to it ([`tcp_counts`]).
//!
//! Only the `sockmap` bench (`bench/src/bin/sockmap.rs`) uses it: it is
//! measured against lbd's userspace relay and is not part of lbd (see
//! bench/README.md for why).

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};

use aya::maps::{MapData, SockHash};
use aya::programs::{ProgramError, SkSkb};
use aya::Ebpf;

use crate::Error;

const PROG: &str = "lb_relay";
const MAP: &str = "lb_relay_socks";
const PEERS: &str = "lb_relay_peers";

#[cfg(not(lbd_xdp_unavailable))]
fn object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sk_relay.o"))
}

#[cfg(lbd_xdp_unavailable)]
fn object() -> &'static [u8] {
    &[]
}

/// The loaded relay: its program attached to its socket map.
struct SockRelay {
    socks: SockHash<MapData, u64>,
    peers: SockHash<MapData, u64>,
    _ebpf: Ebpf,
}

fn load_error(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Load(Box::new(e))
}

fn map_error(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Map {
        map: MAP,
        source: Box::new(e),
    }
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<SockHash<MapData, u64>, Error> {
    ebpf.take_map(name)
        .ok_or_else(|| Error::Load(format!("the relay object has no map {name}").into()))?
        .try_into()
        .map_err(map_error)
}

impl SockRelay {
    /// Loads the program and attaches it to its map.
    pub fn load() -> Result<SockRelay, Error> {
        if !crate::built() {
            return Err(Error::NotBuilt);
        }
        let mut ebpf = Ebpf::load(object()).map_err(load_error)?;
        let socks: SockHash<MapData, u64> = take_map(&mut ebpf, MAP)?;
        let peers: SockHash<MapData, u64> = take_map(&mut ebpf, PEERS)?;
        let prog: &mut SkSkb = ebpf
            .program_mut(PROG)
            .ok_or_else(|| Error::Load("the relay object has no program lb_relay".into()))?
            .try_into()
            .map_err(|e: ProgramError| load_error(e))?;
        prog.load().map_err(load_error)?;
        prog.attach(socks.fd()).map_err(load_error)?;
        Ok(SockRelay {
            socks,
            peers,
            _ebpf: ebpf,
        })
    }
}

/// Pairs sockets from any thread without a lock: map updates by
/// `bpf(BPF_MAP_UPDATE_ELEM)` on its own descriptor of the socket map.
/// Keeps the loaded program (and so its attachment) alive.
pub struct SockPairer {
    socks: OwnedFd,
    peers: OwnedFd,
    _relay: Arc<Mutex<SockRelay>>,
}

impl std::fmt::Debug for SockPairer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SockPairer")
            .field("socks", &self.socks)
            .field("peers", &self.peers)
            .finish()
    }
}

impl SockPairer {
    /// Loads the program and attaches it, for pairing from many threads.
    pub fn load() -> Result<SockPairer, Error> {
        let relay = SockRelay::load()?;
        let dup = |fd: &aya::maps::sock::SockMapFd| {
            fd.as_fd().try_clone_to_owned().map_err(|e| Error::Map {
                map: MAP,
                source: Box::new(e),
            })
        };
        Ok(SockPairer {
            socks: dup(relay.socks.fd())?,
            peers: dup(relay.peers.fd())?,
            _relay: Arc::new(Mutex::new(relay)),
        })
    }

    /// Relays `a` and `b` to each other from now on (see [`kick`] for what
    /// they queued before). Each one's peer is put in place before either
    /// socket comes under the program, so no data can arrive without a
    /// peer to go to. A socket leaves the maps when it is closed.
    /// On an error (a full map: 32,768 pairs at once) nothing stays in
    /// the maps.
    pub fn pair(&self, a: RawFd, b: RawFd) -> Result<(), Error> {
        let (ca, cb) = (cookie(a)?, cookie(b)?);
        let steps = [
            (&self.peers, cb, a),
            (&self.peers, ca, b),
            (&self.socks, ca, a),
            (&self.socks, cb, b),
        ];
        for (done, &(map, key, fd)) in steps.iter().enumerate() {
            if let Err(e) = self.update(map, key, fd) {
                for &(map, key, _) in steps[..done].iter().rev() {
                    self.bpf(3 /* BPF_MAP_DELETE_ELEM */, map, key, None);
                }
                return Err(e);
            }
        }
        Ok(())
    }

    fn update(&self, map: &OwnedFd, key: u64, fd: RawFd) -> Result<(), Error> {
        if self.bpf(2 /* BPF_MAP_UPDATE_ELEM */, map, key, Some(fd as u32)) {
            Ok(())
        } else {
            Err(sock_error("lb_relay_socks"))
        }
    }

    /// One map update (`value`) or delete (`None`); whether it succeeded.
    fn bpf(&self, cmd: libc::c_long, map: &OwnedFd, key: u64, value: Option<u32>) -> bool {
        // union bpf_attr for the map element commands: map_fd, (pad),
        // key, value, flags.
        #[repr(C)]
        struct Attr {
            map_fd: u32,
            pad: u32,
            key: u64,
            value: u64,
            flags: u64,
        }
        let value = value.unwrap_or(0);
        let attr = Attr {
            map_fd: map.as_raw_fd() as u32,
            pad: 0,
            key: &key as *const u64 as u64,
            value: &value as *const u32 as u64,
            flags: 0, // BPF_ANY
        };
        // SAFETY: `attr` points at `key` and `value`, alive for the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                &attr as *const Attr,
                std::mem::size_of::<Attr>(),
            )
        };
        rc == 0
    }
}

/// Makes the program relay what `fd` queued before it was paired: the
/// verdict runs when data arrives, so bytes that arrived earlier would
/// wait for the next ones. Setting `SO_RCVLOWAT` makes TCP signal data
/// ready at once (`tcp_set_rcvlowat`), which runs the verdict over the
/// whole receive queue, in order. Userspace never reads the data itself,
/// so nothing it forwards can be overtaken by what the kernel relays.
pub fn kick(fd: RawFd) -> Result<(), Error> {
    let one: libc::c_int = 1;
    // SAFETY: `one` is valid for reads of its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            &one as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(sock_error("SO_RCVLOWAT"));
    }
    Ok(())
}

/// TCP's counters of a relayed socket (`TCP_INFO`, Linux 4.1+).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpCounts {
    /// Data bytes received (what the program relayed away from it, when
    /// userspace read none); a FIN is not counted.
    pub received: u64,
    /// Bytes it has taken to send: acknowledged plus still queued.
    pub queued_out: u64,
    /// Milliseconds since it last received data.
    pub last_recv_ms: u32,
    /// Milliseconds since it last sent data.
    pub last_sent_ms: u32,
}

/// Reads `fd`'s [`TcpCounts`]. After an EOF on one socket of a pair, shut
/// its peer down only once the peer's `queued_out` reached this socket's
/// `received` (plus what userspace wrote to the peer itself, e.g. a PROXY
/// header): relayed data may still be on its way to the peer.
pub fn tcp_counts(fd: RawFd) -> Result<TcpCounts, Error> {
    // struct tcp_info up to tcpi_bytes_received: tcpi_bytes_acked at
    // offset 120, tcpi_bytes_received at 128.
    let mut info = [0u8; 136];
    let mut len = info.len() as libc::socklen_t;
    // SAFETY: `info` and `len` are valid for writes of their sizes.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr() as *mut libc::c_void,
            &mut len,
        )
    };
    if rc != 0 {
        return Err(sock_error("TCP_INFO"));
    }
    if (len as usize) < 136 {
        return Err(Error::Map {
            map: "TCP_INFO",
            source: "the kernel's tcp_info lacks bytes_acked/bytes_received".into(),
        });
    }
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&info[at..at + 8]);
        u64::from_ne_bytes(b)
    };
    let mut outq: libc::c_int = 0;
    // SAFETY: SIOCOUTQ writes one int.
    if unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut outq) } != 0 {
        return Err(sock_error("SIOCOUTQ"));
    }
    // A received FIN counts one in bytes_received: not data. It has come
    // in CLOSE_WAIT (8), LAST_ACK (9), CLOSING (11), TIME_WAIT (6) and
    // CLOSE (7: a socket still open whose connection went to TIME_WAIT;
    // after a reset too, when the connection failed anyway).
    let fin = u64::from(matches!(info[0], 6..=9 | 11));
    let u32_at = |at: usize| {
        let mut b = [0u8; 4];
        b.copy_from_slice(&info[at..at + 4]);
        u32::from_ne_bytes(b)
    };
    Ok(TcpCounts {
        last_sent_ms: u32_at(44),
        last_recv_ms: u32_at(52),
        received: u64_at(128).saturating_sub(fin),
        queued_out: u64_at(120) + outq.max(0) as u64,
    })
}

fn sock_error(what: &'static str) -> Error {
    Error::Map {
        map: what,
        source: Box::new(std::io::Error::last_os_error()),
    }
}

/// The kernel's cookie of socket `fd` (SO_COOKIE): the key its peer is
/// stored under.
fn cookie(fd: RawFd) -> Result<u64, Error> {
    let mut value: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid for writes of their sizes.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_COOKIE,
            &mut value as *mut u64 as *mut libc::c_void,
            &mut len,
        )
    };
    if rc != 0 {
        return Err(sock_error("SO_COOKIE"));
    }
    Ok(value)
}
