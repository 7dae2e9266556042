//! UDP in the bench: the echo backend and the request/response load
//! generator. Both run as children of the bench binary itself (the hidden
//! helper commands `__udp-echo` and `__udp-rr`, see [`helper_main`]), so
//! they are pinned with `taskset` and killed by process group like every
//! other backend and client. Also the readiness check of a UDP echo path.
//!
//! The load generator: `clients` sockets, each bound to its own port on
//! 127.0.0.1 (so each is its own flow through a proxy) and connected to the
//! target (so only answers from the target's address count), one thread
//! with epoll. Each socket sends one datagram of `size` bytes and waits for
//! the echo; the answer must carry the request's sequence number (an answer
//! to an older, timed-out request is "late" and dropped); then it sends the
//! next one at once. A request unanswered after `timeout` counts as lost
//! and the socket sends a new one.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde::{Deserialize, Serialize};

use crate::procs::{self, Pin};

/// The hidden command that runs the UDP echo backend.
pub const ECHO_COMMAND: &str = "__udp-echo";
/// The hidden command that runs the request/response load generator.
pub const RR_COMMAND: &str = "__udp-rr";

/// Marks the load generator's summary line in its stdout.
const MARK: &str = "BENCH_UDP_RR ";

/// Bytes of a request that identify it: the sequence number (u64) and the
/// client's index (u32), little-endian.
pub const HEADER: usize = 12;
/// The largest UDP payload over IPv4.
pub const MAX_PAYLOAD: usize = 65_507;

/// The bench binary's internal commands (not in `--help`).
#[derive(Parser, Debug)]
#[command(name = "bench", about = "the bench's internal UDP helpers")]
enum Helper {
    /// Answers every datagram on 127.0.0.1:PORT with the same bytes.
    #[command(name = "__udp-echo")]
    Echo {
        #[arg(long)]
        port: u16,
    },
    /// Request/response load against 127.0.0.1:PORT; prints one summary line.
    #[command(name = "__udp-rr")]
    Rr {
        #[arg(long)]
        port: u16,
        #[arg(long)]
        clients: usize,
        #[arg(long)]
        size: usize,
        #[arg(long)]
        seconds: u64,
        #[arg(long)]
        timeout_ms: u64,
    },
}

/// Runs a helper command when the bench binary was started as one
/// (`bench __udp-echo ...`); `None` otherwise. Call first in `main`.
pub fn helper_main() -> Option<ExitCode> {
    let first = std::env::args_os().nth(1)?;
    if first != ECHO_COMMAND && first != RR_COMMAND {
        return None;
    }
    let result = match Helper::parse() {
        Helper::Echo { port } => echo_server(port),
        Helper::Rr {
            port,
            clients,
            size,
            seconds,
            timeout_ms,
        } => request_response(
            ([127, 0, 0, 1], port).into(),
            clients,
            size,
            Duration::from_secs(seconds),
            Duration::from_millis(timeout_ms),
        )
        .and_then(|s| {
            println!("{MARK}{}", serde_json::to_string(&s)?);
            Ok(())
        }),
    };
    Some(match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench {}: error: {e:#}", first.to_string_lossy());
            ExitCode::FAILURE
        }
    })
}

/// The echo backend: one thread, one socket on 127.0.0.1:`port`, each
/// datagram sent back to where it came from. Runs until killed.
pub fn echo_server(port: u16) -> Result<()> {
    let sock = UdpSocket::bind(("127.0.0.1", port))
        .with_context(|| format!("cannot bind UDP 127.0.0.1:{port}"))?;
    eprintln!("udp echo on 127.0.0.1:{port}");
    let mut buf = vec![0u8; 65_536];
    loop {
        match sock.recv_from(&mut buf) {
            // A full send buffer or an unreachable peer loses that answer
            // only; the client counts it as lost.
            Ok((n, from)) => {
                let _ = sock.send_to(&buf[..n], from);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("recv_from"),
        }
    }
}

/// Latency percentiles of the answered requests, in µs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatencyUs {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

/// What one request/response run reports.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RrSummary {
    pub clients: usize,
    pub payload_bytes: usize,
    pub timeout_ms: u64,
    /// From the first request to the end of the run.
    pub seconds: f64,
    /// Requests answered (by the echo of that very request).
    pub pairs: u64,
    /// Requests unanswered after the timeout (each followed by a new one).
    pub lost: u64,
    /// Answers to requests that had timed out already (dropped).
    pub late: u64,
    /// Failed sends and receive errors (ICMP port unreachable: the proxy
    /// or backend refused); the request then times out and counts as lost.
    pub errors: u64,
    /// Requests still waiting when the run ended (neither answered nor
    /// lost).
    pub in_flight_at_end: u64,
    /// The fewest and the most requests answered for one client socket
    /// (flow): far apart, the path served some flows before others.
    pub pairs_per_flow_min: u64,
    pub pairs_per_flow_max: u64,
    pub latency_us: LatencyUs,
}

impl RrSummary {
    pub fn pairs_per_s(&self) -> f64 {
        crate::report::per_second(self.pairs, self.seconds)
    }
}

/// Latencies in nanoseconds, log-linear: exact below 2,048 ns, then 1,024
/// buckets per power of two (each value within 0.1% of its bucket's floor).
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    sum_ns: u128,
    max_ns: u64,
}

const SUB_BITS: u32 = 10;
const SUB: u64 = 1 << SUB_BITS;

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

impl Histogram {
    pub fn new() -> Histogram {
        Histogram {
            counts: Vec::new(),
            total: 0,
            sum_ns: 0,
            max_ns: 0,
        }
    }

    fn bucket(ns: u64) -> usize {
        if ns < 2 * SUB {
            return ns as usize;
        }
        let shift = (63 - ns.leading_zeros()) - SUB_BITS;
        (u64::from(shift) * SUB + (ns >> shift)) as usize
    }

    /// The smallest value of bucket `i`.
    fn floor(i: usize) -> u64 {
        let i = i as u64;
        if i < 2 * SUB {
            return i;
        }
        let shift = i / SUB - 1;
        (i - shift * SUB) << shift
    }

    pub fn record(&mut self, ns: u64) {
        let b = Histogram::bucket(ns);
        if b >= self.counts.len() {
            self.counts.resize(b + 1, 0);
        }
        self.counts[b] += 1;
        self.total += 1;
        self.sum_ns += u128::from(ns);
        self.max_ns = self.max_ns.max(ns);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    /// The value below which a share `q` (0..=1) of the samples lie (the
    /// floor of the bucket holding the rank); 0 when empty.
    pub fn quantile_ns(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Histogram::floor(i).min(self.max_ns);
            }
        }
        self.max_ns
    }

    pub fn latency_us(&self) -> LatencyUs {
        let us = |ns: u64| ns as f64 / 1e3;
        LatencyUs {
            p50: us(self.quantile_ns(0.50)),
            p90: us(self.quantile_ns(0.90)),
            p99: us(self.quantile_ns(0.99)),
            p999: us(self.quantile_ns(0.999)),
            max: us(self.max_ns),
            mean: if self.total == 0 {
                0.0
            } else {
                self.sum_ns as f64 / self.total as f64 / 1e3
            },
        }
    }
}

/// An epoll instance (level-triggered, read interest only).
struct Epoll(OwnedFd);

impl Epoll {
    fn new() -> io::Result<Epoll> {
        // SAFETY: epoll_create1 with a valid flag; the fd is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor that nothing else owns.
        Ok(Epoll(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: both descriptors are open; `ev` is a valid event.
        if unsafe { libc::epoll_ctl(self.0.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The tokens of the ready descriptors (EINTR: none).
    fn wait(
        &self,
        events: &mut [libc::epoll_event],
        timeout_ms: i32,
        ready: &mut Vec<u64>,
    ) -> io::Result<()> {
        ready.clear();
        let max = i32::try_from(events.len()).unwrap_or(i32::MAX);
        // SAFETY: `events` is valid for `max` entries.
        let n =
            unsafe { libc::epoll_wait(self.0.as_raw_fd(), events.as_mut_ptr(), max, timeout_ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(e)
            };
        }
        // The field is read by value (epoll_event is packed on x86_64).
        ready.extend(events[..n as usize].iter().map(|e| e.u64));
        Ok(())
    }
}

/// One client socket (one flow).
struct Client {
    sock: UdpSocket,
    seq: u64,
    answered: u64,
    sent_at: Instant,
    waiting: bool,
}

/// The request/response load (see the module doc); returns its summary.
pub fn request_response(
    target: SocketAddr,
    clients: usize,
    size: usize,
    duration: Duration,
    timeout: Duration,
) -> Result<RrSummary> {
    if clients == 0 {
        bail!("--clients must be at least 1");
    }
    if !(HEADER..=MAX_PAYLOAD).contains(&size) {
        bail!("--size must be {HEADER} to {MAX_PAYLOAD} bytes, not {size}");
    }
    let epoll = Epoll::new().context("epoll_create1")?;
    let mut cs = Vec::with_capacity(clients);
    for i in 0..clients {
        let sock = UdpSocket::bind(("127.0.0.1", 0)).context("bind a client socket")?;
        sock.connect(target)
            .with_context(|| format!("connect a UDP socket to {target}"))?;
        sock.set_nonblocking(true)?;
        epoll.add(sock.as_raw_fd(), i as u64).context("epoll_ctl")?;
        cs.push(Client {
            sock,
            seq: 0,
            answered: 0,
            sent_at: Instant::now(),
            waiting: false,
        });
    }
    let mut req = vec![0u8; size];
    for (i, b) in req.iter_mut().enumerate().skip(HEADER) {
        *b = b'a' + (i % 26) as u8;
    }
    let mut answer = vec![0u8; 65_536];
    let mut hist = Histogram::new();
    let (mut lost, mut late, mut errors) = (0u64, 0u64, 0u64);

    // Sends client `i`'s next request (a failed send is counted; the
    // request then times out).
    let send = |c: &mut Client, i: usize, req: &mut [u8], errors: &mut u64| {
        c.seq += 1;
        req[..8].copy_from_slice(&c.seq.to_le_bytes());
        req[8..HEADER].copy_from_slice(&(i as u32).to_le_bytes());
        c.sent_at = Instant::now();
        c.waiting = true;
        if c.sock.send(req).is_err() {
            *errors += 1;
        }
    };

    // Timed-out requests are looked for this often.
    let sweep_every = (timeout / 10).clamp(Duration::from_millis(1), Duration::from_millis(10));
    let start = Instant::now();
    let end = start + duration;
    for (i, c) in cs.iter_mut().enumerate() {
        send(c, i, &mut req, &mut errors);
    }
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; clients];
    let mut ready = Vec::with_capacity(clients);
    let mut next_sweep = start + sweep_every;
    let mut now = Instant::now();
    while now < end {
        let wait = end.min(next_sweep).saturating_duration_since(now);
        let wait_ms = i32::try_from(wait.as_micros().div_ceil(1000)).unwrap_or(i32::MAX);
        epoll
            .wait(&mut events, wait_ms, &mut ready)
            .context("epoll_wait")?;
        for &token in &ready {
            let i = token as usize;
            loop {
                let c = &mut cs[i];
                match c.sock.recv(&mut answer) {
                    Ok(n) => {
                        let at = Instant::now();
                        if c.waiting && is_answer(&answer[..n], c.seq, i as u32, &req[HEADER..]) {
                            hist.record(
                                u64::try_from((at - c.sent_at).as_nanos()).unwrap_or(u64::MAX),
                            );
                            c.waiting = false;
                            c.answered += 1;
                            if at < end {
                                send(c, i, &mut req, &mut errors);
                            }
                        } else {
                            late += 1;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    // ICMP port unreachable and the like, reported on the
                    // connected socket: the request will time out.
                    Err(_) => errors += 1,
                }
            }
        }
        now = Instant::now();
        if now >= next_sweep {
            for (i, c) in cs.iter_mut().enumerate() {
                if c.waiting && now.duration_since(c.sent_at) >= timeout {
                    lost += 1;
                    if now < end {
                        send(c, i, &mut req, &mut errors);
                    } else {
                        c.waiting = false;
                    }
                }
            }
            next_sweep = now + sweep_every;
        }
    }
    let seconds = now.duration_since(start).as_secs_f64();
    Ok(RrSummary {
        clients,
        payload_bytes: size,
        timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        seconds,
        pairs: hist.count(),
        lost,
        late,
        errors,
        in_flight_at_end: cs.iter().filter(|c| c.waiting).count() as u64,
        pairs_per_flow_min: cs.iter().map(|c| c.answered).min().unwrap_or(0),
        pairs_per_flow_max: cs.iter().map(|c| c.answered).max().unwrap_or(0),
        latency_us: hist.latency_us(),
    })
}

/// Whether `answer` is the echo of the request `seq` of client `client`
/// (whose bytes after the header are `rest`).
fn is_answer(answer: &[u8], seq: u64, client: u32, rest: &[u8]) -> bool {
    answer.len() == HEADER + rest.len()
        && answer[..8] == seq.to_le_bytes()
        && answer[8..HEADER] == client.to_le_bytes()
        && answer[HEADER..] == *rest
}

/// Finds and parses the load generator's summary line.
pub fn parse_rr(stdout: &str) -> Result<RrSummary> {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(MARK))
        .with_context(|| {
            format!(
                "no `{}` line in the UDP load generator's output:\n{stdout}",
                MARK.trim()
            )
        })?;
    serde_json::from_str(line).with_context(|| format!("cannot parse {line:?}"))
}

/// One run of the request/response load generator (a child process of
/// the bench binary `program`).
pub struct RrRun {
    pub port: u16,
    pub clients: usize,
    pub size: usize,
    pub duration: Duration,
    pub timeout: Duration,
}

/// A finished run: the summary and the exact command.
#[derive(Debug, Clone, Serialize)]
pub struct RrOutcome {
    pub command: String,
    pub summary: RrSummary,
}

impl RrRun {
    pub fn argv(&self, program: &Path) -> Vec<String> {
        vec![
            program.display().to_string(),
            RR_COMMAND.into(),
            "--port".into(),
            self.port.to_string(),
            "--clients".into(),
            self.clients.to_string(),
            "--size".into(),
            self.size.to_string(),
            "--seconds".into(),
            self.duration.as_secs().max(1).to_string(),
            "--timeout-ms".into(),
            self.timeout.as_millis().to_string(),
        ]
    }

    /// Runs the load generator to the end (bounded: duration + 30 s).
    pub fn run(&self, program: &Path, pin: Pin, logs: &Path) -> Result<RrOutcome> {
        let done = procs::run(
            "udp-rr",
            &self.argv(program),
            pin,
            logs,
            self.duration + Duration::from_secs(30),
        )?;
        if !done.status.success() {
            bail!(
                "the UDP load generator failed ({}): {}\nstderr:\n{}",
                done.status,
                done.command_line,
                done.stderr
            );
        }
        Ok(RrOutcome {
            summary: parse_rr(&done.stdout)?,
            command: done.command_line,
        })
    }
}

/// Sends a datagram from 3 fresh sockets (3 flows) to 127.0.0.1:`port`
/// and expects each echoed (each at most 5 s, resent every 200 ms).
pub fn check_echo(port: u16) -> Result<()> {
    for flow in 1..=3 {
        let sock = UdpSocket::bind(("127.0.0.1", 0))?;
        sock.connect(("127.0.0.1", port))?;
        sock.set_read_timeout(Some(Duration::from_millis(200)))?;
        let msg = format!("lbd bench check, flow {flow}");
        let mut buf = [0u8; 256];
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut last = String::from("no answer");
        let answered = loop {
            if Instant::now() >= deadline {
                break false;
            }
            if let Err(e) = sock.send(msg.as_bytes()) {
                last = format!("send: {e}");
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
            match sock.recv(&mut buf) {
                Ok(n) if buf[..n] == *msg.as_bytes() => break true,
                Ok(n) => last = format!("a wrong answer ({n} bytes)"),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => {
                    last = format!("recv: {e}");
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        };
        if !answered {
            bail!("check: no UDP echo via 127.0.0.1:{port} in 5 s (flow {flow}: {last})");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_and_quantiles() {
        // Bucket floors are increasing and each value is in its bucket.
        for ns in [0, 1, 2047, 2048, 2049, 4095, 4096, 1_000_000, 123_456_789] {
            let b = Histogram::bucket(ns);
            assert!(Histogram::floor(b) <= ns, "{ns}");
            assert!(Histogram::floor(b + 1) > ns, "{ns}");
            // Within 0.1%.
            assert!((ns - Histogram::floor(b)) as f64 <= ns as f64 / 1000.0 + 0.5);
        }
        let mut h = Histogram::new();
        assert_eq!(h.quantile_ns(0.99), 0);
        for us in 1..=100u64 {
            h.record(us * 1000);
        }
        assert_eq!(h.count(), 100);
        let l = h.latency_us();
        assert!((l.p50 - 50.0).abs() < 0.1, "{l:?}");
        assert!((l.p99 - 99.0).abs() < 0.1, "{l:?}");
        assert_eq!(l.max, 100.0);
        assert!((l.mean - 50.5).abs() < 1e-9);
    }

    #[test]
    fn expected_answer() {
        let rest = [b'x'; 8];
        let mut answer = Vec::new();
        answer.extend_from_slice(&7u64.to_le_bytes());
        answer.extend_from_slice(&3u32.to_le_bytes());
        answer.extend_from_slice(&rest);
        assert!(is_answer(&answer, 7, 3, &rest));
        assert!(!is_answer(&answer, 6, 3, &rest));
        assert!(!is_answer(&answer, 7, 2, &rest));
        assert!(!is_answer(&answer[..answer.len() - 1], 7, 3, &rest));
    }

    #[test]
    fn summary_line() {
        // Made up, in the helper's format.
        let out = "BENCH_UDP_RR {\"clients\":50,\"payload_bytes\":64,\"timeout_ms\":1000,\"seconds\":2.0,\"pairs\":100000,\"lost\":2,\"late\":1,\"errors\":0,\"in_flight_at_end\":50,\"pairs_per_flow_min\":1900,\"pairs_per_flow_max\":2100,\"latency_us\":{\"p50\":40.0,\"p90\":60.0,\"p99\":90.5,\"p999\":200.0,\"max\":900.0,\"mean\":45.0}}\n";
        let s = parse_rr(out).unwrap();
        assert_eq!((s.pairs, s.lost, s.late), (100_000, 2, 1));
        assert_eq!(s.pairs_per_s(), 50_000.0);
        assert_eq!(s.latency_us.p99, 90.5);
        assert!(parse_rr("nothing\n").is_err());
    }

    #[test]
    fn argv_shape() {
        let r = RrRun {
            port: 17010,
            clients: 50,
            size: 64,
            duration: Duration::from_secs(10),
            timeout: Duration::from_millis(1000),
        };
        assert_eq!(
            r.argv(Path::new("/t/bench")).join(" "),
            "/t/bench __udp-rr --port 17010 --clients 50 --size 64 --seconds 10 --timeout-ms 1000"
        );
    }

    /// The load generator against an in-process echo thread: every request
    /// is answered, none lost.
    #[test]
    fn load_against_an_echo() {
        let sock = UdpSocket::bind(("127.0.0.1", 0)).unwrap();
        let addr = sock.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = sock.recv_from(&mut buf) {
                let _ = sock.send_to(&buf[..n], from);
            }
        });
        let s = request_response(
            addr,
            4,
            64,
            Duration::from_millis(300),
            Duration::from_secs(1),
        )
        .unwrap();
        assert!(s.pairs > 100, "{s:?}");
        assert!(s.pairs_per_flow_min > 0 && s.pairs_per_flow_max >= s.pairs_per_flow_min);
        assert_eq!((s.lost, s.late, s.errors), (0, 0, 0), "{s:?}");
        assert!(s.latency_us.p50 > 0.0 && s.latency_us.p50 <= s.latency_us.p99);
        check_echo(addr.port()).unwrap();
    }

    #[test]
    fn nothing_there_is_lost_not_answered() {
        // A port nothing is bound to: ICMP refusals, every request lost.
        let port = UdpSocket::bind(("127.0.0.1", 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let s = request_response(
            ([127, 0, 0, 1], port).into(),
            2,
            16,
            Duration::from_millis(250),
            Duration::from_millis(50),
        )
        .unwrap();
        assert_eq!(s.pairs, 0);
        assert!(s.lost >= 4, "{s:?}");
        assert!(s.errors > 0, "{s:?}");
    }
}
