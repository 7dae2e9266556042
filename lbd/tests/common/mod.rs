//! Test harness: runs the real `lbd` binary on loopback with a config file,
//! and small backends inside the test process.
//!
//! Every wait here is bounded: polling loops give up after a deadline and
//! fail the test with what they were waiting for.

#![allow(dead_code)] // each test file uses a different part of the harness

pub mod apiserver;
pub mod haproxy;
pub mod notify;
pub mod streams;
pub mod tools;
pub mod traffic;
pub mod udp;

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;

/// How long any single wait in a test may take before it fails.
pub const WAIT: Duration = Duration::from_secs(10);

pub use lbd_test_support::{free_port, scratch_dir};

pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// A running `lbd run` process.
pub struct Lbd {
    child: Mutex<Option<Child>>,
    pid: i32,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
}

impl Lbd {
    /// Starts lbd with `config` on runtime `rt` ("io-uring" or "epoll") and
    /// `workers` workers, and waits until it says it started.
    pub async fn start(rt: &str, workers: usize, config: &str) -> Lbd {
        Self::start_with(rt, workers, config, |_| {}).await
    }

    /// Like [`Lbd::start`], letting the caller adjust the command.
    pub async fn start_with(
        rt: &str,
        workers: usize,
        config: &str,
        adjust: impl FnOnce(&mut Command),
    ) -> Lbd {
        let dir = scratch_dir();
        let config_path = dir.join("lbd.toml");
        let log_path = dir.join("lbd.log");
        std::fs::write(&config_path, config).expect("write config");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lbd"));
        cmd.args([
            "--runtime",
            rt,
            "--workers",
            &workers.to_string(),
            "--log",
            "lbd=debug",
        ])
        .arg("run")
        .arg("-c")
        .arg(&config_path)
        .env_remove("RUST_LOG");
        adjust(&mut cmd);
        Self::spawn(cmd, config_path, log_path).await
    }

    /// Runs `cmd` (an lbd, however started) with its stderr to `log_path`
    /// and waits until it says it started.
    pub async fn spawn(mut cmd: Command, config_path: PathBuf, log_path: PathBuf) -> Lbd {
        let log = std::fs::File::create(&log_path).expect("create log");
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
        let child = cmd.spawn().expect("spawn lbd");
        let lbd = Lbd {
            pid: child.id() as i32,
            child: Mutex::new(Some(child)),
            config_path,
            log_path,
        };
        lbd.wait_for_log(" started: ", 1).await;
        lbd
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The exit status if lbd has exited.
    pub fn exited(&self) -> Option<ExitStatus> {
        let mut child = self.child.lock().unwrap();
        let status = child.as_mut()?.try_wait().expect("try_wait")?;
        *child = None;
        Some(status)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits until `needle` appears at least `count` times in the log.
    pub async fn wait_for_log(&self, needle: &str, count: usize) {
        let deadline = Instant::now() + WAIT;
        loop {
            let log = self.log();
            if log.matches(needle).count() >= count {
                return;
            }
            if Instant::now() > deadline {
                panic!("lbd did not log {needle:?} ({count}x) within {WAIT:?}; log:\n{log}");
            }
            if let Some(status) = self.exited() {
                panic!("lbd exited ({status}) while waiting for {needle:?}; log:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill({sig}) failed");
    }

    /// Writes a new config, sends SIGHUP and waits until lbd logged the
    /// outcome. Returns true if it was applied, false if rejected.
    pub async fn reload(&self, config: &str) -> bool {
        let done =
            |log: &str| log.matches("reloaded:").count() + log.matches("reload rejected").count();
        let before = done(&self.log());
        let applied_before = self.log().matches("reloaded:").count();
        std::fs::write(&self.config_path, config).expect("write config");
        self.signal(libc::SIGHUP);
        let deadline = Instant::now() + WAIT;
        while done(&self.log()) <= before {
            assert!(
                Instant::now() < deadline,
                "reload not logged; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.log().matches("reloaded:").count() > applied_before
    }

    /// Waits (bounded) for the process to exit and returns its status.
    pub async fn wait_exit(&self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "lbd did not exit within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Lbd {
    fn drop(&mut self) {
        let child = self.child.get_mut().map(Option::take).unwrap_or(None);
        if let Some(mut c) = child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// How a test backend behaves on each connection.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// Writes `<tag>\n` at once, then echoes everything until EOF.
    TaggedEcho,
    /// Reads until EOF, then writes `got N bytes\n` and closes.
    CountThenReply,
    /// Writes `<tag>\n`, then resets the connection (SO_LINGER 0 close): a
    /// member that crashes in the middle of an answer.
    TagThenReset,
}

/// A backend listening on 127.0.0.1; stops accepting when dropped.
pub struct Backend {
    pub addr: SocketAddr,
    pub tag: String,
    task: Option<JoinHandle<()>>,
}

impl Backend {
    pub async fn start(tag: &str, mode: Mode) -> Backend {
        Self::start_on("127.0.0.1:0".parse().unwrap(), tag, mode).await
    }

    pub async fn start_on(addr: SocketAddr, tag: &str, mode: Mode) -> Backend {
        let listener = TcpListener::bind(addr).await.expect("bind backend");
        let addr = listener.local_addr().expect("backend addr");
        let line = format!("{tag}\n");
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let line = line.clone();
                tokio::spawn(async move {
                    let _ = serve(conn, mode, line.as_bytes()).await;
                });
            }
        });
        Backend {
            addr,
            tag: tag.to_owned(),
            task: Some(task),
        }
    }
}

impl Backend {
    /// Stops accepting and returns once the listening socket is closed.
    pub async fn stop(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

async fn serve(mut conn: TcpStream, mode: Mode, tag: &[u8]) -> io::Result<()> {
    match mode {
        Mode::TaggedEcho => {
            conn.write_all(tag).await?;
            let (mut r, mut w) = conn.split();
            tokio::io::copy(&mut r, &mut w).await?;
            w.shutdown().await
        }
        Mode::TagThenReset => {
            conn.write_all(tag).await?;
            // Let the tag leave before the reset discards the send queue.
            tokio::time::sleep(Duration::from_millis(50)).await;
            socket2::SockRef::from(&conn).set_linger(Some(Duration::ZERO))?;
            drop(conn);
            Ok(())
        }
        Mode::CountThenReply => {
            let mut n = 0usize;
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let got = conn.read(&mut buf).await?;
                if got == 0 {
                    break;
                }
                n += got;
            }
            conn.write_all(format!("got {n} bytes\n").as_bytes())
                .await?;
            conn.shutdown().await
        }
    }
}

/// A member line for a config.
pub fn member(b: &Backend) -> String {
    member_at(b.addr)
}

/// A `[[pool.member]]` table for a member at `addr`.
pub fn member_at(addr: SocketAddr) -> String {
    format!(
        "[[pool.member]]\naddress = \"{}\"\nport = {}\n",
        addr.ip(),
        addr.port()
    )
}

/// Connects to `addr` (optionally from source address `from`).
pub async fn connect_from(addr: SocketAddr, from: Option<SocketAddr>) -> io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(from) = from {
        socket.bind(from)?;
    }
    tokio::time::timeout(WAIT, socket.connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))?
}

/// Reads one `\n`-terminated line (bounded in time and length), without
/// the line end and trailing whitespace.
pub async fn read_line(conn: &mut TcpStream) -> io::Result<String> {
    let line = read_raw_line(conn).await?;
    Ok(String::from_utf8_lossy(&line).trim_end().to_owned())
}

/// Reads bytes up to and including the first `\n`, a byte at a time so
/// nothing after the line is consumed.
pub async fn read_raw_line(conn: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    let read = async {
        let mut byte = [0u8; 1];
        loop {
            if conn.read(&mut byte).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed before a line",
                ));
            }
            line.push(byte[0]);
            if byte[0] == b'\n' {
                return Ok(());
            }
            if line.len() > 4096 {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
            }
        }
    };
    match tokio::time::timeout(WAIT, read).await {
        Ok(Ok(())) => Ok(line),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "no line in time")),
    }
}

/// One connection through lbd to a tagged backend: returns the tag.
pub async fn hit(addr: SocketAddr) -> io::Result<String> {
    hit_from(addr, None).await
}

pub async fn hit_from(addr: SocketAddr, from: Option<SocketAddr>) -> io::Result<String> {
    let mut conn = connect_from(addr, from).await?;
    read_line(&mut conn).await
}

/// Whether the peer closes or resets `conn` within `within` without sending
/// anything (what a refused connection looks like after accept).
pub async fn is_closed_without_data(conn: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 64];
    match tokio::time::timeout(within, conn.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) => false,
        Err(_) => false,
    }
}

/// Connects (optionally from `from`) and checks lbd refuses the connection
/// within `within`: reset or closed without data. On loopback the reset can
/// arrive before `connect()` returns, which counts too.
pub async fn is_refused(addr: SocketAddr, from: Option<SocketAddr>, within: Duration) -> bool {
    match connect_from(addr, from).await {
        Err(e) => e.kind() == io::ErrorKind::ConnectionReset,
        Ok(mut conn) => is_closed_without_data(&mut conn, within).await,
    }
}

/// An HTTP/1.1 `GET path` with `Connection: close` and the extra header
/// lines in `headers` on a new connection; the status and the response
/// head (bounded: 1 MiB, [`WAIT`]).
pub async fn http_head_of(
    addr: SocketAddr,
    path: &str,
    headers: &[&str],
) -> io::Result<(u16, String)> {
    let exchange = async {
        let mut conn = connect_from(addr, None).await?;
        let mut request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
        for header in headers {
            request.push_str(header);
            request.push_str("\r\n");
        }
        request.push_str("\r\n");
        conn.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        (&mut conn).take(1 << 20).read_to_end(&mut response).await?;
        let text = String::from_utf8_lossy(&response).into_owned();
        let head = text.split("\r\n\r\n").next().unwrap_or_default().to_owned();
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, format!("no status: {head}"))
            })?;
        Ok((status, head))
    };
    tokio::time::timeout(WAIT, exchange)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("GET {path}: no response")))?
}

/// The value of header `name` (any case) in a response head.
pub fn header_of(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

/// Counts tags from `n` sequential connections.
pub async fn tally(addr: SocketAddr, n: usize) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for i in 0..n {
        let tag = hit(addr)
            .await
            .unwrap_or_else(|e| panic!("connection {i} failed: {e}"));
        *counts.entry(tag).or_insert(0) += 1;
    }
    counts
}

/// Generates tests that run of an async test fn, once per runtime.
#[macro_export]
macro_rules! on_both_runtimes {
    ($($name:ident),* $(,)?) => {
        mod io_uring {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name("io-uring").await
                }
            )*
        }
        mod epoll {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name("epoll").await
                }
            )*
        }
    };
}

/// How many descriptors process `pid` holds.
pub fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// lbd's descriptor count once stable (the same three times 100 ms apart,
/// or after 5 s the lowest seen): checks open short-lived sockets.
pub async fn settled_fds(pid: i32) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = open_fds(pid);
    let mut lowest = last;
    let mut same = 0;
    while same < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = open_fds(pid);
        same = if now == last { same + 1 } else { 0 };
        last = now;
        lowest = lowest.min(now);
    }
    if same >= 3 {
        last
    } else {
        lowest
    }
}

/// Waits (up to `within`) until lbd holds at most `limit` descriptors.
pub async fn fds_back_to(pid: i32, limit: usize, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let now = open_fds(pid);
        if now <= limit {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "lbd holds {now} descriptors, {limit} before the connections"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The Octavia venv's python, or `None` (test skipped) when it is missing.
pub fn octavia_python() -> Option<std::path::PathBuf> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_owned();
    let venv = std::env::var_os("LBD_OCTAVIA_VENV")
        .map(|v| root.join(v))
        .unwrap_or_else(|| root.join("target/octavia-venv"));
    let python = venv.join("bin/python");
    if python.exists() {
        return Some(python);
    }
    // scripts/test sets this when PyPI could not be reached: the one skip
    // it allows, with its reason.
    if let Some(why) = std::env::var_os("LBD_OCTAVIA_SKIP") {
        eprintln!("SKIPPED: {}", why.to_string_lossy());
        return None;
    }
    assert!(
        std::env::var_os("LBD_TEST_REQUIRE_TOOLS").is_none(),
        "{} missing: run scripts/octavia/setup.sh",
        python.display()
    );
    eprintln!(
        "SKIPPED: no Octavia venv at {} (run scripts/octavia/setup.sh)",
        venv.display()
    );
    None
}
