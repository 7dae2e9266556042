//! `haproxy -D`: run in the background.
//!
//! # Lifecycle
//!
//! [`daemonize`] forks before any thread exists. The parent waits on a pipe
//! until the child reports: it exits 0 once the child serves
//! ([`Ready::serving`]), or 1 if the child ends first (a config or bind
//! error, which the child printed to the still shared stderr). So the
//! exit code of `haproxy -D` tells whether lbd started, as HAProxy's does
//! (it binds before it forks). The child starts its own session (no
//! controlling terminal) and, once serving, lets go of stdin and stdout;
//! stderr keeps the log unless it is a terminal.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The child's end of the pipe to the waiting parent.
#[derive(Debug)]
pub struct Ready {
    pipe: File,
}

/// Forks. Returns in the child only; the parent exits with the child's
/// report. Must be called while the process has one thread.
pub fn daemonize() -> io::Result<Ready> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two descriptors on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both are fresh descriptors we own.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: the process has a single thread (the caller's promise), so
    // the child can go on running Rust code.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            drop(read);
            // SAFETY: plain syscall; fails only if already a group leader,
            // which a fresh child is not.
            unsafe { libc::setsid() };
            Ok(Ready { pipe: write.into() })
        }
        _child => {
            drop(write);
            let mut byte = [0u8; 1];
            let mut pipe = File::from(read);
            let code = match pipe.read(&mut byte) {
                Ok(1) if byte[0] == b'1' => 0,
                _ => 1,
            };
            std::process::exit(code)
        }
    }
}

impl Ready {
    /// Tells the parent lbd serves (it exits 0), and detaches from the
    /// terminal: stdin and stdout go to /dev/null, and stderr too when it
    /// is a terminal (a file or a journal pipe keeps the log).
    pub fn serving(mut self) -> io::Result<()> {
        self.pipe.write_all(b"1")?;
        let null = File::options().read(true).write(true).open("/dev/null")?;
        let mut targets = vec![libc::STDIN_FILENO, libc::STDOUT_FILENO];
        if io::IsTerminal::is_terminal(&io::stderr()) {
            targets.push(libc::STDERR_FILENO);
        }
        for fd in targets {
            // SAFETY: dup2 onto a standard descriptor.
            if unsafe { libc::dup2(null.as_raw_fd(), fd) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}
