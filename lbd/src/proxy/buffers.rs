//! A per-worker pool of copy buffers, so a new connection reuses the
//! buffers of finished ones instead of allocating.

use std::cell::RefCell;

/// Size of each of the two buffers a connection copies through (HAProxy's
/// default `tune.bufsize` is 16 KiB; larger reads cost fewer syscalls on
/// bulk transfers).
pub const BUF_SIZE: usize = 32 * 1024;

/// Buffers kept for reuse per worker (beyond it, returned buffers are freed).
const KEEP: usize = 512;

#[derive(Default)]
pub struct BufPool {
    free: RefCell<Vec<Vec<u8>>>,
}

impl BufPool {
    pub fn take(&self) -> Vec<u8> {
        self.free
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(BUF_SIZE))
    }

    pub fn give(&self, mut buf: Vec<u8>) {
        let mut free = self.free.borrow_mut();
        if free.len() < KEEP && buf.capacity() == BUF_SIZE {
            buf.clear();
            free.push(buf);
        }
    }
}
