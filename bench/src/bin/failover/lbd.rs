//! lbd itself: the config and the running
//! process, which is killed when its guard is dropped (also on error) and
//! by the kernel if this tool dies first (PR_SET_PDEATHSIG).

use std::fs::File;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::backend::Death;

/// The pool's name; lbd labels members `api/<ip:port>`.
pub const POOL: &str = "api";

/// The config: one listener, pool "api" with the members and TCP checks
/// every second (`fall = 2`). Blackhole mode gives up a member connect
/// after 1 s instead of the default 5 s. `hedge`: the listener's
/// `connect_hedge` (hedged connects), if any.
pub fn config(
    bind: SocketAddr,
    members: &[SocketAddr],
    death: Death,
    hedge: Option<&str>,
) -> String {
    let mut connect = match death {
        Death::Blackhole => "member_connect = \"1s\"\n",
        Death::Refuse => "",
    }
    .to_owned();
    if let Some(hedge) = hedge {
        connect += &format!("connect_hedge = \"{hedge}\"\n");
    }
    let mut cfg = format!(
        "[global]\ndrain_timeout = \"1s\"\n\n\
         [[listener]]\nname = \"front\"\nbind = \"{bind}\"\npool = \"{POOL}\"\n{connect}\n\
         [[pool]]\nname = \"{POOL}\"\nretries = 3\n\n\
         [pool.health]\ntype = \"tcp\"\ninterval = \"1s\"\ntimeout = \"1s\"\nrise = 2\nfall = 2\n"
    );
    for m in members {
        cfg += &format!(
            "\n[[pool.member]]\naddress = \"{}\"\nport = {}\n",
            m.ip(),
            m.port()
        );
    }
    cfg
}

/// A running lbd. Dropping it stops it (SIGTERM, SIGKILL after 3 s).
pub struct Lbd {
    child: Child,
    pub log: PathBuf,
    pub command: String,
}

impl Lbd {
    /// `lbd --workers 2 --log lbd=debug run -c CONFIG`, stderr to `log`.
    pub fn start(bin: &Path, config: &Path, log: &Path) -> Result<Lbd> {
        let stderr = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = Command::new(bin);
        cmd.args(["--workers", "2", "--log", "lbd=debug", "run", "-c"])
            .arg(config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        // SAFETY: prctl is async-signal-safe; nothing else runs in the child.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let command = format!(
            "{} --workers 2 --log lbd=debug run -c {}",
            bin.display(),
            config.display()
        );
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        Ok(Lbd {
            child,
            log: log.to_path_buf(),
            command,
        })
    }

    pub fn read_log(&self) -> Result<String> {
        std::fs::read_to_string(&self.log)
            .with_context(|| format!("reading {}", self.log.display()))
    }

    /// Waits until every one of `needles` is in the log.
    pub fn wait_for_log(&mut self, needles: &[String], timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.read_log()?;
            if needles.iter().all(|n| log.contains(n.as_str())) {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("lbd exited ({status}) before logging {needles:?}:\n{log}");
            }
            if Instant::now() > deadline {
                bail!("lbd did not log {needles:?} within {timeout:?}:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited within 3 s.
    pub fn stop(&mut self) -> Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        let pid = libc::pid_t::try_from(self.child.id()).context("pid out of range")?;
        // SAFETY: plain kill(2) on our own child, which has not been reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        if wait_bounded(&mut self.child, Duration::from_secs(3))?.is_none() {
            self.child.kill().context("SIGKILL lbd")?;
            self.child.wait().context("reaping lbd")?;
        }
        Ok(())
    }
}

impl Drop for Lbd {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("failover: stopping lbd: {e:#}");
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits for `child` at most `limit`; None if it is still running.
fn wait_bounded(child: &mut Child, limit: Duration) -> Result<Option<std::process::ExitStatus>> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().context("waiting for a child")? {
            return Ok(Some(status));
        }
        if Instant::now() > deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
