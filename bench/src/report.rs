//! Results: every repetition as measured, medians and spreads, the markdown
//! table, the targets (PASS/MISS) and the JSON file.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

use crate::profile::{self, CpuSplit};

/// `count` events over `seconds` as a rate per second (0 for a run that
/// took no time: a tool that reported nothing).
pub fn per_second(count: u64, seconds: f64) -> f64 {
    if seconds <= 0.0 {
        return 0.0;
    }
    count as f64 / seconds
}

/// Which direction is better for a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    Higher,
    Lower,
}

/// A metric as scenarios report it (by key) and the table shows it.
pub struct MetricDef {
    pub key: &'static str,
    pub label: &'static str,
    pub better: Better,
    pub decimals: usize,
}

const fn m(key: &'static str, label: &'static str, better: Better, decimals: usize) -> MetricDef {
    MetricDef {
        key,
        label,
        better,
        decimals,
    }
}

use Better::{Higher, Lower};

/// Every metric, in table order.
pub const METRICS: &[MetricDef] = &[
    m("keepalive.req_per_s", "keep-alive /100b: req/s", Higher, 0),
    m("keepalive.p50_us", "keep-alive /100b: p50 µs", Lower, 0),
    m("keepalive.p99_us", "keep-alive /100b: p99 µs", Lower, 0),
    m(
        "keepalive.cpu_us_per_req",
        "keep-alive /100b: proxy CPU µs/req",
        Lower,
        2,
    ),
    m("keepalive.failed", "keep-alive /100b: failed", Lower, 0),
    m("close.conn_per_s", "new conn per req: conn/s", Higher, 0),
    m("close.p99_us", "new conn per req: p99 µs", Lower, 0),
    m(
        "close.cpu_us_per_conn",
        "new conn per req: proxy CPU µs/conn",
        Lower,
        2,
    ),
    m("close.failed", "new conn per req: failed", Lower, 0),
    m("1m.gib_per_s", "1 MiB objects: GiB/s", Higher, 2),
    m(
        "1m.cpu_s_per_gib",
        "1 MiB objects: proxy CPU-s/GiB",
        Lower,
        3,
    ),
    m("1m.failed", "1 MiB objects: failed", Lower, 0),
    m("iperf.gbit_per_s", "iperf3 1 stream: Gbit/s", Higher, 1),
    m(
        "iperf.retransmits",
        "iperf3 1 stream: retransmits",
        Lower,
        0,
    ),
    m(
        "iperf.cpu_s_per_gib",
        "iperf3 1 stream: proxy CPU-s/GiB",
        Lower,
        3,
    ),
    m("iperf_p4.gbit_per_s", "iperf3 -P 4: Gbit/s", Higher, 1),
    m("iperf_p4.retransmits", "iperf3 -P 4: retransmits", Lower, 0),
    m(
        "iperf_p4.cpu_s_per_gib",
        "iperf3 -P 4: proxy CPU-s/GiB",
        Lower,
        3,
    ),
    m("udp_rr.pairs_per_s", "UDP req/resp: pairs/s", Higher, 0),
    m("udp_rr.p50_us", "UDP req/resp: p50 µs", Lower, 0),
    m("udp_rr.p99_us", "UDP req/resp: p99 µs", Lower, 0),
    m(
        "udp_rr.cpu_us_per_pair",
        "UDP req/resp: proxy CPU µs/pair",
        Lower,
        2,
    ),
    m("udp_rr.lost", "UDP req/resp: lost", Lower, 0),
    m(
        "udp_stream.datagrams_per_s",
        "UDP stream 1200 B: datagrams/s received",
        Higher,
        0,
    ),
    m("udp_stream.loss_pct", "UDP stream 1200 B: loss %", Lower, 1),
    m(
        "udp_stream.cpu_us_per_datagram",
        "UDP stream 1200 B: proxy CPU µs/datagram",
        Lower,
        2,
    ),
    m(
        "idle.kib_per_conn",
        "idle conns: proxy RSS KiB/conn",
        Lower,
        2,
    ),
    m("reload.failed", "reloads under load: failed", Lower, 0),
    m(
        "reload.reloads_confirmed",
        "reloads under load: reloads done",
        Higher,
        0,
    ),
    m(
        "upgrade.failed",
        "binary upgrades under load: failed",
        Lower,
        0,
    ),
    m(
        "upgrade.upgrades_done",
        "binary upgrades under load: upgrades done",
        Higher,
        0,
    ),
    m("kill.failed", "member killed under load: failed", Lower, 0),
];

pub fn metric(key: &str) -> Option<&'static MetricDef> {
    METRICS.iter().find(|m| m.key == key)
}

/// One run of one scenario against one configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub scenario: String,
    pub proxy: String,
    pub rep: u32,
    pub seconds: f64,
    pub metrics: BTreeMap<String, f64>,
    pub raw: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Median and spread over the repetitions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

pub fn stats(values: &[f64]) -> Option<Stats> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Stats {
        median,
        min: v[0],
        max: v[n - 1],
        n,
    })
}

/// metric -> proxy -> stats.
pub type Summary = BTreeMap<String, BTreeMap<String, Stats>>;

pub fn summarize(samples: &[Sample]) -> Summary {
    summarize_by(samples.iter().map(|s| (s.proxy.as_str(), &s.metrics)))
}

/// Medians and ranges of `(group, metrics)` samples: metric -> group ->
/// stats (a group is a proxy here, a path in the `xdp` bench).
pub fn summarize_by<'a>(
    samples: impl IntoIterator<Item = (&'a str, &'a BTreeMap<String, f64>)>,
) -> Summary {
    let mut values: BTreeMap<String, BTreeMap<String, Vec<f64>>> = BTreeMap::new();
    for (group, metrics) in samples {
        for (k, v) in metrics {
            values
                .entry(k.clone())
                .or_default()
                .entry(group.to_string())
                .or_default()
                .push(*v);
        }
    }
    values
        .into_iter()
        .map(|(k, per)| {
            let per = per
                .into_iter()
                .filter_map(|(p, v)| stats(&v).map(|s| (p, s)))
                .collect();
            (k, per)
        })
        .collect()
}

/// A number the way the table shows it: thousands as `k` above 10,000.
pub fn fmt_num(x: f64, decimals: usize) -> String {
    if decimals == 0 && x.abs() >= 10_000.0 {
        format!("{:.1}k", x / 1000.0)
    } else {
        format!("{x:.decimals$}")
    }
}

/// A table cell: the median, then `(min–max)` when they differ.
pub fn cell(s: &Stats, decimals: usize) -> String {
    if s.n > 1 && s.min != s.max {
        format!(
            "{} ({}–{})",
            fmt_num(s.median, decimals),
            fmt_num(s.min, decimals),
            fmt_num(s.max, decimals)
        )
    } else {
        fmt_num(s.median, decimals)
    }
}

fn ratio(summary: &Summary, key: &str, a: &str, b: &str) -> String {
    let get = |p: &str| summary.get(key).and_then(|m| m.get(p)).map(|s| s.median);
    match (get(a), get(b)) {
        (Some(x), Some(y)) if y != 0.0 => format!("{:.2}x", x / y),
        _ => "–".into(),
    }
}

/// Counts (failures, retransmits, reloads, lost datagrams) and loss
/// percentages get no ratio column: a ratio of small counts says nothing.
fn has_ratio(key: &str) -> bool {
    !(key.ends_with(".failed")
        || key.ends_with(".lost")
        || key.ends_with(".loss_pct")
        || key.ends_with(".retransmits")
        || key.ends_with(".reloads_confirmed")
        || key.ends_with(".upgrades_done"))
}

/// The scenario (its `--scenarios` name) a metric key belongs to.
pub fn scenario_of(key: &str) -> &str {
    match key.split('.').next().unwrap_or("") {
        "iperf_p4" => "iperf",
        "udp_rr" => "udp-rr",
        "udp_stream" => "udp-stream",
        s => s,
    }
}

/// The markdown table: rows = metrics, columns = configurations, then the
/// ratios lbd/haproxy, lbd/direct and lbd/lbd-old (of medians), those whose
/// columns are there.
pub fn markdown_table(
    summary: &Summary,
    proxies: &[&str],
    errors: &BTreeMap<(String, String), usize>,
) -> String {
    let mut cols: Vec<String> = proxies.iter().map(|p| p.to_string()).collect();
    let has = |p: &str| proxies.contains(&p);
    let ratios: Vec<(&str, &str)> = [("lbd", "haproxy"), ("lbd", "direct"), ("lbd", "lbd-old")]
        .into_iter()
        .filter(|(a, b)| has(a) && has(b))
        .collect();
    cols.extend(ratios.iter().map(|(a, b)| format!("{a}/{b}")));
    let mut out = String::new();
    let _ = writeln!(out, "| metric (median, min–max) | {} |", cols.join(" | "));
    let _ = writeln!(out, "|---|{}", "---|".repeat(cols.len()));
    for def in METRICS {
        let Some(per) = summary.get(def.key) else {
            continue;
        };
        let scenario = scenario_of(def.key);
        let mut cells = Vec::new();
        for p in proxies {
            cells.push(match per.get(*p) {
                Some(s) => cell(s, def.decimals),
                None if errors.contains_key(&(scenario.to_string(), p.to_string())) => {
                    "error".into()
                }
                None => "n/a".into(),
            });
        }
        for (a, b) in &ratios {
            cells.push(if has_ratio(def.key) {
                ratio(summary, def.key, a, b)
            } else {
                "–".into()
            });
        }
        let arrow = match def.better {
            Better::Higher => "↑",
            Better::Lower => "↓",
        };
        let _ = writeln!(out, "| {} {arrow} | {} |", def.label, cells.join(" | "));
    }
    out
}

/// The CPU split table: rows = userspace, io_uring, epoll/poll, the rest
/// of the kernel (shares of the proxy's samples) and the samples taken;
/// columns = the configurations of `proxies` that were profiled. Empty
/// when none was.
pub fn cpu_split_table(splits: &BTreeMap<String, CpuSplit>, proxies: &[&str]) -> String {
    let cols: Vec<(&str, &CpuSplit)> = proxies
        .iter()
        .filter_map(|p| splits.get(*p).map(|s| (*p, s)))
        .collect();
    if cols.is_empty() {
        return String::new();
    }
    let mut out = String::new();
    let names: Vec<&str> = cols.iter().map(|(p, _)| *p).collect();
    let _ = writeln!(out, "| share of the proxy's CPU | {} |", names.join(" | "));
    let _ = writeln!(out, "|---|{}", "---|".repeat(cols.len()));
    type Share = fn(&CpuSplit) -> f64;
    let rows: [(&str, Share); 4] = [
        ("userspace (binary, libraries, vDSO)", |s| s.user_pct),
        ("kernel: io_uring (`io_*`)", |s| s.io_uring_pct),
        ("kernel: epoll / poll", |s| s.epoll_pct),
        ("kernel: the rest", |s| s.kernel_other_pct),
    ];
    for (label, get) in rows {
        let cells: Vec<String> = cols
            .iter()
            .map(|(_, s)| format!("{:.1}%", get(s)))
            .collect();
        let _ = writeln!(out, "| {label} | {} |", cells.join(" | "));
    }
    let cells: Vec<String> = cols
        .iter()
        .map(|(_, s)| {
            format!(
                "{} in {} s",
                profile::thousands(s.samples),
                fmt_num(s.seconds, if s.seconds.fract() == 0.0 { 0 } else { 1 })
            )
        })
        .collect();
    let _ = writeln!(out, "| samples | {} |", cells.join(" | "));
    out
}

/// How a target compares lbd.
#[derive(Debug, Clone, Copy)]
pub enum Check {
    /// lbd's median / the other's median >= factor.
    AtLeastTimes(&'static str, f64),
    /// lbd's median / the other's median <= factor.
    AtMostTimes(&'static str, f64),
    /// lbd's median <= limit.
    MedianAtMost(f64),
    /// lbd's worst repetition <= limit.
    WorstAtMost(f64),
}

pub struct Target {
    pub label: &'static str,
    pub metric: &'static str,
    pub check: Check,
}

const fn t(label: &'static str, metric: &'static str, check: Check) -> Target {
    Target {
        label,
        metric,
        check,
    }
}

/// The targets (same run, one worker each).
pub const TARGETS: &[Target] = &[
    t(
        "keep-alive req/s >= 1.5x HAProxy",
        "keepalive.req_per_s",
        Check::AtLeastTimes("haproxy", 1.5),
    ),
    t(
        "proxy CPU per request <= 0.6x HAProxy",
        "keepalive.cpu_us_per_req",
        Check::AtMostTimes("haproxy", 0.6),
    ),
    t(
        "keep-alive p99 <= 0.8x HAProxy",
        "keepalive.p99_us",
        Check::AtMostTimes("haproxy", 0.8),
    ),
    t(
        "new connections/s >= 1.3x HAProxy",
        "close.conn_per_s",
        Check::AtLeastTimes("haproxy", 1.3),
    ),
    t(
        "1 MiB objects GiB/s >= 0.9x direct",
        "1m.gib_per_s",
        Check::AtLeastTimes("direct", 0.9),
    ),
    t(
        "iperf3 1 stream Gbit/s >= 0.9x direct",
        "iperf.gbit_per_s",
        Check::AtLeastTimes("direct", 0.9),
    ),
    t(
        "iperf3 -P 4 Gbit/s >= 0.9x direct",
        "iperf_p4.gbit_per_s",
        Check::AtLeastTimes("direct", 0.9),
    ),
    t(
        "CPU-s per GiB (1 MiB objects) <= 0.5x HAProxy",
        "1m.cpu_s_per_gib",
        Check::AtMostTimes("haproxy", 0.5),
    ),
    t(
        "CPU-s per GiB (iperf3 1 stream) <= 0.5x HAProxy",
        "iperf.cpu_s_per_gib",
        Check::AtMostTimes("haproxy", 0.5),
    ),
    t(
        "CPU-s per GiB (iperf3 -P 4) <= 0.5x HAProxy",
        "iperf_p4.cpu_s_per_gib",
        Check::AtMostTimes("haproxy", 0.5),
    ),
    t(
        "idle memory <= 4 KiB per proxied connection",
        "idle.kib_per_conn",
        Check::MedianAtMost(4.0),
    ),
    t(
        "0 failed requests during reloads (every rep)",
        "reload.failed",
        Check::WorstAtMost(0.0),
    ),
    t(
        "0 failed requests during binary upgrades (every rep)",
        "upgrade.failed",
        Check::WorstAtMost(0.0),
    ),
    t(
        "0 failed requests during a member kill (every rep)",
        "kill.failed",
        Check::WorstAtMost(0.0),
    ),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    Pass,
    Miss,
    Skip,
}

#[derive(Debug, Clone, Serialize)]
pub struct TargetResult {
    pub target: String,
    pub verdict: Verdict,
    pub detail: String,
}

pub fn check_targets(summary: &Summary) -> Vec<TargetResult> {
    TARGETS.iter().map(|t| check_target(t, summary)).collect()
}

fn check_target(t: &Target, summary: &Summary) -> TargetResult {
    let decimals = metric(t.metric).map_or(2, |m| m.decimals);
    let get = |p: &str| summary.get(t.metric).and_then(|m| m.get(p)).copied();
    let result = |verdict, detail: String| TargetResult {
        target: t.label.to_string(),
        verdict,
        detail,
    };
    let Some(lbd) = get("lbd") else {
        return result(Verdict::Skip, format!("no lbd result for {}", t.metric));
    };
    match t.check {
        Check::AtLeastTimes(other, f) | Check::AtMostTimes(other, f) => {
            let Some(o) = get(other) else {
                return result(Verdict::Skip, format!("no {other} result for {}", t.metric));
            };
            if o.median == 0.0 {
                return result(Verdict::Skip, format!("{other}'s median is 0"));
            }
            let r = lbd.median / o.median;
            let pass = match t.check {
                Check::AtLeastTimes(..) => r >= f,
                _ => r <= f,
            };
            let op = if matches!(t.check, Check::AtLeastTimes(..)) {
                ">="
            } else {
                "<="
            };
            result(
                if pass { Verdict::Pass } else { Verdict::Miss },
                format!(
                    "lbd {} / {other} {} = {r:.2}x (need {op} {f}x)",
                    fmt_num(lbd.median, decimals),
                    fmt_num(o.median, decimals)
                ),
            )
        }
        Check::MedianAtMost(limit) => result(
            if lbd.median <= limit {
                Verdict::Pass
            } else {
                Verdict::Miss
            },
            format!("lbd median {:.2} (need <= {limit})", lbd.median),
        ),
        Check::WorstAtMost(limit) => result(
            if lbd.max <= limit {
                Verdict::Pass
            } else {
                Verdict::Miss
            },
            format!(
                "lbd worst {} over {} rep(s) (need <= {limit})",
                fmt_num(lbd.max, 0),
                lbd.n
            ),
        ),
    }
}

pub fn targets_text(results: &[TargetResult]) -> String {
    let mut out = String::new();
    for r in results {
        let v = match r.verdict {
            Verdict::Pass => "PASS",
            Verdict::Miss => "MISS",
            Verdict::Skip => "SKIP",
        };
        let _ = writeln!(out, "{v}  {:<52} {}", r.target, r.detail);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(proxy: &str, rep: u32, key: &str, v: f64) -> Sample {
        Sample {
            scenario: key.split('.').next().unwrap_or("").into(),
            proxy: proxy.into(),
            rep,
            seconds: 1.0,
            metrics: [(key.to_string(), v)].into_iter().collect(),
            raw: Value::Null,
            error: None,
        }
    }

    #[test]
    fn median_and_spread() {
        assert_eq!(stats(&[]), None);
        let s = stats(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        assert_eq!(stats(&[4.0, 1.0, 2.0, 3.0]).unwrap().median, 2.5);
        assert_eq!(stats(&[f64::NAN, 1.0]).unwrap().n, 1);
    }

    #[test]
    fn numbers() {
        assert_eq!(fmt_num(81234.0, 0), "81.2k");
        assert_eq!(fmt_num(812.4, 0), "812");
        assert_eq!(fmt_num(0.1234, 3), "0.123");
    }

    #[test]
    fn cpu_split_table_columns() {
        let split = |user: f64, samples: u64| CpuSplit {
            scenario: "keepalive".into(),
            rep: 1,
            user_pct: user,
            io_uring_pct: 5.5,
            epoll_pct: 0.3,
            kernel_other_pct: 100.0 - user - 5.8,
            samples,
            seconds: 2.5,
            pids: vec![1],
            record_command: String::new(),
            report_command: String::new(),
            text_file: None,
        };
        assert_eq!(cpu_split_table(&BTreeMap::new(), &["lbd"]), "");
        let mut splits = BTreeMap::new();
        splits.insert("nginx".to_string(), split(10.0, 900));
        splits.insert("lbd".to_string(), split(14.1, 41_234));
        let t = cpu_split_table(&splits, &["direct", "lbd", "haproxy", "nginx"]);
        assert!(
            t.starts_with("| share of the proxy's CPU | lbd | nginx |\n|---|---|---|\n"),
            "{t}"
        );
        assert!(
            t.contains("| userspace (binary, libraries, vDSO) | 14.1% | 10.0% |"),
            "{t}"
        );
        assert!(t.contains("| kernel: epoll / poll | 0.3% | 0.3% |"), "{t}");
        assert!(
            t.contains("| samples | 41,234 in 2.5 s | 900 in 2.5 s |"),
            "{t}"
        );
    }

    #[test]
    fn table_and_targets() {
        let samples = vec![
            sample("direct", 1, "keepalive.req_per_s", 200_000.0),
            sample("lbd", 1, "keepalive.req_per_s", 150_000.0),
            sample("lbd", 2, "keepalive.req_per_s", 160_000.0),
            sample("lbd", 3, "keepalive.req_per_s", 155_000.0),
            sample("haproxy", 1, "keepalive.req_per_s", 100_000.0),
            sample("lbd", 1, "kill.failed", 0.0),
            sample("lbd", 2, "kill.failed", 3.0),
            sample("lbd", 1, "idle.kib_per_conn", 3.5),
        ];
        let sum = summarize(&samples);
        let mut errors = BTreeMap::new();
        errors.insert(("keepalive".to_string(), "nginx".to_string()), 1);
        let table = markdown_table(&sum, &["direct", "lbd", "haproxy", "nginx"], &errors);
        assert!(table.contains("| metric (median, min–max) | direct | lbd | haproxy | nginx | lbd/haproxy | lbd/direct |"), "{table}");
        assert!(
            table.contains("| keep-alive /100b: req/s ↑ | 200.0k | 155.0k (150.0k–160.0k) | 100.0k | error | 1.55x | 0.78x |"),
            "{table}"
        );
        let results = check_targets(&sum);
        let find = |label: &str| {
            results
                .iter()
                .find(|r| r.target.starts_with(label))
                .unwrap()
        };
        assert_eq!(find("keep-alive req/s").verdict, Verdict::Pass);
        assert_eq!(
            find("0 failed requests during a member kill").verdict,
            Verdict::Miss
        );
        assert_eq!(find("idle memory").verdict, Verdict::Pass);
        assert_eq!(find("new connections/s").verdict, Verdict::Skip);
        assert!(targets_text(&results).contains("PASS  keep-alive req/s >= 1.5x HAProxy"));
    }

    #[test]
    fn udp_rows() {
        let mut samples = vec![
            sample("direct", 1, "udp_rr.pairs_per_s", 80_000.0),
            sample("lbd", 1, "udp_rr.pairs_per_s", 60_000.0),
            sample("lbd", 1, "udp_rr.lost", 2.0),
            sample("direct", 1, "udp_rr.lost", 0.0),
            sample("lbd", 1, "udp_stream.loss_pct", 12.34),
        ];
        for s in &mut samples {
            s.scenario = scenario_of(s.metrics.keys().next().unwrap()).into();
        }
        assert_eq!(samples[0].scenario, "udp-rr");
        assert_eq!(samples[4].scenario, "udp-stream");
        let sum = summarize(&samples);
        let mut errors = BTreeMap::new();
        errors.insert(("udp-rr".to_string(), "nginx".to_string()), 1);
        let cols = ["direct", "lbd", "haproxy", "nginx"];
        let table = markdown_table(&sum, &cols, &errors);
        // HAProxy has no UDP: n/a; nginx's run failed: error.
        assert!(
            table.contains("| UDP req/resp: pairs/s ↑ | 80.0k | 60.0k | n/a | error | – | 0.75x |"),
            "{table}"
        );
        assert!(
            table.contains("| UDP req/resp: lost ↓ | 0 | 2 | n/a | error | – | – |"),
            "{table}"
        );
        assert!(
            table.contains("| UDP stream 1200 B: loss % ↓ | n/a | 12.3 | n/a | n/a | – | – |"),
            "{table}"
        );
        // Every metric belongs to a scenario (for the table's `error` cells).
        for def in METRICS {
            assert!(
                crate::scenarios::Scenario::ALL
                    .iter()
                    .any(|s| s.name() == scenario_of(def.key)),
                "{}",
                def.key
            );
        }
    }
}
