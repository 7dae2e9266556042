//! Issue 19's sockmap experiment: established connections relayed by the
//! kernel (a stream verdict program redirecting each socket's data to its
//! peer, `ebpf/bpf/sk_relay.c`) against lbd's userspace relay and a
//! direct connection, side by side in one run on loopback.
//!
//! wrk (keep-alive, 50 connections, 100-byte answers) and nginx on CPU 0;
//! lbd (one worker; its copy loop, and with `kernel_relay = true`),
//! HAProxy (one thread) or the experiment's own relay on CPU 1. The relay's work happens in
//! softirq and kernel worker threads, not in a process, so the CPU figure
//! is the whole machine's (`/proc/stat`) per request; its excess over the
//! direct path is what the relay costs.
//!
//! The relay here is the experiment's minimum: per connection a thread
//! connects to the member, pairs both sockets in the map before reading
//! anything, kicks the program over what the client sent before (see
//! `lbd_ebpf::kick`), and waits for the client's end. It keeps no byte
//! counters and no idle timeouts, and closes both sides at the client's
//! EOF (no half-close): what lbd would have to add, from TCP's own
//! counters (`lbd_ebpf::tcp_counts`).
//!
//! ```sh
//! cargo run --release -p bench --bin sockmap -- --reps 3 --duration 5s --lbd target/release/lbd
//! ```

use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bench::backends::{Backends, Ports};
use bench::procs::{self, Guard, Pin, WorkDir};
use bench::{setup, wrk};
use clap::Parser;
use lbd_ebpf::SockPairer;

#[derive(Parser)]
struct Cli {
    /// Repetitions of each path (interleaved).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// wrk run length.
    #[arg(long, default_value = "5s", value_parser = bench::cli::parse_duration)]
    duration: Duration,
    /// The lbd binary.
    #[arg(long, default_value = "target/release/lbd")]
    lbd: PathBuf,
}

/// Busy jiffies of the whole machine (all but idle and iowait).
fn machine_busy_ticks() -> Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    if fields.len() < 8 {
        bail!("unexpected /proc/stat line: {line}");
    }
    // user nice system idle iowait irq softirq steal
    Ok(fields[0] + fields[1] + fields[2] + fields[5] + fields[6] + fields[7])
}

/// One path's measurement.
struct Row {
    req_s: f64,
    gib_s: f64,
    machine_s_per_gib: f64,
    p50_us: f64,
    p99_us: f64,
    machine_us_per_req: f64,
    failed: u64,
}

fn measure(
    url: &str,
    connections: u32,
    close: bool,
    duration: Duration,
    script: &std::path::Path,
    logs: &std::path::Path,
) -> Result<Row> {
    let run = wrk::Run {
        url,
        connections,
        duration,
        close,
    };
    let before = machine_busy_ticks()?;
    let out = run.run(script, Pin::Cpu(0), logs)?;
    let ticks = machine_busy_ticks()? - before;
    let s = &out.summary;
    let secs = ticks as f64 / procs::clk_tck() as f64;
    let gib = s.bytes as f64 / (1u64 << 30) as f64;
    Ok(Row {
        req_s: s.requests_per_s(),
        gib_s: s.bytes_per_s() / (1u64 << 30) as f64,
        machine_s_per_gib: if gib > 0.0 { secs / gib } else { 0.0 },
        p50_us: s.latency_us.p50,
        p99_us: s.latency_us.p99,
        machine_us_per_req: secs * 1e6 / s.requests.max(1) as f64,
        failed: s.failed(),
    })
}

/// The in-kernel relay: accepts on `listener`, pairs each connection with
/// one to `member`.
fn serve_relay(listener: TcpListener, member: u16, relay: Arc<SockPairer>, stop: Arc<AtomicBool>) {
    for conn in listener.incoming() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok(client) = conn else { continue };
        let relay = Arc::clone(&relay);
        std::thread::spawn(move || {
            let _ = relay_one(client, member, &relay);
        });
    }
}

fn relay_one(client: TcpStream, member: u16, relay: &SockPairer) -> Result<()> {
    let upstream = TcpStream::connect(("127.0.0.1", member))?;
    client.set_nodelay(true)?;
    upstream.set_nodelay(true)?;
    relay.pair(client.as_raw_fd(), upstream.as_raw_fd())?;
    // What the client sent before the pairing is relayed too, in order.
    lbd_ebpf::kick(client.as_raw_fd())?;
    lbd_ebpf::kick(upstream.as_raw_fd())?;
    // Redirected data never shows here, but a read would still wake for
    // every ACK that frees send space (same wait queue) and answer EAGAIN:
    // wait for the end alone (POLLRDHUP), which such wake-ups skip.
    wait_for_end(&client)?;
    let _ = upstream.shutdown(Shutdown::Both);
    Ok(())
}

/// Waits (bounded by the run: wrk closes its connections) until the peer
/// ends or the socket fails.
fn wait_for_end(s: &TcpStream) -> std::io::Result<i16> {
    let mut pfd = libc::pollfd {
        fd: s.as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, -1) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if pfd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0 {
            return Ok(pfd.revents);
        }
    }
}

/// The median (upper middle) of `v`; 0 for none.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sockmap: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    procs::install_signal_handler()?;
    procs::become_subreaper();
    setup::ensure_packages()?;
    let relay = match SockPairer::load() {
        Ok(relay) => Arc::new(relay),
        Err(e) => {
            eprintln!("sockmap: skipping: the relay program cannot be loaded: {e}");
            return Ok(());
        }
    };
    let work = WorkDir::create()?;
    let logs = work.logs();
    let mut ports = Ports::new(23000);
    let mut backends = Backends::start(work.path(), &logs, &mut ports, Pin::Cpu(0))?;
    let member = backends.http_ports()[0];
    let script = work.path().join("report.lua");
    std::fs::write(&script, wrk::SCRIPT)?;

    // lbd, one worker, on CPU 1: its copy loop, and its `kernel_relay`.
    let mut lbds = Vec::new();
    let mut lbd_ports = Vec::new();
    for (name, extra) in [("lbd", ""), ("lbd-kernel", "kernel_relay = true\n")] {
        let port = ports.take()?;
        let cfg = work.path().join(format!("{name}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "[[listener]]\nname = \"http\"\nbind = \"127.0.0.1:{port}\"\npool = \"p\"\n\
                 client_idle = \"300s\"\nmember_idle = \"300s\"\n{extra}\n[[pool]]\nname = \"p\"\n\n\
                 [[pool.member]]\naddress = \"127.0.0.1\"\nport = {member}\n"
            ),
        )?;
        let argv = vec![
            cli.lbd.display().to_string(),
            "--workers".into(),
            "1".into(),
            "run".into(),
            "-c".into(),
            cfg.display().to_string(),
        ];
        let mut lbd = Guard::spawn(name, &argv, Pin::Cpu(1), &logs)?;
        procs::wait_listening(&mut lbd, port, Duration::from_secs(10))?;
        lbds.push(lbd);
        lbd_ports.push(port);
    }

    // HAProxy, one thread, on CPU 1: the issue's yardstick.
    let haproxy_port = ports.take()?;
    let haproxy_cfg = work.path().join("haproxy.cfg");
    std::fs::write(
        &haproxy_cfg,
        format!(
            "global\n  nbthread 1\n\ndefaults\n  mode tcp\n  timeout connect 5s\n  \
             timeout client 300s\n  timeout server 300s\n\nlisten http\n  \
             bind 127.0.0.1:{haproxy_port}\n  server m 127.0.0.1:{member}\n"
        ),
    )?;
    let argv = vec![
        "haproxy".to_string(),
        "-db".into(),
        "-f".into(),
        haproxy_cfg.display().to_string(),
    ];
    let mut haproxy = Guard::spawn("haproxy", &argv, Pin::Cpu(1), &logs)?;
    procs::wait_listening(&mut haproxy, haproxy_port, Duration::from_secs(10))?;

    // The relay's acceptor thread (its per-connection threads sleep in a
    // read; the data never passes them).
    let relay_port = ports.take()?;
    let listener = TcpListener::bind(("127.0.0.1", relay_port))?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let (relay, stop) = (Arc::clone(&relay), Arc::clone(&stop));
        std::thread::spawn(move || serve_relay(listener, member, relay, stop));
    }

    let paths = [
        ("direct", member),
        ("lbd", lbd_ports[0]),
        ("lbd-kernel", lbd_ports[1]),
        ("haproxy", haproxy_port),
        ("sockmap", relay_port),
    ];
    let scenarios = [
        ("keep-alive /100b", "/100b", 50u32, false),
        ("new connection per request /100b", "/100b", 50, true),
        ("1 MiB objects", "/1m", 10, false),
    ];
    let mut rows: Vec<Vec<Vec<Row>>> = scenarios
        .iter()
        .map(|_| paths.iter().map(|_| Vec::new()).collect())
        .collect();
    for rep in 0..cli.reps {
        for (si, (scenario, path, conns, close)) in scenarios.iter().enumerate() {
            for (pi, (name, port)) in paths.iter().enumerate() {
                let url = format!("http://127.0.0.1:{port}{path}");
                let row = measure(&url, *conns, *close, cli.duration, &script, &logs)?;
                eprintln!(
                    "sockmap: [{}/{}] {scenario} {name:8} req/s {:.0} GiB/s {:.2} p50 {:.0} µs \
                     p99 {:.0} µs machine CPU {:.2} µs/req {:.3} s/GiB failed {}",
                    rep + 1,
                    cli.reps,
                    row.req_s,
                    row.gib_s,
                    row.p50_us,
                    row.p99_us,
                    row.machine_us_per_req,
                    row.machine_s_per_gib,
                    row.failed
                );
                rows[si][pi].push(row);
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    drop(lbds);
    drop(haproxy);
    backends.stop();

    println!(
        "{} reps of {:?}, medians; machine CPU from /proc/stat (all CPUs), wrk and nginx included",
        cli.reps, cli.duration
    );
    for (si, (scenario, _, conns, _)) in scenarios.iter().enumerate() {
        let med = |pi: usize, f: fn(&Row) -> f64| median(rows[si][pi].iter().map(f).collect());
        println!(
            "\n| {scenario} (wrk -c{conns}) | req/s | GiB/s | p50 µs | p99 µs | machine CPU µs/req \
             | over direct µs/req | machine CPU-s/GiB | failed |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        let direct_cpu = med(0, |r| r.machine_us_per_req);
        for (pi, (name, _)) in paths.iter().enumerate() {
            let cpu = med(pi, |r| r.machine_us_per_req);
            println!(
                "| {name} | {:.0} | {:.2} | {:.0} | {:.0} | {:.2} | {:.2} | {:.3} | {} |",
                med(pi, |r| r.req_s),
                med(pi, |r| r.gib_s),
                med(pi, |r| r.p50_us),
                med(pi, |r| r.p99_us),
                cpu,
                cpu - direct_cpu,
                med(pi, |r| r.machine_s_per_gib),
                rows[si][pi].iter().map(|r| r.failed).sum::<u64>()
            );
        }
    }
    Ok(())
}
