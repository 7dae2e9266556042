//! The validated, typed configuration the data plane runs on.
//!
//! Every value here has been checked by [`crate::validate`]: addresses parse,
//! ports and weights are in range, listener pools exist, binds are unique.

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

pub use crate::check_program::{
    Expectation, ExternalCheck, Payload, ScriptRegex, ScriptStep, SCRIPT_BUFFER,
};

pub const DEFAULT_CONNECTION_LIMIT: u32 = 50_000;
pub const DEFAULT_CLIENT_IDLE: Duration = Duration::from_secs(50);
pub const DEFAULT_MEMBER_CONNECT: Duration = Duration::from_secs(5);
pub const DEFAULT_MEMBER_IDLE: Duration = Duration::from_secs(50);
/// A UDP flow ends after this long without a datagram either way (Octavia's
/// UDP timeout).
pub const DEFAULT_SESSION_IDLE: Duration = Duration::from_secs(60);
pub const DEFAULT_RETRIES: u32 = 3;
pub const DEFAULT_WEIGHT: u32 = 1;
pub const MAX_WEIGHT: u32 = 256;
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Health-check defaults: HAProxy's `inter 2s rise 2 fall 3`, and a timeout
/// of 1 s (it must not exceed the interval, as in Octavia).
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(2);
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(1);
pub const DEFAULT_RISE: u32 = 2;
pub const DEFAULT_FALL: u32 = 3;
/// Octavia's range for `max_retries` and `max_retries_down`.
pub const MAX_RISE_FALL: u32 = 10;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub global: Global,
    /// The admin server; `None`: not started (no `[admin]` section).
    pub admin: Option<Admin>,
    /// HAProxy's CLI sockets (`[[stats_socket]]`, `stats socket`).
    pub stats_sockets: Vec<StatsSocket>,
    /// The XDP fast path's settings; `None`: no `[xdp]` section.
    pub xdp: Option<Xdp>,
    pub listeners: Vec<Listener>,
    pub pools: Vec<Pool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Global {
    pub drain_timeout: Duration,
}

impl Default for Global {
    fn default() -> Self {
        Global {
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
        }
    }
}

/// Where the admin server listens when `[admin]` has no `bind`.
pub const DEFAULT_ADMIN_BIND: SocketAddr =
    SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8404);

/// `[admin]`: stats page, `/metrics` and the runtime API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    pub bind: AdminBind,
    /// A second, read-only listener for the stats page, JSON, CSV and
    /// metrics (HAProxy `listen stats`).
    pub stats_bind: Option<SocketAddr>,
    /// A file holding the bearer token that write requests must present.
    pub token_file: Option<PathBuf>,
    /// HTTPS for both admin listeners: PEM certificate chain and key.
    pub tls: Option<AdminTls>,
    /// HTTP basic auth for the read-only pages on both listeners (HAProxy
    /// `stats auth`/`stats realm`); `None`: open.
    pub stats_auth: Option<StatsAuth>,
    /// HAProxy's `stats uri`: the stats page answers there too, and
    /// `<stats_uri>;csv` / `;json` are HAProxy's `show stat` exports.
    /// Starts with `/`.
    pub stats_uri: String,
}

/// HAProxy's `stats uri` default is `/haproxy?stats`; lbd's page is at `/`.
pub const DEFAULT_STATS_URI: &str = "/";

/// The realm of the `WWW-Authenticate` challenge when `stats_realm` is
/// not set.
pub const DEFAULT_STATS_REALM: &str = "lbd statistics";

/// Who may read the stats page, CSV, JSON, `/metrics` and the API's reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsAuth {
    /// At least one; user names are distinct.
    pub users: Vec<StatsUser>,
    /// Printable ASCII without `"` or a backslash.
    pub realm: String,
}

/// One `user:password` of `stats_users`.
#[derive(Clone, PartialEq, Eq)]
pub struct StatsUser {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for StatsUser {
    /// Never prints the password (configs end up in logs).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsUser")
            .field("user", &self.user)
            .field("password", &"<hidden>")
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminBind {
    Tcp(SocketAddr),
    /// A unix socket path (`bind = "unix:/run/lbd/admin.sock"`).
    Unix(PathBuf),
}

impl AdminBind {
    /// Whether only this host can reach it: a loopback address or a unix
    /// socket. Write requests need no token then.
    pub fn is_local(&self) -> bool {
        match self {
            AdminBind::Tcp(addr) => addr.ip().is_loopback(),
            AdminBind::Unix(_) => true,
        }
    }
}

impl std::fmt::Display for AdminBind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminBind::Tcp(addr) => write!(f, "{addr}"),
            AdminBind::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// A socket speaking HAProxy's CLI (`stats socket`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsSocket {
    pub address: StatsAddress,
    /// Permissions of the socket file; `None`: as the umask leaves them
    /// (always `None` on TCP).
    pub mode: Option<u32>,
    pub level: CliLevel,
    /// `expose-fd listeners`: `_getsocks` hands the listening sockets to
    /// the process that asks (`haproxy -x`); unix sockets only.
    pub expose_fd_listeners: bool,
    /// How long a connection may wait for its next command, or leave an
    /// answer unread, before it is closed (HAProxy `stats timeout`).
    pub timeout: Duration,
}

/// Where a CLI socket listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StatsAddress {
    /// A unix socket's path (`path`; haproxy.cfg `/path`, `unix@/path`).
    Unix(PathBuf),
    /// A TCP address (`bind`; haproxy.cfg `ipv4@A:P`, `ipv6@[A]:P`, `A:P`).
    Tcp(SocketAddr),
}

impl std::fmt::Display for StatsAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StatsAddress::Unix(path) => write!(f, "{}", path.display()),
            StatsAddress::Tcp(addr) => write!(f, "{addr}"),
        }
    }
}

/// HAProxy's default `stats timeout`.
pub const DEFAULT_CLI_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest unix socket path (`sun_path` holds 108 bytes with the NUL).
pub const MAX_UNIX_PATH: usize = 107;

/// What a CLI socket may do (HAProxy's `level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CliLevel {
    /// Read only.
    User,
    /// Also `clear counters` (HAProxy's default level).
    Operator,
    /// Everything.
    Admin,
}

impl CliLevel {
    pub const ALL: [CliLevel; 3] = [CliLevel::User, CliLevel::Operator, CliLevel::Admin];

    pub fn name(self) -> &'static str {
        match self {
            CliLevel::User => "user",
            CliLevel::Operator => "operator",
            CliLevel::Admin => "admin",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    pub bind: SocketAddr,
    /// Name of a pool that exists in [`Config::pools`].
    pub pool: String,
    /// At least 1.
    pub connection_limit: u32,
    /// Empty: every client is allowed.
    pub allowed_cidrs: Vec<IpNet>,
    pub client_idle: Duration,
    pub member_connect: Duration,
    pub member_idle: Duration,
    /// Once the member is connected, the idle timeout of both sides instead
    /// of `client_idle` and `member_idle` (HAProxy `timeout tunnel`).
    pub tunnel_idle: Option<Duration>,
    /// The client side's idle timeout once lbd has sent FIN to the client
    /// (the member -> client direction is finished), instead of
    /// `client_idle`/`tunnel_idle` (HAProxy `timeout client-fin`).
    pub client_fin: Option<Duration>,
    /// The member side's idle timeout once lbd has sent FIN to the member
    /// (the client -> member direction is finished), instead of
    /// `member_idle`/`tunnel_idle` (HAProxy `timeout server-fin`).
    pub member_fin: Option<Duration>,
    pub proxy_protocol: Option<ProxyProtocol>,
    /// Bind to addresses not (yet) configured on this host (IP_FREEBIND).
    pub freebind: bool,
    pub fast_path: FastPath,
    /// Relay established connections in the kernel (a sockmap and a
    /// stream verdict program) instead of lbd's copy loop; the copy loop
    /// where the program cannot be loaded.
    pub kernel_relay: bool,
    /// A direction that moves bulk is spliced (socket -> pipe -> socket)
    /// instead of copied through lbd's buffers.
    pub splice: bool,
    /// Hedged connects: after this long without a completed connect, a
    /// connect to another member starts too; the first to complete wins.
    /// `None`: off. Less than `member_connect`; the pool's own value
    /// overrides it ([`Listener::hedge_for`]).
    pub connect_hedge: Option<Duration>,
    /// TCP (connections) or UDP (datagrams, in flows).
    pub protocol: Protocol,
    /// UDP: a flow (a client address and port) ends after this long
    /// without a datagram either way.
    pub session_idle: Duration,
}

impl Listener {
    /// The `connect_hedge` in force for this listener's connections to
    /// `pool` (its pool): the pool's, else the listener's.
    pub fn hedge_for(&self, pool: &Pool) -> Option<Duration> {
        pool.connect_hedge.or(self.connect_hedge)
    }
}

/// Where a listener's connections are balanced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FastPath {
    /// lbd's userspace proxy only.
    #[default]
    None,
    /// The XDP program, with the userspace proxy as the fallback.
    Xdp,
}

impl FastPath {
    /// Every fast path, in the order error messages list them.
    pub const ALL: [FastPath; 2] = [FastPath::None, FastPath::Xdp];

    /// The file spelling (`"xdp"`).
    pub const fn name(self) -> &'static str {
        match self {
            FastPath::None => "none",
            FastPath::Xdp => "xdp",
        }
    }
}

/// `[xdp]`: the optional XDP fast path (IPv4 listeners).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Xdp {
    /// Interfaces the program is attached to.
    pub interfaces: Vec<String>,
    /// Source address toward members; `None`: the route's own address.
    pub snat_address: Option<std::net::Ipv4Addr>,
    /// Source ports toward members (unique per member).
    pub snat_ports: std::ops::RangeInclusive<u16>,
}

/// `[xdp] snat_ports` by default: below Linux's default ephemeral range
/// (32768-60999), which lbd's own proxy and check connections use.
pub const DEFAULT_SNAT_PORTS: std::ops::RangeInclusive<u16> = 20_000..=32_767;

/// What a listener carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl Protocol {
    /// Every protocol, in the order error messages list them.
    pub const ALL: [Protocol; 2] = [Protocol::Tcp, Protocol::Udp];

    /// The file spelling (`"udp"`).
    pub const fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyProtocol {
    V1,
    V2,
}

impl ProxyProtocol {
    /// Every version, in the order error messages list them.
    pub const ALL: [ProxyProtocol; 2] = [ProxyProtocol::V1, ProxyProtocol::V2];

    /// The file spelling (`"v2"`).
    pub const fn name(self) -> &'static str {
        match self {
            ProxyProtocol::V1 => "v1",
            ProxyProtocol::V2 => "v2",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub name: String,
    pub algorithm: Algorithm,
    /// Extra connect attempts on other members after a failed connect.
    pub retries: u32,
    /// Active health checks; `None`: members are not checked (`no_check`).
    pub health: Option<HealthCheck>,
    /// Clients that may wait for a member with a free slot (members'
    /// `max_connections`); `None`: no limit (HAProxy `maxqueue 0`), the
    /// listeners' `connection_limit` bounds it.
    pub max_queue: Option<u32>,
    /// How long a client may wait in the queue; `None`: the listener's
    /// `member_connect` (HAProxy: `timeout queue` defaults to `timeout connect`).
    pub queue_timeout: Option<Duration>,
    /// After a member comes back up, its weight (and `max_connections`)
    /// ramp up over this long (HAProxy `slowstart`); `None`: at once.
    pub slow_start: Option<Duration>,
    /// What happens to a member's established connections when it goes
    /// down (HAProxy `on-marked-down shutdown-sessions`).
    pub on_down: SessionPolicy,
    /// What happens to a member's established connections when it is put
    /// into maint (HAProxy has no keyword; its CLI `shutdown sessions
    /// server` is the manual form).
    pub on_maint: SessionPolicy,
    /// Hedged connects for this pool's clients, overriding the listener's
    /// `connect_hedge`; `None`: the listener's. Never with members that
    /// have `max_connections`.
    pub connect_hedge: Option<Duration>,
    pub members: Vec<Member>,
}

/// A pool's `on_down` / `on_maint`: what a member's established
/// connections do when it goes down or into maint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SessionPolicy {
    /// They live on until they end by themselves (or by their timeouts).
    #[default]
    None,
    /// They are closed at once, both peers getting a reset.
    ShutdownSessions,
}

impl SessionPolicy {
    /// Every policy, in the order error messages list them.
    pub const ALL: [SessionPolicy; 2] = [SessionPolicy::None, SessionPolicy::ShutdownSessions];

    /// The file spelling (`"shutdown_sessions"`).
    pub const fn name(self) -> &'static str {
        match self {
            SessionPolicy::None => "none",
            SessionPolicy::ShutdownSessions => "shutdown_sessions",
        }
    }

    pub const fn shuts_down(self) -> bool {
        matches!(self, SessionPolicy::ShutdownSessions)
    }
}

impl Pool {
    /// Whether any member has a `max_connections` limit: only then can
    /// clients queue, and only then does the data path look at limits.
    pub fn has_limits(&self) -> bool {
        self.members.iter().any(|m| m.max_connections.is_some())
    }
}

/// `[pool.health]`: how and how often every member of a pool is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub kind: CheckKind,
    /// Time between the starts of two checks of one member (Octavia `delay`).
    pub interval: Duration,
    /// Limit for one whole check: connect, TLS handshake and HTTP answer.
    /// Never more than `interval`.
    pub timeout: Duration,
    /// Consecutive successes that bring a down member up (Octavia
    /// `max_retries`), 1..=10.
    pub rise: u32,
    /// Consecutive failures that take an up member down (Octavia
    /// `max_retries_down`), 1..=10. Failed connects of real traffic count.
    pub fall: u32,
    /// Request and expected answer; used by `http` and `https` only.
    pub http: HttpCheck,
    /// TLS settings; used by `https` and `tls_hello` only.
    pub tls: TlsCheck,
    /// The program to run; used by `external` only.
    pub external: ExternalCheck,
    /// The steps; used by `tcp_script` only (never empty there).
    pub script: Vec<ScriptStep>,
    /// What to send and expect; used by `udp_connect` only.
    pub udp: UdpCheck,
}

/// A `udp_connect` check (Octavia's UDP-CONNECT): a datagram is sent to
/// the member from a connected socket. An ICMP port unreachable (seen as
/// ECONNREFUSED) fails it. Without `expect`, no error within the timeout
/// passes it (UDP cannot tell more); with `expect`, a reply containing it
/// must arrive within the timeout.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UdpCheck {
    /// The datagram's payload (may be empty).
    pub send: String,
    /// Text the reply must contain.
    pub expect: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckKind {
    /// The check passes when a TCP connection is established.
    Tcp,
    /// An HTTP/1.1 request; passes on an expected status code.
    Http,
    /// Like `Http`, over TLS.
    Https,
    /// Passes when a TLS handshake completes; nothing is sent after it.
    TlsHello,
    /// Runs a program (HAProxy `external-check`); passes when it exits 0.
    External,
    /// Connect, send and expect steps (HAProxy `tcp-check`).
    TcpScript,
    /// A datagram; fails on an ICMP port unreachable (Octavia UDP-CONNECT).
    UdpConnect,
}

impl CheckKind {
    /// Every check type, in the order error messages list them.
    pub const ALL: [CheckKind; 7] = [
        CheckKind::Tcp,
        CheckKind::Http,
        CheckKind::Https,
        CheckKind::TlsHello,
        CheckKind::External,
        CheckKind::TcpScript,
        CheckKind::UdpConnect,
    ];

    /// The file spelling (`"tls_hello"`).
    pub const fn name(self) -> &'static str {
        match self {
            CheckKind::Tcp => "tcp",
            CheckKind::Http => "http",
            CheckKind::Https => "https",
            CheckKind::TlsHello => "tls_hello",
            CheckKind::External => "external",
            CheckKind::TcpScript => "tcp_script",
            CheckKind::UdpConnect => "udp_connect",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCheck {
    /// An HTTP method token, e.g. `GET`, `HEAD`, `OPTIONS`.
    pub method: String,
    /// Starts with `/`; no spaces or control characters.
    pub path: String,
    /// The `Host` header; `None`: the checked address (`10.0.0.1:6443`).
    pub host: Option<String>,
    pub expected_codes: ExpectedCodes,
}

impl Default for HttpCheck {
    fn default() -> Self {
        HttpCheck {
            method: "GET".to_owned(),
            path: "/".to_owned(),
            host: None,
            expected_codes: ExpectedCodes::default(),
        }
    }
}

/// Status codes that pass an HTTP check: `"200"`, `"200,202"`, `"200-204"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedCodes(pub Vec<RangeInclusive<u16>>);

impl ExpectedCodes {
    pub fn contains(&self, code: u16) -> bool {
        self.0.iter().any(|r| r.contains(&code))
    }
}

impl Default for ExpectedCodes {
    /// Octavia's default: `200`.
    fn default() -> Self {
        ExpectedCodes(vec![200..=200])
    }
}

impl std::fmt::Display for ExpectedCodes {
    /// The config spelling, e.g. `200,202-204`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if r.start() == r.end() {
                write!(f, "{}", r.start())?;
            } else {
                write!(f, "{}-{}", r.start(), r.end())?;
            }
        }
        Ok(())
    }
}

/// TLS for `https` and `tls_hello` checks. With no `ca_file` the member's
/// certificate is not verified (HAProxy `check-ssl verify none`); the
/// handshake signatures still are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsCheck {
    /// PEM CA certificates; when set, the certificate must chain to one of
    /// them and match `sni` (or the member IP address).
    pub ca_file: Option<PathBuf>,
    /// Server name sent in the ClientHello (and verified with `ca_file`).
    pub sni: Option<String>,
    /// PEM client certificate chain and key, for servers that want one
    /// (kube-apiservers refusing anonymous requests). Both or neither.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Algorithm {
    /// Smooth weighted round robin (nginx's algorithm).
    #[default]
    RoundRobin,
    /// Fewest active connections relative to weight.
    LeastConnections,
    /// Consistent hashing (Maglev) on the client IP address.
    SourceIp,
}

impl Algorithm {
    /// Every algorithm, in the order error messages list them.
    pub const ALL: [Algorithm; 3] = [
        Algorithm::RoundRobin,
        Algorithm::LeastConnections,
        Algorithm::SourceIp,
    ];

    /// The file spelling (`"round_robin"`).
    pub const fn name(self) -> &'static str {
        match self {
            Algorithm::RoundRobin => "round_robin",
            Algorithm::LeastConnections => "least_connections",
            Algorithm::SourceIp => "source_ip",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub address: IpAddr,
    pub port: u16,
    /// 0..=256. 0: no new connections, existing ones continue.
    pub weight: u32,
    /// Used only when no non-backup member is usable.
    pub backup: bool,
    /// Concurrent connections (connects in progress included) this member
    /// takes at most; over it new clients wait in the pool's queue.
    /// `None`: no limit (HAProxy `maxconn 0`).
    pub max_connections: Option<u32>,
    pub admin_state: AdminState,
    /// Where health checks go, when not to `address`/`port` (Octavia
    /// `monitor_address`, `monitor_port`).
    pub monitor_address: Option<IpAddr>,
    pub monitor_port: Option<u16>,
    pub id: Option<String>,
    pub name: Option<String>,
}

/// What an operator (or the control plane) wants of a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum AdminState {
    /// Takes traffic when healthy.
    #[default]
    Ready = 0,
    /// No new connections; established ones continue; still health-checked.
    Drain = 1,
    /// No new connections and no health checks (HAProxy `disabled`, Octavia
    /// `admin_state_up = false`); established connections continue.
    Maint = 2,
}

impl AdminState {
    /// Every admin state, in the order error messages list them.
    pub const ALL: [AdminState; 3] = [AdminState::Ready, AdminState::Drain, AdminState::Maint];

    /// The file spelling (`"drain"`).
    pub const fn name(self) -> &'static str {
        match self {
            AdminState::Ready => "ready",
            AdminState::Drain => "drain",
            AdminState::Maint => "maint",
        }
    }
}

impl Member {
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.port)
    }

    /// Where health checks of this member connect to.
    pub fn check_addr(&self) -> SocketAddr {
        SocketAddr::new(
            self.monitor_address.unwrap_or(self.address),
            self.monitor_port.unwrap_or(self.port),
        )
    }
}

impl Config {
    pub fn pool(&self, name: &str) -> Option<&Pool> {
        self.pools.iter().find(|p| p.name == name)
    }
}
