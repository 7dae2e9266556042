//! The sockmap relay experiment (issue 19): established connections
//! relayed by the kernel instead of lbd's copy loop. The program
//! (`bpf/sk_relay.c`) is a stream verdict on a SOCKHASH holding every
//! relayed socket under its own cookie: data arriving on a socket is
//! passed to userspace until userspace has set the socket's peer and
//! declared every passed byte forwarded ([`SockRelay::set_forwarded`]), and
//! redirected to the peer's egress after that, without waking userspace.
//!
//! The hand-over, per direction (socket `s` to its peer): read the count
//! of passed bytes ([`SockRelay::stat`]), read `s` until it would block and
//! write it all to the peer, then declare that count forwarded. Data passed
//! meanwhile makes the counts differ, so the program keeps passing until
//! userspace repeats; data redirected is always later than data forwarded.
//! Before shutting the peer down after an EOF, wait until it has queued
//! what userspace wrote plus what the program relayed
//! ([`queued_into`]): redirected data may still be on its way.
//!
//! Only the `sockmap` bench (`bench/src/bin/sockmap.rs`) and this crate's
//! tests use it; it is not part of lbd yet (see bench/README.md).

use std::os::fd::{AsRawFd, RawFd};

use aya::maps::{HashMap, MapData, SockHash};
use aya::programs::{ProgramError, SkSkb};
use aya::Ebpf;

use crate::Error;

const PROG: &str = "lb_relay";

#[cfg(not(lbd_xdp_unavailable))]
fn object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sk_relay.o"))
}

#[cfg(lbd_xdp_unavailable)]
fn object() -> &'static [u8] {
    &[]
}

/// What the program counted for one socket (`struct relay_stat`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStat {
    /// Bytes passed to userspace.
    pub passed: u64,
    /// Bytes redirected to the peer.
    pub relayed: u64,
    /// `CLOCK_MONOTONIC_COARSE` of the last redirect, in ns.
    pub last_ns: u64,
}

// SAFETY: plain integers, no padding, any bit pattern is valid.
unsafe impl aya::Pod for RelayStat {}

/// The loaded relay: its program attached to its socket map.
pub struct SockRelay {
    socks: SockHash<MapData, u64>,
    peer: HashMap<MapData, u64, u64>,
    fwd: HashMap<MapData, u64, u64>,
    stat: HashMap<MapData, u64, RelayStat>,
    _ebpf: Ebpf,
}

fn load_error(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Load(Box::new(e))
}

fn map_error(map: &'static str) -> impl Fn(aya::maps::MapError) -> Error {
    move |e| Error::Map {
        map,
        source: Box::new(e),
    }
}

fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, Error>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    ebpf.take_map(name)
        .ok_or_else(|| Error::Load(format!("the relay object has no map {name}").into()))?
        .try_into()
        .map_err(map_error(name))
}

impl SockRelay {
    /// Loads the program and attaches it to its socket map.
    pub fn load() -> Result<SockRelay, Error> {
        if !crate::built() {
            return Err(Error::NotBuilt);
        }
        let mut ebpf = Ebpf::load(object()).map_err(load_error)?;
        let socks: SockHash<MapData, u64> = take_map(&mut ebpf, "lb_relay_socks")?;
        let peer = take_map(&mut ebpf, "lb_relay_peer")?;
        let fwd = take_map(&mut ebpf, "lb_relay_fwd")?;
        let stat = take_map(&mut ebpf, "lb_relay_stat")?;
        let prog: &mut SkSkb = ebpf
            .program_mut(PROG)
            .ok_or_else(|| Error::Load("the relay object has no program lb_relay".into()))?
            .try_into()
            .map_err(|e: ProgramError| load_error(e))?;
        prog.load().map_err(load_error)?;
        prog.attach(socks.fd()).map_err(load_error)?;
        Ok(SockRelay {
            socks,
            peer,
            fwd,
            stat,
            _ebpf: ebpf,
        })
    }

    /// Puts `sock` under the program: from now on its data goes through
    /// the verdict (passed to userspace until [`SockRelay::set_peer`] and
    /// [`SockRelay::set_forwarded`]). Returns its cookie.
    pub fn add(&mut self, sock: &impl AsRawFd) -> Result<u64, Error> {
        let c = cookie(sock.as_raw_fd())?;
        self.stat
            .insert(c, RelayStat::default(), 0)
            .map_err(map_error("lb_relay_stat"))?;
        self.socks
            .insert(c, sock.as_raw_fd(), 0)
            .map_err(map_error("lb_relay_socks"))?;
        Ok(c)
    }

    /// Where the data of socket `c` is to be redirected.
    pub fn set_peer(&mut self, c: u64, peer: u64) -> Result<(), Error> {
        self.peer
            .insert(c, peer, 0)
            .map_err(map_error("lb_relay_peer"))
    }

    /// Declares the first `n` bytes passed from socket `c` forwarded.
    pub fn set_forwarded(&mut self, c: u64, n: u64) -> Result<(), Error> {
        self.fwd.insert(c, n, 0).map_err(map_error("lb_relay_fwd"))
    }

    /// What the program counted for socket `c`.
    pub fn stat(&self, c: u64) -> Result<RelayStat, Error> {
        self.stat.get(&c, 0).map_err(map_error("lb_relay_stat"))
    }

    /// Forgets socket `c` (its socket leaves the socket map when closed).
    pub fn forget(&mut self, c: u64) {
        let _ = self.peer.remove(&c);
        let _ = self.fwd.remove(&c);
        let _ = self.stat.remove(&c);
        let _ = self.socks.remove(&c);
    }

    /// Relays `a` and `b` to each other at once, both counted as having
    /// nothing passed: for request/response traffic whose first bytes the
    /// caller forwards itself. Returns their cookies.
    pub fn pair(&mut self, a: &impl AsRawFd, b: &impl AsRawFd) -> Result<(u64, u64), Error> {
        let (ca, cb) = (self.add(a)?, self.add(b)?);
        for (c, peer) in [(ca, cb), (cb, ca)] {
            self.set_peer(c, peer)?;
            self.set_forwarded(c, 0)?;
        }
        Ok((ca, cb))
    }
}

/// Bytes socket `fd` has taken to send since it was connected: acked by
/// the peer plus still in its send queue. After an EOF, shut a relayed
/// socket down only once this reached what userspace wrote plus what the
/// program relayed into it.
pub fn queued_into(fd: RawFd) -> Result<u64, Error> {
    let err = |e: std::io::Error| Error::Map {
        map: "TCP_INFO",
        source: Box::new(e),
    };
    // struct tcp_info up to tcpi_bytes_acked (offset 120).
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
        return Err(err(std::io::Error::last_os_error()));
    }
    if (len as usize) < 128 {
        return Err(err(std::io::Error::other("tcp_info without bytes_acked")));
    }
    let mut acked = [0u8; 8];
    acked.copy_from_slice(&info[120..128]);
    let mut outq: libc::c_int = 0;
    // SAFETY: SIOCOUTQ writes one int.
    if unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut outq) } != 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    Ok(u64::from_ne_bytes(acked) + outq.max(0) as u64)
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
        return Err(Error::Map {
            map: "SO_COOKIE",
            source: Box::new(std::io::Error::last_os_error()),
        });
    }
    Ok(value)
}
