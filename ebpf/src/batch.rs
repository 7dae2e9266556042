//! Batched reads and deletes of the conntrack map (`BPF_MAP_LOOKUP_BATCH`,
//! `BPF_MAP_DELETE_BATCH`, Linux 5.6+), which aya 0.14 does not wrap.
//!
//! Walking the map with aya's iterator costs two syscalls per entry
//! (`get_next_key`, then `lookup`); with tens of thousands of flows, once a
//! second, that was most of lbd's fast-path CPU. A batch read returns
//! thousands of entries per syscall. Callers fall back to the per-entry
//! path when the kernel refuses the batch commands ([`BatchError::Unsupported`]).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use crate::maps::{Flow, FlowKey};

/// `enum bpf_cmd` values (include/uapi/linux/bpf.h).
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;

/// Entries per lookup call (16 + 56 bytes each: 288 KiB of buffers).
const CHUNK: usize = 4096;

/// The batch part of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

#[derive(Debug)]
pub(crate) enum BatchError {
    /// The kernel does not do this batch operation on this map.
    Unsupported,
    Io(io::Error),
}

fn bpf(cmd: libc::c_long, attr: &mut BatchAttr) -> io::Result<()> {
    // SAFETY: `attr` is a valid, initialised bpf_attr prefix of the size
    // passed; the pointers in it point into buffers that outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut BatchAttr,
            std::mem::size_of::<BatchAttr>(),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn unsupported(e: &io::Error) -> bool {
    // EINVAL: no such command (or field) on an old kernel; ENOTSUPP (524)
    // and EOPNOTSUPP: not for this map type.
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::EOPNOTSUPP | 524)
    )
}

/// The conntrack map's descriptor, for batch operations.
pub(crate) struct Conntrack {
    fd: OwnedFd,
}

impl Conntrack {
    pub(crate) fn new(fd: OwnedFd) -> Conntrack {
        Conntrack { fd }
    }

    /// Every entry, read `CHUNK` at a time. [`BatchError::Unsupported`] when the
    /// kernel has no batch lookup for the map. Entries that change during
    /// the read may be seen in either state (or, for an LRU map under
    /// pressure, not at all), as with any walk.
    pub(crate) fn read_all(&self) -> Result<Vec<(FlowKey, Flow)>, BatchError> {
        let mut keys = vec![FlowKey::default(); CHUNK];
        let mut values = vec![Flow::default(); CHUNK];
        // Opaque position tokens (a bucket index for hash maps); sized
        // generously and 8-byte aligned.
        let mut token_in = [0u64; 2];
        let mut token_out = [0u64; 2];
        let mut out = Vec::new();
        let mut first = true;
        // Bounded: every call either ends the walk or moves past at least
        // one bucket; the bound only guards against a kernel bug.
        for _ in 0..1_000_000 {
            let mut attr = BatchAttr {
                in_batch: if first {
                    0
                } else {
                    token_in.as_mut_ptr() as u64
                },
                out_batch: token_out.as_mut_ptr() as u64,
                keys: keys.as_mut_ptr() as u64,
                values: values.as_mut_ptr() as u64,
                count: CHUNK as u32,
                map_fd: self.fd.as_raw_fd() as u32,
                ..Default::default()
            };
            let res = bpf(BPF_MAP_LOOKUP_BATCH, &mut attr);
            let n = (attr.count as usize).min(CHUNK);
            match res {
                Ok(()) => {}
                // The end: the last entries (if any) are in.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    out.extend(keys[..n].iter().copied().zip(values[..n].iter().copied()));
                    return Ok(out);
                }
                Err(e) if first && unsupported(&e) => return Err(BatchError::Unsupported),
                // ENOSPC: one bucket holds more than CHUNK entries; not
                // possible with 16-byte keys spread by jhash at sane sizes.
                Err(e) => return Err(BatchError::Io(e)),
            }
            out.extend(keys[..n].iter().copied().zip(values[..n].iter().copied()));
            token_in = token_out;
            first = false;
        }
        Err(BatchError::Io(io::Error::other("batch lookup did not end")))
    }

    /// Deletes `keys`; keys already gone are skipped. Returns how many were
    /// deleted. [`BatchError::Unsupported`] when the kernel has no batch delete.
    pub(crate) fn delete(&self, keys: &[FlowKey]) -> Result<usize, BatchError> {
        let mut at = 0;
        let mut deleted = 0;
        while at < keys.len() {
            let rest = &keys[at..];
            let mut attr = BatchAttr {
                keys: rest.as_ptr() as u64,
                count: rest.len().min(u32::MAX as usize) as u32,
                map_fd: self.fd.as_raw_fd() as u32,
                ..Default::default()
            };
            let res = bpf(BPF_MAP_DELETE_BATCH, &mut attr);
            let n = (attr.count as usize).min(rest.len());
            deleted += n;
            match res {
                Ok(()) => at += n.max(1),
                // keys[at + n] was gone already (expired by the program's
                // own restart, or evicted): skip it, go on after it.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => at += n + 1,
                Err(e) if at == 0 && deleted == 0 && unsupported(&e) => {
                    return Err(BatchError::Unsupported)
                }
                Err(e) => return Err(BatchError::Io(e)),
            }
        }
        Ok(deleted)
    }
}
