//! Checks a [`ConfigFile`] and builds the typed [`Config`].
//!
//! [`validate`] never stops at the first problem: it walks the whole file
//! (`[global]`, then every `[[listener]]`, then every `[[pool]]` with its
//! members) and returns every [`ConfigError`] in that order. Each error names
//! where it is (`listener "web"`, `pool "api": member 2`, `global`) and why,
//! quoting the offending field and value:
//!
//! ```text
//! pool "api": member 2: port 70000 out of range (1-65535)
//! ```
//!
//! Sections are named by their `name` when it is present, valid and unique,
//! otherwise by their 1-based position (`listener #2`). Members and list
//! entries (`allowed_cidrs[1]`) are numbered from 1 as well.

use std::collections::{HashMap, HashSet};
use std::fmt::Display;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::Duration;

use ipnet::IpNet;

use super::file::{
    AdminSection, ConfigFile, GlobalSection, HealthSection, ListenerSection, MemberSection,
    PoolSection, XdpSection,
};
use super::model::{
    Admin, AdminBind, AdminState, AdminTls, Algorithm, CheckKind, Config, ExpectedCodes, FastPath,
    Global, HealthCheck, HttpCheck, Listener, Member, Pool, ProxyProtocol, TlsCheck, Xdp,
    DEFAULT_ADMIN_BIND, DEFAULT_CHECK_INTERVAL, DEFAULT_CHECK_TIMEOUT, DEFAULT_CLIENT_IDLE,
    DEFAULT_CONNECTION_LIMIT, DEFAULT_DRAIN_TIMEOUT, DEFAULT_FALL, DEFAULT_MEMBER_CONNECT,
    DEFAULT_MEMBER_IDLE, DEFAULT_RETRIES, DEFAULT_RISE, DEFAULT_SNAT_PORTS, DEFAULT_WEIGHT,
    MAX_RISE_FALL, MAX_WEIGHT,
};

/// One problem in a config: where (`pool "api": member 2`) and why
/// (`port 70000 out of range (1-65535)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub reason: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            // About the config as a whole.
            return f.write_str(&self.reason);
        }
        write!(f, "{}: {}", self.path, self.reason)
    }
}

/// Why an empty config is refused: an empty or truncated file (read while
/// being written) or an empty pushed document would otherwise remove every
/// listener and the admin server.
pub const EMPTY_CONFIG: &str = "empty config: it sets nothing (no [global], [admin], [xdp], \
     [[listener]] or [[pool]]); an empty or truncated file is refused";

/// Largest accepted `connection_limit`.
pub const MAX_CONNECTION_LIMIT: u32 = 10_000_000;
/// Largest accepted pool `retries`.
pub const MAX_RETRIES: u32 = 100;

/// Every [`Algorithm`], in the order error messages list them.
const ALGORITHMS: [Algorithm; 3] = [
    Algorithm::RoundRobin,
    Algorithm::LeastConnections,
    Algorithm::SourceIp,
];

/// Every [`ProxyProtocol`] version.
const PROXY_PROTOCOLS: [ProxyProtocol; 2] = [ProxyProtocol::V1, ProxyProtocol::V2];

/// Every [`FastPath`].
const FAST_PATHS: [FastPath; 2] = [FastPath::None, FastPath::Xdp];

/// The file spelling of a fast path (`"xdp"`).
pub const fn fast_path_name(fast_path: FastPath) -> &'static str {
    match fast_path {
        FastPath::None => "none",
        FastPath::Xdp => "xdp",
    }
}

/// Every [`AdminState`].
const ADMIN_STATES: [AdminState; 3] = [AdminState::Ready, AdminState::Drain, AdminState::Maint];

/// Every [`CheckKind`].
const CHECK_KINDS: [CheckKind; 4] = [
    CheckKind::Tcp,
    CheckKind::Http,
    CheckKind::Https,
    CheckKind::TlsHello,
];

/// The file spelling of an admin state (`"drain"`).
pub const fn admin_state_name(state: AdminState) -> &'static str {
    match state {
        AdminState::Ready => "ready",
        AdminState::Drain => "drain",
        AdminState::Maint => "maint",
    }
}

/// The file spelling of a check type (`"tls_hello"`).
pub const fn check_kind_name(kind: CheckKind) -> &'static str {
    match kind {
        CheckKind::Tcp => "tcp",
        CheckKind::Http => "http",
        CheckKind::Https => "https",
        CheckKind::TlsHello => "tls_hello",
    }
}

/// The file spelling of an algorithm (`"round_robin"`).
pub const fn algorithm_name(algorithm: Algorithm) -> &'static str {
    match algorithm {
        Algorithm::RoundRobin => "round_robin",
        Algorithm::LeastConnections => "least_connections",
        Algorithm::SourceIp => "source_ip",
    }
}

/// The file spelling of a PROXY protocol version (`"v2"`).
pub const fn proxy_protocol_name(version: ProxyProtocol) -> &'static str {
    match version {
        ProxyProtocol::V1 => "v1",
        ProxyProtocol::V2 => "v2",
    }
}

/// Checks `file` and builds the typed [`Config`], or returns every problem
/// found, in file order.
pub fn validate(file: &ConfigFile) -> Result<Config, Vec<ConfigError>> {
    if *file == ConfigFile::default() {
        return Err(vec![ConfigError {
            path: String::new(),
            reason: EMPTY_CONFIG.to_owned(),
        }]);
    }
    let mut errors = Vec::new();

    let global = validate_global(file.global.as_ref(), &mut errors);

    // Listeners may only refer to pools that are in the file. Any spelling
    // counts here: a pool with a bad name already gets its own error.
    let pool_names: HashSet<&str> = file
        .pools
        .iter()
        .filter_map(|p| p.name.as_deref())
        .collect();
    let listeners = validate_listeners(&file.listeners, &pool_names, &mut errors);
    let pools = validate_pools(&file.pools, &mut errors);
    let admin = match &file.admin {
        Some(section) => validate_admin(section, &listeners, &mut errors),
        None => None,
    };
    let xdp = match &file.xdp {
        Some(section) => validate_xdp(section, &mut errors),
        None => None,
    };
    fast_path_rules(xdp.as_ref(), &listeners, &pools, &mut errors);

    if errors.is_empty() {
        Ok(Config {
            global,
            admin,
            xdp,
            listeners,
            pools,
        })
    } else {
        Err(errors)
    }
}

/// Collects errors for one place in the config (`listener "web"`).
struct Scope<'a> {
    path: String,
    errors: &'a mut Vec<ConfigError>,
}

impl<'a> Scope<'a> {
    fn new(path: impl Into<String>, errors: &'a mut Vec<ConfigError>) -> Self {
        Scope {
            path: path.into(),
            errors,
        }
    }

    /// Records a problem at this scope's path.
    fn error(&mut self, reason: impl Into<String>) {
        self.errors.push(ConfigError {
            path: self.path.clone(),
            reason: reason.into(),
        });
    }

    /// A nested scope: `pool "api"` → `pool "api": member 2`.
    fn child(&mut self, suffix: impl Display) -> Scope<'_> {
        Scope {
            path: format!("{}: {suffix}", self.path),
            errors: self.errors,
        }
    }

    /// Unwraps a required field, reporting `{field} is required` when absent.
    fn required<'v, T: ?Sized>(&mut self, field: &str, value: Option<&'v T>) -> Option<&'v T> {
        if value.is_none() {
            self.error(format!("{field} is required"));
        }
        value
    }
}

// ---------------------------------------------------------------- [global]

/// Checks `[global]`; an absent section means all defaults.
fn validate_global(section: Option<&GlobalSection>, errors: &mut Vec<ConfigError>) -> Global {
    let mut scope = Scope::new("global", errors);
    let drain_timeout = section.and_then(|g| g.drain_timeout.as_deref());
    Global {
        drain_timeout: duration_field(
            &mut scope,
            "drain_timeout",
            drain_timeout,
            DEFAULT_DRAIN_TIMEOUT,
        )
        .unwrap_or(DEFAULT_DRAIN_TIMEOUT),
    }
}

// ----------------------------------------------------------------- [admin]

/// Longest accepted admin token file.
const MAX_TOKEN_FILE: u64 = 4096;

/// Checks `[admin]`; `None` if anything in it is wrong (errors reported).
fn validate_admin(
    section: &AdminSection,
    listeners: &[Listener],
    errors: &mut Vec<ConfigError>,
) -> Option<Admin> {
    let mut scope = Scope::new("admin", errors);
    let bind = match section.bind.as_deref() {
        None => Some(AdminBind::Tcp(DEFAULT_ADMIN_BIND)),
        Some(text) => match text.strip_prefix("unix:") {
            Some("") => {
                scope.error(
                    "bind \"unix:\" needs a socket path (e.g. \"unix:/run/lbd/admin.sock\")",
                );
                None
            }
            Some(path) => Some(AdminBind::Unix(path.into())),
            None => socket_addr_field(&mut scope, "bind", text).map(AdminBind::Tcp),
        },
    };
    let stats_bind = match section.stats_bind.as_deref() {
        None => Some(None),
        Some(text) => socket_addr_field(&mut scope, "stats_bind", text).map(Some),
    };
    let tcp_binds = [
        (
            "bind",
            bind.as_ref().and_then(|b| match b {
                AdminBind::Tcp(addr) => Some(*addr),
                AdminBind::Unix(_) => None,
            }),
        ),
        ("stats_bind", stats_bind.flatten()),
    ];
    for (field, addr) in tcp_binds {
        let Some(addr) = addr else { continue };
        if let Some(l) = listeners
            .iter()
            .find(|l| l.bind == addr || binds_overlap(l.bind, addr))
        {
            scope.error(format!(
                "{field} {addr} clashes with listener {:?} on {}",
                l.name, l.bind
            ));
        }
    }
    if let (Some(AdminBind::Tcp(a)), Some(Some(b))) = (&bind, stats_bind) {
        if *a == b || binds_overlap(*a, b) {
            scope.error(format!("stats_bind {b} clashes with bind {a}"));
        }
    }
    let token_file = match section.token_file.as_deref() {
        None => Some(None),
        Some(path) => match read_token(std::path::Path::new(path)) {
            Ok(_) => Some(Some(path.into())),
            Err(reason) => {
                scope.error(format!("token_file {path:?}: {reason}"));
                None
            }
        },
    };
    let tls = match (section.tls_cert.as_deref(), section.tls_key.as_deref()) {
        (None, None) => Some(None),
        (Some(cert), Some(key)) => {
            let tls = AdminTls {
                cert: cert.into(),
                key: key.into(),
            };
            match crate::tls::server_config(&tls.cert, &tls.key) {
                Ok(_) => Some(Some(tls)),
                Err(e) => {
                    scope.error(e.to_string());
                    None
                }
            }
        }
        _ => {
            scope.error("tls_cert and tls_key must be set together");
            None
        }
    };
    Some(Admin {
        bind: bind?,
        stats_bind: stats_bind?,
        token_file: token_file?,
        tls: tls?,
    })
}

/// Reads an admin token file: the token is its content without surrounding
/// whitespace, non-empty, at most 4 KiB.
pub fn read_token(path: &std::path::Path) -> Result<String, String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_TOKEN_FILE + 1).read_to_string(&mut text))
        .map_err(|e| format!("cannot read: {e}"))?;
    if text.len() as u64 > MAX_TOKEN_FILE {
        return Err(format!("longer than {MAX_TOKEN_FILE} bytes"));
    }
    let token = text.trim();
    if token.is_empty() {
        return Err("is empty".to_owned());
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the token must not contain spaces or control characters".to_owned());
    }
    Ok(token.to_owned())
}

// ----------------------------------------------------------------- names

/// What the name of a `[[listener]]` or `[[pool]]` turned out to be.
enum NameStatus {
    /// Present, well-formed and the first of its spelling.
    Good(String),
    /// Absent, empty, badly formed or a duplicate; the reason says which.
    Bad(String),
}

/// The names of one kind of section (`listener`, `pool`), checked together
/// because uniqueness and labels depend on the other sections.
struct Names {
    statuses: Vec<NameStatus>,
    /// How each section is called in error paths: `listener "web"` or
    /// `listener #2`.
    labels: Vec<String>,
}

impl Names {
    /// Checks every name of sections of `kind`, in file order.
    fn check<'a>(kind: &str, names: impl Iterator<Item = Option<&'a str>>) -> Self {
        let mut first_use: HashMap<&str, usize> = HashMap::new();
        let mut statuses = Vec::new();
        let mut labels = Vec::new();
        for (index, name) in names.enumerate() {
            let position = index + 1;
            let status = match name {
                None => NameStatus::Bad("name is required".to_owned()),
                Some(name) => match name_problem(name) {
                    Some(problem) => NameStatus::Bad(problem),
                    None => match first_use.get(name) {
                        Some(first) => NameStatus::Bad(format!(
                            "name {name:?} is already used by {kind} #{first}"
                        )),
                        None => {
                            first_use.insert(name, position);
                            NameStatus::Good(name.to_owned())
                        }
                    },
                },
            };
            labels.push(match &status {
                NameStatus::Good(name) => format!("{kind} {name:?}"),
                NameStatus::Bad(_) => format!("{kind} #{position}"),
            });
            statuses.push(status);
        }
        Names { statuses, labels }
    }

    /// The checked name of section `index`, reporting its problem if any.
    fn take(&self, index: usize, scope: &mut Scope) -> Option<String> {
        match self.statuses.get(index)? {
            NameStatus::Good(name) => Some(name.clone()),
            NameStatus::Bad(reason) => {
                scope.error(reason.clone());
                None
            }
        }
    }

    /// The error-path label of section `index`.
    fn label(&self, index: usize) -> &str {
        self.labels.get(index).map_or("", String::as_str)
    }
}

/// Whether `c` may appear in a name (names become metric labels).
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')
}

/// Why `name` is not acceptable as a listener or pool name, if it is not.
fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("name is empty".to_owned());
    }
    name.chars().find(|&c| !is_name_char(c)).map(|c| {
        format!(
            "name {name:?} contains {c:?}; only ASCII letters, digits, '_', '.', ':' and '-' \
             are allowed"
        )
    })
}

// -------------------------------------------------------------- listeners

/// Checks every `[[listener]]`; returns those that are fully valid.
fn validate_listeners(
    sections: &[ListenerSection],
    pool_names: &HashSet<&str>,
    errors: &mut Vec<ConfigError>,
) -> Vec<Listener> {
    let names = Names::check("listener", sections.iter().map(|l| l.name.as_deref()));
    // Valid binds of earlier listeners, with their index, for conflict checks.
    let mut binds: Vec<(SocketAddr, usize)> = Vec::new();
    let mut listeners = Vec::new();
    for (index, section) in sections.iter().enumerate() {
        let mut scope = Scope::new(names.label(index), errors);
        let name = names.take(index, &mut scope);
        let bind = bind_field(&mut scope, section.bind.as_deref());
        if let Some(bind) = bind {
            if let Some(reason) = bind_conflict(bind, &binds, &names) {
                scope.error(reason);
            }
            binds.push((bind, index));
        }
        if let Some(listener) = validate_listener(&mut scope, section, name, bind, pool_names) {
            listeners.push(listener);
        }
    }
    listeners
}

/// Checks the fields of a listener after `name` and `bind` (checked by the
/// caller, which needs them for uniqueness) and builds it if all are valid.
fn validate_listener(
    scope: &mut Scope,
    section: &ListenerSection,
    name: Option<String>,
    bind: Option<SocketAddr>,
    pool_names: &HashSet<&str>,
) -> Option<Listener> {
    let pool = pool_reference(scope, section.pool.as_deref(), pool_names);
    let connection_limit = connection_limit_field(scope, section.connection_limit);
    let allowed_cidrs = cidrs_field(scope, &section.allowed_cidrs);
    let client_idle = duration_field(
        scope,
        "client_idle",
        section.client_idle.as_deref(),
        DEFAULT_CLIENT_IDLE,
    );
    let member_connect = duration_field(
        scope,
        "member_connect",
        section.member_connect.as_deref(),
        DEFAULT_MEMBER_CONNECT,
    );
    let member_idle = duration_field(
        scope,
        "member_idle",
        section.member_idle.as_deref(),
        DEFAULT_MEMBER_IDLE,
    );
    let proxy_protocol = proxy_protocol_field(scope, section.proxy_protocol.as_deref());
    let fast_path = fast_path_field(scope, section.fast_path.as_deref());
    Some(Listener {
        name: name?,
        bind: bind?,
        pool: pool?,
        connection_limit: connection_limit?,
        allowed_cidrs: allowed_cidrs?,
        client_idle: client_idle?,
        member_connect: member_connect?,
        member_idle: member_idle?,
        proxy_protocol: proxy_protocol?,
        freebind: section.freebind.unwrap_or(false),
        fast_path: fast_path?,
    })
}

/// `fast_path`: absent, `"none"` or `"xdp"`.
fn fast_path_field(scope: &mut Scope, value: Option<&str>) -> Option<FastPath> {
    let Some(text) = value else {
        return Some(FastPath::None);
    };
    let found = lookup(&FAST_PATHS, fast_path_name, text);
    if found.is_none() {
        scope.error(format!(
            "fast_path {text:?} is not valid (expected {})",
            expected_list(&FAST_PATHS, fast_path_name)
        ));
    }
    found
}

/// `bind`: required `addr:port` with a non-zero port.
fn bind_field(scope: &mut Scope, value: Option<&str>) -> Option<SocketAddr> {
    let text = scope.required("bind", value)?;
    socket_addr_field(scope, "bind", text)
}

/// A `{field}` that must be an `addr:port` with a non-zero port.
fn socket_addr_field(scope: &mut Scope, field: &str, text: &str) -> Option<SocketAddr> {
    let Ok(addr) = text.parse::<SocketAddr>() else {
        scope.error(format!(
            "{field} {text:?} is not an address:port (e.g. \"0.0.0.0:8080\", \"[::]:8080\")"
        ));
        return None;
    };
    if addr.port() == 0 {
        scope.error(format!("{field} {addr}: port 0 is not allowed"));
        return None;
    }
    Some(addr)
}

/// Whether binding `bind` clashes with an earlier listener's bind: the same
/// address and port, or the same port and IP family where one address is the
/// wildcard. IPv4 and IPv6 never clash (IPv6 sockets are v6only).
fn bind_conflict(
    bind: SocketAddr,
    earlier: &[(SocketAddr, usize)],
    names: &Names,
) -> Option<String> {
    earlier.iter().find_map(|&(other, index)| {
        let owner = names.label(index);
        if other == bind {
            Some(format!("bind {bind} is already used by {owner}"))
        } else if binds_overlap(bind, other) {
            Some(format!(
                "bind {bind} overlaps {other} of {owner} (same port, and a wildcard address \
                 takes the port on every address)"
            ))
        } else {
            None
        }
    })
}

/// Two different binds overlap when they share family and port and one of
/// them is the unspecified (wildcard) address.
fn binds_overlap(a: SocketAddr, b: SocketAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
        && a.port() == b.port()
        && (a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// `pool`: required, and must name a `[[pool]]` of the file.
fn pool_reference(
    scope: &mut Scope,
    value: Option<&str>,
    pool_names: &HashSet<&str>,
) -> Option<String> {
    let name = scope.required("pool", value)?;
    if pool_names.contains(name) {
        Some(name.to_owned())
    } else {
        scope.error(format!("pool {name:?} does not exist"));
        None
    }
}

/// `connection_limit`: 1..=10 000 000, default [`DEFAULT_CONNECTION_LIMIT`].
fn connection_limit_field(scope: &mut Scope, value: Option<i64>) -> Option<u32> {
    let Some(limit) = value else {
        return Some(DEFAULT_CONNECTION_LIMIT);
    };
    match u32::try_from(limit) {
        Ok(limit @ 1..=MAX_CONNECTION_LIMIT) => Some(limit),
        _ if limit == -1 => {
            scope.error(format!(
                "connection_limit -1 (unlimited) is not supported: use a number; leave it out \
                 for the default {DEFAULT_CONNECTION_LIMIT}"
            ));
            None
        }
        _ => {
            scope.error(format!(
                "connection_limit {limit} out of range (1-{MAX_CONNECTION_LIMIT}); leave it out \
                 for the default {DEFAULT_CONNECTION_LIMIT}"
            ));
            None
        }
    }
}

/// `allowed_cidrs`: every entry a CIDR or a bare IP address.
fn cidrs_field(scope: &mut Scope, values: &[String]) -> Option<Vec<IpNet>> {
    let nets: Vec<Option<IpNet>> = values
        .iter()
        .enumerate()
        .map(|(index, text)| {
            let net = parse_cidr(text);
            if net.is_none() {
                scope.error(format!(
                    "allowed_cidrs[{}]: {text:?} is not a CIDR",
                    index + 1
                ));
            }
            net
        })
        .collect();
    nets.into_iter().collect()
}

/// Parses `10.0.0.0/8` or `2001:db8::/32`; a bare address is a /32 or /128,
/// and host bits (`10.0.0.1/24`) are cleared.
fn parse_cidr(text: &str) -> Option<IpNet> {
    if let Ok(net) = text.parse::<IpNet>() {
        return Some(net.trunc());
    }
    text.parse::<IpAddr>().ok().map(IpNet::from)
}

/// `proxy_protocol`: absent, `"v1"` or `"v2"`.
fn proxy_protocol_field(scope: &mut Scope, value: Option<&str>) -> Option<Option<ProxyProtocol>> {
    let Some(text) = value else {
        return Some(None);
    };
    match lookup(&PROXY_PROTOCOLS, proxy_protocol_name, text) {
        Some(version) => Some(Some(version)),
        None => {
            scope.error(format!(
                "proxy_protocol {text:?} is not valid (expected {}; leave it out for none)",
                expected_list(&PROXY_PROTOCOLS, proxy_protocol_name)
            ));
            None
        }
    }
}

// ------------------------------------------------------------------- [xdp]

/// Longest Linux interface name (IFNAMSIZ - 1).
const MAX_IFNAME: usize = 15;

/// Checks `[xdp]`; `None` if anything in it is wrong (errors reported).
fn validate_xdp(section: &XdpSection, errors: &mut Vec<ConfigError>) -> Option<Xdp> {
    let mut scope = Scope::new("xdp", errors);
    let mut ok = true;
    if section.interfaces.is_empty() {
        scope.error("interfaces is required (the interfaces packets arrive on)");
        ok = false;
    }
    let mut seen = HashSet::new();
    for name in &section.interfaces {
        let valid = !name.is_empty()
            && name.len() <= MAX_IFNAME
            && name
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
        if !valid {
            scope.error(format!(
                "interface {name:?} is not a valid interface name (1-{MAX_IFNAME} characters, \
                 no '/', ':' or spaces)"
            ));
            ok = false;
        } else if !seen.insert(name.as_str()) {
            scope.error(format!("interface {name:?} is listed twice"));
            ok = false;
        }
    }
    let snat_address = match section.snat_address.as_deref() {
        None => None,
        Some(text) => match text.parse::<std::net::Ipv4Addr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                scope.error(format!(
                    "snat_address {text:?} is not an IPv4 address (the fast path is IPv4 only)"
                ));
                ok = false;
                None
            }
        },
    };
    let snat_ports = match section.snat_ports.as_deref() {
        None => Some(DEFAULT_SNAT_PORTS),
        Some(text) => {
            let range = parse_port_range(text);
            if range.is_none() {
                scope.error(format!(
                    "snat_ports {text:?} is not a port range FIRST-LAST with \
                     1024 <= FIRST <= LAST <= 65535"
                ));
                ok = false;
            }
            range
        }
    };
    ok.then(|| Xdp {
        interfaces: section.interfaces.clone(),
        snat_address,
        snat_ports: snat_ports.unwrap_or(DEFAULT_SNAT_PORTS),
    })
}

/// `"FIRST-LAST"` with 1024 <= FIRST <= LAST (ports below 1024 are left to
/// privileged services).
fn parse_port_range(text: &str) -> Option<RangeInclusive<u16>> {
    let (first, last) = text.split_once('-')?;
    let first: u16 = first.trim().parse().ok()?;
    let last: u16 = last.trim().parse().ok()?;
    (1024 <= first && first <= last).then_some(first..=last)
}

/// What a `fast_path = "xdp"` listener needs: an `[xdp]` section, a
/// specific IPv4 address, and nothing the kernel program does not do
/// (PROXY headers, `allowed_cidrs`, least connections).
fn fast_path_rules(
    xdp: Option<&Xdp>,
    listeners: &[Listener],
    pools: &[Pool],
    errors: &mut Vec<ConfigError>,
) {
    for listener in listeners.iter().filter(|l| l.fast_path == FastPath::Xdp) {
        let mut scope = Scope::new(format!("listener {:?}", listener.name), errors);
        if xdp.is_none() {
            scope.error("fast_path \"xdp\" needs an [xdp] section with its interfaces");
        }
        match listener.bind.ip() {
            IpAddr::V4(ip) if !ip.is_unspecified() => {}
            _ => scope.error(format!(
                "fast_path \"xdp\" needs a specific IPv4 bind address, not {}",
                listener.bind.ip()
            )),
        }
        if listener.proxy_protocol.is_some() {
            scope.error("proxy_protocol is not supported with fast_path \"xdp\"");
        }
        if !listener.allowed_cidrs.is_empty() {
            scope.error("allowed_cidrs is not supported with fast_path \"xdp\"");
        }
        let pool = pools.iter().find(|p| p.name == listener.pool);
        if let Some(pool) = pool.filter(|p| p.algorithm == Algorithm::LeastConnections) {
            scope.error(format!(
                "pool {:?} uses least_connections, which fast_path \"xdp\" does not do \
                 (round_robin or source_ip)",
                pool.name
            ));
        }
        if let Some(pool) = pool.filter(|p| p.members.iter().any(|m| !m.address.is_ipv4())) {
            scope.error(format!(
                "pool {:?} has IPv6 members; fast_path \"xdp\" is IPv4 only",
                pool.name
            ));
        }
    }
}

// ------------------------------------------------------------------ pools

/// Checks every `[[pool]]`; returns those that are fully valid.
fn validate_pools(sections: &[PoolSection], errors: &mut Vec<ConfigError>) -> Vec<Pool> {
    let names = Names::check("pool", sections.iter().map(|p| p.name.as_deref()));
    let mut pools = Vec::new();
    for (index, section) in sections.iter().enumerate() {
        let mut scope = Scope::new(names.label(index), errors);
        let name = names.take(index, &mut scope);
        let algorithm = algorithm_field(&mut scope, section.algorithm.as_deref());
        let retries = int_field(
            &mut scope,
            "retries",
            section.retries,
            0..=MAX_RETRIES,
            DEFAULT_RETRIES,
        );
        let health = match &section.health {
            Some(h) => validate_health(&mut scope.child("health"), h).map(Some),
            None => Some(None),
        };
        let members = validate_members(&mut scope, &section.members);
        if let (Some(name), Some(algorithm), Some(retries), Some(health), Some(members)) =
            (name, algorithm, retries, health, members)
        {
            pools.push(Pool {
                name,
                algorithm,
                retries,
                health,
                members,
            });
        }
    }
    pools
}

/// `algorithm`: one of [`ALGORITHMS`], default round robin.
fn algorithm_field(scope: &mut Scope, value: Option<&str>) -> Option<Algorithm> {
    let Some(text) = value else {
        return Some(Algorithm::default());
    };
    let algorithm = lookup(&ALGORITHMS, algorithm_name, text);
    if algorithm.is_none() {
        scope.error(format!(
            "algorithm {text:?} is not valid (expected {})",
            expected_list(&ALGORITHMS, algorithm_name)
        ));
    }
    algorithm
}

/// Checks the members of one pool (`pool_scope` is the pool's scope); `None`
/// if any member is invalid.
fn validate_members(pool_scope: &mut Scope, sections: &[MemberSection]) -> Option<Vec<Member>> {
    // Valid address:port of earlier members, with their 1-based number.
    let mut seen: HashMap<SocketAddr, usize> = HashMap::new();
    let members: Vec<Option<Member>> = sections
        .iter()
        .enumerate()
        .map(|(index, section)| {
            let number = index + 1;
            let mut scope = pool_scope.child(format_args!("member {number}"));
            validate_member(&mut scope, section, number, &mut seen)
        })
        .collect();
    members.into_iter().collect()
}

/// Checks one `[[pool.member]]`, numbered `number` (1-based); `seen` holds
/// the address:port of earlier members of the pool, to reject duplicates.
fn validate_member(
    scope: &mut Scope,
    section: &MemberSection,
    number: usize,
    seen: &mut HashMap<SocketAddr, usize>,
) -> Option<Member> {
    let address = member_address(scope, section.address.as_deref());
    let port = member_port(scope, section.port);
    let unique = match (address, port) {
        (Some(address), Some(port)) => {
            unique_member_addr(scope, SocketAddr::new(address, port), number, seen)
        }
        _ => false,
    };
    let weight = int_field(
        scope,
        "weight",
        section.weight,
        0..=MAX_WEIGHT,
        DEFAULT_WEIGHT,
    );
    let admin_state = admin_state_field(scope, section.admin_state.as_deref());
    let monitor_address = match section.monitor_address.as_deref() {
        Some(text) => ip_field(scope, "monitor_address", text).map(Some),
        None => Some(None),
    };
    let monitor_port = match section.monitor_port {
        Some(port) => int_in_range(scope, "monitor_port", port, 1..=u16::MAX).map(Some),
        None => Some(None),
    };
    if !unique {
        return None;
    }
    Some(Member {
        address: address?,
        port: port?,
        weight: weight?,
        backup: section.backup.unwrap_or(false),
        admin_state: admin_state?,
        monitor_address: monitor_address?,
        monitor_port: monitor_port?,
        id: section.id.clone(),
        name: section.name.clone(),
    })
}

/// Records `addr` as used by member `number`, or reports that an earlier
/// member of the pool already uses it. Returns whether it was unique.
fn unique_member_addr(
    scope: &mut Scope,
    addr: SocketAddr,
    number: usize,
    seen: &mut HashMap<SocketAddr, usize>,
) -> bool {
    match seen.get(&addr) {
        Some(first) => {
            scope.error(format!("address {addr} is already used by member {first}"));
            false
        }
        None => {
            seen.insert(addr, number);
            true
        }
    }
}

/// `address`: a required IP address.
fn member_address(scope: &mut Scope, value: Option<&str>) -> Option<IpAddr> {
    let text = scope.required("address", value)?;
    ip_field(scope, "address", text)
}

/// An IP address field (hostnames are not resolved).
fn ip_field(scope: &mut Scope, field: &str, text: &str) -> Option<IpAddr> {
    let address = text.parse::<IpAddr>().ok();
    if address.is_none() {
        scope.error(format!(
            "{field} {text:?} is not an IP address (hostnames are not resolved)"
        ));
    }
    address
}

/// `admin_state`: one of [`ADMIN_STATES`], default ready.
fn admin_state_field(scope: &mut Scope, value: Option<&str>) -> Option<AdminState> {
    let Some(text) = value else {
        return Some(AdminState::default());
    };
    let state = lookup(&ADMIN_STATES, admin_state_name, text);
    if state.is_none() {
        scope.error(format!(
            "admin_state {text:?} is not valid (expected {})",
            expected_list(&ADMIN_STATES, admin_state_name)
        ));
    }
    state
}

// ------------------------------------------------------------ [pool.health]

/// Checks a `[pool.health]` section (`scope` is `pool "x": health`).
fn validate_health(scope: &mut Scope, section: &HealthSection) -> Option<HealthCheck> {
    let kind = match section.kind.as_deref() {
        None => Some(CheckKind::Tcp),
        Some(text) => {
            let kind = lookup(&CHECK_KINDS, check_kind_name, text);
            if kind.is_none() {
                scope.error(format!(
                    "type {text:?} is not valid (expected {})",
                    expected_list(&CHECK_KINDS, check_kind_name)
                ));
            }
            kind
        }
    };
    let interval = duration_field(
        scope,
        "interval",
        section.interval.as_deref(),
        DEFAULT_CHECK_INTERVAL,
    );
    let timeout = duration_field(
        scope,
        "timeout",
        section.timeout.as_deref(),
        DEFAULT_CHECK_TIMEOUT,
    );
    if let (Some(interval), Some(timeout)) = (interval, timeout) {
        if timeout > interval {
            scope.error(format!(
                "timeout {} must not exceed interval {}",
                humantime::format_duration(timeout),
                humantime::format_duration(interval)
            ));
        }
    }
    let rise = int_field(scope, "rise", section.rise, 1..=MAX_RISE_FALL, DEFAULT_RISE);
    let fall = int_field(scope, "fall", section.fall, 1..=MAX_RISE_FALL, DEFAULT_FALL);
    let kind = kind?;
    let http = http_check_fields(scope, kind, section);
    let tls = tls_check_fields(scope, kind, section);
    let check = HealthCheck {
        kind,
        interval: interval?,
        timeout: timeout?,
        rise: rise?,
        fall: fall?,
        http: http?,
        tls: tls?,
    };
    if timeout > interval {
        return None;
    }
    // TLS files and the SNI name are checked by building the real probe, so
    // check-config catches what the health checker would trip over.
    if let Err(e) = crate::health::probe::Probe::new(&check) {
        scope.error(e.to_string());
        return None;
    }
    Some(check)
}

/// The HTTP fields of a health check; an error if set for a check type that
/// does not use them.
fn http_check_fields(
    scope: &mut Scope,
    kind: CheckKind,
    section: &HealthSection,
) -> Option<HttpCheck> {
    let fields = [
        ("method", section.method.is_some()),
        ("path", section.path.is_some()),
        ("host", section.host.is_some()),
        ("expected_codes", section.expected_codes.is_some()),
    ];
    if !matches!(kind, CheckKind::Http | CheckKind::Https) {
        return unused_fields(scope, kind, &fields, "http and https").then(HttpCheck::default);
    }
    let defaults = HttpCheck::default();
    let method = match section.method.as_deref() {
        None => Some(defaults.method),
        Some(m) if !m.is_empty() && m.len() <= 32 && m.bytes().all(is_token_byte) => {
            Some(m.to_owned())
        }
        Some(m) => {
            scope.error(format!("method {m:?} is not an HTTP method (e.g. \"GET\")"));
            None
        }
    };
    let path = match section.path.as_deref() {
        None => Some(defaults.path),
        Some(p) if p.starts_with('/') && p.len() <= 2048 && is_visible_ascii(p) => {
            Some(p.to_owned())
        }
        Some(p) => {
            scope.error(format!(
                "path {p:?} must start with '/' and contain no spaces or control characters"
            ));
            None
        }
    };
    let host = match section.host.as_deref() {
        None => Some(None),
        Some(h) if !h.is_empty() && h.len() <= 255 && is_visible_ascii(h) => {
            Some(Some(h.to_owned()))
        }
        Some(h) => {
            scope.error(format!(
                "host {h:?} must be non-empty, without spaces or control characters"
            ));
            None
        }
    };
    let expected_codes = match section.expected_codes.as_deref() {
        None => Some(defaults.expected_codes),
        Some(text) => {
            let codes = parse_expected_codes(text);
            if codes.is_none() {
                scope.error(format!(
                    "expected_codes {text:?} is not valid (e.g. \"200\", \"200,202\", \
                     \"200-204\"; codes 100-599)"
                ));
            }
            codes
        }
    };
    Some(HttpCheck {
        method: method?,
        path: path?,
        host: host?,
        expected_codes: expected_codes?,
    })
}

/// The TLS fields of a health check; an error if set for a check type that
/// does not use them.
fn tls_check_fields(
    scope: &mut Scope,
    kind: CheckKind,
    section: &HealthSection,
) -> Option<TlsCheck> {
    let fields = [
        ("ca_file", section.ca_file.is_some()),
        ("sni", section.sni.is_some()),
        ("client_cert", section.client_cert.is_some()),
        ("client_key", section.client_key.is_some()),
    ];
    if !matches!(kind, CheckKind::Https | CheckKind::TlsHello) {
        return unused_fields(scope, kind, &fields, "https and tls_hello").then(TlsCheck::default);
    }
    if section.client_cert.is_some() != section.client_key.is_some() {
        scope.error("client_cert and client_key must be set together");
        return None;
    }
    Some(TlsCheck {
        ca_file: section.ca_file.as_ref().map(Into::into),
        sni: section.sni.clone(),
        client_cert: section.client_cert.as_ref().map(Into::into),
        client_key: section.client_key.as_ref().map(Into::into),
    })
}

/// Reports every field in `fields` that is set although a `kind` check does
/// not use it. Returns whether none was set.
fn unused_fields(scope: &mut Scope, kind: CheckKind, fields: &[(&str, bool)], users: &str) -> bool {
    let mut clean = true;
    for (field, _) in fields.iter().filter(|(_, set)| *set) {
        scope.error(format!(
            "{field} is only used by {users} checks, not {:?}",
            check_kind_name(kind)
        ));
        clean = false;
    }
    clean
}

/// RFC 9110 `tchar`: what an HTTP method may consist of.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Printable ASCII without spaces: safe inside an HTTP request line.
fn is_visible_ascii(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_graphic())
}

/// Parses `"200"`, `"200,202"`, `"200-204"`, `"200, 300-399"`.
fn parse_expected_codes(text: &str) -> Option<ExpectedCodes> {
    let code = |t: &str| {
        t.trim()
            .parse::<u16>()
            .ok()
            .filter(|c| (100..=599).contains(c))
    };
    let ranges = text
        .split(',')
        .map(|part| match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (code(a)?, code(b)?);
                (a <= b).then_some(a..=b)
            }
            None => code(part).map(|c| c..=c),
        })
        .collect::<Option<Vec<_>>>()?;
    Some(ExpectedCodes(ranges))
}

/// `port`: required, 1..=65535.
fn member_port(scope: &mut Scope, value: Option<i64>) -> Option<u16> {
    let port = *scope.required("port", value.as_ref())?;
    int_in_range(scope, "port", port, 1..=u16::MAX)
}

// ---------------------------------------------------------- field helpers

/// An optional integer field that must lie in `range`; `default` when absent.
fn int_field<T>(
    scope: &mut Scope,
    field: &str,
    value: Option<i64>,
    range: RangeInclusive<T>,
    default: T,
) -> Option<T>
where
    T: TryFrom<i64> + PartialOrd + Display,
{
    match value {
        Some(value) => int_in_range(scope, field, value, range),
        None => Some(default),
    }
}

/// Converts `value` if it lies in `range`, else reports
/// `{field} {value} out of range ({start}-{end})`.
fn int_in_range<T>(
    scope: &mut Scope,
    field: &str,
    value: i64,
    range: RangeInclusive<T>,
) -> Option<T>
where
    T: TryFrom<i64> + PartialOrd + Display,
{
    match T::try_from(value) {
        Ok(converted) if range.contains(&converted) => Some(converted),
        _ => {
            scope.error(format!(
                "{field} {value} out of range ({}-{})",
                range.start(),
                range.end()
            ));
            None
        }
    }
}

/// The longest duration any field accepts: 30 days. Longer ones are
/// surely mistakes, and near the top of the range an `Instant` plus the
/// duration would overflow (HAProxy caps its timeouts at about 24.8 days).
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

/// An optional duration field (`"30s"`, `"500ms"`, `"2m"`) that must be
/// greater than zero and at most [`MAX_DURATION`]; `default` when absent.
fn duration_field(
    scope: &mut Scope,
    field: &str,
    value: Option<&str>,
    default: Duration,
) -> Option<Duration> {
    let Some(text) = value else {
        return Some(default);
    };
    match humantime::parse_duration(text) {
        Ok(duration) if duration.is_zero() => {
            scope.error(format!("{field} {text:?} must be greater than zero"));
            None
        }
        Ok(duration) if duration > MAX_DURATION => {
            scope.error(format!(
                "{field} {text:?} is too long (at most {})",
                humantime::format_duration(MAX_DURATION)
            ));
            None
        }
        Ok(duration) => Some(duration),
        Err(err) => {
            scope.error(format!(
                "{field} {text:?} is not a duration (e.g. \"30s\", \"500ms\", \"2m\"): {err}"
            ));
            None
        }
    }
}

/// Finds the value of `all` whose spelling (`name`) is exactly `text`.
fn lookup<T: Copy>(all: &[T], name: fn(T) -> &'static str, text: &str) -> Option<T> {
    all.iter().copied().find(|&value| name(value) == text)
}

/// `"a", "b" or "c"`: the spellings of `all`, for error messages.
fn expected_list<T: Copy>(all: &[T], name: fn(T) -> &'static str) -> String {
    let quoted: Vec<String> = all
        .iter()
        .map(|&value| format!("{:?}", name(value)))
        .collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        Some((last, _)) => last.clone(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::config::{from_toml_str, LoadError};

    /// Parses TOML into the file model; the test TOML is always well-formed.
    fn parse(text: &str) -> ConfigFile {
        toml::from_str(text).expect("test TOML parses")
    }

    /// Validates TOML that must be valid.
    fn valid(text: &str) -> Config {
        match validate(&parse(text)) {
            Ok(config) => config,
            Err(errors) => panic!("expected a valid config, got {}", lines(&errors).join("\n")),
        }
    }

    /// Validates TOML that must be invalid; returns the printed errors.
    fn invalid(text: &str) -> Vec<String> {
        match validate(&parse(text)) {
            Ok(config) => panic!("expected errors, got {config:?}"),
            Err(errors) => lines(&errors),
        }
    }

    fn lines(errors: &[ConfigError]) -> Vec<String> {
        errors.iter().map(ToString::to_string).collect()
    }

    /// A pool `p` with one member, for listeners to point at.
    const POOL_P: &str = r#"
[[pool]]
name = "p"
[[pool.member]]
address = "10.0.0.1"
port = 80
"#;

    /// A listener `name` on `bind` for pool `p`, followed by [`POOL_P`].
    fn listeners(binds: &[(&str, &str)]) -> String {
        let mut text = String::new();
        for (name, bind) in binds {
            text.push_str(&format!(
                "[[listener]]\nname = \"{name}\"\nbind = \"{bind}\"\npool = \"p\"\n"
            ));
        }
        text + POOL_P
    }

    /// A valid listener with one extra `line` of settings.
    fn listener_with(line: &str) -> String {
        format!("[[listener]]\nname = \"l\"\nbind = \"0.0.0.0:80\"\npool = \"p\"\n{line}\n{POOL_P}")
    }

    /// A pool `api` with one extra `line` of settings and the given members
    /// (each a TOML body for `[[pool.member]]`).
    fn pool_with(line: &str, members: &[&str]) -> String {
        let mut text = format!("[[pool]]\nname = \"api\"\n{line}\n");
        for member in members {
            text.push_str(&format!("[[pool.member]]\n{member}\n"));
        }
        text
    }

    const FULL: &str = r#"
[global]
drain_timeout = "2m"

[[listener]]
name = "web"
bind = "0.0.0.0:8080"
pool = "nodes"
connection_limit = 1000
allowed_cidrs = ["10.0.0.0/8", "192.168.1.7", "2001:db8::/32"]
client_idle = "50s"
member_connect = "500ms"
member_idle = "1m 30s"
proxy_protocol = "v2"
freebind = true

[[listener]]
name = "8c0b3e1a-5f2d-4c1e-9a7b-0d6f4e2a1b3c"
bind = "[::1]:6443"
pool = "api"

[[pool]]
name = "nodes"
algorithm = "least_connections"
retries = 0
[[pool.member]]
address = "10.0.0.10"
port = 31320
weight = 2
id = "m-1"
name = "node-1"
[[pool.member]]
address = "fd00::11"
port = 31320
weight = 0
backup = true
admin_state = "maint"

[[pool]]
name = "api"

[[pool]]
name = "unused"
algorithm = "source_ip"
"#;

    #[test]
    fn full_config_values_and_defaults() {
        let config = valid(FULL);
        assert_eq!(config.global.drain_timeout, Duration::from_secs(120));

        let web = &config.listeners[0];
        assert_eq!(web.name, "web");
        assert_eq!(web.bind, "0.0.0.0:8080".parse().expect("addr"));
        assert_eq!(web.pool, "nodes");
        assert_eq!(web.connection_limit, 1000);
        assert_eq!(
            web.allowed_cidrs,
            vec![
                "10.0.0.0/8".parse::<IpNet>().expect("net"),
                "192.168.1.7/32".parse().expect("net"),
                "2001:db8::/32".parse().expect("net"),
            ]
        );
        assert_eq!(web.client_idle, Duration::from_secs(50));
        assert_eq!(web.member_connect, Duration::from_millis(500));
        assert_eq!(web.member_idle, Duration::from_secs(90));
        assert_eq!(web.proxy_protocol, Some(ProxyProtocol::V2));
        assert!(web.freebind);

        let uuid = &config.listeners[1];
        assert_eq!(uuid.name, "8c0b3e1a-5f2d-4c1e-9a7b-0d6f4e2a1b3c");
        assert_eq!(
            uuid.bind,
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 6443)
        );
        assert_eq!(uuid.connection_limit, DEFAULT_CONNECTION_LIMIT);
        assert!(uuid.allowed_cidrs.is_empty());
        assert_eq!(uuid.client_idle, DEFAULT_CLIENT_IDLE);
        assert_eq!(uuid.member_connect, DEFAULT_MEMBER_CONNECT);
        assert_eq!(uuid.member_idle, DEFAULT_MEMBER_IDLE);
        assert_eq!(uuid.proxy_protocol, None);
        assert!(!uuid.freebind);

        let nodes = config.pool("nodes").expect("pool nodes");
        assert_eq!(nodes.algorithm, Algorithm::LeastConnections);
        assert_eq!(nodes.retries, 0);
        assert_eq!(
            nodes.members,
            vec![
                Member {
                    address: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 10)),
                    port: 31320,
                    weight: 2,
                    backup: false,
                    admin_state: AdminState::Ready,
                    monitor_address: None,
                    monitor_port: None,
                    id: Some("m-1".into()),
                    name: Some("node-1".into()),
                },
                Member {
                    address: "fd00::11".parse().expect("ip"),
                    port: 31320,
                    weight: 0,
                    backup: true,
                    admin_state: AdminState::Maint,
                    monitor_address: None,
                    monitor_port: None,
                    id: None,
                    name: None,
                },
            ]
        );

        let api = config.pool("api").expect("pool api");
        assert_eq!(api.algorithm, Algorithm::RoundRobin);
        assert_eq!(api.retries, DEFAULT_RETRIES);
        assert!(api.members.is_empty());
        assert_eq!(
            config.pool("unused").map(|p| p.algorithm),
            Some(Algorithm::SourceIp)
        );
    }

    #[test]
    fn empty_config_is_refused_and_a_bare_global_is_valid() {
        for text in ["", "\n\n", "# only a comment\n"] {
            assert_eq!(invalid(text), [EMPTY_CONFIG], "{text:?}");
        }
        let config = valid("[global]\n");
        assert_eq!(config.global.drain_timeout, DEFAULT_DRAIN_TIMEOUT);
        assert!(config.listeners.is_empty() && config.pools.is_empty());
    }

    #[test]
    fn member_port_out_of_range_exact_message() {
        let text = pool_with(
            "",
            &[
                "address = \"10.0.0.1\"\nport = 80",
                "address = \"10.0.0.2\"\nport = 70000",
            ],
        );
        assert_eq!(
            invalid(&text),
            ["pool \"api\": member 2: port 70000 out of range (1-65535)"]
        );
        let errors = validate(&parse(&text)).expect_err("invalid");
        assert_eq!(
            errors,
            [ConfigError {
                path: "pool \"api\": member 2".into(),
                reason: "port 70000 out of range (1-65535)".into(),
            }]
        );
    }

    #[test]
    fn several_mistakes_all_reported_in_file_order() {
        let text = r#"
[global]
drain_timeout = "0s"

[[listener]]
name = "web"
bind = "0.0.0.0:80"
pool = "nope"
connection_limit = -1
allowed_cidrs = ["10.0.0.0/8", "10.0.0.0/33"]
client_idle = "soon"
proxy_protocol = "v3"

[[listener]]
bind = "0.0.0.0:80"
pool = "api"

[[pool]]
name = "api"
algorithm = "random"
retries = 101
[[pool.member]]
address = "node1.example.com"
port = 0
weight = 257
[[pool.member]]
address = "10.0.0.1"
port = 80
[[pool.member]]
address = "10.0.0.1"
port = 80
"#;
        let errors = invalid(text);
        // Every message is exact except client_idle's, which ends with
        // humantime's explanation; it is compared up to that point.
        let expected = [
            "global: drain_timeout \"0s\" must be greater than zero",
            "listener \"web\": pool \"nope\" does not exist",
            "listener \"web\": connection_limit -1 (unlimited) is not supported: use a number; \
             leave it out for the default 50000",
            "listener \"web\": allowed_cidrs[2]: \"10.0.0.0/33\" is not a CIDR",
            "listener \"web\": client_idle \"soon\" is not a duration (e.g. \"30s\", \"500ms\", \
             \"2m\"): ",
            "listener \"web\": proxy_protocol \"v3\" is not valid (expected \"v1\" or \"v2\"; \
             leave it out for none)",
            "listener #2: name is required",
            "listener #2: bind 0.0.0.0:80 is already used by listener \"web\"",
            "pool \"api\": algorithm \"random\" is not valid (expected \"round_robin\", \
             \"least_connections\" or \"source_ip\")",
            "pool \"api\": retries 101 out of range (0-100)",
            "pool \"api\": member 1: address \"node1.example.com\" is not an IP address \
             (hostnames are not resolved)",
            "pool \"api\": member 1: port 0 out of range (1-65535)",
            "pool \"api\": member 1: weight 257 out of range (0-256)",
            "pool \"api\": member 3: address 10.0.0.1:80 is already used by member 2",
        ];
        assert_eq!(errors.len(), expected.len(), "{errors:#?}");
        for (error, want) in errors.iter().zip(expected) {
            if want.ends_with(": ") {
                assert!(
                    error.starts_with(want),
                    "{error:?} should start with {want:?}"
                );
            } else {
                assert_eq!(error, want);
            }
        }
    }

    #[test]
    fn missing_required_fields() {
        let text = "[[listener]]\n[[pool]]\n[[pool.member]]\n";
        assert_eq!(
            invalid(text),
            [
                "listener #1: name is required",
                "listener #1: bind is required",
                "listener #1: pool is required",
                "pool #1: name is required",
                "pool #1: member 1: address is required",
                "pool #1: member 1: port is required",
            ]
        );
    }

    #[test]
    fn listener_name_rules() {
        let text = listeners(&[
            ("", "0.0.0.0:1"),
            ("a b", "0.0.0.0:2"),
            ("x", "0.0.0.0:3"),
            ("x", "0.0.0.0:4"),
        ]);
        assert_eq!(
            invalid(&text),
            [
                "listener #1: name is empty",
                "listener #2: name \"a b\" contains ' '; only ASCII letters, digits, '_', '.', \
                 ':' and '-' are allowed",
                "listener #4: name \"x\" is already used by listener #3",
            ]
        );
        let ok = valid(&listeners(&[("Az09_.:-", "0.0.0.0:1")]));
        assert_eq!(ok.listeners[0].name, "Az09_.:-");
    }

    #[test]
    fn pool_name_rules() {
        let text = "[[pool]]\nname = \"api\"\n[[pool]]\nname = \"api\"\n[[pool]]\nname = \"é\"\n";
        assert_eq!(
            invalid(text),
            [
                "pool #2: name \"api\" is already used by pool #1",
                "pool #3: name \"é\" contains 'é'; only ASCII letters, digits, '_', '.', ':' and \
                 '-' are allowed",
            ]
        );
    }

    #[test]
    fn listener_and_pool_may_share_a_name() {
        let config = valid("[[listener]]\nname = \"p\"\nbind = \"0.0.0.0:80\"\npool = \"p\"\n[[pool]]\nname = \"p\"\n");
        assert_eq!(config.listeners[0].pool, "p");
    }

    #[test]
    fn bind_must_be_socket_address_with_nonzero_port() {
        let text = listeners(&[("a", "localhost:80"), ("b", "10.0.0.1"), ("c", "0.0.0.0:0")]);
        assert_eq!(
            invalid(&text),
            [
                "listener \"a\": bind \"localhost:80\" is not an address:port (e.g. \
                 \"0.0.0.0:8080\", \"[::]:8080\")",
                "listener \"b\": bind \"10.0.0.1\" is not an address:port (e.g. \
                 \"0.0.0.0:8080\", \"[::]:8080\")",
                "listener \"c\": bind 0.0.0.0:0: port 0 is not allowed",
            ]
        );
    }

    #[test]
    fn duplicate_bind() {
        let text = listeners(&[("a", "127.0.0.1:80"), ("b", "127.0.0.1:80")]);
        assert_eq!(
            invalid(&text),
            ["listener \"b\": bind 127.0.0.1:80 is already used by listener \"a\""]
        );
    }

    #[test]
    fn duplicate_bind_names_unnamed_listener_by_position() {
        let text = format!(
            "[[listener]]\nbind = \"[::1]:80\"\npool = \"p\"\n{}",
            listeners(&[("b", "[::1]:80")])
        );
        assert_eq!(
            invalid(&text),
            [
                "listener #1: name is required",
                "listener \"b\": bind [::1]:80 is already used by listener #1",
            ]
        );
    }

    #[test]
    fn wildcard_overlap_ipv4() {
        let text = listeners(&[("a", "0.0.0.0:80"), ("b", "10.0.0.1:80")]);
        assert_eq!(
            invalid(&text),
            [
                "listener \"b\": bind 10.0.0.1:80 overlaps 0.0.0.0:80 of listener \"a\" (same \
              port, and a wildcard address takes the port on every address)"
            ]
        );
    }

    #[test]
    fn wildcard_overlap_ipv6_specific_first() {
        let text = listeners(&[("a", "[::1]:80"), ("b", "[::]:80")]);
        assert_eq!(
            invalid(&text),
            [
                "listener \"b\": bind [::]:80 overlaps [::1]:80 of listener \"a\" (same port, and \
              a wildcard address takes the port on every address)"
            ]
        );
    }

    #[test]
    fn ipv4_and_ipv6_wildcards_do_not_conflict() {
        let config = valid(&listeners(&[
            ("v4", "0.0.0.0:80"),
            ("v6", "[::]:80"),
            ("v4-other-port", "10.0.0.1:81"),
            ("v6-specific", "[fd00::1]:81"),
        ]));
        assert_eq!(config.listeners.len(), 4);
    }

    #[test]
    fn unknown_pool() {
        let text = listeners(&[("a", "0.0.0.0:80")]).replace("pool = \"p\"\n", "pool = \"nope\"\n");
        assert_eq!(
            invalid(&text),
            ["listener \"a\": pool \"nope\" does not exist"]
        );
    }

    #[test]
    fn reference_to_badly_named_pool_reports_only_the_pool() {
        let text = "[[listener]]\nname = \"l\"\nbind = \"0.0.0.0:80\"\npool = \"a b\"\n\
                    [[pool]]\nname = \"a b\"\n";
        let errors = invalid(text);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with("pool #1: name \"a b\""), "{errors:?}");
    }

    #[test]
    fn connection_limit_rules() {
        assert_eq!(
            invalid(&listener_with("connection_limit = -1")),
            [
                "listener \"l\": connection_limit -1 (unlimited) is not supported: use a number; \
              leave it out for the default 50000"
            ]
        );
        for bad in [0, 10_000_001, i64::MIN, i64::MAX] {
            assert_eq!(
                invalid(&listener_with(&format!("connection_limit = {bad}"))),
                [format!(
                    "listener \"l\": connection_limit {bad} out of range (1-10000000); leave it \
                     out for the default 50000"
                )]
            );
        }
        for good in [1, 10_000_000] {
            let config = valid(&listener_with(&format!("connection_limit = {good}")));
            assert_eq!(i64::from(config.listeners[0].connection_limit), good);
        }
    }

    #[test]
    fn bad_cidr() {
        let text =
            listener_with(r#"allowed_cidrs = ["10.0.0.0/8", "10.0.0.0/33", "nope", "::/129"]"#);
        assert_eq!(
            invalid(&text),
            [
                "listener \"l\": allowed_cidrs[2]: \"10.0.0.0/33\" is not a CIDR",
                "listener \"l\": allowed_cidrs[3]: \"nope\" is not a CIDR",
                "listener \"l\": allowed_cidrs[4]: \"::/129\" is not a CIDR",
            ]
        );
    }

    #[test]
    fn cidr_host_bits_are_truncated() {
        let config = valid(&listener_with(
            r#"allowed_cidrs = ["10.0.0.1/24", "2001:db8::1/64"]"#,
        ));
        assert_eq!(
            config.listeners[0].allowed_cidrs,
            vec![
                "10.0.0.0/24".parse::<IpNet>().expect("net"),
                "2001:db8::/64".parse().expect("net"),
            ]
        );
    }

    #[test]
    fn bare_ip_cidr_is_a_host_route() {
        let config = valid(&listener_with(
            r#"allowed_cidrs = ["192.0.2.7", "2001:db8::7"]"#,
        ));
        assert_eq!(
            config.listeners[0].allowed_cidrs,
            vec![
                "192.0.2.7/32".parse::<IpNet>().expect("net"),
                "2001:db8::7/128".parse().expect("net"),
            ]
        );
    }

    #[test]
    fn bad_duration() {
        for field in ["client_idle", "member_connect", "member_idle"] {
            let errors = invalid(&listener_with(&format!("{field} = \"5 parsecs\"")));
            assert_eq!(errors.len(), 1, "{errors:?}");
            let want = format!(
                "listener \"l\": {field} \"5 parsecs\" is not a duration (e.g. \"30s\", \
                 \"500ms\", \"2m\"): "
            );
            assert!(errors[0].starts_with(&want), "{errors:?}");
        }
        let errors = invalid("[global]\ndrain_timeout = \"30\"\n");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("global: drain_timeout \"30\" is not a duration"),
            "{errors:?}"
        );
    }

    #[test]
    fn zero_duration() {
        for zero in ["0", "0s", "0ms"] {
            assert_eq!(
                invalid(&listener_with(&format!("member_connect = \"{zero}\""))),
                [format!(
                    "listener \"l\": member_connect \"{zero}\" must be greater than zero"
                )]
            );
        }
        assert_eq!(
            invalid("[global]\ndrain_timeout = \"0s\"\n"),
            ["global: drain_timeout \"0s\" must be greater than zero"]
        );
    }

    #[test]
    fn durations_are_bounded() {
        const HUGE: &str = "18446744073709551615s";
        for field in ["client_idle", "member_connect", "member_idle"] {
            assert_eq!(
                invalid(&listener_with(&format!("{field} = \"{HUGE}\""))),
                [format!(
                    "listener \"l\": {field} \"{HUGE}\" is too long (at most 30days)"
                )]
            );
        }
        assert_eq!(
            invalid(&format!("[global]\ndrain_timeout = \"{HUGE}\"\n")),
            [format!(
                "global: drain_timeout \"{HUGE}\" is too long (at most 30days)"
            )]
        );
        for field in ["interval", "timeout"] {
            let errors = invalid(&format!(
                "[[pool]]\nname = \"p\"\n[pool.health]\n{field} = \"31days\"\n"
            ));
            assert!(
                errors.contains(&format!(
                    "pool \"p\": health: {field} \"31days\" is too long (at most 30days)"
                )),
                "{errors:?}"
            );
        }
        let longest = listener_with(
            "client_idle = \"30days\"\nmember_connect = \"30days\"\nmember_idle = \"720h\"",
        );
        assert_eq!(valid(&longest).listeners[0].client_idle, MAX_DURATION);
    }

    #[test]
    fn durations_accept_humantime_forms() {
        let text = listener_with(
            "client_idle = \"1h 2m 3s\"\nmember_connect = \"1.5s\"\nmember_idle = \"250ms\"",
        );
        let listener = &valid(&text).listeners[0];
        assert_eq!(listener.client_idle, Duration::from_secs(3723));
        assert_eq!(listener.member_connect, Duration::from_millis(1500));
        assert_eq!(listener.member_idle, Duration::from_millis(250));
    }

    #[test]
    fn proxy_protocol_values() {
        assert_eq!(
            invalid(&listener_with("proxy_protocol = \"V2\"")),
            [
                "listener \"l\": proxy_protocol \"V2\" is not valid (expected \"v1\" or \"v2\"; \
              leave it out for none)"
            ]
        );
        let v1 = valid(&listener_with("proxy_protocol = \"v1\""));
        assert_eq!(v1.listeners[0].proxy_protocol, Some(ProxyProtocol::V1));
    }

    #[test]
    fn bad_algorithm() {
        assert_eq!(
            invalid(&pool_with("algorithm = \"roundrobin\"", &[])),
            [
                "pool \"api\": algorithm \"roundrobin\" is not valid (expected \"round_robin\", \
              \"least_connections\" or \"source_ip\")"
            ]
        );
    }

    #[test]
    fn retries_range() {
        assert_eq!(
            invalid(&pool_with("retries = -1", &[])),
            ["pool \"api\": retries -1 out of range (0-100)"]
        );
        assert_eq!(
            valid(&pool_with("retries = 100", &[])).pools[0].retries,
            100
        );
    }

    #[test]
    fn weight_257_is_rejected() {
        let text = pool_with("", &["address = \"10.0.0.1\"\nport = 80\nweight = 257"]);
        assert_eq!(
            invalid(&text),
            ["pool \"api\": member 1: weight 257 out of range (0-256)"]
        );
        let text = pool_with("", &["address = \"10.0.0.1\"\nport = 80\nweight = -1"]);
        assert_eq!(
            invalid(&text),
            ["pool \"api\": member 1: weight -1 out of range (0-256)"]
        );
    }

    #[test]
    fn weight_0_and_256_are_accepted() {
        let text = pool_with(
            "",
            &[
                "address = \"10.0.0.1\"\nport = 80\nweight = 0",
                "address = \"10.0.0.2\"\nport = 80\nweight = 256",
                "address = \"10.0.0.3\"\nport = 80",
            ],
        );
        let weights: Vec<u32> = valid(&text).pools[0]
            .members
            .iter()
            .map(|m| m.weight)
            .collect();
        assert_eq!(weights, [0, MAX_WEIGHT, DEFAULT_WEIGHT]);
    }

    #[test]
    fn duplicate_member() {
        let text = pool_with(
            "",
            &[
                "address = \"fd00::1\"\nport = 80",
                "address = \"fd00::1\"\nport = 81",
                "address = \"fd00:0::1\"\nport = 80\nweight = 999",
            ],
        );
        assert_eq!(
            invalid(&text),
            [
                "pool \"api\": member 3: address [fd00::1]:80 is already used by member 1",
                "pool \"api\": member 3: weight 999 out of range (0-256)",
            ]
        );
    }

    #[test]
    fn same_member_in_two_pools_is_fine() {
        let text = format!("{POOL_P}{}", POOL_P.replace("\"p\"", "\"q\""));
        assert_eq!(valid(&text).pools.len(), 2);
    }

    #[test]
    fn hostname_address() {
        let text = pool_with("", &["address = \"db.internal\"\nport = 5432"]);
        assert_eq!(
            invalid(&text),
            [
                "pool \"api\": member 1: address \"db.internal\" is not an IP address (hostnames \
              are not resolved)"
            ]
        );
    }

    #[test]
    fn hostile_values_do_not_panic() {
        let text = r#"
[global]
drain_timeout = "99999999999999999999999999s"
[[listener]]
name = "\u0000\n"
bind = "[::1%99999999999]:65536"
pool = ""
connection_limit = -9223372036854775808
allowed_cidrs = ["", "/", "1.2.3.4/", "::/-1"]
client_idle = "-1s"
member_connect = "1ns"
member_idle = "18446744073709551615s 999999999ns"
[[pool]]
name = ""
retries = 9223372036854775807
[[pool.member]]
address = ""
port = -9223372036854775808
weight = 9223372036854775807
"#;
        let errors = invalid(text);
        assert_eq!(errors.len(), 15, "{errors:#?}");
        assert!(
            errors.iter().any(|e| e.starts_with(
                "listener #1: member_idle \"18446744073709551615s 999999999ns\" is too long"
            )),
            "{errors:#?}"
        );
        assert!(errors.iter().any(|e| e == "listener #1: name \"\\0\\n\" contains '\\0'; only ASCII letters, digits, '_', '.', ':' and '-' are allowed"), "{errors:#?}");
    }

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
    fn from_toml_str_reports_invalid_values_with_origin() {
        let text = pool_with("", &["address = \"10.0.0.1\"\nport = 70000"]);
        let err = from_toml_str(&text, "lbd.toml").expect_err("invalid");
        assert!(matches!(err, LoadError::Invalid { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "lbd.toml: pool \"api\": member 1: port 70000 out of range (1-65535)"
        );
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
            "{}\n[[pool]]\nname = \"q\"\n[[pool]]\nname = \"r\"\n",
            listener_with("proxy_protocol = \"v1\"")
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
                proxy_protocol: proxy,
                ..listener.clone()
            });
        }
        assert_eq!(config.pools.len(), ALGORITHMS.len());
        for (pool, algorithm) in config.pools.iter_mut().zip(ALGORITHMS) {
            pool.algorithm = algorithm;
        }
        config.global.drain_timeout = Duration::from_millis(1234);
        assert_eq!(validate(&ConfigFile::from(&config)), Ok(config));
    }

    #[test]
    fn spellings_round_trip() {
        for algorithm in ALGORITHMS {
            assert_eq!(
                lookup(&ALGORITHMS, algorithm_name, algorithm_name(algorithm)),
                Some(algorithm)
            );
        }
        for version in PROXY_PROTOCOLS {
            assert_eq!(
                lookup(
                    &PROXY_PROTOCOLS,
                    proxy_protocol_name,
                    proxy_protocol_name(version)
                ),
                Some(version)
            );
        }
    }

    /// A pool "api" with a `[pool.health]` section holding `lines`.
    fn health_with(lines: &str) -> String {
        format!("[[pool]]\nname = \"api\"\n[pool.health]\n{lines}\n")
    }

    #[test]
    fn health_defaults_and_values() {
        let tcp = valid(&health_with(""));
        let check = tcp.pools[0].health.as_ref().expect("health");
        assert_eq!(check.kind, CheckKind::Tcp);
        assert_eq!(check.interval, DEFAULT_CHECK_INTERVAL);
        assert_eq!(check.timeout, DEFAULT_CHECK_TIMEOUT);
        assert_eq!((check.rise, check.fall), (DEFAULT_RISE, DEFAULT_FALL));
        assert_eq!(check.http, HttpCheck::default());

        let http = valid(&health_with(
            "type = \"https\"\ninterval = \"5s\"\ntimeout = \"5s\"\nrise = 1\nfall = 10\n\
             method = \"HEAD\"\npath = \"/readyz?verbose\"\nhost = \"api.example\"\n\
             expected_codes = \"200, 202-204\"\nsni = \"kubernetes.default\"",
        ));
        let check = http.pools[0].health.as_ref().expect("health");
        assert_eq!(check.kind, CheckKind::Https);
        assert_eq!(check.interval, Duration::from_secs(5));
        assert_eq!((check.rise, check.fall), (1, 10));
        assert_eq!(check.http.method, "HEAD");
        assert_eq!(check.http.path, "/readyz?verbose");
        assert_eq!(check.http.host.as_deref(), Some("api.example"));
        assert_eq!(check.http.expected_codes.0, vec![200..=200, 202..=204]);
        assert!(check.http.expected_codes.contains(203));
        assert!(!check.http.expected_codes.contains(201));
        assert_eq!(check.tls.sni.as_deref(), Some("kubernetes.default"));
        assert_eq!(check.tls.ca_file, None);
    }

    #[test]
    fn health_errors_are_all_reported() {
        assert_eq!(
            invalid(&health_with(
                "type = \"httpz\"\ninterval = \"1s\"\ntimeout = \"2s\"\nrise = 0\nfall = 11"
            )),
            [
                "pool \"api\": health: type \"httpz\" is not valid (expected \"tcp\", \"http\", \
                 \"https\" or \"tls_hello\")",
                "pool \"api\": health: timeout 2s must not exceed interval 1s",
                "pool \"api\": health: rise 0 out of range (1-10)",
                "pool \"api\": health: fall 11 out of range (1-10)",
            ]
        );
        assert_eq!(
            invalid(&health_with(
                "type = \"http\"\nmethod = \"GET /\"\npath = \"readyz\"\nhost = \"a b\"\n\
                 expected_codes = \"204-200\""
            )),
            [
                "pool \"api\": health: method \"GET /\" is not an HTTP method (e.g. \"GET\")",
                "pool \"api\": health: path \"readyz\" must start with '/' and contain no spaces \
                 or control characters",
                "pool \"api\": health: host \"a b\" must be non-empty, without spaces or control \
                 characters",
                "pool \"api\": health: expected_codes \"204-200\" is not valid (e.g. \"200\", \
                 \"200,202\", \"200-204\"; codes 100-599)",
            ]
        );
        for codes in ["", "abc", "600", "200,", "99"] {
            assert_eq!(
                invalid(&health_with(&format!(
                    "type = \"http\"\nexpected_codes = \"{codes}\""
                )))
                .len(),
                1,
                "{codes:?}"
            );
        }
    }

    #[test]
    fn health_fields_of_another_check_type_are_refused() {
        assert_eq!(
            invalid(&health_with("path = \"/healthz\"\nsni = \"x\"")),
            [
                "pool \"api\": health: path is only used by http and https checks, not \"tcp\"",
                "pool \"api\": health: sni is only used by https and tls_hello checks, not \"tcp\"",
            ]
        );
        assert_eq!(
            invalid(&health_with(
                "type = \"tls_hello\"\nclient_cert = \"/c.pem\""
            )),
            ["pool \"api\": health: client_cert and client_key must be set together"]
        );
    }

    #[test]
    fn health_tls_files_are_checked() {
        let errors = invalid(&health_with(
            "type = \"https\"\nca_file = \"/nonexistent/lbd-test-ca.pem\"",
        ));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0]
                .starts_with("pool \"api\": health: ca_file \"/nonexistent/lbd-test-ca.pem\": "),
            "{errors:?}"
        );
    }

    #[test]
    fn member_admin_state_and_monitor_fields() {
        let config = valid(&pool_with(
            "",
            &[
                "address = \"10.0.0.1\"\nport = 80\nadmin_state = \"drain\"\n\
                 monitor_address = \"10.0.1.1\"\nmonitor_port = 8081",
                "address = \"10.0.0.2\"\nport = 80\nmonitor_port = 10256",
            ],
        ));
        let members = &config.pools[0].members;
        assert_eq!(members[0].admin_state, AdminState::Drain);
        assert_eq!(
            members[0].check_addr(),
            "10.0.1.1:8081".parse().expect("addr")
        );
        assert_eq!(members[1].admin_state, AdminState::Ready);
        assert_eq!(
            members[1].check_addr(),
            "10.0.0.2:10256".parse().expect("addr")
        );
        assert_eq!(
            invalid(&pool_with(
                "",
                &[
                    "address = \"10.0.0.1\"\nport = 80\nadmin_state = \"disabled\"\n\
                   monitor_address = \"node-1\"\nmonitor_port = 0"
                ]
            )),
            [
                "pool \"api\": member 1: admin_state \"disabled\" is not valid (expected \
                 \"ready\", \"drain\" or \"maint\")",
                "pool \"api\": member 1: monitor_address \"node-1\" is not an IP address \
                 (hostnames are not resolved)",
                "pool \"api\": member 1: monitor_port 0 out of range (1-65535)",
            ]
        );
    }

    #[test]
    fn round_trip_health_checks_and_member_settings() {
        for check in [
            "type = \"tcp\"\ninterval = \"1s 500ms\"\ntimeout = \"300ms\"",
            "type = \"http\"\nmethod = \"OPTIONS\"\nhost = \"h\"\nexpected_codes = \"200-299,401\"",
            "type = \"https\"\npath = \"/readyz\"\nsni = \"localhost\"",
            "type = \"tls_hello\"\nrise = 5\nfall = 1",
        ] {
            let text = health_with(check)
                + "[[pool.member]]\naddress = \"::1\"\nport = 6443\nadmin_state = \"maint\"\n\
                   monitor_address = \"::2\"\nmonitor_port = 1\n";
            let config = valid(&text);
            assert_eq!(validate(&ConfigFile::from(&config)), Ok(config), "{check}");
        }
    }

    #[test]
    fn admin_section() {
        let none = valid("[global]\n");
        assert_eq!(none.admin, None);
        let default = valid("[admin]\n").admin.expect("admin");
        assert_eq!(default.bind, AdminBind::Tcp(DEFAULT_ADMIN_BIND));
        assert!(default.bind.is_local());
        let unix =
            valid("[admin]\nbind = \"unix:/run/lbd.sock\"\nstats_bind = \"0.0.0.0:32700\"\n")
                .admin
                .expect("admin");
        assert_eq!(unix.bind, AdminBind::Unix("/run/lbd.sock".into()));
        assert!(unix.bind.is_local());
        assert_eq!(
            unix.stats_bind,
            Some("0.0.0.0:32700".parse().expect("addr"))
        );
        let open = valid("[admin]\nbind = \"0.0.0.0:8404\"\n")
            .admin
            .expect("admin");
        assert!(!open.bind.is_local());
    }

    #[test]
    fn admin_errors() {
        let text = format!(
            "[admin]\nbind = \"unix:\"\nstats_bind = \"127.0.0.1:8080\"\n\
             token_file = \"/nonexistent/lbd-token\"\ntls_cert = \"/c.pem\"\n{}",
            listeners(&[("web", "0.0.0.0:8080")])
        );
        let errors = invalid(&text);
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert_eq!(
            errors[0],
            "admin: bind \"unix:\" needs a socket path (e.g. \"unix:/run/lbd/admin.sock\")"
        );
        assert_eq!(
            errors[1],
            "admin: stats_bind 127.0.0.1:8080 clashes with listener \"web\" on 0.0.0.0:8080"
        );
        assert!(
            errors[2].starts_with("admin: token_file \"/nonexistent/lbd-token\": cannot read: "),
            "{errors:?}"
        );
        assert_eq!(
            errors[3],
            "admin: tls_cert and tls_key must be set together"
        );
    }

    #[test]
    fn admin_token_file_rules() {
        let dir = std::env::temp_dir().join(format!("lbd-token-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("write token");
            path
        };
        assert_eq!(
            read_token(&write("ok", "s3cret\n")),
            Ok("s3cret".to_owned())
        );
        assert_eq!(
            read_token(&write("empty", " \n")),
            Err("is empty".to_owned())
        );
        assert!(read_token(&write("space", "a b")).is_err());
        assert!(read_token(&write("long", &"x".repeat(5000))).is_err());
        let ok = dir.join("ok");
        let config = valid(&format!("[admin]\ntoken_file = \"{}\"\n", ok.display()));
        assert_eq!(config.admin.and_then(|a| a.token_file), Some(ok));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn round_trip_admin() {
        for text in [
            "[admin]\n",
            "[admin]\nbind = \"unix:/run/lbd.sock\"\nstats_bind = \"[::]:32700\"\n",
        ] {
            let config = valid(text);
            assert_eq!(validate(&ConfigFile::from(&config)), Ok(config), "{text}");
        }
    }

    #[test]
    fn xdp_section_and_fast_path_rules() {
        let xdp = "[xdp]\ninterfaces = [\"veth-c\", \"veth-m\"]\nsnat_address = \"10.0.0.1\"\n";
        let good = format!(
            "{xdp}[[listener]]\nname = \"l\"\nbind = \"10.0.0.1:80\"\npool = \"p\"\nfast_path = \"xdp\"\n{POOL_P}"
        );
        let config = valid(&good);
        assert_eq!(config.listeners[0].fast_path, FastPath::Xdp);
        let x = config.xdp.as_ref().expect("xdp");
        assert_eq!(x.interfaces, ["veth-c", "veth-m"]);
        assert_eq!(x.snat_address, Some("10.0.0.1".parse().expect("ip")));
        assert_eq!(x.snat_ports, 20_000..=32_767);
        // Round trip through the file shape.
        let back = ConfigFile::from(&config);
        assert_eq!(validate(&back).expect("valid"), config);

        assert_eq!(
            invalid(&listener_with("fast_path = \"dpdk\"")),
            ["listener \"l\": fast_path \"dpdk\" is not valid (expected \"none\" or \"xdp\")"]
        );
        assert_eq!(
            invalid(&listener_with("fast_path = \"xdp\"")),
            [
                "listener \"l\": fast_path \"xdp\" needs an [xdp] section with its interfaces",
                "listener \"l\": fast_path \"xdp\" needs a specific IPv4 bind address, not 0.0.0.0"
            ]
        );
        let unsupported = format!(
            "{xdp}[[listener]]\nname = \"l\"\nbind = \"10.0.0.1:80\"\npool = \"p\"\n\
             fast_path = \"xdp\"\nproxy_protocol = \"v2\"\nallowed_cidrs = [\"10.0.0.0/8\"]\n\
             [[pool]]\nname = \"p\"\nalgorithm = \"least_connections\"\n\
             [[pool.member]]\naddress = \"::1\"\nport = 80\n"
        );
        assert_eq!(
            invalid(&unsupported),
            [
                "listener \"l\": proxy_protocol is not supported with fast_path \"xdp\"",
                "listener \"l\": allowed_cidrs is not supported with fast_path \"xdp\"",
                "listener \"l\": pool \"p\" uses least_connections, which fast_path \"xdp\" does \
                 not do (round_robin or source_ip)",
                "listener \"l\": pool \"p\" has IPv6 members; fast_path \"xdp\" is IPv4 only"
            ]
        );
        assert_eq!(
            invalid("[xdp]\ninterfaces = [\"a/b\", \"eth0\", \"eth0\", \"averyveryverylongname\"]\nsnat_address = \"::1\"\n"),
            [
                "xdp: interface \"a/b\" is not a valid interface name (1-15 characters, no '/', ':' or spaces)",
                "xdp: interface \"eth0\" is listed twice",
                "xdp: interface \"averyveryverylongname\" is not a valid interface name (1-15 characters, no '/', ':' or spaces)",
                "xdp: snat_address \"::1\" is not an IPv4 address (the fast path is IPv4 only)"
            ]
        );
        assert_eq!(
            invalid("[xdp]\n"),
            ["xdp: interfaces is required (the interfaces packets arrive on)"]
        );
        let ports = |p: &str| format!("[xdp]\ninterfaces = [\"eth0\"]\nsnat_ports = \"{p}\"\n");
        let config = valid(&ports(" 1024 - 65535"));
        assert_eq!(config.xdp.as_ref().expect("xdp").snat_ports, 1024..=65_535);
        for bad in ["1023-2000", "3000-2000", "20000", "a-b", "20000-70000"] {
            assert_eq!(
                invalid(&ports(bad)),
                [format!(
                    "xdp: snat_ports {bad:?} is not a port range FIRST-LAST with \
                     1024 <= FIRST <= LAST <= 65535"
                )]
            );
        }
    }
}
