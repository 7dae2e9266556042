//! failover: how long lbd keeps routing connection attempts to a member
//! after it dies, with TCP health checks `interval = "1s"`, `fall = 2`,
//! and what clients see meanwhile. A measurement, not a test: it reports.
//!
//! Per repetition: three in-process members, a fresh lbd (`--workers 2
//! --log lbd=debug`), four clients (`--clients`) looping connect -> read a
//! line -> close for 10 s; at 3 s the victim dies (`refuse`: its port resets connects;
//! `blackhole`: SYNs are dropped). lbd's log gives every failed data-path
//! connect to the victim and its `is DOWN` line, timestamped.
//! `--connect-hedge DUR` sets the listener's `connect_hedge`. See
//! bench/README.md, "Failover: member death to last routed attempt".

// A binary's root resolves modules next to itself; these live in failover/.
#[path = "failover/backend.rs"]
mod backend;
#[path = "failover/lbd.rs"]
mod lbd;
#[path = "failover/load.rs"]
mod load;
#[path = "failover/logs.rs"]
mod logs;
#[path = "failover/report.rs"]
mod report;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context, Result};
use clap::{Parser, ValueEnum};
use serde::Serialize;

use backend::{Backend, Death};
use lbd::Lbd;
use load::Load;
use report::{Failure, Rep};

/// Length of the client load per repetition.
const RUN: Duration = Duration::from_secs(10);
/// When the victim dies, from the start of the load.
const KILL_AT: Duration = Duration::from_secs(3);
/// Limit for lbd's start and the victim's first passed check.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// Member tags; the last member is the victim.
const TAGS: [&str; 3] = ["m1", "m2", "m3"];
/// `member_connect` in blackhole mode (see [`lbd::config`]), in µs.
const MEMBER_CONNECT_US: i64 = 1_000_000;
/// A client attempt at least this slow counts as slow.
const SLOW_MS: f64 = 500.0;

#[derive(Parser, Debug)]
#[command(
    name = "failover",
    about = "lbd failover: member death to the last connection attempt routed to it (loopback only)"
)]
struct Cli {
    /// Repetitions per death mode
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// How the victim dies
    #[arg(long, value_enum, default_value_t = DeathChoice::Both)]
    death: DeathChoice,
    /// Use this lbd binary instead of building it (cargo build --release -p lbd)
    #[arg(long)]
    lbd: Option<PathBuf>,
    /// Client threads, each looping connect -> read a line -> close
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Pause of each client after each attempt, in ms (0: back to back)
    #[arg(long, default_value_t = 10)]
    pace_ms: u64,
    /// Where the JSON goes [default: bench/results]
    #[arg(long)]
    out: Option<PathBuf>,
    /// Keep each repetition's lbd.toml and lbd.log (the directory is printed)
    #[arg(long)]
    keep_logs: bool,
    /// Hedged connects: `connect_hedge` on the listener (e.g. 150ms; must be
    /// less than member_connect: 1s in blackhole mode, 5s in refuse mode)
    #[arg(long, value_name = "DUR")]
    connect_hedge: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DeathChoice {
    Refuse,
    Blackhole,
    Both,
}

impl DeathChoice {
    fn modes(self) -> Vec<Death> {
        match self {
            DeathChoice::Refuse => vec![Death::Refuse],
            DeathChoice::Blackhole => vec![Death::Blackhole],
            DeathChoice::Both => vec![Death::Refuse, Death::Blackhole],
        }
    }
}

/// Microseconds since the Unix epoch, the clock lbd stamps its log with.
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("failover: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// One death mode's repetitions, for the JSON.
#[derive(Serialize)]
struct ModeResult {
    death: Death,
    config_example: String,
    lbd_command_example: String,
    reps: Vec<Rep>,
    summary: report::Summary,
    table: String,
}

fn run(cli: Cli) -> Result<()> {
    let started_us = now_us();
    let scratch = std::env::temp_dir().join(format!("lbd-failover-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let bin = bench::setup::lbd_binary(cli.lbd.as_deref(), &scratch)?;
    let shape = load::Shape {
        clients: cli.clients.max(1),
        pace: Duration::from_millis(cli.pace_ms),
    };
    let mut modes = Vec::new();
    for death in cli.death.modes() {
        let mut reps = Vec::new();
        let (mut config_example, mut lbd_command_example) = (String::new(), String::new());
        for rep in 1..=cli.reps.max(1) {
            let dir = scratch.join(format!("{}-{rep}", report::death_name(death)));
            let hedge = cli.connect_hedge.as_deref();
            let (r, config, command) = run_rep(&bin, death, hedge, rep, &shape, &dir)
                .with_context(|| {
                    format!(
                        "{} rep {rep} (files kept in {})",
                        report::death_name(death),
                        dir.display()
                    )
                })?;
            eprintln!("failover: {}", report::progress_line(death, &r));
            (config_example, lbd_command_example) = (config, command);
            reps.push(r);
        }
        let summary = report::summarise(&reps);
        let table = report::table(&reps, &summary);
        println!("\n### death = {}\n\n{table}", report::death_name(death));
        println!("{}", report::failure_notes(&reps));
        modes.push(ModeResult {
            death,
            config_example,
            lbd_command_example,
            reps,
            summary,
            table,
        });
    }
    let out = cli
        .out
        .clone()
        .unwrap_or_else(|| bench::setup::workspace_root().join("bench").join("results"));
    let file = write_json(&out, started_us, &bin, &cli, &modes)?;
    println!("JSON: {}", file.display());
    if cli.keep_logs {
        println!("lbd configs and logs: {}", scratch.display());
    } else {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    Ok(())
}

/// One repetition; returns it with the config and lbd command it used.
fn run_rep(
    bin: &Path,
    death: Death,
    hedge: Option<&str>,
    rep: usize,
    shape: &load::Shape,
    dir: &Path,
) -> Result<(Rep, String, String)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut backends = TAGS
        .iter()
        .map(|t| Backend::start(t))
        .collect::<Result<Vec<_>>>()?;
    let bind = free_addr()?;
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let config = lbd::config(bind, &addrs, death, hedge);
    let config_path = dir.join("lbd.toml");
    std::fs::write(&config_path, &config).context("writing lbd.toml")?;
    let mut lbd = Lbd::start(bin, &config_path, &dir.join("lbd.log"))?;
    let mut ready = vec![" started: ".to_string()];
    ready.extend(
        addrs
            .iter()
            .map(|a| format!("member {}/{a} checked: up", lbd::POOL)),
    );
    lbd.wait_for_log(&ready, START_TIMEOUT)?;

    let t0 = Instant::now();
    let load = Load::start(bind, shape, t0 + RUN)?;
    std::thread::sleep(KILL_AT);
    let victim = backends.last_mut().ok_or_else(|| anyhow!("no backends"))?;
    let kill_us = now_us();
    let death_check = victim.kill(death)?;
    let attempts = load.finish()?;
    lbd.stop()?;
    let log = lbd.read_log()?;

    let victim = backends.last().ok_or_else(|| anyhow!("no backends"))?;
    let label = format!("{}/{}", lbd::POOL, victim.addr);
    let found = logs::analyse(&log, &label, kill_us);
    let r = measure(rep, victim, kill_us, death_check, &found, &attempts);
    Ok((r, config, lbd.command.clone()))
}

/// The figures of one repetition from the log findings and the attempts.
fn measure(
    rep: usize,
    victim: &Backend,
    kill_us: i64,
    death_check: String,
    found: &logs::Findings,
    attempts: &[load::Attempt],
) -> Rep {
    let ms = |us: i64| (us - kill_us) as f64 / 1000.0;
    let took_ms = |a: &load::Attempt| (a.end_us - a.start_us) as f64 / 1000.0;
    let logged = found.failed_connects.iter().map(|&(t, _)| t);
    let window_us = logged.clone().max().map_or(0, |t| t - kill_us);
    // A timed-out connect was routed member_connect before its log line.
    let routed = found
        .failed_connects
        .iter()
        .map(|&(t, timed_out)| t - if timed_out { MEMBER_CONNECT_US } else { 0 });
    let failed: Vec<&load::Attempt> = attempts.iter().filter(|a| a.outcome.is_err()).collect();
    let in_window = |a: &&&load::Attempt| (kill_us..=kill_us + window_us).contains(&a.start_us);
    let after: Vec<&load::Attempt> = attempts.iter().filter(|a| a.start_us >= kill_us).collect();
    Rep {
        rep,
        victim: victim.addr.to_string(),
        kill_utc: logs::format_utc(kill_us),
        death_check,
        window_ms: window_us as f64 / 1000.0,
        attempts_after_death: found.failed_connects.len(),
        first_attempt_ms: logged.min().map(ms),
        last_routed_ms: routed.max().map(ms),
        down_ms: found.down.as_ref().map(|(t, _)| ms(*t)),
        down_reason: found.down.as_ref().map(|(_, r)| r.clone()),
        client_attempts: attempts.len(),
        client_attempts_after_death: after.len(),
        slow_attempts_after_death: after.iter().filter(|a| took_ms(a) >= SLOW_MS).count(),
        slowest_attempt_after_death_ms: after.iter().map(|a| took_ms(a)).fold(0.0, f64::max),
        client_failures_run: failed.len(),
        client_failures_window: failed.iter().filter(in_window).count(),
        client_failures_after_death: after.iter().filter(|a| a.outcome.is_err()).count(),
        victim_accepts_after_death: victim.accepted_since(kill_us),
        victim_replies_after_death: after
            .iter()
            .filter(|a| a.outcome.as_deref() == Ok(victim.tag.as_str()))
            .count(),
        victim_connect_failures_before_death: found.failed_before_kill,
        other_members_connect_failures: found.failed_elsewhere,
        failures: failed
            .iter()
            .map(|a| Failure {
                start_ms: ms(a.start_us),
                took_ms: took_ms(a),
                error: a.outcome.clone().err().unwrap_or_default(),
            })
            .collect(),
        victim_log: found.excerpt.clone(),
    }
}

/// A free 127.0.0.1 port (bound and released; lbd binds it right after).
fn free_addr() -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    l.local_addr().context("local_addr")
}

/// The whole run as JSON: `<out>/failover-<unix time>.json`.
fn write_json(
    out: &Path,
    started_us: i64,
    bin: &Path,
    cli: &Cli,
    modes: &[ModeResult],
) -> Result<PathBuf> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let file = out.join(format!("failover-{}.json", started_us / 1_000_000));
    let doc = serde_json::json!({
        "tool": "lbd failover (cargo run --release -p bench --bin failover)",
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "machine": {
            "started_utc": logs::format_utc(started_us),
            "commit": bench::setup::git_commit(),
            "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
            "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "lbd": report::command_line_output(bin, &["--version"]),
            "lbd_binary": bin.display().to_string(),
        },
        "options": {
            "reps": cli.reps.max(1),
            "death": modes.iter().map(|m| m.death).collect::<Vec<_>>(),
            "clients": cli.clients.max(1),
            "pace_ms": cli.pace_ms,
            "connect_hedge": cli.connect_hedge,
            "run_s": RUN.as_secs(),
            "kill_at_s": KILL_AT.as_secs(),
            "client_io_timeout_s": load::IO_TIMEOUT.as_secs(),
        },
        "modes": modes,
        "elapsed_s": (now_us() - started_us) / 1_000_000,
    });
    let json = serde_json::to_string_pretty(&doc)?;
    std::fs::write(&file, json + "\n").with_context(|| format!("writing {}", file.display()))?;
    Ok(file)
}
