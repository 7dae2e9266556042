//! bench: lbd side by side with HAProxy, HAProxy with splice, nginx `stream`
//! and a direct connection, in one run, on loopback, with the same backends
//! and the same pinning. See bench/README.md.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use serde::Serialize;

use backends::{Backends, Ports};
use bench::{backends, procs, profile, proxies, report, scenarios, setup, udp, wrk};
use procs::{Pin, WorkDir};
use proxies::{Kind, Listen, Proxy, Upstreams};
use report::Sample;
use scenarios::{Scenario, Settings};

#[derive(Parser, Debug)]
#[command(
    name = "bench",
    about = "lbd side by side with HAProxy, nginx stream and a direct connection (loopback only)"
)]
struct Cli {
    /// Length of each measured run, e.g. 10s, 1m [default: 10s; --quick: 2s]
    #[arg(long, value_parser = bench::cli::parse_duration)]
    duration: Option<Duration>,
    /// Repetitions of every run (medians and min-max are reported) [default: 3; --quick: 1]
    #[arg(long)]
    reps: Option<u32>,
    /// Pinning variants: proxy on CPU 1 and clients+backends on CPU 0, none, or both [default: both; --quick: pinned]
    #[arg(long, value_enum)]
    pinning: Option<PinningChoice>,
    /// Configurations to measure (comma list) [default: all]
    #[arg(long, value_enum, value_delimiter = ',')]
    proxies: Vec<Kind>,
    /// Scenarios to run (comma list) [default: all]
    #[arg(long, value_enum, value_delimiter = ',')]
    scenarios: Vec<Scenario>,
    /// Idle connections held open through each proxy for the memory scenario [default: 10000; --quick: 1000]
    #[arg(long)]
    idle_conns: Option<usize>,
    /// Config reloads during the reload scenario's run [default: 100; --quick: 10]
    #[arg(long)]
    reloads: Option<usize>,
    /// In-place binary upgrades during the upgrade scenario's run [default: 20; --quick: 5]
    #[arg(long)]
    upgrades: Option<usize>,
    /// Smoke run: 2 s runs, 1 rep, pinned only, 1,000 idle connections, 10 reloads, 5 upgrades (explicit options still win)
    #[arg(long)]
    quick: bool,
    /// Where the JSON goes [default: bench/results]
    #[arg(long)]
    out: Option<PathBuf>,
    /// Use this lbd binary instead of building it (cargo build --release -p lbd)
    #[arg(long)]
    lbd: Option<PathBuf>,
    /// The lbd binary of the `lbd-old` column (e.g. built from the commit before a change)
    #[arg(long)]
    lbd_old: Option<PathBuf>,
    /// Give the lbd and lbd-epoll columns' http members `max_connections = N` (not lbd-old):
    /// with N above the load, the cost of a limit that is never reached
    #[arg(long)]
    lbd_max_connections: Option<u32>,
    /// Do not profile the proxies (by default, where perf exists, the first keep-alive
    /// repetition of each proxy is sampled with `perf record` for its CPU split)
    #[arg(long)]
    no_perf: bool,
    /// UDP request/response: client sockets, each its own flow with one request in flight [default: 50]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    udp_clients: Option<u32>,
    /// UDP request/response: datagram size in bytes, 12 to 65507 [default: 64]
    #[arg(long, value_parser = clap::value_parser!(u32).range(udp::HEADER as i64..=udp::MAX_PAYLOAD as i64))]
    udp_size: Option<u32>,
    /// UDP request/response: a request unanswered after this many ms is lost (and a new one sent) [default: 1000]
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    udp_timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum PinningChoice {
    Pinned,
    Unpinned,
    Both,
}

/// The options in force (after --quick and the defaults).
#[derive(Debug, Clone, Serialize)]
struct Options {
    quick: bool,
    duration_s: u64,
    reps: u32,
    pinning: PinningChoice,
    proxies: Vec<Kind>,
    scenarios: Vec<Scenario>,
    idle_conns_requested: usize,
    idle_conns: usize,
    reloads: usize,
    upgrades: usize,
    out: PathBuf,
    lbd: Option<PathBuf>,
    lbd_old: Option<PathBuf>,
    lbd_max_connections: Option<u32>,
    no_perf: bool,
    udp_clients: usize,
    udp_size: usize,
    udp_timeout_ms: u64,
}

impl Options {
    fn from_cli(cli: Cli) -> Options {
        let q = cli.quick;
        let proxies = bench::cli::selection(cli.proxies, &Kind::ALL);
        let scenarios = bench::cli::selection(cli.scenarios, &Scenario::ALL);
        let idle = cli.idle_conns.unwrap_or(if q { 1000 } else { 10_000 });
        Options {
            quick: q,
            duration_s: cli
                .duration
                .unwrap_or(Duration::from_secs(if q { 2 } else { 10 }))
                .as_secs(),
            reps: cli.reps.unwrap_or(if q { 1 } else { 3 }).max(1),
            pinning: cli.pinning.unwrap_or(if q {
                PinningChoice::Pinned
            } else {
                PinningChoice::Both
            }),
            proxies,
            scenarios,
            idle_conns_requested: idle,
            idle_conns: idle,
            reloads: cli.reloads.unwrap_or(if q { 10 } else { 100 }),
            upgrades: cli.upgrades.unwrap_or(if q { 5 } else { 20 }),
            out: cli.out.unwrap_or_else(bench::cli::default_results_dir),
            lbd: cli.lbd,
            lbd_old: cli.lbd_old,
            lbd_max_connections: cli.lbd_max_connections,
            no_perf: cli.no_perf,
            udp_clients: cli.udp_clients.unwrap_or(50) as usize,
            udp_size: cli.udp_size.unwrap_or(64) as usize,
            udp_timeout_ms: cli.udp_timeout_ms.unwrap_or(1000),
        }
    }

    /// Whether a UDP scenario runs against a column that carries UDP
    /// (then the UDP echo server starts and lbd and nginx get UDP listeners).
    fn udp(&self) -> bool {
        self.scenarios.iter().any(|s| s.is_udp()) && self.proxies.iter().any(|k| k.serves_udp())
    }
}

/// What a pinning variant means.
#[derive(Debug, Clone, Copy)]
struct Layout {
    name: &'static str,
    proxy: Pin,
    clients: Pin,
    backends: Pin,
}

const PINNED: Layout = Layout {
    name: "pinned",
    proxy: Pin::Cpu(1),
    clients: Pin::Cpu(0),
    backends: Pin::Cpu(0),
};
const UNPINNED: Layout = Layout {
    name: "unpinned",
    proxy: Pin::Any,
    clients: Pin::Any,
    backends: Pin::Any,
};

impl Layout {
    fn describe(&self) -> &'static str {
        match self.proxy {
            Pin::Cpu(_) => {
                "proxy on CPU 1 (taskset -c 1); wrk, iperf3, UDP load and backends on CPU 0 (taskset -c 0)"
            }
            Pin::Any => "nothing pinned",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
struct ProxySetup {
    command: String,
    config: String,
    http: String,
    iperf: String,
    /// The UDP echo path (iperf3's UDP test uses `iperf`'s port).
    #[serde(skip_serializing_if = "Option::is_none")]
    udp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    runtime: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
struct VariantResult {
    pinning: String,
    layout: String,
    lbd_runtime: Option<String>,
    backends: Vec<String>,
    backend_config: String,
    proxies: BTreeMap<String, ProxySetup>,
    notes: Vec<String>,
    samples: Vec<Sample>,
    summary: report::Summary,
    targets: Vec<report::TargetResult>,
    table: String,
    /// Per proxy: the CPU split of its first keep-alive repetition (perf).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    cpu_split: BTreeMap<String, profile::CpuSplit>,
    elapsed_s: f64,
}

#[derive(Serialize)]
struct Report<'a> {
    tool: &'static str,
    kind: &'static str,
    machine: &'a setup::Machine,
    options: &'a Options,
    variants: &'a [VariantResult],
    elapsed_s: f64,
}

fn main() -> ExitCode {
    // The bench binary is also the UDP echo backend and load generator.
    if let Some(code) = udp::helper_main() {
        return code;
    }
    if let Err(e) = procs::install_signal_handler() {
        eprintln!("bench: {e:#}");
        return ExitCode::FAILURE;
    }
    procs::become_subreaper();
    let cli = Cli::parse();
    match run(Options::from_cli(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(mut opts: Options) -> Result<()> {
    let started = Instant::now();
    setup::ensure_packages()?;
    let fd = setup::raise_fd_limit(250_000)?;
    // A proxy holds two descriptors per idle connection (plus its own).
    let fit = (fd.soft.saturating_sub(1024) / 2) as usize;
    if opts.idle_conns > fit {
        eprintln!(
            "bench: the open-file limit {} fits {fit} idle proxied connections, not {}: using {fit}",
            fd.soft, opts.idle_conns
        );
        opts.idle_conns = fit;
    }
    if opts.pinning != PinningChoice::Unpinned
        && std::thread::available_parallelism().map_or(1, |n| n.get()) < 2
    {
        bail!("the pinned layout needs 2 CPUs (CPU 0 and CPU 1); use --pinning unpinned");
    }
    let work = WorkDir::create()?;
    let result = run_in(&opts, &work, fd, started);
    if result.is_err() {
        work.keep();
    }
    result
}

fn run_in(opts: &Options, work: &WorkDir, fd: setup::FdLimit, started: Instant) -> Result<()> {
    if opts.proxies.contains(&Kind::LbdOld) && opts.lbd_old.is_none() {
        bail!("the lbd-old column needs --lbd-old PATH");
    }
    let lbd_bin = if opts
        .proxies
        .iter()
        .any(|&k| k.is_lbd() && k != Kind::LbdOld)
    {
        Some(setup::lbd_binary(opts.lbd.as_deref(), &work.logs())?)
    } else {
        None
    };
    let machine = setup::machine(lbd_bin.as_deref().unwrap_or(Path::new("lbd")), fd);
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("cannot create {}", opts.out.display()))?;
    let pinning_name = match opts.pinning {
        PinningChoice::Pinned => "pinned",
        PinningChoice::Unpinned => "unpinned",
        PinningChoice::Both => "both",
    };
    let stem = format!(
        "{}-{}-{pinning_name}{}",
        machine.date,
        machine.commit,
        if opts.quick { "-quick" } else { "" }
    );
    let out_file = opts.out.join(format!("{stem}.json"));
    let layouts: Vec<Layout> = match opts.pinning {
        PinningChoice::Pinned => vec![PINNED],
        PinningChoice::Unpinned => vec![UNPINNED],
        PinningChoice::Both => vec![PINNED, UNPINNED],
    };
    let perf = find_perf(opts);
    eprintln!(
        "bench: {} | {} | {} core(s) | kernel {} | commit {}",
        machine.date, machine.cpu_model, machine.cores, machine.kernel, machine.commit
    );
    eprintln!(
        "bench: {}s runs, {} rep(s), {} idle conns, {} reloads, {} upgrades; configs {}; scenarios {}",
        opts.duration_s,
        opts.reps,
        opts.idle_conns,
        opts.reloads,
        opts.upgrades,
        names(&opts.proxies, Kind::name),
        names(&opts.scenarios, Scenario::name),
    );

    let mut ports = Ports::new(17_000);
    let mut variants = Vec::new();
    let several = layouts.len() > 1;
    for layout in layouts {
        // The profiles' text goes next to the JSON: <stem>[-<variant>]-<proxy>-perf.txt.
        let perf_out = if several {
            opts.out.join(format!("{stem}-{}", layout.name))
        } else {
            opts.out.join(&stem)
        };
        let profiling = perf.as_ref().map(|p| (p, perf_out.as_path()));
        let v = run_variant(
            &layout,
            opts,
            work,
            lbd_bin.as_deref(),
            &mut ports,
            profiling,
        )
        .with_context(|| format!("{} variant", layout.name))?;
        if v.samples.iter().any(|s| s.error.is_some()) {
            work.keep();
        }
        print_variant(&v, &machine, opts);
        variants.push(v);
        let report = Report {
            tool: "lbd bench (cargo run --release -p bench)",
            kind: if opts.quick {
                "quick smoke run"
            } else {
                "full run"
            },
            machine: &machine,
            options: opts,
            variants: &variants,
            elapsed_s: started.elapsed().as_secs_f64(),
        };
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(&out_file, json + "\n")
            .with_context(|| format!("cannot write {}", out_file.display()))?;
    }
    println!(
        "JSON: {}\ntotal time: {:.0} s",
        out_file.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// perf for the CPU splits, or `None` (and one line saying why) when
/// profiling is off, cannot happen, or would have nothing to profile.
fn find_perf(opts: &Options) -> Option<profile::Perf> {
    let wanted = opts.scenarios.contains(&Scenario::Keepalive)
        && opts.proxies.iter().any(|&k| k != Kind::Direct);
    if !wanted {
        return None;
    }
    if opts.no_perf {
        eprintln!("bench: --no-perf: no CPU split of the proxies");
        return None;
    }
    match profile::Perf::find() {
        Ok(p) => {
            eprintln!(
                "bench: CPU split: {} samples the first keep-alive repetition of each proxy",
                p.path.display()
            );
            Some(p)
        }
        Err(why) => {
            eprintln!("bench: no CPU split of the proxies: {why}");
            None
        }
    }
}

fn names<T: Copy>(items: &[T], f: fn(T) -> &'static str) -> String {
    items.iter().map(|i| f(*i)).collect::<Vec<_>>().join(",")
}

fn run_variant(
    layout: &Layout,
    opts: &Options,
    work: &WorkDir,
    lbd: Option<&Path>,
    ports: &mut Ports,
    // perf, and where its text goes (a prefix: `-<proxy>-perf.txt` follows).
    profiling: Option<(&profile::Perf, &Path)>,
) -> Result<VariantResult> {
    let started = Instant::now();
    let root = work.path().join(layout.name);
    std::fs::create_dir_all(&root)?;
    let logs = work.logs();
    let script = root.join("bench.lua");
    std::fs::write(&script, wrk::SCRIPT)?;
    eprintln!("bench: [{}] {}", layout.name, layout.describe());

    let mut backends = Backends::start(&root, &logs, ports, layout.backends)?;
    // The bench binary itself: the UDP echo server and load generator.
    let program = std::env::current_exe().context("cannot find the bench binary")?;
    if opts.udp() {
        backends
            .start_udp_echo(ports, &program)
            .context("starting the UDP echo server")?;
    }
    let upstreams = Upstreams {
        http: backends.http_ports(),
        iperf: backends.iperf_port,
        udp_echo: backends.udp_echo_port,
    };
    let mut proxies = Vec::new();
    for &kind in &opts.proxies {
        let listen = if kind == Kind::Direct {
            Listen {
                http: 0,
                iperf: 0,
                udp: None,
            }
        } else {
            Listen {
                http: ports.take()?,
                iperf: ports.take()?,
                udp: if opts.udp() && kind.serves_udp() {
                    Some(ports.take()?)
                } else {
                    None
                },
            }
        };
        let bin = match kind {
            Kind::LbdOld => opts.lbd_old.as_deref(),
            _ => lbd,
        };
        let p = Proxy::start(
            kind,
            listen,
            &upstreams,
            &root,
            bin,
            layout.proxy,
            &logs,
            opts.lbd_max_connections,
        )
        .with_context(|| format!("starting {}", kind.name()))?;
        scenarios::check_http(p.http_port).with_context(|| {
            format!(
                "{} does not serve {}\n{}",
                kind.name(),
                p.url("/100b"),
                p.log_tail()
            )
        })?;
        if let Some(port) = p.udp_port {
            udp::check_echo(port).with_context(|| {
                format!(
                    "{} does not echo UDP via 127.0.0.1:{port}\n{}",
                    kind.name(),
                    p.log_tail()
                )
            })?;
        }
        eprintln!(
            "bench: [{}] {} ready on 127.0.0.1:{} (iperf3 via :{}{}){}",
            layout.name,
            kind.name(),
            p.http_port,
            p.iperf_port,
            p.udp_port
                .map(|u| format!(", UDP echo via :{u}"))
                .unwrap_or_default(),
            p.runtime
                .as_ref()
                .map(|r| format!(", runtime {r}"))
                .unwrap_or_default()
        );
        proxies.push(p);
    }
    let setups: BTreeMap<String, ProxySetup> = proxies
        .iter()
        .map(|p| {
            (
                p.kind.name().to_string(),
                ProxySetup {
                    command: procs::shell_words(&with_pin(layout.proxy, p.argv())),
                    config: p.config_text(),
                    http: format!("127.0.0.1:{}", p.http_port),
                    iperf: format!("127.0.0.1:{}", p.iperf_port),
                    udp: p.udp_port.map(|u| format!("127.0.0.1:{u}")),
                    runtime: p.runtime.clone(),
                },
            )
        })
        .collect();

    let settings = Settings {
        duration: Duration::from_secs(opts.duration_s),
        idle_conns: opts.idle_conns,
        reloads: opts.reloads,
        upgrades: opts.upgrades,
        client_pin: layout.clients,
        logs: logs.clone(),
        script,
        program,
        udp_clients: opts.udp_clients,
        udp_size: opts.udp_size,
        udp_timeout: Duration::from_millis(opts.udp_timeout_ms),
    };
    let mut notes = Vec::new();
    if opts.idle_conns < opts.idle_conns_requested {
        notes.push(format!(
            "idle connections capped at {} (asked {}): the open-file hard limit could not be raised",
            opts.idle_conns, opts.idle_conns_requested
        ));
    }
    let mut samples = Vec::new();
    let mut cpu_split = BTreeMap::new();
    // Interleaved: every configuration once per repetition, scenario by
    // scenario, so drift over the run hits all of them alike.
    for &scenario in &opts.scenarios {
        for rep in 1..=opts.reps {
            for p in &mut proxies {
                if !scenario.applies_to(p.kind) {
                    continue;
                }
                for what in backends.ensure_running()? {
                    notes.push(format!(
                        "before {} {} rep {rep}: restarted {what}",
                        scenario.name(),
                        p.kind.name()
                    ));
                }
                if let Some(what) = p.ensure_running()? {
                    eprintln!("bench: {what}");
                    notes.push(format!("before {} rep {rep}: {what}", scenario.name()));
                }
                // The first keep-alive repetition of every proxy is profiled.
                let perf = profiling
                    .filter(|_| scenario == Scenario::Keepalive && rep == 1)
                    .filter(|_| p.kind != Kind::Direct)
                    .map(|(perf, _)| perf);
                let t0 = Instant::now();
                let mut result = scenarios::run(scenario, p, &mut backends, &settings, perf);
                let seconds = t0.elapsed().as_secs_f64();
                let profiled = match result.as_mut() {
                    Ok(m) => m.profile.take(),
                    Err(_) => perf.map(|_| Err("the run failed".to_string())),
                };
                let sample = match result {
                    Ok(m) => Sample {
                        scenario: scenario.name().into(),
                        proxy: p.kind.name().into(),
                        rep,
                        seconds,
                        metrics: m.metrics,
                        raw: m.raw,
                        error: None,
                    },
                    Err(e) => {
                        let msg = format!("{e:#}\n{}", p.log_tail());
                        eprintln!(
                            "bench: [{}] {} {} rep {rep}: ERROR {msg}",
                            layout.name,
                            scenario.name(),
                            p.kind.name()
                        );
                        Sample {
                            scenario: scenario.name().into(),
                            proxy: p.kind.name().into(),
                            rep,
                            seconds,
                            metrics: BTreeMap::new(),
                            raw: serde_json::Value::Null,
                            error: Some(msg),
                        }
                    }
                };
                if sample.error.is_none() {
                    eprintln!(
                        "bench: [{} {rep}/{}] {:<9} {:<14} {} ({seconds:.1} s)",
                        layout.name,
                        opts.reps,
                        scenario.name(),
                        p.kind.name(),
                        progress(&sample)
                    );
                }
                samples.push(sample);
                if let (Some(outcome), Some((_, prefix))) = (profiled, profiling) {
                    let name = p.kind.name();
                    match outcome {
                        Ok(prof) => {
                            let mut split = prof.split.clone();
                            let file =
                                PathBuf::from(format!("{}-{name}-perf.txt", prefix.display()));
                            match std::fs::write(&file, profile::text(&prof, name, layout.name)) {
                                Ok(()) => split.text_file = Some(file.display().to_string()),
                                Err(e) => {
                                    let why = format!("cannot write {}: {e}", file.display());
                                    eprintln!("bench: [{}] cpu split {name}: {why}", layout.name);
                                    notes.push(format!("cpu split {name}: {why}"));
                                }
                            }
                            // Flame graph input beside it.
                            if let Some(folded) = &prof.folded {
                                let file = file.with_extension("folded");
                                if let Err(e) = std::fs::write(&file, folded) {
                                    notes.push(format!("cannot write {}: {e}", file.display()));
                                }
                            }
                            eprintln!(
                                "bench: [{}] cpu split {name}: {}",
                                layout.name,
                                split.line()
                            );
                            cpu_split.insert(name.to_string(), split);
                        }
                        Err(why) => {
                            eprintln!(
                                "bench: [{}] cpu split {name}: not measured: {why}",
                                layout.name
                            );
                            notes.push(format!("cpu split {name}: not measured: {why}"));
                        }
                    }
                }
            }
        }
    }
    let lbd_runtime = proxies.iter().find_map(|p| p.runtime.clone());
    let backend_config = backends
        .http
        .first()
        .map(|b| b.config_text())
        .unwrap_or_default();
    let backend_commands = with_pin_all(layout.backends, backends.command_lines());
    drop(proxies);
    backends.stop();

    let summary = report::summarize(&samples);
    let mut errors = BTreeMap::new();
    for s in samples.iter().filter(|s| s.error.is_some()) {
        *errors
            .entry((s.scenario.clone(), s.proxy.clone()))
            .or_insert(0) += 1;
    }
    let cols: Vec<&str> = opts.proxies.iter().map(|k| k.name()).collect();
    let table = report::markdown_table(&summary, &cols, &errors);
    let targets = report::check_targets(&summary);
    Ok(VariantResult {
        pinning: layout.name.into(),
        layout: layout.describe().into(),
        lbd_runtime,
        backends: backend_commands,
        backend_config,
        proxies: setups,
        notes,
        samples,
        summary,
        targets,
        table,
        cpu_split,
        elapsed_s: started.elapsed().as_secs_f64(),
    })
}

fn with_pin(pin: Pin, argv: Vec<String>) -> Vec<String> {
    match pin {
        Pin::Any => argv,
        Pin::Cpu(n) => ["taskset".to_string(), "-c".into(), n.to_string()]
            .into_iter()
            .chain(argv)
            .collect(),
    }
}

fn with_pin_all(pin: Pin, commands: Vec<String>) -> Vec<String> {
    match pin {
        Pin::Any => commands,
        Pin::Cpu(n) => commands
            .into_iter()
            .map(|c| format!("taskset -c {n} {c}"))
            .collect(),
    }
}

/// One line per run for the progress log.
fn progress(s: &Sample) -> String {
    s.metrics
        .iter()
        .map(|(k, v)| {
            let d = report::metric(k).map_or(2, |m| m.decimals);
            let short = match k.split_once('.') {
                // `udp_rr.x` in the `udp-rr` scenario; `iperf_p4.x` stays whole.
                Some((scenario, metric)) if scenario.replace('_', "-") == s.scenario => metric,
                _ => k.as_str(),
            };
            format!("{short}={}", report::fmt_num(*v, d))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn print_variant(v: &VariantResult, m: &setup::Machine, opts: &Options) {
    let kind = if opts.quick {
        "QUICK SMOKE RUN (2 s runs, 1 rep: not a measurement to quote)"
    } else {
        "full run"
    };
    println!("\n## {} ({})\n", v.pinning, v.layout);
    println!(
        "{kind}; {} on {} ({} cores), kernel {}, commit {}",
        m.started_utc, m.cpu_model, m.cores, m.kernel, m.commit
    );
    println!(
        "{} (runtime {}) | {} | {} | {} | {}",
        m.versions.lbd,
        v.lbd_runtime.as_deref().unwrap_or("-"),
        m.versions.haproxy,
        m.versions.nginx,
        m.versions.wrk,
        m.versions.iperf3
    );
    let udp = if opts.udp() {
        format!(
            "; UDP req/resp: {} flows, {}-byte datagrams, {} ms timeout",
            opts.udp_clients, opts.udp_size, opts.udp_timeout_ms
        )
    } else {
        String::new()
    };
    println!(
        "{}s runs, {} rep(s), {} idle connections, {} reloads, {} upgrades{udp}; one worker per proxy\n",
        opts.duration_s, opts.reps, opts.idle_conns, opts.reloads, opts.upgrades
    );
    print!("{}", v.table);
    if !v.cpu_split.is_empty() {
        let cols: Vec<&str> = opts.proxies.iter().map(|k| k.name()).collect();
        println!(
            "\nCPU split of each proxy (perf, first keep-alive repetition; samples by leaf symbol):\n"
        );
        print!("{}", report::cpu_split_table(&v.cpu_split, &cols));
    }
    println!("\nTargets (lbd, medians of this run):\n");
    print!("{}", report::targets_text(&v.targets));
    for n in &v.notes {
        println!("note: {n}");
    }
    for s in v.samples.iter().filter(|s| s.error.is_some()) {
        println!(
            "error: {} {} rep {}: {}",
            s.scenario,
            s.proxy,
            s.rep,
            s.error.as_deref().unwrap_or("")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_defaults_and_explicit_options() {
        let o = Options::from_cli(Cli::parse_from(["bench", "--quick"]));
        assert_eq!(
            (o.duration_s, o.reps, o.idle_conns, o.reloads, o.upgrades),
            (2, 1, 1000, 10, 5)
        );
        assert_eq!(o.pinning, PinningChoice::Pinned);
        assert_eq!(o.proxies, Kind::ALL.to_vec());
        let o = Options::from_cli(Cli::parse_from([
            "bench",
            "--quick",
            "--reps",
            "2",
            "--proxies",
            "lbd,haproxy-splice",
            "--scenarios",
            "1m,keepalive",
        ]));
        assert_eq!(o.reps, 2);
        assert_eq!(o.proxies, vec![Kind::Lbd, Kind::HaproxySplice]);
        assert!(!o.no_perf);
        assert!(Options::from_cli(Cli::parse_from(["bench", "--no-perf"])).no_perf);
        assert_eq!(o.scenarios, vec![Scenario::Keepalive, Scenario::OneMib]);
        let o = Options::from_cli(Cli::parse_from(["bench"]));
        assert_eq!(
            (o.duration_s, o.reps, o.idle_conns, o.reloads, o.upgrades),
            (10, 3, 10_000, 100, 20)
        );
        assert_eq!(o.pinning, PinningChoice::Both);
        assert_eq!(
            (o.udp_clients, o.udp_size, o.udp_timeout_ms),
            (50, 64, 1000)
        );
        assert!(o.udp());
        assert!(
            o.scenarios.contains(&Scenario::UdpRr) && o.scenarios.contains(&Scenario::UdpStream)
        );
    }

    #[test]
    fn udp_options() {
        let o = Options::from_cli(Cli::parse_from([
            "bench",
            "--scenarios",
            "udp-stream,udp-rr",
            "--udp-clients",
            "8",
            "--udp-size",
            "512",
            "--udp-timeout-ms",
            "200",
        ]));
        assert_eq!(o.scenarios, vec![Scenario::UdpRr, Scenario::UdpStream]);
        assert_eq!((o.udp_clients, o.udp_size, o.udp_timeout_ms), (8, 512, 200));
        // No UDP echo server or listeners when no UDP scenario runs, or
        // when no column carries UDP.
        assert!(!Options::from_cli(Cli::parse_from(["bench", "--scenarios", "keepalive"])).udp());
        assert!(!Options::from_cli(Cli::parse_from([
            "bench",
            "--scenarios",
            "udp-rr",
            "--proxies",
            "haproxy"
        ]))
        .udp());
        assert!(Cli::try_parse_from(["bench", "--udp-size", "8"]).is_err());
        assert!(Cli::try_parse_from(["bench", "--udp-clients", "0"]).is_err());
    }
}
