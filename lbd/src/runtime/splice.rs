//! The system calls splicing needs, for both runtimes' streams
//! ([`super::Stream::splice_to`] / [`super::Stream::splice_from`]; the
//! pipes themselves are the proxy's, `proxy::pipes`).

use std::io;
use std::os::fd::RawFd;

/// One `splice(2)` of up to `len` bytes from `from` to `to`, never waiting
/// on a pipe (`SPLICE_F_NONBLOCK`; sockets must be non-blocking for the
/// call not to wait on them). `SPLICE_F_MOVE` is a hint only.
pub fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: plain syscall on descriptors the caller holds; null offsets.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_NONBLOCK | libc::SPLICE_F_MOVE,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Makes `fd` non-blocking (idempotent).
pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFL / F_SETFL on a descriptor the caller holds.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        if flags & libc::O_NONBLOCK == 0
            && libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
