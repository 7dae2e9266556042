//! `[[stats_socket]]`: unix or TCP sockets speaking HAProxy's CLI.

use std::collections::HashSet;
use std::net::SocketAddr;

use super::fields::{
    binds_overlap, duration_field, expected_list, lookup, socket_addr_field, ConfigError, Scope,
};
use crate::file::StatsSocketSection;
use crate::model::{
    Admin, AdminBind, CliLevel, Listener, StatsAddress, StatsSocket, DEFAULT_CLI_TIMEOUT,
    MAX_UNIX_PATH,
};

/// Checks every `[[stats_socket]]` (a TCP one against the listeners and
/// the admin binds too); the valid ones, in order.
pub(super) fn validate_stats_sockets(
    sections: &[StatsSocketSection],
    listeners: &[Listener],
    admin: Option<&Admin>,
    errors: &mut Vec<ConfigError>,
) -> Vec<StatsSocket> {
    let mut seen: HashSet<StatsAddress> = HashSet::new();
    let mut tcp: Vec<SocketAddr> = Vec::new();
    let mut valid = Vec::new();
    for (i, section) in sections.iter().enumerate() {
        let mut scope = Scope::new(format!("stats_socket #{}", i + 1), errors);
        let Some(socket) = validate_one(section, &mut scope) else {
            continue;
        };
        if let StatsAddress::Tcp(addr) = socket.address {
            if let Some(other) = tcp.iter().find(|b| **b != addr && binds_overlap(**b, addr)) {
                scope.error(format!(
                    "bind {addr} clashes with another stats_socket on {other}"
                ));
                continue;
            }
            if let Some(clash) = clash(addr, listeners, admin) {
                scope.error(format!("bind {addr} clashes with {clash}"));
                continue;
            }
            tcp.push(addr);
        }
        if seen.insert(socket.address.clone()) {
            valid.push(socket);
        } else {
            let field = match socket.address {
                StatsAddress::Unix(_) => "path",
                StatsAddress::Tcp(_) => "bind",
            };
            scope.error(format!(
                "{field} \"{}\" is used by another stats_socket",
                socket.address
            ));
        }
    }
    valid
}

/// What else listens where a TCP stats socket would.
fn clash(addr: SocketAddr, listeners: &[Listener], admin: Option<&Admin>) -> Option<String> {
    let same = |b: SocketAddr| b == addr || binds_overlap(b, addr);
    if let Some(l) = listeners.iter().find(|l| same(l.bind)) {
        return Some(format!("listener {:?} on {}", l.name, l.bind));
    }
    let admin = admin?;
    if let AdminBind::Tcp(b) = admin.bind {
        if same(b) {
            return Some(format!("the admin bind {b}"));
        }
    }
    admin
        .stats_bind
        .filter(|b| same(*b))
        .map(|b| format!("the admin stats_bind {b}"))
}

/// Where the socket listens: exactly one of `path` and `bind`.
fn address(section: &StatsSocketSection, scope: &mut Scope) -> Option<StatsAddress> {
    match (section.path.as_deref(), section.bind.as_deref()) {
        (Some(_), Some(_)) => {
            scope.error(
                "has both path and bind; give one (path: a unix socket, bind: a TCP address)",
            );
            None
        }
        (None, None) | (Some(""), None) => {
            scope.error(
                "path is missing (the unix socket's path, e.g. \"/run/lbd/stats.sock\", or \
                 bind: a TCP address, e.g. \"127.0.0.1:9999\")",
            );
            None
        }
        (Some(p), None) if p.len() > MAX_UNIX_PATH => {
            scope.error(format!(
                "path {p:?} is {} bytes long; a unix socket path has at most {MAX_UNIX_PATH}",
                p.len()
            ));
            None
        }
        (Some(p), None) if p.contains('\0') => {
            scope.error(format!("path {p:?} contains a NUL byte"));
            None
        }
        (Some(p), None) => Some(StatsAddress::Unix(p.into())),
        (None, Some(text)) => socket_addr_field(scope, "bind", text).map(StatsAddress::Tcp),
    }
}

fn validate_one(section: &StatsSocketSection, scope: &mut Scope) -> Option<StatsSocket> {
    let address = address(section, scope);
    let tcp = section.bind.is_some();
    let mode = match section.mode.as_deref() {
        None => Some(None),
        Some(_) if tcp => {
            scope.error("mode applies to unix sockets only (a TCP socket has no file)");
            None
        }
        Some(text) => match u32::from_str_radix(text, 8) {
            Ok(m) if m <= 0o777 => Some(Some(m)),
            _ => {
                scope.error(format!(
                    "mode {text:?} is not octal permissions (0 to 0777, e.g. \"0660\")"
                ));
                None
            }
        },
    };
    let expose_fd_listeners = section.expose_fd_listeners.unwrap_or(false);
    if expose_fd_listeners && tcp {
        scope.error(
            "expose_fd_listeners needs a unix socket (file descriptors cannot be passed over \
             TCP)",
        );
    }
    let level = match section.level.as_deref() {
        None => Some(CliLevel::Operator),
        Some(text) => lookup(&CliLevel::ALL, CliLevel::name, text).or_else(|| {
            scope.error(format!(
                "level {text:?} is not {}",
                expected_list(&CliLevel::ALL, CliLevel::name)
            ));
            None
        }),
    };
    let timeout = duration_field(
        scope,
        "timeout",
        section.timeout.as_deref(),
        DEFAULT_CLI_TIMEOUT,
    );
    if expose_fd_listeners && tcp {
        return None;
    }
    Some(StatsSocket {
        address: address?,
        mode: mode?,
        level: level?,
        expose_fd_listeners,
        timeout: timeout?,
    })
}

#[cfg(test)]
mod tests {
    use crate::model::{CliLevel, StatsAddress};
    use crate::validate::tests::{invalid, valid};

    const POOL: &str =
        "[[pool]]\nname = \"p\"\n[[pool.member]]\naddress = \"127.0.0.1\"\nport = 1\n";

    #[test]
    fn a_stats_socket_with_every_field() {
        let config = valid(&format!(
            "[[stats_socket]]\npath = \"/run/lbd/a.sock\"\nmode = \"0660\"\nlevel = \"admin\"\n\
             expose_fd_listeners = true\n[[stats_socket]]\npath = \"/run/lbd/b.sock\"\n{POOL}"
        ));
        let [a, b] = &config.stats_sockets[..] else {
            panic!("{:?}", config.stats_sockets)
        };
        assert_eq!(a.address, StatsAddress::Unix("/run/lbd/a.sock".into()));
        assert_eq!(
            (a.mode, a.level, a.expose_fd_listeners),
            (Some(0o660), CliLevel::Admin, true)
        );
        assert_eq!(
            (b.mode, b.level, b.expose_fd_listeners),
            (None, CliLevel::Operator, false)
        );
    }

    #[test]
    fn bad_stats_sockets_are_named() {
        let long = "/x".repeat(60);
        let text = format!(
            "[[stats_socket]]\nmode = \"0999\"\nlevel = \"root\"\n\
             [[stats_socket]]\npath = \"{long}\"\n\
             [[stats_socket]]\npath = \"/a\"\n[[stats_socket]]\npath = \"/a\"\n{POOL}"
        );
        assert_eq!(
            invalid(&text),
            [
                "stats_socket #1: path is missing (the unix socket's path, e.g. \"/run/lbd/stats.sock\", or bind: a TCP address, e.g. \"127.0.0.1:9999\")",
                "stats_socket #1: mode \"0999\" is not octal permissions (0 to 0777, e.g. \"0660\")",
                "stats_socket #1: level \"root\" is not \"user\", \"operator\" or \"admin\"",
                &format!(
                    "stats_socket #2: path {long:?} is 120 bytes long; a unix socket path has at most 107"
                ),
                "stats_socket #4: path \"/a\" is used by another stats_socket",
            ]
        );
    }

    #[test]
    fn a_tcp_stats_socket() {
        let config = valid(&format!(
            "[[stats_socket]]\nbind = \"127.0.0.1:9999\"\nlevel = \"admin\"\n\
             [[stats_socket]]\nbind = \"[::1]:9999\"\n{POOL}"
        ));
        let [a, b] = &config.stats_sockets[..] else {
            panic!("{:?}", config.stats_sockets)
        };
        assert_eq!(
            a.address,
            StatsAddress::Tcp("127.0.0.1:9999".parse().expect("addr"))
        );
        assert_eq!(
            (a.mode, a.level, a.expose_fd_listeners),
            (None, CliLevel::Admin, false)
        );
        assert_eq!(
            b.address,
            StatsAddress::Tcp("[::1]:9999".parse().expect("addr"))
        );
        // Written back and read again: the same.
        let text = toml::to_string(&crate::file::ConfigFile::from(&config)).expect("renders");
        assert!(text.contains("bind = \"127.0.0.1:9999\""), "{text}");
        assert_eq!(valid(&text), config);
    }

    #[test]
    fn bad_tcp_stats_sockets_are_named() {
        let text = format!(
            "[admin]\nbind = \"127.0.0.1:8404\"\nstats_bind = \"127.0.0.1:8405\"\n\
             [[listener]]\nname = \"web\"\nbind = \"0.0.0.0:8080\"\npool = \"p\"\n\
             [[stats_socket]]\npath = \"/a\"\nbind = \"127.0.0.1:1\"\n\
             [[stats_socket]]\nbind = \"localhost:9999\"\n\
             [[stats_socket]]\nbind = \"127.0.0.1:9999\"\nmode = \"0600\"\n\
             [[stats_socket]]\nbind = \"127.0.0.1:9998\"\nexpose_fd_listeners = true\n\
             [[stats_socket]]\nbind = \"127.0.0.1:9997\"\n\
             [[stats_socket]]\nbind = \"127.0.0.1:9997\"\n\
             [[stats_socket]]\nbind = \"0.0.0.0:9997\"\n\
             [[stats_socket]]\nbind = \"127.0.0.1:8080\"\n\
             [[stats_socket]]\nbind = \"127.0.0.1:8404\"\n\
             [[stats_socket]]\nbind = \"127.0.0.1:8405\"\n\
             [[stats_socket]]\nbind = \"127.0.0.1:0\"\n{POOL}"
        );
        assert_eq!(
            invalid(&text),
            [
                "stats_socket #1: has both path and bind; give one (path: a unix socket, bind: a TCP address)",
                "stats_socket #2: bind \"localhost:9999\" is not an address:port (e.g. \"0.0.0.0:8080\", \"[::]:8080\")",
                "stats_socket #3: mode applies to unix sockets only (a TCP socket has no file)",
                "stats_socket #4: expose_fd_listeners needs a unix socket (file descriptors cannot be passed over TCP)",
                "stats_socket #6: bind \"127.0.0.1:9997\" is used by another stats_socket",
                "stats_socket #7: bind 0.0.0.0:9997 clashes with another stats_socket on 127.0.0.1:9997",
                "stats_socket #8: bind 127.0.0.1:8080 clashes with listener \"web\" on 0.0.0.0:8080",
                "stats_socket #9: bind 127.0.0.1:8404 clashes with the admin bind 127.0.0.1:8404",
                "stats_socket #10: bind 127.0.0.1:8405 clashes with the admin stats_bind 127.0.0.1:8405",
                "stats_socket #11: bind 127.0.0.1:0: port 0 is not allowed",
            ]
        );
    }
}
