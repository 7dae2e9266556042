//! wrk: the command line, the Lua script whose `done()` prints one JSON line,
//! and the parser for that line.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::procs::{self, Pin};

/// Marks the script's line in wrk's stdout.
const MARK: &str = "BENCH_WRK ";

/// Passed with `-s`: prints the summary as one JSON line after the run.
/// Numbers go through `%.0f` (exact for integers up to 2^53 in any Lua).
pub const SCRIPT: &str = r#"-- Written by lbd's bench (bench/src/wrk.rs): one JSON line per run.
done = function(summary, latency, requests)
  local e = summary.errors
  local mean = latency.mean
  if mean ~= mean then mean = 0 end -- NaN when nothing completed
  io.write(string.format(
    'BENCH_WRK {"requests":%.0f,"duration_us":%.0f,"bytes":%.0f,' ..
    '"errors":{"connect":%.0f,"read":%.0f,"write":%.0f,"status":%.0f,"timeout":%.0f},' ..
    '"latency_us":{"p50":%.0f,"p90":%.0f,"p99":%.0f,"max":%.0f,"mean":%.1f}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, mean))
end
"#;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Errors {
    pub connect: u64,
    pub read: u64,
    pub write: u64,
    /// Responses with a status >= 400 (wrk's "Non-2xx or 3xx").
    pub status: u64,
    pub timeout: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

/// What one wrk run reports.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub requests: u64,
    pub duration_us: u64,
    pub bytes: u64,
    pub errors: Errors,
    pub latency_us: Latency,
}

impl Summary {
    pub fn seconds(&self) -> f64 {
        self.duration_us as f64 / 1e6
    }

    pub fn requests_per_s(&self) -> f64 {
        crate::report::per_second(self.requests, self.seconds())
    }

    pub fn bytes_per_s(&self) -> f64 {
        crate::report::per_second(self.bytes, self.seconds())
    }

    /// Socket errors (connect, read, write, timeout) plus non-2xx/3xx.
    pub fn failed(&self) -> u64 {
        let e = &self.errors;
        e.connect + e.read + e.write + e.timeout + e.status
    }
}

/// Finds and parses the script's line in wrk's stdout.
pub fn parse(stdout: &str) -> Result<Summary> {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(MARK))
        .with_context(|| format!("no `{}` line in wrk's output:\n{stdout}", MARK.trim()))?;
    serde_json::from_str(line).with_context(|| format!("cannot parse wrk's summary line {line:?}"))
}

/// One wrk invocation.
pub struct Run<'a> {
    pub url: &'a str,
    pub connections: u32,
    pub duration: Duration,
    /// Sends `Connection: close`: one new connection per request.
    pub close: bool,
}

impl Run<'_> {
    pub fn argv(&self, script: &Path) -> Vec<String> {
        let mut argv: Vec<String> = vec![
            "wrk".into(),
            "-t1".into(),
            format!("-c{}", self.connections),
            format!("-d{}s", self.duration.as_secs().max(1)),
            "--timeout".into(),
            "2s".into(),
            "--latency".into(),
            "-s".into(),
            script.display().to_string(),
        ];
        if self.close {
            argv.push("-H".into());
            argv.push("Connection: close".into());
        }
        argv.push(self.url.to_string());
        argv
    }

    /// Starts wrk (the caller may act during the run, then [`finish`]).
    pub fn start(&self, script: &Path, pin: Pin, logs: &Path) -> Result<procs::Guard> {
        procs::Guard::spawn("wrk", &self.argv(script), pin, logs)
    }

    /// Runs wrk to the end and parses its summary.
    pub fn run(&self, script: &Path, pin: Pin, logs: &Path) -> Result<Outcome> {
        let guard = self.start(script, pin, logs)?;
        finish(guard, self.duration)
    }
}

/// A finished run: the summary and the exact command.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub command: String,
    pub summary: Summary,
}

/// Waits for a started wrk (bounded: its duration plus 30 s) and parses it.
pub fn finish(guard: procs::Guard, duration: Duration) -> Result<Outcome> {
    let done = guard.finish(duration + Duration::from_secs(30))?;
    if !done.status.success() {
        bail!(
            "wrk failed ({}): {}\nstdout:\n{}\nstderr:\n{}",
            done.status,
            done.command_line,
            done.stdout,
            done.stderr
        );
    }
    let summary = parse(&done.stdout).with_context(|| format!("stderr:\n{}", done.stderr))?;
    Ok(Outcome {
        command: done.command_line,
        summary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_captured_run() {
        // Captured: wrk -t1 -c10 -d2s --timeout 2s --latency -s bench.lua
        // -H "Connection: close" http://127.0.0.1:17888/100b (against a
        // python http.server; the script is SCRIPT).
        let s = parse(include_str!("testdata/wrk-close.txt")).unwrap();
        assert_eq!(s.requests, 3328);
        assert_eq!(s.duration_us, 2_000_585);
        assert_eq!(s.bytes, 1_001_929);
        assert_eq!(s.latency_us.p50, 3408.0);
        assert_eq!(s.latency_us.p99, 115_909.0);
        assert_eq!(s.failed(), 0);
        assert!((s.requests_per_s() - 1663.5).abs() < 0.1);
    }

    #[test]
    fn failed_counts_every_error_kind() {
        // Made up: every error counter set.
        let out = "BENCH_WRK {\"requests\":10,\"duration_us\":1000000,\"bytes\":0,\"errors\":{\"connect\":1,\"read\":2,\"write\":3,\"status\":4,\"timeout\":5},\"latency_us\":{\"p50\":0,\"p90\":0,\"p99\":0,\"max\":0,\"mean\":0.0}}\n";
        assert_eq!(parse(out).unwrap().failed(), 15);
    }

    #[test]
    fn missing_or_broken_line_reports_the_output() {
        // Captured: wrk against a closed port (it gives up at once, exit 1).
        let e = parse(include_str!("testdata/wrk-refused.txt")).unwrap_err();
        assert!(format!("{e:#}").contains("Connection refused"));
        let e = parse("BENCH_WRK {\"requests\":\n").unwrap_err();
        assert!(format!("{e:#}").contains("BENCH_WRK") || format!("{e:#}").contains("requests"));
    }

    #[test]
    fn argv_close() {
        let r = Run {
            url: "http://127.0.0.1:1/100b",
            connections: 50,
            duration: Duration::from_secs(10),
            close: true,
        };
        let a = r.argv(Path::new("/tmp/s.lua")).join(" ");
        assert_eq!(
            a,
            "wrk -t1 -c50 -d10s --timeout 2s --latency -s /tmp/s.lua -H Connection: close http://127.0.0.1:1/100b"
        );
    }
}
