//! Service threads (health checks, the admin server, the XDP fast path)
//! and what happens when code panics: no thread dies silently.
//!
//! * Every panic, in any thread or task, is logged through `tracing` with
//!   the thread's name and the panic's location ([`log_panics`]).
//! * A service thread that panics is started again after a back-off
//!   ([`spawn_restarting`]): 1 s, doubling to 30 s, back to 1 s after it
//!   ran for a minute. What it serves (checks, stats, XDP maps) comes back
//!   without operator action.
//! * A data-plane worker that panics cannot be restarted in place (its
//!   connections are gone with it); the server notices and lbd exits
//!   non-zero after draining the other workers (see `Server::worker_died`).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use tracing::error;

/// First wait before a panicked service starts again.
const RESTART_BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest wait between restarts of a service that keeps panicking.
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A service that ran this long before panicking starts its back-off anew.
const STABLE_RUN: Duration = Duration::from_secs(60);

/// Logs every panic through `tracing` (to lbd's log, with timestamps)
/// instead of bare stderr, naming the thread. Call once at start.
pub fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("unnamed");
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".to_owned());
        let location = info
            .location()
            .map_or_else(String::new, |l| format!(" at {}:{}", l.file(), l.line()));
        error!("thread {name} panicked{location}: {message}");
    }));
}

/// Runs `body` on a new thread called `name`; if it panics, logs it and
/// runs it again after a back-off, until it returns normally.
pub fn spawn_restarting(
    name: &str,
    mut body: impl FnMut() + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let thread_name = name.to_owned();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let mut backoff = RESTART_BACKOFF_MIN;
            loop {
                let started = Instant::now();
                if catch_unwind(AssertUnwindSafe(&mut body)).is_ok() {
                    return;
                }
                if started.elapsed() >= STABLE_RUN {
                    backoff = RESTART_BACKOFF_MIN;
                }
                error!(
                    "{thread_name} stopped by a panic; restarting it in {}",
                    humantime::format_duration(backoff)
                );
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(RESTART_BACKOFF_MAX);
            }
        })
}

/// Fault injection for the tests of the above, in debug builds only (the
/// test profile): panics once per process at `point` when the environment
/// variable `LBD_TEST_PANIC` names it. Release builds compile it away.
pub fn injected_panic(point: &str) {
    #[cfg(debug_assertions)]
    {
        static FIRED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
        let wanted =
            std::env::var("LBD_TEST_PANIC").is_ok_and(|v| v.split(',').any(|p| p == point));
        if !wanted {
            return;
        }
        let mut fired = FIRED.lock().unwrap_or_else(|p| p.into_inner());
        if fired.iter().any(|p| p == point) {
            return;
        }
        fired.push(point.to_owned());
        drop(fired);
        panic!("injected panic at {point} (LBD_TEST_PANIC)");
    }
    #[cfg(not(debug_assertions))]
    let _ = point;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::sync::Arc;

    #[test]
    fn a_panicking_service_runs_again_until_it_returns() {
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&runs);
        let started = Instant::now();
        let handle = spawn_restarting("test-service", move || {
            if counted.fetch_add(1, SeqCst) < 2 {
                panic!("test panic");
            }
        })
        .expect("spawn");
        handle.join().expect("the thread itself never dies of it");
        assert_eq!(runs.load(SeqCst), 3);
        // Two restarts: 1 s, then 2 s of back-off.
        assert!(started.elapsed() >= Duration::from_secs(3));
    }
}
