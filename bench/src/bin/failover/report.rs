//! The figures of a repetition, their medians and spreads, the table, and
//! the facts recorded with them (commit, lbd version).

use std::path::Path;
use std::process::Command;

use serde::Serialize;

use crate::backend::Death;

/// One repetition. Times in ms are relative to the kill (negative: before).
#[derive(Debug, Serialize)]
pub struct Rep {
    pub rep: usize,
    pub victim: String,
    pub kill_utc: String,
    /// Whether a plain connect to the victim behaved as the death intends.
    pub death_check: String,
    /// Last failed data-path connect to the victim logged - kill (0: none).
    pub window_ms: f64,
    /// Failed data-path connects to the victim logged after the kill.
    pub attempts_after_death: usize,
    pub first_attempt_ms: Option<f64>,
    /// When the last of them was routed: its log time, minus
    /// `member_connect` if it timed out.
    pub last_routed_ms: Option<f64>,
    /// The victim's `is DOWN` line - kill, and its reason.
    pub down_ms: Option<f64>,
    pub down_reason: Option<String>,
    pub client_attempts: usize,
    pub client_attempts_after_death: usize,
    /// Client attempts started after the kill that took 500 ms or more.
    pub slow_attempts_after_death: usize,
    pub slowest_attempt_after_death_ms: f64,
    pub client_failures_run: usize,
    /// Failed client attempts that started within [kill, kill + window].
    pub client_failures_window: usize,
    pub client_failures_after_death: usize,
    /// Connections the victim accepted after the kill (must be 0).
    pub victim_accepts_after_death: usize,
    /// Client attempts started after the kill answered by the victim (must be 0).
    pub victim_replies_after_death: usize,
    pub victim_connect_failures_before_death: usize,
    pub other_members_connect_failures: usize,
    pub failures: Vec<Failure>,
    /// The victim's log lines from the kill on (the first few).
    pub victim_log: Vec<String>,
}

/// A client-visible failure.
#[derive(Debug, Serialize)]
pub struct Failure {
    pub start_ms: f64,
    pub took_ms: f64,
    pub error: String,
}

/// Median, min and max of a metric over the repetitions that have it.
pub type Spread = bench::report::Stats;

#[derive(Debug, Serialize)]
pub struct Summary {
    pub window_ms: Option<Spread>,
    pub last_routed_ms: Option<Spread>,
    pub attempts_after_death: Option<Spread>,
    pub down_ms: Option<Spread>,
    pub client_failures_run: Option<Spread>,
    pub client_failures_window: Option<Spread>,
    pub slow_attempts_after_death: Option<Spread>,
    pub slowest_attempt_after_death_ms: Option<Spread>,
    pub victim_accepts_after_death: Option<Spread>,
}

pub fn death_name(d: Death) -> &'static str {
    match d {
        Death::Refuse => "refuse",
        Death::Blackhole => "blackhole",
    }
}

fn spread(values: impl Iterator<Item = f64>) -> Option<Spread> {
    bench::report::stats(&values.collect::<Vec<f64>>())
}

pub fn summarise(reps: &[Rep]) -> Summary {
    let count = |f: fn(&Rep) -> usize| spread(reps.iter().map(|r| f(r) as f64));
    Summary {
        window_ms: spread(reps.iter().map(|r| r.window_ms)),
        last_routed_ms: spread(reps.iter().filter_map(|r| r.last_routed_ms)),
        attempts_after_death: count(|r| r.attempts_after_death),
        down_ms: spread(reps.iter().filter_map(|r| r.down_ms)),
        client_failures_run: count(|r| r.client_failures_run),
        client_failures_window: count(|r| r.client_failures_window),
        slow_attempts_after_death: count(|r| r.slow_attempts_after_death),
        slowest_attempt_after_death_ms: spread(
            reps.iter().map(|r| r.slowest_attempt_after_death_ms),
        ),
        victim_accepts_after_death: count(|r| r.victim_accepts_after_death),
    }
}

/// The DOWN reason without the check details in parentheses.
fn short_reason(reason: &str) -> &str {
    reason.split(" (check took").next().unwrap_or(reason)
}

fn opt_ms(v: Option<f64>) -> String {
    v.map_or("none".into(), |v| format!("{v:.1}"))
}

/// A count or a median of counts: no decimals unless it has some.
fn num(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// The markdown table: one row per repetition, then median, min, max.
pub fn table(reps: &[Rep], s: &Summary) -> String {
    let mut t = String::from(
        "| rep | window ms | last routed ms | attempts after death | DOWN after ms | DOWN reason \
         | client failures: run / window | slow attempts after death / slowest ms \
         | victim served after death |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in reps {
        t += &format!(
            "| {} | {:.1} | {} | {} | {} | {} | {} / {} | {} / {:.0} | {} |\n",
            r.rep,
            r.window_ms,
            opt_ms(r.last_routed_ms),
            r.attempts_after_death,
            opt_ms(r.down_ms),
            r.down_reason.as_deref().map_or("none", short_reason),
            r.client_failures_run,
            r.client_failures_window,
            r.slow_attempts_after_death,
            r.slowest_attempt_after_death_ms,
            r.victim_accepts_after_death,
        );
    }
    type Pick = fn(&Spread) -> f64;
    for (name, f) in [
        ("median", (|s: &Spread| s.median) as Pick),
        ("min", |s: &Spread| s.min),
        ("max", |s: &Spread| s.max),
    ] {
        let ms = |sp: Option<Spread>| sp.map_or("–".into(), |sp| format!("{:.1}", f(&sp)));
        let n = |sp: Option<Spread>| sp.map_or("–".into(), |sp| num(f(&sp)));
        t += &format!(
            "| **{name}** | {} | {} | {} | {} | | {} / {} | {} / {} | {} |\n",
            ms(s.window_ms),
            ms(s.last_routed_ms),
            n(s.attempts_after_death),
            ms(s.down_ms),
            n(s.client_failures_run),
            n(s.client_failures_window),
            n(s.slow_attempts_after_death),
            s.slowest_attempt_after_death_ms
                .map_or("–".into(), |sp| format!("{:.0}", f(&sp))),
            n(s.victim_accepts_after_death),
        );
    }
    t
}

/// One line per repetition: the death check and every client failure.
pub fn failure_notes(reps: &[Rep]) -> String {
    let mut out = String::new();
    for r in reps {
        out += &format!("- rep {}: {}", r.rep, r.death_check);
        if r.victim_connect_failures_before_death + r.other_members_connect_failures > 0 {
            out += &format!(
                "; unexpected connect failures: {} to the victim before its death, {} to other members",
                r.victim_connect_failures_before_death, r.other_members_connect_failures
            );
        }
        if r.victim_replies_after_death > 0 {
            out += &format!(
                "; {} client attempt(s) started after the death were answered by the victim",
                r.victim_replies_after_death
            );
        }
        for f in &r.failures {
            out += &format!(
                "; client failure at {:+.1} ms (took {:.1} ms): {}",
                f.start_ms, f.took_ms, f.error
            );
        }
        out += "\n";
    }
    out
}

pub fn progress_line(death: Death, r: &Rep) -> String {
    format!(
        "{} rep {}: window {:.1} ms, {} attempt(s) after death, DOWN after {} ms ({}), \
         {} client failure(s) ({} in the window) of {} attempts",
        death_name(death),
        r.rep,
        r.window_ms,
        r.attempts_after_death,
        opt_ms(r.down_ms),
        r.down_reason.as_deref().unwrap_or("no DOWN line"),
        r.client_failures_run,
        r.client_failures_window,
        r.client_attempts,
    )
}

/// The first line a short command prints, or why it could not run.
pub fn command_line_output(program: &Path, args: &[&str]) -> String {
    match Command::new(program).args(args).output() {
        Ok(o) => String::from_utf8_lossy(&o.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .to_string(),
        Err(e) => format!("unavailable ({e})"),
    }
}
