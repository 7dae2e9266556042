//! The worker's provided-buffer ring (`IORING_REGISTER_PBUF_RING`, Linux
//! 5.19): buffers the kernel picks from as data arrives on any of the
//! worker's multishot receives, so an idle connection holds none and a
//! receive costs no submission.
//!
//! Both the ring of descriptors and the buffers are anonymous mappings:
//! page aligned as the kernel wants, and their pages are only touched (and
//! counted in the resident size) once data has passed through them.
//! Buffers come back to the kernel by writing a descriptor and moving the
//! ring's tail: no syscall.

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::Submitter;

pub(super) struct BufRing {
    /// The buffer group id receives name to pick from this ring.
    group: u16,
    ring: Mapping,
    mem: Mapping,
    entries: u16,
    size: usize,
    /// The tail as last published to the kernel.
    tail: u16,
    /// Buffers the kernel filled that have not come back yet.
    out: usize,
}

impl BufRing {
    /// Maps `entries` (a power of two) buffers of `size` bytes and
    /// registers them with `submitter`'s ring as buffer group `group`.
    pub fn new(
        submitter: &Submitter<'_>,
        group: u16,
        entries: u16,
        size: usize,
    ) -> io::Result<BufRing> {
        debug_assert!(entries.is_power_of_two());
        let ring = Mapping::new(entries as usize * std::mem::size_of::<BufRingEntry>())?;
        let mem = Mapping::new(entries as usize * size)?;
        let mut this = BufRing {
            group,
            ring,
            mem,
            entries,
            size,
            tail: 0,
            out: entries as usize,
        };
        for bid in 0..entries {
            this.give_back(bid);
        }
        // SAFETY: both mappings live as long as `this`, which the driver
        // drops only after the ring is closed.
        unsafe { submitter.register_buf_ring(this.ring.addr() as u64, entries, group)? };
        Ok(this)
    }

    pub fn group(&self) -> u16 {
        self.group
    }

    fn entry(&mut self, at: u16) -> &mut BufRingEntry {
        let index = (at & (self.entries - 1)) as usize;
        // SAFETY: `index` < entries, within the ring mapping, which holds
        // `entries` descriptors; the kernel only reads those we published.
        unsafe { &mut *(self.ring.addr() as *mut BufRingEntry).add(index) }
    }

    /// The kernel filled buffer(s) for a completion: one more is out.
    pub fn taken(&mut self) {
        self.out += 1;
    }

    /// Hands buffer `bid` back to the kernel.
    pub fn give_back(&mut self, bid: u16) {
        if bid >= self.entries {
            return;
        }
        let addr = self.mem.addr() as u64 + bid as u64 * self.size as u64;
        let (tail, size) = (self.tail, self.size as u32);
        let entry = self.entry(tail);
        entry.set_addr(addr);
        entry.set_len(size);
        entry.set_bid(bid);
        self.tail = tail.wrapping_add(1);
        self.out = self.out.saturating_sub(1);
        // SAFETY: the tail field lives in the first descriptor, inside the
        // mapping; the kernel reads it with acquire semantics.
        unsafe {
            let tail = BufRingEntry::tail(self.ring.addr() as *const BufRingEntry);
            (*(tail as *const AtomicU16)).store(self.tail, Ordering::Release);
        }
    }

    /// The first `len` bytes of buffer `bid`.
    pub fn get(&self, bid: u16, len: usize) -> &[u8] {
        if bid >= self.entries {
            return &[];
        }
        let len = len.min(self.size);
        // SAFETY: the buffer lies within the mapping; the kernel filled
        // `len` bytes and wrote no more since the completion that gave it.
        unsafe {
            std::slice::from_raw_parts(
                (self.mem.addr() as *const u8).add(bid as usize * self.size),
                len,
            )
        }
    }

    /// Few buffers left in the kernel's hands: a starved receive had
    /// better wait for some to come back.
    pub fn short(&self) -> bool {
        (self.entries as usize).saturating_sub(self.out) < self.entries as usize / 8
    }
}

/// An anonymous private mapping, unmapped on drop.
struct Mapping {
    addr: NonNull<libc::c_void>,
    len: usize,
}

impl Mapping {
    fn new(len: usize) -> io::Result<Mapping> {
        // SAFETY: a fresh anonymous mapping; no existing memory involved.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        match NonNull::new(addr) {
            Some(addr) => Ok(Mapping { addr, len }),
            None => Err(io::Error::other("mmap returned null")),
        }
    }

    fn addr(&self) -> *mut libc::c_void {
        self.addr.as_ptr()
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping is ours, and nothing uses it any more.
        unsafe { libc::munmap(self.addr.as_ptr(), self.len) };
    }
}
