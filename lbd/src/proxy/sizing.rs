//! Which buffer one direction of a connection reads into next.
//!
//! Small by default. Large only when both hold:
//! - the direction moves bulk: its last [`GROW_AFTER`] reads each returned
//!   at least a small buffer's worth (a small buffer would have been full);
//! - the peer it writes to drains: its socket's send buffer has room for a
//!   whole large buffer now, so the write completes at once and the buffer
//!   goes straight back to the pool. A peer that stops reading fills its
//!   send buffer, and from then on the direction reads into small buffers:
//!   a stuck write pins 16 KiB, not 256.
//!
//! The room check is one `ioctl` per large read (the send buffer's size is
//! read again only when the check fails: autotuning grows it). It is an
//! estimate (the kernel counts send buffer memory with overhead); the
//! budget in [`super::buffers`] is the hard bound.

use std::os::fd::RawFd;

use super::buffers::{LARGE, SMALL};

/// Consecutive reads of at least [`SMALL`] bytes before large buffers are
/// used (64 KiB moved: more than an interactive exchange).
pub const GROW_AFTER: u32 = 4;

/// One direction's sizing state.
#[derive(Default)]
pub struct Sizer {
    /// Consecutive reads that would have filled a small buffer.
    streak: u32,
    /// The destination's send buffer size as last read (0: not yet).
    sndbuf: usize,
}

impl Sizer {
    /// Whether the next read should use a large buffer, writing to `to`.
    pub fn wants_large(&mut self, to: RawFd) -> bool {
        self.streak >= GROW_AFTER && self.has_room(to)
    }

    /// Records a read of `n` bytes.
    pub fn read(&mut self, n: usize) {
        self.streak = if n >= SMALL {
            self.streak.saturating_add(1)
        } else {
            0
        };
    }

    fn has_room(&mut self, to: RawFd) -> bool {
        let Some(queued) = queued_bytes(to) else {
            return false;
        };
        if queued + LARGE <= self.sndbuf {
            return true;
        }
        self.sndbuf = send_buffer_size(to).unwrap_or(0);
        queued + LARGE <= self.sndbuf
    }
}

/// Bytes in the socket's send queue, sent but unacknowledged or not yet
/// sent (SIOCOUTQ).
pub fn queued_bytes(fd: RawFd) -> Option<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQ writes one int through the pointer, which is valid.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut n) };
    (rc == 0).then(|| usize::try_from(n).ok()).flatten()
}

/// The socket's send buffer size (SO_SNDBUF, as the kernel counts it).
fn send_buffer_size(fd: RawFd) -> Option<usize> {
    let mut n: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `n`, both valid.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&mut n as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    (rc == 0).then(|| usize::try_from(n).ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;

    fn pair() -> (std::net::TcpStream, std::net::TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let a = std::net::TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (b, _) = l.accept().expect("accept");
        (a, b)
    }

    #[test]
    fn grows_after_a_streak_of_full_reads_and_shrinks_after_a_short_one() {
        let (a, _b) = pair();
        let mut s = Sizer::default();
        for _ in 0..GROW_AFTER {
            assert!(!s.wants_large(a.as_raw_fd()));
            s.read(SMALL);
        }
        assert!(
            s.wants_large(a.as_raw_fd()),
            "an empty loopback send queue has room"
        );
        s.read(LARGE - 1);
        assert!(s.wants_large(a.as_raw_fd()));
        s.read(SMALL - 1);
        assert!(!s.wants_large(a.as_raw_fd()));
    }

    #[test]
    fn a_peer_that_does_not_read_gets_small_buffers() {
        let (a, mut b) = pair();
        // The send buffer of a socket towards a real network client.
        socket2::SockRef::from(&a)
            .set_send_buffer_size(64 << 10)
            .expect("SO_SNDBUF");
        a.set_nonblocking(true).expect("nonblocking");
        let mut s = Sizer {
            streak: GROW_AFTER,
            sndbuf: 0,
        };
        assert!(!s.wants_large(a.as_raw_fd()), "128 KiB cannot take 256 KiB");
        // A roomy send buffer (as large as net.core.wmem_max allows), then
        // filled by a peer that does not read.
        socket2::SockRef::from(&a)
            .set_send_buffer_size(1 << 20)
            .expect("SO_SNDBUF");
        assert!(s.wants_large(a.as_raw_fd()));
        let chunk = vec![0u8; 64 << 10];
        let mut written = 0;
        while written < 64 << 20 {
            match (&a).write(&chunk) {
                Ok(n) => written += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("write: {e}"),
            }
        }
        assert!(!s.wants_large(a.as_raw_fd()), "{written} bytes queued");
        // Drained: room again.
        b.set_nonblocking(true).expect("nonblocking");
        let mut sink = vec![0u8; 1 << 20];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while queued_bytes(a.as_raw_fd()).unwrap_or(0) > 0 {
            assert!(std::time::Instant::now() < deadline, "never drained");
            match b.read(&mut sink) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(1))
                }
                Err(e) => panic!("read: {e}"),
            }
        }
        assert!(s.wants_large(a.as_raw_fd()));
    }
}
