//! The sockmap relay experiment (issue 19): established connections
//! relayed by the kernel instead of lbd's copy loop. The program
//! (`bpf/sk_relay.c`) is a stream verdict on a SOCKHASH: each socket of a
//! pair is stored under its peer's socket cookie, and data arriving on one
//! is redirected to the egress of the other without waking userspace.
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

    /// Relays `a` and `b` to each other from now on. Data already queued
    /// on either stays there for a read.
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
        return Err(map_error(std::io::Error::last_os_error()));
    }
    Ok(value)
}
