//! From Services and Nodes to lbd listeners and pools: a pure function, so
//! every rule is unit-tested without an API server.
//!
//! For each Service of type LoadBalancer of our class and each TCP port:
//! a listener `k8s:<namespace>:<name>:<port>` on `<vip>:<port>` and a pool of
//! the same name whose members are the usable nodes' InternalIP at the
//! port's nodePort, round robin, with a TCP health check. With
//! `externalTrafficPolicy: Local` the check is HTTP `GET /healthz` on the
//! Service's healthCheckNodePort (kube-proxy answers 200 only on nodes with
//! a ready local endpoint).
//!
//! A UDP port is the same with a `protocol = "udp"` listener named
//! `k8s:<namespace>:<name>:<port>:udp` (a Service may have 53/TCP and
//! 53/UDP; TCP names stay as they were). Its pool is checked with
//! `udp_connect` (a datagram; an ICMP port unreachable fails it), unless
//! `externalTrafficPolicy: Local` gives it kube-proxy's healthz. SCTP is
//! not served.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Node, Service};
use lbd_config::file::{HealthSection, ListenerSection, MemberSection, PoolSection};
use lbd_config::Protocol;

use super::annotations;

/// Prefix of the listener and pool names lb-agent owns in lbd's config.
pub const NAME_PREFIX: &str = "k8s:";

/// Nodes with this label never get load-balancer traffic.
pub const EXCLUDE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

/// Which Services are ours and where their VIPs come from.
#[derive(Debug, Clone)]
pub struct Options {
    /// `spec.loadBalancerClass` of the Services to serve.
    pub class: String,
    /// Also serve Services with no `loadBalancerClass`.
    pub default_class: bool,
    pub vips: Vips,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vips {
    /// One address shared by every Service; ports must not collide.
    Shared(IpAddr),
    /// One address per Service, from this list.
    Range(Vec<IpAddr>),
}

/// `namespace/name` of a Service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Something a user must see on the Service (an Event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Event reason, e.g. `PortConflict`.
    pub reason: &'static str,
    pub message: String,
}

/// What became of one of our Services.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    /// The address it is served on (`None`: nothing could be served).
    pub vip: Option<IpAddr>,
    /// `ipMode: Proxy` in the status (PROXY protocol on a served TCP port).
    pub proxy_mode: bool,
    /// Ports served: (port, protocol as the Service spells it).
    pub ports: Vec<(i32, String)>,
    pub problems: Vec<Problem>,
    /// The Service is being deleted: render nothing, then drop the
    /// finalizer.
    pub deleting: bool,
}

/// Everything lb-agent wants in lbd, plus what to tell each Service.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rendered {
    pub listeners: Vec<ListenerSection>,
    pub pools: Vec<PoolSection>,
    pub services: BTreeMap<ServiceKey, Outcome>,
}

/// Whether `service` is a LoadBalancer Service lb-agent serves.
pub fn is_ours(service: &Service, options: &Options) -> bool {
    let Some(spec) = &service.spec else {
        return false;
    };
    spec.type_.as_deref() == Some("LoadBalancer")
        && match spec.load_balancer_class.as_deref() {
            Some(class) => class == options.class,
            None => options.default_class,
        }
}

pub fn key(service: &Service) -> ServiceKey {
    ServiceKey {
        namespace: service.metadata.namespace.clone().unwrap_or_default(),
        name: service.metadata.name.clone().unwrap_or_default(),
    }
}

/// Renders every Service of ours against the current nodes.
pub fn render(services: &[Service], nodes: &[Node], options: &Options) -> Rendered {
    let mut ours: Vec<&Service> = services.iter().filter(|s| is_ours(s, options)).collect();
    // Oldest first: on a shared VIP the older Service keeps a contested port.
    ours.sort_by_key(|s| (s.metadata.creation_timestamp.clone(), key(s)));
    let members = usable_nodes(nodes);
    let vips = assign_vips(&ours, &options.vips);
    let mut rendered = Rendered::default();
    let mut taken: HashSet<(IpAddr, i32, Protocol)> = HashSet::new();
    for service in ours {
        let key = key(service);
        let mut outcome = Outcome {
            deleting: service.metadata.deletion_timestamp.is_some(),
            ..Outcome::default()
        };
        if !outcome.deleting {
            render_service(
                service,
                &key,
                vips.get(&key).copied(),
                &members,
                &mut taken,
                &mut rendered,
                &mut outcome,
            );
        }
        rendered.services.insert(key, outcome);
    }
    rendered
}

fn render_service(
    service: &Service,
    key: &ServiceKey,
    vip: Option<IpAddr>,
    members: &[(String, IpAddr)],
    taken: &mut HashSet<(IpAddr, i32, Protocol)>,
    rendered: &mut Rendered,
    outcome: &mut Outcome,
) {
    let (settings, annotation_problems) = annotations::parse(service.metadata.annotations.as_ref());
    outcome
        .problems
        .extend(annotation_problems.into_iter().map(|message| Problem {
            reason: "InvalidAnnotation",
            message,
        }));
    let Some(vip) = vip else {
        outcome.problems.push(Problem {
            reason: "NoAddress",
            message: "no free address left in --vip-range".to_owned(),
        });
        return;
    };
    let spec = service.spec.clone().unwrap_or_default();
    let local = spec.external_traffic_policy.as_deref() == Some("Local");
    let health_port = spec.health_check_node_port.filter(|p| *p > 0);
    for port in spec.ports.iter().flatten() {
        let protocol = port.protocol.clone().unwrap_or_else(|| "TCP".to_owned());
        let listener_protocol = match protocol.as_str() {
            "TCP" => Protocol::Tcp,
            "UDP" => Protocol::Udp,
            _ => {
                outcome.problems.push(Problem {
                    reason: "UnsupportedProtocol",
                    message: format!(
                        "port {} is {protocol}; lbd serves TCP and UDP only",
                        port.port
                    ),
                });
                continue;
            }
        };
        let Some(node_port) = port.node_port.filter(|p| *p > 0) else {
            outcome.problems.push(Problem {
                reason: "NoNodePort",
                message: format!("port {} has no nodePort yet", port.port),
            });
            continue;
        };
        // A TCP and a UDP port of the same number do not collide.
        if !taken.insert((vip, port.port, listener_protocol)) {
            outcome.problems.push(Problem {
                reason: "PortConflict",
                message: format!(
                    "{vip}:{}/{protocol} is already used by an older Service",
                    port.port
                ),
            });
            continue;
        }
        let udp = listener_protocol == Protocol::Udp;
        if udp && settings.proxy_protocol.is_some() {
            outcome.problems.push(Problem {
                reason: "InvalidAnnotation",
                message: format!(
                    "{}proxy-protocol applies to TCP ports only; UDP port {} is served without it",
                    annotations::PREFIX,
                    port.port
                ),
            });
        }
        let name = object_name(key, port.port, listener_protocol);
        rendered.listeners.push(ListenerSection {
            name: Some(name.clone()),
            bind: Some(std::net::SocketAddr::new(vip, port.port as u16).to_string()),
            pool: Some(name.clone()),
            // lbd refuses PROXY protocol on UDP listeners.
            proxy_protocol: settings.proxy_protocol.clone().filter(|_| !udp),
            // The VIP may arrive on this host after lbd binds it.
            freebind: Some(true),
            protocol: udp.then(|| Protocol::Udp.name().to_owned()),
            ..ListenerSection::default()
        });
        let health = match (local, health_port) {
            (true, Some(_)) => Some(HealthSection {
                kind: Some("http".to_owned()),
                path: Some("/healthz".to_owned()),
                ..timings(&settings)
            }),
            // A TCP connect to a UDP nodePort would only ever fail: a
            // datagram that draws no ICMP port unreachable passes (what
            // Octavia's UDP-CONNECT monitor does).
            _ if udp => Some(HealthSection {
                kind: Some("udp_connect".to_owned()),
                ..timings(&settings)
            }),
            _ => Some(HealthSection {
                kind: Some("tcp".to_owned()),
                ..timings(&settings)
            }),
        };
        rendered.pools.push(PoolSection {
            name: Some(name),
            algorithm: Some(settings.algorithm.clone()),
            health,
            members: members
                .iter()
                .map(|(node, ip)| MemberSection {
                    address: Some(ip.to_string()),
                    port: Some(i64::from(node_port)),
                    name: Some(node.clone()),
                    monitor_port: health_port.filter(|_| local).map(i64::from),
                    ..MemberSection::default()
                })
                .collect(),
            ..PoolSection::default()
        });
        outcome.proxy_mode |= !udp && settings.proxy_protocol.is_some();
        outcome.ports.push((port.port, protocol));
    }
    if !outcome.ports.is_empty() {
        outcome.vip = Some(vip);
    }
}

fn timings(settings: &annotations::Settings) -> HealthSection {
    HealthSection {
        interval: Some(settings.interval.clone()),
        timeout: Some(settings.timeout.clone()),
        rise: Some(settings.rise),
        fall: Some(settings.fall),
        ..HealthSection::default()
    }
}

/// `k8s:<namespace>:<name>:<port>` for TCP (the name lb-agent always
/// used), `k8s:<namespace>:<name>:<port>:udp` for UDP: valid lbd names
/// (Kubernetes names are DNS labels; lbd names allow no `/`), unique when a
/// Service has the same port for both protocols.
pub fn object_name(key: &ServiceKey, port: i32, protocol: Protocol) -> String {
    let base = format!("{NAME_PREFIX}{}:{}:{port}", key.namespace, key.name);
    match protocol {
        Protocol::Tcp => base,
        Protocol::Udp => format!("{base}:{}", Protocol::Udp.name()),
    }
}

/// Nodes that may take traffic: Ready, schedulable, not excluded, with an
/// InternalIP. Returns (node name, InternalIP), sorted by name.
pub fn usable_nodes(nodes: &[Node]) -> Vec<(String, IpAddr)> {
    let mut usable: Vec<(String, IpAddr)> = nodes
        .iter()
        .filter(|n| n.metadata.deletion_timestamp.is_none())
        .filter(|n| {
            !n.metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key(EXCLUDE_LABEL))
        })
        .filter(|n| {
            !n.spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false)
        })
        .filter(|n| is_ready(n))
        .filter_map(|n| Some((n.metadata.name.clone()?, internal_ip(n)?)))
        .collect();
    usable.sort();
    usable
}

fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn internal_ip(node: &Node) -> Option<IpAddr> {
    node.status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .find(|a| a.type_ == "InternalIP")
        .and_then(|a| a.address.parse().ok())
}

/// The VIP of every Service (oldest first). With a range, a Service keeps
/// the address its status already shows when that address is still free,
/// so restarts of lb-agent do not move Services around.
fn assign_vips(services: &[&Service], vips: &Vips) -> BTreeMap<ServiceKey, IpAddr> {
    let mut assigned = BTreeMap::new();
    let range = match vips {
        Vips::Shared(vip) => {
            for s in services {
                assigned.insert(key(s), *vip);
            }
            return assigned;
        }
        Vips::Range(range) => range,
    };
    let mut used: BTreeSet<IpAddr> = BTreeSet::new();
    for s in services {
        if let Some(ip) = current_ingress_ip(s).filter(|ip| range.contains(ip)) {
            if used.insert(ip) {
                assigned.insert(key(s), ip);
            }
        }
    }
    for s in services {
        let key = key(s);
        if assigned.contains_key(&key) || s.metadata.deletion_timestamp.is_some() {
            continue;
        }
        if let Some(ip) = range.iter().find(|ip| !used.contains(ip)) {
            used.insert(*ip);
            assigned.insert(key, *ip);
        }
    }
    assigned
}

fn current_ingress_ip(service: &Service) -> Option<IpAddr> {
    service
        .status
        .as_ref()?
        .load_balancer
        .as_ref()?
        .ingress
        .as_ref()?
        .first()?
        .ip
        .as_ref()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn options(vips: Vips) -> Options {
        Options {
            class: "lbd.io/lbd".to_owned(),
            default_class: false,
            vips,
        }
    }

    fn shared() -> Options {
        options(Vips::Shared("10.0.0.100".parse().expect("ip")))
    }

    fn service(name: &str, created: &str, ports: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"namespace": "default", "name": name, "creationTimestamp": created},
            "spec": {"type": "LoadBalancer", "loadBalancerClass": "lbd.io/lbd", "ports": ports}
        }))
        .expect("service")
    }

    fn node(name: &str, ip: &str, ready: bool) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "status": {
                "addresses": [{"type": "Hostname", "address": name}, {"type": "InternalIP", "address": ip}],
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]
            }
        }))
        .expect("node")
    }

    fn web() -> Service {
        service(
            "web",
            "2026-01-01T00:00:00Z",
            json!([{"name": "http", "port": 8080, "nodePort": 31320, "protocol": "TCP"}]),
        )
    }

    #[test]
    fn a_service_becomes_a_listener_and_a_pool_of_ready_nodes() {
        let nodes = [
            node("node-a", "10.0.0.10", true),
            node("node-b", "10.0.0.8", true),
            node("node-c", "10.0.0.9", false),
        ];
        let r = render(&[web()], &nodes, &shared());
        assert_eq!(r.listeners.len(), 1);
        let l = &r.listeners[0];
        assert_eq!(l.name.as_deref(), Some("k8s:default:web:8080"));
        assert_eq!(l.bind.as_deref(), Some("10.0.0.100:8080"));
        assert_eq!(l.freebind, Some(true));
        let p = &r.pools[0];
        let members: Vec<(String, i64)> = p
            .members
            .iter()
            .map(|m| (m.address.clone().unwrap_or_default(), m.port.unwrap_or(0)))
            .collect();
        assert_eq!(
            members,
            [
                ("10.0.0.10".to_owned(), 31320),
                ("10.0.0.8".to_owned(), 31320)
            ]
        );
        assert_eq!(
            p.health.as_ref().and_then(|h| h.kind.as_deref()),
            Some("tcp")
        );
        let outcome = &r.services[&key(&web())];
        assert_eq!(outcome.vip, Some("10.0.0.100".parse().expect("ip")));
        assert_eq!(outcome.ports, [(8080, "TCP".to_owned())]);
        assert!(outcome.problems.is_empty());
    }

    #[test]
    fn excluded_unschedulable_and_addressless_nodes_are_left_out() {
        let mut excluded = node("x", "10.0.0.1", true);
        excluded.metadata.labels = Some([(EXCLUDE_LABEL.to_owned(), String::new())].into());
        let mut cordoned = node("y", "10.0.0.2", true);
        cordoned.spec = Some(k8s_openapi::api::core::v1::NodeSpec {
            unschedulable: Some(true),
            ..Default::default()
        });
        let mut no_ip = node("z", "10.0.0.3", true);
        if let Some(status) = no_ip.status.as_mut() {
            status.addresses = None;
        }
        let fine = node("w", "10.0.0.4", true);
        let usable = usable_nodes(&[excluded, cordoned, no_ip, fine]);
        assert_eq!(usable, [("w".to_owned(), "10.0.0.4".parse().expect("ip"))]);
    }

    #[test]
    fn other_classes_and_types_are_not_ours() {
        let mut other = web();
        other.spec.as_mut().expect("spec").load_balancer_class = Some("other".into());
        let mut classless = web();
        classless.spec.as_mut().expect("spec").load_balancer_class = None;
        let mut cluster_ip = web();
        cluster_ip.spec.as_mut().expect("spec").type_ = Some("ClusterIP".into());
        assert!(!is_ours(&other, &shared()));
        assert!(!is_ours(&classless, &shared()));
        assert!(!is_ours(&cluster_ip, &shared()));
        let default = Options {
            default_class: true,
            ..shared()
        };
        assert!(is_ours(&classless, &default));
    }

    #[test]
    fn local_traffic_policy_checks_health_check_node_port() {
        let mut s = web();
        let spec = s.spec.as_mut().expect("spec");
        spec.external_traffic_policy = Some("Local".into());
        spec.health_check_node_port = Some(32001);
        let r = render(&[s], &[node("a", "10.0.0.10", true)], &shared());
        let p = &r.pools[0];
        let h = p.health.as_ref().expect("health");
        assert_eq!(
            (h.kind.as_deref(), h.path.as_deref()),
            (Some("http"), Some("/healthz"))
        );
        assert_eq!(p.members[0].monitor_port, Some(32001));
        assert_eq!(p.members[0].port, Some(31320));
    }

    #[test]
    fn shared_vip_port_conflict_goes_to_the_younger_service() {
        let older = web();
        let younger = service(
            "api",
            "2026-02-01T00:00:00Z",
            json!([
                {"port": 8080, "nodePort": 30001, "protocol": "TCP"},
                {"port": 9090, "nodePort": 30002, "protocol": "TCP"},
                {"port": 9191, "nodePort": 30003, "protocol": "SCTP"}
            ]),
        );
        let r = render(
            &[younger.clone(), older],
            &[node("a", "10.0.0.10", true)],
            &shared(),
        );
        let names: Vec<_> = r.listeners.iter().filter_map(|l| l.name.clone()).collect();
        assert_eq!(names, ["k8s:default:web:8080", "k8s:default:api:9090"]);
        let outcome = &r.services[&key(&younger)];
        let reasons: Vec<_> = outcome.problems.iter().map(|p| p.reason).collect();
        assert_eq!(reasons, ["PortConflict", "UnsupportedProtocol"]);
        assert_eq!(
            outcome.problems[0].message,
            "10.0.0.100:8080/TCP is already used by an older Service"
        );
        assert_eq!(
            outcome.problems[1].message,
            "port 9191 is SCTP; lbd serves TCP and UDP only"
        );
        assert_eq!(outcome.ports, [(9090, "TCP".to_owned())]);
    }

    fn dns() -> Service {
        service(
            "dns",
            "2026-01-15T00:00:00Z",
            json!([
                {"name": "dns-tcp", "port": 53, "nodePort": 30053, "protocol": "TCP"},
                {"name": "dns-udp", "port": 53, "nodePort": 30054, "protocol": "UDP"}
            ]),
        )
    }

    #[test]
    fn udp_ports_become_udp_listeners_named_apart_from_tcp() {
        let nodes = [node("a", "10.0.0.10", true), node("b", "10.0.0.8", true)];
        let r = render(&[dns()], &nodes, &shared());
        let listeners: Vec<_> = r
            .listeners
            .iter()
            .map(|l| {
                (
                    l.name.as_deref().unwrap_or_default(),
                    l.bind.as_deref().unwrap_or_default(),
                    l.pool.as_deref().unwrap_or_default(),
                    l.protocol.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            listeners,
            [
                (
                    "k8s:default:dns:53",
                    "10.0.0.100:53",
                    "k8s:default:dns:53",
                    None
                ),
                (
                    "k8s:default:dns:53:udp",
                    "10.0.0.100:53",
                    "k8s:default:dns:53:udp",
                    Some("udp")
                ),
            ]
        );
        assert!(r.listeners.iter().all(|l| l.freebind == Some(true)));
        let udp = &r.pools[1];
        assert_eq!(udp.name.as_deref(), Some("k8s:default:dns:53:udp"));
        let members: Vec<_> = udp
            .members
            .iter()
            .map(|m| (m.address.as_deref().unwrap_or_default(), m.port))
            .collect();
        assert_eq!(
            members,
            [("10.0.0.10", Some(30054)), ("10.0.0.8", Some(30054))]
        );
        // No TCP connect check against a UDP nodePort: udp_connect; the
        // TCP pool keeps its tcp check.
        assert_eq!(
            udp.health.as_ref().and_then(|h| h.kind.as_deref()),
            Some("udp_connect")
        );
        assert_eq!(
            r.pools[0].health.as_ref().and_then(|h| h.kind.as_deref()),
            Some("tcp")
        );
        let outcome = &r.services[&key(&dns())];
        assert_eq!(
            outcome.ports,
            [(53, "TCP".to_owned()), (53, "UDP".to_owned())]
        );
        assert!(outcome.problems.is_empty(), "{:?}", outcome.problems);
        assert_eq!(outcome.vip, Some("10.0.0.100".parse().expect("ip")));
    }

    #[test]
    fn a_udp_only_service_is_served() {
        let s = service(
            "syslog",
            "2026-01-01T00:00:00Z",
            json!([{"port": 514, "nodePort": 30514, "protocol": "UDP"}]),
        );
        let r = render(
            std::slice::from_ref(&s),
            &[node("a", "10.0.0.10", true)],
            &shared(),
        );
        assert_eq!(r.listeners.len(), 1);
        assert_eq!(r.listeners[0].protocol.as_deref(), Some("udp"));
        let outcome = &r.services[&key(&s)];
        assert_eq!(outcome.vip, Some("10.0.0.100".parse().expect("ip")));
        assert_eq!(outcome.ports, [(514, "UDP".to_owned())]);
    }

    #[test]
    fn port_conflicts_are_per_protocol() {
        // web has 8080/TCP; a younger Service takes 8080/UDP (no conflict)
        // and a third, younger still, wants 8080/UDP too (conflict).
        let udp = service(
            "udp",
            "2026-02-01T00:00:00Z",
            json!([{"port": 8080, "nodePort": 30001, "protocol": "UDP"}]),
        );
        let late = service(
            "late",
            "2026-03-01T00:00:00Z",
            json!([
                {"port": 8080, "nodePort": 30002, "protocol": "UDP"},
                {"port": 8080, "nodePort": 30003, "protocol": "TCP"}
            ]),
        );
        let r = render(
            &[late.clone(), udp.clone(), web()],
            &[node("a", "10.0.0.10", true)],
            &shared(),
        );
        let names: Vec<_> = r.listeners.iter().filter_map(|l| l.name.clone()).collect();
        assert_eq!(names, ["k8s:default:web:8080", "k8s:default:udp:8080:udp"]);
        assert!(r.services[&key(&udp)].problems.is_empty());
        let problems: Vec<_> = r.services[&key(&late)]
            .problems
            .iter()
            .map(|p| (p.reason, p.message.as_str()))
            .collect();
        assert_eq!(
            problems,
            [
                (
                    "PortConflict",
                    "10.0.0.100:8080/UDP is already used by an older Service"
                ),
                (
                    "PortConflict",
                    "10.0.0.100:8080/TCP is already used by an older Service"
                ),
            ]
        );
        assert_eq!(r.services[&key(&late)].vip, None);
    }

    #[test]
    fn local_traffic_policy_checks_udp_ports_through_healthz() {
        let mut s = dns();
        let spec = s.spec.as_mut().expect("spec");
        spec.external_traffic_policy = Some("Local".into());
        spec.health_check_node_port = Some(32001);
        let r = render(&[s], &[node("a", "10.0.0.10", true)], &shared());
        let udp = &r.pools[1];
        let h = udp.health.as_ref().expect("health");
        assert_eq!(
            (h.kind.as_deref(), h.path.as_deref()),
            (Some("http"), Some("/healthz"))
        );
        assert_eq!(udp.members[0].monitor_port, Some(32001));
        assert_eq!(udp.members[0].port, Some(30054));
    }

    #[test]
    fn proxy_protocol_stays_off_udp_listeners() {
        let mut s = dns();
        s.metadata.annotations =
            Some([("lbd.io/proxy-protocol".to_owned(), "v1".to_owned())].into());
        let r = render(&[s.clone()], &[], &shared());
        let proxy: Vec<_> = r
            .listeners
            .iter()
            .map(|l| l.proxy_protocol.as_deref())
            .collect();
        assert_eq!(proxy, [Some("v1"), None]);
        let outcome = &r.services[&key(&s)];
        assert!(outcome.proxy_mode, "the TCP port has PROXY protocol");
        let reasons: Vec<_> = outcome.problems.iter().map(|p| p.reason).collect();
        assert_eq!(reasons, ["InvalidAnnotation"]);
        assert!(outcome.problems[0].message.contains("UDP port 53"));

        // UDP only: nothing carries a PROXY header, so ipMode stays VIP.
        let mut udp_only = service(
            "syslog",
            "2026-01-01T00:00:00Z",
            json!([{"port": 514, "nodePort": 30514, "protocol": "UDP"}]),
        );
        udp_only.metadata.annotations =
            Some([("lbd.io/proxy-protocol".to_owned(), "v2".to_owned())].into());
        let r = render(&[udp_only.clone()], &[], &shared());
        assert!(!r.services[&key(&udp_only)].proxy_mode);
        assert_eq!(r.listeners[0].proxy_protocol, None);
    }

    #[test]
    fn vip_range_is_stable_and_runs_out() {
        let range = Vips::Range(vec![
            "10.0.0.1".parse().expect("ip"),
            "10.0.0.2".parse().expect("ip"),
        ]);
        let mut a = web();
        // "web" already shows 10.0.0.2 in its status: it keeps it.
        a.status = Some(
            serde_json::from_value(json!({"loadBalancer": {"ingress": [{"ip": "10.0.0.2"}]}}))
                .expect("status"),
        );
        let b = service(
            "b",
            "2026-03-01T00:00:00Z",
            json!([{"port": 80, "nodePort": 30080}]),
        );
        let c = service(
            "c",
            "2026-04-01T00:00:00Z",
            json!([{"port": 81, "nodePort": 30081}]),
        );
        let r = render(&[a.clone(), b.clone(), c.clone()], &[], &options(range));
        assert_eq!(
            r.services[&key(&a)].vip,
            Some("10.0.0.2".parse().expect("ip"))
        );
        assert_eq!(
            r.services[&key(&b)].vip,
            Some("10.0.0.1".parse().expect("ip"))
        );
        assert_eq!(r.services[&key(&c)].vip, None);
        assert_eq!(r.services[&key(&c)].problems[0].reason, "NoAddress");
    }

    #[test]
    fn deleting_services_render_nothing() {
        let mut s = web();
        s.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            "2026-05-01T00:00:00Z".parse().expect("time"),
        ));
        let r = render(&[s.clone()], &[node("a", "10.0.0.10", true)], &shared());
        assert!(r.listeners.is_empty());
        assert!(r.services[&key(&s)].deleting);
    }

    #[test]
    fn annotations_reach_the_config() {
        let mut s = web();
        s.metadata.annotations = Some(
            [
                ("lbd.io/proxy-protocol".to_owned(), "v2".to_owned()),
                (
                    "lbd.io/algorithm".to_owned(),
                    "least_connections".to_owned(),
                ),
            ]
            .into(),
        );
        let r = render(&[s.clone()], &[], &shared());
        assert_eq!(r.listeners[0].proxy_protocol.as_deref(), Some("v2"));
        assert_eq!(r.pools[0].algorithm.as_deref(), Some("least_connections"));
        assert!(r.services[&key(&s)].proxy_mode);
    }

    #[test]
    fn rendered_sections_validate_in_lbd() {
        let mut local_dns = dns();
        local_dns.metadata.name = Some("dns-local".into());
        let spec = local_dns.spec.as_mut().expect("spec");
        spec.external_traffic_policy = Some("Local".into());
        spec.health_check_node_port = Some(32001);
        // 53/TCP and 53/UDP on one VIP, with and without health checks, and
        // PROXY protocol asked for on a UDP port.
        let mut annotated = service(
            "syslog",
            "2026-01-20T00:00:00Z",
            json!([{"port": 514, "nodePort": 30514, "protocol": "UDP"}]),
        );
        annotated.metadata.annotations =
            Some([("lbd.io/proxy-protocol".to_owned(), "v2".to_owned())].into());
        let range = Vips::Range(vec![
            "10.0.0.1".parse().expect("ip"),
            "10.0.0.2".parse().expect("ip"),
            "10.0.0.3".parse().expect("ip"),
            "10.0.0.4".parse().expect("ip"),
        ]);
        let r = render(
            &[web(), dns(), local_dns, annotated],
            &[node("a", "10.0.0.10", true)],
            &options(range),
        );
        assert_eq!(r.listeners.len(), 6);
        let file = lbd_config::ConfigFile {
            listeners: r.listeners,
            pools: r.pools,
            ..Default::default()
        };
        let validated = lbd_config::validate(&file);
        assert!(validated.is_ok(), "{validated:?}");
    }
}
