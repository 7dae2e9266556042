//! Which buffer one direction of a connection reads into next.
//!
//! Small by default. Bigger only for a direction that moves bulk:
//! [`GROW_AFTER`] reads in a row returned at least a small buffer's worth
//! each (a small buffer would have been full). A short read halves the
//! count instead of clearing it, so the short read at the end of each
//! response of a keep-alive connection does not send the next response
//! back to small buffers; a direction that turns interactive is back to
//! small ones after three short reads. Then:
//!
//! - Large (256 KiB) when the peer it writes to has room for it: its
//!   socket's send buffer can take the whole buffer now, with the kernel's
//!   per-packet overhead, so the write completes at once and the buffer goes
//!   straight back to the pool.
//! - Large too, without that room, while the process's budget for big
//!   buffers is mostly unused (a quarter or less): the write then waits for
//!   a slow receiver holding the buffer, as a plain copy loop would, which
//!   costs the least CPU per byte. A peer that has stopped reading keeps
//!   such a buffer, so that share of the budget is all such peers can pin.
//! - Otherwise medium (64 KiB) when there is room for that (a send buffer
//!   filling up behind a slow receiver takes a few of these rather than
//!   many small ones), else small: a peer that stops reading fills its send
//!   buffer, and from then on the direction reads into small buffers; its
//!   stuck write pins 16 KiB.
//!
//! The room check is a `getsockopt(SO_MEMINFO)`: the kernel's own send
//! buffer size and queued memory, the numbers a write blocks on. Room seen
//! once covers several reads (see [`Sizer`]), so towards a peer that keeps
//! up it costs one call per several bulk reads. It is an estimate (the
//! overhead of the packets the write will make is guessed); the budget in
//! [`super::buffers`] is the hard bound.

use std::os::fd::RawFd;

use super::buffers::{Size, SMALL};

/// Reads of at least [`SMALL`] bytes in a row before large buffers are
/// used (64 KiB moved: more than an interactive exchange).
pub const GROW_AFTER: u32 = 4;

/// Free send buffer memory a read into a buffer of `size` needs: the
/// kernel counts queued packets with their overhead (about 10% for 8 KiB
/// packets, measured on loopback towards a client that does not read; more
/// for smaller ones).
const fn room_for(size: Size) -> usize {
    size.bytes() + size.bytes() / 2
}

/// Bytes a direction moves without a short read before it is spliced (on
/// a listener with `splice`): a stream, not an object. Measured with
/// `bench` (bench/README.md, "Issue 19 ablations"): splicing costs 0.6x
/// the CPU per GiB of 256 KiB copies on a long stream (iperf3) but 1.1x
/// on 1 MiB objects, whose every response starts a new run.
pub const SPLICE_AFTER: usize = 2 << 20;

/// Where the count of bulk reads stops (three halvings from it fall below
/// [`GROW_AFTER`]).
const MAX_STREAK: u32 = 4 * GROW_AFTER;

/// One direction's sizing state.
#[derive(Default)]
pub struct Sizer {
    /// Reads that would have filled a small buffer, in a row (halved by
    /// a short read).
    streak: u32,
    /// Send buffer room known to be left for this direction's writes: the
    /// room last read, less what the reads since may have queued. Only this
    /// direction writes to its peer, and the peer's acknowledgements only
    /// add room, so while it lasts no new check is needed: a peer that
    /// keeps up costs one `getsockopt` per several bulk reads.
    credit: usize,
    /// Bytes read since the last short read (saturating).
    run: usize,
}

impl Sizer {
    /// The buffer size for the next read, writing to `to`. `plenty`: the
    /// budget for big buffers is mostly unused.
    pub fn next(&mut self, to: RawFd, plenty: bool) -> Size {
        if self.streak < GROW_AFTER {
            return Size::Small;
        }
        if self.credit < room_for(Size::Large) {
            self.credit = send_room(to).unwrap_or(0);
        }
        let size = match self.credit {
            c if c >= room_for(Size::Large) => Size::Large,
            _ if plenty => return Size::Large,
            c if c >= room_for(Size::Medium) => Size::Medium,
            _ => Size::Small,
        };
        self.credit = self.credit.saturating_sub(room_for(size));
        size
    }

    /// Whether this direction moves bulk now (reads bigger than small
    /// buffers would be).
    pub fn bulk(&self) -> bool {
        self.streak >= GROW_AFTER
    }

    /// Whether this direction has moved a stream's worth without a pause
    /// ([`SPLICE_AFTER`]): time to splice it.
    pub fn streaming(&self) -> bool {
        self.run >= SPLICE_AFTER
    }

    /// Records a read of `n` bytes.
    pub fn read(&mut self, n: usize) {
        self.run = if n >= SMALL {
            self.run.saturating_add(n)
        } else {
            0
        };
        self.streak = if n >= SMALL {
            (self.streak + 1).min(MAX_STREAK)
        } else {
            self.streak / 2
        };
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

/// Bytes in the socket's send queue not yet sent (SIOCOUTQNSD): sent but
/// unacknowledged bytes do not count.
pub fn unsent_bytes(fd: RawFd) -> Option<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQNSD writes one int through the pointer, which is valid.
    let rc = unsafe { libc::ioctl(fd, libc::SIOCOUTQNSD as _, &mut n) };
    (rc == 0).then(|| usize::try_from(n).ok()).flatten()
}

/// `SO_MEMINFO` (the socket's memory counters): 55 in asm-generic, which
/// these architectures use. Elsewhere no room is ever assumed (small
/// buffers only).
const SO_MEMINFO: Option<libc::c_int> = if cfg!(any(
    target_arch = "x86_64",
    target_arch = "x86",
    target_arch = "aarch64",
    target_arch = "arm",
    target_arch = "riscv64",
    target_arch = "loongarch64",
    target_arch = "s390x"
)) {
    Some(55)
} else {
    None
};

/// Free memory in the socket's send buffer: what a write can queue before
/// it has to wait (send buffer size minus queued memory, as the kernel
/// counts them).
fn send_room(fd: RawFd) -> Option<usize> {
    const SNDBUF: usize = libc::SK_MEMINFO_SNDBUF as usize;
    const QUEUED: usize = libc::SK_MEMINFO_WMEM_QUEUED as usize;
    let option = SO_MEMINFO?;
    let mut info = [0u32; 9];
    let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`, both valid.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    let filled = len as usize / std::mem::size_of::<u32>();
    if rc != 0 || filled <= SNDBUF.max(QUEUED) {
        return None;
    }
    Some((info[SNDBUF] as usize).saturating_sub(info[QUEUED] as usize))
}

#[cfg(test)]
mod tests {
    use super::super::buffers::LARGE;
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
    fn a_stream_splices_and_an_object_does_not() {
        let mut s = Sizer::default();
        // A 1 MiB answer: large reads, then the short tail.
        for _ in 0..4 {
            s.read(LARGE);
        }
        assert!(s.bulk() && !s.streaming());
        s.read(100);
        // The next answer starts a new run.
        for _ in 0..7 {
            s.read(LARGE);
        }
        assert!(!s.streaming(), "runs do not add up across a short read");
        s.read(LARGE);
        assert!(s.streaming(), "{SPLICE_AFTER} bytes without a pause");
    }

    #[test]
    fn grows_after_a_streak_of_full_reads_and_shrinks_after_short_ones() {
        let (a, _b) = pair();
        let fd = a.as_raw_fd();
        let mut s = Sizer::default();
        for _ in 0..GROW_AFTER {
            assert_eq!(s.next(fd, false), Size::Small);
            s.read(SMALL);
        }
        assert_eq!(
            s.next(fd, false),
            Size::Large,
            "an empty loopback send queue has room"
        );
        s.read(LARGE - 1);
        assert_eq!(s.next(fd, false), Size::Large);
        // Just grown: one short read is enough to go back.
        s.read(SMALL - 1);
        assert_eq!(s.next(fd, false), Size::Small);
        // After a long bulk run, one short read (the end of a response) is
        // not; three in a row are.
        (0..100).for_each(|_| s.read(LARGE));
        s.read(100);
        assert_eq!(s.next(fd, false), Size::Large);
        s.read(100);
        assert_eq!(s.next(fd, false), Size::Large);
        s.read(100);
        assert_eq!(s.next(fd, false), Size::Small);
        // Interactive traffic never grows.
        let mut s = Sizer::default();
        (0..100).for_each(|_| s.read(SMALL - 1));
        assert_eq!(s.next(fd, false), Size::Small);
    }

    /// A sizer of a bulk direction that has not looked at its peer yet.
    fn bulk() -> Sizer {
        Sizer {
            streak: GROW_AFTER,
            ..Sizer::default()
        }
    }

    /// Writes to `a` until its send buffer is full.
    fn fill(a: &std::net::TcpStream) -> usize {
        let chunk = vec![0u8; 64 << 10];
        let mut written = 0;
        while written < 64 << 20 {
            match (&*a).write(&chunk) {
                Ok(n) => written += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("write: {e}"),
            }
        }
        written
    }

    #[test]
    fn a_peer_that_does_not_read_gets_small_buffers() {
        let (a, mut b) = pair();
        let fd = a.as_raw_fd();
        a.set_nonblocking(true).expect("nonblocking");
        // A small send buffer (as towards a real network client at first):
        // 128 KiB (the kernel doubles what is set) has room for a medium
        // buffer, not for a large one.
        socket2::SockRef::from(&a)
            .set_send_buffer_size(64 << 10)
            .expect("SO_SNDBUF");
        assert_eq!(bulk().next(fd, false), Size::Medium);
        // A roomy send buffer (as large as net.core.wmem_max allows), then
        // filled by a peer that does not read.
        socket2::SockRef::from(&a)
            .set_send_buffer_size(1 << 20)
            .expect("SO_SNDBUF");
        assert_eq!(bulk().next(fd, false), Size::Large);
        let written = fill(&a);
        assert_eq!(
            bulk().next(fd, false),
            Size::Small,
            "{written} bytes queued"
        );
        // Unless the budget is mostly unused: then a large buffer waits for
        // the receiver, as a plain copy loop would.
        assert_eq!(bulk().next(fd, true), Size::Large);
        // Drained: room again.
        b.set_nonblocking(true).expect("nonblocking");
        let mut sink = vec![0u8; 1 << 20];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while queued_bytes(fd).unwrap_or(0) > 0 {
            assert!(std::time::Instant::now() < deadline, "never drained");
            match b.read(&mut sink) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(1))
                }
                Err(e) => panic!("read: {e}"),
            }
        }
        assert_eq!(bulk().next(fd, false), Size::Large);
    }

    #[test]
    fn room_seen_once_covers_the_reads_it_has_room_for() {
        let (a, _b) = pair();
        let fd = a.as_raw_fd();
        a.set_nonblocking(true).expect("nonblocking");
        socket2::SockRef::from(&a)
            .set_send_buffer_size(1 << 20)
            .expect("SO_SNDBUF");
        let room = send_room(fd).expect("SO_MEMINFO");
        let mut s = bulk();
        assert_eq!(s.next(fd, false), Size::Large);
        // The queue fills behind the sizer's back: what it saw still
        // counts, for as many large reads as it had room for...
        fill(&a);
        let covered = room / room_for(Size::Large);
        for i in 1..covered {
            assert_eq!(s.next(fd, false), Size::Large, "read {i} of {covered}");
        }
        // ...and then it looks again, and sees the full queue.
        assert_eq!(s.next(fd, false), Size::Small);
    }
}
