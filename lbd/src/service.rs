//! Background services (health checks, the admin server, the XDP fast
//! path), how they stop, and what happens when code panics: no thread dies
//! silently.
//!
//! * A service is a [`BackgroundService`] on a thread of its own, started
//!   by [`Services::start`] (in the style of pingora's background
//!   services). It runs until the [`Shutdown`] signal it is given fires,
//!   then cleans up and returns: the XDP service detaches its program, the
//!   admin service removes its unix socket, the health service stops its
//!   checks. `lbd run` fires it on SIGTERM/SIGINT after the drain
//!   ([`Services::shutdown`]).
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
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{error, info, warn};

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

/// A thread that serves something in the background until shutdown.
pub trait BackgroundService: Send + 'static {
    /// The thread's name (`lbd-health`, ...), also used in logs.
    fn name(&self) -> &'static str;

    /// Serves until `shutdown` fires, then cleans up what it set up outside
    /// the process (sockets, kernel programs) and returns. If it panics
    /// instead, it is called again after a back-off (see the module doc).
    fn run(&mut self, shutdown: &Shutdown);
}

/// The signal that tells background services to stop. Cheap to clone;
/// fires once, for good.
#[derive(Clone)]
pub struct Shutdown(Arc<ShutdownInner>);

struct ShutdownInner {
    fired: Mutex<bool>,
    /// Wakes threads in [`Shutdown::sleep`].
    wake: Condvar,
    /// Wakes tasks in [`Shutdown::fired`].
    tasks: watch::Sender<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown(Arc::new(ShutdownInner {
            fired: Mutex::new(false),
            wake: Condvar::new(),
            tasks: watch::channel(false).0,
        }))
    }
}

impl Shutdown {
    /// Fires the signal.
    pub fn fire(&self) {
        *self.0.fired.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.0.wake.notify_all();
        self.0.tasks.send_replace(true);
    }

    /// Whether it fired.
    pub fn is_fired(&self) -> bool {
        *self.0.fired.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sleeps for `duration` or until the signal fires (for service
    /// threads without a runtime). Returns whether it fired.
    pub fn sleep(&self, duration: Duration) -> bool {
        let fired = self.0.fired.lock().unwrap_or_else(|p| p.into_inner());
        let (fired, _) = self
            .0
            .wake
            .wait_timeout_while(fired, duration, |f| !*f)
            .unwrap_or_else(|p| p.into_inner());
        *fired
    }

    /// Completes when the signal fires (for services on a tokio runtime).
    pub async fn fired(&self) {
        let mut fired = self.0.tasks.subscribe();
        // Err only if the sender is gone, which `self` prevents.
        let _ = fired.wait_for(|f| *f).await;
    }
}

/// The background services of a process, and their shutdown signal.
#[derive(Default)]
pub struct Services {
    shutdown: Shutdown,
    running: Mutex<Vec<(&'static str, JoinHandle<()>)>>,
}

impl Services {
    /// Starts `service` on its own thread, restarted after a panic until
    /// it returns (on shutdown).
    pub fn start(&self, mut service: impl BackgroundService) -> std::io::Result<()> {
        let name = service.name();
        let shutdown = self.shutdown.clone();
        let handle = spawn_restarting(name, shutdown.clone(), move || service.run(&shutdown))?;
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((name, handle));
        Ok(())
    }

    /// The signal the services get.
    pub fn signal(&self) -> &Shutdown {
        &self.shutdown
    }

    /// Fires the shutdown signal and waits up to `timeout` for every
    /// service to clean up and stop. Returns the names of those that did
    /// not stop in time (logged).
    pub fn shutdown(&self, timeout: Duration) -> Vec<&'static str> {
        self.shutdown.fire();
        let running = std::mem::take(&mut *self.running.lock().unwrap_or_else(|p| p.into_inner()));
        let deadline = Instant::now() + timeout;
        let mut late = Vec::new();
        for (name, handle) in running {
            while !handle.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if handle.is_finished() {
                let _ = handle.join();
                info!("{name} stopped");
            } else {
                warn!(
                    "{name} did not stop within {}",
                    humantime::format_duration(timeout)
                );
                late.push(name);
            }
        }
        late
    }
}

/// Runs `body` on a new thread called `name`; if it panics, logs it and
/// runs it again after a back-off, until it returns normally or `shutdown`
/// fires.
pub fn spawn_restarting(
    name: &str,
    shutdown: Shutdown,
    mut body: impl FnMut() + Send + 'static,
) -> std::io::Result<JoinHandle<()>> {
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
                if shutdown.is_fired() {
                    error!("{thread_name} stopped by a panic while shutting down");
                    return;
                }
                if started.elapsed() >= STABLE_RUN {
                    backoff = RESTART_BACKOFF_MIN;
                }
                error!(
                    "{thread_name} stopped by a panic; restarting it in {}",
                    humantime::format_duration(backoff)
                );
                if shutdown.sleep(backoff) {
                    return;
                }
                backoff = (backoff * 2).min(RESTART_BACKOFF_MAX);
            }
        })
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
        let handle = spawn_restarting("test-service", Shutdown::default(), move || {
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

    /// Serves until shutdown, then records that it cleaned up.
    struct UntilShutdown {
        cleaned: Arc<AtomicUsize>,
    }

    impl BackgroundService for UntilShutdown {
        fn name(&self) -> &'static str {
            "test-until-shutdown"
        }

        fn run(&mut self, shutdown: &Shutdown) {
            while !shutdown.sleep(Duration::from_secs(60)) {}
            self.cleaned.fetch_add(1, SeqCst);
        }
    }

    /// Ignores the signal for a while.
    struct Stubborn;

    impl BackgroundService for Stubborn {
        fn name(&self) -> &'static str {
            "test-stubborn"
        }

        fn run(&mut self, _: &Shutdown) {
            std::thread::sleep(Duration::from_secs(2));
        }
    }

    #[test]
    fn shutdown_stops_every_service_after_its_clean_up() {
        let services = Services::default();
        let cleaned = Arc::new(AtomicUsize::new(0));
        for _ in 0..2 {
            let cleaned = Arc::clone(&cleaned);
            services.start(UntilShutdown { cleaned }).expect("start");
        }
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(cleaned.load(SeqCst), 0, "running until the signal");
        let started = Instant::now();
        assert!(services.shutdown(Duration::from_secs(20)).is_empty());
        assert_eq!(cleaned.load(SeqCst), 2);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "woken, not polled"
        );
        assert!(services.signal().is_fired());
    }

    #[test]
    fn a_service_that_does_not_stop_in_time_is_named() {
        let services = Services::default();
        services.start(Stubborn).expect("start");
        assert_eq!(
            services.shutdown(Duration::from_millis(100)),
            ["test-stubborn"]
        );
    }

    #[test]
    fn tasks_see_the_signal_fire() {
        let shutdown = Shutdown::default();
        let firing = shutdown.clone();
        let fire = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            firing.fire();
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let waited = runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), shutdown.fired()).await
        });
        assert!(waited.is_ok(), "fired() completed");
        fire.join().expect("fire thread");
        // Already fired: completes at once.
        runtime.block_on(shutdown.fired());
    }

    #[test]
    fn a_panicking_service_is_not_restarted_after_shutdown() {
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&runs);
        let shutdown = Shutdown::default();
        let handle = spawn_restarting("test-panics", shutdown.clone(), move || {
            counted.fetch_add(1, SeqCst);
            panic!("test panic");
        })
        .expect("spawn");
        std::thread::sleep(Duration::from_millis(100));
        shutdown.fire();
        handle.join().expect("ends without a restart");
        assert_eq!(
            runs.load(SeqCst),
            1,
            "woken from its back-off, not run again"
        );
    }
}
