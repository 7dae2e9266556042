//! `[xdp]`, and what listeners with `fast_path = "xdp"` need of the rest
//! of the config.

use std::collections::HashSet;
use std::net::IpAddr;
use std::ops::RangeInclusive;

use super::fields::{ConfigError, Scope};
use crate::file::XdpSection;
use crate::model::{Algorithm, FastPath, Listener, Pool, Xdp, DEFAULT_SNAT_PORTS};

/// Longest Linux interface name (IFNAMSIZ - 1).
const MAX_IFNAME: usize = 15;

/// Checks `[xdp]`; `None` if anything in it is wrong (errors reported).
pub(super) fn validate_xdp(section: &XdpSection, errors: &mut Vec<ConfigError>) -> Option<Xdp> {
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
pub(super) fn fast_path_rules(
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
        // The kernel program only forwards packets: it cannot close a
        // half-closed connection early.
        for (field, value) in [
            ("client_fin", listener.client_fin),
            ("member_fin", listener.member_fin),
        ] {
            if value.is_some() {
                scope.error(format!("{field} is not supported with fast_path \"xdp\""));
            }
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
        // The kernel program balances on a fixed table: it can neither
        // hold a member to a limit nor ramp a weight.
        if let Some(pool) = pool.filter(|p| p.has_limits()) {
            scope.error(format!(
                "pool {:?} has members with max_connections, which fast_path \"xdp\" cannot \
                 enforce",
                pool.name
            ));
        }
        if let Some(pool) = pool.filter(|p| p.slow_start.is_some()) {
            scope.error(format!(
                "pool {:?} has slow_start, which fast_path \"xdp\" does not do",
                pool.name
            ));
        }
        // Flows balanced in the kernel are not lbd's connections to cut.
        for (field, _) in pool
            .iter()
            .flat_map(|p| [("on_down", p.on_down), ("on_maint", p.on_maint)])
            .filter(|(_, policy)| policy.shuts_down())
        {
            scope.error(format!(
                "pool {:?} has {field} = \"shutdown_sessions\", which fast_path \"xdp\" does \
                 not do",
                listener.pool
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::validate::tests::*;

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
             client_fin = \"1s\"\nmember_fin = \"1s\"\ntunnel_idle = \"1h\"\n\
             [[pool]]\nname = \"p\"\nalgorithm = \"least_connections\"\n\
             [[pool.member]]\naddress = \"::1\"\nport = 80\n"
        );
        assert_eq!(
            invalid(&unsupported),
            [
                "listener \"l\": proxy_protocol is not supported with fast_path \"xdp\"",
                "listener \"l\": allowed_cidrs is not supported with fast_path \"xdp\"",
                "listener \"l\": client_fin is not supported with fast_path \"xdp\"",
                "listener \"l\": member_fin is not supported with fast_path \"xdp\"",
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
        let limited = format!(
            "{xdp}[[listener]]\nname = \"l\"\nbind = \"10.0.0.1:80\"\npool = \"p\"\n\
             fast_path = \"xdp\"\n[[pool]]\nname = \"p\"\nslow_start = \"10s\"\n\
             on_maint = \"shutdown_sessions\"\n\
             [[pool.member]]\naddress = \"10.0.0.2\"\nport = 80\nmax_connections = 5\n"
        );
        assert_eq!(
            invalid(&limited),
            [
                "listener \"l\": pool \"p\" has members with max_connections, which fast_path \
                 \"xdp\" cannot enforce",
                "listener \"l\": pool \"p\" has slow_start, which fast_path \"xdp\" does not do",
                "listener \"l\": pool \"p\" has on_maint = \"shutdown_sessions\", which \
                 fast_path \"xdp\" does not do",
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
