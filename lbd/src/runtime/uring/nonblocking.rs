//! Whether the ring's operations wait on a non-blocking socket, as they do
//! on blocking ones: on current kernels a receive on an `O_NONBLOCK` socket
//! with no data arms the ring's internal poll and completes later. A
//! kernel that answered `EAGAIN` instead would break every read of a socket
//! lbd made non-blocking, and `splice` needs non-blocking sockets (a
//! `splice(2)` into a blocking socket waits for room in the worker's
//! thread). [`probe`] finds out once, at start-up; without it listeners
//! with `splice` copy.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use io_uring::{opcode, types, IoUring};

static WAITS: AtomicBool = AtomicBool::new(false);

/// What [`probe`] found (false before it ran).
pub fn waits() -> bool {
    WAITS.load(Ordering::Relaxed)
}

/// Submits a receive on an empty non-blocking socket: completed at once
/// (`EAGAIN`) means the ring does not wait on such sockets. The receive is
/// then satisfied with a byte, so nothing stays in flight.
pub fn probe(ring: &mut IoUring) -> io::Result<bool> {
    let mut fds = [0; 2];
    // SAFETY: socketpair writes two descriptors into the array on success.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are ours alone.
    let (ours, peer) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let mut byte = Box::new([0u8; 1]);
    let sqe = opcode::Recv::new(types::Fd(ours.as_raw_fd()), byte.as_mut_ptr(), 1).build();
    // SAFETY: `byte` outlives the receive: it completes below before return.
    unsafe { ring.submission().push(&sqe) }.map_err(|_| io::Error::other("ring full"))?;
    ring.submit()?;
    let answered_at_once = ring.completion().next().map(|c| c.result());
    if answered_at_once.is_none() {
        // SAFETY: writes one byte from a valid buffer to our own socket.
        let n = unsafe { libc::write(peer.as_raw_fd(), b"x".as_ptr().cast(), 1) };
        if n != 1 {
            return Err(io::Error::last_os_error());
        }
        ring.submit_and_wait(1)?;
        let _ = ring.completion().next();
    }
    let waits = answered_at_once.is_none();
    WAITS.store(waits, Ordering::Relaxed);
    if let Some(res) = answered_at_once {
        tracing::info!(
            "io_uring answers {} on non-blocking sockets; splice is off",
            io::Error::from_raw_os_error(-res)
        );
    }
    Ok(waits)
}
