//! Validation, through whole config files: every error path and message.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;

use super::*;
use crate::file::*;
use crate::model::*;
use crate::{from_toml_str, LoadError};

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
    let config = valid(
        "[[listener]]\nname = \"p\"\nbind = \"0.0.0.0:80\"\npool = \"p\"\n[[pool]]\nname = \"p\"\n",
    );
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
    let text = listener_with(r#"allowed_cidrs = ["10.0.0.0/8", "10.0.0.0/33", "nope", "::/129"]"#);
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
    assert_eq!(config.pools.len(), Algorithm::ALL.len());
    for (pool, algorithm) in config.pools.iter_mut().zip(Algorithm::ALL) {
        pool.algorithm = algorithm;
    }
    config.global.drain_timeout = Duration::from_millis(1234);
    assert_eq!(validate(&ConfigFile::from(&config)), Ok(config));
}

#[test]
fn spellings_round_trip() {
    for algorithm in Algorithm::ALL {
        assert_eq!(
            fields::lookup(&Algorithm::ALL, Algorithm::name, Algorithm::name(algorithm)),
            Some(algorithm)
        );
    }
    for version in ProxyProtocol::ALL {
        assert_eq!(
            fields::lookup(
                &ProxyProtocol::ALL,
                ProxyProtocol::name,
                ProxyProtocol::name(version)
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
        errors[0].starts_with("pool \"api\": health: ca_file \"/nonexistent/lbd-test-ca.pem\": "),
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
    let unix = valid("[admin]\nbind = \"unix:/run/lbd.sock\"\nstats_bind = \"0.0.0.0:32700\"\n")
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
