//! From Octavia's v2 objects to lbd listeners and pools: a pure function,
//! so every mapping rule is unit-tested without an API server.
//!
//! What the amphora's HAProxy does with each field (see the README's table)
//! is what lbd is made to do (a UDP listener, which the amphora serves
//! with keepalived/LVS, is lbd's UDP proxy; its `timeout_client_data` is
//! the flows' `session_idle`). A listener lbd cannot serve exactly as
//! configured (TERMINATED_HTTPS, SCTP, L7 policies, inserted headers,
//! cookie persistence, re-encryption to members...) is not served at all:
//! it gets a [`Problem`] that lb-agent logs, rather than serving traffic
//! differently from what the user asked for. The heartbeat reports it with
//! the status `UNSUPPORTED`, which the health manager logs and leaves the
//! listener's operating status alone (never ONLINE); leaving it out
//! instead would make Octavia's listener count disagree and stop refreshing
//! the amphora's health, which ends in a failover of the whole amphora.
//!
//! Names in lbd: listener `octavia:<listener id>`, pool `octavia:<pool id>`
//! (a listener without a default pool gets an empty pool
//! `octavia:<listener id>:none`, so it accepts and resets like HAProxy's
//! frontend without a backend). Members carry their Octavia id in `id`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use lbd_config::file::{HealthSection, ListenerSection, MemberSection, PoolSection};
use lbd_config::ConfigFile;
use serde::Deserialize;

/// Prefix of the listener and pool names lb-agent owns in lbd's config.
pub const NAME_PREFIX: &str = "octavia:";

/// The amphora's `maxconn` when a listener's `connection_limit` is -1.
pub const DEFAULT_CONNECTION_LIMIT: i64 = 50_000;

/// The amphora's `retries 3` (with `option redispatch`).
const RETRIES: i64 = 3;

/// `{"id": ...}` references between objects.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct IdRef {
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LoadBalancer {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub vip_address: Option<String>,
    pub admin_state_up: bool,
    pub provisioning_status: String,
    #[serde(default)]
    pub updated_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Listener {
    pub id: String,
    /// `PENDING_DELETE` objects are read as gone.
    #[serde(default)]
    pub provisioning_status: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    pub protocol: String,
    pub protocol_port: u16,
    pub connection_limit: i64,
    pub admin_state_up: bool,
    #[serde(default)]
    pub default_pool_id: Option<String>,
    #[serde(default)]
    pub l7policies: Vec<IdRef>,
    #[serde(default)]
    pub insert_headers: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    pub timeout_client_data: Option<i64>,
    #[serde(default)]
    pub timeout_member_connect: Option<i64>,
    #[serde(default)]
    pub timeout_member_data: Option<i64>,
    #[serde(default)]
    pub allowed_cidrs: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SessionPersistence {
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Pool {
    pub id: String,
    /// `PENDING_DELETE` objects are read as gone.
    #[serde(default)]
    pub provisioning_status: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    pub protocol: String,
    pub lb_algorithm: String,
    #[serde(default)]
    pub session_persistence: Option<SessionPersistence>,
    pub admin_state_up: bool,
    #[serde(default)]
    pub healthmonitor_id: Option<String>,
    #[serde(default)]
    pub tls_enabled: bool,
    #[serde(default)]
    pub listeners: Vec<IdRef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Member {
    pub id: String,
    /// `PENDING_DELETE` objects are read as gone.
    #[serde(default)]
    pub provisioning_status: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    pub address: String,
    pub protocol_port: u16,
    pub weight: i64,
    #[serde(default)]
    pub backup: bool,
    pub admin_state_up: bool,
    #[serde(default)]
    pub monitor_address: Option<String>,
    #[serde(default)]
    pub monitor_port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct HealthMonitor {
    pub id: String,
    /// `PENDING_DELETE` objects are read as gone.
    #[serde(default)]
    pub provisioning_status: Option<String>,
    #[serde(rename = "type")]
    pub kind: String,
    /// Seconds.
    pub delay: i64,
    /// Seconds.
    pub timeout: i64,
    pub max_retries: i64,
    #[serde(default)]
    pub max_retries_down: Option<i64>,
    #[serde(default)]
    pub http_method: Option<String>,
    #[serde(default)]
    pub url_path: Option<String>,
    #[serde(default)]
    pub expected_codes: Option<String>,
    #[serde(default)]
    pub domain_name: Option<String>,
    pub admin_state_up: bool,
}

/// One load balancer and everything under it, as read from the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LbTree {
    pub lb: LoadBalancer,
    pub listeners: Vec<Listener>,
    pub pools: Vec<Pool>,
    /// Members by pool id.
    pub members: BTreeMap<String, Vec<Member>>,
    /// Health monitors by id.
    pub monitors: BTreeMap<String, HealthMonitor>,
}

/// How the agent places listeners.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Bind every listener here instead of the load balancer's VIP.
    pub bind_address: Option<IpAddr>,
}

/// Something lbd cannot do as configured, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `listener <id> (<name>)`, `pool <id>`...
    pub object: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.object, self.message)
    }
}

/// A served listener and what its heartbeat entry needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedListener {
    pub listener_id: String,
    /// The Octavia pool behind it, if it has one and the pool is enabled
    /// (a disabled pool is left out of the heartbeat: Octavia shows it
    /// OFFLINE).
    pub pool_id: Option<String>,
}

/// Everything lb-agent wants in lbd.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rendered {
    pub listeners: Vec<ListenerSection>,
    pub pools: Vec<PoolSection>,
    pub served: Vec<ServedListener>,
    /// Enabled listeners that are not served (see [`Problem`]).
    pub refused: Vec<String>,
    pub problems: Vec<Problem>,
}

/// lbd's name for an Octavia listener.
pub fn listener_name(listener_id: &str) -> String {
    format!("{NAME_PREFIX}{listener_id}")
}

/// lbd's name for an Octavia pool.
pub fn pool_name(pool_id: &str) -> String {
    format!("{NAME_PREFIX}{pool_id}")
}

/// Renders every load balancer followed.
pub fn render(trees: &[LbTree], options: &Options) -> Rendered {
    let mut out = Rendered::default();
    for tree in trees {
        render_lb(tree, options, &mut out);
    }
    out
}

fn render_lb(tree: &LbTree, options: &Options, out: &mut Rendered) {
    let lb = &tree.lb;
    if !lb.admin_state_up {
        // Nothing is served; the listeners are left out of the heartbeat.
        return;
    }
    let vip = match options.bind_address {
        Some(ip) => ip,
        None => match lb.vip_address.as_deref().map(str::parse::<IpAddr>) {
            Some(Ok(ip)) => ip,
            _ => {
                out.problems.push(Problem {
                    object: format!("load balancer {}", lb.id),
                    message: format!(
                        "no usable vip_address ({:?}); nothing is served",
                        lb.vip_address
                    ),
                });
                return;
            }
        },
    };
    for listener in &tree.listeners {
        if !listener.admin_state_up {
            continue;
        }
        match render_listener(tree, listener, vip) {
            Ok((section, pool, served)) => {
                out.listeners.push(section);
                out.pools.push(pool);
                out.served.push(served);
            }
            Err(message) => {
                out.refused.push(listener.id.clone());
                out.problems.push(Problem {
                    object: describe("listener", &listener.id, listener.name.as_deref()),
                    message: format!("{message}; the listener is not served"),
                });
            }
        }
    }
}

/// `rendered` without the listeners lbd would refuse next to `base` (the
/// rest of lbd's config): each listener is added in turn and kept only if
/// the config still validates, so one bad listener (a port another one
/// already binds, say) does not hold back every other change. A refused
/// listener becomes a [`Problem`] quoting lbd's reasons.
pub fn keep_valid(rendered: &Rendered, base: &ConfigFile) -> Rendered {
    if lbd_config::validate(base).is_err() {
        // Not ours to judge; pushing will report lbd's errors.
        return rendered.clone();
    }
    let mut out = Rendered {
        refused: rendered.refused.clone(),
        problems: rendered.problems.clone(),
        ..Default::default()
    };
    let mut config = base.clone();
    let rendered_listeners = rendered
        .listeners
        .iter()
        .zip(&rendered.pools)
        .zip(&rendered.served);
    for ((listener, pool), served) in rendered_listeners {
        let mut trial = config.clone();
        trial.listeners.push(listener.clone());
        trial.pools.push(pool.clone());
        match lbd_config::validate(&trial) {
            Ok(_) => {
                config = trial;
                out.listeners.push(listener.clone());
                out.pools.push(pool.clone());
                out.served.push(served.clone());
            }
            Err(errors) => {
                let reasons: Vec<String> = errors.iter().map(ToString::to_string).collect();
                out.refused.push(served.listener_id.clone());
                out.problems.push(Problem {
                    object: format!("listener {}", served.listener_id),
                    message: format!(
                        "lbd refuses it ({}); the listener is not served",
                        reasons.join("; ")
                    ),
                });
            }
        }
    }
    out
}

fn describe(kind: &str, id: &str, name: Option<&str>) -> String {
    match name {
        Some(name) if !name.is_empty() => format!("{kind} {id} ({name})"),
        _ => format!("{kind} {id}"),
    }
}

type RenderedListener = (ListenerSection, PoolSection, ServedListener);

fn render_listener(
    tree: &LbTree,
    listener: &Listener,
    vip: IpAddr,
) -> Result<RenderedListener, String> {
    let udp = match listener.protocol.as_str() {
        // HTTP and HTTPS (pass-through) are served as TCP, like the
        // amphora's `mode tcp` for HTTPS.
        "TCP" | "HTTP" | "HTTPS" => false,
        // The amphora's keepalived/LVS listeners: lbd's UDP proxy.
        "UDP" => true,
        other => {
            return Err(format!(
                "protocol {other} is not supported by lbd (TCP, HTTP and HTTPS as TCP, UDP)"
            ))
        }
    };
    if !listener.l7policies.is_empty() {
        return Err(format!(
            "{} L7 polic(ies) are not supported by lbd (an L4 proxy)",
            listener.l7policies.len()
        ));
    }
    if let Some(headers) = &listener.insert_headers {
        if !headers.is_empty() {
            let names: Vec<&str> = headers.keys().map(String::as_str).collect();
            return Err(format!(
                "insert_headers ({}) are not supported by lbd (an L4 proxy)",
                names.join(", ")
            ));
        }
    }
    let connection_limit = match listener.connection_limit {
        -1 => DEFAULT_CONNECTION_LIMIT,
        n if n >= 1 => n,
        n => return Err(format!("connection_limit {n} is not supported by lbd")),
    };
    let name = listener_name(&listener.id);
    let pool_section;
    let served_pool;
    let mut proxy_protocol = None;
    match listener.default_pool_id.as_deref() {
        None => {
            pool_section = PoolSection {
                name: Some(format!("{name}:none")),
                ..Default::default()
            };
            served_pool = None;
        }
        Some(pool_id) => {
            let pool = tree
                .pools
                .iter()
                .find(|p| p.id == pool_id)
                .ok_or_else(|| format!("default pool {pool_id} was not found"))?;
            let (section, proxy) = render_pool(tree, pool)
                .map_err(|message| format!("default pool {}: {message}", pool.id))?;
            proxy_protocol = proxy;
            served_pool = pool.admin_state_up.then(|| pool.id.clone());
            pool_section = section;
        }
    }
    let section = ListenerSection {
        name: Some(name),
        bind: Some(std::net::SocketAddr::new(vip, listener.protocol_port).to_string()),
        pool: pool_section.name.clone(),
        connection_limit: Some(connection_limit),
        allowed_cidrs: listener.allowed_cidrs.clone().unwrap_or_default(),
        // UDP has one idle timeout per flow: the client data timeout.
        client_idle: listener
            .timeout_client_data
            .and_then(millis)
            .filter(|_| !udp),
        member_connect: listener
            .timeout_member_connect
            .and_then(millis)
            .filter(|_| !udp),
        member_idle: listener
            .timeout_member_data
            .and_then(millis)
            .filter(|_| !udp),
        // Octavia's amphora HAProxy sets neither `timeout tunnel` nor the
        // half-closed timeouts.
        tunnel_idle: None,
        client_fin: None,
        member_fin: None,
        proxy_protocol,
        // The VIP may be held by keepalived on the other amphora.
        freebind: Some(true),
        fast_path: None,
        // Octavia has no hedged connects.
        kernel_relay: None,
        splice: None,
        connect_hedge: None,
        protocol: udp.then(|| "udp".to_owned()),
        session_idle: listener
            .timeout_client_data
            .and_then(millis)
            .filter(|_| udp),
    };
    Ok((
        section,
        pool_section,
        ServedListener {
            listener_id: listener.id.clone(),
            pool_id: served_pool,
        },
    ))
}

/// An Octavia timeout in milliseconds as an lbd duration (`None` for
/// unset or 0, which leaves lbd's default).
fn millis(ms: i64) -> Option<String> {
    (ms > 0).then(|| format!("{ms}ms"))
}

/// The lbd pool and the listener's `proxy_protocol` for an Octavia pool.
fn render_pool(tree: &LbTree, pool: &Pool) -> Result<(PoolSection, Option<String>), String> {
    let proxy_protocol = match pool.protocol.as_str() {
        "TCP" | "HTTP" | "HTTPS" | "UDP" => None,
        "PROXY" => Some("v1".to_owned()),
        "PROXYV2" => Some("v2".to_owned()),
        other => return Err(format!("protocol {other} is not supported by lbd")),
    };
    if pool.tls_enabled {
        return Err("tls_enabled (TLS to the members) is not supported by lbd".into());
    }
    let mut algorithm = match pool.lb_algorithm.as_str() {
        "ROUND_ROBIN" => "round_robin",
        "LEAST_CONNECTIONS" => "least_connections",
        "SOURCE_IP" => "source_ip",
        other => return Err(format!("lb_algorithm {other} is not supported by lbd")),
    };
    match pool.session_persistence.as_ref().map(|p| p.kind.as_str()) {
        None => {}
        // The amphora keeps a stick table on the source address; lbd's
        // source_ip (Maglev) keeps a client on one member as well.
        Some("SOURCE_IP") => algorithm = "source_ip",
        Some(other) => {
            return Err(format!(
                "session_persistence {other} is not supported by lbd (only SOURCE_IP)"
            ))
        }
    }
    let name = pool_name(&pool.id);
    if !pool.admin_state_up {
        // HAProxy's disabled backend: the listener accepts and resets.
        return Ok((
            PoolSection {
                name: Some(name),
                ..Default::default()
            },
            proxy_protocol,
        ));
    }
    // A monitor missing from the tree is being deleted: no checks.
    let health = match pool
        .healthmonitor_id
        .as_deref()
        .and_then(|id| tree.monitors.get(id))
    {
        Some(monitor) => render_monitor(monitor)?,
        None => None,
    };
    let members = tree
        .members
        .get(&pool.id)
        .map(|members| members.iter().map(render_member).collect())
        .unwrap_or_default();
    Ok((
        PoolSection {
            name: Some(name),
            algorithm: Some(algorithm.to_owned()),
            retries: Some(RETRIES),
            health,
            members,
            ..Default::default()
        },
        proxy_protocol,
    ))
}

fn render_member(member: &Member) -> MemberSection {
    MemberSection {
        address: Some(member.address.clone()),
        port: Some(i64::from(member.protocol_port)),
        weight: Some(member.weight),
        backup: member.backup.then_some(true),
        admin_state: (!member.admin_state_up).then(|| "maint".to_owned()),
        monitor_address: member.monitor_address.clone(),
        monitor_port: member.monitor_port.map(i64::from),
        id: Some(member.id.clone()),
        name: member.name.clone().filter(|n| !n.is_empty()),
        ..Default::default()
    }
}

/// lbd's `[pool.health]` for a health monitor. A disabled monitor means no
/// checks (members show `no check`, Octavia `NO_MONITOR`).
fn render_monitor(monitor: &HealthMonitor) -> Result<Option<HealthSection>, String> {
    if !monitor.admin_state_up {
        return Ok(None);
    }
    let kind = match monitor.kind.as_str() {
        "TCP" => "tcp",
        "HTTP" => "http",
        "HTTPS" => "https",
        "TLS-HELLO" => "tls_hello",
        "UDP-CONNECT" => "udp_connect",
        other => {
            return Err(format!(
                "health monitor {} of type {other} is not supported by lbd \
                 (TCP, HTTP, HTTPS, TLS-HELLO, UDP-CONNECT)",
                monitor.id
            ))
        }
    };
    let http = matches!(kind, "http" | "https");
    Ok(Some(HealthSection {
        kind: Some(kind.to_owned()),
        interval: Some(format!("{}s", monitor.delay)),
        timeout: Some(format!("{}s", monitor.timeout)),
        rise: Some(monitor.max_retries),
        fall: Some(monitor.max_retries_down.unwrap_or(3)),
        method: monitor.http_method.clone().filter(|_| http),
        path: monitor.url_path.clone().filter(|_| http),
        host: monitor.domain_name.clone().filter(|_| http),
        expected_codes: monitor.expected_codes.clone().filter(|_| http),
        // Octavia's HTTPS monitors do not verify the certificate: no
        // ca_file, which is lbd's "verify none".
        ..Default::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample<T: serde::de::DeserializeOwned>(file: &str, key: &str) -> T {
        let path = format!("{}/tests/data/octavia/{file}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).expect("sample");
        let value: serde_json::Value = serde_json::from_str(&text).expect("json");
        serde_json::from_value(value[key].clone()).expect("shape")
    }

    /// The captured samples: LB k8s-cp, listener k8s-api (:6443, HTTPS
    /// /readyz monitor, members weight 10/20/30) and tcp-8443 (SOURCE_IP).
    fn sample_tree() -> LbTree {
        let lbs: Vec<LoadBalancer> = sample("loadbalancers.json", "loadbalancers");
        let pools: Vec<Pool> = sample("pools.json", "pools");
        let monitors: Vec<HealthMonitor> = sample("healthmonitors.json", "healthmonitors");
        let mut members = BTreeMap::new();
        members.insert(pools[0].id.clone(), sample("pool1-members.json", "members"));
        members.insert(pools[1].id.clone(), sample("pool2-members.json", "members"));
        LbTree {
            lb: lbs[0].clone(),
            listeners: sample("listeners.json", "listeners"),
            pools,
            members,
            monitors: monitors.into_iter().map(|m| (m.id.clone(), m)).collect(),
        }
    }

    fn valid(rendered: &Rendered) -> lbd_config::Config {
        let file = lbd_config::ConfigFile {
            listeners: rendered.listeners.clone(),
            pools: rendered.pools.clone(),
            ..Default::default()
        };
        lbd_config::validate(&file).unwrap_or_else(|errors| {
            panic!(
                "{}",
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        })
    }

    #[test]
    fn samples_render_to_a_valid_config_with_every_field_mapped() {
        let tree = sample_tree();
        let out = render(std::slice::from_ref(&tree), &Options::default());
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        valid(&out);
        let api = &out.listeners[0];
        assert_eq!(
            api.name.as_deref(),
            Some("octavia:1107096f-289d-4b62-a168-9dc67609952a")
        );
        assert_eq!(api.bind.as_deref(), Some("203.0.113.10:6443"));
        assert_eq!(api.connection_limit, Some(DEFAULT_CONNECTION_LIMIT));
        assert_eq!(api.client_idle.as_deref(), Some("300000ms"));
        assert_eq!(api.member_connect.as_deref(), Some("5000ms"));
        assert_eq!(api.member_idle.as_deref(), Some("300000ms"));
        assert_eq!(api.freebind, Some(true));
        let pool = &out.pools[0];
        assert_eq!(
            pool.name.as_deref(),
            Some("octavia:26347bd8-172d-4df8-acdb-a4d83ef142cf")
        );
        assert_eq!(api.pool, pool.name);
        assert_eq!(pool.algorithm.as_deref(), Some("round_robin"));
        assert_eq!(pool.retries, Some(3));
        let weights: Vec<_> = pool.members.iter().map(|m| m.weight).collect();
        assert_eq!(weights, [Some(10), Some(20), Some(30)]);
        assert_eq!(
            pool.members[0].id.as_deref(),
            Some("9f25ca57-72d1-4183-bebe-b2a60c2f51ca")
        );
        assert_eq!(pool.members[0].name.as_deref(), Some("cp1"));
        let health = pool.health.as_ref().expect("monitor");
        assert_eq!(health.kind.as_deref(), Some("https"));
        assert_eq!(health.interval.as_deref(), Some("5s"));
        assert_eq!(health.timeout.as_deref(), Some("3s"));
        assert_eq!((health.rise, health.fall), (Some(3), Some(3)));
        assert_eq!(health.path.as_deref(), Some("/readyz"));
        assert_eq!(health.ca_file, None, "Octavia does not verify");
        assert_eq!(out.pools[1].algorithm.as_deref(), Some("source_ip"));
        assert_eq!(out.pools[1].health, None);
        assert_eq!(
            out.served[0],
            ServedListener {
                listener_id: "1107096f-289d-4b62-a168-9dc67609952a".into(),
                pool_id: Some("26347bd8-172d-4df8-acdb-a4d83ef142cf".into()),
            }
        );
        let bound = render(
            &[tree],
            &Options {
                bind_address: Some("127.0.0.9".parse().expect("ip")),
            },
        );
        assert_eq!(bound.listeners[1].bind.as_deref(), Some("127.0.0.9:8443"));
    }

    #[test]
    fn member_and_pool_fields() {
        let mut tree = sample_tree();
        let pool_id = tree.pools[0].id.clone();
        {
            let members = tree.members.get_mut(&pool_id).expect("members");
            members[0].admin_state_up = false;
            members[1].backup = true;
            members[1].monitor_address = Some("10.0.1.12".into());
            members[1].monitor_port = Some(10256);
            members[2].weight = 0;
        }
        tree.pools[0].protocol = "PROXYV2".into();
        tree.pools[1].protocol = "PROXY".into();
        tree.pools[0].lb_algorithm = "LEAST_CONNECTIONS".into();
        tree.pools[0].session_persistence = Some(SessionPersistence {
            kind: "SOURCE_IP".into(),
        });
        tree.listeners[1].connection_limit = 100;
        tree.listeners[1].allowed_cidrs = Some(vec!["192.0.2.0/24".into()]);
        let out = render(&[tree], &Options::default());
        valid(&out);
        let members = &out.pools[0].members;
        assert_eq!(members[0].admin_state.as_deref(), Some("maint"));
        assert_eq!(members[1].backup, Some(true));
        assert_eq!(members[1].monitor_address.as_deref(), Some("10.0.1.12"));
        assert_eq!(members[1].monitor_port, Some(10256));
        assert_eq!(members[2].weight, Some(0));
        assert_eq!(out.pools[0].algorithm.as_deref(), Some("source_ip"));
        assert_eq!(out.listeners[0].proxy_protocol.as_deref(), Some("v2"));
        assert_eq!(out.listeners[1].proxy_protocol.as_deref(), Some("v1"));
        assert_eq!(out.listeners[1].connection_limit, Some(100));
        assert_eq!(out.listeners[1].allowed_cidrs, ["192.0.2.0/24"]);
    }

    #[test]
    fn disabled_objects() {
        let mut tree = sample_tree();
        tree.listeners[1].admin_state_up = false;
        tree.pools[0].admin_state_up = false;
        let out = render(std::slice::from_ref(&tree), &Options::default());
        valid(&out);
        assert!(out.problems.is_empty());
        // The disabled listener is not served; the disabled pool is an
        // empty pool (connections reset) left out of the heartbeat.
        assert_eq!(out.listeners.len(), 1);
        assert!(out.pools[0].members.is_empty());
        assert_eq!(out.served[0].pool_id, None);
        // A disabled monitor: no checks.
        tree.pools[0].admin_state_up = true;
        tree.monitors
            .values_mut()
            .for_each(|m| m.admin_state_up = false);
        let out = render(std::slice::from_ref(&tree), &Options::default());
        assert_eq!(out.pools[0].health, None);
        // A disabled load balancer: nothing.
        tree.lb.admin_state_up = false;
        assert_eq!(render(&[tree], &Options::default()), Rendered::default());
    }

    #[test]
    fn a_listener_without_default_pool_accepts_and_resets() {
        let mut tree = sample_tree();
        tree.listeners[0].default_pool_id = None;
        let out = render(&[tree], &Options::default());
        valid(&out);
        assert_eq!(
            out.listeners[0].pool.as_deref(),
            Some("octavia:1107096f-289d-4b62-a168-9dc67609952a:none")
        );
        assert!(out.pools[0].members.is_empty());
        assert_eq!(out.served[0].pool_id, None);
    }

    #[test]
    fn unsupported_features_refuse_the_listener_with_a_reason() {
        type Edit = fn(&mut LbTree);
        let cases: [(Edit, &str); 9] = [
            (|t| t.listeners[0].protocol = "SCTP".into(), "protocol SCTP"),
            (
                |t| t.listeners[0].protocol = "TERMINATED_HTTPS".into(),
                "protocol TERMINATED_HTTPS",
            ),
            (
                |t| t.listeners[0].l7policies = vec![IdRef { id: "x".into() }],
                "L7 polic",
            ),
            (
                |t| {
                    t.listeners[0].insert_headers =
                        Some([("X-Forwarded-For".to_owned(), "true".into())].into())
                },
                "insert_headers (X-Forwarded-For)",
            ),
            (
                |t| {
                    t.pools[0].session_persistence = Some(SessionPersistence {
                        kind: "HTTP_COOKIE".into(),
                    })
                },
                "session_persistence HTTP_COOKIE",
            ),
            (
                |t| t.pools[0].lb_algorithm = "SOURCE_IP_PORT".into(),
                "lb_algorithm SOURCE_IP_PORT",
            ),
            (|t| t.pools[0].tls_enabled = true, "tls_enabled"),
            (
                |t| t.monitors.values_mut().for_each(|m| m.kind = "PING".into()),
                "type PING",
            ),
            (
                |t| t.listeners[0].connection_limit = 0,
                "connection_limit 0",
            ),
        ];
        for (edit, expected) in cases {
            let mut tree = sample_tree();
            edit(&mut tree);
            let out = render(&[tree], &Options::default());
            assert_eq!(out.problems.len(), 1, "{expected}: {:?}", out.problems);
            let problem = out.problems[0].to_string();
            assert!(
                problem.starts_with("listener 1107096f-289d-4b62-a168-9dc67609952a (k8s-api): ")
                    && problem.contains(expected)
                    && problem.ends_with("the listener is not served"),
                "{problem}"
            );
            assert_eq!(out.refused, ["1107096f-289d-4b62-a168-9dc67609952a"]);
            // The other listener is still served.
            assert_eq!(out.listeners.len(), 1, "{expected}");
            assert_eq!(
                out.served[0].listener_id,
                "c98b32e5-7856-4706-a219-6a807e647fca"
            );
            valid(&out);
        }
    }

    #[test]
    fn udp_listeners_pools_and_udp_connect_monitors() {
        let mut tree = sample_tree();
        tree.listeners[0].protocol = "UDP".into();
        tree.listeners[0].timeout_client_data = Some(30_000);
        tree.listeners[0].timeout_member_connect = Some(5_000);
        tree.listeners[0].timeout_member_data = Some(50_000);
        let pool = tree.listeners[0].default_pool_id.clone().expect("pool");
        for p in tree.pools.iter_mut().filter(|p| p.id == pool) {
            p.protocol = "UDP".into();
            let monitor = p.healthmonitor_id.clone().expect("monitor");
            if let Some(m) = tree.monitors.get_mut(&monitor) {
                m.kind = "UDP-CONNECT".into();
            }
        }
        let out = render(&[tree], &Options::default());
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        let config = valid(&out);
        let udp = config
            .listeners
            .iter()
            .find(|l| l.name.ends_with("1107096f-289d-4b62-a168-9dc67609952a"))
            .expect("the UDP listener is served");
        assert_eq!(udp.protocol, lbd_config::Protocol::Udp);
        assert_eq!(udp.session_idle, std::time::Duration::from_secs(30));
        let udp_pool = config
            .pools
            .iter()
            .find(|p| p.name == udp.pool)
            .expect("pool");
        assert_eq!(
            udp_pool.health.as_ref().map(|h| h.kind),
            Some(lbd_config::CheckKind::UdpConnect)
        );
        // The TCP listener is untouched.
        let tcp = config
            .listeners
            .iter()
            .find(|l| l.name.ends_with("c98b32e5-7856-4706-a219-6a807e647fca"))
            .expect("tcp");
        assert_eq!(tcp.protocol, lbd_config::Protocol::Tcp);
    }

    #[test]
    fn a_listener_lbd_refuses_is_left_out_alone() {
        let tree = sample_tree();
        let out = render(
            &[tree],
            &Options {
                bind_address: Some("127.0.0.9".parse().expect("ip")),
            },
        );
        // lbd already binds the first listener's address:port elsewhere.
        let base = ConfigFile {
            listeners: vec![ListenerSection {
                name: Some("static".into()),
                bind: Some("127.0.0.9:6443".into()),
                pool: Some("static".into()),
                ..Default::default()
            }],
            pools: vec![PoolSection {
                name: Some("static".into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let kept = keep_valid(&out, &base);
        assert_eq!(kept.listeners.len(), 1);
        assert_eq!(
            kept.served[0].listener_id,
            "c98b32e5-7856-4706-a219-6a807e647fca"
        );
        assert_eq!(kept.refused, ["1107096f-289d-4b62-a168-9dc67609952a"]);
        let problem = kept.problems[0].to_string();
        assert!(
            problem.contains("lbd refuses it") && problem.contains("127.0.0.9:6443"),
            "{problem}"
        );
        // Nothing to refuse: unchanged.
        assert_eq!(keep_valid(&out, &ConfigFile::default()), out);
    }
}
