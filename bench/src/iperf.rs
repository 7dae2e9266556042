//! iperf3: the client command line and the parser for its `-J` output.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::Value;

use crate::procs::{self, Pin};

/// What one iperf3 client run reports.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    /// `end.sum_received.bits_per_second`.
    pub received_bits_per_s: f64,
    /// `end.sum_received.bytes`.
    pub received_bytes: u64,
    /// `end.sum_received.seconds`.
    pub seconds: f64,
    /// `end.sum_sent.retransmits`.
    pub retransmits: u64,
}

/// Parses `iperf3 -J` output; an `"error"` in it is returned as an error.
pub fn parse(json: &str) -> Result<Summary> {
    let v: Value = serde_json::from_str(json)
        .with_context(|| format!("iperf3 output is not JSON:\n{}", procs::tail(json, 2000)))?;
    if let Some(err) = v.get("error").and_then(Value::as_str) {
        bail!("iperf3: {err}");
    }
    let end = v.get("end").context("iperf3 output has no `end`")?;
    let num = |section: &str, field: &str| -> Result<f64> {
        end.get(section)
            .and_then(|s| s.get(field))
            .and_then(Value::as_f64)
            .with_context(|| format!("iperf3 output has no numeric end.{section}.{field}"))
    };
    Ok(Summary {
        received_bits_per_s: num("sum_received", "bits_per_second")?,
        received_bytes: num("sum_received", "bytes")? as u64,
        seconds: num("sum_received", "seconds")?,
        retransmits: num("sum_sent", "retransmits")? as u64,
    })
}

/// A finished run: the summary and the exact command.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub command: String,
    pub summary: Summary,
    /// Attempts refused because the server was still busy with the last test.
    pub busy_retries: u32,
}

/// Runs `iperf3 -c 127.0.0.1 -p PORT -t SECS -J [-P streams]`. The server
/// takes one test at a time; "busy" answers are retried (at most 20 times).
pub fn run(port: u16, duration: Duration, streams: u32, pin: Pin, logs: &Path) -> Result<Outcome> {
    let mut argv: Vec<String> = vec![
        "iperf3".into(),
        "-c".into(),
        "127.0.0.1".into(),
        "-p".into(),
        port.to_string(),
        "-t".into(),
        duration.as_secs().max(1).to_string(),
        "-J".into(),
        "-i".into(),
        "0".into(),
        "--connect-timeout".into(),
        "5000".into(),
    ];
    if streams > 1 {
        argv.push("-P".into());
        argv.push(streams.to_string());
    }
    let started = Instant::now();
    let mut busy_retries = 0;
    loop {
        let done = procs::run(
            "iperf3-client",
            &argv,
            pin,
            logs,
            duration + Duration::from_secs(30),
        )?;
        match parse(&done.stdout) {
            Ok(summary) => {
                return Ok(Outcome {
                    command: done.command_line,
                    summary,
                    busy_retries,
                })
            }
            Err(e) if format!("{e}").contains("busy") && busy_retries < 20 => {
                busy_retries += 1;
                std::thread::sleep(Duration::from_millis(250));
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "{} (after {:.1}s, stderr: {})",
                        done.command_line,
                        started.elapsed().as_secs_f64(),
                        done.stderr.trim()
                    )
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_captured_run() {
        // Captured: iperf3 -c 127.0.0.1 -p 17555 -t 1 -J -i 0 -P 2
        let s = parse(include_str!("testdata/iperf3-P2.json")).unwrap();
        assert_eq!(s.received_bytes, 2_850_816_000);
        assert!((s.received_bits_per_s - 22_782_469_711.98).abs() < 1.0);
        assert_eq!(s.retransmits, 8);
        assert!((s.seconds - 1.001056).abs() < 1e-9);
    }

    #[test]
    fn reports_iperf_errors() {
        // Captured: a client against a closed port.
        let e = parse(include_str!("testdata/iperf3-refused.json")).unwrap_err();
        assert!(format!("{e}").contains("Connection refused"), "{e}");
        assert!(parse("iperf3: error - the server is busy").is_err());
        assert!(parse("{\"end\": {}}").is_err());
    }
}
