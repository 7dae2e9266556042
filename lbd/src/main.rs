//! The `lbd` command: run the data plane, check a config, or run the demo.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};

use lbd::haproxy_cli::{self, Invocation, MasterWorker, StopOld};
use lbd::runtime::{self, RuntimeChoice};
use lbd::server::{Server, Versions};
use lbd::sockets::Sharing;
use lbd_config::{haproxy, Config};

#[derive(Parser)]
#[command(
    name = "lbd",
    version = lbd::xdp::VERSION_TEXT,
    about = "L4 (TCP and UDP) load balancer on io_uring"
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
        /// The config: one TOML file, or haproxy.cfg files or directories
        /// (repeat -c; read in order, as HAProxy's -f). The format is told
        /// by the content.
        #[arg(short, long, required = true)]
        config: Vec<PathBuf>,
        /// Write lbd's pid here and hold a lock on it: a second lbd with
        /// the same pid file refuses to start. Removed at exit.
        #[arg(long)]
        pid_file: Option<PathBuf>,
        /// Upgrade without dropping a connection: take the listening
        /// sockets of the lbd serving this stats socket (a unix
        /// `[[stats_socket]]` with `expose_fd_listeners`), and once
        /// serving tell it to drain and exit (SIGTERM). If this process
        /// fails before it serves, the old one goes on.
        #[arg(long, value_name = "STATS_SOCKET")]
        takeover: Option<PathBuf>,
    },
    /// Validate a config and print every error with its field path (TOML)
    /// or file:line (haproxy.cfg); warnings go to stderr.
    CheckConfig {
        /// One TOML file, or haproxy.cfg files or directories (read in
        /// order, as HAProxy's -f).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the lbd TOML equivalent of haproxy.cfg files, with a comment
    /// for everything not carried over as written.
    Convert {
        /// haproxy.cfg files or directories, in HAProxy's -f order.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Ask a running lbd whether it can serve (GET /ready on its admin
    /// server): exit 0 when ready, 1 when not or when it does not answer.
    /// For keepalived's vrrp_script (configs/keepalived/).
    Ready {
        /// The admin server: `addr:port`, or `unix:/path`.
        #[arg(long, default_value = "127.0.0.1:8404")]
        admin: String,
        /// `any`: not ready when no listener's pool has a usable member;
        /// `all`: when one has none; `ignore`: only draining counts.
        #[arg(long, default_value = "any", value_parser = ["any", "all", "ignore"])]
        pools: String,
        /// How long to wait for the answer.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Take HAProxy's command line (`-f cfg -Ws -p pidfile -sf pids ...`),
    /// as lbd does when started through a symlink named `haproxy`.
    Haproxy {
        /// HAProxy's flags, as `haproxy` would take them.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
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
    let argv: Vec<OsString> = std::env::args_os().collect();
    if argv
        .first()
        .is_some_and(|a| haproxy_cli::invoked_as_haproxy(a))
    {
        // Started as `haproxy`: no lbd flags; the environment picks the
        // runtime, workers and log filter.
        return haproxy_main(&argv[1..], Settings::from_env());
    }
    let cli = Cli::parse();
    if let Command::Haproxy { args } = &cli.command {
        return haproxy_main(
            args,
            Settings {
                workers: cli.workers,
                runtime: cli.runtime,
                log: cli.log.clone(),
            },
        );
    }
    init_logging(&cli.log);
    lbd::service::log_panics();
    let settings = Settings {
        workers: cli.workers,
        runtime: cli.runtime,
        log: cli.log.clone(),
    };
    match &cli.command {
        Command::Haproxy { .. } => ExitCode::FAILURE,
        Command::CheckConfig { files } => check_config(files),
        Command::Convert { files } => convert(files),
        Command::Ready {
            admin,
            pools,
            timeout,
        } => match lbd::ready_probe::ask(admin, pools, *timeout) {
            Ok(answer) if answer.status == 200 => {
                println!("{}", answer.body);
                ExitCode::SUCCESS
            }
            Ok(answer) => {
                println!("{} ({})", answer.body, answer.status);
                ExitCode::FAILURE
            }
            Err(e) => {
                println!("not ready: no answer from lbd at {admin}: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Run {
            config,
            pid_file,
            takeover,
        } => exit_code(
            pid_file
                .as_deref()
                .map(lbd::pidfile::PidFile::acquire)
                .transpose()
                .map_err(anyhow::Error::from)
                .and_then(|_held| {
                    // systemd `Type=notify`: NOTIFY_SOCKET is set.
                    let notifier = lbd::notify::Notifier::from_env().context("NOTIFY_SOCKET")?;
                    let handover = takeover.as_deref().map(Handover::takeover).transpose()?;
                    run(&settings, Source::file(config.clone()), notifier, handover)
                }),
        ),
        Command::Demo { bind, admin_bind } => {
            exit_code(run(&settings, Source::Demo(*bind, *admin_bind), None, None))
        }
    }
}

/// lbd's own settings for a run (its flags, or the environment when
/// started as `haproxy`).
struct Settings {
    workers: Option<usize>,
    runtime: RuntimeChoice,
    log: String,
}

impl Settings {
    /// `LBD_RUNTIME` (io-uring, epoll, auto), `LBD_WORKERS`, `LBD_LOG`.
    fn from_env() -> Settings {
        let var = |name| std::env::var(name).ok().filter(|v| !v.is_empty());
        Settings {
            workers: var("LBD_WORKERS").and_then(|w| w.parse().ok()),
            runtime: var("LBD_RUNTIME")
                .and_then(|r| clap::ValueEnum::from_str(&r, true).ok())
                .unwrap_or(RuntimeChoice::Auto),
            log: var("LBD_LOG").unwrap_or_else(|| "info".to_owned()),
        }
    }
}

/// What a run started by HAProxy's command line, or by `lbd run
/// --takeover`, does beyond a plain `lbd run`.
struct Handover {
    /// HAProxy's signals (USR1 soft stop, USR2 reload, TERM/INT hard
    /// stop), rather than lbd's (TERM/INT drain).
    haproxy_signals: bool,
    /// `-x`: the stats socket of the process whose listening sockets to
    /// take over.
    sockets_from: Option<PathBuf>,
    /// `-W`/`-Ws`: a failed `-x` is not fatal (as in HAProxy).
    master_worker: bool,
    /// `-sf`/`-st`: the processes to stop once serving.
    stop_old: Option<(StopOld, Vec<i32>)>,
    /// `-D`: the parent waiting for the daemon to serve.
    daemon: Option<lbd::daemon::Ready>,
    /// `-p`: written with our pid once serving (HAProxy's plain file: no
    /// lock, since `-sf` starts the next process with the same file).
    pid_file: Option<PathBuf>,
}

/// `haproxy ARGS...`: HAProxy's command line.
fn haproxy_main(args: &[OsString], settings: Settings) -> ExitCode {
    let inv = match haproxy_cli::parse(args) {
        Ok(inv) => inv,
        Err(usage) => {
            eprintln!("[ALERT]    (lbd) : {usage}\n{}", haproxy_cli::USAGE);
            return ExitCode::FAILURE;
        }
    };
    if let Some(v) = inv.version {
        print!(
            "{}",
            haproxy_cli::version_text(v == haproxy_cli::Version::Long, lbd::xdp::BUILD_NOTE)
        );
        return ExitCode::SUCCESS;
    }
    let quiet = inv.quiet && !inv.verbose;
    init_logging(if quiet && settings.log == "info" {
        "warn"
    } else {
        &settings.log
    });
    lbd::service::log_panics();
    if let Some(dir) = &inv.chdir {
        if let Err(e) = std::env::set_current_dir(dir) {
            eprintln!(
                "[ALERT]    (lbd) : cannot change to directory {} : {e}",
                dir.display()
            );
            return ExitCode::FAILURE;
        }
    }
    if inv.files.is_empty() {
        eprintln!("[ALERT]    (lbd) : No configuration file specified (-f).");
        return ExitCode::FAILURE;
    }
    if let Some(peer) = &inv.local_peer {
        // As HAProxy: `${HAPROXY_LOCALPEER}` in the files. One thread yet.
        std::env::set_var("HAPROXY_LOCALPEER", peer);
    }
    let command_line = haproxy::CommandLine {
        default_maxconn: inv.default_maxconn,
        global_maxconn: inv.global_maxconn,
    };
    if inv.check {
        return haproxy_check(&inv, command_line, quiet);
    }
    if !quiet {
        for flag in &inv.ignored {
            eprintln!("[NOTICE]   (lbd) : '{flag}' accepted and ignored");
        }
    }
    // Read before forking, so that systemd's and -D's callers see the
    // error and the exit code.
    let notifier = match inv.master_worker {
        Some(MasterWorker::Systemd) => match lbd::notify::Notifier::from_env() {
            Ok(n) => n,
            Err(e) => {
                eprintln!("[ALERT]    (lbd) : NOTIFY_SOCKET: {e}");
                return ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    let daemon =
        if inv.daemon && !inv.foreground && inv.master_worker != Some(MasterWorker::Systemd) {
            match lbd::daemon::daemonize() {
                Ok(ready) => Some(ready),
                Err(e) => {
                    eprintln!("[ALERT]    (lbd) : cannot go daemon: {e}");
                    return ExitCode::FAILURE;
                }
            }
        } else {
            None
        };
    let source = Source::Files(inv.files.clone(), true, command_line);
    let run_as = Handover {
        haproxy_signals: true,
        sockets_from: inv.sockets_from.clone(),
        master_worker: inv.master_worker.is_some(),
        stop_old: inv.stop_old.clone(),
        daemon,
        pid_file: inv.pid_file.clone(),
    };
    exit_code(run(&settings, source, notifier, Some(run_as)))
}

/// `haproxy -c`: 0 and "Configuration file is valid", or 1 and the alerts
/// (both silent with `-q`, as HAProxy 2.6).
fn haproxy_check(inv: &Invocation, command_line: haproxy::CommandLine, quiet: bool) -> ExitCode {
    match load(&inv.files, true, command_line) {
        Ok(loaded) => {
            if !quiet {
                for w in &loaded.warnings {
                    eprintln!("{w}");
                }
                println!("Configuration file is valid");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            if !quiet {
                eprintln!("{e}");
            }
            ExitCode::FAILURE
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

fn check_config(files: &[PathBuf]) -> ExitCode {
    let haproxy = haproxy::is_haproxy(files);
    let names = display_paths(files);
    match load(files, haproxy, haproxy::CommandLine::default()) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                eprintln!("{w}");
            }
            let cfg = &loaded.config;
            let members: usize = cfg.pools.iter().map(|p| p.members.len()).sum();
            println!(
                "{names}: ok ({} listener(s), {} pool(s), {} member(s))",
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

fn convert(files: &[PathBuf]) -> ExitCode {
    let refused = |e: haproxy::Refused| {
        for w in &e.warnings {
            eprintln!("{w}");
        }
        eprintln!("{e}\n{FATAL}");
        ExitCode::FAILURE
    };
    let reading = match haproxy::load_paths(files, haproxy::Env::process()) {
        Ok((_, reading)) => reading,
        Err(e) => return refused(e),
    };
    let sources: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    match haproxy::render_toml(&reading, &sources) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// HAProxy's last line when a config is refused.
const FATAL: &str = "[ALERT]    (lbd) : config : Fatal errors found in configuration.";

fn display_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A config read from files, with what the reader had to say about it.
struct Loaded {
    config: Config,
    /// haproxy.cfg only: what was accepted but not carried over as written.
    warnings: Vec<haproxy::Diag>,
    process: haproxy::Process,
    /// haproxy.cfg only: the server-state files to apply.
    server_state: Vec<haproxy::server_state::StateSource>,
}

impl Loaded {
    /// The config to run: the files' config with the server-state files
    /// applied (what they say is logged).
    fn versions(&self) -> Versions {
        let mut running = self.config.clone();
        let notes = haproxy::server_state::apply(&mut running, &self.server_state);
        log_warnings(&notes);
        if !self.server_state.is_empty() && notes.is_empty() {
            info!(
                "server state loaded for {} backend(s)",
                self.server_state.len()
            );
        }
        Versions {
            loaded: self.config.clone(),
            running,
        }
    }
}

/// Reads and validates a TOML file or haproxy.cfg files; the error is the
/// text to print (every problem, one per line).
fn load(
    paths: &[PathBuf],
    haproxy: bool,
    command_line: haproxy::CommandLine,
) -> Result<Loaded, String> {
    if haproxy {
        return match haproxy::load_paths_with(paths, haproxy::Env::process(), command_line) {
            Ok((config, reading)) => Ok(Loaded {
                config,
                warnings: reading.warnings,
                process: reading.process,
                server_state: reading.server_state,
            }),
            Err(e) => {
                let mut text = String::new();
                for w in &e.warnings {
                    text.push_str(&format!("{w}\n"));
                }
                Err(format!("{text}{e}\n{FATAL}"))
            }
        };
    }
    match paths {
        [path] => lbd_config::load_file(path)
            .map(|config| Loaded {
                config,
                warnings: Vec::new(),
                process: haproxy::Process::default(),
                server_state: Vec::new(),
            })
            .map_err(|e| e.to_string()),
        _ => Err("several config paths are read as haproxy.cfg only".to_owned()),
    }
}

/// Where the config comes from (and what SIGHUP re-reads).
enum Source {
    /// Config files, and whether they are haproxy.cfg (decided at start:
    /// a reload reads the same format), with what HAProxy's command line
    /// adds to them.
    Files(Vec<PathBuf>, bool, haproxy::CommandLine),
    /// Listener and admin bind of the demo.
    Demo(std::net::SocketAddr, std::net::SocketAddr),
}

impl Source {
    fn file(paths: Vec<PathBuf>) -> Source {
        let haproxy = haproxy::is_haproxy(&paths);
        Source::Files(paths, haproxy, haproxy::CommandLine::default())
    }
}

/// Runs lbd until it stops. `notifier`: systemd's `NOTIFY_SOCKET` (`lbd
/// run` under `Type=notify`, or `haproxy -Ws`), told READY, RELOADING and
/// STOPPING.
fn run(
    settings: &Settings,
    source: Source,
    notifier: Option<lbd::notify::Notifier>,
    mut haproxy: Option<Handover>,
) -> anyhow::Result<()> {
    lbd::memory::init();
    // Probed outside any runtime: a worker's io_uring runtime builds its own.
    let kind = runtime::resolve(settings.runtime)?;
    // Signal handlers next: a SIGHUP that arrives early must not kill us.
    let control = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the control runtime")?;
    control.block_on(async {
        let mut hup = signal(SignalKind::hangup())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        // HAProxy's: USR2 reloads, USR1 stops softly.
        let haproxy_signals = haproxy.as_ref().is_some_and(|h| h.haproxy_signals);
        let (mut usr1, mut usr2) = match haproxy_signals {
            true => (
                Some(signal(SignalKind::user_defined1())?),
                Some(signal(SignalKind::user_defined2())?),
            ),
            false => (None, None),
        };

        let (versions, nbthread): (Versions, _) = match &source {
            Source::Files(paths, haproxy, command_line) => {
                let loaded =
                    load(paths, *haproxy, *command_line).map_err(|e| anyhow::anyhow!("{e}"))?;
                log_warnings(&loaded.warnings);
                (loaded.versions(), loaded.process.workers)
            }
            Source::Demo(bind, admin) => (demo_config(*bind, *admin)?.into(), None),
        };
        let workers = settings.workers.or(nbthread).unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        });
        let config = versions.running.clone();
        lbd::limits::raise_fd_limit(&config);
        if let Some(h) = &haproxy {
            h.fetch_sockets()?;
        }
        let sharing = match haproxy.as_ref().and_then(|h| h.stop_old.as_ref()) {
            // The old processes still listen on our addresses: they stop
            // once we serve (see `Sharing::TakingOver`).
            Some((_, pids)) if !pids.is_empty() => Sharing::TakingOver,
            _ => Sharing::Exclusive,
        };
        let server = Arc::new(Server::start_sharing(versions, workers, kind, sharing)?);
        lbd::admin::spawn(Arc::clone(&server))?;
        // The TCP stats sockets take theirs of the received sockets too.
        lbd::admin::cli::spawn(Arc::clone(&server))?;
        let unclaimed = lbd::sockets::drop_unclaimed();
        if !unclaimed.is_empty() {
            info!(
                "-x: closed {} received socket(s) that no listener uses: {unclaimed:?}",
                unclaimed.len()
            );
        }
        log_started(&config, workers, kind.name());
        if let Source::Demo(bind, admin) = &source {
            print_demo_help(*bind, *admin, &config);
        }
        if let Some(h) = &mut haproxy {
            h.serving(&server).await?;
        }
        if let Some(n) = &notifier {
            if let Err(e) = n.ready() {
                warn!("cannot notify systemd (READY=1): {e}");
            }
        }
        let notify = |state: &str| {
            if let Some(n) = &notifier {
                if let Err(e) = n.send(state) {
                    warn!("cannot notify systemd ({state}): {e}");
                }
            }
        };

        let stop = loop {
            tokio::select! {
                _ = hup.recv() => {
                    notify("RELOADING=1");
                    reload(&server, &source, "SIGHUP");
                    notify("READY=1");
                }
                Some(_) = recv(&mut usr2) => {
                    notify("RELOADING=1");
                    reload(&server, &source, "SIGUSR2");
                    notify("READY=1");
                }
                Some(_) = recv(&mut usr1) => {
                    info!("SIGUSR1: soft stop: no new connections, finishing the open ones");
                    break Stop::Drain
                }
                _ = term.recv() => {
                    info!("SIGTERM: shutting down");
                    break if haproxy_signals { Stop::Hard } else { Stop::Drain }
                }
                _ = int.recv() => {
                    info!("SIGINT: shutting down");
                    break if haproxy_signals { Stop::Hard } else { Stop::Drain }
                }
                _ = server.shared().worker_died.notified() => {
                    error!("a data-plane worker died: draining the others, then exiting with an error");
                    break Stop::WorkerDied
                }
            }
        };
        notify("STOPPING=1");
        match stop {
            Stop::Hard => {
                // HAProxy's hard stop: open connections end with the
                // process.
                server.stop_accepting();
                let open = server.shared().active_connections();
                if open > 0 {
                    info!("hard stop: closing {open} open connection(s)");
                }
            }
            Stop::Drain | Stop::WorkerDied => {
                let drain_timeout = server.shared().snapshot().config.global.drain_timeout;
                server.drain(drain_timeout).await;
            }
        }
        // Health checks stop, the XDP program is detached, the admin
        // server closes and removes its unix socket.
        server.stop_services(SERVICE_STOP_TIMEOUT);
        if stop == Stop::WorkerDied {
            anyhow::bail!("stopped after a worker died");
        }
        info!("stopped");
        Ok(())
    })
}

/// How a run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Stop accepting, let open connections finish (up to drain_timeout).
    Drain,
    /// haproxy mode's SIGTERM/SIGINT: stop now.
    Hard,
    WorkerDied,
}

/// Before the old processes of `-sf/-st` stop: new connections go to our
/// sockets only, and the old sockets' accept queues empty (see
/// `lbd::takeover`). Once the old sockets are gone, a background task
/// gives the group back to the kernel's hash.
async fn steer_to_us(server: &Server) {
    use lbd::takeover::Steering;
    let mut steering = Vec::new();
    tracing::debug!("takeover: attaching the steering");
    let snapshot = server.shared().snapshot();
    for l in snapshot
        .listeners
        .iter()
        .filter(|l| l.cfg.protocol == lbd_config::Protocol::Tcp)
    {
        match Steering::attach(&l.sockets) {
            Ok(s) => steering.push(s),
            Err(e) => warn!(
                "listener {:?}: cannot steer {} to this process ({e}); connections queued on \
                 the old process's sockets when it stops may be reset",
                l.cfg.name, l.cfg.bind
            ),
        }
    }
    // Connections whose handshake was under way when the program was
    // attached, and the old workers' last accepts.
    tracing::debug!(
        "takeover: steering attached to {} listener(s)",
        steering.len()
    );
    tokio::time::sleep(TAKEOVER_SETTLE).await;
    let deadline = std::time::Instant::now() + TAKEOVER_QUEUE_WAIT;
    loop {
        let queued: u64 = steering.iter().filter_map(|s| s.old_queued().ok()).sum();
        if queued == 0 {
            break;
        }
        if std::time::Instant::now() >= deadline {
            warn!("{queued} connection(s) still queued on the old process's sockets; stopping it anyway");
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    info!(
        "takeover: {} listener(s) steered to this process; old accept queues checked after {} ms",
        steering.len(),
        (std::time::Instant::now() + TAKEOVER_QUEUE_WAIT)
            .saturating_duration_since(deadline)
            .as_millis()
            + TAKEOVER_SETTLE.as_millis()
    );
    for s in &mut steering {
        match s.pin() {
            Ok(true) => {}
            Ok(false) => warn!(
                "{}: the old process has more listening sockets than this one (more workers); \
                 a few connections may be reset while it closes them",
                s.bind()
            ),
            Err(e) => warn!("{}: cannot pin the takeover steering: {e}", s.bind()),
        }
    }
    tokio::spawn(async move {
        let deadline = std::time::Instant::now() + TAKEOVER_DETACH_WAIT;
        for mut s in steering {
            while s.old_listening().is_ok_and(|n| n > 0) && std::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            match s.detach() {
                Ok(()) => info!("{}: the old process's sockets are closed", s.bind()),
                Err(e) => warn!("{}: cannot detach the takeover steering: {e}", s.bind()),
            }
        }
    });
}

/// `-sf/-st`: how long after steering before looking at the old queues.
const TAKEOVER_SETTLE: std::time::Duration = std::time::Duration::from_millis(100);
/// `-sf/-st`: the longest wait for the old accept queues to empty.
const TAKEOVER_QUEUE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// `-sf/-st`: the longest wait for the old sockets to close.
const TAKEOVER_DETACH_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

/// The next signal of an optional stream; never, without one.
async fn recv(signal: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match signal {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// `-x`: how long the running process may take to answer `_getsocks`.
const FETCH_SOCKETS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl Handover {
    /// `lbd run --takeover <stats socket>`: the sockets of the lbd serving
    /// it, and that lbd told to drain (SIGTERM) once this one serves.
    fn takeover(socket: &std::path::Path) -> anyhow::Result<Handover> {
        let old = lbd::handoff::owner_pid(socket, FETCH_SOCKETS_TIMEOUT).with_context(|| {
            format!(
                "--takeover {}: cannot ask the running lbd for its pid",
                socket.display()
            )
        })?;
        info!(
            "--takeover {}: taking over from pid {old}",
            socket.display()
        );
        Ok(Handover {
            haproxy_signals: false,
            sockets_from: Some(socket.to_owned()),
            master_worker: false,
            stop_old: Some((StopOld::Terminate, vec![old])),
            daemon: None,
            pid_file: None,
        })
    }

    /// `-x`: receives the listening sockets of the process at the stats
    /// socket; the listeners about to open take those of their address.
    /// A failure stops the start, unless in master-worker mode (then the
    /// listeners bind as usual), as in HAProxy.
    fn fetch_sockets(&self) -> anyhow::Result<()> {
        let Some(path) = &self.sockets_from else {
            return Ok(());
        };
        match lbd::handoff::fetch_listeners(path, FETCH_SOCKETS_TIMEOUT) {
            Ok(fds) => {
                let received = fds.len();
                let kept = lbd::sockets::inherit(fds);
                info!(
                    "-x {}: received {received} socket(s), {kept} of them TCP listeners",
                    path.display()
                );
                Ok(())
            }
            Err(e) if self.master_worker => {
                warn!(
                    "-x {}: failed to get the sockets from the old process ({e}); binding \
                     them anew",
                    path.display()
                );
                Ok(())
            }
            Err(e) => Err(anyhow::anyhow!(
                "-x {}: failed to get the sockets from the old process: {e}",
                path.display()
            )),
        }
    }

    /// Once lbd serves: the pid file, the old processes told to stop, a
    /// `-D` parent released (systemd is told READY next, by `run`).
    async fn serving(&mut self, server: &Server) -> anyhow::Result<()> {
        let pid = std::process::id();
        if let Some(path) = &self.pid_file {
            std::fs::write(path, format!("{pid}\n"))
                .with_context(|| format!("cannot write pid file {}", path.display()))?;
        }
        if let Some((how, pids)) = &self.stop_old {
            if !pids.is_empty() {
                steer_to_us(server).await;
            }
            let (sig, name) = match how {
                StopOld::Finish => (libc::SIGUSR1, "SIGUSR1 (finish)"),
                StopOld::Terminate => (libc::SIGTERM, "SIGTERM"),
            };
            for &old in pids.iter().filter(|&&p| p as u32 != pid) {
                // SAFETY: kill(2) with a pid the operator named.
                if unsafe { libc::kill(old, sig) } == 0 {
                    info!("serving: sent {name} to old process {old}");
                } else {
                    warn!(
                        "cannot signal old process {old}: {}",
                        std::io::Error::last_os_error()
                    );
                }
            }
        }
        if let Some(ready) = self.daemon.take() {
            ready.serving().context("cannot detach from the terminal")?;
        }
        Ok(())
    }
}

/// How long `lbd run` waits for its background services to stop after the
/// drain.
const SERVICE_STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

fn log_warnings(warnings: &[haproxy::Diag]) {
    for w in warnings {
        warn!("{w}");
    }
}

fn reload(server: &Server, source: &Source, why: &str) {
    let Source::Files(paths, haproxy, command_line) = source else {
        info!("{why}: the demo has no config file to reload");
        return;
    };
    info!("{why}: reloading {}", display_paths(paths));
    let loaded = match load(paths, *haproxy, *command_line) {
        Err(e) => {
            server.note_rejected_reload();
            error!("reload rejected, the running config stays:\n{e}");
            return;
        }
        Ok(loaded) => loaded,
    };
    log_warnings(&loaded.warnings);
    match server.reload(loaded.versions()) {
        Ok(s) => info!(
            "reloaded: generation {}, listeners +{} -{}, members +{} -{}",
            s.generation,
            s.listeners_added,
            s.listeners_removed,
            s.members_added,
            s.members_removed
        ),
        Err(e) => error!("reload rejected, the running config stays: {e}"),
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
