//! Runtime state that outlives a single config snapshot: per-listener and
//! per-member counters and live member status.
//!
//! Everything here is shared between worker threads without locks. Counters
//! are per worker ([`PerWorker`]): each worker only ever writes its own
//! cache-line-padded slot, and readers (stats, metrics, drain) sum the slots.
//! A reload carries these objects over for listeners and members that still
//! exist, so counters and active-connection counts do not reset.

use std::sync::atomic::{
    AtomicBool, AtomicU32, AtomicU64, AtomicU8,
    Ordering::{Relaxed, SeqCst},
};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use lbd_config::AdminState;

use crate::events::{MEMBER_EVENTS, SESSION_EVENTS};

/// Pads `T` to its own cache lines so two workers never write the same line.
#[repr(align(128))]
#[derive(Debug, Default)]
pub struct Padded<T>(pub T);

/// One `T` per worker thread, each on its own cache lines.
#[derive(Debug)]
pub struct PerWorker<T> {
    slots: Box<[Padded<T>]>,
}

impl<T: Default> PerWorker<T> {
    pub fn new(workers: usize) -> Self {
        let slots = (0..workers.max(1)).map(|_| Padded::default()).collect();
        PerWorker { slots }
    }
}

impl<T> PerWorker<T> {
    /// The slot of worker `id`.
    pub fn get(&self, id: usize) -> &T {
        &self.slots[id % self.slots.len()].0
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().map(|p| &p.0)
    }

    /// Sums one field over all workers.
    pub fn sum(&self, field: impl Fn(&T) -> &AtomicU64) -> u64 {
        self.iter().map(|t| field(t).load(Relaxed)).sum()
    }
}

/// Adds one to a counter that only this worker writes.
#[inline]
pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Relaxed);
}

/// Adds `n` to a counter that only this worker writes.
#[inline]
pub fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Relaxed);
}

/// Per-worker counters of one listener.
#[derive(Debug, Default)]
pub struct ListenerCounters {
    /// Connections accepted (before any check).
    pub accepted: AtomicU64,
    /// Refused by `allowed_cidrs`.
    pub denied_cidr: AtomicU64,
    /// Refused because `connection_limit` was reached.
    pub limit_hits: AtomicU64,
    /// Closed because no member could be connected.
    pub no_member: AtomicU64,
    /// Closed because lbd ran out of a local resource (descriptors, memory,
    /// local ports) while connecting to a member.
    pub local_errors: AtomicU64,
    /// Hedged connects started (`connect_hedge`): a second member's connect
    /// begun because the first had not completed after the hedge delay.
    pub hedges: AtomicU64,
    /// Hedged connects won by the hedge: the client was served by the
    /// second member.
    pub hedges_won: AtomicU64,
    /// Bytes from clients to members.
    pub bytes_in: AtomicU64,
    /// Bytes from members to clients.
    pub bytes_out: AtomicU64,
    /// UDP: datagrams from clients, and to clients.
    pub datagrams_in: AtomicU64,
    pub datagrams_out: AtomicU64,
    /// UDP: datagrams dropped because a send failed (no room in the
    /// socket's buffer, too big for the path, the member refused).
    pub dropped_send: AtomicU64,
}

/// A listener's state across reloads (keyed by listener name).
#[derive(Debug)]
pub struct ListenerState {
    /// Established client connections right now (all workers).
    pub active: AtomicU64,
    /// The highest `active` has been.
    pub max_active: AtomicU64,
    pub counters: PerWorker<ListenerCounters>,
    /// Keeps "no usable member" warnings to one per 10 s.
    pub warn_limiter: LogLimiter,
    /// Keeps "out of a local resource" warnings to one per 10 s.
    pub local_error_limiter: LogLimiter,
}

impl ListenerState {
    pub fn new(workers: usize) -> Self {
        ListenerState {
            active: AtomicU64::new(0),
            max_active: AtomicU64::new(0),
            counters: PerWorker::new(workers),
            warn_limiter: LogLimiter::new(10_000),
            local_error_limiter: LogLimiter::new(10_000),
        }
    }

    /// Takes one of `limit` connection slots, or `None` if all are taken.
    /// The slot is given back when the returned guard is dropped.
    pub fn try_acquire(self: &Arc<Self>, limit: u32) -> Option<Slot<ListenerState>> {
        let prev = self.active.fetch_add(1, Relaxed);
        if prev >= u64::from(limit) {
            self.active.fetch_sub(1, Relaxed);
            return None;
        }
        // Read first: once the peak is reached, nothing is written.
        if self.max_active.load(Relaxed) <= prev {
            self.max_active.fetch_max(prev + 1, Relaxed);
        }
        Some(Slot(Arc::clone(self)))
    }
}

/// Something with an active-connections gauge.
pub trait Gauge {
    fn gauge(&self) -> &AtomicU64;
}

impl Gauge for ListenerState {
    fn gauge(&self) -> &AtomicU64 {
        &self.active
    }
}

impl Gauge for MemberState {
    fn gauge(&self) -> &AtomicU64 {
        &self.active
    }
}

impl Gauge for WorkerCounters {
    fn gauge(&self) -> &AtomicU64 {
        &self.active
    }
}

/// One active connection counted in `T`'s gauge; uncounted on drop. Owns an
/// `Arc` so a connection does not keep a whole config snapshot alive.
#[derive(Debug)]
pub struct Slot<T: Gauge>(Arc<T>);

impl<T: Gauge> Slot<T> {
    pub fn enter(of: &Arc<T>) -> Slot<T> {
        of.gauge().fetch_add(1, Relaxed);
        Slot(Arc::clone(of))
    }

    pub fn state(&self) -> &Arc<T> {
        &self.0
    }
}

impl<T: Gauge> Drop for Slot<T> {
    fn drop(&mut self) {
        self.0.gauge().fetch_sub(1, Relaxed);
    }
}

/// Per-worker counters of one member.
#[derive(Debug, Default)]
pub struct MemberCounters {
    /// Connections established to this member.
    pub connections: AtomicU64,
    /// Failed connect attempts (refused, unreachable, timed out).
    pub connect_errors: AtomicU64,
    /// Connections that were sent to another member after failing here.
    pub retried_away: AtomicU64,
    /// Established connections closed because the member went down or
    /// into maint (pool `on_down` / `on_maint = "shutdown_sessions"`).
    pub sessions_shutdown: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// UDP: datagrams sent to the member, and received from it.
    pub datagrams_in: AtomicU64,
    pub datagrams_out: AtomicU64,
}

/// Health of a member as decided by health checks and failed connects.
/// Members of pools without health checks stay [`Health::Up`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Health {
    Up = 0,
    Down = 1,
}

/// What an operator sees for a member: its admin state and health together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Up,
    Down,
    /// Admin drain: no new connections; still checked.
    Drain,
    /// Admin maint: no new connections, no checks.
    Maint,
    /// The pool has no health checks; the member takes traffic.
    NoCheck,
}

impl Status {
    /// Lower-case name for logs, stats and metrics labels.
    pub const fn name(self) -> &'static str {
        match self {
            Status::Up => "up",
            Status::Down => "down",
            Status::Drain => "drain",
            Status::Maint => "maint",
            Status::NoCheck => "no_check",
        }
    }
}

/// What one health-check result (or a failed connect) changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Nothing an operator needs to hear about.
    None,
    /// The first check of a new member passed: it is confirmed up.
    Confirmed,
    WentDown,
    WentUp,
}

/// The last health-check result and the last state change, for logs and
/// the stats page. Only the health checker and readers of stats touch it.
#[derive(Debug, Clone)]
pub struct CheckRecord {
    /// `(passed, "HTTP 503", how long the check took)` of the last check.
    pub last: Option<(bool, String, Duration)>,
    /// When the health last changed (or the member appeared).
    pub changed_at: Instant,
}

/// After a failed connect a member is skipped for this long, doubling with
/// each further consecutive failure up to [`PASSIVE_BACKOFF_MAX`]. The next
/// real connection after that is the probe; one success clears it.
pub const PASSIVE_BACKOFF_BASE: Duration = Duration::from_secs(1);
pub const PASSIVE_BACKOFF_MAX: Duration = Duration::from_secs(16);

/// A member's live state across reloads (keyed by pool name and address).
///
/// Health follows HAProxy's model: `fall` consecutive failures take an up
/// member down, `rise` consecutive passed checks bring a down member up.
/// Failed connects of real traffic count as failures too (HAProxy
/// `observe layer4`), but a successful proxied connect says nothing about
/// the check (a terminating apiserver still accepts connections while its
/// `/readyz` fails), so only a passed check ends a failure streak. A new
/// member starts up but unconfirmed: its first check decides at once
/// (HAProxy `init-state up`).
///
/// Two streaks, kept apart:
/// * the check streak (`fall_streak`, `rise_streak`): active checks, plus
///   failed connects of checked pools; ended only by a check result;
/// * the passive streak (`connect_failures`): failed connects in a row,
///   which set the member aside for a back-off; ended by a successful
///   connect (or a passed check that brings the member up).
///
/// # Lifecycle
///
/// Three independent parts make a member's [`Status`]:
///
/// ```text
/// health (checked pools only; unchecked members stay Up):
///
///   Up, unconfirmed --first check passes--------------> Up (Transition::Confirmed)
///   Up, unconfirmed --first check fails---------------> Down (WentDown)
///   Up --`fall` failures in a row (failed checks,
///        failed connects of real traffic)-------------> Down (WentDown)
///   Up --a passed check-------------------------------> Up, streak reset
///   Up --a successful proxied connect-----------------> Up, streak untouched
///   Down --`rise` passed checks in a row--------------> Up (WentUp)
///   Down --a failed check-----------------------------> Down, rise streak reset
///   any --the pool's [pool.health] removed------------> Up, unconfirmed
///   any --a check lbd could not open (EMFILE...)------> unchanged, not counted
///
/// admin (from the config, the API or a reload):
///
///   Ready <--> Drain: no new connections, still checked
///   Ready/Drain --> Maint: no new connections, no checks; leaving Maint
///                   makes the next check decide at once (unconfirmed)
///
/// passive back-off (every pool):
///
///   clear --a failed connect--> skipped for 1 s, doubling per failure up to 16 s
///   skipped --a successful connect, or the member comes Up--> clear
///
/// slow start (pools with `slow_start`; see `balance::slow_start`):
///
///   Down --WentUp--> ramping: weight and max_connections grow over slow_start
///   Maint --leaving maint--> ramping the same way
///   (never at start or for a member a reload adds)
/// ```
///
/// With `max_connections`, a connection holds one of the member's slots
/// (`active`) from before its connect until it closes; slots are taken with
/// [`MemberState::try_take`], which never lets `active` pass the limit.
///
/// New connections go to members that are Up, Ready, not skipped, with a
/// weight above 0 (when every member is skipped, the skip is ignored; a
/// Down member is never tried). Established connections are not cut by
/// these transitions, except in pools with `on_down` / `on_maint =
/// "shutdown_sessions"`: every WentDown bumps `down_epoch` and every entry
/// into Maint bumps `maint_epoch` (whatever the config), and the workers'
/// sweepers (`proxy::sessions`) close the connections of those pools whose
/// member's epoch moved. A reload keeps the state of members whose pool
/// and address stay; new members start Up, unconfirmed.
#[derive(Debug)]
pub struct MemberState {
    /// Established connections right now (all workers); least_connections
    /// reads it.
    pub active: AtomicU64,
    admin: AtomicU8,
    health: AtomicU8,
    /// Whether the member's pool has health checks.
    checked: AtomicBool,
    /// Whether a check has decided this member's health since it appeared
    /// (or left maint).
    confirmed: AtomicBool,
    /// `disable health` (HAProxy's CLI): no checks, and failed connects do
    /// not count toward `fall`; the health stays as it was until `enable
    /// health`.
    checks_paused: AtomicBool,
    /// Failed checks and failed connects (of a checked pool) in a row since
    /// the last passed check. Only a passed check resets it.
    fall_streak: AtomicU32,
    /// Failed connects in a row since the last successful connect: the
    /// passive back-off. Says nothing about health checks.
    connect_failures: AtomicU32,
    /// Passed checks in a row while down.
    rise_streak: AtomicU32,
    /// Failed health checks, ever (HAProxy `chkfail`).
    pub check_failures: AtomicU64,
    /// Transitions from up to down, ever (HAProxy `chkdown`).
    pub went_down: AtomicU64,
    /// `now_ms()` before which new connections avoid this member.
    skip_until_ms: AtomicU64,
    /// Bumped on every transition to Down (`WentDown`).
    down_epoch: AtomicU64,
    /// Bumped on every entry into Maint.
    maint_epoch: AtomicU64,
    /// Bumped by `shutdown sessions server` (the stats socket).
    shutdown_epoch: AtomicU64,
    /// `now_ms()` (at least 1) when the member last came back into service
    /// (health up again, or out of maint): where slow start ramps from.
    /// 0: it never came back (as at start).
    back_since_ms: AtomicU64,
    record: Mutex<CheckRecord>,
    pub counters: PerWorker<MemberCounters>,
}

impl MemberState {
    pub fn new(workers: usize) -> Self {
        MemberState {
            active: AtomicU64::new(0),
            admin: AtomicU8::new(AdminState::Ready as u8),
            health: AtomicU8::new(Health::Up as u8),
            checked: AtomicBool::new(false),
            confirmed: AtomicBool::new(false),
            checks_paused: AtomicBool::new(false),
            fall_streak: AtomicU32::new(0),
            connect_failures: AtomicU32::new(0),
            rise_streak: AtomicU32::new(0),
            check_failures: AtomicU64::new(0),
            went_down: AtomicU64::new(0),
            skip_until_ms: AtomicU64::new(0),
            down_epoch: AtomicU64::new(0),
            maint_epoch: AtomicU64::new(0),
            shutdown_epoch: AtomicU64::new(0),
            back_since_ms: AtomicU64::new(0),
            record: Mutex::new(CheckRecord {
                last: None,
                changed_at: Instant::now(),
            }),
            counters: PerWorker::new(workers),
        }
    }

    pub fn health(&self) -> Health {
        match self.health.load(Relaxed) {
            0 => Health::Up,
            _ => Health::Down,
        }
    }

    pub fn admin(&self) -> AdminState {
        match self.admin.load(Relaxed) {
            0 => AdminState::Ready,
            1 => AdminState::Drain,
            _ => AdminState::Maint,
        }
    }

    /// Sets the admin state and returns the previous one. Entering maint
    /// (no checks) forgets the confirmation: the first check after it
    /// decides the health at once.
    pub fn set_admin(&self, state: AdminState) -> AdminState {
        let old = self.admin();
        self.admin.store(state as u8, Relaxed);
        if old != state {
            MEMBER_EVENTS.notify();
        }
        if state == AdminState::Maint && old != AdminState::Maint {
            self.confirmed.store(false, Relaxed);
            self.maint_epoch.fetch_add(1, SeqCst);
            SESSION_EVENTS.wake();
        }
        if old == AdminState::Maint && state != AdminState::Maint {
            self.came_back();
        }
        old
    }

    /// When the member last came back into service (`now_ms()`, at least
    /// 1), or 0 if it never did: where slow start ramps from.
    #[inline]
    pub fn back_since_ms(&self) -> u64 {
        self.back_since_ms.load(Relaxed)
    }

    fn came_back(&self) {
        self.back_since_ms.store(now_ms().max(1), Relaxed);
    }

    /// Takes one of the member's connection slots if fewer than `limit`
    /// are taken, with one compare-and-swap on `active` (retried only when
    /// another connection changed it meanwhile): `active` never exceeds
    /// `limit`, across all workers, without a lock. The slot is given back
    /// when the returned guard is dropped.
    #[inline]
    pub fn try_take(self: &Arc<Self>, limit: u64) -> Option<Slot<MemberState>> {
        let mut current = self.active.load(Relaxed);
        loop {
            if current >= limit {
                return None;
            }
            match self
                .active
                .compare_exchange_weak(current, current + 1, Relaxed, Relaxed)
            {
                Ok(_) => return Some(Slot(Arc::clone(self))),
                Err(now) => current = now,
            }
        }
    }

    /// Whether the member's pool has health checks. A member whose pool
    /// stops checking is up again (nothing would ever bring it back).
    pub fn set_checked(&self, checked: bool) {
        let was = self.checked.swap(checked, Relaxed);
        if was && !checked {
            self.confirmed.store(false, Relaxed);
            self.rise_streak.store(0, Relaxed);
            if self.health.swap(Health::Up as u8, Relaxed) != Health::Up as u8 {
                self.touch_changed();
            }
        }
    }

    /// Pauses (`disable health`) or resumes (`enable health`) the
    /// member's checks; returns whether they were paused.
    pub fn pause_checks(&self, paused: bool) -> bool {
        self.checks_paused.swap(paused, Relaxed)
    }

    pub fn checks_paused(&self) -> bool {
        self.checks_paused.load(Relaxed)
    }

    pub fn status(&self) -> Status {
        match (self.admin(), self.checked.load(Relaxed), self.health()) {
            (AdminState::Maint, _, _) => Status::Maint,
            (_, true, Health::Down) => Status::Down,
            (AdminState::Drain, _, _) => Status::Drain,
            (AdminState::Ready, false, _) => Status::NoCheck,
            // HAProxy shows an up server whose checks are disabled as
            // "no check" (a down one stays DOWN).
            (AdminState::Ready, true, Health::Up) if self.checks_paused() => Status::NoCheck,
            (AdminState::Ready, true, Health::Up) => Status::Up,
        }
    }

    pub fn record(&self) -> CheckRecord {
        self.record
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn touch_changed(&self) {
        self.record
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .changed_at = Instant::now();
        MEMBER_EVENTS.notify();
    }

    /// Failed checks and failed connects in a row since the last passed
    /// check.
    pub fn fall_streak(&self) -> u32 {
        self.fall_streak.load(Relaxed)
    }

    /// Passed checks in a row while down (for the stats).
    pub fn rise_streak(&self) -> u32 {
        self.rise_streak.load(Relaxed)
    }

    /// Whether a check decided the health since the member appeared (or
    /// left maint).
    pub fn confirmed(&self) -> bool {
        self.confirmed.load(Relaxed)
    }

    /// Whether new connections may go here. `ignore_passive` looks past the
    /// back-off after failed connects (used when every member is backing off:
    /// trying one is better than refusing the client).
    #[inline]
    pub fn takes_new_connections(&self, now_ms: u64, ignore_passive: bool) -> bool {
        self.health.load(Relaxed) == Health::Up as u8
            && self.admin.load(Relaxed) == AdminState::Ready as u8
            && (ignore_passive || now_ms >= self.skip_until_ms.load(Relaxed))
    }

    /// Records a successful connect: ends the passive back-off, and nothing
    /// else (the check streak is the checks' business). Returns how many
    /// failed connects in a row it ends (0 when there were none), so the
    /// caller can log a recovery once.
    #[inline]
    pub fn connect_succeeded(&self) -> u32 {
        // Read first: on the common path there is nothing to reset and no
        // shared cache line gets written.
        if self.connect_failures.load(Relaxed) == 0 {
            return 0;
        }
        self.skip_until_ms.store(0, Relaxed);
        self.connect_failures.swap(0, Relaxed)
    }

    /// Records a failed connect to the member and starts (or extends) the
    /// back-off. Returns the failed connects in a row, including this one.
    /// A checked pool also counts it toward `fall` with
    /// [`MemberState::failure_observed`].
    pub fn connect_failed(&self, now_ms: u64) -> u32 {
        let n = self
            .connect_failures
            .fetch_add(1, Relaxed)
            .saturating_add(1);
        let shift = (n - 1).min(8);
        let backoff = (PASSIVE_BACKOFF_BASE * (1u32 << shift)).min(PASSIVE_BACKOFF_MAX);
        self.skip_until_ms
            .store(now_ms.saturating_add(backoff.as_millis() as u64), Relaxed);
        n
    }

    /// Counts a failure seen in traffic toward `fall` (HAProxy `observe
    /// layer4`). Returns the failures in a row since the last passed check,
    /// including this one.
    pub fn failure_observed(&self) -> u32 {
        self.fall_streak.fetch_add(1, Relaxed).saturating_add(1)
    }

    /// Counts a failed connect in traffic to a member of a checked pool
    /// toward `fall` (HAProxy `observe layer4`): failed checks and failed
    /// connects in a row take it down without waiting for the next check;
    /// a successful connect does not end the streak. Returns the streak if
    /// this failure took the member down (so exactly one caller logs it).
    pub fn observe_connect_failure(&self, fall: u32) -> Option<u32> {
        if self.checks_paused() {
            return None;
        }
        let failures = self.failure_observed();
        (failures >= fall && self.mark_down()).then_some(failures)
    }

    /// Takes the member down if it is up. Returns whether this call did it
    /// (so exactly one caller logs the transition).
    pub fn mark_down(&self) -> bool {
        let went = self
            .health
            .compare_exchange(Health::Up as u8, Health::Down as u8, Relaxed, Relaxed)
            .is_ok();
        if went {
            self.rise_streak.store(0, Relaxed);
            self.confirmed.store(true, Relaxed);
            self.went_down.fetch_add(1, Relaxed);
            self.down_epoch.fetch_add(1, SeqCst);
            SESSION_EVENTS.wake();
            self.touch_changed();
        }
        went
    }

    /// How many times the member went down; read with the health after it
    /// (a connection that reads an epoch and then sees the member up is
    /// woken by the next bump).
    #[inline]
    pub fn down_epoch(&self) -> u64 {
        self.down_epoch.load(SeqCst)
    }

    /// How many times the member entered maint.
    #[inline]
    pub fn maint_epoch(&self) -> u64 {
        self.maint_epoch.load(SeqCst)
    }

    /// How many times `shutdown sessions server` was asked for.
    #[inline]
    pub fn shutdown_epoch(&self) -> u64 {
        self.shutdown_epoch.load(SeqCst)
    }

    /// `shutdown sessions server`: every worker closes the member's
    /// established connections (see `proxy::sessions`).
    pub fn shutdown_sessions(&self) {
        self.shutdown_epoch.fetch_add(1, SeqCst);
        SESSION_EVENTS.wake();
    }

    /// Applies one health-check result (`summary`: `"HTTP 503"`) under the
    /// pool's `rise` and `fall`, and records it for the stats page.
    pub fn record_check(
        &self,
        passed: bool,
        summary: String,
        took: Duration,
        rise: u32,
        fall: u32,
    ) -> Transition {
        let transition = if passed {
            self.check_passed(rise)
        } else {
            self.check_failed(fall)
        };
        let mut record = self.record.lock().unwrap_or_else(|p| p.into_inner());
        record.last = Some((passed, summary, took));
        transition
    }

    fn check_passed(&self, rise: u32) -> Transition {
        let first = !self.confirmed.swap(true, Relaxed);
        match self.health() {
            Health::Up => {
                self.fall_streak.store(0, Relaxed);
                if first {
                    Transition::Confirmed
                } else {
                    Transition::None
                }
            }
            Health::Down => {
                let streak = self.rise_streak.fetch_add(1, Relaxed).saturating_add(1);
                if streak < rise {
                    return Transition::None;
                }
                self.rise_streak.store(0, Relaxed);
                self.fall_streak.store(0, Relaxed);
                self.connect_failures.store(0, Relaxed);
                self.skip_until_ms.store(0, Relaxed);
                let went = self
                    .health
                    .compare_exchange(Health::Down as u8, Health::Up as u8, Relaxed, Relaxed)
                    .is_ok();
                if went {
                    self.came_back();
                    self.touch_changed();
                    Transition::WentUp
                } else {
                    Transition::None
                }
            }
        }
    }

    fn check_failed(&self, fall: u32) -> Transition {
        self.rise_streak.store(0, Relaxed);
        self.check_failures.fetch_add(1, Relaxed);
        let first = !self.confirmed.load(Relaxed);
        if self.health() == Health::Down {
            self.confirmed.store(true, Relaxed);
            return Transition::None;
        }
        let failures = self.fall_streak.fetch_add(1, Relaxed).saturating_add(1);
        if (first || failures >= fall) && self.mark_down() {
            Transition::WentDown
        } else {
            Transition::None
        }
    }
}

/// Per-worker counters that are not tied to a listener.
#[derive(Debug, Default)]
pub struct WorkerCounters {
    /// Client connections this worker is handling right now.
    pub active: AtomicU64,
}

/// Lets a repeated log line through at most once per period.
#[derive(Debug)]
pub struct LogLimiter {
    period_ms: u64,
    /// `now_ms() + 1` of the last line let through (0: never).
    last: AtomicU64,
}

impl LogLimiter {
    pub const fn new(period_ms: u64) -> Self {
        LogLimiter {
            period_ms,
            last: AtomicU64::new(0),
        }
    }

    pub fn allow(&self, now_ms: u64) -> bool {
        let last = self.last.load(Relaxed);
        if last != 0 && now_ms + 1 < last + self.period_ms {
            return false;
        }
        self.last
            .compare_exchange(last, now_ms + 1, Relaxed, Relaxed)
            .is_ok()
    }
}

/// Milliseconds on a monotonic clock that starts with the process.
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_slots_respect_the_limit_and_come_back() {
        let l = Arc::new(ListenerState::new(2));
        let a = l.try_acquire(2).expect("first slot");
        let _b = l.try_acquire(2).expect("second slot");
        assert!(l.try_acquire(2).is_none(), "third must be refused");
        assert_eq!(l.active.load(Relaxed), 2);
        drop(a);
        assert!(l.try_acquire(2).is_some());
        assert_eq!(l.max_active.load(Relaxed), 2, "refusals do not count");
    }

    #[test]
    fn failed_connects_back_off_and_one_success_clears_it() {
        let m = MemberState::new(1);
        assert!(m.takes_new_connections(0, false));
        assert_eq!(m.connect_failed(1000), 1);
        assert!(!m.takes_new_connections(1500, false));
        assert!(
            m.takes_new_connections(1500, true),
            "ignore_passive looks past it"
        );
        assert!(m.takes_new_connections(2000, false), "1 s back-off is over");
        assert_eq!(m.connect_failed(2000), 2);
        assert!(!m.takes_new_connections(3999, false), "second failure: 2 s");
        assert_eq!(m.connect_succeeded(), 2);
        assert!(m.takes_new_connections(2001, false));
        assert_eq!(m.connect_succeeded(), 0);
    }

    #[test]
    fn down_members_take_nothing_even_when_ignoring_passive_state() {
        let m = MemberState::new(1);
        assert!(m.mark_down());
        assert!(!m.mark_down(), "only the first caller takes it down");
        assert!(!m.takes_new_connections(0, true));
    }

    fn check(m: &MemberState, passed: bool) -> Transition {
        m.record_check(passed, String::new(), Duration::ZERO, 2, 3)
    }

    #[test]
    fn first_check_decides_at_once_then_rise_and_fall_apply() {
        let m = MemberState::new(1);
        m.set_checked(true);
        assert_eq!(check(&m, true), Transition::Confirmed);
        assert_eq!(m.status(), Status::Up);
        // fall = 3: two failures keep it up, the third takes it down.
        assert_eq!(check(&m, false), Transition::None);
        assert_eq!(check(&m, false), Transition::None);
        assert!(m.takes_new_connections(0, false));
        assert_eq!(check(&m, false), Transition::WentDown);
        assert_eq!(m.status(), Status::Down);
        // rise = 2, and a failure in between restarts the count.
        assert_eq!(check(&m, true), Transition::None);
        assert_eq!(check(&m, false), Transition::None);
        assert_eq!(check(&m, true), Transition::None);
        assert!(!m.takes_new_connections(0, true));
        assert_eq!(check(&m, true), Transition::WentUp);
        assert!(m.takes_new_connections(0, false));
        assert_eq!(m.check_failures.load(Relaxed), 4);
        assert_eq!(m.went_down.load(Relaxed), 1);

        let fresh = MemberState::new(1);
        fresh.set_checked(true);
        assert_eq!(check(&fresh, false), Transition::WentDown, "unconfirmed");
    }

    #[test]
    fn failed_connects_count_toward_fall() {
        let m = MemberState::new(1);
        m.set_checked(true);
        assert_eq!(check(&m, true), Transition::Confirmed);
        assert_eq!(check(&m, false), Transition::None);
        assert_eq!(m.connect_failed(0), 1, "the first failed connect");
        assert_eq!(m.failure_observed(), 2, "one failed check + one connect");
        assert_eq!(check(&m, false), Transition::WentDown, "third failure");
    }

    #[test]
    fn successful_connects_do_not_end_a_check_failure_streak() {
        // A terminating apiserver: /readyz fails, the port still accepts.
        let m = MemberState::new(1);
        m.set_checked(true);
        assert_eq!(check(&m, true), Transition::Confirmed);
        assert_eq!(check(&m, false), Transition::None);
        assert_eq!(m.connect_succeeded(), 0, "no failed connect to end");
        assert_eq!(check(&m, false), Transition::None);
        assert_eq!(m.connect_succeeded(), 0);
        assert_eq!(m.fall_streak(), 2);
        assert_eq!(check(&m, false), Transition::WentDown, "fall = 3");
        // ... and a passed check ends the failed-connect back-off.
        m.connect_failed(0);
        assert!(!m.takes_new_connections(10, true), "down");
        assert_eq!(check(&m, true), Transition::None);
        assert_eq!(check(&m, true), Transition::WentUp);
        assert!(m.takes_new_connections(10, false));
        assert_eq!(m.connect_succeeded(), 0, "the back-off ended with it");
    }

    #[test]
    fn admin_states_and_status() {
        let m = MemberState::new(1);
        assert_eq!(m.status(), Status::NoCheck);
        m.set_admin(AdminState::Drain);
        assert_eq!(m.status(), Status::Drain);
        assert!(!m.takes_new_connections(0, true));
        m.set_admin(AdminState::Maint);
        assert_eq!(m.status(), Status::Maint);
        m.set_admin(AdminState::Ready);
        assert!(m.takes_new_connections(0, false));
        m.set_checked(true);
        assert!(m.mark_down());
        assert_eq!(m.status(), Status::Down);
        m.set_checked(false);
        assert_eq!(
            m.status(),
            Status::NoCheck,
            "unchecked pools cannot stay down"
        );
        assert!(m.takes_new_connections(0, false));
    }

    #[test]
    fn slots_never_pass_the_limit_across_threads() {
        let m = Arc::new(MemberState::new(4));
        let peak = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (m, peak) = (Arc::clone(&m), Arc::clone(&peak));
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        if let Some(slot) = m.try_take(3) {
                            peak.fetch_max(m.active.load(Relaxed), Relaxed);
                            drop(slot);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert!(peak.load(Relaxed) <= 3, "peak {}", peak.load(Relaxed));
        assert_eq!(m.active.load(Relaxed), 0, "every slot came back");
        let a = m.try_take(1).expect("a free slot");
        assert!(m.try_take(1).is_none(), "full");
        drop(a);
        assert!(m.try_take(1).is_some());
    }

    #[test]
    fn coming_back_starts_slow_start_but_appearing_does_not() {
        let m = MemberState::new(1);
        m.set_checked(true);
        assert_eq!(check(&m, true), Transition::Confirmed);
        assert_eq!(m.back_since_ms(), 0, "a new member does not ramp");
        for _ in 0..3 {
            check(&m, false);
        }
        assert_eq!(m.back_since_ms(), 0, "down");
        check(&m, true);
        assert_eq!(check(&m, true), Transition::WentUp);
        let back = m.back_since_ms();
        assert!(back >= 1);
        m.set_admin(AdminState::Drain);
        m.set_admin(AdminState::Ready);
        assert_eq!(m.back_since_ms(), back, "drain is no return");
        m.set_admin(AdminState::Maint);
        assert_eq!(m.back_since_ms(), back);
        std::thread::sleep(Duration::from_millis(2));
        m.set_admin(AdminState::Ready);
        assert!(m.back_since_ms() > back, "out of maint");
    }

    #[test]
    fn epochs_move_on_going_down_and_entering_maint_only() {
        let m = MemberState::new(1);
        m.set_checked(true);
        let generation = SESSION_EVENTS.generation();
        assert_eq!((m.down_epoch(), m.maint_epoch()), (0, 0));
        assert_eq!(check(&m, false), Transition::WentDown, "unconfirmed");
        assert_eq!(m.down_epoch(), 1);
        assert!(SESSION_EVENTS.generation() > generation, "sweepers woken");
        check(&m, false);
        assert_eq!(m.down_epoch(), 1, "already down");
        check(&m, true);
        check(&m, true);
        assert!(m.mark_down());
        assert_eq!(m.down_epoch(), 2, "down again through a failed connect");
        m.set_admin(AdminState::Drain);
        assert_eq!(m.maint_epoch(), 0, "drain is not maint");
        m.set_admin(AdminState::Maint);
        m.set_admin(AdminState::Maint);
        assert_eq!(m.maint_epoch(), 1, "once per entry");
        m.set_admin(AdminState::Ready);
        m.set_admin(AdminState::Maint);
        assert_eq!(m.maint_epoch(), 2);
        assert_eq!(m.down_epoch(), 2);
    }

    #[test]
    fn log_limiter_lets_one_line_through_per_period() {
        let l = LogLimiter::new(10_000);
        assert!(l.allow(0));
        assert!(!l.allow(5_000));
        assert!(l.allow(10_000));
        assert!(!l.allow(19_999));
    }

    #[test]
    fn per_worker_counters_sum() {
        let c: PerWorker<ListenerCounters> = PerWorker::new(3);
        inc(&c.get(0).accepted);
        add(&c.get(2).accepted, 5);
        assert_eq!(c.sum(|c| &c.accepted), 6);
    }
}
