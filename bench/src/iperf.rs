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

/// The `end` object of `iperf3 -J` output; an `"error"` in it is returned
/// as an error.
fn end_section(json: &str) -> Result<Value> {
    let mut v: Value = serde_json::from_str(json)
        .with_context(|| format!("iperf3 output is not JSON:\n{}", procs::tail(json, 2000)))?;
    if let Some(err) = v.get("error").and_then(Value::as_str) {
        bail!("iperf3: {err}");
    }
    v.get_mut("end")
        .map(Value::take)
        .context("iperf3 output has no `end`")
}

/// `end.<section>.<field>` as a number.
fn end_number(end: &Value, section: &str, field: &str) -> Result<f64> {
    end.get(section)
        .and_then(|s| s.get(field))
        .and_then(Value::as_f64)
        .with_context(|| format!("iperf3 output has no numeric end.{section}.{field}"))
}

/// Parses `iperf3 -J` output; an `"error"` in it is returned as an error.
pub fn parse(json: &str) -> Result<Summary> {
    let end = end_section(json)?;
    let num = |section: &str, field: &str| end_number(&end, section, field);
    Ok(Summary {
        received_bits_per_s: num("sum_received", "bits_per_second")?,
        received_bytes: num("sum_received", "bytes")? as u64,
        seconds: num("sum_received", "seconds")?,
        retransmits: num("sum_sent", "retransmits")? as u64,
    })
}

/// What one UDP iperf3 client run (`-u`) reports: the server's side
/// (`end.sum_received`), as the client learns it at the end of the test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct UdpSummary {
    /// Datagrams sent: `end.sum_sent.packets`.
    pub sent_datagrams: u64,
    /// Datagrams the server received: `end.sum_received.packets` minus
    /// `end.sum_received.lost_packets`.
    pub received_datagrams: u64,
    /// `end.sum_received.lost_packets` (sequence gaps seen by the server).
    pub lost_datagrams: u64,
    /// `end.sum_received.lost_percent`.
    pub lost_percent: f64,
    /// `end.sum_received.bytes`.
    pub received_bytes: u64,
    /// `end.sum_received.seconds`.
    pub seconds: f64,
}

impl UdpSummary {
    pub fn received_per_s(&self) -> f64 {
        crate::report::per_second(self.received_datagrams, self.seconds)
    }
}

/// Parses `iperf3 -u -J` output (iperf3 3.12: `sum_sent` and
/// `sum_received` in `end`); an `"error"` in it is returned as an error.
pub fn parse_udp(json: &str) -> Result<UdpSummary> {
    let end = end_section(json)?;
    let num = |section: &str, field: &str| end_number(&end, section, field);
    let packets = num("sum_received", "packets")? as u64;
    let lost = num("sum_received", "lost_packets")? as u64;
    Ok(UdpSummary {
        sent_datagrams: num("sum_sent", "packets")? as u64,
        received_datagrams: packets.saturating_sub(lost),
        lost_datagrams: lost,
        lost_percent: num("sum_received", "lost_percent")?,
        received_bytes: num("sum_received", "bytes")? as u64,
        seconds: num("sum_received", "seconds")?,
    })
}

/// A finished run: the summary and the exact command.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome<S = Summary> {
    pub command: String,
    pub summary: S,
    /// Attempts refused because the server was still busy with the last test.
    pub busy_retries: u32,
}

/// The client's options common to both kinds of test.
fn client_argv(port: u16, duration: Duration) -> Vec<String> {
    vec![
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
    ]
}

/// Runs `iperf3 -c 127.0.0.1 -p PORT -t SECS -J [-P streams]`. The server
/// takes one test at a time; "busy" answers are retried (at most 20 times).
pub fn run(port: u16, duration: Duration, streams: u32, pin: Pin, logs: &Path) -> Result<Outcome> {
    let mut argv = client_argv(port, duration);
    if streams > 1 {
        argv.push("-P".into());
        argv.push(streams.to_string());
    }
    run_client(&argv, duration, pin, logs, parse)
}

/// The UDP test's command line: `iperf3 -u -b 0 -l SIZE` (as fast as the
/// client can send, `size`-byte datagrams) plus the common options.
pub fn udp_argv(port: u16, duration: Duration, size: usize) -> Vec<String> {
    let mut argv = client_argv(port, duration);
    argv.extend([
        "-u".into(),
        "-b".into(),
        "0".into(),
        "-l".into(),
        size.to_string(),
    ]);
    argv
}

/// Runs the UDP test (see [`udp_argv`]); its control connection is TCP to
/// the same port. "Busy" answers are retried as for [`run`].
pub fn run_udp(
    port: u16,
    duration: Duration,
    size: usize,
    pin: Pin,
    logs: &Path,
) -> Result<Outcome<UdpSummary>> {
    run_client(
        &udp_argv(port, duration, size),
        duration,
        pin,
        logs,
        parse_udp,
    )
}

fn run_client<S>(
    argv: &[String],
    duration: Duration,
    pin: Pin,
    logs: &Path,
    parse: fn(&str) -> Result<S>,
) -> Result<Outcome<S>> {
    let started = Instant::now();
    let mut busy_retries = 0;
    loop {
        let done = procs::run(
            "iperf3-client",
            argv,
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
        assert!(parse_udp(include_str!("testdata/iperf3-refused.json")).is_err());
        assert!(parse_udp("{\"end\": {}}").is_err());
    }

    #[test]
    fn parses_a_captured_udp_run() {
        // Captured: iperf3 -u -c 127.0.0.1 -p 29555 -b 0 -l 1200 -t 2 -J -i 0
        // (client and server on CPU 0).
        let s = parse_udp(include_str!("testdata/iperf3-udp.json")).unwrap();
        assert_eq!(s.sent_datagrams, 286_730);
        assert_eq!(s.lost_datagrams, 169_237);
        assert_eq!(s.received_datagrams, 117_493);
        assert_eq!(s.received_bytes, 117_493 * 1200);
        assert!((s.lost_percent - 59.0231227984515).abs() < 1e-9);
        assert!((s.received_per_s() - 117_493.0 / 2.000072).abs() < 1e-6);
    }

    #[test]
    fn udp_argv_shape() {
        assert_eq!(
            udp_argv(17005, Duration::from_secs(10), 1200).join(" "),
            "iperf3 -c 127.0.0.1 -p 17005 -t 10 -J -i 0 --connect-timeout 5000 -u -b 0 -l 1200"
        );
    }
}
