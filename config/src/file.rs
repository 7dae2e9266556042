//! The config file as written by an operator: TOML, parsed with serde.
//!
//! Types here are deliberately loose (strings for addresses and durations,
//! `i64` for numbers, `Option` for required fields) so that parsing never
//! stops at the first mistake: [`crate::validate`] turns a [`ConfigFile`] into
//! a typed [`crate::Config`] and reports *every* problem with its field path.
//! Unknown fields are rejected at parse time (`deny_unknown_fields`).
//!
//! lb-agent builds a `ConfigFile` and serializes it (TOML for `lbd -c`, the
//! same structure as JSON for the admin API), so these types are also the wire
//! format.

use serde::{Deserialize, Serialize};

/// A whole config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// `[global]`: process-wide settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global: Option<GlobalSection>,
    /// `[admin]`: the admin server (stats, metrics, runtime API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<AdminSection>,
    /// `[[stats_socket]]`: HAProxy's CLI on unix sockets.
    #[serde(
        default,
        rename = "stats_socket",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub stats_sockets: Vec<StatsSocketSection>,
    /// `[xdp]`: the optional XDP fast path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xdp: Option<XdpSection>,
    /// `[[listener]]` tables.
    #[serde(default, rename = "listener", skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<ListenerSection>,
    /// `[[pool]]` tables.
    #[serde(default, rename = "pool", skip_serializing_if = "Vec::is_empty")]
    pub pools: Vec<PoolSection>,
}

/// `[global]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalSection {
    /// How long SIGTERM/SIGINT waits for established connections to finish
    /// before exiting anyway (HAProxy `hard-stop-after`). Default 30 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_timeout: Option<String>,
}

/// `[admin]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// `addr:port` or `unix:/path`; default `127.0.0.1:8404`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    /// `addr:port` of a read-only stats listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats_bind: Option<String>,
    /// File with the bearer token for write requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
    /// PEM files for HTTPS; both or neither.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<String>,
    /// `user:password` pairs for HTTP basic auth on the read-only pages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stats_users: Vec<String>,
    /// The realm of the basic auth challenge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats_realm: Option<String>,
    /// Where the stats page also answers, with HAProxy's `;csv` and
    /// `;json` exports after it (HAProxy `stats uri`); default `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats_uri: Option<String>,
}

/// `[[stats_socket]]` (HAProxy `stats socket <path> mode <m> level <l>
/// expose-fd listeners`, or `stats socket ipv4@<addr>:<port> level <l>`):
/// exactly one of `path` and `bind`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsSocketSection {
    /// The unix socket's path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// A TCP address instead, e.g. `"127.0.0.1:9999"` or `"[::1]:9999"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    /// Octal permissions, e.g. `"0660"`; default: as the umask leaves them
    /// (unix sockets only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// `user`, `operator` (default) or `admin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    /// Hand the listening sockets to a process that asks (`haproxy -x`);
    /// unix sockets only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expose_fd_listeners: Option<bool>,
    /// How long a connection may stay idle or leave an answer unread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// `[xdp]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XdpSection {
    /// Interfaces the XDP program is attached to: every one that packets
    /// of fast-path listeners arrive on (toward clients and toward members).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<String>,
    /// Source address of fast-path connections to members (full NAT);
    /// default: lbd's own address on the route to each member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snat_address: Option<String>,
    /// SNAT source ports, `"FIRST-LAST"` (default `"20000-32767"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snat_ports: Option<String>,
}

/// `[[listener]]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerSection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `addr:port`, IPv4 (`0.0.0.0:8080`) or IPv6 (`[::]:8080`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    /// Name of a `[[pool]]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_limit: Option<i64>,
    /// CIDRs allowed to connect; empty means everyone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_cidrs: Vec<String>,
    /// Durations such as `"50s"`, `"500ms"`, `"2m"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_idle: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_connect: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_idle: Option<String>,
    /// Replaces `client_idle` and `member_idle` once the member is connected
    /// (HAProxy `timeout tunnel`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel_idle: Option<String>,
    /// The client side's idle timeout once lbd sent FIN to the client
    /// (HAProxy `timeout client-fin`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_fin: Option<String>,
    /// The member side's idle timeout once lbd sent FIN to the member
    /// (HAProxy `timeout server-fin`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_fin: Option<String>,
    /// `"v1"` or `"v2"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<String>,
    /// Bind even if the address is not (yet) on this host, e.g. a VIP that
    /// keepalived moves here later (IP_FREEBIND).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freebind: Option<bool>,
    /// `"none"` (default) or `"xdp"`: balance this listener's packets in
    /// the kernel (see `[xdp]`), the userspace proxy as the fallback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fast_path: Option<String>,
    /// Once a connection's member is connected, relay its data in the
    /// kernel (sockmap) instead of lbd's copy loop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_relay: Option<bool>,
    /// Move bulk directions with `splice(2)` through a pipe (no copy into
    /// lbd's memory) instead of copying through buffers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub splice: Option<bool>,
    /// A duration: when a member's connect has not completed after it, a
    /// connect to another member is started too (hedged connect). Absent:
    /// off. A pool's own `connect_hedge` overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_hedge: Option<String>,
    /// `"tcp"` (default) or `"udp"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// UDP: a flow ends after this long without a datagram (default 60s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_idle: Option<String>,
}

/// `[[pool]]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `"round_robin"` (default), `"least_connections"` or `"source_ip"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<i64>,
    /// `[pool.health]`: active health checks of the members (none if absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthSection>,
    /// Clients waiting for a member slot at most; 0 (default): no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queue: Option<i64>,
    /// A duration; default: the listener's `member_connect`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_timeout: Option<String>,
    /// A duration: ramp a member's weight up after it comes back up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_start: Option<String>,
    /// `"none"` (default) or `"shutdown_sessions"`: close a member's
    /// established connections when it goes down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_down: Option<String>,
    /// `"none"` (default) or `"shutdown_sessions"`: close a member's
    /// established connections when it is put into maint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_maint: Option<String>,
    /// A duration: hedged connects for this pool's clients (overrides the
    /// listener's `connect_hedge`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_hedge: Option<String>,
    /// `[[pool.member]]` tables.
    #[serde(default, rename = "member", skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberSection>,
}

/// `[[pool.member]]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberSection {
    /// An IP address (hostnames are not resolved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    /// 0..=256, default 1. 0: no new connections, existing ones continue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<bool>,
    /// Concurrent connections at most; 0 (default): no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<i64>,
    /// `"ready"` (default), `"drain"` or `"maint"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_state: Option<String>,
    /// Health checks go here instead of `address` / `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor_port: Option<i64>,
    /// Opaque identifiers for the control plane (Octavia member id, node name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `[pool.health]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSection {
    /// `"tcp"` (default), `"http"`, `"https"` or `"tls_hello"`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Durations such as `"2s"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rise: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fall: Option<i64>,
    /// `http` and `https` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// `"200"`, `"200,202"`, `"200-204"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_codes: Option<String>,
    /// `https` and `tls_hello` only: PEM file paths and the SNI name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<String>,
    /// `external` only: the program and its arguments, run without a
    /// shell (`["/usr/local/bin/check", "-q"]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// `external` only: `PATH` for the program (default empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_path: Option<String>,
    /// `tcp_script` only: the steps, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<ScriptStepSection>,
    /// `udp_connect` only: the datagram's payload (default empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send: Option<String>,
    /// `udp_connect` only: text the reply must contain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<String>,
}

/// One step of a `tcp_script` check: exactly one of its fields, e.g.
/// `{ send = "PING\r\n" }`, `{ expect_string = "+PONG" }`,
/// `{ connect = { port = 6380 } }`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptStepSection {
    /// Opens a connection: `{}` or `{ port = N }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<ConnectSection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send: Option<String>,
    /// Hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_binary: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_string: Option<String>,
    /// A regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_rstring: Option<String>,
    /// Hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_binary: Option<String>,
}

/// The `connect` of a `tcp_script` step.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectSection {
    /// Instead of the member's check port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
}

// ------------------------------------------------- typed config → file model

use std::time::Duration;

use crate::check_program::to_hex;
use crate::model::{
    Admin, CheckKind, Config, Expectation, Global, HealthCheck, Listener, Member, Payload, Pool,
    Protocol, ScriptStep, StatsAddress, StatsSocket, Xdp,
};

/// Renders a typed config back into the file model, every setting written
/// out explicitly (defaults included), so that for any `cfg` returned by
/// [`crate::validate`], `validate(&ConfigFile::from(&cfg)) == Ok(cfg)`.
/// lb-agent uses this to write configs.
impl From<&Config> for ConfigFile {
    fn from(config: &Config) -> Self {
        ConfigFile {
            global: Some(GlobalSection::from(&config.global)),
            admin: config.admin.as_ref().map(AdminSection::from),
            stats_sockets: config
                .stats_sockets
                .iter()
                .map(StatsSocketSection::from)
                .collect(),
            xdp: config.xdp.as_ref().map(XdpSection::from),
            listeners: config.listeners.iter().map(ListenerSection::from).collect(),
            pools: config.pools.iter().map(PoolSection::from).collect(),
        }
    }
}

impl From<&StatsSocket> for StatsSocketSection {
    fn from(socket: &StatsSocket) -> Self {
        let (path, bind) = match &socket.address {
            StatsAddress::Unix(path) => (Some(path.display().to_string()), None),
            StatsAddress::Tcp(addr) => (None, Some(addr.to_string())),
        };
        StatsSocketSection {
            path,
            bind,
            mode: socket.mode.map(|m| format!("{m:04o}")),
            level: Some(socket.level.name().to_owned()),
            expose_fd_listeners: matches!(socket.address, StatsAddress::Unix(_))
                .then_some(socket.expose_fd_listeners),
            timeout: (socket.timeout != crate::model::DEFAULT_CLI_TIMEOUT)
                .then(|| humantime::format_duration(socket.timeout).to_string()),
        }
    }
}

impl From<&Admin> for AdminSection {
    fn from(admin: &Admin) -> Self {
        let text = |p: &std::path::PathBuf| p.display().to_string();
        AdminSection {
            bind: Some(admin.bind.to_string()),
            stats_bind: admin.stats_bind.map(|a| a.to_string()),
            token_file: admin.token_file.as_ref().map(text),
            tls_cert: admin.tls.as_ref().map(|t| text(&t.cert)),
            tls_key: admin.tls.as_ref().map(|t| text(&t.key)),
            stats_users: admin
                .stats_auth
                .iter()
                .flat_map(|a| &a.users)
                .map(|u| format!("{}:{}", u.user, u.password))
                .collect(),
            stats_realm: admin.stats_auth.as_ref().map(|a| a.realm.clone()),
            stats_uri: (admin.stats_uri != crate::model::DEFAULT_STATS_URI)
                .then(|| admin.stats_uri.clone()),
        }
    }
}

impl From<&Xdp> for XdpSection {
    fn from(xdp: &Xdp) -> Self {
        XdpSection {
            interfaces: xdp.interfaces.clone(),
            snat_address: xdp.snat_address.map(|a| a.to_string()),
            snat_ports: Some(format!(
                "{}-{}",
                xdp.snat_ports.start(),
                xdp.snat_ports.end()
            )),
        }
    }
}

impl From<&Global> for GlobalSection {
    fn from(global: &Global) -> Self {
        GlobalSection {
            drain_timeout: Some(duration_text(global.drain_timeout)),
        }
    }
}

impl From<&Listener> for ListenerSection {
    fn from(listener: &Listener) -> Self {
        ListenerSection {
            name: Some(listener.name.clone()),
            bind: Some(listener.bind.to_string()),
            pool: Some(listener.pool.clone()),
            connection_limit: Some(i64::from(listener.connection_limit)),
            allowed_cidrs: listener
                .allowed_cidrs
                .iter()
                .map(ToString::to_string)
                .collect(),
            client_idle: Some(duration_text(listener.client_idle)),
            member_connect: Some(duration_text(listener.member_connect)),
            member_idle: Some(duration_text(listener.member_idle)),
            tunnel_idle: listener.tunnel_idle.map(duration_text),
            client_fin: listener.client_fin.map(duration_text),
            member_fin: listener.member_fin.map(duration_text),
            proxy_protocol: listener
                .proxy_protocol
                .map(|version| version.name().to_owned()),
            freebind: Some(listener.freebind),
            fast_path: Some(listener.fast_path.name().to_owned()),
            kernel_relay: listener.kernel_relay.then_some(true),
            splice: listener.splice.then_some(true),
            connect_hedge: listener.connect_hedge.map(duration_text),
            protocol: (listener.protocol != Protocol::Tcp)
                .then(|| listener.protocol.name().to_owned()),
            session_idle: (listener.protocol == Protocol::Udp)
                .then(|| duration_text(listener.session_idle)),
        }
    }
}

impl From<&Pool> for PoolSection {
    fn from(pool: &Pool) -> Self {
        PoolSection {
            name: Some(pool.name.clone()),
            algorithm: Some(pool.algorithm.name().to_owned()),
            retries: Some(i64::from(pool.retries)),
            health: pool.health.as_ref().map(HealthSection::from),
            max_queue: Some(i64::from(pool.max_queue.unwrap_or(0))),
            queue_timeout: pool.queue_timeout.map(duration_text),
            slow_start: pool.slow_start.map(duration_text),
            on_down: Some(pool.on_down.name().to_owned()),
            on_maint: Some(pool.on_maint.name().to_owned()),
            connect_hedge: pool.connect_hedge.map(duration_text),
            members: pool.members.iter().map(MemberSection::from).collect(),
        }
    }
}

impl From<&Member> for MemberSection {
    fn from(member: &Member) -> Self {
        MemberSection {
            address: Some(member.address.to_string()),
            port: Some(i64::from(member.port)),
            weight: Some(i64::from(member.weight)),
            backup: Some(member.backup),
            max_connections: Some(i64::from(member.max_connections.unwrap_or(0))),
            admin_state: Some(member.admin_state.name().to_owned()),
            monitor_address: member.monitor_address.map(|a| a.to_string()),
            monitor_port: member.monitor_port.map(i64::from),
            id: member.id.clone(),
            name: member.name.clone(),
        }
    }
}

impl From<&HealthCheck> for HealthSection {
    fn from(check: &HealthCheck) -> Self {
        let uses_http = matches!(check.kind, CheckKind::Http | CheckKind::Https);
        let uses_tls = matches!(check.kind, CheckKind::Https | CheckKind::TlsHello);
        let http = uses_http.then_some(&check.http);
        let tls = uses_tls.then_some(&check.tls);
        let external = (check.kind == CheckKind::External).then_some(&check.external);
        let path_text =
            |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| p.display().to_string());
        HealthSection {
            kind: Some(check.kind.name().to_owned()),
            interval: Some(duration_text(check.interval)),
            timeout: Some(duration_text(check.timeout)),
            rise: Some(i64::from(check.rise)),
            fall: Some(i64::from(check.fall)),
            method: http.map(|h| h.method.clone()),
            path: http.map(|h| h.path.clone()),
            host: http.and_then(|h| h.host.clone()),
            expected_codes: http.map(|h| h.expected_codes.to_string()),
            ca_file: tls.and_then(|t| path_text(&t.ca_file)),
            sni: tls.and_then(|t| t.sni.clone()),
            client_cert: tls.and_then(|t| path_text(&t.client_cert)),
            client_key: tls.and_then(|t| path_text(&t.client_key)),
            command: external.map(|e| e.command.clone()).unwrap_or_default(),
            command_path: external.map(|e| e.path.clone()),
            steps: check.script.iter().map(ScriptStepSection::from).collect(),
            send: (check.kind == CheckKind::UdpConnect && !check.udp.send.is_empty())
                .then(|| check.udp.send.clone()),
            expect: check.udp.expect.clone(),
        }
    }
}

impl From<&ScriptStep> for ScriptStepSection {
    fn from(step: &ScriptStep) -> Self {
        let mut section = ScriptStepSection::default();
        match step {
            ScriptStep::Connect { port } => {
                section.connect = Some(ConnectSection {
                    port: port.map(i64::from),
                });
            }
            ScriptStep::Send(Payload::Text(text)) => section.send = Some(text.clone()),
            ScriptStep::Send(Payload::Binary(bytes)) => section.send_binary = Some(to_hex(bytes)),
            ScriptStep::Expect(Expectation::String(text)) => {
                section.expect_string = Some(text.clone());
            }
            ScriptStep::Expect(Expectation::Binary(bytes)) => {
                section.expect_binary = Some(to_hex(bytes));
            }
            ScriptStep::Expect(Expectation::Regex(regex)) => {
                section.expect_rstring = Some(regex.as_str().to_owned());
            }
        }
        section
    }
}

/// A duration as `humantime` writes it (`"1m 30s"`), which it parses back
/// exactly.
fn duration_text(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

#[cfg(test)]
mod tests {
    use crate::validate::tests::*;

    #[test]
    fn unknown_fields_are_rejected_at_parse_time() {
        for text in [
            "colour = \"blue\"\n",
            "[global]\ndrain = \"1s\"\n",
            "[[listener]]\nname = \"a\"\nport = 80\n",
            "[[pool]]\nname = \"a\"\nlb_algorithm = \"ROUND_ROBIN\"\n",
            "[[pool]]\nname = \"a\"\n[[pool.member]]\naddress = \"10.0.0.1\"\nprotocol_port = 80\n",
        ] {
            match from_toml_str(text, "test.toml") {
                Err(LoadError::Syntax { origin, message }) => {
                    assert_eq!(origin, "test.toml");
                    assert!(message.contains("unknown field"), "{message}");
                }
                other => panic!("{text:?}: expected a syntax error, got {other:?}"),
            }
        }
    }

    #[test]
    fn round_trip_full_config() {
        let config = valid(FULL);
        let file = ConfigFile::from(&config);
        assert_eq!(validate(&file), Ok(config.clone()));
        // Also through TOML text, as lb-agent writes it.
        let text = toml::to_string(&file).expect("serializes");
        assert_eq!(from_toml_str(&text, "rendered").ok(), Some(config));
    }

    #[test]
    fn round_trip_odd_durations_and_every_enum_value() {
        let mut config = valid(&format!(
            "{}\n[[pool]]\nname = \"q\"\n[[pool]]\nname = \"r\"\nconnect_hedge = \"1s 1ms\"\n",
            listener_with("proxy_protocol = \"v1\"\nconnect_hedge = \"150ms\"")
        ));
        let listener = config.listeners[0].clone();
        for (i, (duration, proxy)) in [
            (Duration::new(1, 1), None),
            (
                Duration::new(29 * 86_400 + 86_399, 999_999_999),
                Some(ProxyProtocol::V2),
            ),
            (Duration::from_nanos(1), Some(ProxyProtocol::V1)),
        ]
        .into_iter()
        .enumerate()
        {
            config.listeners.push(Listener {
                name: format!("extra-{i}"),
                bind: SocketAddr::from(([127, 0, 0, 1], 1000 + i as u16)),
                client_idle: duration,
                member_connect: duration,
                member_idle: duration,
                tunnel_idle: proxy.map(|_| duration),
                client_fin: Some(duration),
                member_fin: proxy.is_none().then_some(duration),
                proxy_protocol: proxy,
                connect_hedge: None,
                ..listener.clone()
            });
        }
        assert_eq!(config.pools.len(), Algorithm::ALL.len());
        for (pool, algorithm) in config.pools.iter_mut().zip(Algorithm::ALL) {
            pool.algorithm = algorithm;
        }
        config.global.drain_timeout = Duration::from_millis(1234);
        assert_eq!(validate(&ConfigFile::from(&config)), Ok(config));
    }

    #[test]
    fn round_trip_health_checks_and_member_settings() {
        for check in [
            "type = \"tcp\"\ninterval = \"1s 500ms\"\ntimeout = \"300ms\"",
            "type = \"http\"\nmethod = \"OPTIONS\"\nhost = \"h\"\nexpected_codes = \"200-299,401\"",
            "type = \"https\"\npath = \"/readyz\"\nsni = \"localhost\"",
            "type = \"tls_hello\"\nrise = 5\nfall = 1",
            "type = \"external\"\ncommand = [\"/bin/check\", \"-q\"]",
            "type = \"external\"\ncommand = [\"check\"]\ncommand_path = \"/usr/bin:/bin\"",
            "type = \"tcp_script\"\nsteps = [{ send = \"PING\\r\\n\" }, { expect_string = \"+PONG\" }]",
            "type = \"tcp_script\"\nsteps = [{ connect = {} }, { send_binary = \"00ff\" },\n\
             { expect_binary = \"0a\" }, { connect = { port = 2 } }, { expect_rstring = \"^a.*\" }]",
            "type = \"udp_connect\"",
            "type = \"udp_connect\"\nsend = \"ping\"\nexpect = \"pong\"",
        ] {
            let text = health_with(check)
                + "[[pool.member]]\naddress = \"::1\"\nport = 6443\nadmin_state = \"maint\"\n\
                   monitor_address = \"::2\"\nmonitor_port = 1\nmax_connections = 7\n";
            let config = valid(&text);
            let file = ConfigFile::from(&config);
            assert_eq!(validate(&file), Ok(config.clone()), "{check}");
            let text = toml::to_string(&file).expect("serializes");
            assert_eq!(from_toml_str(&text, "rendered").ok(), Some(config), "{text}");
        }
    }

    #[test]
    fn round_trip_queue_and_slow_start() {
        for settings in [
            "",
            "max_queue = 5",
            "queue_timeout = \"250ms\"\nslow_start = \"1m 30s\"",
            "on_down = \"shutdown_sessions\"",
            "on_maint = \"shutdown_sessions\"\non_down = \"none\"",
        ] {
            let text = pool_with(
                settings,
                &[
                    "address = \"10.0.0.1\"\nport = 80\nmax_connections = 3",
                    "address = \"10.0.0.2\"\nport = 80",
                ],
            );
            let config = valid(&text);
            assert_eq!(
                validate(&ConfigFile::from(&config)),
                Ok(config),
                "{settings}"
            );
        }
    }

    #[test]
    fn round_trip_admin() {
        for text in [
            "[admin]\n",
            "[admin]\nbind = \"unix:/run/lbd.sock\"\nstats_bind = \"[::]:32700\"\n",
            "[admin]\nstats_users = [\"a:b:c\", \"d:e\"]\nstats_realm = \"R\"\n",
            "[admin]\nstats_users = [\"a:b\"]\n",
        ] {
            let config = valid(text);
            assert_eq!(validate(&ConfigFile::from(&config)), Ok(config), "{text}");
        }
    }
}
