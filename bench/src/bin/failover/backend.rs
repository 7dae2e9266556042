//! The members: in-process TCP servers on 127.0.0.1 that write `"<tag>\n"`
//! to each accepted connection and close it, and the two ways one dies.

use std::io::{ErrorKind, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use serde::Serialize;
use socket2::{Domain, Socket, Type};

use crate::now_us;

/// How the victim dies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Death {
    /// The process crashed: the port refuses connects (RST).
    Refuse,
    /// The host stopped answering: SYNs are dropped, connects time out.
    Blackhole,
}

/// How long the probe connect that checks the death may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// One member. Dropping it stops its thread and closes its sockets.
pub struct Backend {
    pub tag: String,
    pub addr: SocketAddr,
    listener: Arc<Socket>,
    /// Cleared under the lock by [`Backend::kill`]: no accept happens after.
    alive: Arc<Mutex<bool>>,
    stop: Arc<AtomicBool>,
    /// When each connection was accepted (µs since the epoch).
    accepted: Arc<Mutex<Vec<i64>>>,
    thread: Option<JoinHandle<()>>,
    /// The tool's own connections that fill the accept queue (blackhole).
    fillers: Vec<TcpStream>,
}

impl Backend {
    pub fn start(tag: &str) -> Result<Backend> {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).context("socket")?;
        socket
            .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .context("bind 127.0.0.1:0")?;
        socket.listen(128).context("listen")?;
        socket.set_nonblocking(true).context("O_NONBLOCK")?;
        let addr = socket
            .local_addr()?
            .as_socket()
            .ok_or_else(|| anyhow!("backend address is not IP"))?;
        let mut b = Backend {
            tag: tag.to_string(),
            addr,
            listener: Arc::new(socket),
            alive: Arc::new(Mutex::new(true)),
            stop: Arc::new(AtomicBool::new(false)),
            accepted: Arc::default(),
            thread: None,
            fillers: Vec::new(),
        };
        let (listener, alive, stop, accepted) = (
            Arc::clone(&b.listener),
            Arc::clone(&b.alive),
            Arc::clone(&b.stop),
            Arc::clone(&b.accepted),
        );
        let reply = format!("{tag}\n");
        b.thread = Some(
            std::thread::Builder::new()
                .name(format!("backend-{tag}"))
                .spawn(move || serve(&listener, &alive, &stop, &accepted, reply.as_bytes()))
                .context("spawning a backend thread")?,
        );
        Ok(b)
    }

    /// Connections accepted at or after `t_us`.
    pub fn accepted_since(&self, t_us: i64) -> usize {
        let accepted = self.accepted.lock().unwrap_or_else(PoisonError::into_inner);
        accepted.iter().filter(|&&t| t >= t_us).count()
    }

    /// Kills the member (the caller records the time just before) and
    /// checks with a plain connect that it behaves as intended. Returns that
    /// check's verdict, e.g. `"verified: connect refused"`.
    pub fn kill(&mut self, death: Death) -> Result<String> {
        *self.alive.lock().unwrap_or_else(PoisonError::into_inner) = false;
        match death {
            Death::Refuse => {
                // On a listening socket SHUT_RD stops listening at once:
                // queued connections are reset, new SYNs answered with RST.
                self.listener
                    .shutdown(Shutdown::Read)
                    .context("shutdown of the victim's listener")?;
                Ok(
                    match TcpStream::connect_timeout(&self.addr, PROBE_TIMEOUT) {
                        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                            "verified: a plain connect is refused".into()
                        }
                        other => format!("NOT verified: a plain connect gave {other:?}"),
                    },
                )
            }
            Death::Blackhole => self.fill_accept_queue(),
        }
    }

    /// Shrinks the listen backlog to 1 and connects until a connect times
    /// out: the accept queue is then full and the kernel drops further SYNs.
    fn fill_accept_queue(&mut self) -> Result<String> {
        self.listener
            .listen(1)
            .context("listen(1) on the victim's listener")?;
        for _ in 0..8 {
            match TcpStream::connect_timeout(&self.addr, PROBE_TIMEOUT) {
                Ok(s) => self.fillers.push(s),
                Err(e) if e.kind() == ErrorKind::TimedOut => {
                    return Ok(format!(
                        "verified: a plain connect timed out after {PROBE_TIMEOUT:?} \
                         (accept queue filled with {} connection(s) of the tool)",
                        self.fillers.len()
                    ))
                }
                Err(e) => return Ok(format!("NOT verified: a plain connect failed: {e}")),
            }
        }
        Ok("NOT verified: 8 connects in a row were accepted into the queue".into())
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The accept loop: polls every 10 ms so that `stop` is seen promptly.
fn serve(
    listener: &Socket,
    alive: &Mutex<bool>,
    stop: &AtomicBool,
    accepted: &Mutex<Vec<i64>>,
    reply: &[u8],
) {
    let mut pfd = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: one valid pollfd that outlives the call.
        let n = unsafe { libc::poll(&mut pfd, 1, 10) };
        if n <= 0 {
            continue;
        }
        let alive = alive.lock().unwrap_or_else(PoisonError::into_inner);
        if !*alive {
            return;
        }
        match listener.accept() {
            Ok((conn, _)) => {
                accepted
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(now_us());
                let _ = (&conn).write_all(reply);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}
