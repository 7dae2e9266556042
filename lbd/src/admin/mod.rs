//! The admin server: stats page, `/stats.json`, `/stats.csv`, Prometheus
//! `/metrics` and the runtime API, on a thread of its own ("lbd-admin"),
//! never on the data-plane workers.
//!
//! * [`stats`] reads a [`stats::Stats`] from the snapshot and the counters;
//!   [`page`], [`csv`] and [`metrics`] render it.
//! * [`api`] changes the running config through `Server::reload`.
//! * `http` serves it all over HTTP/1.1 (hyper), optionally TLS.
//!
//! * `accept`, `limit` and `watched` keep slow or hostile clients from
//!   starving the others: each listener has its own connection limit and a
//!   per-client share, every phase that waits on the client is timed, and a
//!   full listener closes its longest-waiting connection to admit a new one.
//!
//! The listeners follow the config: a reload that changes `[admin]` binds
//! the new addresses first and only then closes the old ones; if the new
//! ones cannot be bound, the old ones stay and the error is logged. An
//! address the reload keeps keeps its socket (and its limiter), so a new
//! token or certificate refuses nothing. The sockets do not use
//! SO_REUSEPORT: a second lbd on the same admin address fails to start
//! instead of silently sharing the port.

mod accept;
pub mod api;
pub mod cli;
pub mod csv;
mod http;
mod limit;
pub mod metrics;
pub mod page;
pub mod ready;
pub mod show_stat;
mod socket_file;
pub mod stats;
mod stats_uri;
mod watched;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use lbd_config::{read_token, Admin, AdminBind};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tracing::{error, info};

use crate::server::Server;
use crate::service::{BackgroundService, Shutdown};
use accept::Serving;
use http::{Context, Role};
use limit::{Limiter, Limits};
use socket_file::SocketFile;

/// Listening sockets of one `[admin]` setting, bound but not yet serving.
struct Bound {
    config: Admin,
    admin: BoundSocket,
    stats: Option<TcpSeat>,
    tls: Option<TlsAcceptor>,
    token: Option<String>,
}

enum BoundSocket {
    Tcp(TcpSeat),
    Unix(std::os::unix::net::UnixListener, Arc<Limiter>, SocketFile),
}

/// A TCP listener and its limiter, fresh or kept from the running setting.
struct TcpSeat {
    addr: SocketAddr,
    socket: TcpSocket,
    limiter: Arc<Limiter>,
}

enum TcpSocket {
    /// Bound just now (maybe outside the admin runtime).
    New(std::net::TcpListener),
    /// Served already; a reload keeps the address.
    Kept(Arc<tokio::net::TcpListener>),
}

/// The TCP listeners being served, by address: what a reload may keep.
type Held = HashMap<SocketAddr, (Arc<tokio::net::TcpListener>, Arc<Limiter>)>;

/// Binds what `config` asks for (in the calling thread, so errors reach
/// the caller), reusing the sockets in `held` for addresses it keeps.
fn bind(config: &Admin, held: &Held) -> anyhow::Result<Bound> {
    let token = match &config.token_file {
        Some(path) => Some(
            read_token(path)
                .map_err(|e| anyhow::anyhow!("admin token_file {}: {e}", path.display()))?,
        ),
        None => None,
    };
    let tls = match &config.tls {
        Some(t) => Some(TlsAcceptor::from(crate::tls::server_config(
            &t.cert, &t.key,
        )?)),
        None => None,
    };
    let admin = match &config.bind {
        AdminBind::Tcp(addr) => BoundSocket::Tcp(
            tcp_seat(*addr, held).with_context(|| format!("admin: cannot listen on {addr}"))?,
        ),
        AdminBind::Unix(path) => {
            // A socket file left by a previous run would make bind fail.
            if std::fs::symlink_metadata(path)
                .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
            {
                let _ = std::fs::remove_file(path);
            }
            let listener = std::os::unix::net::UnixListener::bind(path)
                .with_context(|| format!("admin: cannot listen on {}", path.display()))?;
            let file = SocketFile::created(path)
                .with_context(|| format!("admin: cannot stat {}", path.display()))?;
            let limiter = Limiter::new(format!("unix:{}", path.display()), Limits::default());
            BoundSocket::Unix(listener, limiter, file)
        }
    };
    let stats = match config.stats_bind {
        Some(addr) => Some(
            tcp_seat(addr, held)
                .with_context(|| format!("admin: cannot listen on stats_bind {addr}"))?,
        ),
        None => None,
    };
    Ok(Bound {
        config: config.clone(),
        admin,
        stats,
        tls,
        token,
    })
}

/// The listener for `addr`: the one already served there, or a new one.
fn tcp_seat(addr: SocketAddr, held: &Held) -> std::io::Result<TcpSeat> {
    Ok(match held.get(&addr) {
        Some((socket, limiter)) => TcpSeat {
            addr,
            socket: TcpSocket::Kept(Arc::clone(socket)),
            limiter: Arc::clone(limiter),
        },
        None => TcpSeat {
            addr,
            socket: TcpSocket::New(tcp_listener(addr)?),
            limiter: Limiter::new(addr.to_string(), Limits::default()),
        },
    })
}

/// A listening TCP socket. No SO_REUSEPORT: that would let another process
/// bind the same address and take part of the requests; a reload that
/// keeps the address reuses this socket instead of binding again.
pub(crate) fn tcp_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    // Only lets a restart bind over TIME_WAIT leftovers; on Linux it does
    // not allow two listeners on one address.
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    // Room for a burst of connections while the accept loop catches up: a
    // full queue drops SYNs, and a retried SYN costs a client a second.
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Starts the admin service (thread "lbd-admin"). Binds the configured
/// admin listeners first, so a bind error fails the start. Without
/// `[admin]` nothing listens until a reload adds it.
pub fn spawn(server: Arc<Server>) -> anyhow::Result<()> {
    let initial = match &server.shared().snapshot().config.admin {
        Some(config) => Some(bind(config, &Held::new())?),
        None => None,
    };
    let service = AdminService {
        server: Arc::clone(&server),
        initial: Some(initial),
    };
    server
        .services()
        .start(service)
        .context("cannot start the admin thread")
}

/// The admin server as a background service: it serves until shutdown,
/// then closes its listeners and removes its unix socket.
struct AdminService {
    server: Arc<Server>,
    /// What `spawn` bound, for the first run.
    initial: Option<Option<Bound>>,
}

impl BackgroundService for AdminService {
    fn name(&self) -> &'static str {
        "lbd-admin"
    }

    fn run(&mut self, shutdown: &Shutdown) {
        // A panic restarts the thread (its sockets closed with it): it binds
        // the current `[admin]` again, and until that works it keeps failing
        // and being restarted with the service back-off.
        let server = &self.server;
        let bound = self.initial.take().unwrap_or_else(|| {
            let config = server.shared().snapshot().config.admin.clone()?;
            match bind(&config, &Held::new()) {
                Ok(bound) => Some(bound),
                Err(e) => panic!("admin server cannot start again: {e:#}"),
            }
        });
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => {
                runtime.block_on(follow_config(Arc::clone(server), bound, shutdown.clone()))
            }
            Err(e) => panic!("cannot start the admin runtime: {e}"),
        }
    }
}

/// Serves `bound`, and rebinds whenever a reload changes `[admin]`.
/// Stops at `shutdown`, once every listener is closed and the unix socket
/// removed.
async fn follow_config(server: Arc<Server>, mut bound: Option<Bound>, shutdown: Shutdown) {
    crate::fault::injected_panic("admin");
    let mut changed = server.shared().subscribe();
    let mut current: Option<Admin> = None;
    let mut held = Held::new();
    let mut serving = JoinSet::new();
    loop {
        if let Some(new) = bound.take() {
            serving.abort_all();
            match start_serving(new, &server, &mut serving) {
                Ok((config, now_held)) => {
                    current = Some(config);
                    held = now_held;
                }
                Err(e) => {
                    error!("{e:#}");
                    current = None;
                    held.clear();
                }
            }
        }
        tokio::select! {
            changed = changed.changed() => if changed.is_err() {
                break;
            },
            () = shutdown.fired() => break,
        }
        let wanted = server.shared().snapshot().config.admin.clone();
        if wanted == current {
            continue;
        }
        match &wanted {
            None => {
                serving.abort_all();
                held.clear();
                info!("admin server stopped: [admin] was removed");
                current = None;
            }
            Some(config) => match bind(config, &held) {
                Ok(new) => bound = Some(new),
                Err(e) => error!("{e:#}; the admin server stays as it was"),
            },
        }
    }
    // Aborts every accept and connection task and waits for them to go:
    // their listeners close and the unix socket file is removed.
    serving.shutdown().await;
    info!("admin server stopped");
}

/// Turns bound sockets into serving tasks. Returns the config it serves
/// and its TCP listeners.
fn start_serving(
    bound: Bound,
    server: &Arc<Server>,
    serving: &mut JoinSet<()>,
) -> anyhow::Result<(Admin, Held)> {
    let ctx = Arc::new(Context::new(
        Arc::clone(server),
        bound.token,
        bound.config.bind.is_local(),
        bound.config.stats_auth.as_ref(),
    ));
    let scheme = if bound.tls.is_some() { "https" } else { "http" };
    let mut held = Held::new();
    let with = |role, limiter| Serving {
        ctx: Arc::clone(&ctx),
        role,
        tls: bound.tls.clone(),
        limiter,
    };
    match bound.admin {
        BoundSocket::Tcp(seat) => {
            let (listener, limiter) = into_tokio(seat, &mut held)?;
            serving.spawn(accept::tcp(listener, with(Role::Admin, limiter)));
        }
        BoundSocket::Unix(listener, limiter, file) => {
            listener.set_nonblocking(true)?;
            let listener = tokio::net::UnixListener::from_std(listener)?;
            let accepting = accept::unix(listener, with(Role::Admin, limiter));
            serving.spawn(async move {
                // The file goes when the task does (shutdown, a reload that
                // moves the socket, a panic of the admin thread).
                let _file = file;
                accepting.await;
            });
        }
    }
    if let Some(seat) = bound.stats {
        let (listener, limiter) = into_tokio(seat, &mut held)?;
        serving.spawn(accept::tcp(listener, with(Role::StatsOnly, limiter)));
    }
    let writes = match (&ctx.token, ctx.local_bind) {
        (Some(_), _) => "writes need the bearer token",
        (None, true) => "writes allowed (local bind)",
        (None, false) => "writes refused (no token_file on a non-local bind)",
    };
    let reads = match &bound.config.stats_auth {
        Some(auth) => format!("reads need basic auth ({} user(s))", auth.users.len()),
        None => "reads open".to_owned(),
    };
    info!(
        "admin server on {scheme}://{}{}; {writes}; {reads}",
        bound.config.bind,
        bound
            .config
            .stats_bind
            .map(|a| format!(", read-only stats on {scheme}://{a}"))
            .unwrap_or_default()
    );
    Ok((bound.config, held))
}

/// The tokio listener of `seat` (registered with this runtime if new),
/// recorded in `held`.
fn into_tokio(
    seat: TcpSeat,
    held: &mut Held,
) -> std::io::Result<(Arc<tokio::net::TcpListener>, Arc<Limiter>)> {
    let listener = match seat.socket {
        TcpSocket::Kept(listener) => listener,
        TcpSocket::New(listener) => {
            listener.set_nonblocking(true)?;
            Arc::new(tokio::net::TcpListener::from_std(listener)?)
        }
    };
    held.insert(
        seat.addr,
        (Arc::clone(&listener), Arc::clone(&seat.limiter)),
    );
    Ok((listener, seat.limiter))
}
