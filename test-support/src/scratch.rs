//! Scratch space for one test: a directory, a file, a loopback port.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Numbers scratch directories and files within this process (the pid tells
/// processes apart).
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A fresh, empty scratch directory for one test, under the temp directory.
/// Pids are reused within one CI run (a build spawns thousands of processes
/// and `pid_max` may be 32768), so a name may already be taken by an earlier
/// test binary's leftovers: CI once lost a test to a stale unix socket file
/// there. The directory is therefore created with `create_dir`, never
/// `create_dir_all`, and a taken name moves on to the next one.
pub fn scratch_dir() -> PathBuf {
    let base = std::env::temp_dir();
    for _ in 0..10_000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!("lbd-test-{}-{n}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => return dir,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => panic!("create scratch dir {}: {e}", dir.display()),
        }
    }
    panic!("no free scratch directory name under {}", base.display());
}

/// Ports handed out by [`free_port`] in this process, so that two tests of
/// one binary never get the same one.
static NEXT_PORT: AtomicUsize = AtomicUsize::new(0);

/// Where [`free_port`] looks: from here up to the kernel's ephemeral range.
const LOWEST_PORT: u16 = 10_000;

/// A port that is free on every address (the wildcard bind succeeds) and lies
/// below the kernel's ephemeral range. A port from `bind(:0)` would be an
/// ephemeral one, and every outgoing connection of a concurrent test (or of
/// lbd itself) may take it between this call and the bind of the process
/// under test: CI once lost a test to exactly that. Below the range only
/// explicit binds compete; the pid spreads test binaries apart and a counter
/// keeps the tests of one binary apart.
pub fn free_port() -> u16 {
    let top = ephemeral_low().max(LOWEST_PORT + 1_000);
    let span = usize::from(top - LOWEST_PORT);
    let start = (std::process::id() as usize).wrapping_mul(7_919) % span;
    (0..span.min(4_000))
        .map(|_| {
            let n = NEXT_PORT.fetch_add(1, Ordering::Relaxed);
            // 7 is coprime with any span that is not a multiple of it, and
            // steps past a neighbour's port another binary may just have used.
            LOWEST_PORT + ((start + n * 7) % span) as u16
        })
        .find(|&port| std::net::TcpListener::bind(("0.0.0.0", port)).is_ok())
        .expect("a free port below the ephemeral range")
}

/// The first port of the kernel's ephemeral range (32768 by default).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// A file under the temp directory, removed when dropped (PEM files of the
/// TLS tests, hence the name's ending).
pub struct TempFile(pub PathBuf);

impl TempFile {
    pub fn new(contents: impl AsRef<[u8]>) -> TempFile {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("lbd-test-{}-{n}.pem", std::process::id());
        let path = std::env::temp_dir().join(name);
        std::fs::write(&path, contents).expect("write temp file");
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_dir_skips_names_left_by_an_earlier_process() {
        // Leftovers of an earlier binary with this pid, on the next names.
        let next = NEXT.load(Ordering::Relaxed);
        let pid = std::process::id();
        let stale: Vec<PathBuf> = (next..next + 3)
            .map(|n| std::env::temp_dir().join(format!("lbd-test-{pid}-{n}")))
            .collect();
        for dir in &stale {
            std::fs::create_dir_all(dir).expect("stale dir");
            std::fs::write(dir.join("l.sock"), "stale").expect("stale file");
        }
        let dir = scratch_dir();
        let fresh = std::fs::read_dir(&dir).expect("read").count();
        for dir in &stale {
            let _ = std::fs::remove_dir_all(dir);
        }
        assert!(!stale.contains(&dir), "{} was taken", dir.display());
        assert_eq!(fresh, 0, "{} is not empty", dir.display());
    }

    #[test]
    fn scratch_places_are_distinct_and_temp_files_go() {
        let (a, b) = (scratch_dir(), scratch_dir());
        assert_ne!(a, b);
        assert!(a.is_dir() && b.is_dir());
        let file = TempFile::new("x");
        let path = file.0.clone();
        assert_eq!(std::fs::read(&path).expect("temp file"), b"x");
        drop(file);
        assert!(!path.exists());
        let ports: std::collections::HashSet<u16> = (0..50).map(|_| free_port()).collect();
        assert_eq!(ports.len(), 50, "no port twice");
        assert!(ports
            .iter()
            .all(|&p| p >= LOWEST_PORT && p < ephemeral_low()));
        let _ = std::fs::remove_dir(a);
        let _ = std::fs::remove_dir(b);
    }
}
