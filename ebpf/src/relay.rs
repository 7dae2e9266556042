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

use std::os::fd::{AsRawFd, RawFd};

use aya::maps::{MapData, SockHash};
use aya::programs::{ProgramError, SkSkb};
use aya::Ebpf;

use crate::Error;

const PROG: &str = "lb_relay";
const MAP: &str = "lb_relay_socks";

#[cfg(not(lbd_xdp_unavailable))]
fn object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sk_relay.o"))
}

#[cfg(lbd_xdp_unavailable)]
fn object() -> &'static [u8] {
    &[]
}

/// The loaded relay: its program attached to its socket map.
pub struct SockRelay {
    socks: SockHash<MapData, u64>,
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

impl SockRelay {
    /// Loads the program and attaches it to its map.
    pub fn load() -> Result<SockRelay, Error> {
        if !crate::built() {
            return Err(Error::NotBuilt);
        }
        let mut ebpf = Ebpf::load(object()).map_err(load_error)?;
        let socks: SockHash<MapData, u64> = ebpf
            .take_map(MAP)
            .ok_or_else(|| Error::Load("the relay object has no map lb_relay_socks".into()))?
            .try_into()
            .map_err(map_error)?;
        let prog: &mut SkSkb = ebpf
            .program_mut(PROG)
            .ok_or_else(|| Error::Load("the relay object has no program lb_relay".into()))?
            .try_into()
            .map_err(|e: ProgramError| load_error(e))?;
        prog.load().map_err(load_error)?;
        prog.attach(socks.fd()).map_err(load_error)?;
        Ok(SockRelay { socks, _ebpf: ebpf })
    }

    /// Relays `a` and `b` to each other from now on. Data they queued
    /// before waits for the next data to arrive, or for [`kick`].
    pub fn pair(&mut self, a: &impl AsRawFd, b: &impl AsRawFd) -> Result<(), Error> {
        let (ca, cb) = (cookie(a.as_raw_fd())?, cookie(b.as_raw_fd())?);
        self.socks.insert(cb, a.as_raw_fd(), 0).map_err(map_error)?;
        if let Err(e) = self.socks.insert(ca, b.as_raw_fd(), 0) {
            let _ = self.socks.remove(&cb);
            return Err(map_error(e));
        }
        Ok(())
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
    // in CLOSE_WAIT (8), LAST_ACK (9), CLOSING (11) and TIME_WAIT (6).
    let fin = u64::from(matches!(info[0], 6 | 8 | 9 | 11));
    Ok(TcpCounts {
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
