//! External programs tests drive (Debian's `promtool`, `podman`, `dpkg`,
//! ...), run in their own process group and killed when a bound passes.
//! `scripts/test` installs them and sets `LBD_TEST_REQUIRE_TOOLS`, which
//! turns a missing program into a failure instead of a skip.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Whether `path` exists. When it does not: fails the test if
/// `LBD_TEST_REQUIRE_TOOLS` is set, else prints why the test is skipped.
pub fn available(path: &str, package: &str) -> bool {
    if Path::new(path).exists() {
        return true;
    }
    assert!(
        std::env::var_os("LBD_TEST_REQUIRE_TOOLS").is_none(),
        "{path} missing: install Debian package {package} (scripts/test does)"
    );
    eprintln!("SKIPPED: {path} missing (Debian package {package}; scripts/test installs it)");
    false
}

/// Runs `cmd` to completion within `limit` (stdin closed, output captured),
/// killing its whole process group if it takes longer.
pub fn run_bounded(mut cmd: Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let pgid = child.id() as i32;
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                kill_group(pgid);
                panic!("{cmd:?} did not finish within {limit:?}");
            }
        }
    }
    let output = child.wait_with_output().expect("collect output");
    kill_group(pgid); // helpers it may have left behind (chromium's zygotes)
    output
}

/// Kills process group `pgid` (SIGKILL).
pub fn kill_group(pgid: i32) {
    // SAFETY: kill(2) on a process group this test created.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
}

/// The stdout of a finished program; fails the test with its whole output
/// if it did not exit 0.
pub fn succeeded(out: Output, what: &str) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what}: {:?}\n{text}", out.status);
    String::from_utf8_lossy(&out.stdout).into_owned()
}
