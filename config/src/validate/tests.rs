//! Validation of whole config files: defaults, and every problem reported
//! in file order.

//! The helpers here (and their imports, as a prelude) serve the tests of
//! every validation module and of the file model.

pub(crate) use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
pub(crate) use std::time::Duration;

pub(crate) use ipnet::IpNet;

pub(crate) use super::*;
pub(crate) use crate::file::*;
pub(crate) use crate::model::*;
pub(crate) use crate::{from_toml_str, LoadError};

/// Parses TOML into the file model; the test TOML is always well-formed.
pub(crate) fn parse(text: &str) -> ConfigFile {
    toml::from_str(text).expect("test TOML parses")
}

/// Validates TOML that must be valid.
pub(crate) fn valid(text: &str) -> Config {
    match validate(&parse(text)) {
        Ok(config) => config,
        Err(errors) => panic!("expected a valid config, got {}", lines(&errors).join("\n")),
    }
}

/// Validates TOML that must be invalid; returns the printed errors.
pub(crate) fn invalid(text: &str) -> Vec<String> {
    match validate(&parse(text)) {
        Ok(config) => panic!("expected errors, got {config:?}"),
        Err(errors) => lines(&errors),
    }
}

pub(crate) fn lines(errors: &[ConfigError]) -> Vec<String> {
    errors.iter().map(ToString::to_string).collect()
}

/// A pool `p` with one member, for listeners to point at.
pub(crate) const POOL_P: &str = r#"
[[pool]]
name = "p"
[[pool.member]]
address = "10.0.0.1"
port = 80
"#;

/// A listener `name` on `bind` for pool `p`, followed by [`POOL_P`].
pub(crate) fn listeners(binds: &[(&str, &str)]) -> String {
    let mut text = String::new();
    for (name, bind) in binds {
        text.push_str(&format!(
            "[[listener]]\nname = \"{name}\"\nbind = \"{bind}\"\npool = \"p\"\n"
        ));
    }
    text + POOL_P
}

/// A valid listener with one extra `line` of settings.
pub(crate) fn listener_with(line: &str) -> String {
    format!("[[listener]]\nname = \"l\"\nbind = \"0.0.0.0:80\"\npool = \"p\"\n{line}\n{POOL_P}")
}

/// A pool `api` with one extra `line` of settings and the given members
/// (each a TOML body for `[[pool.member]]`).
pub(crate) fn pool_with(line: &str, members: &[&str]) -> String {
    let mut text = format!("[[pool]]\nname = \"api\"\n{line}\n");
    for member in members {
        text.push_str(&format!("[[pool.member]]\n{member}\n"));
    }
    text
}

/// A pool "api" with a `[pool.health]` section holding `lines`.
pub(crate) fn health_with(lines: &str) -> String {
    format!("[[pool]]\nname = \"api\"\n[pool.health]\n{lines}\n")
}

pub(crate) const FULL: &str = r#"
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
                max_connections: None,
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
                max_connections: None,
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
