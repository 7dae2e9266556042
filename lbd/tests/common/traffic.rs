//! Steady traffic for tests of reloads and takeovers: clients opening new
//! connections all along.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{hit, WAIT};

/// Client loops opening new connections through `addr` (each reads a
/// member's tag line) until stopped, counting successes and failures.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    errors: Arc<std::sync::Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Traffic {
    /// `clients` concurrent loops; each stops by itself after 5 minutes.
    pub fn start(addr: SocketAddr, clients: usize) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
        let tasks = (0..clients)
            .map(|_| {
                let (stop, ok, failed, errors) = (
                    Arc::clone(&stop),
                    Arc::clone(&ok),
                    Arc::clone(&failed),
                    Arc::clone(&errors),
                );
                tokio::spawn(async move {
                    let deadline = Instant::now() + Duration::from_secs(300);
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        match hit(addr).await {
                            Ok(tag) if !tag.is_empty() => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            other => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                let mut e = errors.lock().unwrap();
                                if e.len() < 10 {
                                    e.push(format!("{other:?}"));
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        Traffic {
            stop,
            ok,
            failed,
            errors,
            tasks,
        }
    }

    pub fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Waits (bounded) until `n` more connections succeeded.
    pub async fn flows(&self, n: u64) {
        let target = self.ok() + n;
        let deadline = Instant::now() + WAIT;
        while self.ok() < target {
            assert!(
                Instant::now() < deadline,
                "traffic stalled: {} ok, {} failed {:?}",
                self.ok(),
                self.failed.load(Ordering::Relaxed),
                self.errors.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stops the clients; returns (ok, failed, first errors).
    pub async fn finish(self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = tokio::time::timeout(WAIT, t).await;
        }
        let errors = self.errors.lock().unwrap().clone();
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            errors,
        )
    }
}
