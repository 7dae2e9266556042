//! Pipes for splicing (listener `splice`): a bulk direction moves its bytes
//! socket -> pipe -> socket with `splice(2)`, so they never enter lbd's
//! memory (the kernel moves page references instead of copying).
//!
//! A direction borrows a pipe only while it splices ([`super::copy`]
//! decides when) and gives it back empty; a pipe that still holds data
//! (its connection ended mid-transfer) is closed instead, with its pages.
//! Each worker keeps a few empty pipes for reuse and has at most
//! [`MAX_PIPES`] out at once; beyond that a direction copies through
//! buffers as without `splice`. What a direction can pin is one pipe's
//! capacity ([`PIPE_SIZE`]), in the kernel rather than in lbd's buffer
//! budget, like HAProxy's pipes (`tune.pipesize`, `maxpipes`).

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The capacity asked for each pipe: as big as a large copy buffer, so a
/// splice moves as much per call as a large read. The kernel may give less
/// (`fs.pipe-max-size`, the user's pipe quota); the pipe then stays at the
/// size it got.
pub const PIPE_SIZE: usize = 256 * 1024;

/// Pipes out at once per worker (two descriptors each).
pub const MAX_PIPES: usize = 256;

/// Empty pipes kept per worker for reuse.
const KEEP: usize = 32;

/// A pipe: its read end and write end, and what it holds.
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Bytes spliced in and not yet out.
    held: usize,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: pipe2 writes two descriptors into the array on success.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just created and are ours alone.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // Best effort: a refused size leaves the default (64 KiB), which
        // works, with more calls per byte.
        // SAFETY: F_SETPIPE_SZ takes an int argument.
        let _ = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE as i32) };
        Ok(Pipe {
            read,
            write,
            held: 0,
        })
    }

    /// The end to splice into.
    pub fn write_end(&self) -> RawFd {
        self.write.as_raw_fd()
    }

    /// The end to splice out of.
    pub fn read_end(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    /// `n` bytes went in.
    pub fn filled(&mut self, n: usize) {
        self.held += n;
    }

    /// `n` bytes came out.
    pub fn drained(&mut self, n: usize) {
        self.held = self.held.saturating_sub(n);
    }
}

/// A worker's pipes.
pub struct PipePool {
    free: RefCell<Vec<Pipe>>,
    out: Cell<usize>,
    cap: usize,
}

impl Default for PipePool {
    fn default() -> Self {
        PipePool::with_cap(MAX_PIPES)
    }
}

impl PipePool {
    fn with_cap(cap: usize) -> Self {
        PipePool {
            free: RefCell::default(),
            out: Cell::new(0),
            cap,
        }
    }

    /// An empty pipe, unless the cap ([`MAX_PIPES`]) is out or none can be
    /// made (descriptors or memory short): the caller copies then.
    pub fn take(&self) -> Option<Pipe> {
        if self.out.get() >= self.cap {
            return None;
        }
        let pipe = match self.free.borrow_mut().pop() {
            Some(pipe) => pipe,
            None => match Pipe::new() {
                Ok(pipe) => pipe,
                Err(e) => {
                    tracing::debug!("splice: no pipe ({e}); copying");
                    return None;
                }
            },
        };
        self.out.set(self.out.get() + 1);
        Some(pipe)
    }

    /// Takes a pipe back: kept when empty and the cache has room, else
    /// closed (with whatever it holds).
    pub fn give(&self, pipe: Pipe) {
        self.out.set(self.out.get().saturating_sub(1));
        let mut free = self.free.borrow_mut();
        if pipe.held == 0 && free.len() < KEEP {
            free.push(pipe);
        }
    }

    /// Pipes out now (for tests).
    pub fn out(&self) -> usize {
        self.out.get()
    }
}

/// A pipe lent to one direction, given back when dropped (also when the
/// connection's future is dropped mid-splice).
pub struct Lease<'a> {
    pool: &'a PipePool,
    pipe: Option<Pipe>,
}

impl<'a> Lease<'a> {
    pub fn new(pool: &'a PipePool) -> Option<Lease<'a>> {
        pool.take().map(|pipe| Lease {
            pool,
            pipe: Some(pipe),
        })
    }

    pub fn pipe(&mut self) -> &mut Pipe {
        self.pipe
            .as_mut()
            .expect("a lease holds its pipe until dropped")
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(pipe) = self.pipe.take() {
            self.pool.give(pipe);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipes_come_back_empty_or_not_at_all() {
        let pool = PipePool::default();
        let mut lease = Lease::new(&pool).expect("a pipe");
        assert_eq!(pool.out(), 1);
        lease.pipe().filled(10);
        drop(lease);
        assert_eq!(pool.out(), 0);
        assert!(
            pool.free.borrow().is_empty(),
            "a pipe holding data is closed"
        );
        let lease = Lease::new(&pool).expect("a pipe");
        drop(lease);
        assert_eq!(pool.free.borrow().len(), 1, "an empty pipe is kept");
    }

    #[test]
    fn the_worker_cap_holds() {
        let pool = PipePool::with_cap(3);
        let leases: Vec<_> = (0..10).map_while(|_| Lease::new(&pool)).collect();
        assert_eq!(leases.len(), 3);
        assert!(Lease::new(&pool).is_none());
        drop(leases);
        assert!(
            Lease::new(&pool).is_some(),
            "given back, they count no more"
        );
    }
}
