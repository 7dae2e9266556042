//! Children: every process the bench starts is spawned in its own process
//! group and held by a [`Guard`] that kills the whole group on drop (also on
//! an error or a panic). A registry of live groups lets the Ctrl-C handler
//! kill them all too. Also: pinning (`taskset`), and a group's CPU time and
//! RSS summed over its processes (master and workers).

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::procfs;

/// Live process groups and scratch directories, for the signal handler.
struct Registry {
    groups: BTreeSet<i32>,
    dirs: Vec<PathBuf>,
    shutting_down: bool,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    groups: BTreeSet::new(),
    dirs: Vec::new(),
    shutting_down: false,
});

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    // A poisoned lock still holds a usable list; cleanup must not give up.
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner())
}

/// Blocks SIGINT and SIGTERM in this thread (call first in `main`, before
/// any thread exists, so every thread inherits the mask) and starts a thread
/// that waits for them, kills every registered process group, removes the
/// scratch directories and exits 130. [`Guard::spawn`] gives children an
/// empty signal mask again.
pub fn install_signal_handler() -> Result<()> {
    // SAFETY: plain libc calls on a local, initialised sigset_t.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            bail!("pthread_sigmask: {}", std::io::Error::from_raw_os_error(rc));
        }
        set
    };
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut sig: libc::c_int = 0;
            // SAFETY: `set` is a valid sigset_t owned by this closure.
            let rc = unsafe { libc::sigwait(&set, &mut sig) };
            if rc != 0 {
                return;
            }
            eprintln!("\nbench: signal {sig}: stopping everything it started");
            cleanup_all();
            std::process::exit(130);
        })
        .context("cannot start the signal thread")?;
    Ok(())
}

/// Makes the bench adopt its orphaned grandchildren (workers whose master
/// was killed), so it can reap them instead of leaving zombies for init.
pub fn become_subreaper() {
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
}

/// Kills every registered group and removes every scratch directory; no
/// child can be started afterwards.
fn cleanup_all() {
    let mut reg = registry();
    reg.shutting_down = true;
    for &pgid in &reg.groups {
        // SAFETY: kill(2) on a negative pid: signals that process group.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
    }
    reg.groups.clear();
    // Reap them (and adopted workers) so none lingers as a zombie; the
    // process is about to exit, so no `Child` needs its status any more.
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        // SAFETY: waitpid with a null status pointer.
        match unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } {
            0 => std::thread::sleep(Duration::from_millis(10)),
            pid if pid > 0 => {}
            _ => break, // ECHILD: nothing left
        }
    }
    for dir in reg.dirs.drain(..) {
        let _ = fs::remove_dir_all(&dir);
    }
}

/// A scratch directory removed on drop (and by the signal handler).
pub struct WorkDir {
    path: PathBuf,
    keep: std::cell::Cell<bool>,
}

impl WorkDir {
    pub fn create() -> Result<WorkDir> {
        let path = std::env::temp_dir().join(format!("lbd-bench-{}", std::process::id()));
        if path.exists() {
            fs::remove_dir_all(&path)
                .with_context(|| format!("cannot clear {}", path.display()))?;
        }
        fs::create_dir_all(path.join("logs"))
            .with_context(|| format!("cannot create {}", path.display()))?;
        // nginx workers may run as another user (www-data) and must read it.
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
        registry().dirs.push(path.clone());
        Ok(WorkDir {
            path,
            keep: std::cell::Cell::new(false),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn logs(&self) -> PathBuf {
        self.path.join("logs")
    }

    /// Leaves the directory (configs and every child's output) in place
    /// after the run, for looking into an error.
    pub fn keep(&self) {
        self.keep.set(true);
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        registry().dirs.retain(|d| d != &self.path);
        if self.keep.get() {
            eprintln!(
                "bench: configs and logs kept in {} (remove it when done)",
                self.path.display()
            );
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Where a process may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pin {
    Any,
    Cpu(usize),
}

impl Pin {
    /// The command prefix that applies it.
    fn prefix(self) -> Vec<String> {
        match self {
            Pin::Any => Vec::new(),
            Pin::Cpu(n) => vec!["taskset".into(), "-c".into(), n.to_string()],
        }
    }
}

static LOG_SEQ: AtomicU64 = AtomicU64::new(0);

/// A child process (and its process group), killed on drop.
pub struct Guard {
    name: String,
    child: Child,
    pid: i32,
    exited: Option<ExitStatus>,
    pub out_path: PathBuf,
    pub err_path: PathBuf,
    pub command_line: String,
}

impl Guard {
    /// Starts `argv` (with the `taskset` prefix for `pin`) in a new process
    /// group, stdout and stderr to `logs/NAME-SEQ.{out,err}`.
    pub fn spawn(name: &str, argv: &[String], pin: Pin, logs: &Path) -> Result<Guard> {
        let full: Vec<String> = pin
            .prefix()
            .into_iter()
            .chain(argv.iter().cloned())
            .collect();
        let (program, args) = full
            .split_first()
            .with_context(|| format!("{name}: empty command"))?;
        let seq = LOG_SEQ.fetch_add(1, Ordering::Relaxed);
        let out_path = logs.join(format!("{name}-{seq}.out"));
        let err_path = logs.join(format!("{name}-{seq}.err"));
        let out = fs::File::create(&out_path)
            .with_context(|| format!("cannot create {}", out_path.display()))?;
        let err = fs::File::create(&err_path)
            .with_context(|| format!("cannot create {}", err_path.display()))?;
        let command_line = shell_words(&full);
        let mut reg = registry();
        if reg.shutting_down {
            bail!("shutting down: not starting {name}");
        }
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        // The child starts as from a shell: no blocked signals (the bench
        // blocks SIGINT/SIGTERM for its signal thread, and the mask is
        // inherited across exec) and SIGPIPE at its default (Rust ignores it).
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                if libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::signal(libc::SIGPIPE, libc::SIG_DFL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {name}: {command_line}"))?;
        let pid = i32::try_from(child.id()).context("pid out of range")?;
        reg.groups.insert(pid);
        Ok(Guard {
            name: name.to_string(),
            child,
            pid,
            exited: None,
            out_path,
            err_path,
            command_line,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The leader's pid, which is also the process group id.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// `Some(status)` once the leader has exited.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if self.exited.is_none() {
            self.exited = self
                .child
                .try_wait()
                .with_context(|| format!("cannot wait for {}", self.name))?;
        }
        Ok(self.exited)
    }

    /// Waits for the leader to exit, at most `timeout`.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_wait()? {
                return Ok(Some(s));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `sig` to the leader only (e.g. a reload to a master).
    pub fn signal(&self, sig: libc::c_int) -> Result<()> {
        // SAFETY: kill(2) on our own child's pid.
        if unsafe { libc::kill(self.pid, sig) } != 0 {
            bail!(
                "cannot signal {} (pid {}): {}",
                self.name,
                self.pid,
                std::io::Error::last_os_error()
            );
        }
        Ok(())
    }

    /// SIGKILLs the whole group, reaps the leader and waits (bounded) until
    /// no process of the group is left; the bench is a child subreaper (see
    /// [`become_subreaper`]), so orphaned workers are reaped here too.
    pub fn kill(&mut self) {
        let was_registered = {
            let mut reg = registry();
            let was = reg.groups.remove(&self.pid);
            if was {
                // SAFETY: kill(2) on our own child's process group.
                unsafe { libc::kill(-self.pid, libc::SIGKILL) };
            }
            was
        };
        if self.exited.is_none() {
            let _ = self.wait_timeout(Duration::from_secs(5));
        }
        if was_registered {
            let pgid = self.pid;
            let _ = wait_until(Duration::from_secs(5), || {
                let pids = group_pids(pgid)?;
                for &pid in &pids {
                    // SAFETY: waitpid on a pid of the killed group; it only
                    // reaps it if it is our (adopted) child.
                    unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
                }
                Ok(pids.is_empty())
            });
        }
    }

    pub fn stdout_text(&self) -> String {
        fs::read_to_string(&self.out_path).unwrap_or_default()
    }

    pub fn stderr_text(&self) -> String {
        fs::read_to_string(&self.err_path).unwrap_or_default()
    }

    /// The end of stdout and stderr, for error messages.
    pub fn output_tail(&self) -> String {
        format!(
            "--- {} stdout ({}):\n{}\n--- stderr ({}):\n{}",
            self.command_line,
            self.out_path.display(),
            tail(&self.stdout_text(), 2000),
            self.err_path.display(),
            tail(&self.stderr_text(), 2000)
        )
    }

    /// Runs to the end (bounded by `timeout`, then killed: an error).
    pub fn finish(mut self, timeout: Duration) -> Result<Finished> {
        match self.wait_timeout(timeout)? {
            Some(status) => {
                let done = Finished {
                    status,
                    stdout: self.stdout_text(),
                    stderr: self.stderr_text(),
                    command_line: self.command_line.clone(),
                };
                self.kill(); // any stray process of its group
                Ok(done)
            }
            None => {
                self.kill();
                bail!(
                    "{} did not finish within {:?}\n{}",
                    self.name,
                    timeout,
                    self.output_tail()
                )
            }
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A finished command and what it printed.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub command_line: String,
}

/// Runs `argv` to the end and returns what it printed.
pub fn run(
    name: &str,
    argv: &[String],
    pin: Pin,
    logs: &Path,
    timeout: Duration,
) -> Result<Finished> {
    Guard::spawn(name, argv, pin, logs)?.finish(timeout)
}

pub fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// A command line as one could paste it into a shell.
pub fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Clock ticks per second for `/proc/PID/stat` times.
pub fn clk_tck() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// Pids whose process group is `pgid` (the leader and everything it forked
/// that did not move to another group).
pub fn group_pids(pgid: i32) -> Result<Vec<i32>> {
    Ok(all_stats()?
        .into_iter()
        .filter(|(_, s)| s.pgrp == pgid)
        .map(|(pid, _)| pid)
        .collect())
}

/// Pids of the group's processes that are alive (not zombies): those a
/// profiler can attach to.
pub fn group_live_pids(pgid: i32) -> Result<Vec<i32>> {
    Ok(all_stats()?
        .into_iter()
        .filter(|(_, s)| s.pgrp == pgid && s.state != 'Z')
        .map(|(pid, _)| pid)
        .collect())
}

/// Every process's `/proc/PID/stat`, parsed, by pid.
pub fn all_stats() -> Result<Vec<(i32, procfs::Stat)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir("/proc").context("cannot list /proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        // Processes come and go while we look: a vanished one is skipped.
        let Ok(text) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        out.push((pid, procfs::parse_stat(&text)?));
    }
    Ok(out)
}

/// CPU seconds (user + system) used so far by every process of the group.
pub fn group_cpu_seconds(pgid: i32) -> Result<f64> {
    let mut ticks = 0u64;
    for pid in group_pids(pgid)? {
        let Ok(text) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let s = procfs::parse_stat(&text)?;
        if s.pgrp == pgid {
            ticks += s.utime + s.stime;
        }
    }
    Ok(ticks as f64 / clk_tck() as f64)
}

/// Resident memory (VmRSS) of every process of the group, in bytes, and how
/// many processes that is.
pub fn group_rss_bytes(pgid: i32) -> Result<(u64, usize)> {
    let mut total = 0u64;
    let mut n = 0usize;
    for pid in group_pids(pgid)? {
        let Ok(text) = fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        if let Some(rss) = procfs::parse_vmrss(&text)? {
            total += rss;
            n += 1;
        }
    }
    Ok((total, n))
}

fn net_tcp() -> Result<Vec<procfs::TcpRow>> {
    let text = fs::read_to_string("/proc/net/tcp").context("cannot read /proc/net/tcp")?;
    procfs::parse_net_tcp(&text)
}

/// Whether something listens on 127.0.0.1:`port` (or 0.0.0.0:`port`).
pub fn is_listening(port: u16) -> Result<bool> {
    Ok(net_tcp()?.iter().any(|r| {
        r.state == procfs::TCP_LISTEN
            && r.local.port() == port
            && (r.local.ip().is_loopback() || r.local.ip().is_unspecified())
    }))
}

/// Whether a UDP socket is bound to 127.0.0.1:`port` (or 0.0.0.0:`port`)
/// and connected to nothing (a listener, not a flow's socket).
pub fn is_udp_bound(port: u16) -> Result<bool> {
    let text = fs::read_to_string("/proc/net/udp").context("cannot read /proc/net/udp")?;
    // The same columns as /proc/net/tcp.
    Ok(procfs::parse_net_tcp(&text)?.iter().any(|r| {
        r.local.port() == port
            && r.remote.port() == 0
            && (r.local.ip().is_loopback() || r.local.ip().is_unspecified())
    }))
}

/// Waits (at most `timeout`) until a UDP socket is bound to `port`; fails
/// early if the guard's process exits.
pub fn wait_udp_bound(guard: &mut Guard, port: u16, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if is_udp_bound(port)? {
            return Ok(());
        }
        if let Some(status) = guard.try_wait()? {
            bail!(
                "{} exited ({status}) before binding UDP 127.0.0.1:{port}\n{}",
                guard.name(),
                guard.output_tail()
            );
        }
        if Instant::now() >= deadline {
            bail!(
                "{} has not bound UDP 127.0.0.1:{port} after {timeout:?}\n{}",
                guard.name(),
                guard.output_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Established sockets whose local port is one of `ports` (the server side
/// of connections to those ports).
pub fn established_to(ports: &[u16]) -> Result<usize> {
    Ok(net_tcp()?
        .iter()
        .filter(|r| r.state == procfs::TCP_ESTABLISHED && ports.contains(&r.local.port()))
        .count())
}

/// Waits (at most `timeout`) until `port` listens; fails early if the
/// guard's process exits.
pub fn wait_listening(guard: &mut Guard, port: u16, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if is_listening(port)? {
            return Ok(());
        }
        if let Some(status) = guard.try_wait()? {
            bail!(
                "{} exited ({status}) before listening on 127.0.0.1:{port}\n{}",
                guard.name(),
                guard.output_tail()
            );
        }
        if Instant::now() >= deadline {
            bail!(
                "{} does not listen on 127.0.0.1:{port} after {timeout:?}\n{}",
                guard.name(),
                guard.output_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (bounded) until `pred` holds, polling every 10 ms.
pub fn wait_until(timeout: Duration, mut pred: impl FnMut() -> Result<bool>) -> Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        if pred()? {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        let argv: Vec<String> = ["wrk", "-H", "Connection: close", "http://127.0.0.1:80/1m"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            shell_words(&argv),
            "wrk -H 'Connection: close' http://127.0.0.1:80/1m"
        );
    }

    #[test]
    fn tail_respects_char_boundaries() {
        assert_eq!(tail("abc", 10), "abc");
        assert_eq!(tail("abcdef", 3), "def");
        assert_eq!(tail("aé", 1), "");
    }

    #[test]
    fn guard_kills_its_group_on_drop() {
        let dir = std::env::temp_dir().join(format!("bench-procs-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let argv: Vec<String> = ["sh", "-c", "sleep 30 & sleep 30"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let g = Guard::spawn("sleeper", &argv, Pin::Any, &dir).unwrap();
        let pgid = g.pid();
        assert!(wait_until(Duration::from_secs(5), || Ok(group_pids(pgid)?.len() >= 3)).unwrap());
        assert!(group_cpu_seconds(pgid).unwrap() >= 0.0);
        assert!(group_rss_bytes(pgid).unwrap().0 > 0);
        drop(g);
        // The children are reparented and reaped by init once killed.
        assert!(wait_until(Duration::from_secs(5), || {
            let live = group_pids(pgid)?
                .into_iter()
                .filter(|p| {
                    fs::read_to_string(format!("/proc/{p}/stat"))
                        .map(|s| !s.contains(") Z "))
                        .unwrap_or(false)
                })
                .count();
            Ok(live == 0)
        })
        .unwrap());
        let _ = fs::remove_dir_all(&dir);
    }
}
