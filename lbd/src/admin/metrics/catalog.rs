//! Every metric lbd exports, each declared once: name, labels, help, type
//! (the constructor: [`counter`] or [`gauge`]) and where its value comes
//! from in one row of its table. Rendering, [`super::metrics`] and the
//! README check all read these tables.
//!
//! A table's rows carry its leading labels: none for [`PROCESS`] and
//! [`XDP`], `proxy` for [`LISTENERS`] and [`POOLS`], `proxy`, `server` for
//! [`MEMBERS`]; a declaration's labels start with those and its [`Source`]
//! gives the rest. The order here is the output order.
//!
//! To add a metric: add its line to the right table, a row to README's
//! metrics table, and bless the pinned output (see `metrics/tests.rs`).

use super::super::stats::{ListenerStats, MemberStats, PoolStats, Stats, XdpStats};
use super::{counter, gauge, Metric, Source::*};

const NONE: &[&str] = &[];
const PROXY: &[&str] = &["proxy"];
const PROXY_STATE: &[&str] = &["proxy", "state"];
const SERVER: &[&str] = &["proxy", "server"];
const SERVER_STATE: &[&str] = &["proxy", "server", "state"];

/// HAProxy's frontend and backend `state` label values, in its order.
pub(super) const UP_DOWN: &[&str] = &["DOWN", "UP"];
/// HAProxy's server `state` label values, in its order (promex_srv_st).
pub(super) const SERVER_STATES: &[&str] = &["DOWN", "UP", "MAINT", "DRAIN", "NOLB"];
/// lbd's admin states, as `admin_state_name` spells them.
pub(super) const ADMIN_STATES: &[&str] = &["ready", "drain", "maint"];

/// HAProxy's server state for an lbd member status (`MemberStats::status`).
fn server_state(status: &str) -> Option<&'static str> {
    match status {
        "up" | "no_check" => Some("UP"),
        "down" => Some("DOWN"),
        "drain" => Some("DRAIN"),
        "maint" => Some("MAINT"),
        _ => None,
    }
}

/// UP while accepting, DOWN once stopped.
fn listener_state(l: &ListenerStats) -> &'static str {
    if l.status == "open" {
        "UP"
    } else {
        "DOWN"
    }
}

/// UP while a member can take new connections or the pool is empty.
fn pool_state(p: &PoolStats) -> &'static str {
    if p.active_members + p.backup_members > 0 || p.members.is_empty() {
        "UP"
    } else {
        "DOWN"
    }
}

fn flag(on: bool) -> f64 {
    if on {
        1.0
    } else {
        0.0
    }
}

/// The process; one row, the whole [`Stats`].
pub(super) const PROCESS: &[Metric<Stats>] = &[
    gauge(
        "lbd_info",
        &["version", "runtime"],
        "Always 1; the labels tell the lbd version and the data-plane runtime (io_uring or epoll).",
        Info(|s| vec![s.version, s.runtime]),
    ),
    gauge(
        "lbd_uptime_seconds",
        NONE,
        "Seconds since lbd started.",
        Value(|s| s.uptime_seconds),
    ),
    gauge(
        "lbd_workers",
        NONE,
        "Number of data-plane worker threads.",
        Value(|s| s.workers as f64),
    ),
    gauge(
        "lbd_config_generation",
        NONE,
        "Generation of the running config: 1 at start, plus 1 per applied reload.",
        Value(|s| s.generation as f64),
    ),
    counter(
        "lbd_reloads_total",
        NONE,
        "Config reloads applied.",
        Value(|s| s.reloads_total as f64),
    ),
    counter(
        "lbd_reload_failures_total",
        NONE,
        "Config reloads rejected; the running config stayed.",
        Value(|s| s.reload_failures_total as f64),
    ),
    gauge(
        "lbd_current_connections",
        NONE,
        "Client connections open right now, all listeners together.",
        Value(|s| s.current_connections as f64),
    ),
];

/// The XDP fast path; one row when a listener asks for it, else none.
pub(super) const XDP: &[Metric<XdpStats>] = &[
    gauge(
        "lbd_xdp_attached",
        &["interface", "mode"],
        "1 per interface the XDP fast path is attached to; mode is native or generic.",
        Series(|x| {
            x.interfaces
                .iter()
                .map(|i| (vec![i.interface.as_str(), i.mode], 1.0))
                .collect()
        }),
    ),
    counter(
        "lbd_xdp_packets_total",
        NONE,
        "Packets the XDP fast path forwarded (both directions).",
        Value(|x| x.packets_total as f64),
    ),
    counter(
        "lbd_xdp_bytes_total",
        NONE,
        "Bytes the XDP fast path forwarded (both directions).",
        Value(|x| x.bytes_total as f64),
    ),
    counter(
        "lbd_xdp_new_flows_total",
        NONE,
        "Connections the XDP fast path balanced to a member.",
        Value(|x| x.new_flows_total as f64),
    ),
    gauge(
        "lbd_xdp_flows",
        NONE,
        "Flows in the XDP fast path's connection table.",
        Value(|x| x.flows as f64),
    ),
    counter(
        "lbd_xdp_drops_total",
        &["reason"],
        "Packets the XDP fast path dropped, by reason.",
        Series(|x| {
            x.drops_total
                .iter()
                .map(|d| (vec![d.reason], d.packets as f64))
                .collect()
        }),
    ),
];

/// Frontends: one row per listener, `proxy` = its name.
pub(super) const LISTENERS: &[Metric<ListenerStats>] = &[
    gauge(
        "haproxy_frontend_status",
        PROXY_STATE,
        "Listener status, one series per state (UP while accepting, DOWN once stopped); 1 for the current one.",
        OneHot(UP_DOWN, |l| Some(listener_state(l))),
    ),
    gauge(
        "haproxy_frontend_current_sessions",
        PROXY,
        "Client connections open on the listener right now.",
        Value(|l| l.current_sessions as f64),
    ),
    gauge(
        "haproxy_frontend_max_sessions",
        PROXY,
        "Highest number of connections open at once on the listener.",
        Value(|l| l.max_sessions as f64),
    ),
    gauge(
        "haproxy_frontend_limit_sessions",
        PROXY,
        "The listener's connection_limit.",
        Value(|l| f64::from(l.session_limit)),
    ),
    counter(
        "haproxy_frontend_sessions_total",
        PROXY,
        "Connections let in: accepted and not refused by allowed_cidrs or connection_limit.",
        Value(|l| l.sessions_total as f64),
    ),
    counter(
        "haproxy_frontend_connections_total",
        PROXY,
        "Connections accepted, refused ones included.",
        Value(|l| l.connections_total as f64),
    ),
    gauge(
        "haproxy_frontend_current_session_rate",
        PROXY,
        "New connections let in per second, over the time since the previous scrape (at least 1 s).",
        Value(|l| l.session_rate),
    ),
    counter(
        "haproxy_frontend_bytes_in_total",
        PROXY,
        "Bytes received from clients.",
        Value(|l| l.bytes_in_total as f64),
    ),
    counter(
        "haproxy_frontend_bytes_out_total",
        PROXY,
        "Bytes sent to clients.",
        Value(|l| l.bytes_out_total as f64),
    ),
    counter(
        "haproxy_frontend_denied_connections_total",
        PROXY,
        "Connections refused because the client address is not in allowed_cidrs.",
        Value(|l| l.denied_total as f64),
    ),
    counter(
        "lbd_frontend_limit_hits_total",
        PROXY,
        "Connections refused because the listener's connection_limit was reached.",
        Value(|l| l.limit_hits_total as f64),
    ),
    counter(
        "lbd_frontend_no_member_total",
        PROXY,
        "Connections reset because no member was usable or every connect attempt failed.",
        Value(|l| l.no_member_total as f64),
    ),
    counter(
        "lbd_frontend_local_errors_total",
        PROXY,
        "Connections reset because lbd ran out of a local resource (file descriptors, memory, local ports) while connecting to a member; members are not blamed for these.",
        Value(|l| l.local_errors_total as f64),
    ),
    counter(
        "lbd_frontend_hedges_total",
        PROXY,
        "Hedged connects started (connect_hedge): a member's connect had not completed after the hedge delay, so a connect to another member started too.",
        Value(|l| l.hedges_total as f64),
    ),
    counter(
        "lbd_frontend_hedges_won_total",
        PROXY,
        "Hedged connects won by the hedge: the client was served by the second member (it connected first, and the first connect was aborted without counting as a failure; or the first connect failed).",
        Value(|l| l.hedges_won_total as f64),
    ),
    counter(
        "lbd_frontend_datagrams_in_total",
        PROXY,
        "UDP listeners: datagrams received from clients.",
        Value(|l| l.datagrams_in_total as f64),
    ),
    counter(
        "lbd_frontend_datagrams_out_total",
        PROXY,
        "UDP listeners: datagrams sent to clients.",
        Value(|l| l.datagrams_out_total as f64),
    ),
    counter(
        "lbd_frontend_datagrams_dropped_total",
        PROXY,
        "UDP listeners: datagrams dropped because sending them failed (socket buffer full, too large, member refused); datagrams that could not open a flow are in the denied, limit and no-member counters.",
        Value(|l| l.datagrams_dropped_total as f64),
    ),
    gauge(
        "lbd_frontend_info",
        &["proxy", "bind", "pool"],
        "Always 1; maps a listener to its bind address and its pool.",
        Info(|l| vec![l.bind.as_str(), l.pool.as_str()]),
    ),
];

/// Backends: one row per pool, `proxy` = its name.
pub(super) const POOLS: &[Metric<PoolStats>] = &[
    gauge(
        "haproxy_backend_status",
        PROXY_STATE,
        "Pool status, one series per state (UP while a member can take new connections or the pool is empty, else DOWN); 1 for the current one.",
        OneHot(UP_DOWN, |p| Some(pool_state(p))),
    ),
    gauge(
        "haproxy_backend_active_servers",
        PROXY,
        "Non-backup members with a non-zero weight taking new connections.",
        Value(|p| p.active_members as f64),
    ),
    gauge(
        "haproxy_backend_backup_servers",
        PROXY,
        "Backup members with a non-zero weight that could take new connections.",
        Value(|p| p.backup_members as f64),
    ),
    gauge(
        "haproxy_backend_agg_server_status",
        PROXY_STATE,
        "Number of the pool's members in each state (same states as haproxy_server_status).",
        PerState(SERVER_STATES, |p, state| {
            let in_state = |m: &&MemberStats| server_state(m.status) == Some(state);
            p.members.iter().filter(in_state).count() as f64
        }),
    ),
    gauge(
        "haproxy_backend_current_sessions",
        PROXY,
        "Connections open to the pool's members right now.",
        Value(|p| p.current_sessions as f64),
    ),
    counter(
        "haproxy_backend_sessions_total",
        PROXY,
        "Connections established to the pool's members.",
        Value(|p| p.sessions_total as f64),
    ),
    counter(
        "haproxy_backend_bytes_in_total",
        PROXY,
        "Bytes sent from clients to the pool's members.",
        Value(|p| p.bytes_in_total as f64),
    ),
    counter(
        "haproxy_backend_bytes_out_total",
        PROXY,
        "Bytes sent from the pool's members to clients.",
        Value(|p| p.bytes_out_total as f64),
    ),
    counter(
        "haproxy_backend_connection_errors_total",
        PROXY,
        "Failed connect attempts to the pool's members (refused, unreachable, timed out), plus clients that timed out in the queue.",
        Value(|p| p.connect_errors_total as f64),
    ),
    counter(
        "haproxy_backend_retry_warnings_total",
        PROXY,
        "Connect retries: connections sent to another member after a failed connect.",
        Value(|p| p.retries_total as f64),
    ),
    counter(
        "haproxy_backend_redispatch_warnings_total",
        PROXY,
        "Connections sent to another member after a failed connect (lbd always retries elsewhere, so this equals the retry count).",
        Value(|p| p.retries_total as f64),
    ),
    gauge(
        "haproxy_backend_current_queue",
        PROXY,
        "Clients waiting in the pool's queue for a member below its max_connections.",
        Value(|p| p.queue.current as f64),
    ),
    gauge(
        "haproxy_backend_max_queue",
        PROXY,
        "Highest number of clients that waited in the pool's queue at once.",
        Value(|p| p.queue.max as f64),
    ),
    gauge(
        "haproxy_backend_queue_time_average_seconds",
        PROXY,
        "Average time in the queue over the last 1024 connections to the pool (those that did not wait count 0).",
        Value(|p| p.queue.time_average_seconds),
    ),
    gauge(
        "haproxy_backend_max_queue_time_seconds",
        PROXY,
        "Longest time a client that got a member waited in the queue.",
        Value(|p| p.queue.time_max_seconds),
    ),
    counter(
        "lbd_backend_queue_timeouts_total",
        PROXY,
        "Clients reset after waiting queue_timeout in the queue.",
        Value(|p| p.queue.timeouts_total as f64),
    ),
    counter(
        "lbd_backend_queue_full_total",
        PROXY,
        "Clients reset at once because max_queue clients were already waiting.",
        Value(|p| p.queue.full_total as f64),
    ),
    gauge(
        "lbd_backend_info",
        &["proxy", "algorithm", "check"],
        "Always 1; the pool's balancing algorithm and health-check type (none without checks).",
        Info(|p| vec![p.algorithm, p.check_type.unwrap_or("none")]),
    ),
];

/// Servers: one row per member, `proxy` = its pool's name, `server` =
/// [`MemberStats::server`].
pub(super) const MEMBERS: &[Metric<MemberStats>] = &[
    gauge(
        "haproxy_server_status",
        SERVER_STATE,
        "Member status, one series per state (UP, DOWN, MAINT, DRAIN, NOLB); 1 for the current one. Members of pools without health checks are UP.",
        OneHot(SERVER_STATES, |m| server_state(m.status)),
    ),
    gauge(
        "haproxy_server_current_sessions",
        SERVER,
        "Connections open to the member right now.",
        Value(|m| m.current_sessions as f64),
    ),
    counter(
        "haproxy_server_sessions_total",
        SERVER,
        "Connections established to the member.",
        Value(|m| m.sessions_total as f64),
    ),
    counter(
        "haproxy_server_bytes_in_total",
        SERVER,
        "Bytes sent from clients to the member.",
        Value(|m| m.bytes_in_total as f64),
    ),
    counter(
        "haproxy_server_bytes_out_total",
        SERVER,
        "Bytes sent from the member to clients.",
        Value(|m| m.bytes_out_total as f64),
    ),
    counter(
        "lbd_server_datagrams_in_total",
        SERVER,
        "UDP: datagrams sent from clients to the member.",
        Value(|m| m.datagrams_in_total as f64),
    ),
    counter(
        "lbd_server_datagrams_out_total",
        SERVER,
        "UDP: datagrams the member sent back to clients.",
        Value(|m| m.datagrams_out_total as f64),
    ),
    counter(
        "haproxy_server_connection_errors_total",
        SERVER,
        "Failed connect attempts to the member (refused, unreachable, timed out).",
        Value(|m| m.connect_errors_total as f64),
    ),
    counter(
        "haproxy_server_retry_warnings_total",
        SERVER,
        "Connect retries after failing on this member: connections then sent to another member.",
        Value(|m| m.retries_total as f64),
    ),
    counter(
        "haproxy_server_redispatch_warnings_total",
        SERVER,
        "Connections sent to another member after a failed connect here (equals the retry count).",
        Value(|m| m.retries_total as f64),
    ),
    gauge(
        "haproxy_server_weight",
        SERVER,
        "Effective weight: the configured weight (less while slow start ramps it up), 0 while the member is drained or in maintenance.",
        Value(|m| {
            if m.admin_state == "ready" {
                f64::from(m.current_weight)
            } else {
                0.0
            }
        }),
    ),
    gauge(
        "haproxy_server_uweight",
        SERVER,
        "Configured weight.",
        Value(|m| f64::from(m.weight)),
    ),
    gauge(
        "haproxy_server_limit_sessions",
        SERVER,
        "The member's max_connections; only for members that have one.",
        Optional(|m| m.max_connections.map(f64::from)),
    ),
    gauge(
        "haproxy_server_active",
        SERVER,
        "1 for a regular member, 0 for a backup member.",
        Value(|m| flag(!m.backup)),
    ),
    gauge(
        "haproxy_server_backup",
        SERVER,
        "1 for a backup member, 0 for a regular member.",
        Value(|m| flag(m.backup)),
    ),
    counter(
        "haproxy_server_check_failures_total",
        SERVER,
        "Failed health checks.",
        Value(|m| m.check_failures_total as f64),
    ),
    counter(
        "haproxy_server_check_up_down_total",
        SERVER,
        "Transitions from up to down.",
        Value(|m| m.down_transitions_total as f64),
    ),
    gauge(
        "haproxy_server_check_last_change_seconds",
        SERVER,
        "Seconds since the member's health last changed (or since it appeared).",
        Value(|m| m.seconds_since_change),
    ),
    gauge(
        "haproxy_server_check_duration_seconds",
        SERVER,
        "Duration of the latest health check, in seconds; only for members checked at least once.",
        Optional(|m| m.last_check.as_ref().map(|c| c.duration_seconds)),
    ),
    gauge(
        "lbd_server_check_passed",
        SERVER,
        "1 if the latest health check passed, 0 if it failed; only for members checked at least once.",
        Optional(|m| m.last_check.as_ref().map(|c| flag(c.passed))),
    ),
    counter(
        "lbd_server_sessions_shutdown_total",
        SERVER,
        "Established connections closed because the member went down or into maintenance (pool on_down / on_maint = shutdown_sessions), or by the stats socket's shutdown sessions server.",
        Value(|m| m.sessions_shutdown_total as f64),
    ),
    gauge(
        "lbd_server_admin_state",
        SERVER_STATE,
        "Administrative state set by config or API, one series per state (ready, drain, maint); 1 for the current one.",
        OneHot(ADMIN_STATES, |m| Some(m.admin_state)),
    ),
    gauge(
        "lbd_server_info",
        &["proxy", "server", "address", "id"],
        "Always 1; maps the server label to the member's address and its id (empty when not set).",
        Info(|m| vec![m.address.as_str(), m.id.as_deref().unwrap_or("")]),
    ),
];
