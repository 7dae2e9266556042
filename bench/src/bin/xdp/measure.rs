//! One measured run: wrk in the client namespace against a path, with the
//! CPU the whole machine spent meanwhile (`/proc/stat`), split into what
//! the processes involved were charged (lbd or HAProxy, wrk, nginx) and the
//! rest, and lbd's counters (which path carried the connections).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::ValueEnum;
use serde::Serialize;

use bench::procs::{self, Guard, Pin};
use bench::wrk;

use crate::nstat;
use crate::paths::{LbdCounters, PathKind, ProgStats, Running};
use crate::topo::{in_ns, Topo, PATH};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// `Connection: close`: one new TCP connection per request.
    Close,
    /// Keep-alive: the same connections all along.
    Keepalive,
}

impl Scenario {
    pub const ALL: [Scenario; 2] = [Scenario::Close, Scenario::Keepalive];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Close => "close",
            Scenario::Keepalive => "keepalive",
        }
    }
}

/// Machine-wide CPU time, the `cpu` line of `/proc/stat`, in ticks
/// (`USER_HZ`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CpuTimes {
    pub user: u64,
    pub nice: u64,
    pub system: u64,
    pub idle: u64,
    pub iowait: u64,
    pub irq: u64,
    pub softirq: u64,
    pub steal: u64,
}

impl CpuTimes {
    /// Time the CPUs spent working for this machine (not idle, not waiting
    /// for I/O, not taken by the hypervisor).
    pub fn busy(&self) -> u64 {
        self.user + self.nice + self.system + self.irq + self.softirq
    }

    pub fn total(&self) -> u64 {
        self.busy() + self.idle + self.iowait + self.steal
    }

    pub fn since(&self, b: &CpuTimes) -> CpuTimes {
        CpuTimes {
            user: self.user.saturating_sub(b.user),
            nice: self.nice.saturating_sub(b.nice),
            system: self.system.saturating_sub(b.system),
            idle: self.idle.saturating_sub(b.idle),
            iowait: self.iowait.saturating_sub(b.iowait),
            irq: self.irq.saturating_sub(b.irq),
            softirq: self.softirq.saturating_sub(b.softirq),
            steal: self.steal.saturating_sub(b.steal),
        }
    }
}

/// Parses the aggregate `cpu ` line of `/proc/stat`.
pub fn parse_proc_stat(text: &str) -> Result<CpuTimes> {
    let line = text
        .lines()
        .find(|l| l.starts_with("cpu "))
        .context("no `cpu ` line in /proc/stat")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse::<u64>())
        .collect::<std::result::Result<_, _>>()
        .with_context(|| format!("bad /proc/stat line {line:?}"))?;
    if v.len() < 8 {
        anyhow::bail!("short /proc/stat line {line:?}");
    }
    Ok(CpuTimes {
        user: v[0],
        nice: v[1],
        system: v[2],
        idle: v[3],
        iowait: v[4],
        irq: v[5],
        softirq: v[6],
        steal: v[7],
    })
}

/// CPU seconds (user + system) of this process's terminated and reaped
/// children: wrk's, once it has been waited for.
fn children_cpu_seconds() -> f64 {
    // SAFETY: getrusage with a pointer to a local struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) } != 0 {
        return f64::NAN;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Keeps the kernel's BPF run-time statistics (each program's run count
/// and time) on while held: `BPF_ENABLE_STATS`, off again when the fd
/// closes (also if this tool dies). Held only during XDP-path runs (it
/// adds two clock reads per program run, on every BPF program).
pub struct BpfStats(#[allow(dead_code)] std::os::fd::OwnedFd);

pub fn enable_bpf_stats() -> std::io::Result<BpfStats> {
    use std::os::fd::FromRawFd;
    const BPF_ENABLE_STATS: libc::c_long = 32;
    // union bpf_attr: enable_stats.type = BPF_STATS_RUN_TIME (0); the rest
    // must be zero.
    let mut attr = [0u8; 64];
    // SAFETY: bpf(2) with a zeroed attribute buffer of the given size.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_ENABLE_STATS,
            attr.as_mut_ptr(),
            attr.len() as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new descriptor the kernel just returned, owned by nobody else.
    Ok(BpfStats(unsafe {
        std::os::fd::OwnedFd::from_raw_fd(fd as libc::c_int)
    }))
}

/// CPU ticks of every kernel thread (ksoftirqd: softirq work deferred
/// from the tasks that raised it, kworkers, ...), by pid.
fn kthread_ticks() -> Result<BTreeMap<u32, u64>> {
    Ok(procs::all_stats()?
        .into_iter()
        .filter(|(_, s)| s.is_kernel_thread())
        .map(|(pid, s)| (pid as u32, s.ticks()))
        .collect())
}

/// CPU seconds kernel threads used between two [`kthread_ticks`]: per pid
/// (kworkers come and go; one that exited took its last ticks with it).
fn kthreads_seconds(after: &BTreeMap<u32, u64>, before: &BTreeMap<u32, u64>) -> f64 {
    let ticks: u64 = after
        .iter()
        .map(|(pid, &t)| t.saturating_sub(before.get(pid).copied().unwrap_or(0)))
        .sum();
    ticks as f64 / procs::clk_tck() as f64
}

/// CPU ticks of the threads of a process group, by thread name (`comm`:
/// lbd names its threads `lbd-worker-0`, `lbd-xdp`, `lbd-health`, ...).
fn thread_ticks(pgid: i32) -> Result<BTreeMap<String, u64>> {
    let mut by_name = BTreeMap::new();
    for pid in procs::group_pids(pgid)? {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let Ok(text) = std::fs::read_to_string(t.path().join("stat")) else {
                continue;
            };
            if let Ok(stat) = bench::procfs::parse_stat(&text) {
                *by_name.entry(stat.comm.clone()).or_insert(0) += stat.ticks();
            }
        }
    }
    Ok(by_name)
}

struct Snap {
    threads: BTreeMap<String, u64>,
    at: Instant,
    machine: CpuTimes,
    proxy: Option<f64>,
    backends: f64,
    children: f64,
    kthreads: BTreeMap<u32, u64>,
}

fn snap(proxy: Option<i32>, backends: &[i32]) -> Result<Snap> {
    let text = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let mut b = 0.0;
    for &pgid in backends {
        b += procs::group_cpu_seconds(pgid)?;
    }
    Ok(Snap {
        threads: proxy.map(thread_ticks).transpose()?.unwrap_or_default(),
        at: Instant::now(),
        machine: parse_proc_stat(&text)?,
        proxy: proxy.map(procs::group_cpu_seconds).transpose()?,
        backends: b,
        children: children_cpu_seconds(),
        kthreads: kthread_ticks()?,
    })
}

/// Machine busy share (0..1 of all CPUs) over `window`.
fn busy_share(window: Duration) -> Result<f64> {
    let read = || -> Result<CpuTimes> {
        parse_proc_stat(&std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?)
    };
    let a = read()?;
    std::thread::sleep(window);
    let d = read()?.since(&a);
    Ok(d.busy() as f64 / d.total().max(1) as f64)
}

/// Before a run: waits (at most `max`, in 0.5 s steps) until the machine
/// is quiet, i.e. less than `QUIET` of it busy while nothing of the bench
/// runs (other users' builds make the numbers noisy). Returns the waited
/// time and the last busy share seen.
fn wait_quiet(max: Duration) -> Result<(f64, f64)> {
    const QUIET: f64 = 0.15;
    let t0 = Instant::now();
    loop {
        let share = busy_share(Duration::from_millis(500))?;
        if share < QUIET || t0.elapsed() >= max {
            return Ok((t0.elapsed().as_secs_f64(), share));
        }
    }
}

/// Where the CPU went during one run, in seconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Cpu {
    pub wall_s: f64,
    /// The `/proc/stat` delta, in ticks.
    pub proc_stat: CpuTimes,
    /// user + nice + system + irq + softirq of `/proc/stat`, in seconds.
    /// Sampled at timer ticks (this kernel has no IRQ time accounting),
    /// while idle time is measured precisely (NOHZ): with many short bursts
    /// of work this undercounts (seen: 5.4 s against 7.1 s of the
    /// processes' own, precise, times).
    pub machine_busy_s: f64,
    /// CPUs x wall time - idle - iowait - steal: busy time from the
    /// precise idle time. The machine CPU used below.
    pub machine_busy_from_idle_s: f64,
    /// Softirq and steal time of `/proc/stat` (tick-sampled).
    pub softirq_s: f64,
    pub steal_s: f64,
    /// `machine_busy_from_idle / (wall x CPUs)`.
    pub machine_busy_share: f64,
    /// lbd's or HAProxy's process group (None for direct).
    pub proxy_s: Option<f64>,
    /// wrk (RUSAGE_CHILDREN around its run).
    pub client_s: f64,
    /// The three nginx (master + worker each).
    pub backends_s: f64,
    /// Kernel threads (ksoftirqd, kworkers, ...).
    pub kthreads_s: f64,
    /// proxy + client + backends + kernel threads: what the lab used.
    pub lab_s: f64,
    /// machine busy (from idle) - lab: other processes on the machine (and
    /// this tool, and softirq that interrupted them or an idle CPU).
    pub other_s: f64,
    /// Waited for the machine to be quiet before the run, and the busy
    /// share (0..1) seen last then.
    pub quiet_wait_s: f64,
    pub busy_before_share: f64,
}

/// One run, as measured.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub scenario: Scenario,
    pub path: PathKind,
    pub rep: u32,
    pub metrics: BTreeMap<String, f64>,
    pub wrk: wrk::Outcome,
    pub cpu: Cpu,
    /// CPU seconds of lbd's / HAProxy's threads during the run, by name.
    pub proxy_threads_s: BTreeMap<String, f64>,
    /// lbd's XDP program (all its interfaces): runs and their time during
    /// the run, from the kernel's BPF stats (XDP path).
    pub xdp_prog: Option<ProgStats>,
    /// lbd's counter deltas over the run (lbd paths).
    pub lbd: Option<LbdCounters>,
    /// Counters that moved in the namespaces during the run (`client`,
    /// `lb`, `members` summed).
    pub tcp: BTreeMap<String, nstat::Counters>,
    /// lbd's `/stats.json` `xdp` object after the run (XDP path).
    pub lbd_xdp_after: Option<serde_json::Value>,
    /// Whether lbd's counters show the intended path carried the
    /// connections (lbd paths), and why.
    pub path_check: Option<PathCheck>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PathCheck {
    pub ok: bool,
    pub detail: String,
}

/// What every run shares.
pub struct Settings<'a> {
    pub duration: Duration,
    pub connections: u32,
    pub script: &'a Path,
    pub logs: &'a Path,
    /// What is left of the whole run's budget for [`wait_quiet`].
    pub quiet_budget: std::cell::Cell<Duration>,
}

/// Most one run waits for a quiet machine.
const QUIET_MAX: Duration = Duration::from_secs(5);

/// Runs `scenario` against the running path.
pub fn run(
    scenario: Scenario,
    rep: u32,
    running: &mut Running,
    topo: &mut Topo,
    s: &Settings,
) -> Result<Sample> {
    topo.check_backends()?;
    running.check_alive()?;
    // The counters read after the previous run (only health checks since).
    let lbd_before = running.counters_since_last(topo)?;
    let url = format!("http://{}{PATH}", running.target);
    let w = wrk::Run {
        url: &url,
        connections: s.connections,
        duration: s.duration,
        close: scenario == Scenario::Close,
    };
    let argv = in_ns(topo.lab.client(), &w.argv(s.script));
    let backends = topo.backend_pgids();
    // The XDP program's own run time (kernel BPF stats), XDP path only.
    let bpf_stats = match running.xdp_prog_id {
        Some(_) => match enable_bpf_stats() {
            Ok(g) => Some(g),
            Err(e) => {
                eprintln!("xdp: cannot enable BPF run-time stats: {e}");
                None
            }
        },
        None => None,
    };
    let budget = s.quiet_budget.get();
    let (quiet_wait_s, busy_before_share) = wait_quiet(budget.min(QUIET_MAX))?;
    s.quiet_budget
        .set(budget.saturating_sub(Duration::from_secs_f64(quiet_wait_s)));
    let tcp_before = tcp_counters(topo)?;
    let prog_before = bpf_stats.as_ref().and(running.xdp_prog_stats());
    let before = snap(running.pgid(), &backends)?;
    let guard = Guard::spawn("wrk", &argv, Pin::Any, s.logs)?;
    let outcome = wrk::finish(guard, s.duration)?;
    let after = snap(running.pgid(), &backends)?;
    let prog_after = bpf_stats.as_ref().and(running.xdp_prog_stats());
    drop(bpf_stats);
    let tcp_after = tcp_counters(topo)?;
    let tcp: BTreeMap<String, nstat::Counters> = tcp_after
        .iter()
        .map(|(ns, a)| {
            let b = tcp_before.get(ns).cloned().unwrap_or_default();
            (ns.clone(), nstat::delta(a, &b))
        })
        .collect();
    running.check_alive()?;
    let time_wait = topo.client_time_wait()?;
    let lbd_after = running.counters(topo)?;
    let lbd_xdp_after = running
        .last_xdp_json
        .clone()
        .filter(|_| lbd_after.is_some());

    let tck = procs::clk_tck() as f64;
    let d = after.machine.since(&before.machine);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let wall_s = after.at.duration_since(before.at).as_secs_f64();
    let proxy_s = match (after.proxy, before.proxy) {
        (Some(a), Some(b)) => Some(a - b),
        _ => None,
    };
    let client_s = after.children - before.children;
    let backends_s = after.backends - before.backends;
    let busy_s = d.busy() as f64 / tck;
    let busy_from_idle_s = wall_s * cores - (d.idle + d.iowait + d.steal) as f64 / tck;
    let kthreads_s = kthreads_seconds(&after.kthreads, &before.kthreads);
    let lab_s = proxy_s.unwrap_or(0.0) + client_s + backends_s + kthreads_s;
    let cpu = Cpu {
        wall_s,
        proc_stat: d,
        machine_busy_s: busy_s,
        machine_busy_from_idle_s: busy_from_idle_s,
        softirq_s: d.softirq as f64 / tck,
        steal_s: d.steal as f64 / tck,
        machine_busy_share: busy_from_idle_s / (wall_s * cores),
        proxy_s,
        client_s,
        backends_s,
        kthreads_s,
        lab_s,
        other_s: busy_from_idle_s - lab_s,
        quiet_wait_s,
        busy_before_share,
    };
    let sum = &outcome.summary;
    let requests = sum.requests as f64;
    let per_req = |sec: f64| {
        if sum.requests == 0 {
            f64::NAN
        } else {
            sec * 1e6 / requests
        }
    };
    let sc = scenario.name();
    let mut m = BTreeMap::new();
    let mut put = |k: &str, v: f64| {
        m.insert(format!("{sc}.{k}"), v);
    };
    put("rate", sum.requests_per_s());
    put("p50_us", sum.latency_us.p50);
    put("p99_us", sum.latency_us.p99);
    put("failed", sum.failed() as f64);
    put("lab_cpu_us", per_req(lab_s));
    put("machine_cpu_us", per_req(cpu.machine_busy_from_idle_s));
    put("softirq_cpu_us", per_req(cpu.softirq_s));
    if let Some(p) = proxy_s {
        put("proxy_cpu_us", per_req(p));
    }
    put("client_cpu_us", per_req(client_s));
    put("backend_cpu_us", per_req(backends_s));
    put("kthreads_cpu_us", per_req(kthreads_s));
    put("other_cpu_us", per_req(cpu.other_s));
    put("busy_pct", cpu.machine_busy_share * 100.0);
    put("client_time_wait", time_wait as f64);
    let count = |ns: &str, k: &str| tcp.get(ns).and_then(|c| c.get(k)).copied().unwrap_or(0);
    let per_k = |n: u64| {
        if sum.requests == 0 {
            f64::NAN
        } else {
            n as f64 * 1000.0 / requests
        }
    };
    put(
        "client_syn_retrans_per_k",
        per_k(count("client", "TcpExt.TCPSynRetrans")),
    );
    put("client_rsts_per_k", per_k(count("client", "Tcp.OutRsts")));
    put(
        "members_paws_tw_per_k",
        per_k(count("members", "TcpExt.PAWSTimewait")),
    );
    put(
        "retrans_segs_per_k",
        per_k(
            tcp.values()
                .map(|c| c.get("Tcp.RetransSegs").copied().unwrap_or(0))
                .sum(),
        ),
    );
    put(
        "csum_errors",
        tcp.values()
            .map(|c| c.get("Tcp.InCsumErrors").copied().unwrap_or(0))
            .sum::<u64>() as f64,
    );
    put("other_pct", cpu.other_s / (wall_s * cores) * 100.0);
    put(
        "steal_pct",
        d.steal as f64 / d.total().max(1) as f64 * 100.0,
    );
    let lbd = match (lbd_after, lbd_before) {
        (Some(a), Some(b)) => Some(a.since(&b)),
        _ => None,
    };
    let mut path_check = None;
    if let Some(c) = lbd {
        put("xdp_new_flows", c.xdp_new_flows as f64);
        put("lbd_sessions", c.sessions as f64);
        put("xdp_drops", c.xdp_drops as f64);
        if let Some(a) = &lbd_after {
            put("xdp_flows", a.xdp_flows as f64);
        }
        // Connections wrk made: one per request with `close` (plus the
        // ones in flight at the end), its connection count with keep-alive.
        let expected = match scenario {
            Scenario::Close => sum.requests,
            Scenario::Keepalive => u64::from(s.connections),
        };
        path_check = Some(check_path(running.kind, expected, &c));
    }
    let proxy_threads_s: BTreeMap<String, f64> = after
        .threads
        .iter()
        .map(|(name, &t)| {
            let b = before.threads.get(name).copied().unwrap_or(0);
            (name.clone(), t.saturating_sub(b) as f64 / tck)
        })
        .collect();
    let xdp_prog = match (prog_after, prog_before) {
        (Some(a), Some(b)) => Some(a.since(&b)),
        _ => None,
    };
    if let Some(p) = &xdp_prog {
        m.insert(
            format!("{sc}.xdp_prog_us"),
            per_req(p.run_time_ns as f64 / 1e9),
        );
        if p.run_cnt > 0 {
            m.insert(
                format!("{sc}.xdp_prog_ns_per_packet"),
                p.run_time_ns as f64 / p.run_cnt as f64,
            );
            m.insert(
                format!("{sc}.xdp_runs_per_req"),
                p.run_cnt as f64 / requests,
            );
        }
    }
    if let Some(x) = proxy_threads_s.get("lbd-xdp") {
        m.insert(format!("{sc}.lbd_xdp_thread_cpu_us"), per_req(*x));
    }
    Ok(Sample {
        scenario,
        path: running.kind,
        rep,
        metrics: m,
        wrk: outcome,
        cpu,
        proxy_threads_s,
        xdp_prog,
        tcp,
        lbd_xdp_after,
        lbd,
        path_check,
    })
}

/// The counters of the client, lb and (summed) member namespaces.
fn tcp_counters(topo: &Topo) -> Result<BTreeMap<String, nstat::Counters>> {
    let lab = &topo.lab;
    let mut out = BTreeMap::new();
    out.insert("client".to_string(), nstat::read(lab.client())?);
    out.insert("lb".to_string(), nstat::read(lab.lb())?);
    let members = lab
        .members()
        .iter()
        .map(nstat::read)
        .collect::<Result<Vec<_>>>()?;
    out.insert("members".to_string(), nstat::sum(&members));
    Ok(out)
}

/// Did the intended path carry at least 99% of the `expected` connections?
pub fn check_path(kind: PathKind, expected: u64, c: &LbdCounters) -> PathCheck {
    let (carried, other, carried_name, other_name) = match kind {
        PathKind::Xdp => (
            c.xdp_new_flows,
            c.sessions,
            "XDP new flows",
            "userspace sessions",
        ),
        _ => (
            c.sessions,
            c.xdp_new_flows,
            "userspace sessions",
            "XDP new flows",
        ),
    };
    let enough = carried as f64 >= 0.99 * expected as f64;
    let share_ok = other as f64 <= 0.01 * (carried + other).max(1) as f64;
    PathCheck {
        ok: enough && share_ok,
        detail: format!(
            "{carried_name} {carried}, {other_name} {other}, connections expected >= {expected}, \
             XDP drops {}",
            c.xdp_drops
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat() {
        // Captured from this machine's /proc/stat (first lines).
        let text = "cpu  1269918 1382 647533 1414001 80223 0 225199 17080 0 0\n\
                    cpu0 611516 608 331094 742450 19297 0 112589 8525 0 0\n\
                    intr 1 2 3\n";
        let c = parse_proc_stat(text).unwrap();
        assert_eq!(c.user, 1_269_918);
        assert_eq!(c.softirq, 225_199);
        assert_eq!(c.steal, 17_080);
        assert_eq!(c.busy(), 1_269_918 + 1382 + 647_533 + 225_199);
        let later = CpuTimes {
            softirq: c.softirq + 5,
            idle: c.idle + 10,
            ..c
        };
        let d = later.since(&c);
        assert_eq!((d.busy(), d.total()), (5, 15));
        assert!(parse_proc_stat("cpu0 1 2 3\n").is_err());
        assert!(parse_proc_stat("cpu  1 2 x 4 5 6 7 8\n").is_err());
        assert!(parse_proc_stat("cpu  1 2 3\n").is_err());
    }

    #[test]
    fn kthreads_per_pid() {
        let before: BTreeMap<u32, u64> = [(14, 100), (77, 50), (90, 10)].into();
        // 77 exited, 120 is new, 14 went on.
        let after: BTreeMap<u32, u64> = [(14, 130), (90, 10), (120, 5)].into();
        let s = kthreads_seconds(&after, &before) * procs::clk_tck() as f64;
        assert!((s - 35.0).abs() < 1e-9, "{s}");
    }

    #[test]
    fn path_checks() {
        let xdp = LbdCounters {
            sessions: 0,
            xdp_new_flows: 10_040,
            xdp_packets: 0,
            xdp_drops: 0,
            xdp_flows: 0,
        };
        assert!(check_path(PathKind::Xdp, 10_000, &xdp).ok);
        assert!(!check_path(PathKind::Userspace, 10_000, &xdp).ok);
        let leak = LbdCounters {
            sessions: 500,
            ..xdp
        };
        assert!(!check_path(PathKind::Xdp, 10_000, &leak).ok);
        let user = LbdCounters {
            sessions: 50,
            ..Default::default()
        };
        assert!(check_path(PathKind::Userspace, 50, &user).ok);
        assert!(!check_path(PathKind::Xdp, 50, &user).ok);
    }
}
