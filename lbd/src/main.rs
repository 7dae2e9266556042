//! The `lbd` command: run the data plane, check a config, or run the demo.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info};

use lbd::runtime::{self, RuntimeChoice};
use lbd::server::Server;
use lbd_config::Config;

#[derive(Parser)]
#[command(
    name = "lbd",
    version = lbd::xdp::VERSION_TEXT,
    about = "L4 (TCP) load balancer on io_uring"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Data-plane worker threads (default: number of CPUs).
    #[arg(long, global = true)]
    workers: Option<usize>,
    /// I/O runtime: io_uring, epoll, or io_uring with a fallback to epoll.
    #[arg(long, global = true, value_enum, default_value = "auto")]
    runtime: RuntimeChoice,
    /// Log filter (tracing syntax, e.g. `info`, `lbd=debug`); RUST_LOG wins.
    #[arg(long, global = true, default_value = "info")]
    log: String,
}

#[derive(Subcommand)]
enum Command {
    /// Run the load balancer with a config file (SIGHUP reloads it).
    Run {
        /// The config file (TOML).
        #[arg(short, long)]
        config: PathBuf,
        /// Write lbd's pid here and hold a lock on it: a second lbd with
        /// the same pid file refuses to start. Removed at exit.
        #[arg(long)]
        pid_file: Option<PathBuf>,
    },
    /// Validate a config file and print every error with its field path.
    CheckConfig {
        /// The config file (TOML).
        file: PathBuf,
    },
    /// Start three demo HTTP backends and a listener in front of them.
    Demo {
        /// Where the demo listener binds.
        #[arg(long, default_value = "127.0.0.1:8080")]
        bind: std::net::SocketAddr,
        /// Where the demo's admin server (stats page, metrics, API) binds.
        #[arg(long, default_value = "127.0.0.1:8404")]
        admin_bind: std::net::SocketAddr,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log);
    lbd::service::log_panics();
    match &cli.command {
        Command::CheckConfig { file } => check_config(file),
        Command::Run { config, pid_file } => exit_code(
            pid_file
                .as_deref()
                .map(lbd::pidfile::PidFile::acquire)
                .transpose()
                .map_err(anyhow::Error::from)
                .and_then(|_held| run(&cli, Source::File(config.clone()))),
        ),
        Command::Demo { bind, admin_bind } => {
            exit_code(run(&cli, Source::Demo(*bind, *admin_bind)))
        }
    }
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(default))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(file: &std::path::Path) -> ExitCode {
    match lbd_config::load_file(file) {
        Ok(cfg) => {
            let members: usize = cfg.pools.iter().map(|p| p.members.len()).sum();
            println!(
                "{}: ok ({} listener(s), {} pool(s), {} member(s))",
                file.display(),
                cfg.listeners.len(),
                cfg.pools.len(),
                members
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Where the config comes from (and what SIGHUP re-reads).
enum Source {
    File(PathBuf),
    /// Listener and admin bind of the demo.
    Demo(std::net::SocketAddr, std::net::SocketAddr),
}

fn run(cli: &Cli, source: Source) -> anyhow::Result<()> {
    lbd::memory::init();
    // Probed outside any runtime: tokio-uring builds a tokio runtime itself.
    let kind = runtime::resolve(cli.runtime)?;
    // Signal handlers next: a SIGHUP that arrives early must not kill us.
    let control = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the control runtime")?;
    control.block_on(async {
        let mut hup = signal(SignalKind::hangup())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;

        let config = match &source {
            Source::File(path) => lbd_config::load_file(path).map_err(|e| anyhow::anyhow!("{e}"))?,
            Source::Demo(bind, admin) => demo_config(*bind, *admin)?,
        };
        let workers = cli
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        lbd::limits::raise_fd_limit(&config);
        let server = Arc::new(Server::start(config.clone(), workers, kind)?);
        lbd::admin::spawn(Arc::clone(&server))?;
        log_started(&config, workers, kind.name());
        if let Source::Demo(bind, admin) = &source {
            print_demo_help(*bind, *admin, &config);
        }

        let mut worker_died = false;
        loop {
            tokio::select! {
                _ = hup.recv() => reload(&server, &source),
                _ = term.recv() => { info!("SIGTERM: shutting down"); break }
                _ = int.recv() => { info!("SIGINT: shutting down"); break }
                _ = server.shared().worker_died.notified() => {
                    error!("a data-plane worker died: draining the others, then exiting with an error");
                    worker_died = true;
                    break
                }
            }
        }
        let drain_timeout = server.shared().snapshot().config.global.drain_timeout;
        server.drain(drain_timeout).await;
        // Health checks stop, the XDP program is detached, the admin
        // server closes and removes its unix socket.
        server.stop_services(SERVICE_STOP_TIMEOUT);
        if worker_died {
            anyhow::bail!("stopped after a worker died");
        }
        info!("stopped");
        Ok(())
    })
}

/// How long `lbd run` waits for its background services to stop after the
/// drain.
const SERVICE_STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

fn reload(server: &Server, source: &Source) {
    let Source::File(path) = source else {
        info!("SIGHUP: the demo has no config file to reload");
        return;
    };
    info!("SIGHUP: reloading {}", path.display());
    match lbd_config::load_file(path) {
        Err(e) => {
            server.note_rejected_reload();
            error!("reload rejected, the running config stays:\n{e}")
        }
        Ok(cfg) => match server.reload(cfg) {
            Ok(s) => info!(
                "reloaded: generation {}, listeners +{} -{}, members +{} -{}",
                s.generation,
                s.listeners_added,
                s.listeners_removed,
                s.members_added,
                s.members_removed
            ),
            Err(e) => error!("reload rejected, the running config stays: {e}"),
        },
    }
}

fn demo_config(bind: std::net::SocketAddr, admin: std::net::SocketAddr) -> anyhow::Result<Config> {
    let backends = lbd::demo::start_backends(3).context("cannot start the demo backends")?;
    lbd::demo::config(bind, admin, &backends).map_err(|e| anyhow::anyhow!("{e}"))
}

fn log_started(config: &Config, workers: usize, runtime: &str) {
    info!(
        "lbd {} started: pid {}, {workers} worker(s), runtime {runtime}, {}",
        env!("CARGO_PKG_VERSION"),
        std::process::id(),
        lbd::xdp::BUILD_NOTE
    );
    for l in &config.listeners {
        let members = config.pool(&l.pool).map_or(0, |p| p.members.len());
        info!(
            "listener {:?} on {} -> pool {:?} ({members} member(s))",
            l.name, l.bind, l.pool
        );
    }
}

fn print_demo_help(bind: std::net::SocketAddr, admin: std::net::SocketAddr, config: &Config) {
    println!("lbd demo: listener http://{bind}/ in front of:");
    for m in config.pools.iter().flat_map(|p| &p.members) {
        println!("  demo backend http://{}/", m.socket_addr());
    }
    println!("stats page http://{admin}/ , metrics http://{admin}/metrics");
    println!("try:\n  for i in 1 2 3 4 5 6; do curl -s http://{bind}/; done");
    println!("Ctrl-C stops it.");
}
