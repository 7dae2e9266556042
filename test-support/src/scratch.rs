//! Scratch space for one test: a directory, a file, a loopback port.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Numbers scratch directories and files within this process (the pid tells
/// processes apart).
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A fresh scratch directory for one test, under the temp directory.
pub fn scratch_dir() -> PathBuf {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("lbd-test-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
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
    fn scratch_places_are_distinct_and_temp_files_go() {
        let (a, b) = (scratch_dir(), scratch_dir());
        assert_ne!(a, b);
        assert!(a.is_dir() && b.is_dir());
        let file = TempFile::new("x");
        let path = file.0.clone();
        assert_eq!(std::fs::read(&path).expect("temp file"), b"x");
        drop(file);
        assert!(!path.exists());
        let _ = std::fs::remove_dir(a);
        let _ = std::fs::remove_dir(b);
    }
}
