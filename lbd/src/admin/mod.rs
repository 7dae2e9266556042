//! The admin server: stats page, `/stats.json`, `/stats.csv`, Prometheus
//! `/metrics` and the runtime API, on a thread of its own ("lbd-admin"),
//! never on the data-plane workers.
//!
//! * [`stats`] reads a [`stats::Stats`] from the snapshot and the counters;
//!   [`page`], [`csv`] and [`metrics`] render it.
//! * [`api`] changes the running config through `Server::reload`.
//! * `http` serves it all over HTTP/1.1 (hyper), optionally TLS.
//!
//! The listeners follow the config: a reload that changes `[admin]` binds
//! the new addresses first and only then closes the old ones; if the new
//! ones cannot be bound, the old ones stay and the error is logged.

pub mod api;
pub mod csv;
mod http;
pub mod metrics;
pub mod page;
pub mod stats;

use std::sync::Arc;

use anyhow::Context as _;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tracing::{error, info};

use crate::config::{validate::read_token, Admin, AdminBind};
use crate::server::Server;
use http::{Context, Role};

/// Listening sockets of one `[admin]` setting, bound but not yet serving.
struct Bound {
    config: Admin,
    admin: BoundSocket,
    stats: Option<std::net::TcpListener>,
    tls: Option<TlsAcceptor>,
    token: Option<String>,
}

enum BoundSocket {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

/// Binds what `config` asks for (in the calling thread, so errors reach
/// the caller).
fn bind(config: &Admin) -> anyhow::Result<Bound> {
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
            tcp_listener(*addr).with_context(|| format!("admin: cannot listen on {addr}"))?,
        ),
        AdminBind::Unix(path) => {
            // A socket file left by a previous run would make bind fail.
            if std::fs::symlink_metadata(path)
                .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
            {
                let _ = std::fs::remove_file(path);
            }
            BoundSocket::Unix(
                std::os::unix::net::UnixListener::bind(path)
                    .with_context(|| format!("admin: cannot listen on {}", path.display()))?,
            )
        }
    };
    let stats = match config.stats_bind {
        Some(addr) => Some(
            tcp_listener(addr)
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

/// A listening TCP socket. SO_REUSEPORT lets a reload that keeps the
/// address (a new token or certificate) bind it again before the old socket
/// closes.
fn tcp_listener(addr: std::net::SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(128)?;
    Ok(socket.into())
}

/// Starts the admin thread. Binds the configured admin listeners first, so
/// a bind error fails the start. Without `[admin]` nothing listens until a
/// reload adds it.
pub fn spawn(server: Arc<Server>) -> anyhow::Result<()> {
    let initial = match &server.shared().snapshot().config.admin {
        Some(config) => Some(bind(config)?),
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the admin runtime")?;
    std::thread::Builder::new()
        .name("lbd-admin".to_owned())
        .spawn(move || runtime.block_on(follow_config(server, initial)))
        .context("cannot start the admin thread")?;
    Ok(())
}

/// Serves `bound`, and rebinds whenever a reload changes `[admin]`.
async fn follow_config(server: Arc<Server>, mut bound: Option<Bound>) {
    let mut changed = server.shared().subscribe();
    let mut current: Option<Admin> = None;
    let mut serving = JoinSet::new();
    loop {
        if let Some(new) = bound.take() {
            serving.abort_all();
            match start_serving(new, &server, &mut serving) {
                Ok(config) => current = Some(config),
                Err(e) => error!("{e:#}"),
            }
        }
        if changed.changed().await.is_err() {
            return;
        }
        let wanted = server.shared().snapshot().config.admin.clone();
        if wanted == current {
            continue;
        }
        match &wanted {
            None => {
                serving.abort_all();
                info!("admin server stopped: [admin] was removed");
                current = None;
            }
            Some(config) => match bind(config) {
                Ok(new) => bound = Some(new),
                Err(e) => error!("{e:#}; the admin server stays as it was"),
            },
        }
    }
}

/// Turns bound sockets into serving tasks. Returns the config it serves.
fn start_serving(
    bound: Bound,
    server: &Arc<Server>,
    serving: &mut JoinSet<()>,
) -> anyhow::Result<Admin> {
    let ctx = Arc::new(Context::new(
        Arc::clone(server),
        bound.token,
        bound.config.bind.is_local(),
    ));
    let scheme = if bound.tls.is_some() { "https" } else { "http" };
    match bound.admin {
        BoundSocket::Tcp(listener) => {
            listener.set_nonblocking(true)?;
            let listener = tokio::net::TcpListener::from_std(listener)?;
            serving.spawn(accept_tcp(
                listener,
                Arc::clone(&ctx),
                Role::Admin,
                bound.tls.clone(),
            ));
        }
        BoundSocket::Unix(listener) => {
            listener.set_nonblocking(true)?;
            let listener = tokio::net::UnixListener::from_std(listener)?;
            serving.spawn(accept_unix(listener, Arc::clone(&ctx), bound.tls.clone()));
        }
    }
    if let Some(listener) = bound.stats {
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        serving.spawn(accept_tcp(
            listener,
            Arc::clone(&ctx),
            Role::StatsOnly,
            bound.tls,
        ));
    }
    let writes = match (&ctx.token, ctx.local_bind) {
        (Some(_), _) => "writes need the bearer token",
        (None, true) => "writes allowed (local bind)",
        (None, false) => "writes refused (no token_file on a non-local bind)",
    };
    info!(
        "admin server on {scheme}://{}{}; {writes}",
        bound.config.bind,
        bound
            .config
            .stats_bind
            .map(|a| format!(", read-only stats on {scheme}://{a}"))
            .unwrap_or_default()
    );
    Ok(bound.config)
}

async fn accept_tcp(
    listener: tokio::net::TcpListener,
    ctx: Arc<Context>,
    role: Role,
    tls: Option<TlsAcceptor>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(http::serve(stream, Arc::clone(&ctx), role, tls.clone()));
            }
            Err(e) => accept_error(e).await,
        }
    }
}

async fn accept_unix(
    listener: tokio::net::UnixListener,
    ctx: Arc<Context>,
    tls: Option<TlsAcceptor>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(http::serve(
                    stream,
                    Arc::clone(&ctx),
                    Role::Admin,
                    tls.clone(),
                ));
            }
            Err(e) => accept_error(e).await,
        }
    }
}

/// Out of descriptors and the like: log, pause, go on.
async fn accept_error(e: std::io::Error) {
    error!("admin: accept failed: {e}");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
}
