//! `lbd run --pid-file`: the pid for service managers and `kill -HUP`, and
//! a lock that keeps a second lbd with the same pid file from starting.
//!
//! The file is locked with `flock` for the life of the process (the kernel
//! drops the lock when the process ends, however it ends), so a stale file
//! left by a crash never blocks a start, while a live lbd always does.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Why the pid file could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum PidFileError {
    #[error("pid file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "another lbd{} holds the pid file {}; refusing to start a second one",
        pid.map_or(String::new(), |p| format!(" (pid {p})")),
        path.display()
    )]
    Held { path: PathBuf, pid: Option<u32> },
}

/// A pid file held by this process; removed when dropped.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    // Holds the lock.
    _file: File,
}

impl PidFile {
    /// Creates (or takes over a stale) `path`, locks it and writes this
    /// process's pid into it.
    pub fn acquire(path: &Path) -> Result<PidFile, PidFileError> {
        let io = |source| PidFileError::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        // SAFETY: flock on a descriptor we own, for the duration of the call.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(PidFileError::Held {
                    path: path.to_owned(),
                    pid: text.trim().parse().ok(),
                });
            }
            return Err(io(err));
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(PidFile {
            path: path.to_owned(),
            _file: file,
        })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // Still locked by us: nobody else wrote it.
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_pid_file_refuses_a_second_holder_and_a_released_one_does_not() {
        let dir = std::env::temp_dir().join(format!("lbd-pidfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("lbd.pid");
        std::fs::write(&path, "999999\n").expect("stale file");
        let held = PidFile::acquire(&path).expect("a stale file is taken over");
        let pid = std::process::id();
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            format!("{pid}\n")
        );
        match PidFile::acquire(&path) {
            Err(PidFileError::Held { pid: Some(p), .. }) => assert_eq!(p, pid),
            other => panic!("second holder: {other:?}"),
        }
        drop(held);
        assert!(!path.exists(), "removed when released");
        drop(PidFile::acquire(&path).expect("free again"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
