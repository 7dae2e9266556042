//! Connection limits of one admin listener, so that slow or hostile clients
//! cannot starve the scrapers and agents that depend on the admin ports.
//!
//! Every listener (`bind`, `stats_bind`) has a [`Limiter`] of its own. A
//! connection holds a [`Slot`] for its whole life and tells it what it is
//! doing (its [`Phase`]). The limiter
//!
//! * bounds each phase that waits on the client: the request head (and the
//!   TLS handshake), the request body and the keep-alive idle time;
//! * keeps one client address to a share of the slots;
//! * when the listener is full (or the client over its share), closes the
//!   connection that has waited longest on its client to make room, since
//!   that is what a slowloris attacker holds. A connection that has sent
//!   nothing yet and is younger than [`UNHEARD_GRACE`] goes last: it may be
//!   a scraper sharing its address with an attacker whose request is still
//!   in flight, and a flood of newer connections must not close it before
//!   it was read. Only when every slot is busy in a handler is the new
//!   connection refused (with a 503).
//!
//! Admin traffic is light; this runs on the admin thread, never on the data
//! plane, so a mutex and a linear scan over at most [`MAX_CONNECTIONS`]
//! entries are fine here.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tracing::{debug, warn};

/// Connections one listener serves at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Connections one client address (an IPv6 /64) may hold on a listener.
pub const PER_CLIENT: usize = MAX_CONNECTIONS / 4;
/// Time for the request head: from accept for the first request (TLS
/// handshake included), from its first byte for later ones. HAProxy's
/// `timeout http-request`.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Time for a whole request body, however it dribbles in.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Keep-alive idle time between requests (and for the client to read a
/// response). HAProxy's `timeout http-keep-alive`.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// The handler answers a late body itself (408) at [`BODY_TIMEOUT`]; the
/// limiter only closes a connection stuck in that phase this much later.
const BODY_BACKSTOP: Duration = Duration::from_secs(2);
/// How long a connection that has sent nothing yet is evicted only after
/// every connection that has (see the module doc).
const UNHEARD_GRACE: Duration = Duration::from_secs(1);
/// At most one pressure warning per listener this often.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// The sizes and timeouts a limiter enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max: usize,
    pub per_client: usize,
    pub head: Duration,
    pub body: Duration,
    pub idle: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max: MAX_CONNECTIONS,
            per_client: PER_CLIENT,
            head: HEAD_TIMEOUT,
            body: BODY_TIMEOUT + BODY_BACKSTOP,
            idle: IDLE_TIMEOUT,
        }
    }
}

/// What a connection is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for a request head (or the TLS handshake).
    Head,
    /// Waiting for a request body.
    Body,
    /// A handler runs: not waiting on the client, never evicted.
    Busy,
    /// Between requests (or while the client reads the response).
    Idle,
}

impl Phase {
    fn limit(self, limits: &Limits) -> Option<Duration> {
        match self {
            Phase::Head => Some(limits.head),
            Phase::Body => Some(limits.body),
            Phase::Idle => Some(limits.idle),
            Phase::Busy => None,
        }
    }
}

/// Why the limiter closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// Evicted to admit a new connection to a full listener.
    ListenerFull,
    /// Evicted to admit a new connection of a client at its share.
    ClientShare,
    /// Waited on its client longer than the phase allows.
    TimedOut(Phase),
}

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Closed::ListenerFull => f.write_str("evicted: the listener is full"),
            Closed::ClientShare => f.write_str("evicted: the client is at its share"),
            Closed::TimedOut(Phase::Head) => f.write_str("timed out waiting for a request head"),
            Closed::TimedOut(Phase::Body) => f.write_str("timed out waiting for a request body"),
            Closed::TimedOut(_) => f.write_str("idle timeout"),
        }
    }
}

/// Why a new connection was not admitted: every slot it could take is busy
/// in a handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    ListenerFull,
    ClientShare,
}

/// The part of a slot the connection and the limiter share.
struct Shared {
    client: Option<IpAddr>,
    phase: Mutex<(Phase, Instant)>,
    /// The client has sent bytes (or a request was handled).
    heard: AtomicBool,
    closed: Mutex<Option<Closed>>,
    close: Notify,
}

impl Shared {
    fn phase(&self) -> (Phase, Instant) {
        *lock(&self.phase)
    }

    /// Whether this slot goes after those that have proved to be waiting
    /// on their client: nothing heard yet, and young.
    fn unheard_at(&self, since: Instant, now: Instant) -> bool {
        !self.heard.load(Ordering::Relaxed) && now.saturating_duration_since(since) < UNHEARD_GRACE
    }
}

/// The connection limiter of one listener.
pub struct Limiter {
    label: String,
    limits: Limits,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    next_id: u64,
    open: HashMap<u64, Arc<Shared>>,
    per_client: HashMap<IpAddr, usize>,
    pressure: Pressure,
}

impl Limiter {
    /// A limiter for the listener `label` (used in log lines).
    pub fn new(label: impl Into<String>, limits: Limits) -> Arc<Limiter> {
        Arc::new(Limiter {
            label: label.into(),
            limits,
            state: Mutex::new(State::default()),
        })
    }

    /// Takes a slot for a new connection from `client` (`None`: a unix
    /// socket, no per-client share), closing a waiting connection first if
    /// the listener is full or the client at its share.
    pub fn admit(self: &Arc<Self>, client: Option<IpAddr>) -> Result<Slot, Refused> {
        self.admit_at(client, Instant::now())
    }

    fn admit_at(self: &Arc<Self>, client: Option<IpAddr>, now: Instant) -> Result<Slot, Refused> {
        let mut state = lock(&self.state);
        if let Some(ip) = client {
            if state.per_client.get(&ip).copied().unwrap_or(0) >= self.limits.per_client {
                match state.longest_waiting(|s| s.client == Some(ip), now) {
                    Some(id) => self.evict(&mut state, id, Closed::ClientShare, now),
                    None => {
                        self.note(&mut state, Event::Refused, now);
                        return Err(Refused::ClientShare);
                    }
                }
            }
        }
        if state.open.len() >= self.limits.max {
            match state.longest_waiting(|_| true, now) {
                Some(id) => self.evict(&mut state, id, Closed::ListenerFull, now),
                None => {
                    self.note(&mut state, Event::Refused, now);
                    return Err(Refused::ListenerFull);
                }
            }
        }
        let id = state.next_id;
        state.next_id += 1;
        let shared = Arc::new(Shared {
            client,
            phase: Mutex::new((Phase::Head, now)),
            heard: AtomicBool::new(false),
            closed: Mutex::new(None),
            close: Notify::new(),
        });
        state.open.insert(id, Arc::clone(&shared));
        if let Some(ip) = client {
            *state.per_client.entry(ip).or_insert(0) += 1;
        }
        Ok(Slot {
            id,
            shared,
            limiter: Arc::clone(self),
        })
    }

    /// Closes the connections that waited on their client longer than
    /// their phase allows, and logs pressure that is due. Called a few
    /// times a second by the accept loop.
    pub fn sweep(&self) {
        self.sweep_at(Instant::now());
    }

    fn sweep_at(&self, now: Instant) {
        let mut state = lock(&self.state);
        let expired: Vec<(u64, Phase)> = state
            .open
            .iter()
            .filter_map(|(&id, slot)| {
                let (phase, since) = slot.phase();
                let limit = phase.limit(&self.limits)?;
                (now.saturating_duration_since(since) >= limit).then_some((id, phase))
            })
            .collect();
        for (id, phase) in expired {
            self.evict(&mut state, id, Closed::TimedOut(phase), now);
        }
        if let Some(report) = state.pressure.due(now) {
            self.report(&report);
        }
    }

    /// Connections holding a slot.
    #[cfg(test)]
    fn open(&self) -> usize {
        lock(&self.state).open.len()
    }

    fn evict(&self, state: &mut State, id: u64, why: Closed, now: Instant) {
        let Some(slot) = state.remove(id) else {
            return;
        };
        *lock(&slot.closed) = Some(why);
        // Stored if the connection's task is not waiting yet.
        slot.close.notify_one();
        debug!("admin {}: closing a connection: {why}", self.label);
        let event = match why {
            Closed::ListenerFull | Closed::ClientShare => Event::Evicted(why),
            Closed::TimedOut(_) => Event::TimedOut,
        };
        self.note(state, event, now);
    }

    fn note(&self, state: &mut State, event: Event, now: Instant) {
        state.pressure.count(event);
        if let Some(report) = state.pressure.due(now) {
            self.report(&report);
        }
    }

    fn report(&self, r: &Report) {
        let limits = &self.limits;
        let parts: Vec<String> = [
            (
                r.evicted_full,
                format!("closed to admit new ones (listener full at {})", limits.max),
            ),
            (
                r.evicted_share,
                format!(
                    "closed to admit new ones of a client at its share ({} per address)",
                    limits.per_client
                ),
            ),
            (
                r.refused,
                "refused with 503 (every slot busy in a handler)".to_owned(),
            ),
            (r.timed_out, "timed out waiting on the client".to_owned()),
        ]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
        warn!(
            "admin {}: under pressure (reported at most every {} s); connections since the last \
             report: {}",
            self.label,
            LOG_EVERY.as_secs(),
            parts.join(", ")
        );
    }

    fn release(&self, id: u64) {
        lock(&self.state).remove(id);
    }
}

impl State {
    /// Removes an open slot; `None` if it was already evicted.
    fn remove(&mut self, id: u64) -> Option<Arc<Shared>> {
        let slot = self.open.remove(&id)?;
        if let Some(ip) = slot.client {
            if let Some(n) = self.per_client.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    self.per_client.remove(&ip);
                }
            }
        }
        Some(slot)
    }

    /// The slot that has waited longest on its client, among those `which`
    /// selects; young slots that have heard nothing yet come after all
    /// others. Busy ones are never chosen.
    fn longest_waiting(&self, which: impl Fn(&Shared) -> bool, now: Instant) -> Option<u64> {
        self.open
            .iter()
            .filter(|(_, s)| which(s))
            .filter_map(|(&id, s)| {
                let (phase, since) = s.phase();
                (phase != Phase::Busy).then(|| (s.unheard_at(since, now), since, id))
            })
            .min()
            .map(|(_, _, id)| id)
    }
}

#[derive(Debug, Clone, Copy)]
enum Event {
    Evicted(Closed),
    Refused,
    TimedOut,
}

/// What a pressure warning reports.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Report {
    evicted_full: u64,
    evicted_share: u64,
    refused: u64,
    timed_out: u64,
}

/// Counts evictions and refusals between two warnings, so an attack makes
/// one line every [`LOG_EVERY`] and not one per connection.
#[derive(Default)]
struct Pressure {
    pending: Report,
    last_log: Option<Instant>,
}

impl Pressure {
    fn count(&mut self, event: Event) {
        let p = &mut self.pending;
        match event {
            Event::Evicted(Closed::ClientShare) => p.evicted_share += 1,
            Event::Evicted(_) => p.evicted_full += 1,
            Event::Refused => p.refused += 1,
            Event::TimedOut => p.timed_out += 1,
        }
    }

    /// The report to log now, if any: there was pressure (timeouts alone
    /// are ordinary) and the last warning is old enough.
    fn due(&mut self, now: Instant) -> Option<Report> {
        let p = &self.pending;
        if p.evicted_full + p.evicted_share + p.refused == 0 {
            return None;
        }
        if self
            .last_log
            .is_some_and(|last| now.saturating_duration_since(last) < LOG_EVERY)
        {
            return None;
        }
        self.last_log = Some(now);
        Some(std::mem::take(&mut self.pending))
    }
}

/// A connection's place in its listener; released when dropped.
pub struct Slot {
    id: u64,
    shared: Arc<Shared>,
    limiter: Arc<Limiter>,
}

impl Slot {
    /// The handle the connection reports its phase through.
    pub fn tracker(&self) -> Tracker {
        Tracker(Arc::clone(&self.shared))
    }

    /// Completes when the limiter closes this connection, with the reason.
    pub async fn closed(&self) -> Closed {
        loop {
            self.shared.close.notified().await;
            if let Some(why) = *lock(&self.shared.closed) {
                return why;
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.limiter.release(self.id);
    }
}

/// Reports a connection's phase to its limiter.
#[derive(Clone)]
pub struct Tracker(Arc<Shared>);

impl Tracker {
    /// Enters `phase` now (a request has come: the client was heard).
    pub fn set(&self, phase: Phase) {
        self.0.heard.store(true, Ordering::Relaxed);
        *lock(&self.0.phase) = (phase, Instant::now());
    }

    /// Bytes arrived: an idle connection now waits for the rest of a head.
    pub fn received(&self) {
        self.0.heard.store(true, Ordering::Relaxed);
        let mut phase = lock(&self.0.phase);
        if phase.0 == Phase::Idle {
            *phase = (Phase::Head, Instant::now());
        }
    }
}

/// The per-client key of an address: IPv6 clients usually hold a whole
/// /64, so they are counted per /64.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

/// Locks, going on after a panic elsewhere (the data stays consistent:
/// every update is a single assignment or map operation).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize, per_client: usize) -> Limits {
        Limits {
            max,
            per_client,
            head: Duration::from_secs(5),
            body: Duration::from_secs(10),
            idle: Duration::from_secs(30),
        }
    }

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([127, 0, 0, last]))
    }

    fn set_at(slot: &Slot, phase: Phase, at: Instant) {
        *lock(&slot.shared.phase) = (phase, at);
    }

    fn closed_why(slot: &Slot) -> Option<Closed> {
        *lock(&slot.shared.closed)
    }

    #[test]
    fn a_full_listener_evicts_the_longest_waiting() {
        let l = Limiter::new("t", limits(3, 3));
        let t0 = Instant::now();
        let a = l.admit_at(ip(1), t0).expect("a");
        let b = l
            .admit_at(ip(2), t0 + Duration::from_millis(10))
            .expect("b");
        let c = l
            .admit_at(ip(3), t0 + Duration::from_millis(20))
            .expect("c");
        // a is busy in a handler: b has waited longest.
        set_at(&a, Phase::Busy, t0);
        let d = l
            .admit_at(ip(4), t0 + Duration::from_millis(30))
            .expect("d");
        assert_eq!(closed_why(&b), Some(Closed::ListenerFull));
        assert_eq!(closed_why(&a), None);
        assert_eq!(closed_why(&c), None);
        assert_eq!(l.open(), 3);
        drop(b); // the evicted connection's task ends: nothing to release twice
        assert_eq!(l.open(), 3);
        drop((c, d));
        assert_eq!(l.open(), 1);
    }

    #[test]
    fn all_busy_refuses() {
        let l = Limiter::new("t", limits(2, 2));
        let now = Instant::now();
        let a = l.admit_at(ip(1), now).expect("a");
        let b = l.admit_at(ip(2), now).expect("b");
        set_at(&a, Phase::Busy, now);
        set_at(&b, Phase::Busy, now);
        assert_eq!(l.admit_at(ip(3), now).err(), Some(Refused::ListenerFull));
        drop(a);
        assert!(l.admit_at(ip(3), now).is_ok());
    }

    #[test]
    fn a_client_at_its_share_evicts_its_own() {
        let l = Limiter::new("t", limits(10, 2));
        let t0 = Instant::now();
        let other = l.admit_at(ip(9), t0).expect("other");
        let a = l.admit_at(ip(1), t0 + Duration::from_millis(1)).expect("a");
        let b = l.admit_at(ip(1), t0 + Duration::from_millis(2)).expect("b");
        let c = l.admit_at(ip(1), t0 + Duration::from_millis(3)).expect("c");
        // The other client's older connection is left alone.
        assert_eq!(closed_why(&other), None);
        assert_eq!(closed_why(&a), Some(Closed::ClientShare));
        assert_eq!(closed_why(&b), None);
        set_at(&b, Phase::Busy, t0);
        set_at(&c, Phase::Busy, t0);
        assert_eq!(
            l.admit_at(ip(1), t0 + Duration::from_millis(4)).err(),
            Some(Refused::ClientShare)
        );
        // Unix clients have no share.
        let unix: Vec<Slot> = (0..5)
            .map(|_| l.admit_at(None, t0).expect("unix"))
            .collect();
        assert_eq!(l.open(), 8);
        drop(unix);
    }

    #[test]
    fn a_young_silent_connection_goes_after_those_heard_from() {
        let l = Limiter::new("t", limits(64, 3));
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        // A scraper's connection, accepted before its request arrived.
        let scraper = l.admit_at(ip(1), t0).expect("scraper");
        // Attackers of the same address whose heads came (PUT, no body).
        let mut attackers = Vec::new();
        for n in 1..=2 {
            let a = l.admit_at(ip(1), ms(n)).expect("attacker");
            a.tracker().set(Phase::Body);
            attackers.push(a);
        }
        // A flood of newer ones: each closes an attacker, never the scraper.
        for n in 3..=6 {
            let a = l.admit_at(ip(1), ms(n)).expect("attacker");
            a.tracker().set(Phase::Body);
            attackers.push(a);
        }
        assert_eq!(closed_why(&scraper), None);
        let evicted = attackers.iter().filter(|a| closed_why(a).is_some());
        assert_eq!(evicted.count(), 4);
        // Only young silence is spared: after the grace it is the oldest.
        let _late = l
            .admit_at(ip(1), t0 + UNHEARD_GRACE)
            .expect("late attacker");
        assert_eq!(closed_why(&scraper), Some(Closed::ClientShare));
        // And a silent slot is still chosen when nothing else can be.
        let l = Limiter::new("t", limits(64, 1));
        let first = l.admit_at(ip(1), t0).expect("first");
        let _second = l.admit_at(ip(1), ms(1)).expect("second");
        assert_eq!(closed_why(&first), Some(Closed::ClientShare));
    }

    #[test]
    fn phases_time_out() {
        let l = Limiter::new("t", limits(10, 10));
        let t0 = Instant::now();
        let head = l.admit_at(ip(1), t0).expect("head");
        let body = l.admit_at(ip(1), t0).expect("body");
        let idle = l.admit_at(ip(1), t0).expect("idle");
        let busy = l.admit_at(ip(1), t0).expect("busy");
        set_at(&body, Phase::Body, t0);
        set_at(&idle, Phase::Idle, t0);
        set_at(&busy, Phase::Busy, t0);
        l.sweep_at(t0 + Duration::from_secs(4));
        assert_eq!(l.open(), 4);
        l.sweep_at(t0 + Duration::from_secs(5));
        assert_eq!(closed_why(&head), Some(Closed::TimedOut(Phase::Head)));
        l.sweep_at(t0 + Duration::from_secs(10));
        assert_eq!(closed_why(&body), Some(Closed::TimedOut(Phase::Body)));
        assert_eq!(closed_why(&idle), None);
        l.sweep_at(t0 + Duration::from_secs(3600));
        assert_eq!(closed_why(&idle), Some(Closed::TimedOut(Phase::Idle)));
        assert_eq!(closed_why(&busy), None);
        assert_eq!(l.open(), 1);
    }

    #[test]
    fn bytes_on_an_idle_connection_start_a_head() {
        let l = Limiter::new("t", limits(1, 1));
        let slot = l.admit_at(ip(1), Instant::now()).expect("slot");
        let tracker = slot.tracker();
        tracker.set(Phase::Busy);
        tracker.received();
        assert_eq!(slot.shared.phase().0, Phase::Busy);
        tracker.set(Phase::Idle);
        tracker.received();
        assert_eq!(slot.shared.phase().0, Phase::Head);
    }

    #[tokio::test]
    async fn an_evicted_slot_learns_why() {
        let l = Limiter::new("t", limits(1, 1));
        let a = l.admit(ip(2)).expect("a");
        let _b = l.admit(ip(1)).expect("b");
        let why = tokio::time::timeout(Duration::from_secs(5), a.closed()).await;
        assert_eq!(why.ok(), Some(Closed::ListenerFull));
    }

    #[test]
    fn pressure_is_logged_at_most_every_ten_seconds() {
        let mut p = Pressure::default();
        let t0 = Instant::now();
        p.count(Event::TimedOut);
        assert_eq!(p.due(t0), None, "timeouts alone are no pressure");
        p.count(Event::Evicted(Closed::ListenerFull));
        let first = p.due(t0).expect("the first is logged at once");
        assert_eq!((first.evicted_full, first.timed_out), (1, 1));
        for _ in 0..100 {
            p.count(Event::Evicted(Closed::ClientShare));
            assert_eq!(p.due(t0 + Duration::from_secs(1)), None);
        }
        p.count(Event::Refused);
        let next = p.due(t0 + LOG_EVERY).expect("due again");
        assert_eq!((next.evicted_share, next.refused), (100, 1));
    }

    #[test]
    fn ipv6_clients_count_per_64() {
        let a: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("ip");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        let v4: IpAddr = "127.0.0.2".parse().expect("ip");
        assert_eq!(client_key(v4), v4);
    }
}
