//! The scenarios: each runs once against one configuration and returns its
//! metrics (by key, see `report::METRICS`) and the raw tool output.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use serde::Serialize;
use serde_json::{json, Value};

use crate::backends::{Backends, LARGE_PATH, SMALL_PATH, SMALL_SIZE};
use crate::iperf;
use crate::procs::{self, Pin};
use crate::profile::{self, Perf, Profile};
use crate::proxies::{Kind, Proxy, WEIGHTS_ALT, WEIGHTS_BASE};
use crate::udp;
use crate::wrk;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum, Serialize)]
pub enum Scenario {
    /// wrk -c50 on /100b, keep-alive: req/s, p50, p99, CPU per request.
    Keepalive,
    /// wrk -c50 on /100b with `Connection: close`: conn/s, p99, CPU per connection.
    Close,
    /// wrk -c10 on /1m: GiB/s, CPU-seconds per GiB.
    #[value(name = "1m")]
    #[serde(rename = "1m")]
    OneMib,
    /// iperf3, one stream and -P 4: Gbit/s, retransmits, CPU-seconds per GiB.
    Iperf,
    /// UDP request/response (the bench's load generator to a UDP echo
    /// server; by default 50 flows, 64-byte datagrams): pairs/s, p50, p99,
    /// CPU per pair, lost.
    #[value(name = "udp-rr")]
    #[serde(rename = "udp-rr")]
    UdpRr,
    /// UDP one way (`iperf3 -u -b 0 -l 1200`): datagrams/s received,
    /// loss %, CPU per datagram.
    #[value(name = "udp-stream")]
    #[serde(rename = "udp-stream")]
    UdpStream,
    /// RSS per idle proxied connection.
    Idle,
    /// Failed requests while the config is reloaded during a wrk run.
    Reload,
    /// Failed requests while the proxy's binary is upgraded in place during
    /// a wrk run (lbd: `run --takeover`; HAProxy: the master re-executes on
    /// SIGUSR2).
    Upgrade,
    /// Failed requests when a backend is SIGKILLed during a wrk run.
    Kill,
}

impl Scenario {
    pub const ALL: [Scenario; 10] = [
        Scenario::Keepalive,
        Scenario::Close,
        Scenario::OneMib,
        Scenario::Iperf,
        Scenario::UdpRr,
        Scenario::UdpStream,
        Scenario::Idle,
        Scenario::Reload,
        Scenario::Upgrade,
        Scenario::Kill,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Keepalive => "keepalive",
            Scenario::Close => "close",
            Scenario::OneMib => "1m",
            Scenario::Iperf => "iperf",
            Scenario::UdpRr => "udp-rr",
            Scenario::UdpStream => "udp-stream",
            Scenario::Idle => "idle",
            Scenario::Reload => "reload",
            Scenario::Upgrade => "upgrade",
            Scenario::Kill => "kill",
        }
    }

    /// Whether the scenario is a UDP one (they need the UDP echo server
    /// and the proxies' UDP listeners).
    pub fn is_udp(self) -> bool {
        matches!(self, Scenario::UdpRr | Scenario::UdpStream)
    }

    /// Whether the scenario means anything for `kind` (direct has no proxy
    /// to hold idle connections, reload or route around a dead member; nginx's
    /// binary upgrade, USR2 then QUIT to the old master, is not scripted;
    /// HAProxy has no UDP, see [`Kind::serves_udp`]).
    pub fn applies_to(self, kind: Kind) -> bool {
        match self {
            Scenario::UdpRr | Scenario::UdpStream => kind.serves_udp(),
            Scenario::Upgrade => Proxy::can_upgrade(kind),
            Scenario::Idle | Scenario::Reload | Scenario::Kill => kind != Kind::Direct,
            _ => true,
        }
    }
}

/// Settings shared by every run of a variant.
pub struct Settings {
    pub duration: Duration,
    pub idle_conns: usize,
    pub reloads: usize,
    /// In-place upgrades during the upgrade scenario's run.
    pub upgrades: usize,
    /// Where wrk, iperf3 clients and the UDP load generator run.
    pub client_pin: Pin,
    pub logs: PathBuf,
    pub script: PathBuf,
    /// The bench binary (the UDP load generator is its `__udp-rr`).
    pub program: PathBuf,
    /// UDP request/response: client sockets (flows), datagram size,
    /// per-request timeout.
    pub udp_clients: usize,
    pub udp_size: usize,
    pub udp_timeout: Duration,
}

/// The UDP stream scenario's datagram size (iperf3 `-l`): fits a 1500-byte
/// MTU with IP and UDP headers.
pub const UDP_STREAM_SIZE: usize = 1200;

/// One run's result.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Measurement {
    pub metrics: BTreeMap<String, f64>,
    pub raw: Value,
    /// The CPU split of a profiled run, or why there is none (one line).
    #[serde(skip)]
    pub profile: Option<Result<Profile, String>>,
}

impl Measurement {
    fn set(&mut self, key: &str, value: f64) {
        self.metrics.insert(key.to_string(), value);
    }
}

const GIB: f64 = (1u64 << 30) as f64;

/// Runs `scenario` once against `proxy`. With `perf`, a keep-alive run is
/// also profiled (see [`profile`]); other scenarios ignore it.
pub fn run(
    scenario: Scenario,
    proxy: &mut Proxy,
    backends: &mut Backends,
    s: &Settings,
    perf: Option<&Perf>,
) -> Result<Measurement> {
    match scenario {
        Scenario::Keepalive => small(proxy, s, false, perf),
        Scenario::Close => small(proxy, s, true, None),
        Scenario::OneMib => large(proxy, s),
        Scenario::Iperf => bulk(proxy, s),
        Scenario::UdpRr => udp_rr(proxy, s),
        Scenario::UdpStream => udp_stream(proxy, s),
        Scenario::Idle => {
            // A fresh process: memory a previous run allocated and freed
            // would otherwise absorb the new connections (RSS does not
            // shrink), and repetitions after the first would read ~0.
            proxy.restart()?;
            check_http(proxy.http_port)?;
            idle(proxy, backends, s)
        }
        Scenario::Reload => reload(proxy, s),
        Scenario::Upgrade => upgrade(proxy, s),
        Scenario::Kill => kill(proxy, backends, s),
    }
}

/// Runs `f` and returns its result with the proxy's CPU seconds meanwhile.
fn with_cpu<T>(proxy: &Proxy, f: impl FnOnce() -> Result<T>) -> Result<(T, Option<f64>)> {
    let before = proxy.cpu_seconds()?;
    let out = f()?;
    let after = proxy.cpu_seconds()?;
    Ok((out, before.zip(after).map(|(b, a)| (a - b).max(0.0))))
}

fn small(proxy: &Proxy, s: &Settings, close: bool, perf: Option<&Perf>) -> Result<Measurement> {
    let url = proxy.url(SMALL_PATH);
    let run = wrk::Run {
        url: &url,
        connections: 50,
        duration: s.duration,
        close,
    };
    let profiled = perf.zip(proxy.pgid());
    let data = s.logs.join(format!("perf-{}.data", proxy.kind.name()));
    let ((out, recording), cpu) = with_cpu(proxy, || match profiled {
        None => Ok((run.run(&s.script, s.client_pin, &s.logs)?, None)),
        Some((perf, pgid)) => {
            // The same run as above, with perf sampling the proxy meanwhile;
            // perf has finished (or was killed) before wrk is waited for,
            // and its failure is only reported.
            let guard = run.start(&s.script, s.client_pin, &s.logs)?;
            let rec = profile::record_during(perf, pgid, s.duration, &data, s.client_pin, &s.logs);
            Ok((wrk::finish(guard, s.duration)?, Some(rec)))
        }
    })?;
    let sum = &out.summary;
    let mut m = Measurement::default();
    let (prefix, rate, per) = if close {
        ("close", "conn_per_s", "cpu_us_per_conn")
    } else {
        ("keepalive", "req_per_s", "cpu_us_per_req")
    };
    m.set(&format!("{prefix}.{rate}"), sum.requests_per_s());
    if !close {
        m.set("keepalive.p50_us", sum.latency_us.p50);
    }
    m.set(&format!("{prefix}.p99_us"), sum.latency_us.p99);
    m.set(&format!("{prefix}.failed"), sum.failed() as f64);
    if let Some(cpu) = cpu {
        if sum.requests > 0 {
            m.set(&format!("{prefix}.{per}"), cpu * 1e6 / sum.requests as f64);
        }
    }
    m.raw = json!({ "wrk": out, "proxy_cpu_s": cpu });
    // After the measurement: perf report and the classification.
    if let (Some(rec), Some((perf, _))) = (recording, profiled) {
        m.raw["profiled"] = json!(rec.is_ok());
        m.profile = Some(
            rec.and_then(|r| profile::analyse(perf, &r, &s.logs))
                .map_err(|e| profile::one_line(&e)),
        );
    }
    Ok(m)
}

fn large(proxy: &Proxy, s: &Settings) -> Result<Measurement> {
    let url = proxy.url(LARGE_PATH);
    let run = wrk::Run {
        url: &url,
        connections: 10,
        duration: s.duration,
        close: false,
    };
    let (out, cpu) = with_cpu(proxy, || run.run(&s.script, s.client_pin, &s.logs))?;
    let sum = &out.summary;
    let mut m = Measurement::default();
    m.set("1m.gib_per_s", sum.bytes_per_s() / GIB);
    m.set("1m.failed", sum.failed() as f64);
    if let Some(cpu) = cpu {
        if sum.bytes > 0 {
            m.set("1m.cpu_s_per_gib", cpu / (sum.bytes as f64 / GIB));
        }
    }
    m.raw = json!({ "wrk": out, "proxy_cpu_s": cpu });
    Ok(m)
}

fn bulk(proxy: &Proxy, s: &Settings) -> Result<Measurement> {
    let mut m = Measurement::default();
    let mut raw = serde_json::Map::new();
    for (streams, prefix) in [(1, "iperf"), (4, "iperf_p4")] {
        // The server needs a moment between tests.
        std::thread::sleep(Duration::from_millis(200));
        let (out, cpu) = with_cpu(proxy, || {
            iperf::run(proxy.iperf_port, s.duration, streams, s.client_pin, &s.logs)
        })?;
        let sum = &out.summary;
        m.set(
            &format!("{prefix}.gbit_per_s"),
            sum.received_bits_per_s / 1e9,
        );
        m.set(&format!("{prefix}.retransmits"), sum.retransmits as f64);
        if let Some(cpu) = cpu {
            if sum.received_bytes > 0 {
                m.set(
                    &format!("{prefix}.cpu_s_per_gib"),
                    cpu / (sum.received_bytes as f64 / GIB),
                );
            }
        }
        raw.insert(
            prefix.to_string(),
            json!({ "iperf3": out, "proxy_cpu_s": cpu }),
        );
    }
    m.raw = Value::Object(raw);
    Ok(m)
}

fn udp_rr(proxy: &Proxy, s: &Settings) -> Result<Measurement> {
    let port = proxy
        .udp_port
        .with_context(|| format!("{} has no UDP listener", proxy.kind.name()))?;
    let run = udp::RrRun {
        port,
        clients: s.udp_clients,
        size: s.udp_size,
        duration: s.duration,
        timeout: s.udp_timeout,
    };
    let (out, cpu) = with_cpu(proxy, || run.run(&s.program, s.client_pin, &s.logs))?;
    let sum = &out.summary;
    if sum.pairs == 0 {
        bail!(
            "udp-rr: no request answered via 127.0.0.1:{port} ({} lost, {} errors): {}",
            sum.lost,
            sum.errors,
            out.command
        );
    }
    let mut m = Measurement::default();
    m.set("udp_rr.pairs_per_s", sum.pairs_per_s());
    m.set("udp_rr.p50_us", sum.latency_us.p50);
    m.set("udp_rr.p99_us", sum.latency_us.p99);
    m.set("udp_rr.lost", sum.lost as f64);
    if let Some(cpu) = cpu {
        m.set("udp_rr.cpu_us_per_pair", cpu * 1e6 / sum.pairs as f64);
    }
    m.raw = json!({ "load": out, "proxy_cpu_s": cpu });
    Ok(m)
}

fn udp_stream(proxy: &Proxy, s: &Settings) -> Result<Measurement> {
    // The server needs a moment between tests.
    std::thread::sleep(Duration::from_millis(200));
    let (out, cpu) = with_cpu(proxy, || {
        iperf::run_udp(
            proxy.iperf_port,
            s.duration,
            UDP_STREAM_SIZE,
            s.client_pin,
            &s.logs,
        )
    })?;
    let sum = &out.summary;
    if sum.received_datagrams == 0 {
        bail!(
            "udp-stream: the iperf3 server received nothing ({} sent): {}",
            sum.sent_datagrams,
            out.command
        );
    }
    let mut m = Measurement::default();
    m.set("udp_stream.datagrams_per_s", sum.received_per_s());
    m.set("udp_stream.loss_pct", sum.lost_percent);
    if let Some(cpu) = cpu {
        m.set(
            "udp_stream.cpu_us_per_datagram",
            cpu * 1e6 / sum.received_datagrams as f64,
        );
    }
    m.raw = json!({ "iperf3": out, "proxy_cpu_s": cpu });
    Ok(m)
}

fn idle(proxy: &Proxy, backends: &Backends, s: &Settings) -> Result<Measurement> {
    let pgid = proxy.pgid().context("idle: no proxy process")?;
    let ports = backends.http_ports();
    let addr: SocketAddr = ([127, 0, 0, 1], proxy.http_port).into();
    let n = s.idle_conns;
    // Whatever the last run left must be gone first.
    procs::wait_until(Duration::from_secs(10), || {
        Ok(procs::established_to(&ports)? == 0)
    })?;
    let base_conns = procs::established_to(&ports)?;
    std::thread::sleep(Duration::from_millis(500));
    let (rss_before, procs_before) = procs::group_rss_bytes(pgid)?;

    let started = Instant::now();
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        if started.elapsed() > Duration::from_secs(120) {
            bail!("idle: opened only {i} of {n} connections in 120 s");
        }
        let c = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .with_context(|| format!("idle: connection {} of {n} to {addr}", i + 1))?;
        conns.push(c);
    }
    let open_s = started.elapsed().as_secs_f64();
    // Every connection should reach a backend (the proxies connect at accept).
    let all = procs::wait_until(Duration::from_secs(30), || {
        Ok(procs::established_to(&ports)? >= base_conns + n)
    })?;
    let reached = procs::established_to(&ports)?.saturating_sub(base_conns);
    std::thread::sleep(Duration::from_secs(1));
    let (rss_after, procs_after) = procs::group_rss_bytes(pgid)?;
    drop(conns);
    procs::wait_until(Duration::from_secs(15), || {
        Ok(procs::established_to(&ports)? <= base_conns)
    })?;

    let mut m = Measurement::default();
    let delta = rss_after as f64 - rss_before as f64;
    m.set("idle.kib_per_conn", delta / n as f64 / 1024.0);
    m.raw = json!({
        "connections": n,
        "reached_backends": reached,
        "all_reached": all,
        "open_seconds": open_s,
        "rss_before_bytes": rss_before,
        "rss_after_bytes": rss_after,
        "processes_before": procs_before,
        "processes_after": procs_after,
    });
    if !all {
        bail!(
            "idle: only {reached} of {n} connections reached the backends within 30 s (raw: {})",
            m.raw
        );
    }
    Ok(m)
}

/// `count` events spread over the middle 80% of a wrk `Connection: close`
/// run, at least 100 ms apart; wrk runs until 10% of the run (at least 1 s)
/// after the last one is done and is then stopped with SIGINT (wrk still
/// reports). Its -d is only an upper bound. Returns wrk's output, the
/// events' results (up to the first error) and when the last one ended.
struct UnderLoad<T> {
    out: wrk::Outcome,
    done: Vec<T>,
    error: Option<String>,
    finished_at_s: f64,
}

fn under_load<T>(
    proxy: &mut Proxy,
    s: &Settings,
    count: usize,
    mut event: impl FnMut(&mut Proxy, usize) -> Result<T>,
) -> Result<UnderLoad<T>> {
    let step = (s.duration.mul_f64(0.8) / count.max(1) as u32).max(Duration::from_millis(100));
    let first = s.duration.mul_f64(0.1);
    let tail = s.duration.mul_f64(0.1).max(Duration::from_secs(1));
    let bound = s.duration + Duration::from_secs(count as u64 * 21 + 10);
    let url = proxy.url(SMALL_PATH);
    let run = wrk::Run {
        url: &url,
        connections: 50,
        duration: bound,
        close: true,
    };
    let guard = run.start(&s.script, s.client_pin, &s.logs)?;
    let t0 = Instant::now();
    let mut done = Vec::with_capacity(count);
    let mut error = None;
    for i in 0..count {
        let at = first + step * i as u32;
        if let Some(wait) = at.checked_sub(t0.elapsed()) {
            std::thread::sleep(wait);
        }
        match event(proxy, i) {
            Ok(r) => done.push(r),
            Err(e) => {
                error = Some(format!("{e:#}"));
                break;
            }
        }
    }
    let finished_at_s = t0.elapsed().as_secs_f64();
    std::thread::sleep(tail);
    guard.signal(libc::SIGINT)?;
    let out = wrk::finish(guard, bound)?;
    Ok(UnderLoad {
        out,
        done,
        error,
        finished_at_s,
    })
}

fn upgrade(proxy: &mut Proxy, s: &Settings) -> Result<Measurement> {
    let run = under_load(proxy, s, s.upgrades, |p, _| p.upgrade())?;
    if let Some(e) = run.error {
        bail!(
            "upgrade failed after {} upgrades: {e}\n{}",
            run.done.len(),
            proxy.log_tail()
        );
    }
    let mut serving: Vec<f64> = run.done.iter().map(|u| u.serving_ms).collect();
    serving.sort_by(f64::total_cmp);
    let mut exited: Vec<f64> = run.done.iter().filter_map(|u| u.old_exited_ms).collect();
    exited.sort_by(f64::total_cmp);
    let mut m = Measurement::default();
    m.set("upgrade.failed", run.out.summary.failed() as f64);
    m.set("upgrade.upgrades_done", run.done.len() as f64);
    m.raw = json!({
        "wrk": run.out,
        "upgrades_requested": s.upgrades,
        "upgrades_done": run.done.len(),
        "serving_ms_median": serving.get(serving.len() / 2),
        "serving_ms_max": serving.last(),
        "old_exited_ms_median": exited.get(exited.len() / 2),
        "old_exited_ms_max": exited.last(),
        "upgrades_finished_at_s": run.finished_at_s,
        "wrk_stopped_at_s": run.out.summary.seconds(),
    });
    Ok(m)
}

fn reload(proxy: &mut Proxy, s: &Settings) -> Result<Measurement> {
    let run = under_load(proxy, s, s.reloads, |p, i| {
        p.reload(if i % 2 == 0 {
            &WEIGHTS_ALT
        } else {
            &WEIGHTS_BASE
        })
    })?;
    // Leave the base config in place (an odd count ends on the other one).
    if s.reloads % 2 == 1 {
        proxy.reload(&WEIGHTS_BASE)?;
    }
    if let Some(e) = run.error {
        bail!(
            "reload failed after {} reloads: {e}\n{}",
            run.done.len(),
            proxy.log_tail()
        );
    }
    let (out, reloads, reloads_done_s) = (run.out, run.done, run.finished_at_s);
    let confirmed = reloads.iter().filter(|r| r.confirmed).count();
    let rejected = reloads.iter().filter(|r| r.rejected).count();
    let mut ms: Vec<f64> = reloads.iter().map(|r| r.millis).collect();
    ms.sort_by(f64::total_cmp);
    let mut m = Measurement::default();
    m.set("reload.failed", out.summary.failed() as f64);
    m.set("reload.reloads_confirmed", confirmed as f64);
    m.raw = json!({
        "wrk": out,
        "reloads_requested": s.reloads,
        "reloads_confirmed": confirmed,
        "reloads_rejected": rejected,
        "reload_ms_median": ms.get(ms.len() / 2),
        "reload_ms_max": ms.last(),
        "reloads_finished_at_s": reloads_done_s,
        "wrk_stopped_at_s": out.summary.seconds(),
    });
    if rejected > 0 || confirmed < s.reloads {
        eprintln!(
            "bench: {}: {confirmed} of {} reloads confirmed, {rejected} rejected\n{}",
            proxy.kind.name(),
            s.reloads,
            proxy.log_tail()
        );
    }
    Ok(m)
}

fn kill(proxy: &Proxy, backends: &mut Backends, s: &Settings) -> Result<Measurement> {
    let url = proxy.url(SMALL_PATH);
    let run = wrk::Run {
        url: &url,
        connections: 50,
        duration: s.duration,
        close: true,
    };
    let victim = backends.http.len() - 1;
    let guard = run.start(&s.script, s.client_pin, &s.logs)?;
    let t0 = Instant::now();
    std::thread::sleep(s.duration / 3);
    backends.http[victim].kill();
    let killed_at = t0.elapsed().as_secs_f64();
    let out = wrk::finish(guard, s.duration);
    // Back before anything else runs, whatever wrk said.
    let restarted = backends.ensure_running()?;
    let out = out?;
    let mut m = Measurement::default();
    m.set("kill.failed", out.summary.failed() as f64);
    m.raw = json!({
        "wrk": out,
        "killed": backends.http[victim].name,
        "killed_at_s": killed_at,
        "restarted": restarted,
    });
    Ok(m)
}

/// GETs `/100b` through `port` a few times (one per backend in a round
/// robin): the configuration works before anything is measured.
pub fn check_http(port: u16) -> Result<()> {
    for i in 0..3 {
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .with_context(|| format!("check: connect to {addr}"))?;
        c.set_read_timeout(Some(Duration::from_secs(5)))?;
        c.set_write_timeout(Some(Duration::from_secs(5)))?;
        write!(
            c,
            "GET {SMALL_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )?;
        let mut resp = Vec::new();
        c.take(1 << 16)
            .read_to_end(&mut resp)
            .with_context(|| format!("check: reading the response {} from {addr}", i + 1))?;
        check_response(&resp).with_context(|| format!("check: GET {SMALL_PATH} via {addr}"))?;
    }
    Ok(())
}

/// A complete `200` response with the 100-byte body.
pub fn check_response(resp: &[u8]) -> Result<()> {
    let text = String::from_utf8_lossy(resp);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("no complete response: {text:?}");
    };
    if !head.starts_with("HTTP/1.1 200") {
        bail!("not a 200: {head:?}");
    }
    if body.len() != SMALL_SIZE {
        bail!("body is {} bytes, not {SMALL_SIZE}", body.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_check() {
        let body = format!("{}\n", "x".repeat(99));
        let ok = format!("HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 100\r\n\r\n{body}");
        check_response(ok.as_bytes()).unwrap();
        assert!(check_response(b"HTTP/1.1 404 Not Found\r\n\r\n").is_err());
        assert!(check_response(b"HTTP/1.1 200 OK\r\n\r\nshort").is_err());
        assert!(check_response(b"").is_err());
    }

    #[test]
    fn direct_skips_proxy_only_scenarios() {
        assert!(Scenario::Keepalive.applies_to(Kind::Direct));
        assert!(!Scenario::Idle.applies_to(Kind::Direct));
        assert!(!Scenario::Kill.applies_to(Kind::Direct));
        assert!(Scenario::Kill.applies_to(Kind::Lbd));
    }

    #[test]
    fn udp_scenarios_skip_haproxy() {
        for sc in [Scenario::UdpRr, Scenario::UdpStream] {
            assert!(sc.is_udp());
            assert!(Scenario::ALL.contains(&sc));
            for k in [Kind::Direct, Kind::Lbd, Kind::LbdEpoll, Kind::Nginx] {
                assert!(sc.applies_to(k), "{} {}", sc.name(), k.name());
            }
            for k in [
                Kind::Haproxy,
                Kind::HaproxySplice,
                Kind::LbdSplice,
                Kind::LbdKernel,
            ] {
                assert!(!sc.applies_to(k), "{} {}", sc.name(), k.name());
            }
        }
        assert!(!Scenario::Iperf.is_udp());
        // The names parse as --scenarios values.
        assert_eq!(Scenario::from_str("udp-rr", false), Ok(Scenario::UdpRr));
        assert_eq!(
            Scenario::from_str("udp-stream", false),
            Ok(Scenario::UdpStream)
        );
    }
}
