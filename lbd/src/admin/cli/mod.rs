//! HAProxy's CLI on the unix sockets of `[[stats_socket]]` (haproxy.cfg
//! `stats socket`), on a thread of its own ("lbd-cli"): what Octavia's
//! amphora agent, its health daemon and keepalived's check script read,
//! and what operators type into `socat`.
//!
//! * [`session`]: one connection (lines, `;`, `prompt`, timeouts);
//! * [`words`]: splitting a line as HAProxy does;
//! * [`commands`]: the table of commands, levels, `help`;
//! * [`show`] and [`change`]: the commands that read and those that change
//!   (through [`Server::adjust`], the one way config and state change);
//! * [`target`]: `<backend>/<server>` and HAProxy's ids;
//! * `_getsocks` (for `haproxy -x`, see [`crate::handoff`]) on sockets with
//!   `expose_fd_listeners`.
//!
//! A socket is bound at `<path>.<pid>.tmp`, given its mode, then renamed
//! over `<path>`, as HAProxy does: a process taking over from another
//! replaces its socket file atomically, and the old process, which still
//! serves its own socket until it exits, leaves the new file in place
//! ([`super::socket_file::SocketFile`] removes only its own).
//!
//! # Lifecycle
//!
//! [`spawn`] binds the configured sockets (an error fails the start) →
//! the service serves them → a reload that changes `[[stats_socket]]` binds
//! the new set, then drops the old one (a bind error keeps the old set) →
//! shutdown closes them and removes their files.
//!
//! Connections are bounded: at most [`MAX_CLIENTS`] per socket at once.
//! When a new one comes and all are taken, the one that has waited longest
//! for its next line is closed to make room (a crowd of clients that never
//! send cannot lock the socket: the health daemon and the VRRP check still
//! get answers); when none waits, the new one is closed.

mod change;
mod commands;
mod ctx;
mod session;
mod show;
mod target;
mod words;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use lbd_config::StatsSocket;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use tokio::net::{UnixListener, UnixStream};
use tokio::task::{AbortHandle, JoinSet};
use tracing::{debug, error, info, warn};

use super::socket_file::SocketFile;
use super::stats::RateTracker;
use crate::server::Server;
use crate::service::{BackgroundService, Shutdown};

/// Connections served at once per CLI socket.
pub const MAX_CLIENTS: usize = 64;

/// One bound CLI socket, not yet serving.
struct Bound {
    config: StatsSocket,
    listener: std::os::unix::net::UnixListener,
    file: SocketFile,
}

/// Binds every socket of `configs`, or none (the first error).
fn bind_all(configs: &[StatsSocket]) -> anyhow::Result<Vec<Bound>> {
    configs.iter().map(bind).collect()
}

/// Binds at a temporary path next to `config.path`, sets the mode, and
/// renames it over `config.path`.
fn bind(config: &StatsSocket) -> anyhow::Result<Bound> {
    let path = &config.path;
    let tmp = temporary_path(path);
    let _ = std::fs::remove_file(&tmp);
    let listener = std::os::unix::net::UnixListener::bind(&tmp)
        .with_context(|| format!("stats socket: cannot listen on {}", tmp.display()))?;
    let placed = (|| {
        if let Some(mode) = config.mode {
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
        }
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("stats socket: cannot create {}", path.display()));
    }
    let file = SocketFile::created(path)
        .with_context(|| format!("stats socket: cannot stat {}", path.display()))?;
    Ok(Bound {
        config: config.clone(),
        listener,
        file,
    })
}

/// `<path>.<pid>.tmp`.
fn temporary_path(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    PathBuf::from(tmp)
}

/// Starts the CLI service (thread "lbd-cli"). Binds the configured sockets
/// first, so a bind error fails the start.
pub fn spawn(server: Arc<Server>) -> anyhow::Result<()> {
    let initial = bind_all(&server.shared().snapshot().config.stats_sockets)?;
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
            None => match bind_all(&server.shared().snapshot().config.stats_sockets) {
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
    let mut current = start(bound, &server, &rates, &mut serving);
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
        match bind_all(&wanted) {
            Ok(bound) => {
                serving.abort_all();
                // The old files go with their tasks; wait for that before
                // serving new ones at maybe the same paths.
                while serving.join_next().await.is_some() {}
                current = start(bound, &server, &rates, &mut serving);
            }
            Err(e) => error!("{e:#}; the stats sockets stay as they were"),
        }
    }
    serving.shutdown().await;
    debug!("stats sockets closed");
}

/// Serves each of `bound` in `serving`; returns their settings.
fn start(
    bound: Vec<Bound>,
    server: &Arc<Server>,
    rates: &Arc<RateTracker>,
    serving: &mut JoinSet<()>,
) -> Vec<lbd_config::StatsSocket> {
    let mut configs = Vec::with_capacity(bound.len());
    for Bound {
        config,
        listener,
        file,
    } in bound
    {
        configs.push(config.clone());
        let listener = match listener
            .set_nonblocking(true)
            .and_then(|()| UnixListener::from_std(listener))
        {
            Ok(l) => l,
            Err(e) => {
                error!("stats socket {}: {e}", config.path.display());
                continue;
            }
        };
        info!(
            "stats socket {} (level {}{})",
            config.path.display(),
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
    listener: UnixListener,
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
                Ok((stream, _)) => {
                    clients.retain(|c| !c.task.is_finished());
                    if clients.len() >= MAX_CLIENTS && !make_room(&mut clients) {
                        debug!("stats socket {}: {MAX_CLIENTS} clients busy; closing a new one", config.path.display());
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
                    warn!("stats socket {}: accept failed: {e}", config.path.display());
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
    stream: UnixStream,
    config: Arc<StatsSocket>,
    server: Arc<Server>,
    rates: Arc<RateTracker>,
    idle: Arc<AtomicBool>,
) {
    if let Err(e) = session::serve(stream, &config, &server, &rates, &idle).await {
        debug!("stats socket {}: {e:#}", config.path.display());
    }
}

/// `_getsocks`: hands every listening socket to the asking process, on a
/// socket with `expose_fd_listeners`; closes the connection otherwise, as
/// HAProxy does.
async fn hand_off(stream: UnixStream, config: &StatsSocket, server: &Server) -> anyhow::Result<()> {
    if !config.expose_fd_listeners {
        info!(
            "stats socket {}: _getsocks refused: the socket has no 'expose-fd listeners'",
            config.path.display()
        );
        return Ok(());
    }
    let snapshot = server.shared().snapshot();
    // From now on another process may accept on them: never shut them
    // down (see `crate::sockets`).
    for l in &snapshot.listeners {
        l.sockets.mark_shared();
    }
    let stream = stream.into_std()?;
    stream.set_nonblocking(false)?;
    let sent = tokio::task::spawn_blocking(move || {
        let fds: Vec<_> = snapshot
            .listeners
            .iter()
            .flat_map(|l| l.sockets.borrow_fds())
            .collect();
        crate::handoff::send_listeners(&stream, &fds).map(|()| fds.len())
    })
    .await?;
    match sent {
        Ok(n) => info!(
            "stats socket {}: handed {n} listening socket(s) to a new process (_getsocks)",
            config.path.display()
        ),
        Err(e) => warn!(
            "stats socket {}: _getsocks failed: {e}",
            config.path.display()
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_temporary_path_is_next_to_the_socket() {
        let tmp = temporary_path(Path::new("/run/lbd/x.sock"));
        assert_eq!(
            tmp,
            PathBuf::from(format!("/run/lbd/x.sock.{}.tmp", std::process::id()))
        );
    }
}
