//! Debian's HAProxy as the oracle: the same backends and checks behind
//! HAProxy and lbd, and the tests compare what each does. A missing
//! `haproxy` skips the comparison, or fails the test under
//! `LBD_TEST_REQUIRE_TOOLS` (`scripts/test` installs it).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use super::tools::{available, Daemon};

const HAPROXY: &str = "/usr/sbin/haproxy";

/// A running `haproxy -db -f <config>` (foreground, its warnings, such as
/// server state changes, on stderr), killed when dropped.
pub struct Haproxy {
    _daemon: Daemon,
    log_path: PathBuf,
}

impl Haproxy {
    /// Starts HAProxy with `config` and waits until `listening` accepts
    /// connections; `None` if HAProxy is not installed (and not required).
    pub async fn start(config: &str, listening: SocketAddr) -> Option<Haproxy> {
        if !available(HAPROXY, "haproxy") {
            return None;
        }
        let dir = super::scratch_dir();
        let config_path = dir.join("haproxy.cfg");
        let log_path = dir.join("haproxy.log");
        std::fs::write(&config_path, config).expect("write haproxy.cfg");
        let mut cmd = Command::new(HAPROXY);
        cmd.arg("-db").arg("-f").arg(&config_path);
        let haproxy = Haproxy {
            _daemon: Daemon::spawn(cmd, &log_path),
            log_path,
        };
        let deadline = Instant::now() + super::WAIT;
        while tokio::net::TcpStream::connect(listening).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "haproxy does not listen on {listening}; log:\n{}",
                haproxy.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Some(haproxy)
    }

    /// What HAProxy wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}
