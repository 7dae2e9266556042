//! `stats ...` lines of the `global` section: the CLI sockets (`stats
//! socket <path> mode <m> level <l> expose-fd listeners`, `stats socket
//! ipv4@<addr>:<port> level <l>`), which become `[[stats_socket]]`, and
//! the settings of all of them.
//!
//! A TCP address is written as `bind` does ([`parse_host_port`]):
//! `ipv4@A:P`, `ipv6@[A]:P`, `A:P`, `*:P`, `:::P`. `:::P` listens on IPv4
//! too, as HAProxy on Linux: two sockets (lbd's `[::]` binds are v6-only).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::bind::parse_host_port;
use super::sections::arg_count;
use super::timeouts::parse_time;
use crate::file::StatsSocketSection;

/// What a `stats` line of `global` gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GlobalStats {
    /// CLI sockets lbd serves: one, or two for `:::<port>` (IPv6 and IPv4).
    Sockets(Vec<StatsSocketSection>),
    /// Accepted; the note says what lbd does instead.
    Accepted(&'static str),
    /// A socket lbd does not serve (the notes said why).
    NotServed,
    /// `stats timeout`: every socket's `timeout`.
    Timeout(std::time::Duration),
}

const NOT_SERVED: &str = "lbd serves unix ('/path', 'unix@/path') and TCP ('ipv4@', \
                          'ipv6@', 'addr:port') sockets; this one is ignored";
const TCP_MODE: &str = "'mode' applies to unix sockets; ignored on a TCP socket (as HAProxy)";
const TCP_EXPOSE: &str = "'expose-fd listeners' needs a unix socket (_getsocks passes file \
                          descriptors); ignored on a TCP socket";
const OWNER: &str = "lbd creates the socket as the user it runs as (start it as the user \
                     that should own it); the owner part is ignored";

/// Reads `stats <words...>` of the `global` section. `warn` receives notes
/// about parts that are ignored.
pub fn global_stats(words: &[String], warn: &mut dyn FnMut(&str)) -> Result<GlobalStats, String> {
    match words.get(1).map(String::as_str) {
        Some("socket") => {
            arg_count(words, 2, 1..=usize::MAX, "stats socket <path> [param*]")?;
            socket(&words[2], &words[3..], warn)
        }
        Some("timeout") => {
            arg_count(words, 2, 1..=1, "stats timeout <time>")?;
            let timeout = parse_time(&words[2], "stats timeout")?;
            if timeout.is_zero() {
                return Err("'stats timeout' must be greater than zero".to_owned());
            }
            Ok(GlobalStats::Timeout(timeout))
        }
        Some("maxconn") => {
            arg_count(words, 2, 1..=1, "stats maxconn <number>")?;
            Ok(GlobalStats::Accepted(
                "lbd serves each CLI connection in turn; ignored",
            ))
        }
        Some("bind-process") => Ok(GlobalStats::Accepted("lbd is one process; ignored")),
        Some(other) => Err(format!(
            "'stats {other}' is not a global keyword (expects 'socket', 'timeout' or 'maxconn')"
        )),
        None => Err("'stats' expects 'socket', 'timeout' or 'maxconn'".to_owned()),
    }
}

fn socket(
    address: &str,
    params: &[String],
    warn: &mut dyn FnMut(&str),
) -> Result<GlobalStats, String> {
    let path = match address.strip_prefix("unix@") {
        Some(p) => Some(p),
        None if address.starts_with('/') => Some(address),
        None => None,
    };
    let binds = match path {
        Some(_) => Vec::new(),
        None => tcp_binds(address)?,
    };
    let mut section = StatsSocketSection {
        path: path.map(str::to_owned),
        ..StatsSocketSection::default()
    };
    let mut i = 0;
    while i < params.len() {
        let name = params[i].as_str();
        let value = params.get(i + 1).map(String::as_str);
        match name {
            "mode" => section.mode = Some(value_of(name, value)?.to_owned()),
            "level" => {
                let level = value_of(name, value)?;
                if !["user", "operator", "admin"].contains(&level) {
                    return Err(format!(
                        "'stats socket': 'level' only supports 'user', 'operator', and \
                         'admin' (got '{level}')"
                    ));
                }
                section.level = Some(level.to_owned());
            }
            "expose-fd" => {
                if value_of(name, value)? != "listeners" {
                    return Err("'stats socket': 'expose-fd' only supports 'listeners'".to_owned());
                }
                section.expose_fd_listeners = Some(true);
            }
            "user" | "uid" | "group" | "gid" => {
                value_of(name, value)?;
                warn(OWNER);
            }
            "process" | "thread" | "severity-output" | "name" | "id" | "nice" => {
                value_of(name, value)?;
                warn("ignored");
            }
            "accept-netscaler-cip" | "backlog" | "maxconn" => {
                value_of(name, value)?;
                warn("ignored");
            }
            "accept-proxy" => {
                return Err("'stats socket': 'accept-proxy' is not supported by lbd's CLI".into())
            }
            other => {
                return Err(format!(
                    "'stats socket': unknown parameter '{other}' (lbd takes mode, level, \
                     expose-fd listeners, user, group, uid, gid)"
                ))
            }
        }
        // Every parameter but `accept-proxy` takes one value.
        i += 2;
    }
    if section.path.is_some() {
        return Ok(GlobalStats::Sockets(vec![section]));
    }
    if binds.is_empty() {
        warn(NOT_SERVED);
        return Ok(GlobalStats::NotServed);
    }
    if section.mode.take().is_some() {
        warn(TCP_MODE);
    }
    if section.expose_fd_listeners.take().is_some() {
        warn(TCP_EXPOSE);
    }
    Ok(GlobalStats::Sockets(
        binds
            .into_iter()
            .map(|bind| StatsSocketSection {
                bind: Some(bind.to_string()),
                ..section.clone()
            })
            .collect(),
    ))
}

/// The TCP addresses of a `stats socket` address: none for the families
/// lbd does not serve (`abns@`, `fd@`, `sockpair@`...).
fn tcp_binds(address: &str) -> Result<Vec<SocketAddr>, String> {
    if let Some((prefix, _)) = address.split_once('@') {
        if !["ipv4", "ipv6", "tcp", "tcp4", "tcp6"].contains(&prefix) {
            return Ok(Vec::new());
        }
    }
    let hp = parse_host_port(address, "stats socket")?;
    let Some(port) = hp.port else {
        return Err(format!("stats socket '{address}': missing port"));
    };
    Ok(match hp.ip {
        Some(ip) if ip == IpAddr::V6(Ipv6Addr::UNSPECIFIED) => vec![
            SocketAddr::new(ip, port),
            SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port),
        ],
        Some(ip) => vec![SocketAddr::new(ip, port)],
        None if hp.ipv6 => vec![SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port)],
        None => vec![SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port)],
    })
}

fn value_of<'a>(name: &str, value: Option<&'a str>) -> Result<&'a str, String> {
    value.ok_or_else(|| format!("'stats socket': '{name}' expects a value"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(line: &str) -> (Result<GlobalStats, String>, Vec<String>) {
        let words: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        let mut notes = Vec::new();
        let result = global_stats(&words, &mut |n: &str| notes.push(n.to_owned()));
        (result, notes)
    }

    #[test]
    fn octavias_socket_and_an_exposing_one() {
        let (got, notes) = read("stats socket /var/lib/octavia/x.sock mode 0666 level user");
        assert_eq!(
            got,
            Ok(GlobalStats::Sockets(vec![StatsSocketSection {
                path: Some("/var/lib/octavia/x.sock".into()),
                mode: Some("0666".into()),
                level: Some("user".into()),
                expose_fd_listeners: None,
                timeout: None,
                bind: None,
            }]))
        );
        assert!(notes.is_empty());
        let (got, notes) = read(
            "stats socket unix@/run/h.sock user haproxy group haproxy mode 660 level admin \
             expose-fd listeners",
        );
        assert_eq!(
            got,
            Ok(GlobalStats::Sockets(vec![StatsSocketSection {
                path: Some("/run/h.sock".into()),
                mode: Some("660".into()),
                level: Some("admin".into()),
                expose_fd_listeners: Some(true),
                timeout: None,
                bind: None,
            }]))
        );
        assert_eq!(notes, [OWNER, OWNER]);
    }

    #[test]
    fn stats_timeout_is_read() {
        let (got, _) = read("stats timeout 2m");
        assert_eq!(
            got,
            Ok(GlobalStats::Timeout(std::time::Duration::from_secs(120)))
        );
        let (got, _) = read("stats timeout 0");
        assert!(got.is_err(), "{got:?}");
    }

    fn binds(got: Result<GlobalStats, String>) -> Vec<String> {
        match got {
            Ok(GlobalStats::Sockets(s)) => s.into_iter().filter_map(|s| s.bind).collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn tcp_sockets_are_served() {
        let (got, notes) = read("stats socket ipv4@127.0.0.1:9999 level admin");
        assert_eq!(
            got,
            Ok(GlobalStats::Sockets(vec![StatsSocketSection {
                bind: Some("127.0.0.1:9999".into()),
                level: Some("admin".into()),
                ..StatsSocketSection::default()
            }]))
        );
        assert!(notes.is_empty());
        for (address, want) in [
            ("ipv6@[::1]:9999", &["[::1]:9999"][..]),
            ("127.0.0.1:9999", &["127.0.0.1:9999"]),
            ("[::1]:9999", &["[::1]:9999"]),
            ("*:9999", &["0.0.0.0:9999"]),
            (":9999", &["0.0.0.0:9999"]),
            ("ipv6@:9999", &["[::]:9999"]),
            (":::9999", &["[::]:9999", "0.0.0.0:9999"]),
        ] {
            let (got, _) = read(&format!("stats socket {address}"));
            assert_eq!(binds(got), want, "{address}");
        }
    }

    #[test]
    fn unix_only_parameters_are_ignored_on_tcp() {
        let (got, notes) =
            read("stats socket 127.0.0.1:9999 mode 600 expose-fd listeners level user");
        assert_eq!(
            got,
            Ok(GlobalStats::Sockets(vec![StatsSocketSection {
                bind: Some("127.0.0.1:9999".into()),
                level: Some("user".into()),
                ..StatsSocketSection::default()
            }]))
        );
        assert_eq!(notes, [TCP_MODE, TCP_EXPOSE]);
    }

    #[test]
    fn abstract_sockets_are_not_served() {
        let (got, notes) = read("stats socket abns@haproxy level admin");
        assert_eq!(got, Ok(GlobalStats::NotServed));
        assert_eq!(notes, [NOT_SERVED]);
    }

    #[test]
    fn bad_lines_are_refused_with_the_reason() {
        for (line, why) in [
            ("stats socket /a level root", "'level' only supports"),
            (
                "stats socket /a expose-fd all",
                "'expose-fd' only supports 'listeners'",
            ),
            ("stats socket /a mode", "'mode' expects a value"),
            (
                "stats socket /a frobnicate 1",
                "unknown parameter 'frobnicate'",
            ),
            ("stats socket", "stats socket <path>"),
            ("stats socket ipv4@127.0.0.1", "missing port"),
            ("stats socket ipv4@127.0.0.1:0", "is not a port"),
            ("stats socket localhost:9999", "lbd does not resolve names"),
            ("stats timeout soon", "stats timeout"),
            ("stats enable", "not a global keyword"),
        ] {
            let (got, _) = read(line);
            let err = got.expect_err(line);
            assert!(err.contains(why), "{line}: {err}");
        }
    }
}
