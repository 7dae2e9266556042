//! A point-in-time copy of everything the stats page, `/stats.json`,
//! `/stats.csv` and `/metrics` show, read from the published snapshot and
//! the per-worker counters. Collecting it sums counters over workers; the
//! data path is never locked or slowed by it.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

use crate::balance::slow_start;
use crate::context::Shared;
use crate::pick::ramp;
use crate::snapshot::{ListenerRt, MemberRt, PoolRt};
use crate::state::{now_ms, MemberCounters, Status};

/// Everything at one moment. Serialized as `/stats.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub version: &'static str,
    pub pid: u32,
    pub uptime_seconds: f64,
    /// `io_uring` or `epoll`.
    pub runtime: &'static str,
    pub workers: usize,
    /// Config generation (1 at start, +1 per applied reload).
    pub generation: u64,
    pub reloads_total: u64,
    pub reload_failures_total: u64,
    /// Client connections open right now, all listeners.
    pub current_connections: u64,
    /// The XDP fast path, when a listener asks for it.
    pub xdp: Option<XdpStats>,
    pub listeners: Vec<ListenerStats>,
    pub pools: Vec<PoolStats>,
    /// Whether the config has stats sockets (HAProxy's CLI proxy then
    /// takes proxy id 1; `show stat` numbers the others after it).
    #[serde(skip)]
    pub has_cli: bool,
}

/// The XDP fast path: where it is attached and the kernel's counters
/// (packets it balanced never reach the listener counters below).
#[derive(Debug, Clone, Serialize)]
pub struct XdpStats {
    /// Fast-path listeners.
    pub listeners: Vec<String>,
    /// `interface` and `mode` (`native` or `generic`).
    pub interfaces: Vec<XdpInterface>,
    /// Why it is not running (the listeners are on the userspace proxy).
    pub error: Option<String>,
    pub packets_total: u64,
    pub bytes_total: u64,
    pub new_flows_total: u64,
    /// Flows in the connection table now.
    pub flows: u64,
    pub drops_total: Vec<XdpDrop>,
}

#[derive(Debug, Clone, Serialize)]
pub struct XdpInterface {
    pub interface: String,
    pub mode: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct XdpDrop {
    pub reason: &'static str,
    pub packets: u64,
}

impl From<&crate::context::XdpStatus> for XdpStats {
    fn from(x: &crate::context::XdpStatus) -> Self {
        XdpStats {
            listeners: x.listeners.clone(),
            interfaces: x
                .interfaces
                .iter()
                .map(|(interface, mode)| XdpInterface {
                    interface: interface.clone(),
                    mode,
                })
                .collect(),
            error: x.error.clone(),
            packets_total: x.packets,
            bytes_total: x.bytes,
            new_flows_total: x.new_flows,
            flows: x.flows,
            drops_total: x
                .drops
                .iter()
                .map(|&(reason, packets)| XdpDrop { reason, packets })
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ListenerStats {
    pub name: String,
    pub bind: String,
    pub pool: String,
    /// `tcp` or `udp`. For UDP, sessions are flows, and the refusal
    /// counters (`denied_total`, `limit_hits_total`, `no_member_total`,
    /// `local_errors_total`) count datagrams that could not open a flow.
    pub protocol: &'static str,
    /// `open` while accepting, `closed` once lbd stopped accepting.
    pub status: &'static str,
    pub current_sessions: u64,
    pub max_sessions: u64,
    /// `connection_limit`.
    pub session_limit: u32,
    /// Connections accepted, refused ones included.
    pub connections_total: u64,
    /// Connections let in (not refused by `allowed_cidrs` or the limit).
    pub sessions_total: u64,
    /// New sessions per second, over the time since the previous collect
    /// (at least 1 s; 0 on the first).
    pub session_rate: f64,
    pub bytes_in_total: u64,
    pub bytes_out_total: u64,
    /// Refused by `allowed_cidrs`.
    pub denied_total: u64,
    /// Refused because `connection_limit` was reached.
    pub limit_hits_total: u64,
    /// Reset because no member was usable or every connect failed.
    pub no_member_total: u64,
    /// Reset because lbd ran out of a local resource (descriptors, memory,
    /// local ports) while connecting to a member.
    pub local_errors_total: u64,
    /// Hedged connects started (`connect_hedge`).
    pub hedges_total: u64,
    /// Hedged connects the hedge won (the client was served by its member).
    pub hedges_won_total: u64,
    /// UDP: datagrams from clients, and to clients.
    pub datagrams_in_total: u64,
    pub datagrams_out_total: u64,
    /// UDP: datagrams dropped because a send failed (socket buffer full,
    /// too big, the member refused).
    pub datagrams_dropped_total: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PoolStats {
    pub name: String,
    pub algorithm: &'static str,
    /// `tcp`, `http`, `https`, `tls_hello`; `None` without health checks.
    pub check_type: Option<&'static str>,
    /// Non-backup members taking new connections right now.
    pub active_members: usize,
    /// Backup members that could take new connections right now.
    pub backup_members: usize,
    pub current_sessions: u64,
    pub sessions_total: u64,
    pub bytes_in_total: u64,
    pub bytes_out_total: u64,
    /// Failed connects to the members, plus clients that timed out in the
    /// queue (HAProxy counts those in the backend's `econ` too).
    pub connect_errors_total: u64,
    pub retries_total: u64,
    /// Established connections closed because their member went down or
    /// into maint (`on_down` / `on_maint = "shutdown_sessions"`).
    pub sessions_shutdown_total: u64,
    /// Clients waiting for a member slot (`max_connections`).
    pub queue: QueueStats,
    pub members: Vec<MemberStats>,
}

/// A pool's queue of clients waiting for a member slot, under HAProxy's
/// names in the comments.
#[derive(Debug, Clone, Default, Serialize)]
pub struct QueueStats {
    /// Waiting now (`qcur`).
    pub current: u64,
    /// The most that waited at once (`qmax`).
    pub max: u64,
    /// `max_queue`; `None`: no limit.
    pub limit: Option<u32>,
    /// Average wait over the last 1024 connections to the pool, those that
    /// did not wait counting 0 (`qtime`, in seconds).
    pub time_average_seconds: f64,
    /// Longest wait of a client that got a slot (`qtime_max`).
    pub time_max_seconds: f64,
    /// Clients reset after waiting `queue_timeout`.
    pub timeouts_total: u64,
    /// Clients reset because `max_queue` clients were waiting.
    pub full_total: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct MemberStats {
    /// How stats and metrics name the member (HAProxy's `server` label):
    /// its `name` when set and unique in the pool, else `address`.
    pub server: String,
    /// `ip:port`; the member's identity in its pool.
    pub address: String,
    pub name: Option<String>,
    pub id: Option<String>,
    /// `up`, `down`, `drain`, `maint` or `no_check`.
    pub status: &'static str,
    /// `ready`, `drain` or `maint`.
    pub admin_state: &'static str,
    pub weight: u32,
    /// The weight in force: `weight`, or less while slow start ramps it
    /// after the member came back (HAProxy's `weight` column).
    pub current_weight: u32,
    pub backup: bool,
    /// `max_connections` (HAProxy `slim`); `None`: no limit.
    pub max_connections: Option<u32>,
    pub current_sessions: u64,
    pub sessions_total: u64,
    pub connect_errors_total: u64,
    /// Connections that went to another member after failing here.
    pub retries_total: u64,
    /// Established connections closed because the member went down or
    /// into maint (`on_down` / `on_maint = "shutdown_sessions"`).
    pub sessions_shutdown_total: u64,
    pub bytes_in_total: u64,
    pub bytes_out_total: u64,
    /// UDP: datagrams sent to the member, and received from it.
    pub datagrams_in_total: u64,
    pub datagrams_out_total: u64,
    /// The last health check, if the member is checked and was checked.
    pub last_check: Option<CheckStats>,
    pub check_failures_total: u64,
    /// Transitions from up to down.
    pub down_transitions_total: u64,
    /// Seconds since the health last changed (or the member appeared).
    pub seconds_since_change: f64,
    /// Where the member stands against its pool's `rise` and `fall`
    /// (HAProxy's `UP 1/3`, `DOWN 1/2`); `None` without health checks.
    pub check_streak: Option<CheckStreak>,
    /// Checks paused on the stats socket (`disable health`).
    pub checks_paused: bool,
}

/// A checked member's streaks against its pool's `rise` and `fall`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CheckStreak {
    pub rise: u32,
    pub fall: u32,
    /// Failed checks (and failed connects) in a row since the last passed
    /// check: how far an up member is on its way down.
    pub failures: u32,
    /// Passed checks in a row: how far a down member is on its way up.
    pub passes: u32,
    /// Whether a check decided the health yet (a new member starts up,
    /// unconfirmed: its first check decides at once).
    pub confirmed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckStats {
    pub passed: bool,
    /// `HTTP 200`, `connect refused`, `timeout after 1s`...
    pub result: String,
    pub duration_seconds: f64,
}

/// Remembers totals between collects, to compute session rates.
#[derive(Debug, Default)]
pub struct RateTracker {
    last: Mutex<HashMap<String, (u64, Instant, f64)>>,
}

impl RateTracker {
    /// Sessions per second of `listener` since the last call that moved the
    /// sample (samples are at least a second apart).
    fn rate(&self, listener: &str, total: u64, now: Instant) -> f64 {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        match last.get_mut(listener) {
            None => {
                last.insert(listener.to_owned(), (total, now, 0.0));
                0.0
            }
            Some((before, at, rate)) => {
                let elapsed = now.duration_since(*at).as_secs_f64();
                if elapsed >= 1.0 {
                    *rate = total.saturating_sub(*before) as f64 / elapsed;
                    *before = total;
                    *at = now;
                }
                *rate
            }
        }
    }
}

impl Stats {
    /// Reads everything from `shared` now.
    pub fn collect(shared: &Shared, rates: &RateTracker) -> Stats {
        let snap = shared.snapshot();
        let now = Instant::now();
        let workers = shared.workers.len();
        Stats {
            version: env!("CARGO_PKG_VERSION"),
            pid: std::process::id(),
            uptime_seconds: now.duration_since(shared.started).as_secs_f64(),
            runtime: shared.runtime.name(),
            workers,
            generation: snap.generation,
            reloads_total: shared.reloads.load(Relaxed),
            reload_failures_total: shared.reload_failures.load(Relaxed),
            current_connections: shared.active_connections(),
            xdp: shared.xdp.load().as_deref().map(XdpStats::from),
            has_cli: !snap.config.stats_sockets.is_empty(),
            listeners: snap
                .listeners
                .iter()
                .map(|l| listener_stats(l, &snap.pools[l.pool], rates, now))
                .collect(),
            pools: snap.pools.iter().map(pool_stats).collect(),
        }
    }
}

fn listener_stats(
    l: &ListenerRt,
    pool: &PoolRt,
    rates: &RateTracker,
    now: Instant,
) -> ListenerStats {
    let c = &l.state.counters;
    let accepted = c.sum(|c| &c.accepted);
    let denied = c.sum(|c| &c.denied_cidr);
    let limit_hits = c.sum(|c| &c.limit_hits);
    let sessions = accepted.saturating_sub(denied + limit_hits);
    ListenerStats {
        name: l.cfg.name.clone(),
        bind: l.cfg.bind.to_string(),
        pool: pool.name.clone(),
        protocol: l.cfg.protocol.name(),
        status: if l.sockets.is_closed() {
            "closed"
        } else {
            "open"
        },
        current_sessions: l.state.active.load(Relaxed),
        max_sessions: l.state.max_active.load(Relaxed),
        session_limit: l.cfg.connection_limit,
        connections_total: accepted,
        sessions_total: sessions,
        session_rate: rates.rate(&l.cfg.name, sessions, now),
        bytes_in_total: c.sum(|c| &c.bytes_in),
        bytes_out_total: c.sum(|c| &c.bytes_out),
        denied_total: denied,
        limit_hits_total: limit_hits,
        no_member_total: c.sum(|c| &c.no_member),
        local_errors_total: c.sum(|c| &c.local_errors),
        hedges_total: c.sum(|c| &c.hedges),
        hedges_won_total: c.sum(|c| &c.hedges_won),
        datagrams_in_total: c.sum(|c| &c.datagrams_in),
        datagrams_out_total: c.sum(|c| &c.datagrams_out),
        datagrams_dropped_total: c.sum(|c| &c.dropped_send),
    }
}

fn pool_stats(p: &PoolRt) -> PoolStats {
    let now = now_ms();
    let members: Vec<MemberStats> = p
        .members
        .iter()
        .map(|m| {
            let mut stats = member_stats(m, server_label(p, m), ramp(p, m, now));
            stats.check_streak = p.health.as_ref().map(|h| CheckStreak {
                rise: h.rise,
                fall: h.fall,
                failures: m.state.fall_streak(),
                passes: m.state.rise_streak(),
                confirmed: m.state.confirmed(),
            });
            stats
        })
        .collect();
    let usable = |backup: bool| {
        p.members
            .iter()
            .filter(|m| m.cfg.backup == backup && m.cfg.weight > 0)
            .filter(|m| matches!(m.state.status(), Status::Up | Status::NoCheck))
            .count()
    };
    let mut stats = PoolStats::with_totals(
        p.name.clone(),
        p.plan.algorithm().name(),
        p.health.as_ref().map(|h| h.kind.name()),
        (usable(false), usable(true)),
        members,
    );
    let (time_average_seconds, time_max_seconds) = p.queue.queue_time(stats.sessions_total);
    stats.queue = QueueStats {
        current: p.queue.len() as u64,
        max: p.queue.max_len() as u64,
        limit: p.max_queue,
        time_average_seconds,
        time_max_seconds,
        timeouts_total: p.queue.timeouts.load(Relaxed),
        full_total: p.queue.full.load(Relaxed),
    };
    stats.connect_errors_total += stats.queue.timeouts_total;
    stats
}

impl PoolStats {
    /// A pool's figures, its totals summed over `members`. `usable`:
    /// (active, backup) members taking new connections.
    pub fn with_totals(
        name: String,
        algorithm: &'static str,
        check_type: Option<&'static str>,
        usable: (usize, usize),
        members: Vec<MemberStats>,
    ) -> PoolStats {
        let sum = |f: fn(&MemberStats) -> u64| members.iter().map(f).sum::<u64>();
        PoolStats {
            name,
            algorithm,
            check_type,
            active_members: usable.0,
            backup_members: usable.1,
            current_sessions: sum(|m| m.current_sessions),
            sessions_total: sum(|m| m.sessions_total),
            bytes_in_total: sum(|m| m.bytes_in_total),
            bytes_out_total: sum(|m| m.bytes_out_total),
            connect_errors_total: sum(|m| m.connect_errors_total),
            retries_total: sum(|m| m.retries_total),
            sessions_shutdown_total: sum(|m| m.sessions_shutdown_total),
            queue: QueueStats::default(),
            members,
        }
    }
}

/// The member's `name` if it names only this member (no other member of
/// the pool has it as name or address), else its address.
pub(crate) fn server_label(p: &PoolRt, m: &MemberRt) -> String {
    let taken_elsewhere = |name: &str| {
        p.members.iter().any(|o| {
            o.addr != m.addr && (o.cfg.name.as_deref() == Some(name) || o.addr.to_string() == name)
        })
    };
    match &m.cfg.name {
        Some(name) if !taken_elsewhere(name) => name.clone(),
        _ => m.addr.to_string(),
    }
}

/// `ramp`: how far the member's slow start is, if it is ramping.
fn member_stats(m: &MemberRt, server: String, ramp: Option<u64>) -> MemberStats {
    let s = &m.state;
    let c = &s.counters;
    let total = |f: fn(&MemberCounters) -> &std::sync::atomic::AtomicU64| c.sum(f);
    let record = s.record();
    MemberStats {
        server,
        address: m.addr.to_string(),
        name: m.cfg.name.clone(),
        id: m.cfg.id.clone(),
        status: s.status().name(),
        admin_state: s.admin().name(),
        weight: m.cfg.weight,
        current_weight: slow_start::shown_weight(m.cfg.weight, ramp),
        backup: m.cfg.backup,
        max_connections: m.cfg.max_connections,
        current_sessions: s.active.load(Relaxed),
        sessions_total: total(|c| &c.connections),
        connect_errors_total: total(|c| &c.connect_errors),
        retries_total: total(|c| &c.retried_away),
        sessions_shutdown_total: total(|c| &c.sessions_shutdown),
        bytes_in_total: total(|c| &c.bytes_in),
        bytes_out_total: total(|c| &c.bytes_out),
        datagrams_in_total: total(|c| &c.datagrams_in),
        datagrams_out_total: total(|c| &c.datagrams_out),
        last_check: record.last.map(|(passed, result, took)| CheckStats {
            passed,
            result,
            duration_seconds: took.as_secs_f64(),
        }),
        check_failures_total: s.check_failures.load(Relaxed),
        down_transitions_total: s.went_down.load(Relaxed),
        seconds_since_change: record.changed_at.elapsed().as_secs_f64(),
        check_streak: None,
        checks_paused: s.checks_paused(),
    }
}
