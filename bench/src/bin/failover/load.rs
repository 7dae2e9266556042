//! The clients: threads that each loop connect -> read one line -> close
//! through lbd until a deadline, recording every attempt.

use std::io::{BufRead, BufReader, ErrorKind};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};

use crate::now_us;

/// Limit for the connect and for the read of one attempt.
pub const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// One client attempt: wall-clock start and end (µs since the epoch) and
/// the member's tag, or what went wrong.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub start_us: i64,
    pub end_us: i64,
    pub outcome: Result<String, String>,
}

/// How many clients, and their pause after each attempt.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub clients: usize,
    pub pace: Duration,
}

/// The running clients. Dropping it stops and joins them (each attempt is
/// bounded by 2 x [`IO_TIMEOUT`]).
pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Vec<Attempt>>>,
}

impl Load {
    /// `shape.clients` threads against `target`, starting attempts until
    /// `until`.
    pub fn start(target: SocketAddr, shape: &Shape, until: Instant) -> Result<Load> {
        let mut load = Load {
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
        };
        let pace = shape.pace;
        for i in 0..shape.clients {
            let stop = Arc::clone(&load.stop);
            let t = std::thread::Builder::new()
                .name(format!("client-{i}"))
                .spawn(move || client(target, until, pace, &stop))
                .context("spawning a client thread")?;
            load.threads.push(t);
        }
        Ok(load)
    }

    /// Waits for every client and returns all attempts, by start time.
    pub fn finish(mut self) -> Result<Vec<Attempt>> {
        let mut all = Vec::new();
        for t in self.threads.drain(..) {
            all.extend(t.join().map_err(|_| anyhow!("a client thread panicked"))?);
        }
        all.sort_by_key(|a| a.start_us);
        Ok(all)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn client(target: SocketAddr, until: Instant, pace: Duration, stop: &AtomicBool) -> Vec<Attempt> {
    let mut attempts = Vec::new();
    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
        let start_us = now_us();
        let outcome = attempt(target);
        attempts.push(Attempt {
            start_us,
            end_us: now_us(),
            outcome,
        });
        std::thread::sleep(pace);
    }
    attempts
}

/// Connect, read one line, close. Errors name the step.
fn attempt(target: SocketAddr) -> Result<String, String> {
    let conn =
        TcpStream::connect_timeout(&target, IO_TIMEOUT).map_err(|e| describe("connect", &e))?;
    conn.set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|e| describe("set_read_timeout", &e))?;
    let mut line = String::new();
    match BufReader::new(conn).read_line(&mut line) {
        Ok(_) if line.ends_with('\n') => Ok(line.trim_end().to_string()),
        Ok(_) => Err(format!("read: closed after {:?} without a line", line)),
        Err(e) => Err(describe("read", &e)),
    }
}

fn describe(step: &str, e: &std::io::Error) -> String {
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => {
            format!("{step}: timed out ({IO_TIMEOUT:?})")
        }
        _ => format!("{step}: {e}"),
    }
}
