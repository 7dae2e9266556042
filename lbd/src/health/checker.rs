//! The check tasks: one per checked member, kept in step with the config.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lbd_config::{AdminState, CheckKind, HealthCheck};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::context::Shared;
use crate::service::{BackgroundService, Shutdown};
use crate::snapshot::Snapshot;
use crate::state::{now_ms, LogLimiter, MemberState, Transition};

use super::external::Subject;
use super::probe::Probe;

/// The health-check service ("lbd-health"): follows every snapshot the
/// data plane publishes, until shutdown, when every check task stops with
/// its runtime. A panic restarts it (and every check task with it).
pub struct HealthService {
    pub shared: Arc<Shared>,
}

impl BackgroundService for HealthService {
    fn name(&self) -> &'static str {
        "lbd-health"
    }

    fn run(&mut self, shutdown: &Shutdown) {
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime.block_on(async {
                tokio::select! {
                    () = supervise(Arc::clone(&self.shared)) => {}
                    () = shutdown.fired() => {}
                }
            }),
            Err(e) => panic!("cannot start the health-check runtime: {e}"),
        }
    }
}

/// How often the supervisor looks for check tasks that ended by a panic
/// (a task never ends otherwise), besides every config change.
const TASK_WATCH: Duration = Duration::from_secs(1);

/// One running check task.
struct Running {
    check: Arc<HealthCheck>,
    target: SocketAddr,
    subject: Arc<Subject>,
    state: Arc<MemberState>,
    task: JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Keeps the set of check tasks equal to what the current snapshot wants,
/// restarting any that a panic ended.
async fn supervise(shared: Arc<Shared>) {
    let mut changed = shared.subscribe();
    let mut running: HashMap<Arc<str>, Running> = HashMap::new();
    let mut watch = tokio::time::interval(TASK_WATCH);
    watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    crate::fault::injected_panic("health");
    loop {
        sync_tasks(&shared.snapshot(), &mut running);
        tokio::select! {
            result = changed.changed() => if result.is_err() {
                return;
            },
            _ = watch.tick() => {}
        }
    }
}

/// Starts, restarts and stops tasks so that exactly the members of pools
/// with health checks have one, with the current settings.
fn sync_tasks(snap: &Snapshot, running: &mut HashMap<Arc<str>, Running>) {
    let mut wanted: HashSet<Arc<str>> = HashSet::new();
    for (pool_index, pool) in snap.pools.iter().enumerate() {
        let Some(check) = &pool.health else { continue };
        // Only an external check tells the program about its member (names,
        // positions): only there do they restart the task when changed.
        let external = check.kind == CheckKind::External;
        // One probe per pool, built (TLS files read) only when a task has
        // to start: a reload that leaves the pool alone costs nothing. A
        // setup error (a CA file removed since the config was validated)
        // makes every check of the pool fail with it.
        let mut probe: Option<Arc<Result<Probe, String>>> = None;
        for (member_index, m) in pool.members.iter().enumerate() {
            wanted.insert(Arc::clone(&m.label));
            let target = m.cfg.check_addr();
            let subject = Subject::new(&pool.name, pool_index + 1, &m.cfg, member_index + 1);
            let (unchanged, ended) = match running.get(&m.label) {
                Some(r) => (
                    r.check == *check
                        && r.target == target
                        && Arc::ptr_eq(&r.state, &m.state)
                        && (!external || *r.subject == subject),
                    r.task.is_finished(),
                ),
                None => (false, false),
            };
            if ended {
                // The panic itself was logged where it happened.
                error!(member = %m.label, "health checks of {} stopped by a panic; restarting them", m.label);
            } else if unchanged {
                continue;
            }
            let probe = probe.get_or_insert_with(|| {
                Arc::new(Probe::new(check).map_err(|e| {
                    error!(pool = %pool.name, "health checks cannot run: {e}");
                    format!("check setup: {e}")
                }))
            });
            let subject = Arc::new(subject);
            let task = tokio::spawn(check_loop(
                Arc::clone(&m.label),
                Arc::clone(&m.state),
                target,
                Arc::clone(&subject),
                Arc::clone(check),
                Arc::clone(probe),
            ));
            running.insert(
                Arc::clone(&m.label),
                Running {
                    check: Arc::clone(check),
                    target,
                    subject,
                    state: Arc::clone(&m.state),
                    task,
                },
            );
        }
    }
    running.retain(|label, _| wanted.contains(label));
}

/// Checks one member every `interval` until aborted. Members in maint, and
/// those whose checks are paused (`disable health`), are not checked.
async fn check_loop(
    label: Arc<str>,
    state: Arc<MemberState>,
    target: SocketAddr,
    subject: Arc<Subject>,
    check: Arc<HealthCheck>,
    probe: Arc<Result<Probe, String>>,
) {
    tokio::time::sleep(spread(&label, check.interval)).await;
    let mut ticks = tokio::time::interval(check.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if state.admin() == AdminState::Maint || state.checks_paused() {
            continue;
        }
        let (passed, summary, took) = match probe.as_ref() {
            Ok(probe) => {
                let current = state.active.load(std::sync::atomic::Ordering::Relaxed);
                let outcome = probe.run(target, &subject, current).await;
                match outcome.result {
                    Ok(passed) => (true, passed.to_string(), outcome.took),
                    Err(failure) if failure.is_local() => {
                        // lbd's own shortage says nothing about the member.
                        if LOCAL_SHORTAGE_LOG.allow(now_ms()) {
                            warn!(member = %label, "health check of {label} not counted: {failure} (logged at most every 10s)");
                        }
                        continue;
                    }
                    Err(failure) => (false, failure.to_string(), outcome.took),
                }
            }
            Err(setup) => (false, setup.clone(), Duration::ZERO),
        };
        let since = state.record().changed_at.elapsed();
        let transition = state.record_check(passed, summary.clone(), took, check.rise, check.fall);
        log_transition(&label, transition, &summary, took, since, &state);
    }
}

/// Keeps "check not counted" warnings (lbd out of descriptors) to one per
/// 10 s for all members together.
static LOCAL_SHORTAGE_LOG: LogLimiter = LogLimiter::new(10_000);

/// Logs what a check changed: one line per transition.
fn log_transition(
    label: &str,
    transition: Transition,
    summary: &str,
    took: Duration,
    since: Duration,
    state: &MemberState,
) {
    let took = short_duration(took);
    let since = humantime::format_duration(Duration::from_secs(since.as_secs()));
    match transition {
        Transition::None => {}
        Transition::Confirmed => {
            info!(member = %label, "member {label} checked: up ({summary} in {took})");
        }
        Transition::WentDown => warn!(
            member = %label,
            "member {label} is DOWN: {summary} (check took {took}; {} failure(s) in a row; was up for {since})",
            state.fall_streak().max(1)
        ),
        Transition::WentUp => info!(
            member = %label,
            "member {label} is UP: {summary} (check took {took}; was down for {since})"
        ),
    }
}

/// The delay before a member's first check: a fixed fraction of `interval`
/// taken from a hash of its label.
fn spread(label: &str, interval: Duration) -> Duration {
    let mut hasher = std::hash::DefaultHasher::new();
    label.hash(&mut hasher);
    let fraction = (hasher.finish() % 1000) as u32;
    interval * fraction / 1000
}

/// A check duration for logs: `0.4ms`, `12ms`, `1.5s`.
fn short_duration(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.1}ms")
    } else if ms < 1000.0 {
        format!("{ms:.0}ms")
    } else {
        format!("{:.1}s", ms / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_durations() {
        assert_eq!(short_duration(Duration::from_micros(420)), "0.4ms");
        assert_eq!(short_duration(Duration::from_millis(12)), "12ms");
        assert_eq!(short_duration(Duration::from_millis(1500)), "1.5s");
    }

    #[test]
    fn spread_is_stable_within_the_interval_and_spreads_members() {
        let interval = Duration::from_secs(2);
        let offsets: Vec<Duration> = (0..200)
            .map(|i| spread(&format!("api/10.0.{}.{}:6443", i / 250, i % 250), interval))
            .collect();
        assert!(offsets.iter().all(|&d| d < interval));
        assert_eq!(offsets[7], spread("api/10.0.0.7:6443", interval));
        // 200 members over 10 slices of the interval: none holds more than
        // a third of them (a herd would put them all in one).
        let mut slices = [0usize; 10];
        for d in &offsets {
            slices[(d.as_millis() / 200) as usize] += 1;
        }
        assert!(slices.iter().all(|&n| n < 67), "{slices:?}");
    }
}
