//! External programs some tests drive (Debian's `promtool`, `prometheus`,
//! `chromium`): [`available`] and [`run_bounded`] come from the test-support
//! crate; here are the long-running [`Daemon`] and chromium's flags.

// Not every test binary that includes `common` uses all three.
#[allow(unused_imports)]
pub use lbd_test_support::tools::{available, kill_group, run_bounded};

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// A long-running program (a Prometheus server) killed with its process
/// group when dropped.
pub struct Daemon {
    child: std::process::Child,
}

impl Daemon {
    pub fn spawn(mut cmd: Command, log: &Path) -> Daemon {
        let log = std::fs::File::create(log).expect("daemon log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        Daemon { child }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        kill_group(self.child.id() as i32);
        let _ = self.child.wait();
    }
}

/// Debian chromium's flags for a headless run on a machine without network
/// (background networking off, no sandbox as root), with its own profile.
pub fn chromium(profile: &Path) -> Command {
    let mut cmd = Command::new("/usr/bin/chromium");
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    cmd
}
