//! `external` checks: a program run for each check, with HAProxy's
//! `external-check` contract, so that scripts written for HAProxy (such
//! as Octavia's `ping-wrapper.sh`) work unchanged:
//!
//! * arguments: the configured argv, then `<proxy_address> <proxy_port>
//!   <server_address> <server_port>`; a pool is a HAProxy `backend`, which
//!   has no listener, so the first two are `NOT_USED`, as HAProxy passes
//!   them for a backend;
//! * environment: only `HAPROXY_PROXY_*`, `HAPROXY_SERVER_*` and `PATH`
//!   (the configured `command_path`), nothing of lbd's own;
//! * the server is the member's own address and port: like HAProxy's
//!   (which ignores a server's `addr` and `port` here), an external check
//!   does not use `monitor_address` / `monitor_port`;
//! * exit status 0 passes; anything else fails.
//!
//! The program runs in a process group of its own, never through a shell,
//! with stdin on `/dev/null` and stdout and stderr on one pipe. At the
//! check's timeout the whole group is killed (SIGKILL) and the check
//! fails; when the program exits, whatever it left running in its group is
//! killed too, so a check leaves no process behind. Its output is read as
//! it comes: the first [`OUTPUT_KEPT`] bytes are kept (the failure reason
//! quotes their first line), the rest is read and dropped, so a chatty
//! program neither blocks on a full pipe nor costs lbd memory. The child
//! is always reaped (no zombie) and every descriptor lbd opens for it is
//! closed after the run.

use std::io;
use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use lbd_config::model::{ExternalCheck, Member};
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tracing::debug;

/// How much of a run's output (stdout and stderr, in the order written)
/// is kept for the failure reason and the debug log.
pub const OUTPUT_KEPT: usize = 4 * 1024;

/// Longest line of output quoted in a failure reason.
const REASON_LINE_MAX: usize = 200;

/// After the program exited, how long its output pipe may stay open (held
/// by something it left running) before the group is killed.
const AFTER_EXIT: Duration = Duration::from_millis(50);

/// How long to wait for the kernel to reap a killed program before leaving
/// it to tokio's background reaping (a process stuck in the kernel).
const REAP_WAIT: Duration = Duration::from_secs(1);

/// What HAProxy passes for the proxy address and port of a backend.
const NOT_USED: &str = "NOT_USED";

/// Who an external check is about: what HAProxy's arguments and
/// environment say of the server and its backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// `HAPROXY_PROXY_NAME`: the pool's name.
    pub pool: String,
    /// `HAPROXY_PROXY_ID`: the pool's position in the config, from 1.
    pub pool_id: usize,
    /// `HAPROXY_SERVER_NAME`: the member's `name`, else `address:port`.
    pub server: String,
    /// `HAPROXY_SERVER_ID`: the member's `id`, else its position in the
    /// pool, from 1.
    pub server_id: String,
    /// `<server_address> <server_port>`: the member's own address.
    pub addr: SocketAddr,
    /// `HAPROXY_SERVER_MAXCONN`: the member's `max_connections`, 0 for
    /// none (as HAProxy).
    pub max_connections: u32,
}

impl Subject {
    /// The subject for `member`, the `position`-th (from 1) of the
    /// `pool_id`-th pool `pool`.
    pub fn new(pool: &str, pool_id: usize, member: &Member, position: usize) -> Subject {
        let addr = SocketAddr::new(member.address, member.port);
        Subject {
            pool: pool.to_owned(),
            pool_id,
            server: member.name.clone().unwrap_or_else(|| addr.to_string()),
            server_id: member.id.clone().unwrap_or_else(|| position.to_string()),
            addr,
            max_connections: member.max_connections.unwrap_or(0),
        }
    }
}

/// A configured external check, shared by the tasks checking each member.
pub struct Program {
    command: Vec<String>,
    path: String,
    timeout: Duration,
}

/// How one run ended, and what it printed.
#[derive(Debug)]
pub struct Run {
    pub ended: Ended,
    pub output: Output,
}

#[derive(Debug)]
pub enum Ended {
    /// The program exited (or was killed by a signal it did not get from
    /// lbd).
    Exited(ExitStatus),
    /// Still running at the timeout: killed with its group.
    TimedOut(Duration),
    /// It could not be started (no such file, not executable, no
    /// descriptors or processes left).
    CannotRun(io::Error),
}

/// The first [`OUTPUT_KEPT`] bytes of a run's output, and how much there
/// was in all.
#[derive(Debug, Default)]
pub struct Output {
    pub kept: Vec<u8>,
    pub total: u64,
}

impl Output {
    fn push(&mut self, chunk: &[u8]) {
        let room = OUTPUT_KEPT.saturating_sub(self.kept.len());
        self.kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
        self.total += chunk.len() as u64;
    }

    /// The first non-blank line, trimmed, printable and at most
    /// [`REASON_LINE_MAX`] bytes.
    pub fn first_line(&self) -> Option<String> {
        let line = self
            .kept
            .split(|&b| b == b'\n')
            .map(<[u8]>::trim_ascii)
            .find(|l| !l.is_empty())?;
        let cut = &line[..line.len().min(REASON_LINE_MAX)];
        let more = if cut.len() < line.len() { "..." } else { "" };
        Some(format!(
            "{}{more}",
            String::from_utf8_lossy(cut).escape_debug()
        ))
    }
}

impl Run {
    /// `Ok` when the program exited 0, else why the check failed:
    /// `exit 1: <first line of output>`, `timeout after 1s (killed)`...
    pub fn verdict(&self) -> Result<(), String> {
        let reason = match &self.ended {
            Ended::Exited(status) if status.success() => return Ok(()),
            Ended::Exited(status) => match (status.code(), signal_of(status)) {
                (Some(code), _) => format!("exit {code}"),
                (None, Some(signal)) => format!("killed by signal {signal}"),
                (None, None) => status.to_string(),
            },
            Ended::TimedOut(after) => format!(
                "timeout after {} (killed)",
                humantime::format_duration(*after)
            ),
            Ended::CannotRun(e) => return Err(e.to_string()),
        };
        Err(match self.output.first_line() {
            Some(line) => format!("{reason}: {line}"),
            None => reason,
        })
    }

    /// Whether the program could not be started for lack of lbd's own
    /// resources (descriptors, memory, processes): says nothing about the
    /// member, so the check is not counted.
    pub fn is_local(&self) -> bool {
        match &self.ended {
            Ended::CannotRun(e) => {
                crate::sockets::is_local_shortage(e) || e.raw_os_error() == Some(libc::EAGAIN)
            }
            _ => false,
        }
    }
}

fn signal_of(status: &ExitStatus) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    status.signal()
}

impl Program {
    pub fn new(check: &ExternalCheck, timeout: Duration) -> Program {
        Program {
            command: check.command.clone(),
            path: check.path.clone(),
            timeout,
        }
    }

    /// Runs the program once for `subject` (which has `current` connections
    /// open), within the timeout.
    pub async fn run(&self, subject: &Subject, current: u64) -> Run {
        let deadline = Instant::now() + self.timeout;
        let mut output = Output::default();
        let (mut child, reader) = match self.spawn(subject, current).await {
            Ok(started) => started,
            Err(e) => {
                let program = self.command.first().map_or("", String::as_str);
                let e = io::Error::new(e.kind(), format!("cannot run {program:?}: {e}"));
                return Run {
                    ended: Ended::CannotRun(e),
                    output,
                };
            }
        };
        let group = Group(child.id().and_then(|pid| i32::try_from(pid).ok()));
        let ended = self.watch(&mut child, reader, deadline, &mut output).await;
        // Whatever is left of the group goes: the program itself at the
        // timeout, anything it started and left behind otherwise.
        group.kill();
        let ended = match ended {
            Some(status) => Ended::Exited(status),
            None => {
                // Reap it (SIGKILL cannot be ignored); a process stuck in
                // the kernel is left to tokio's background reaping.
                let _ = tokio::time::timeout(REAP_WAIT, child.wait()).await;
                Ended::TimedOut(self.timeout)
            }
        };
        let run = Run { ended, output };
        if run.verdict().is_err() && !run.output.kept.is_empty() {
            debug!(
                "external check {:?} for {}: {} byte(s) of output: {}",
                self.command,
                subject.addr,
                run.output.total,
                run.output.kept.escape_ascii()
            );
        }
        run
    }

    /// Starts the program in a process group of its own. Spawning (fork
    /// and exec) runs on a blocking thread, never on the health runtime's.
    async fn spawn(&self, subject: &Subject, current: u64) -> io::Result<(Child, pipe::Receiver)> {
        let (reader, writer) = io::pipe()?;
        let (ip, port) = (
            subject.addr.ip().to_string(),
            subject.addr.port().to_string(),
        );
        let mut cmd = Command::new(&self.command[0]);
        cmd.args(&self.command[1..])
            .args([NOT_USED, NOT_USED, &ip, &port])
            .env_clear()
            .env("HAPROXY_PROXY_ADDR", "")
            .env("HAPROXY_PROXY_ID", subject.pool_id.to_string())
            .env("HAPROXY_PROXY_NAME", &subject.pool)
            .env("HAPROXY_PROXY_PORT", "")
            .env("HAPROXY_SERVER_ADDR", &ip)
            .env("HAPROXY_SERVER_CURCONN", current.to_string())
            .env("HAPROXY_SERVER_ID", &subject.server_id)
            .env(
                "HAPROXY_SERVER_MAXCONN",
                subject.max_connections.to_string(),
            )
            .env("HAPROXY_SERVER_NAME", &subject.server)
            .env("HAPROXY_SERVER_PORT", &port)
            .env("HAPROXY_SERVER_SSL", "0")
            .env("HAPROXY_SERVER_PROTO", "tcp")
            .env("PATH", &self.path)
            .stdin(Stdio::null())
            .stdout(writer.try_clone()?)
            .stderr(writer)
            .process_group(0)
            .kill_on_drop(true);
        // `cmd` holds the pipe's write end: it must be gone once the child
        // has its copy, or the output would never end.
        let child = tokio::task::spawn_blocking(move || cmd.spawn())
            .await
            .map_err(io::Error::other)??;
        Ok((child, pipe::Receiver::from_owned_fd(reader.into())?))
    }

    /// Reads the output until the program has exited and the pipe is
    /// closed, or the deadline. Returns the exit status, `None` at the
    /// deadline.
    async fn watch(
        &self,
        child: &mut Child,
        mut reader: pipe::Receiver,
        deadline: Instant,
        output: &mut Output,
    ) -> Option<ExitStatus> {
        let mut chunk = vec![0u8; OUTPUT_KEPT];
        let (mut status, mut closed) = (None, false);
        let mut until = deadline;
        while status.is_none() || !closed {
            tokio::select! {
                exited = child.wait(), if status.is_none() => {
                    // An error here (ECHILD) cannot happen for our own
                    // child; it would count as exit 255, a failure.
                    status = Some(exited.unwrap_or_else(|_| {
                        std::os::unix::process::ExitStatusExt::from_raw(255 << 8)
                    }));
                    // What it wrote is in the pipe already; only something
                    // it left running could keep the pipe open.
                    until = until.min(Instant::now() + AFTER_EXIT);
                }
                read = reader.read(&mut chunk), if !closed => match read {
                    Ok(0) | Err(_) => closed = true,
                    Ok(n) => output.push(&chunk[..n]),
                },
                () = tokio::time::sleep_until(until) => break,
            }
        }
        status
    }
}

/// The program's process group, killed when the run ends, also when the
/// check task is aborted (a reload, shutdown) in the middle of a run.
struct Group(Option<i32>);

impl Group {
    fn kill(mut self) {
        self.kill_now();
    }

    fn kill_now(&mut self) {
        if let Some(pgid) = self.0.take() {
            // SAFETY: killpg(2) has no memory effects. The group id is our
            // child's pid: while the child is not reaped it is ours; once
            // reaped, the id stays taken while any process of the group
            // lives, and Linux hands out pids in sequence, so it is not
            // someone else's a moment later. ESRCH (none left) is fine.
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn subject() -> Subject {
        let member = Member {
            address: IpAddr::from([127, 0, 0, 1]),
            port: 6379,
            ..test_member()
        };
        Subject::new("redis", 2, &member, 3)
    }

    fn test_member() -> Member {
        Member {
            address: IpAddr::from([127, 0, 0, 1]),
            port: 1,
            weight: 1,
            backup: false,
            admin_state: lbd_config::AdminState::Ready,
            monitor_address: None,
            monitor_port: None,
            id: None,
            name: None,
            max_connections: Some(512),
        }
    }

    fn program(script: &str, timeout: Duration) -> Program {
        Program::new(
            &ExternalCheck {
                command: vec!["/bin/sh".into(), "-c".into(), script.into(), "sh".into()],
                path: "/usr/bin:/bin".into(),
            },
            timeout,
        )
    }

    async fn run(script: &str) -> Run {
        program(script, Duration::from_secs(5))
            .run(&subject(), 7)
            .await
    }

    #[tokio::test]
    async fn arguments_and_environment_are_haproxys() {
        let run = run("echo \"$*\"; env | sort; exit 3").await;
        let text = String::from_utf8(run.output.kept.clone()).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("NOT_USED NOT_USED 127.0.0.1 6379"));
        let env: Vec<&str> = lines.filter(|l| !l.starts_with("PWD=")).collect();
        assert_eq!(
            env,
            [
                "HAPROXY_PROXY_ADDR=",
                "HAPROXY_PROXY_ID=2",
                "HAPROXY_PROXY_NAME=redis",
                "HAPROXY_PROXY_PORT=",
                "HAPROXY_SERVER_ADDR=127.0.0.1",
                "HAPROXY_SERVER_CURCONN=7",
                "HAPROXY_SERVER_ID=3",
                "HAPROXY_SERVER_MAXCONN=512",
                "HAPROXY_SERVER_NAME=127.0.0.1:6379",
                "HAPROXY_SERVER_PORT=6379",
                "HAPROXY_SERVER_PROTO=tcp",
                "HAPROXY_SERVER_SSL=0",
                "PATH=/usr/bin:/bin",
            ]
        );
        assert_eq!(
            run.verdict(),
            Err("exit 3: NOT_USED NOT_USED 127.0.0.1 6379".into())
        );
    }

    #[tokio::test]
    async fn member_name_and_id_when_set() {
        let member = Member {
            name: Some("node-1".into()),
            id: Some("8a1f".into()),
            ..test_member()
        };
        let subject = Subject::new("web", 1, &member, 1);
        let run = program(
            "echo $HAPROXY_SERVER_NAME $HAPROXY_SERVER_ID; exit 1",
            Duration::from_secs(5),
        )
        .run(&subject, 0)
        .await;
        assert_eq!(run.verdict(), Err("exit 1: node-1 8a1f".into()));
    }

    #[tokio::test]
    async fn verdicts() {
        assert_eq!(run("exit 0").await.verdict(), Ok(()));
        assert_eq!(run("exit 1").await.verdict(), Err("exit 1".into()));
        assert_eq!(
            run("echo; echo '  first\tline  ' >&2; echo second; exit 2")
                .await
                .verdict(),
            Err("exit 2: first\\tline".into())
        );
        assert_eq!(
            run("kill -TERM $$").await.verdict(),
            Err("killed by signal 15".into())
        );
        let missing = Program::new(
            &ExternalCheck {
                command: vec!["/nonexistent/lbd-check".into()],
                path: String::new(),
            },
            Duration::from_secs(1),
        )
        .run(&subject(), 0)
        .await;
        let verdict = missing.verdict().unwrap_err();
        assert!(
            verdict.starts_with("cannot run \"/nonexistent/lbd-check\": No such file"),
            "{verdict}"
        );
        assert!(!missing.is_local());
    }

    #[tokio::test]
    async fn output_is_capped_but_read_to_the_end() {
        // 1 MiB: far more than a pipe holds; the program would block
        // forever if it were not read.
        let run = run("head -c 1048576 /dev/zero | tr '\\0' x; echo; exit 0").await;
        assert_eq!(run.verdict(), Ok(()));
        assert_eq!(run.output.kept.len(), OUTPUT_KEPT);
        assert_eq!(run.output.total, 1024 * 1024 + 1);
        let long = run.output.first_line().unwrap();
        assert_eq!(long, format!("{}...", "x".repeat(REASON_LINE_MAX)));
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group() {
        let marker = std::env::temp_dir().join(format!("lbd-ext-{}", std::process::id()));
        let script = format!(
            "sleep 30 & echo $! > {0}; echo waiting; sleep 30",
            marker.display()
        );
        let started = std::time::Instant::now();
        let run = program(&script, Duration::from_millis(300))
            .run(&subject(), 0)
            .await;
        let took = started.elapsed();
        assert_eq!(
            run.verdict(),
            Err("timeout after 300ms (killed): waiting".into())
        );
        assert!(took < Duration::from_secs(3), "{took:?}");
        let pid: i32 = std::fs::read_to_string(&marker)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let _ = std::fs::remove_file(&marker);
        assert!(gone(pid).await, "the background sleep {pid} survived");
    }

    #[tokio::test]
    async fn leftovers_are_killed_after_a_normal_exit() {
        let run = run("sleep 30 & echo $!; exit 0").await;
        assert_eq!(run.verdict(), Ok(()));
        let pid: i32 = String::from_utf8_lossy(&run.output.kept)
            .trim()
            .parse()
            .unwrap();
        assert!(gone(pid).await, "the background sleep {pid} survived");
    }

    /// Whether `pid` is gone (or a zombie waiting for its new parent)
    /// within a few seconds.
    async fn gone(pid: i32) -> bool {
        for _ in 0..100 {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status"));
            match status {
                Err(_) => return true,
                Ok(s) if s.contains("State:\tZ") => return true,
                Ok(_) => tokio::time::sleep(Duration::from_millis(30)).await,
            }
        }
        false
    }
}
