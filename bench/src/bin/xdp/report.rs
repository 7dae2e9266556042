//! Medians over the repetitions, the markdown table, the ratios and the
//! issue's targets.

use std::fmt::Write as _;

use bench::report::{cell, fmt_num};
use serde::Serialize;

use crate::measure::Sample;
use crate::paths::PathKind;

/// A table row: metric key, label, decimals, whether ratios make sense.
struct Row {
    key: &'static str,
    label: &'static str,
    decimals: usize,
    ratio: bool,
}

const fn row(key: &'static str, label: &'static str, decimals: usize, ratio: bool) -> Row {
    Row {
        key,
        label,
        decimals,
        ratio,
    }
}

const ROWS: &[Row] = &[
    row(
        "close.rate",
        "new connections/s (`Connection: close`) ↑",
        0,
        true,
    ),
    row("close.p99_us", "close: p99 latency µs ↓", 0, true),
    row("close.failed", "close: failed requests", 0, false),
    row(
        "close.client_syn_retrans_per_k",
        "close: client SYN retransmits per 1000 conn",
        1,
        false,
    ),
    row(
        "close.members_paws_tw_per_k",
        "close: members' PAWS rejects in TIME_WAIT per 1000 conn",
        1,
        false,
    ),
    row(
        "close.csum_errors",
        "close: TCP checksum errors (all namespaces)",
        0,
        false,
    ),
    row("close.lab_cpu_us", "close: lab CPU µs/conn ↓", 1, true),
    row(
        "close.proxy_cpu_us",
        "close: … lbd / HAProxy process",
        1,
        true,
    ),
    row(
        "close.lbd_xdp_thread_cpu_us",
        "close: … … of it lbd's `lbd-xdp` thread",
        1,
        false,
    ),
    row("close.client_cpu_us", "close: … wrk process", 1, false),
    row("close.backend_cpu_us", "close: … nginx processes", 1, false),
    row("close.kthreads_cpu_us", "close: … kernel threads", 1, false),
    row(
        "close.softirq_cpu_us",
        "close: softirq µs/conn (inside the above, sampled)",
        1,
        true,
    ),
    row(
        "close.xdp_prog_us",
        "close: XDP program µs/conn (BPF stats, inside softirq)",
        2,
        false,
    ),
    row(
        "close.xdp_prog_ns_per_packet",
        "close: XDP program ns/packet",
        0,
        false,
    ),
    row(
        "close.machine_cpu_us",
        "close: machine CPU µs/conn (with other load)",
        1,
        false,
    ),
    row(
        "close.busy_pct",
        "close: machine busy, % of 2 CPUs",
        0,
        false,
    ),
    row(
        "close.other_pct",
        "close: other load on the machine, % of 2 CPUs",
        0,
        false,
    ),
    row("close.xdp_new_flows", "close: lbd XDP new flows", 0, false),
    row(
        "close.lbd_sessions",
        "close: lbd userspace sessions",
        0,
        false,
    ),
    row(
        "close.xdp_flows",
        "close: lbd XDP flows in the table after",
        0,
        false,
    ),
    row("close.xdp_drops", "close: lbd XDP drops", 0, false),
    row("keepalive.rate", "keep-alive requests/s ↑", 0, true),
    row("keepalive.p99_us", "keep-alive: p99 latency µs ↓", 0, true),
    row("keepalive.failed", "keep-alive: failed requests", 0, false),
    row(
        "keepalive.client_syn_retrans_per_k",
        "keep-alive: client SYN retransmits per 1000 req",
        1,
        false,
    ),
    row(
        "keepalive.members_paws_tw_per_k",
        "keep-alive: members' PAWS rejects in TIME_WAIT per 1000 req",
        1,
        false,
    ),
    row(
        "keepalive.csum_errors",
        "keep-alive: TCP checksum errors (all namespaces)",
        0,
        false,
    ),
    row(
        "keepalive.lab_cpu_us",
        "keep-alive: lab CPU µs/req ↓",
        2,
        true,
    ),
    row(
        "keepalive.proxy_cpu_us",
        "keep-alive: … lbd / HAProxy process",
        2,
        true,
    ),
    row(
        "keepalive.lbd_xdp_thread_cpu_us",
        "keep-alive: … … of it lbd's `lbd-xdp` thread",
        2,
        false,
    ),
    row(
        "keepalive.client_cpu_us",
        "keep-alive: … wrk process",
        2,
        false,
    ),
    row(
        "keepalive.backend_cpu_us",
        "keep-alive: … nginx processes",
        2,
        false,
    ),
    row(
        "keepalive.kthreads_cpu_us",
        "keep-alive: … kernel threads",
        2,
        false,
    ),
    row(
        "keepalive.softirq_cpu_us",
        "keep-alive: softirq µs/req (inside the above, sampled)",
        2,
        true,
    ),
    row(
        "keepalive.xdp_prog_us",
        "keep-alive: XDP program µs/req (BPF stats, inside softirq)",
        3,
        false,
    ),
    row(
        "keepalive.xdp_prog_ns_per_packet",
        "keep-alive: XDP program ns/packet",
        0,
        false,
    ),
    row(
        "keepalive.machine_cpu_us",
        "keep-alive: machine CPU µs/req (with other load)",
        2,
        false,
    ),
    row(
        "keepalive.busy_pct",
        "keep-alive: machine busy, % of 2 CPUs",
        0,
        false,
    ),
    row(
        "keepalive.other_pct",
        "keep-alive: other load on the machine, % of 2 CPUs",
        0,
        false,
    ),
    row(
        "keepalive.xdp_new_flows",
        "keep-alive: lbd XDP new flows",
        0,
        false,
    ),
    row(
        "keepalive.lbd_sessions",
        "keep-alive: lbd userspace sessions",
        0,
        false,
    ),
    row(
        "keepalive.xdp_flows",
        "keep-alive: lbd XDP flows in the table after",
        0,
        false,
    ),
    row("keepalive.xdp_drops", "keep-alive: lbd XDP drops", 0, false),
];

/// metric -> path -> stats over the repetitions.
pub use bench::report::Summary;

pub fn summarize(samples: &[Sample]) -> Summary {
    bench::report::summarize_by(samples.iter().map(|s| (s.path.name(), &s.metrics)))
}

fn median(summary: &Summary, key: &str, path: &str) -> Option<f64> {
    summary.get(key)?.get(path).map(|s| s.median)
}

/// The ratio columns: xdp against each of these, where both ran.
const RATIOS: [(&str, &str); 3] = [("xdp", "userspace"), ("xdp", "direct"), ("xdp", "haproxy")];

pub fn markdown_table(summary: &Summary, paths: &[PathKind]) -> String {
    let names: Vec<&str> = paths.iter().map(|p| p.name()).collect();
    let ratios: Vec<(&str, &str)> = RATIOS
        .into_iter()
        .filter(|(a, b)| names.contains(a) && names.contains(b))
        .collect();
    let mut cols: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    cols.extend(ratios.iter().map(|(a, b)| format!("{a}/{b}")));
    let mut out = String::new();
    let _ = writeln!(out, "| metric (median, min–max) | {} |", cols.join(" | "));
    let _ = writeln!(out, "|---|{}", "---|".repeat(cols.len()));
    for r in ROWS {
        let Some(per) = summary.get(r.key) else {
            continue;
        };
        let mut cells: Vec<String> = names
            .iter()
            .map(|n| per.get(*n).map_or("n/a".into(), |s| cell(s, r.decimals)))
            .collect();
        for (a, b) in &ratios {
            cells.push(
                match (median(summary, r.key, a), median(summary, r.key, b)) {
                    (Some(x), Some(y)) if r.ratio && y != 0.0 => format!("{:.2}x", x / y),
                    _ => "–".into(),
                },
            );
        }
        let _ = writeln!(out, "| {} | {} |", r.label, cells.join(" | "));
    }
    out
}

#[derive(Debug, Clone, Serialize)]
pub struct TargetResult {
    pub target: String,
    /// `PASS`, `MISS` or `SKIP` (a path it needs did not run).
    pub verdict: &'static str,
    pub detail: String,
}

/// The targets: XDP >= 3x the userspace proxy in new connections/s,
/// and "close to direct" (read here as >= 0.9x direct).
pub fn targets(summary: &Summary) -> Vec<TargetResult> {
    let key = "close.rate";
    [
        ("userspace", 3.0, "XDP new conn/s >= 3x userspace"),
        ("direct", 0.9, "XDP new conn/s close to direct (>= 0.9x)"),
    ]
    .into_iter()
    .map(|(other, factor, label)| {
        match (median(summary, key, "xdp"), median(summary, key, other)) {
            (Some(x), Some(y)) if y > 0.0 => {
                let r = x / y;
                TargetResult {
                    target: label.into(),
                    verdict: if r >= factor { "PASS" } else { "MISS" },
                    detail: format!(
                        "xdp {} / {other} {} = {r:.2}x (need >= {factor}x)",
                        fmt_num(x, 0),
                        fmt_num(y, 0)
                    ),
                }
            }
            _ => TargetResult {
                target: label.into(),
                verdict: "SKIP",
                detail: format!("needs the xdp and {other} paths"),
            },
        }
    })
    .collect()
}

pub fn targets_text(t: &[TargetResult]) -> String {
    t.iter()
        .map(|r| format!("{}  {:<44} {}\n", r.verdict, r.target, r.detail))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bench::report::stats;

    fn summary(entries: &[(&str, &str, &[f64])]) -> Summary {
        let mut s = Summary::new();
        for (k, p, v) in entries {
            s.entry(k.to_string())
                .or_default()
                .insert(p.to_string(), stats(v).unwrap());
        }
        s
    }

    #[test]
    fn table_and_targets() {
        let s = summary(&[
            ("close.rate", "direct", &[20_000.0]),
            ("close.rate", "xdp", &[18_000.0, 17_000.0, 19_000.0]),
            ("close.rate", "userspace", &[6_000.0]),
            ("close.failed", "xdp", &[0.0]),
            ("close.softirq_cpu_us", "xdp", &[10.0]),
        ]);
        let paths = [PathKind::Direct, PathKind::Xdp, PathKind::Userspace];
        let t = markdown_table(&s, &paths);
        assert!(
            t.contains("| metric (median, min–max) | direct | xdp | userspace | xdp/userspace | xdp/direct |"),
            "{t}"
        );
        assert!(
            t.contains("| new connections/s (`Connection: close`) ↑ | 20.0k | 18.0k (17.0k–19.0k) | 6000 | 3.00x | 0.90x |"),
            "{t}"
        );
        assert!(
            t.contains("| close: failed requests | n/a | 0 | n/a | – | – |"),
            "{t}"
        );
        assert!(
            t.contains(
                "| close: softirq µs/conn (inside the above, sampled) | n/a | 10.0 | n/a | – | – |"
            ),
            "{t}"
        );
        let r = targets(&s);
        assert_eq!(r[0].verdict, "PASS");
        assert_eq!(r[1].verdict, "PASS");
        let s2 = summary(&[
            ("close.rate", "xdp", &[10.0]),
            ("close.rate", "userspace", &[5.0]),
        ]);
        let r2 = targets(&s2);
        assert_eq!((r2[0].verdict, r2[1].verdict), ("MISS", "SKIP"));
        assert!(targets_text(&r2).contains("MISS  XDP new conn/s >= 3x userspace"));
    }
}
