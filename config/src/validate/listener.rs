//! `[[listener]]`: names, binds (unique, not overlapping), the pool
//! reference and the per-listener settings.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use super::fields::{
    binds_overlap, choice_field, duration_field, expected_list, lookup, optional_duration,
    socket_addr_field, ConfigError, Names, Scope,
};
use super::hedge::hedge_field;
use crate::file::ListenerSection;
use crate::model::{
    FastPath, Listener, Protocol, ProxyProtocol, DEFAULT_CLIENT_IDLE, DEFAULT_CONNECTION_LIMIT,
    DEFAULT_MEMBER_CONNECT, DEFAULT_MEMBER_IDLE, DEFAULT_SESSION_IDLE,
};

/// Largest accepted `connection_limit`.
pub const MAX_CONNECTION_LIMIT: u32 = 10_000_000;

/// Checks every `[[listener]]`; returns those that are fully valid.
pub(super) fn validate_listeners(
    sections: &[ListenerSection],
    pool_names: &HashSet<&str>,
    errors: &mut Vec<ConfigError>,
) -> Vec<Listener> {
    let names = Names::check("listener", sections.iter().map(|l| l.name.as_deref()));
    // Valid binds of earlier listeners, with their index, for conflict
    // checks. A TCP and a UDP listener may share an address and port.
    let mut binds: Vec<(SocketAddr, usize)> = Vec::new();
    let mut udp_binds: Vec<(SocketAddr, usize)> = Vec::new();
    let mut listeners = Vec::new();
    for (index, section) in sections.iter().enumerate() {
        let mut scope = Scope::new(names.label(index), errors);
        let name = names.take(index, &mut scope);
        let bind = bind_field(&mut scope, section.bind.as_deref());
        let protocol = protocol_field(&mut scope, section.protocol.as_deref());
        if let (Some(bind), Some(protocol)) = (bind, protocol) {
            let earlier = match protocol {
                Protocol::Tcp => &mut binds,
                Protocol::Udp => &mut udp_binds,
            };
            if let Some(reason) = bind_conflict(bind, earlier, &names) {
                scope.error(reason);
            }
            earlier.push((bind, index));
        }
        let Some(protocol) = protocol else {
            continue;
        };
        if let Some(listener) =
            validate_listener(&mut scope, section, name, bind, protocol, pool_names)
        {
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
    protocol: Protocol,
    pool_names: &HashSet<&str>,
) -> Option<Listener> {
    if protocol == Protocol::Udp {
        refuse_tcp_only_settings(scope, section);
    } else if section.session_idle.is_some() {
        scope.error("session_idle applies to protocol = \"udp\" listeners only (TCP has client_idle and member_idle)");
    }
    let session_idle = duration_field(
        scope,
        "session_idle",
        section.session_idle.as_deref(),
        DEFAULT_SESSION_IDLE,
    );
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
    let tunnel_idle = optional_duration(scope, "tunnel_idle", &section.tunnel_idle);
    let client_fin = optional_duration(scope, "client_fin", &section.client_fin);
    let member_fin = optional_duration(scope, "member_fin", &section.member_fin);
    let proxy_protocol = proxy_protocol_field(scope, section.proxy_protocol.as_deref());
    let fast_path = fast_path_field(scope, section.fast_path.as_deref());
    let connect_hedge = hedge_field(scope, section.connect_hedge.as_deref());
    Some(Listener {
        name: name?,
        bind: bind?,
        pool: pool?,
        connection_limit: connection_limit?,
        allowed_cidrs: allowed_cidrs?,
        client_idle: client_idle?,
        member_connect: member_connect?,
        member_idle: member_idle?,
        tunnel_idle: tunnel_idle?,
        client_fin: client_fin?,
        member_fin: member_fin?,
        proxy_protocol: proxy_protocol?,
        freebind: section.freebind.unwrap_or(false),
        fast_path: fast_path?,
        kernel_relay: section.kernel_relay.unwrap_or(false),
        splice: section.splice.unwrap_or(false),
        connect_hedge: connect_hedge?,
        protocol,
        session_idle: session_idle?,
    })
}

/// `protocol`: absent (`tcp`), `"tcp"` or `"udp"`.
fn protocol_field(scope: &mut Scope, value: Option<&str>) -> Option<Protocol> {
    choice_field(
        scope,
        "protocol",
        value,
        &Protocol::ALL,
        Protocol::name,
        Protocol::Tcp,
    )
}

/// A UDP listener refuses what only means something for TCP connections,
/// each with its reason, instead of ignoring it.
fn refuse_tcp_only_settings(scope: &mut Scope, s: &ListenerSection) {
    let set = [
        (
            "proxy_protocol",
            s.proxy_protocol.is_some(),
            "a PROXY header opens a TCP stream",
        ),
        (
            "kernel_relay",
            s.kernel_relay == Some(true),
            "the kernel relay joins TCP sockets",
        ),
        ("splice", s.splice == Some(true), "splice moves TCP streams"),
        (
            "connect_hedge",
            s.connect_hedge.is_some(),
            "UDP has no connect to hedge",
        ),
        ("tunnel_idle", s.tunnel_idle.is_some(), "use session_idle"),
        ("client_idle", s.client_idle.is_some(), "use session_idle"),
        ("member_idle", s.member_idle.is_some(), "use session_idle"),
        (
            "member_connect",
            s.member_connect.is_some(),
            "UDP has no connect",
        ),
        ("client_fin", s.client_fin.is_some(), "UDP has no FIN"),
        ("member_fin", s.member_fin.is_some(), "UDP has no FIN"),
        (
            "fast_path",
            s.fast_path
                .as_deref()
                .is_some_and(|f| f != FastPath::None.name()),
            "the XDP fast path balances TCP only",
        ),
    ];
    for (field, given, why) in set {
        if given {
            scope.error(format!(
                "{field} is not supported with protocol = \"udp\" ({why})"
            ));
        }
    }
}

/// `fast_path`: absent, `"none"` or `"xdp"`.
fn fast_path_field(scope: &mut Scope, value: Option<&str>) -> Option<FastPath> {
    choice_field(
        scope,
        "fast_path",
        value,
        &FastPath::ALL,
        FastPath::name,
        FastPath::None,
    )
}

/// `bind`: required `addr:port` with a non-zero port.
fn bind_field(scope: &mut Scope, value: Option<&str>) -> Option<SocketAddr> {
    let text = scope.required("bind", value)?;
    socket_addr_field(scope, "bind", text)
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
    match lookup(&ProxyProtocol::ALL, ProxyProtocol::name, text) {
        Some(version) => Some(Some(version)),
        None => {
            scope.error(format!(
                "proxy_protocol {text:?} is not valid (expected {}; leave it out for none)",
                expected_list(&ProxyProtocol::ALL, ProxyProtocol::name)
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::validate::tests::*;

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
    fn kernel_relay_is_off_unless_asked() {
        assert!(!valid(&listener_with("")).listeners[0].kernel_relay);
        assert!(valid(&listener_with("kernel_relay = true")).listeners[0].kernel_relay);
    }

    #[test]
    fn udp_listeners_and_session_idle() {
        let tcp = valid(&listener_with(""));
        assert_eq!(tcp.listeners[0].protocol, Protocol::Tcp);
        let udp = valid(&listener_with("protocol = \"udp\""));
        assert_eq!(udp.listeners[0].protocol, Protocol::Udp);
        assert_eq!(udp.listeners[0].session_idle, DEFAULT_SESSION_IDLE);
        let short = valid(&listener_with("protocol = \"udp\"\nsession_idle = \"5s\""));
        assert_eq!(short.listeners[0].session_idle.as_secs(), 5);
        let errors = invalid(&listener_with("protocol = \"sctp\""));
        assert!(
            errors[0].contains("protocol \"sctp\" is not valid (expected"),
            "{errors:?}"
        );
        let errors = invalid(&listener_with("session_idle = \"5s\""));
        assert!(
            errors[0].contains("session_idle applies to protocol = \"udp\""),
            "{errors:?}"
        );
        for line in [
            "proxy_protocol = \"v2\"",
            "splice = true",
            "kernel_relay = true",
            "client_idle = \"5s\"",
            "fast_path = \"xdp\"",
            "connect_hedge = \"10ms\"",
        ] {
            let errors = invalid(&listener_with(&format!("protocol = \"udp\"\n{line}")));
            let field = line.split(' ').next().unwrap_or_default();
            assert!(
                errors
                    .iter()
                    .any(|e| e
                        .contains(&format!("{field} is not supported with protocol = \"udp\""))),
                "{line}: {errors:?}"
            );
        }
    }

    #[test]
    fn a_tcp_and_a_udp_listener_share_a_port() {
        let both = format!(
            "[[listener]]\nname = \"dns-tcp\"\nbind = \"0.0.0.0:53\"\npool = \"p\"\n\
             [[listener]]\nname = \"dns-udp\"\nbind = \"0.0.0.0:53\"\npool = \"p\"\nprotocol = \"udp\"\n{POOL_P}"
        );
        assert_eq!(valid(&both).listeners.len(), 2);
        let twice = both.replace(
            "name = \"dns-tcp\"",
            "name = \"dns-tcp\"\nprotocol = \"udp\"",
        );
        let errors = invalid(&twice);
        assert!(
            errors
                .iter()
                .any(|e| e.contains("bind 0.0.0.0:53 is already used")),
            "{errors:?}"
        );
    }

    #[test]
    fn splice_is_off_unless_asked() {
        assert!(!valid(&listener_with("")).listeners[0].splice);
        assert!(valid(&listener_with("splice = true")).listeners[0].splice);
        let err = from_toml_str(&listener_with("splice = \"auto\""), "lbd.toml")
            .expect_err("not a boolean")
            .to_string();
        assert!(err.contains("splice"), "{err}");
    }

    #[test]
    fn tunnel_and_half_closed_timeouts() {
        let config = valid(&listener_with(
            "client_idle = \"30s\"\ntunnel_idle = \"1h\"\nclient_fin = \"1s\"\nmember_fin = \"250ms\"",
        ));
        let l = &config.listeners[0];
        assert_eq!(l.client_idle, Duration::from_secs(30));
        assert_eq!(l.tunnel_idle, Some(Duration::from_secs(3600)));
        assert_eq!(l.client_fin, Some(Duration::from_secs(1)));
        assert_eq!(l.member_fin, Some(Duration::from_millis(250)));
        // Through the file shape and back.
        assert_eq!(validate(&ConfigFile::from(&config)), Ok(config));

        // Absent: none of them, and the file shape leaves them out.
        let plain = valid(&listener_with(""));
        let l = &plain.listeners[0];
        assert_eq!(
            (l.tunnel_idle, l.client_fin, l.member_fin),
            (None, None, None)
        );
        let section = ConfigFile::from(&plain).listeners.remove(0);
        assert_eq!(
            (section.tunnel_idle, section.client_fin, section.member_fin),
            (None, None, None)
        );

        assert_eq!(
            invalid(&listener_with(
                "tunnel_idle = \"0s\"\nclient_fin = \"soon\"\nmember_fin = \"31days\""
            )),
            [
                "listener \"l\": tunnel_idle \"0s\" must be greater than zero",
                "listener \"l\": client_fin \"soon\" is not a duration (e.g. \"30s\", \"500ms\", \
                 \"2m\"): expected number at 0",
                "listener \"l\": member_fin \"31days\" is too long (at most 30days)",
            ]
        );
        for field in ["tunnel_idle", "client_fin", "member_fin"] {
            assert_eq!(
                invalid(&listener_with(&format!("{field} = \"0ms\""))),
                [format!(
                    "listener \"l\": {field} \"0ms\" must be greater than zero"
                )]
            );
        }
    }
}
