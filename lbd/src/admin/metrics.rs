//! `/metrics`: the Prometheus text format (0.0.4) of a [`Stats`] snapshot.
//!
//! Where HAProxy's built-in exporter (promex, `haproxy_frontend_*`,
//! `haproxy_backend_*`, `haproxy_server_*`) has a metric with the same
//! meaning, lbd uses its name, type and label names (`proxy` = listener or
//! pool name, `server` = [`MemberStats::server`], `state` for one-hot status
//! series), so HAProxy dashboards and alerts keep working. Everything else is
//! `lbd_*`. [`METRICS`] lists every family, in output order.
//!
//! Nothing here is global: every call builds the families from `stats`
//! alone and encodes them with `prometheus::TextEncoder`, which escapes label
//! values (`\`, `"` and newlines), so free-text member names stay valid.

use std::collections::HashSet;

use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::TextEncoder;

use super::stats::{MemberStats, PoolStats, Stats};

/// The content type to serve [`render`]'s output with.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metric family's Prometheus type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    /// `counter` or `gauge`, as in `# TYPE` lines.
    pub const fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// One metric family lbd exports.
#[derive(Debug, Clone, Copy)]
pub struct MetricInfo {
    pub name: &'static str,
    pub kind: Kind,
    /// Label names, in the order they appear on each series.
    pub labels: &'static [&'static str],
    /// The `# HELP` text.
    pub help: &'static str,
    /// Same name, type, labels and meaning as HAProxy's built-in exporter.
    pub haproxy: bool,
}

const NONE: &[&str] = &[];
const PROXY: &[&str] = &["proxy"];
const PROXY_STATE: &[&str] = &["proxy", "state"];
const SERVER: &[&str] = &["proxy", "server"];
const SERVER_STATE: &[&str] = &["proxy", "server", "state"];

const fn haproxy(
    name: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
    help: &'static str,
) -> MetricInfo {
    MetricInfo {
        name,
        kind,
        labels,
        help,
        haproxy: true,
    }
}

const fn lbd(
    name: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
    help: &'static str,
) -> MetricInfo {
    MetricInfo {
        name,
        kind,
        labels,
        help,
        haproxy: false,
    }
}

use Kind::{Counter as C, Gauge as G};

// Process.
const INFO: MetricInfo = lbd(
    "lbd_info",
    G,
    &["version", "runtime"],
    "Always 1; the labels tell the lbd version and the data-plane runtime (io_uring or epoll).",
);
const UPTIME: MetricInfo = lbd("lbd_uptime_seconds", G, NONE, "Seconds since lbd started.");
const WORKERS: MetricInfo = lbd(
    "lbd_workers",
    G,
    NONE,
    "Number of data-plane worker threads.",
);
const GENERATION: MetricInfo = lbd(
    "lbd_config_generation",
    G,
    NONE,
    "Generation of the running config: 1 at start, plus 1 per applied reload.",
);
const RELOADS: MetricInfo = lbd("lbd_reloads_total", C, NONE, "Config reloads applied.");
const RELOAD_FAILURES: MetricInfo = lbd(
    "lbd_reload_failures_total",
    C,
    NONE,
    "Config reloads rejected; the running config stayed.",
);
const CURRENT_CONNECTIONS: MetricInfo = lbd(
    "lbd_current_connections",
    G,
    NONE,
    "Client connections open right now, all listeners together.",
);

// The XDP fast path.
const XDP_ATTACHED: MetricInfo = lbd(
    "lbd_xdp_attached",
    G,
    &["interface", "mode"],
    "1 per interface the XDP fast path is attached to; mode is native or generic.",
);
const XDP_PACKETS: MetricInfo = lbd(
    "lbd_xdp_packets_total",
    C,
    NONE,
    "Packets the XDP fast path forwarded (both directions).",
);
const XDP_BYTES: MetricInfo = lbd(
    "lbd_xdp_bytes_total",
    C,
    NONE,
    "Bytes the XDP fast path forwarded (both directions).",
);
const XDP_NEW_FLOWS: MetricInfo = lbd(
    "lbd_xdp_new_flows_total",
    C,
    NONE,
    "Connections the XDP fast path balanced to a member.",
);
const XDP_FLOWS: MetricInfo = lbd(
    "lbd_xdp_flows",
    G,
    NONE,
    "Flows in the XDP fast path's connection table.",
);
const XDP_DROPS: MetricInfo = lbd(
    "lbd_xdp_drops_total",
    C,
    &["reason"],
    "Packets the XDP fast path dropped, by reason.",
);

// Frontends (listeners).
const FE_STATUS: MetricInfo = haproxy(
    "haproxy_frontend_status",
    G,
    PROXY_STATE,
    "Listener status, one series per state (UP while accepting, DOWN once stopped); 1 for the current one.",
);
const FE_CURRENT_SESSIONS: MetricInfo = haproxy(
    "haproxy_frontend_current_sessions",
    G,
    PROXY,
    "Client connections open on the listener right now.",
);
const FE_MAX_SESSIONS: MetricInfo = haproxy(
    "haproxy_frontend_max_sessions",
    G,
    PROXY,
    "Highest number of connections open at once on the listener.",
);
const FE_LIMIT_SESSIONS: MetricInfo = haproxy(
    "haproxy_frontend_limit_sessions",
    G,
    PROXY,
    "The listener's connection_limit.",
);
const FE_SESSIONS: MetricInfo = haproxy(
    "haproxy_frontend_sessions_total",
    C,
    PROXY,
    "Connections let in: accepted and not refused by allowed_cidrs or connection_limit.",
);
const FE_CONNECTIONS: MetricInfo = haproxy(
    "haproxy_frontend_connections_total",
    C,
    PROXY,
    "Connections accepted, refused ones included.",
);
const FE_SESSION_RATE: MetricInfo = haproxy(
    "haproxy_frontend_current_session_rate",
    G,
    PROXY,
    "New connections let in per second, over the time since the previous scrape (at least 1 s).",
);
const FE_BYTES_IN: MetricInfo = haproxy(
    "haproxy_frontend_bytes_in_total",
    C,
    PROXY,
    "Bytes received from clients.",
);
const FE_BYTES_OUT: MetricInfo = haproxy(
    "haproxy_frontend_bytes_out_total",
    C,
    PROXY,
    "Bytes sent to clients.",
);
const FE_DENIED: MetricInfo = haproxy(
    "haproxy_frontend_denied_connections_total",
    C,
    PROXY,
    "Connections refused because the client address is not in allowed_cidrs.",
);
const FE_LIMIT_HITS: MetricInfo = lbd(
    "lbd_frontend_limit_hits_total",
    C,
    PROXY,
    "Connections refused because the listener's connection_limit was reached.",
);
const FE_NO_MEMBER: MetricInfo = lbd(
    "lbd_frontend_no_member_total",
    C,
    PROXY,
    "Connections reset because no member was usable or every connect attempt failed.",
);
const FE_LOCAL_ERRORS: MetricInfo = lbd(
    "lbd_frontend_local_errors_total",
    C,
    PROXY,
    "Connections reset because lbd ran out of a local resource (file descriptors, memory, local ports) while connecting to a member; members are not blamed for these.",
);
const FE_INFO: MetricInfo = lbd(
    "lbd_frontend_info",
    G,
    &["proxy", "bind", "pool"],
    "Always 1; maps a listener to its bind address and its pool.",
);

// Backends (pools).
const BE_STATUS: MetricInfo = haproxy(
    "haproxy_backend_status",
    G,
    PROXY_STATE,
    "Pool status, one series per state (UP while a member can take new connections or the pool is empty, else DOWN); 1 for the current one.",
);
const BE_ACTIVE: MetricInfo = haproxy(
    "haproxy_backend_active_servers",
    G,
    PROXY,
    "Non-backup members with a non-zero weight taking new connections.",
);
const BE_BACKUP: MetricInfo = haproxy(
    "haproxy_backend_backup_servers",
    G,
    PROXY,
    "Backup members with a non-zero weight that could take new connections.",
);
const BE_AGG_STATUS: MetricInfo = haproxy(
    "haproxy_backend_agg_server_status",
    G,
    PROXY_STATE,
    "Number of the pool's members in each state (same states as haproxy_server_status).",
);
const BE_CURRENT_SESSIONS: MetricInfo = haproxy(
    "haproxy_backend_current_sessions",
    G,
    PROXY,
    "Connections open to the pool's members right now.",
);
const BE_SESSIONS: MetricInfo = haproxy(
    "haproxy_backend_sessions_total",
    C,
    PROXY,
    "Connections established to the pool's members.",
);
const BE_BYTES_IN: MetricInfo = haproxy(
    "haproxy_backend_bytes_in_total",
    C,
    PROXY,
    "Bytes sent from clients to the pool's members.",
);
const BE_BYTES_OUT: MetricInfo = haproxy(
    "haproxy_backend_bytes_out_total",
    C,
    PROXY,
    "Bytes sent from the pool's members to clients.",
);
const BE_CONNECT_ERRORS: MetricInfo = haproxy(
    "haproxy_backend_connection_errors_total",
    C,
    PROXY,
    "Failed connect attempts to the pool's members (refused, unreachable, timed out).",
);
const BE_RETRIES: MetricInfo = haproxy(
    "haproxy_backend_retry_warnings_total",
    C,
    PROXY,
    "Connect retries: connections sent to another member after a failed connect.",
);
const BE_REDISPATCHES: MetricInfo = haproxy(
    "haproxy_backend_redispatch_warnings_total",
    C,
    PROXY,
    "Connections sent to another member after a failed connect (lbd always retries elsewhere, so this equals the retry count).",
);
const BE_INFO: MetricInfo = lbd(
    "lbd_backend_info",
    G,
    &["proxy", "algorithm", "check"],
    "Always 1; the pool's balancing algorithm and health-check type (none without checks).",
);

// Servers (members).
const SV_STATUS: MetricInfo = haproxy(
    "haproxy_server_status",
    G,
    SERVER_STATE,
    "Member status, one series per state (UP, DOWN, MAINT, DRAIN, NOLB); 1 for the current one. Members of pools without health checks are UP.",
);
const SV_CURRENT_SESSIONS: MetricInfo = haproxy(
    "haproxy_server_current_sessions",
    G,
    SERVER,
    "Connections open to the member right now.",
);
const SV_SESSIONS: MetricInfo = haproxy(
    "haproxy_server_sessions_total",
    C,
    SERVER,
    "Connections established to the member.",
);
const SV_BYTES_IN: MetricInfo = haproxy(
    "haproxy_server_bytes_in_total",
    C,
    SERVER,
    "Bytes sent from clients to the member.",
);
const SV_BYTES_OUT: MetricInfo = haproxy(
    "haproxy_server_bytes_out_total",
    C,
    SERVER,
    "Bytes sent from the member to clients.",
);
const SV_CONNECT_ERRORS: MetricInfo = haproxy(
    "haproxy_server_connection_errors_total",
    C,
    SERVER,
    "Failed connect attempts to the member (refused, unreachable, timed out).",
);
const SV_RETRIES: MetricInfo = haproxy(
    "haproxy_server_retry_warnings_total",
    C,
    SERVER,
    "Connect retries after failing on this member: connections then sent to another member.",
);
const SV_REDISPATCHES: MetricInfo = haproxy(
    "haproxy_server_redispatch_warnings_total",
    C,
    SERVER,
    "Connections sent to another member after a failed connect here (equals the retry count).",
);
const SV_WEIGHT: MetricInfo = haproxy(
    "haproxy_server_weight",
    G,
    SERVER,
    "Effective weight: the configured weight, 0 while the member is drained or in maintenance.",
);
const SV_UWEIGHT: MetricInfo = haproxy("haproxy_server_uweight", G, SERVER, "Configured weight.");
const SV_ACTIVE: MetricInfo = haproxy(
    "haproxy_server_active",
    G,
    SERVER,
    "1 for a regular member, 0 for a backup member.",
);
const SV_BACKUP: MetricInfo = haproxy(
    "haproxy_server_backup",
    G,
    SERVER,
    "1 for a backup member, 0 for a regular member.",
);
const SV_CHECK_FAILURES: MetricInfo = haproxy(
    "haproxy_server_check_failures_total",
    C,
    SERVER,
    "Failed health checks.",
);
const SV_CHECK_UP_DOWN: MetricInfo = haproxy(
    "haproxy_server_check_up_down_total",
    C,
    SERVER,
    "Transitions from up to down.",
);
const SV_CHECK_LAST_CHANGE: MetricInfo = haproxy(
    "haproxy_server_check_last_change_seconds",
    G,
    SERVER,
    "Seconds since the member's health last changed (or since it appeared).",
);
const SV_CHECK_DURATION: MetricInfo = haproxy(
    "haproxy_server_check_duration_seconds",
    G,
    SERVER,
    "Duration of the latest health check, in seconds; only for members checked at least once.",
);
const SV_CHECK_PASSED: MetricInfo = lbd(
    "lbd_server_check_passed",
    G,
    SERVER,
    "1 if the latest health check passed, 0 if it failed; only for members checked at least once.",
);
const SV_ADMIN_STATE: MetricInfo = lbd(
    "lbd_server_admin_state",
    G,
    SERVER_STATE,
    "Administrative state set by config or API, one series per state (ready, drain, maint); 1 for the current one.",
);
const SV_INFO: MetricInfo = lbd(
    "lbd_server_info",
    G,
    &["proxy", "server", "address", "id"],
    "Always 1; maps the server label to the member's address and its id (empty when not set).",
);

/// Every family [`render`] can produce, in output order. Families without
/// series (no listeners, no checked members...) are left out of the output.
pub const METRICS: &[MetricInfo] = &[
    INFO,
    UPTIME,
    WORKERS,
    GENERATION,
    RELOADS,
    RELOAD_FAILURES,
    CURRENT_CONNECTIONS,
    XDP_ATTACHED,
    XDP_PACKETS,
    XDP_BYTES,
    XDP_NEW_FLOWS,
    XDP_FLOWS,
    XDP_DROPS,
    FE_STATUS,
    FE_CURRENT_SESSIONS,
    FE_MAX_SESSIONS,
    FE_LIMIT_SESSIONS,
    FE_SESSIONS,
    FE_CONNECTIONS,
    FE_SESSION_RATE,
    FE_BYTES_IN,
    FE_BYTES_OUT,
    FE_DENIED,
    FE_LIMIT_HITS,
    FE_NO_MEMBER,
    FE_LOCAL_ERRORS,
    FE_INFO,
    BE_STATUS,
    BE_ACTIVE,
    BE_BACKUP,
    BE_AGG_STATUS,
    BE_CURRENT_SESSIONS,
    BE_SESSIONS,
    BE_BYTES_IN,
    BE_BYTES_OUT,
    BE_CONNECT_ERRORS,
    BE_RETRIES,
    BE_REDISPATCHES,
    BE_INFO,
    SV_STATUS,
    SV_CURRENT_SESSIONS,
    SV_SESSIONS,
    SV_BYTES_IN,
    SV_BYTES_OUT,
    SV_CONNECT_ERRORS,
    SV_RETRIES,
    SV_REDISPATCHES,
    SV_WEIGHT,
    SV_UWEIGHT,
    SV_ACTIVE,
    SV_BACKUP,
    SV_CHECK_FAILURES,
    SV_CHECK_UP_DOWN,
    SV_CHECK_LAST_CHANGE,
    SV_CHECK_DURATION,
    SV_CHECK_PASSED,
    SV_ADMIN_STATE,
    SV_INFO,
];

/// HAProxy's frontend and backend `state` label values, in its order.
const UP_DOWN: [&str; 2] = ["DOWN", "UP"];
/// HAProxy's server `state` label values, in its order (promex_srv_st).
const SERVER_STATES: [&str; 5] = ["DOWN", "UP", "MAINT", "DRAIN", "NOLB"];
/// lbd's admin states, as `admin_state_name` spells them.
const ADMIN_STATES: [&str; 3] = ["ready", "drain", "maint"];

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

/// The Prometheus text format (0.0.4) of `stats`.
pub fn render(stats: &Stats) -> String {
    let families = families(stats);
    let encoder = TextEncoder::new();
    let mut out = String::new();
    for family in &families {
        // Families are never empty nor unnamed, the only encoder errors; if
        // one still fails, the rest of the page is worth serving.
        let mut text = String::new();
        match encoder.encode_utf8(std::slice::from_ref(family), &mut text) {
            Ok(()) => out.push_str(&text),
            Err(e) => tracing::warn!("metrics: {} left out: {e}", family.name()),
        }
    }
    out
}

/// One series: label values in the order of [`MetricInfo::labels`], value.
type Sample<'a> = (Vec<&'a str>, f64);

#[derive(Default)]
struct Families(Vec<MetricFamily>);

impl Families {
    /// Adds `info`'s family with `samples`; leaves it out without any.
    /// A series whose label values repeat an earlier one is dropped: two
    /// series with the same labels would make the scrape invalid.
    fn add<'a>(&mut self, info: &MetricInfo, samples: impl IntoIterator<Item = Sample<'a>>) {
        let mut seen: HashSet<Vec<&'a str>> = HashSet::new();
        let mut metrics = Vec::new();
        for (values, value) in samples {
            debug_assert_eq!(values.len(), info.labels.len(), "{}", info.name);
            if values.len() != info.labels.len() || !seen.insert(values.clone()) {
                continue;
            }
            let labels = info
                .labels
                .iter()
                .zip(&values)
                .map(|(name, value)| {
                    let mut pair = LabelPair::default();
                    pair.set_name((*name).to_owned());
                    pair.set_value((*value).to_owned());
                    pair
                })
                .collect();
            let mut metric = Metric::from_label(labels);
            // The encoder prints Rust's `inf`, which Prometheus rejects.
            let value = if value.is_finite() { value } else { f64::NAN };
            match info.kind {
                Kind::Counter => {
                    let mut counter = Counter::default();
                    counter.set_value(value);
                    metric.set_counter(counter);
                }
                Kind::Gauge => {
                    let mut gauge = Gauge::default();
                    gauge.set_value(value);
                    metric.set_gauge(gauge);
                }
            }
            metrics.push(metric);
        }
        if metrics.is_empty() {
            return;
        }
        let mut family = MetricFamily::default();
        family.set_name(info.name.to_owned());
        family.set_help(info.help.to_owned());
        family.set_field_type(match info.kind {
            Kind::Counter => MetricType::COUNTER,
            Kind::Gauge => MetricType::GAUGE,
        });
        family.set_metric(metrics);
        self.0.push(family);
    }

    /// One series without labels.
    fn single(&mut self, info: &MetricInfo, value: f64) {
        self.add(info, [(Vec::new(), value)]);
    }
}

fn flag(on: bool) -> f64 {
    if on {
        1.0
    } else {
        0.0
    }
}

/// Every member with its pool.
fn members(stats: &Stats) -> impl Iterator<Item = (&PoolStats, &MemberStats)> {
    stats
        .pools
        .iter()
        .flat_map(|p| p.members.iter().map(move |m| (p, m)))
}

fn families(s: &Stats) -> Vec<MetricFamily> {
    let mut f = Families::default();

    f.add(&INFO, [(vec![s.version, s.runtime], 1.0)]);
    f.single(&UPTIME, s.uptime_seconds);
    f.single(&WORKERS, s.workers as f64);
    f.single(&GENERATION, s.generation as f64);
    f.single(&RELOADS, s.reloads_total as f64);
    f.single(&RELOAD_FAILURES, s.reload_failures_total as f64);
    f.single(&CURRENT_CONNECTIONS, s.current_connections as f64);
    if let Some(x) = &s.xdp {
        f.add(
            &XDP_ATTACHED,
            x.interfaces
                .iter()
                .map(|i| (vec![i.interface.as_str(), i.mode], 1.0)),
        );
        f.single(&XDP_PACKETS, x.packets_total as f64);
        f.single(&XDP_BYTES, x.bytes_total as f64);
        f.single(&XDP_NEW_FLOWS, x.new_flows_total as f64);
        f.single(&XDP_FLOWS, x.flows as f64);
        f.add(
            &XDP_DROPS,
            x.drops_total
                .iter()
                .map(|d| (vec![d.reason], d.packets as f64)),
        );
    }

    let fe = &s.listeners;
    f.add(
        &FE_STATUS,
        fe.iter().flat_map(|l| {
            let current = if l.status == "open" { "UP" } else { "DOWN" };
            UP_DOWN.map(|state| (vec![l.name.as_str(), state], flag(state == current)))
        }),
    );
    let per_listener = |field: fn(&super::stats::ListenerStats) -> f64| {
        fe.iter()
            .map(move |l| (vec![l.name.as_str()], field(l)))
            .collect::<Vec<_>>()
    };
    f.add(
        &FE_CURRENT_SESSIONS,
        per_listener(|l| l.current_sessions as f64),
    );
    f.add(&FE_MAX_SESSIONS, per_listener(|l| l.max_sessions as f64));
    f.add(
        &FE_LIMIT_SESSIONS,
        per_listener(|l| f64::from(l.session_limit)),
    );
    f.add(&FE_SESSIONS, per_listener(|l| l.sessions_total as f64));
    f.add(
        &FE_CONNECTIONS,
        per_listener(|l| l.connections_total as f64),
    );
    f.add(&FE_SESSION_RATE, per_listener(|l| l.session_rate));
    f.add(&FE_BYTES_IN, per_listener(|l| l.bytes_in_total as f64));
    f.add(&FE_BYTES_OUT, per_listener(|l| l.bytes_out_total as f64));
    f.add(&FE_DENIED, per_listener(|l| l.denied_total as f64));
    f.add(&FE_LIMIT_HITS, per_listener(|l| l.limit_hits_total as f64));
    f.add(&FE_NO_MEMBER, per_listener(|l| l.no_member_total as f64));
    f.add(
        &FE_LOCAL_ERRORS,
        per_listener(|l| l.local_errors_total as f64),
    );
    f.add(
        &FE_INFO,
        fe.iter()
            .map(|l| (vec![l.name.as_str(), l.bind.as_str(), l.pool.as_str()], 1.0)),
    );

    let be = &s.pools;
    f.add(
        &BE_STATUS,
        be.iter().flat_map(|p| {
            let up = p.active_members + p.backup_members > 0 || p.members.is_empty();
            let current = if up { "UP" } else { "DOWN" };
            UP_DOWN.map(|state| (vec![p.name.as_str(), state], flag(state == current)))
        }),
    );
    let per_pool = |field: fn(&PoolStats) -> f64| {
        be.iter()
            .map(move |p| (vec![p.name.as_str()], field(p)))
            .collect::<Vec<_>>()
    };
    f.add(&BE_ACTIVE, per_pool(|p| p.active_members as f64));
    f.add(&BE_BACKUP, per_pool(|p| p.backup_members as f64));
    f.add(
        &BE_AGG_STATUS,
        be.iter().flat_map(|p| {
            SERVER_STATES.map(|state| {
                let count = p
                    .members
                    .iter()
                    .filter(|m| server_state(m.status) == Some(state))
                    .count();
                (vec![p.name.as_str(), state], count as f64)
            })
        }),
    );
    f.add(
        &BE_CURRENT_SESSIONS,
        per_pool(|p| p.current_sessions as f64),
    );
    f.add(&BE_SESSIONS, per_pool(|p| p.sessions_total as f64));
    f.add(&BE_BYTES_IN, per_pool(|p| p.bytes_in_total as f64));
    f.add(&BE_BYTES_OUT, per_pool(|p| p.bytes_out_total as f64));
    f.add(
        &BE_CONNECT_ERRORS,
        per_pool(|p| p.connect_errors_total as f64),
    );
    f.add(&BE_RETRIES, per_pool(|p| p.retries_total as f64));
    f.add(&BE_REDISPATCHES, per_pool(|p| p.retries_total as f64));
    f.add(
        &BE_INFO,
        be.iter().map(|p| {
            let check = p.check_type.unwrap_or("none");
            (vec![p.name.as_str(), p.algorithm, check], 1.0)
        }),
    );

    f.add(
        &SV_STATUS,
        members(s).flat_map(|(p, m)| {
            let current = server_state(m.status);
            SERVER_STATES.map(|state| {
                (
                    vec![p.name.as_str(), m.server.as_str(), state],
                    flag(current == Some(state)),
                )
            })
        }),
    );
    let per_member = |field: fn(&MemberStats) -> f64| {
        members(s)
            .map(move |(p, m)| (vec![p.name.as_str(), m.server.as_str()], field(m)))
            .collect::<Vec<_>>()
    };
    f.add(
        &SV_CURRENT_SESSIONS,
        per_member(|m| m.current_sessions as f64),
    );
    f.add(&SV_SESSIONS, per_member(|m| m.sessions_total as f64));
    f.add(&SV_BYTES_IN, per_member(|m| m.bytes_in_total as f64));
    f.add(&SV_BYTES_OUT, per_member(|m| m.bytes_out_total as f64));
    f.add(
        &SV_CONNECT_ERRORS,
        per_member(|m| m.connect_errors_total as f64),
    );
    f.add(&SV_RETRIES, per_member(|m| m.retries_total as f64));
    f.add(&SV_REDISPATCHES, per_member(|m| m.retries_total as f64));
    f.add(
        &SV_WEIGHT,
        per_member(|m| {
            if m.admin_state == "ready" {
                f64::from(m.weight)
            } else {
                0.0
            }
        }),
    );
    f.add(&SV_UWEIGHT, per_member(|m| f64::from(m.weight)));
    f.add(&SV_ACTIVE, per_member(|m| flag(!m.backup)));
    f.add(&SV_BACKUP, per_member(|m| flag(m.backup)));
    f.add(
        &SV_CHECK_FAILURES,
        per_member(|m| m.check_failures_total as f64),
    );
    f.add(
        &SV_CHECK_UP_DOWN,
        per_member(|m| m.down_transitions_total as f64),
    );
    f.add(
        &SV_CHECK_LAST_CHANGE,
        per_member(|m| m.seconds_since_change),
    );
    f.add(
        &SV_CHECK_DURATION,
        members(s).filter_map(|(p, m)| {
            let check = m.last_check.as_ref()?;
            Some((
                vec![p.name.as_str(), m.server.as_str()],
                check.duration_seconds,
            ))
        }),
    );
    f.add(
        &SV_CHECK_PASSED,
        members(s).filter_map(|(p, m)| {
            let check = m.last_check.as_ref()?;
            Some((vec![p.name.as_str(), m.server.as_str()], flag(check.passed)))
        }),
    );
    f.add(
        &SV_ADMIN_STATE,
        members(s).flat_map(|(p, m)| {
            ADMIN_STATES.map(|state| {
                (
                    vec![p.name.as_str(), m.server.as_str(), state],
                    flag(m.admin_state == state),
                )
            })
        }),
    );
    f.add(
        &SV_INFO,
        members(s).map(|(p, m)| {
            let id = m.id.as_deref().unwrap_or("");
            (
                vec![p.name.as_str(), m.server.as_str(), m.address.as_str(), id],
                1.0,
            )
        }),
    );

    f.0
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::process::{Command, Stdio};

    use super::super::stats::{CheckStats, ListenerStats};
    use super::*;

    const WEIRD: &str = "we\"ird\\name\nline\r\t é";

    fn listener(name: &str, pool: &str, status: &'static str) -> ListenerStats {
        ListenerStats {
            name: name.to_owned(),
            bind: "0.0.0.0:80".to_owned(),
            pool: pool.to_owned(),
            status,
            current_sessions: 7,
            max_sessions: 42,
            session_limit: 50_000,
            connections_total: 1000,
            sessions_total: 990,
            session_rate: 12.5,
            bytes_in_total: 1234,
            bytes_out_total: 5678,
            denied_total: 4,
            limit_hits_total: 6,
            no_member_total: 3,
            local_errors_total: 0,
        }
    }

    fn member(server: &str, status: &'static str, admin_state: &'static str) -> MemberStats {
        MemberStats {
            server: server.to_owned(),
            address: format!("10.0.0.{}:8080", server.len()),
            name: Some(server.to_owned()),
            id: None,
            status,
            admin_state,
            weight: 10,
            backup: false,
            current_sessions: 2,
            sessions_total: 100,
            connect_errors_total: 5,
            retries_total: 4,
            bytes_in_total: 300,
            bytes_out_total: 900,
            last_check: None,
            check_failures_total: 0,
            down_transitions_total: 0,
            seconds_since_change: 61.5,
        }
    }

    /// 2 listeners, 2 pools, members in every status, one with a weird name.
    fn fixture() -> Stats {
        let checked = |mut m: MemberStats, passed: bool| {
            m.last_check = Some(CheckStats {
                passed,
                result: if passed {
                    "HTTP 200"
                } else {
                    "connect refused"
                }
                .to_owned(),
                duration_seconds: 0.004,
            });
            m
        };
        let mut up = checked(member("app-1", "up", "ready"), true);
        up.id = Some("5a1e6c1d-uuid".to_owned());
        let mut down = checked(member("app-2", "down", "ready"), false);
        down.check_failures_total = 9;
        down.down_transitions_total = 2;
        let drain = checked(member("app-3", "drain", "drain"), true);
        let maint = member("app-4", "maint", "maint");
        let mut backup = checked(member("app-5", "up", "ready"), true);
        backup.backup = true;
        let web = PoolStats {
            name: "web_pool".to_owned(),
            algorithm: "round_robin",
            check_type: Some("http"),
            active_members: 1,
            backup_members: 1,
            current_sessions: 10,
            sessions_total: 500,
            bytes_in_total: 1500,
            bytes_out_total: 4500,
            connect_errors_total: 25,
            retries_total: 20,
            members: vec![up, down, drain, maint, backup],
        };
        let mut weird = member(WEIRD, "no_check", "ready");
        weird.address = "[2001:db8::1]:443".to_owned();
        let api = PoolStats {
            name: "api".to_owned(),
            algorithm: "least_connections",
            check_type: None,
            active_members: 2,
            backup_members: 0,
            current_sessions: 4,
            sessions_total: 200,
            bytes_in_total: 600,
            bytes_out_total: 1800,
            connect_errors_total: 10,
            retries_total: 8,
            members: vec![member("10.0.0.9:6443", "no_check", "ready"), weird],
        };
        let dead = PoolStats {
            name: "dead".to_owned(),
            algorithm: "source_ip",
            check_type: Some("tcp"),
            active_members: 0,
            backup_members: 0,
            current_sessions: 0,
            sessions_total: 0,
            bytes_in_total: 0,
            bytes_out_total: 0,
            connect_errors_total: 0,
            retries_total: 0,
            members: vec![checked(member("gone", "down", "ready"), false)],
        };
        let mut closed = listener("api", "api", "closed");
        closed.connections_total = 77;
        closed.sessions_total = 70;
        closed.session_rate = 0.0;
        Stats {
            version: "0.1.0",
            pid: 4242,
            uptime_seconds: 3600.25,
            runtime: "io_uring",
            workers: 2,
            generation: 3,
            reloads_total: 2,
            reload_failures_total: 1,
            current_connections: 11,
            xdp: Some(super::super::stats::XdpStats {
                listeners: vec!["web".into()],
                interfaces: vec![super::super::stats::XdpInterface {
                    interface: "eth0".into(),
                    mode: "native",
                }],
                error: None,
                packets_total: 10,
                bytes_total: 1000,
                new_flows_total: 2,
                flows: 1,
                drops_total: vec![super::super::stats::XdpDrop {
                    reason: "no_member",
                    packets: 3,
                }],
            }),
            listeners: vec![listener("web", "web_pool", "open"), closed],
            pools: vec![web, api, dead],
        }
    }

    fn empty() -> Stats {
        Stats {
            listeners: Vec::new(),
            pools: Vec::new(),
            ..fixture()
        }
    }

    fn lines(text: &str) -> Vec<&str> {
        text.lines().collect()
    }

    #[track_caller]
    fn assert_line(text: &str, line: &str) {
        assert!(
            lines(text).contains(&line),
            "missing line {line:?} in:\n{text}"
        );
    }

    #[track_caller]
    fn assert_no_line_starting(text: &str, prefix: &str) {
        assert!(
            !text.lines().any(|l| l.starts_with(prefix)),
            "unexpected {prefix:?} in:\n{text}"
        );
    }

    #[test]
    fn exact_series() {
        let text = render(&fixture());
        for line in [
            r#"lbd_info{version="0.1.0",runtime="io_uring"} 1"#,
            "lbd_uptime_seconds 3600.25",
            "lbd_workers 2",
            "lbd_config_generation 3",
            "lbd_reloads_total 2",
            "lbd_reload_failures_total 1",
            "lbd_current_connections 11",
            r#"haproxy_frontend_bytes_in_total{proxy="web"} 1234"#,
            r#"haproxy_frontend_bytes_out_total{proxy="web"} 5678"#,
            r#"haproxy_frontend_current_sessions{proxy="web"} 7"#,
            r#"haproxy_frontend_max_sessions{proxy="web"} 42"#,
            r#"haproxy_frontend_limit_sessions{proxy="web"} 50000"#,
            r#"haproxy_frontend_sessions_total{proxy="web"} 990"#,
            r#"haproxy_frontend_connections_total{proxy="web"} 1000"#,
            r#"haproxy_frontend_sessions_total{proxy="api"} 70"#,
            r#"haproxy_frontend_connections_total{proxy="api"} 77"#,
            r#"haproxy_frontend_current_session_rate{proxy="api"} 0"#,
            r#"haproxy_frontend_current_session_rate{proxy="web"} 12.5"#,
            r#"haproxy_frontend_denied_connections_total{proxy="web"} 4"#,
            r#"lbd_frontend_limit_hits_total{proxy="web"} 6"#,
            r#"lbd_frontend_no_member_total{proxy="web"} 3"#,
            r#"lbd_frontend_info{proxy="web",bind="0.0.0.0:80",pool="web_pool"} 1"#,
            r#"haproxy_frontend_status{proxy="web",state="DOWN"} 0"#,
            r#"haproxy_frontend_status{proxy="web",state="UP"} 1"#,
            r#"haproxy_frontend_status{proxy="api",state="DOWN"} 1"#,
            r#"haproxy_frontend_status{proxy="api",state="UP"} 0"#,
            r#"haproxy_backend_status{proxy="web_pool",state="UP"} 1"#,
            r#"haproxy_backend_status{proxy="dead",state="DOWN"} 1"#,
            r#"haproxy_backend_status{proxy="dead",state="UP"} 0"#,
            r#"haproxy_backend_active_servers{proxy="web_pool"} 1"#,
            r#"haproxy_backend_backup_servers{proxy="web_pool"} 1"#,
            r#"haproxy_backend_agg_server_status{proxy="web_pool",state="UP"} 2"#,
            r#"haproxy_backend_agg_server_status{proxy="web_pool",state="DOWN"} 1"#,
            r#"haproxy_backend_agg_server_status{proxy="web_pool",state="NOLB"} 0"#,
            r#"haproxy_backend_agg_server_status{proxy="api",state="UP"} 2"#,
            r#"haproxy_backend_current_sessions{proxy="web_pool"} 10"#,
            r#"haproxy_backend_sessions_total{proxy="web_pool"} 500"#,
            r#"haproxy_backend_bytes_in_total{proxy="web_pool"} 1500"#,
            r#"haproxy_backend_bytes_out_total{proxy="web_pool"} 4500"#,
            r#"haproxy_backend_connection_errors_total{proxy="web_pool"} 25"#,
            r#"haproxy_backend_retry_warnings_total{proxy="web_pool"} 20"#,
            r#"haproxy_backend_redispatch_warnings_total{proxy="web_pool"} 20"#,
            r#"lbd_backend_info{proxy="web_pool",algorithm="round_robin",check="http"} 1"#,
            r#"lbd_backend_info{proxy="api",algorithm="least_connections",check="none"} 1"#,
            r#"haproxy_server_current_sessions{proxy="web_pool",server="app-1"} 2"#,
            r#"haproxy_server_sessions_total{proxy="web_pool",server="app-1"} 100"#,
            r#"haproxy_server_bytes_in_total{proxy="web_pool",server="app-1"} 300"#,
            r#"haproxy_server_bytes_out_total{proxy="web_pool",server="app-1"} 900"#,
            r#"haproxy_server_connection_errors_total{proxy="web_pool",server="app-1"} 5"#,
            r#"haproxy_server_retry_warnings_total{proxy="web_pool",server="app-1"} 4"#,
            r#"haproxy_server_check_failures_total{proxy="web_pool",server="app-2"} 9"#,
            r#"haproxy_server_check_up_down_total{proxy="web_pool",server="app-2"} 2"#,
            r#"haproxy_server_check_last_change_seconds{proxy="web_pool",server="app-2"} 61.5"#,
            r#"haproxy_server_check_duration_seconds{proxy="web_pool",server="app-1"} 0.004"#,
            r#"haproxy_server_weight{proxy="web_pool",server="app-1"} 10"#,
            r#"haproxy_server_weight{proxy="web_pool",server="app-3"} 0"#,
            r#"haproxy_server_weight{proxy="web_pool",server="app-4"} 0"#,
            r#"haproxy_server_uweight{proxy="web_pool",server="app-3"} 10"#,
            r#"haproxy_server_active{proxy="web_pool",server="app-1"} 1"#,
            r#"haproxy_server_active{proxy="web_pool",server="app-5"} 0"#,
            r#"haproxy_server_backup{proxy="web_pool",server="app-5"} 1"#,
            r#"lbd_server_check_passed{proxy="web_pool",server="app-1"} 1"#,
            r#"lbd_server_check_passed{proxy="web_pool",server="app-2"} 0"#,
            r#"lbd_server_info{proxy="web_pool",server="app-1",address="10.0.0.5:8080",id="5a1e6c1d-uuid"} 1"#,
            r#"lbd_server_info{proxy="web_pool",server="app-2",address="10.0.0.5:8080",id=""} 1"#,
        ] {
            assert_line(&text, line);
        }
        // Only members checked at least once have check results.
        assert_no_line_starting(
            &text,
            r#"haproxy_server_check_duration_seconds{proxy="web_pool",server="app-4"}"#,
        );
        assert_no_line_starting(&text, r#"lbd_server_check_passed{proxy="api""#);
    }

    #[test]
    fn server_status_is_one_hot_like_haproxy() {
        let text = render(&fixture());
        let expect = [
            ("web_pool", "app-1", "UP"),
            ("web_pool", "app-2", "DOWN"),
            ("web_pool", "app-3", "DRAIN"),
            ("web_pool", "app-4", "MAINT"),
            ("web_pool", "app-5", "UP"),
            ("api", "10.0.0.9:6443", "UP"),
            ("dead", "gone", "DOWN"),
        ];
        for (pool, server, current) in expect {
            for state in SERVER_STATES {
                let value = u8::from(state == current);
                assert_line(
                    &text,
                    &format!(
                        r#"haproxy_server_status{{proxy="{pool}",server="{server}",state="{state}"}} {value}"#
                    ),
                );
            }
        }
        for (server, current) in [("app-1", "ready"), ("app-3", "drain"), ("app-4", "maint")] {
            for state in ADMIN_STATES {
                let value = u8::from(state == current);
                assert_line(
                    &text,
                    &format!(
                        r#"lbd_server_admin_state{{proxy="web_pool",server="{server}",state="{state}"}} {value}"#
                    ),
                );
            }
        }
    }

    #[test]
    fn types_help_and_order_follow_the_table() {
        let text = render(&fixture());
        let types: Vec<(&str, &str)> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_once(' '))
            .collect();
        let expected: Vec<(&str, &str)> = METRICS.iter().map(|m| (m.name, m.kind.name())).collect();
        assert_eq!(types, expected, "every family, in METRICS order");
        for info in METRICS {
            assert!(!info.help.is_empty(), "{}", info.name);
            assert_line(&text, &format!("# HELP {} {}", info.name, info.help));
            assert_eq!(
                info.kind == Kind::Counter,
                info.name.ends_with("_total"),
                "{}: counters and only counters end in _total",
                info.name
            );
            assert_eq!(
                info.haproxy,
                info.name.starts_with("haproxy_"),
                "{}",
                info.name
            );
            assert!(
                info.haproxy || info.name.starts_with("lbd_"),
                "{}",
                info.name
            );
            // Every series carries exactly the documented labels, in order.
            for line in text.lines().filter(|l| !l.starts_with('#')) {
                let Some(rest) = line.strip_prefix(info.name) else {
                    continue;
                };
                if !(rest.starts_with('{') || rest.starts_with(' ')) {
                    continue; // a longer name sharing the prefix
                }
                let names: Vec<&str> = info
                    .labels
                    .iter()
                    .copied()
                    .filter(|label| rest.contains(&format!("{label}=\"")))
                    .collect();
                assert_eq!(names, info.labels, "{line}");
            }
        }
        assert_line(&text, "# TYPE haproxy_frontend_bytes_in_total counter");
        assert_line(&text, "# TYPE haproxy_server_status gauge");
        assert_line(&text, "# TYPE haproxy_backend_sessions_total counter");
        assert_line(&text, "# TYPE haproxy_frontend_current_sessions gauge");
    }

    #[test]
    fn odd_member_names_are_escaped() {
        let text = render(&fixture());
        let escaped = r#"we\"ird\\name\nline"#;
        assert_line(
            &text,
            &format!(
                "haproxy_server_status{{proxy=\"api\",server=\"{escaped}\r\t é\",state=\"UP\"}} 1"
            ),
        );
        assert_line(
            &text,
            &format!(
                "lbd_server_info{{proxy=\"api\",server=\"{escaped}\r\t é\",address=\"[2001:db8::1]:443\",id=\"\"}} 1"
            ),
        );
        // Every physical line is a comment or a sample: no raw newline leaked.
        for line in text.lines() {
            assert!(
                line.starts_with("# HELP ")
                    || line.starts_with("# TYPE ")
                    || line.starts_with("haproxy_")
                    || line.starts_with("lbd_"),
                "{line:?}"
            );
        }
    }

    #[test]
    fn repeated_labels_keep_the_first_series() {
        let mut stats = fixture();
        let twin = stats.pools[0].members[0].clone();
        stats.pools[0].members.push(MemberStats {
            sessions_total: 999_999,
            ..twin
        });
        let text = render(&stats);
        let prefix = r#"haproxy_server_sessions_total{proxy="web_pool",server="app-1"}"#;
        let found: Vec<&str> = text.lines().filter(|l| l.starts_with(prefix)).collect();
        assert_eq!(found, [format!("{prefix} 100")]);
    }

    #[test]
    fn nothing_configured_still_renders_the_process() {
        let text = render(&empty());
        assert_line(&text, "lbd_workers 2");
        assert_no_line_starting(&text, "haproxy_");
        assert_no_line_starting(&text, "# TYPE haproxy_");
    }

    #[test]
    fn non_finite_values_become_nan() {
        let mut stats = fixture();
        stats.uptime_seconds = f64::INFINITY;
        stats.listeners[0].session_rate = f64::NAN;
        let text = render(&stats);
        assert_line(&text, "lbd_uptime_seconds NaN");
        assert_line(
            &text,
            r#"haproxy_frontend_current_session_rate{proxy="web"} NaN"#,
        );
    }

    /// `render`'s whole output for `stats` must equal the file `name` under
    /// `metrics/` byte for byte: names, help, types, labels, values and
    /// order. After a deliberate change, rewrite the files with
    /// `LBD_BLESS_METRICS=1 cargo test -p lbd --lib metrics` and review the diff.
    #[track_caller]
    fn assert_pinned(name: &str, stats: &Stats, pinned: &str) {
        let text = render(stats);
        if std::env::var_os("LBD_BLESS_METRICS").is_some() {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("src/admin/metrics")
                .join(name);
            std::fs::write(&path, &text).expect("write the pinned output");
            return;
        }
        if text != pinned {
            let first = text
                .lines()
                .zip(pinned.lines())
                .position(|(a, b)| a != b)
                .unwrap_or(text.lines().count().min(pinned.lines().count()));
            panic!(
                "/metrics output differs from metrics/{name} from line {}:\n got: {:?}\nwant: {:?}\n--- whole output ---\n{text}",
                first + 1,
                text.lines().nth(first),
                pinned.lines().nth(first),
            );
        }
    }

    #[test]
    fn output_is_pinned() {
        assert_pinned("fixture.prom", &fixture(), include_str!("metrics/fixture.prom"));
        assert_pinned("empty.prom", &empty(), include_str!("metrics/empty.prom"));
    }

    #[test]
    fn builds_nothing_global() {
        let a = render(&fixture());
        let b = render(&empty());
        assert_eq!(render(&fixture()), a);
        assert_ne!(a, b);
    }

    /// `promtool check metrics` on `text`: Ok, or what it said.
    fn promtool(text: &str) -> Option<Result<(), String>> {
        const PROMTOOL: &str = "/usr/bin/promtool";
        if !std::path::Path::new(PROMTOOL).exists() {
            if std::env::var_os("LBD_TEST_REQUIRE_TOOLS").is_some() {
                panic!("promtool missing: install Debian package prometheus (scripts/test does)");
            }
            eprintln!(
                "SKIPPED: {PROMTOOL} not found; install Debian package prometheus to lint /metrics"
            );
            return None;
        }
        let mut child = Command::new(PROMTOOL)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run promtool");
        child
            .stdin
            .take()
            .expect("promtool stdin")
            .write_all(text.as_bytes())
            .expect("write to promtool");
        let out = child.wait_with_output().expect("wait for promtool");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Some(if out.status.success() && said.trim().is_empty() {
            Ok(())
        } else {
            Err(format!("promtool {}: {said}", out.status))
        })
    }

    #[test]
    fn promtool_accepts_the_output() {
        for stats in [fixture(), empty()] {
            let text = render(&stats);
            if let Some(Err(e)) = promtool(&text) {
                panic!("{e}\n--- output ---\n{text}");
            }
        }
    }

    #[test]
    fn promtool_check_is_real() {
        // The same check rejects a badly named counter, so a pass means
        // something.
        let bad = "# HELP foo_count x\n# TYPE foo_count counter\nfoo_count 1\n";
        if let Some(result) = promtool(bad) {
            assert!(result.is_err());
        }
    }

    #[test]
    fn readme_lists_every_metric() {
        let readme = include_str!("../../../README.md");
        for metric in METRICS {
            let row = format!("| `{}` | {} |", metric.name, metric.kind.name());
            assert!(readme.contains(&row), "README.md has no row {row}");
        }
    }

    #[test]
    fn xdp_families_only_with_the_fast_path() {
        let mut stats = fixture();
        let text = render(&stats);
        for line in [
            "lbd_xdp_attached{interface=\"eth0\",mode=\"native\"} 1",
            "lbd_xdp_packets_total 10",
            "lbd_xdp_bytes_total 1000",
            "lbd_xdp_new_flows_total 2",
            "lbd_xdp_flows 1",
            "lbd_xdp_drops_total{reason=\"no_member\"} 3",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        stats.xdp = None;
        assert!(!render(&stats).contains("lbd_xdp"));
    }
}
