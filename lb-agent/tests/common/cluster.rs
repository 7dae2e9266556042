//! The rest of a cluster around the fake API server: a real lbd process,
//! "nodes" (TCP servers on their own 127.0.0.x address answering on the
//! NodePort, and kube-proxy's healthz on the healthCheckNodePort; UDP echo
//! servers for UDP NodePorts), and the lb-agent process under test.
//! Loopback only; every wait is bounded.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

pub use lbd_test_support::{eventually, free_port, scratch_dir};

/// A binary of this workspace, built if needed (`cargo test -p lb-agent`
/// alone does not build lbd).
pub fn workspace_binary(name: &str) -> PathBuf {
    let agent = PathBuf::from(env!("CARGO_BIN_EXE_lb-agent"));
    let dir = agent.parent().expect("target dir").to_owned();
    let path = dir.join(name);
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", name, "--bin", name])
            .status()
            .expect("cargo build");
        assert!(status.success(), "cannot build {name}");
    }
    path
}

/// A child process killed when dropped, with its stderr in a log file.
pub struct Process {
    child: Child,
    pub log: PathBuf,
}

impl Process {
    pub fn spawn(mut cmd: Command, log: PathBuf) -> Process {
        let file = std::fs::File::create(&log).expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .env_remove("RUST_LOG")
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        Process { child, log }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn wait_for_log(&self, needle: &str) {
        let what = format!("{needle:?} in {}", self.log.display());
        eventually(&what, || async { self.log_text().contains(needle) }).await;
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process and waits until it is gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real lbd with only an `[admin]` section (lb-agent adds the rest).
pub struct Lbd {
    pub admin: SocketAddr,
    pub config: PathBuf,
    pub process: Process,
}

impl Lbd {
    pub async fn start() -> Lbd {
        let dir = scratch_dir();
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let config = dir.join("lbd.toml");
        std::fs::write(&config, format!("[admin]\nbind = \"{admin}\"\n")).expect("config");
        let process = run_lbd(&config).await;
        Lbd {
            admin,
            config,
            process,
        }
    }

    /// Kills lbd and starts it again from its file config (which has no
    /// lb-agent entries): what a crash and a systemd restart look like.
    pub async fn restart(&mut self) {
        self.process.kill();
        self.process = run_lbd(&self.config).await;
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.admin)
    }
}

/// `lbd run -c config` (one worker, debug log next to the config), once it
/// says it started.
pub async fn run_lbd(config: &Path) -> Process {
    let mut cmd = Command::new(workspace_binary("lbd"));
    cmd.args(["--workers", "1", "--log", "lbd=debug", "run", "-c"])
        .arg(config);
    let dir = config.parent().expect("config dir");
    let process = Process::spawn(cmd, dir.join(format!("lbd-{}.log", free_port())));
    process.wait_for_log(" started: ").await;
    process
}

/// lb-agent under test.
pub fn start_agent(args: &[&str]) -> Process {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lb-agent"));
    cmd.args(["--log", "lb_agent=debug,info"]).args(args);
    Process::spawn(cmd, scratch_dir().join("lb-agent.log"))
}

/// A node: `tag\n` to every connection on `ip:node_port`, and an HTTP
/// `/healthz` (200 or 503, switchable) on `ip:health_port` when given.
pub struct NodeServer {
    pub name: String,
    pub ip: IpAddr,
    healthy: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl NodeServer {
    pub async fn start(
        name: &str,
        ip: IpAddr,
        node_port: u16,
        health_port: Option<u16>,
    ) -> NodeServer {
        let healthy = Arc::new(AtomicBool::new(true));
        let mut tasks = Vec::new();
        let tag = format!("{name}\n");
        let data = TcpListener::bind((ip, node_port))
            .await
            .expect("bind node port");
        tasks.push(tokio::spawn(async move {
            while let Ok((mut conn, _)) = data.accept().await {
                let tag = tag.clone();
                tokio::spawn(async move {
                    let _ = conn.write_all(tag.as_bytes()).await;
                });
            }
        }));
        if let Some(port) = health_port {
            let listener = TcpListener::bind((ip, port))
                .await
                .expect("bind health port");
            let healthy = Arc::clone(&healthy);
            tasks.push(tokio::spawn(async move {
                while let Ok((conn, _)) = listener.accept().await {
                    tokio::spawn(answer_healthz(conn, healthy.load(Ordering::SeqCst)));
                }
            }));
        }
        NodeServer {
            name: name.to_owned(),
            ip,
            healthy,
            tasks,
        }
    }

    /// What kube-proxy's healthz says: 200 (local endpoints) or 503.
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::SeqCst);
    }
}

impl Drop for NodeServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn answer_healthz(mut conn: TcpStream, healthy: bool) {
    let mut buf = [0u8; 2048];
    let _ = tokio::time::timeout(Duration::from_secs(2), conn.read(&mut buf)).await;
    let (code, text) = if healthy {
        (200, "OK")
    } else {
        (503, "Service Unavailable")
    };
    let reply = format!("HTTP/1.1 {code} {text}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let _ = conn.write_all(reply.as_bytes()).await;
}

/// The tag answered on one new connection to `addr`, or `None` if the
/// connection fails or closes without one.
pub async fn tag_at(addr: SocketAddr) -> Option<String> {
    let attempt = async {
        let mut conn = TcpStream::connect(addr).await.ok()?;
        let mut buf = Vec::new();
        conn.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8(buf).ok()?;
        let line = text.trim();
        (!line.is_empty()).then(|| line.to_owned())
    };
    tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .ok()
        .flatten()
}

/// Tags of `n` sequential connections (missing ones left out).
pub async fn tags_at(addr: SocketAddr, n: usize) -> Vec<String> {
    let mut tags = Vec::new();
    for _ in 0..n {
        if let Some(tag) = tag_at(addr).await {
            tags.push(tag);
        }
    }
    tags
}

/// A node's UDP NodePort: answers every datagram with `<tag> <datagram>`.
pub struct UdpNodeServer {
    pub name: String,
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl UdpNodeServer {
    pub async fn start(name: &str, ip: IpAddr, node_port: u16) -> UdpNodeServer {
        let socket = UdpSocket::bind((ip, node_port))
            .await
            .expect("bind UDP node port");
        let addr = socket.local_addr().expect("UDP node address");
        let tag = name.to_owned();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                let mut reply = format!("{tag} ").into_bytes();
                reply.extend_from_slice(&buf[..n]);
                let _ = socket.send_to(&reply, from).await;
            }
        });
        UdpNodeServer {
            name: name.to_owned(),
            addr,
            task,
        }
    }
}

impl Drop for UdpNodeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Sends `payload` to `addr` from a new socket (a new flow for lbd) and
/// returns the answer as text, or `None` when none comes within a second.
pub async fn udp_ask(addr: SocketAddr, payload: &[u8]) -> Option<String> {
    let local: SocketAddr = if addr.is_ipv4() {
        ([127, 0, 0, 1], 0).into()
    } else {
        (std::net::Ipv6Addr::LOCALHOST, 0).into()
    };
    let socket = UdpSocket::bind(local).await.ok()?;
    socket.send_to(payload, addr).await.ok()?;
    let mut buf = vec![0u8; 65_536];
    let (n, from) = tokio::time::timeout(Duration::from_secs(1), socket.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    // The answer must come back from the address the datagram went to.
    (from == addr).then(|| String::from_utf8_lossy(&buf[..n]).into_owned())
}
