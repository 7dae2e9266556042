//! HAProxy's CLI on the unix and TCP sockets of `[[stats_socket]]`
//! (haproxy.cfg `stats socket`), on a thread of its own ("lbd-cli"): what
//! Octavia's amphora agent, its health daemon and keepalived's check script
//! read, and what operators type into `socat`.
//!
//! * [`listen`]: binding the sockets, accepting on them;
//! * [`session`]: one connection (lines, `;`, `prompt`, timeouts);
//! * [`words`]: splitting a line as HAProxy does;
//! * [`commands`]: the table of commands, levels, `help`;
//! * [`show`] and [`change`]: the commands that read and those that change
//!   (through [`Server::adjust`], the one way config and state change);
//! * [`target`]: `<backend>/<server>` and HAProxy's ids;
//! * `_getsocks` (for `haproxy -x`, see [`crate::handoff`]) on sockets with
//!   `expose_fd_listeners` (unix only: on TCP it closes the connection).
//!
//! A unix socket is bound at `<path>.<pid>.tmp`, given its mode, then
//! renamed over `<path>`, as HAProxy does: a process taking over from another
//! replaces its socket file atomically, and the old process, which still
//! serves its own socket until it exits, leaves the new file in place
//! ([`super::socket_file::SocketFile`] removes only its own).
//!
//! # Lifecycle
//!
//! [`spawn`] binds the configured sockets (an error fails the start) →
//! the service serves them → a reload that changes `[[stats_socket]]` binds
//! the new set, then drops the old one (a bind error keeps the old set; a
//! TCP address in both sets keeps its socket) → shutdown closes them and
//! removes their files.
//!
//! Connections are bounded: at most [`MAX_CLIENTS`] per socket at once.
//! When a new one comes and all are taken, the one that has waited longest
//! for its next line is closed to make room (a crowd of clients that never
//! send cannot lock the socket: the health daemon and the VRRP check still
//! get answers); when none waits, the new one is closed.

mod change;
mod commands;
mod ctx;
mod listen;
mod session;
mod show;
mod target;
mod words;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use lbd_config::StatsSocket;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use tokio::net::UnixStream;
use tokio::task::{AbortHandle, JoinSet};
use tracing::{debug, error, info, warn};

use super::stats::RateTracker;
use crate::server::Server;
use crate::service::{BackgroundService, Shutdown};
use listen::{bind_all, Bound, Conn, Held, Listener};

/// Connections served at once per CLI socket.
pub const MAX_CLIENTS: usize = 64;

/// Starts the CLI service (thread "lbd-cli"). Binds the configured sockets
/// first, so a bind error fails the start.
pub fn spawn(server: Arc<Server>) -> anyhow::Result<()> {
    let initial = bind_all(
        &server.shared().snapshot().config.stats_sockets,
        &Held::new(),
    )?;
    let service = CliService {
        server: Arc::clone(&server),
        initial: Some(initial),
    };
    server
        .services()
        .start(service)
        .context("cannot start the CLI thread")
}

struct CliService {
    server: Arc<Server>,
    initial: Option<Vec<Bound>>,
}

impl BackgroundService for CliService {
    fn name(&self) -> &'static str {
        "lbd-cli"
    }

    fn run(&mut self, shutdown: &Shutdown) {
        let server = &self.server;
        let bound = match self.initial.take() {
            Some(bound) => bound,
            // After a panic: bind the current set again.
            None => match bind_all(
                &server.shared().snapshot().config.stats_sockets,
                &Held::new(),
            ) {
                Ok(bound) => bound,
                Err(e) => panic!("the CLI cannot start again: {e:#}"),
            },
        };
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => {
                runtime.block_on(follow_config(Arc::clone(server), bound, shutdown.clone()))
            }
            Err(e) => panic!("cannot start the CLI runtime: {e}"),
        }
    }
}

/// Serves `bound`; rebinds when a reload changes `[[stats_socket]]`.
async fn follow_config(server: Arc<Server>, bound: Vec<Bound>, shutdown: Shutdown) {
    let mut changed = server.shared().subscribe();
    let rates = Arc::new(RateTracker::default());
    let mut serving = JoinSet::new();
    let mut held = Held::new();
    let mut current = start(bound, &server, &rates, &mut serving, &mut held);
    listen::set_served(&held);
    loop {
        tokio::select! {
            changed = changed.changed() => if changed.is_err() {
                break;
            },
            () = shutdown.fired() => break,
        }
        let wanted = server.shared().snapshot().config.stats_sockets.clone();
        if wanted == current {
            continue;
        }
        match bind_all(&wanted, &held) {
            Ok(bound) => {
                serving.abort_all();
                // The old files go with their tasks; wait for that before
                // serving new ones at maybe the same paths.
                while serving.join_next().await.is_some() {}
                // TCP sockets no longer wanted close here.
                held.clear();
                current = start(bound, &server, &rates, &mut serving, &mut held);
                listen::set_served(&held);
            }
            Err(e) => error!("{e:#}; the stats sockets stay as they were"),
        }
    }
    serving.shutdown().await;
    held.clear();
    listen::set_served(&held);
    debug!("stats sockets closed");
}

/// Serves each of `bound` in `serving` (its TCP sockets kept in `held`);
/// returns their settings.
fn start(
    bound: Vec<Bound>,
    server: &Arc<Server>,
    rates: &Arc<RateTracker>,
    serving: &mut JoinSet<()>,
    held: &mut Held,
) -> Vec<lbd_config::StatsSocket> {
    let mut configs = Vec::with_capacity(bound.len());
    for bound in bound {
        let config = bound.config.clone();
        configs.push(config.clone());
        let (listener, file) = match bound.serve(held) {
            Ok(served) => served,
            Err(e) => {
                error!("stats socket {}: {e}", config.address);
                continue;
            }
        };
        info!(
            "stats socket {} (level {}{})",
            config.address,
            config.level.name(),
            if config.expose_fd_listeners {
                ", expose-fd listeners"
            } else {
                ""
            }
        );
        let server = Arc::clone(server);
        let rates = Arc::clone(rates);
        serving.spawn(async move {
            // The file goes when the task does.
            let _file = file;
            accept_loop(listener, config, server, rates).await;
        });
    }
    configs
}

/// One served connection, as the accept loop sees it.
struct Client {
    task: AbortHandle,
    /// Set while the connection waits for its next line.
    idle: Arc<AtomicBool>,
}

async fn accept_loop(
    listener: Listener,
    config: StatsSocket,
    server: Arc<Server>,
    rates: Arc<RateTracker>,
) {
    let config = Arc::new(config);
    let mut connections = JoinSet::new();
    // Oldest first.
    let mut clients: VecDeque<Client> = VecDeque::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(stream) => {
                    clients.retain(|c| !c.task.is_finished());
                    if clients.len() >= MAX_CLIENTS && !make_room(&mut clients) {
                        debug!("stats socket {}: {MAX_CLIENTS} clients busy; closing a new one", config.address);
                        continue;
                    }
                    let idle = Arc::new(AtomicBool::new(true));
                    let task = connections.spawn(serve(
                        stream,
                        Arc::clone(&config),
                        Arc::clone(&server),
                        Arc::clone(&rates),
                        Arc::clone(&idle),
                    ));
                    clients.push_back(Client { task, idle });
                }
                Err(e) => {
                    warn!("stats socket {}: accept failed: {e}", config.address);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next() => {}
        }
    }
}

/// Closes the client that has waited longest for its next line; false
/// when every client is busy answering.
fn make_room(clients: &mut VecDeque<Client>) -> bool {
    match clients.iter().position(|c| c.idle.load(Relaxed)) {
        Some(i) => {
            if let Some(c) = clients.remove(i) {
                c.task.abort();
            }
            true
        }
        None => false,
    }
}

async fn serve(
    stream: Conn,
    config: Arc<StatsSocket>,
    server: Arc<Server>,
    rates: Arc<RateTracker>,
    idle: Arc<AtomicBool>,
) {
    let served = match stream {
        Conn::Unix(s) => session::serve(s, &config, &server, &rates, &idle).await,
        Conn::Tcp(s) => session::serve(s, &config, &server, &rates, &idle).await,
    };
    if let Err(e) = served {
        debug!("stats socket {}: {e:#}", config.address);
    }
}

/// `_getsocks`: hands every listening socket to the asking process, on a
/// unix socket with `expose_fd_listeners`; closes the connection otherwise,
/// as HAProxy does (on TCP, where HAProxy sends a count and no sockets).
async fn hand_off(
    stream: Option<UnixStream>,
    config: &StatsSocket,
    server: &Server,
) -> anyhow::Result<()> {
    let Some(stream) = stream.filter(|_| config.expose_fd_listeners) else {
        info!(
            "stats socket {}: _getsocks refused: the socket has no 'expose-fd listeners'",
            config.address
        );
        return Ok(());
    };
    let snapshot = server.shared().snapshot();
    // From now on another process may accept on them: never shut them
    // down (see `crate::sockets`). UDP sockets too: the new process reads
    // them once this one stops.
    for l in &snapshot.listeners {
        l.sockets.mark_shared();
    }
    // The TCP stats sockets too, as HAProxy (a new process with the same
    // `stats socket ipv4@...` takes it, see `listen`).
    let cli = listen::served_listeners();
    let stream = stream.into_std()?;
    stream.set_nonblocking(false)?;
    let sent = tokio::task::spawn_blocking(move || {
        let fds: Vec<_> = snapshot
            .listeners
            .iter()
            .flat_map(|l| l.sockets.borrow_fds())
            .chain(cli.iter().map(std::os::fd::AsFd::as_fd))
            .collect();
        crate::handoff::send_listeners(&stream, &fds).map(|()| fds.len())
    })
    .await?;
    match sent {
        Ok(n) => info!(
            "stats socket {}: handed {n} listening socket(s) to a new process (_getsocks)",
            config.address
        ),
        Err(e) => warn!("stats socket {}: _getsocks failed: {e}", config.address),
    }
    Ok(())
}
