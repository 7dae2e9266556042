//! The two libc calls the fast path makes besides aya's: the monotonic
//! clock the BPF program stamps flows with (`bpf_ktime_get_ns`), to age
//! flows, and the kernel's random numbers, for the per-load SNAT port
//! offset. Kept apart so that the `unsafe` blocks sit in one small file.

/// CLOCK_MONOTONIC in ns: the clock the program's `bpf_ktime_get_coarse_ns`
/// follows (a tick behind at most).
pub(super) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A random u32 from the kernel (getrandom); the clock if that fails.
pub(super) fn random_u32() -> u32 {
    let mut buf = [0u8; 4];
    // SAFETY: writes at most buf.len() bytes into buf.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n == buf.len() as isize {
        u32::from_ne_bytes(buf)
    } else {
        monotonic_ns() as u32
    }
}
