//! xdp: lbd's XDP fast path against lbd's userspace proxy, HAProxy and
//! direct routing, in one run, in a network-namespace topology
//! (`lbd_test_support::netlab`: client ns -> lb ns -> 3 member ns, nginx in
//! each member ns). Measures new connections/s (`Connection: close`), keep-alive
//! requests/s and the CPU spent per request, machine-wide and per process.
//! See bench/README.md, "XDP fast path".

// A binary's root resolves modules next to itself; these live in xdp/.
#[path = "xdp/measure.rs"]
mod measure;
#[path = "xdp/nstat.rs"]
mod nstat;
#[path = "xdp/paths.rs"]
mod paths;
#[path = "xdp/report.rs"]
mod report;
#[path = "xdp/topo.rs"]
mod topo;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use serde::Serialize;

use bench::procs::{self, WorkDir};
use bench::{setup, wrk};
use lbd_test_support::netlab::http_get;
use measure::{Sample, Scenario, Settings};
use paths::{PathKind, Running, StartError};
use topo::{Built, Topo};

#[derive(Parser, Debug)]
#[command(
    name = "xdp",
    about = "lbd's XDP fast path vs its userspace proxy, HAProxy and direct routing, in network namespaces (needs root)"
)]
struct Cli {
    /// Repetitions of every run (medians and min-max are reported) [default: 3; --quick: 1]
    #[arg(long)]
    reps: Option<u32>,
    /// Length of each measured wrk run, e.g. 10s, 1m [default: 10s; --quick: 3s]
    #[arg(long, value_parser = bench::cli::parse_duration)]
    duration: Option<Duration>,
    /// wrk connections (-c) [default: 50]
    #[arg(long)]
    connections: Option<u32>,
    /// Paths to measure (comma list) [default: all]
    #[arg(long, value_enum, value_delimiter = ',')]
    paths: Vec<PathKind>,
    /// Smoke run of about a minute: 3 s runs, 1 repetition (explicit options still win)
    #[arg(long)]
    quick: bool,
    /// Set net.ipv4.tcp_max_tw_buckets in every member namespace (0: members keep no TIME_WAIT sockets) [default: the kernel's]
    #[arg(long)]
    member_tw_buckets: Option<u32>,
    /// Where the JSON goes [default: bench/results]
    #[arg(long)]
    out: Option<PathBuf>,
    /// Use this lbd binary instead of building it (cargo build --release -p lbd)
    #[arg(long)]
    lbd: Option<PathBuf>,
}

/// The options in force.
#[derive(Debug, Clone, Serialize)]
struct Options {
    quick: bool,
    reps: u32,
    duration_s: u64,
    connections: u32,
    member_tw_buckets: Option<u32>,
    paths: Vec<PathKind>,
    scenarios: Vec<Scenario>,
    out: PathBuf,
    lbd: Option<PathBuf>,
}

impl Options {
    fn from_cli(cli: Cli) -> Options {
        let q = cli.quick;
        let paths = bench::cli::selection(cli.paths, &PathKind::ALL);
        Options {
            quick: q,
            reps: cli.reps.unwrap_or(if q { 1 } else { 3 }).clamp(1, 50),
            duration_s: cli
                .duration
                .unwrap_or(Duration::from_secs(if q { 3 } else { 10 }))
                .as_secs(),
            connections: cli.connections.unwrap_or(50).clamp(1, 10_000),
            member_tw_buckets: cli.member_tw_buckets,
            paths,
            scenarios: Scenario::ALL.to_vec(),
            out: cli.out.unwrap_or_else(bench::cli::default_results_dir),
            lbd: cli.lbd,
        }
    }

    /// A rough estimate of the run time, in seconds (measured: 14 s for
    /// `--quick --paths xdp`): per path and repetition a start (lbd waits
    /// for its health checks), and per scenario the run, 1.2 s for lbd's
    /// counters and 0.5 s or more for the quiet check; a preflight per
    /// path; plus up to `QUIET_BUDGET` in all when the machine is busy.
    fn estimate_s(&self) -> u64 {
        let per_path = 2 + self.scenarios.len() as u64 * (self.duration_s + 2);
        u64::from(self.reps) * self.paths.len() as u64 * per_path + 3 * self.paths.len() as u64 + 5
    }
}

/// Most the whole run waits for other load on the machine to calm down
/// before runs (at most 5 s per run).
const QUIET_BUDGET: Duration = Duration::from_secs(45);

enum Outcome {
    Done,
    Skipped(String),
}

fn main() -> ExitCode {
    if let Err(e) = procs::install_signal_handler() {
        eprintln!("xdp: error: {e:#}");
        return ExitCode::FAILURE;
    }
    procs::become_subreaper();
    let opts = Options::from_cli(Cli::parse());
    match run(&opts) {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        Ok(Outcome::Skipped(why)) => {
            eprintln!("xdp: skipping the XDP bench: {why}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("xdp: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(opts: &Options) -> Result<Outcome> {
    let started = Instant::now();
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Ok(Outcome::Skipped(format!(
            "not root (euid {euid}): network namespaces and XDP programs need root"
        )));
    }
    setup::ensure_packages()?;
    let fd = setup::raise_fd_limit(250_000)?;
    let work = WorkDir::create()?;
    let result = run_in(opts, &work, fd, started);
    if result.is_err() {
        work.keep();
    }
    result
}

/// Everything the JSON records about the set-up.
#[derive(Serialize, Default)]
struct Topology {
    description: &'static str,
    vip: String,
    members: Vec<String>,
    direct_target: String,
    lb_interfaces: Vec<String>,
    backend_config: String,
    backend_commands: Vec<String>,
    configs: BTreeMap<String, String>,
    commands: BTreeMap<String, String>,
    /// The first lines lbd / HAProxy logged at their first start.
    log_heads: BTreeMap<String, String>,
    lbd_runtime: Option<String>,
    /// lbd's attach line, e.g. `xdp: attached to lb-c (native), ...`.
    xdp_attached: Option<String>,
    preflight: Vec<String>,
}

#[derive(Serialize)]
struct Report<'a> {
    tool: &'static str,
    kind: &'static str,
    command: String,
    machine: &'a setup::Machine,
    options: &'a Options,
    topology: &'a Topology,
    samples: &'a [Sample],
    errors: &'a [String],
    summary: report::Summary,
    table: String,
    targets: Vec<report::TargetResult>,
    elapsed_s: f64,
}

const TOPOLOGY: &str = "netns lab (lbd_test_support::netlab): client ns 10.199.0.2 <-veth-> lb ns \
    10.199.0.1 | 10.199.<i+1>.1 <-veth-> member ns i 10.199.<i+1>.2, 3 members, ip_forward on \
    in the lb ns; VIP 10.199.200.1 on the lb's lo; TX checksum offload off on the client and \
    member veths; XDP_PASS programs (native) on the client and member veths; \
    net.ipv4.tcp_tw_reuse = 1 in the client ns; nginx (1 worker) \
    on 10.199.<i+1>.2:8080 in each member ns; wrk in the client ns; lbd / HAProxy in the lb ns; \
    nothing pinned";

fn run_in(opts: &Options, work: &WorkDir, fd: setup::FdLimit, started: Instant) -> Result<Outcome> {
    let lbd_bin = if opts.paths.iter().any(|p| p.is_lbd()) {
        setup::lbd_binary(opts.lbd.as_deref(), &work.logs())?
    } else {
        PathBuf::from("lbd")
    };
    let machine = setup::machine(&lbd_bin, fd);
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("cannot create {}", opts.out.display()))?;
    let variant = match opts.member_tw_buckets {
        Some(n) => format!("-tw{n}"),
        None => String::new(),
    };
    let out_file = out_file(&opts.out, &format!("{}{variant}", machine.date), opts.quick);
    let script = work.path().join("bench.lua");
    std::fs::write(&script, wrk::SCRIPT)?;

    let mut topo = match Topo::build(work.path(), &work.logs(), opts.member_tw_buckets)? {
        Built::Ready(t) => t,
        Built::Skip(why) => return Ok(Outcome::Skipped(why)),
    };
    eprintln!(
        "xdp: {} | {} | {} core(s) | kernel {} | commit {}",
        machine.date, machine.cpu_model, machine.cores, machine.kernel, machine.commit
    );
    eprintln!(
        "xdp: paths {}; {} s runs, {} rep(s), wrk -t1 -c{}; about {} s",
        opts.paths
            .iter()
            .map(|p| p.name())
            .collect::<Vec<_>>()
            .join(","),
        opts.duration_s,
        opts.reps,
        opts.connections,
        opts.estimate_s()
    );
    let mut info = Topology {
        description: TOPOLOGY,
        vip: topo.vip().to_string(),
        members: (0..topo::MEMBERS)
            .map(|i| topo.member(i).to_string())
            .collect(),
        direct_target: topo.member(0).to_string(),
        lb_interfaces: topo.lb_interfaces(),
        backend_config: topo.backend_config.clone(),
        backend_commands: topo.backend_commands.clone(),
        ..Default::default()
    };
    let dir = work.path();
    let logs = work.logs();
    let settings = Settings {
        duration: Duration::from_secs(opts.duration_s),
        connections: opts.connections,
        script: &script,
        logs: &logs,
        quiet_budget: std::cell::Cell::new(QUIET_BUDGET),
    };
    let mut samples: Vec<Sample> = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    let n = opts.paths.len();
    for rep in 1..=opts.reps {
        // Rotate the order each repetition: drift over the run (other load
        // on the machine) does not always hit the same path. The first
        // repetition starts with xdp (when it runs), which may skip all.
        let order: Vec<PathKind> = (0..n).map(|i| opts.paths[(i + rep as usize) % n]).collect();
        for kind in order {
            let first = !info.preflight.iter().any(|p| p.starts_with(kind.name()));
            let mut r = match Running::start(kind, &topo, dir, &logs, &lbd_bin) {
                Ok(r) => r,
                Err(StartError::XdpUnavailable(line)) if first => {
                    return Ok(Outcome::Skipped(format!(
                        "lbd could not attach the XDP fast path: {line}"
                    )))
                }
                Err(StartError::XdpUnavailable(e)) => {
                    errors.push(format!(
                        "rep {rep} {}: XDP did not attach: {e}",
                        kind.name()
                    ));
                    continue;
                }
                Err(StartError::Other(e)) if first => {
                    return Err(e.context(format!("starting the {} path", kind.name())))
                }
                Err(StartError::Other(e)) => {
                    errors.push(format!("rep {rep} {}: start: {e:#}", kind.name()));
                    eprintln!("xdp: rep {rep} {}: cannot start: {e:#}", kind.name());
                    continue;
                }
            };
            if first {
                // Every path answers, and lbd's counters show which path
                // took the connections; the set-up goes into the JSON.
                let line = preflight(&mut r, &topo).with_context(|| {
                    format!("preflight of the {} path\n{}", kind.name(), r.log_tail())
                })?;
                eprintln!("xdp: preflight {}: {line}", kind.name());
                info.preflight.push(format!("{}: {line}", kind.name()));
                if let Some(c) = &r.config {
                    info.configs.insert(kind.name().into(), c.clone());
                }
                if let Some(c) = &r.command {
                    info.commands.insert(kind.name().into(), c.clone());
                    info.log_heads.insert(kind.name().into(), r.log_head(30));
                }
                if kind.is_lbd() {
                    info.lbd_runtime = r.runtime.clone();
                }
                if let Some(line) = &r.xdp_attached {
                    info.xdp_attached = Some(line.clone());
                    eprintln!("xdp: lbd: {line}");
                }
            }
            for &sc in &opts.scenarios {
                match measure::run(sc, rep, &mut r, &mut topo, &settings) {
                    Ok(s) => {
                        eprintln!("xdp: {}", progress(&s, opts.reps));
                        samples.push(s);
                    }
                    Err(e) => {
                        let msg = format!("rep {rep} {} {}: {e:#}", kind.name(), sc.name());
                        eprintln!("xdp: error: {msg}");
                        errors.push(msg);
                    }
                }
            }
            r.stop();
        }
        write_report(&out_file, opts, &machine, &info, &samples, &errors, started)?;
    }
    if !errors.is_empty() {
        work.keep();
    }
    let (table, targets) =
        write_report(&out_file, opts, &machine, &info, &samples, &errors, started)?;
    println!(
        "\nXDP fast path bench — {} {} | {} x {} | kernel {} | commit {} | lbd runtime {} | {}\n",
        machine.date,
        machine.started_utc,
        machine.cores,
        machine.cpu_model,
        machine.kernel,
        machine.commit,
        info.lbd_runtime.as_deref().unwrap_or("-"),
        info.xdp_attached.as_deref().unwrap_or("xdp not run"),
    );
    println!("{table}");
    println!("{}", report::targets_text(&targets));
    let unverified: Vec<String> = samples
        .iter()
        .filter_map(|s| {
            let c = s.path_check.as_ref()?;
            (!c.ok).then(|| {
                format!(
                    "rep {} {} {}: {}",
                    s.rep,
                    s.path.name(),
                    s.scenario.name(),
                    c.detail
                )
            })
        })
        .collect();
    if unverified.is_empty() {
        println!("path check: every lbd run was carried by the intended path (lbd's counters)");
    } else {
        println!("path check FAILED for:\n  {}", unverified.join("\n  "));
    }
    if let Some(n) = summary_median(&samples, "close.client_syn_retrans_per_k", PathKind::Xdp) {
        if n >= 10.0 {
            println!(
                "note: on the xdp path the client retransmitted {n:.0} SYNs per 1000 connections \
                 (members' PAWS rejects in TIME_WAIT: {:.0} per 1000): new flows' SNAT ports \
                 land on members' TIME_WAIT sockets of earlier flows; see bench/README.md",
                summary_median(&samples, "close.members_paws_tw_per_k", PathKind::Xdp)
                    .unwrap_or(f64::NAN)
            );
        }
    }
    for e in &errors {
        println!("error: {e}");
    }
    println!(
        "JSON: {}\ntotal time: {:.0} s",
        out_file.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(Outcome::Done)
}

/// The median of `key` over the path's samples.
fn summary_median(samples: &[Sample], key: &str, path: PathKind) -> Option<f64> {
    let v: Vec<f64> = samples
        .iter()
        .filter(|s| s.path == path)
        .filter_map(|s| s.metrics.get(key).copied())
        .collect();
    bench::report::stats(&v).map(|s| s.median)
}

/// 20 GETs through the path; for lbd, which path its counters say took
/// them.
fn preflight(r: &mut Running, topo: &Topo) -> Result<String> {
    const GETS: u64 = 20;
    let before = r.counters(topo)?;
    for _ in 0..GETS {
        http_get(
            topo.lab.client(),
            r.target,
            topo::PATH,
            Duration::from_secs(5),
        )
        .map_err(anyhow::Error::msg)?;
    }
    let after = r.counters(topo)?;
    Ok(match (after, before) {
        (Some(a), Some(b)) => {
            let c = a.since(&b);
            let check = measure::check_path(r.kind, GETS, &c);
            format!(
                "{GETS} GETs via {}: {} ({})",
                r.target,
                if check.ok { "OK" } else { "WRONG PATH" },
                check.detail
            )
        }
        _ => format!("{GETS} GETs via {}: OK", r.target),
    })
}

fn progress(s: &Sample, reps: u32) -> String {
    let m = |k: &str| {
        s.metrics
            .get(&format!("{}.{k}", s.scenario.name()))
            .copied()
            .unwrap_or(f64::NAN)
    };
    let unit = match s.scenario {
        Scenario::Close => "conn/s",
        Scenario::Keepalive => "req/s",
    };
    let mut line = format!(
        "rep {}/{reps} {:<9} {:<9} {:>8.0} {unit}, p99 {:.0} µs, failed {:.0}, lab CPU {:.1} µs/req \
         (proxy {:.1}, wrk {:.1}, nginx {:.1}, kthreads {:.1}; softirq {:.1}), other load {:.0}% \
         (quiet wait {:.1} s)",
        s.rep,
        s.path.name(),
        s.scenario.name(),
        m("rate"),
        m("p99_us"),
        m("failed"),
        m("lab_cpu_us"),
        s.metrics
            .get(&format!("{}.proxy_cpu_us", s.scenario.name()))
            .copied()
            .unwrap_or(0.0),
        m("client_cpu_us"),
        m("backend_cpu_us"),
        m("kthreads_cpu_us"),
        m("softirq_cpu_us"),
        m("other_pct"),
        s.cpu.quiet_wait_s,
    );
    if !s.proxy_threads_s.is_empty() {
        let mut t: Vec<(&String, &f64)> = s.proxy_threads_s.iter().collect();
        t.sort_by(|a, b| b.1.total_cmp(a.1));
        let top: Vec<String> = t
            .iter()
            .take(3)
            .map(|(n, v)| format!("{n} {v:.2} s"))
            .collect();
        line.push_str(&format!(" | threads: {}", top.join(", ")));
    }
    if let Some(c) = &s.path_check {
        line.push_str(&format!(
            " | {} {}",
            if c.ok { "path OK:" } else { "PATH WRONG:" },
            c.detail
        ));
    }
    line
}

/// `<out>/xdp-<date>[-quick].json`, or with `-2`, `-3`... when that exists.
fn out_file(out: &Path, date: &str, quick: bool) -> PathBuf {
    let base = format!("xdp-{date}{}", if quick { "-quick" } else { "" });
    let first = out.join(format!("{base}.json"));
    if !first.exists() {
        return first;
    }
    (2..1000)
        .map(|i| out.join(format!("{base}-{i}.json")))
        .find(|p| !p.exists())
        .unwrap_or(first)
}

fn write_report(
    file: &Path,
    opts: &Options,
    machine: &setup::Machine,
    info: &Topology,
    samples: &[Sample],
    errors: &[String],
    started: Instant,
) -> Result<(String, Vec<report::TargetResult>)> {
    let summary = report::summarize(samples);
    let table = report::markdown_table(&summary, &opts.paths);
    let targets = report::targets(&summary);
    let doc = Report {
        tool: "lbd bench xdp (cargo run --release -p bench --bin xdp)",
        kind: if opts.quick {
            "quick smoke run"
        } else {
            "full run"
        },
        command: std::env::args().collect::<Vec<_>>().join(" "),
        machine,
        options: opts,
        topology: info,
        samples,
        errors,
        summary: summary.clone(),
        table: table.clone(),
        targets: targets.clone(),
        elapsed_s: started.elapsed().as_secs_f64(),
    };
    let json = serde_json::to_string_pretty(&doc)?;
    std::fs::write(file, json + "\n")
        .with_context(|| format!("cannot write {}", file.display()))?;
    Ok((table, targets))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options() {
        let o = Options::from_cli(Cli::parse_from(["xdp"]));
        assert_eq!((o.reps, o.duration_s, o.connections), (3, 10, 50));
        assert_eq!(o.paths, PathKind::ALL.to_vec());
        assert!(
            o.estimate_s() + QUIET_BUDGET.as_secs() < 600,
            "{}",
            o.estimate_s()
        );
        let q = Options::from_cli(Cli::parse_from(["xdp", "--quick"]));
        assert_eq!((q.reps, q.duration_s), (1, 3));
        assert!(q.estimate_s() <= 70, "{}", q.estimate_s());
        let x = Options::from_cli(Cli::parse_from([
            "xdp",
            "--quick",
            "--reps",
            "2",
            "--paths",
            "xdp,direct,xdp",
        ]));
        assert_eq!(x.reps, 2);
        assert_eq!(x.paths, vec![PathKind::Direct, PathKind::Xdp]);
        assert!(bench::cli::parse_duration("0s").is_err());
        assert_eq!(
            bench::cli::parse_duration("1m"),
            Ok(Duration::from_secs(60))
        );
    }
}
