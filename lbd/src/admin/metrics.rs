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
mod tests;
