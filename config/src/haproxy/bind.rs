//! `bind` lines, and the `addr:port` syntax `bind` and `server` share.
//!
//! Each address of a `bind` (several on one line, comma separated, or
//! several lines) becomes a listener on the frontend's pool: `*:80` and
//! `:80` are `0.0.0.0:80`; `:::80` (`[::]:80`) is IPv6 and, as on Linux
//! with HAProxy, IPv4 too unless `v6only` is given (two lbd listeners:
//! lbd's `[::]` binds are v6-only). `freebind` and `transparent` set the
//! listener's `freebind`. TLS and PROXY-protocol options are refused (lbd
//! neither terminates TLS nor accepts PROXY headers from clients).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::sections::{arg_count, need_side, Ctx, Parts, Settings};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub addrs: Vec<SocketAddr>,
    pub freebind: bool,
}

/// An address written in HAProxy's syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostPort {
    /// `None`: no host (`:80`, `*:80`); `ipv6` says which wildcard.
    pub ip: Option<IpAddr>,
    pub ipv6: bool,
    pub port: Option<u16>,
}

/// Parses `addr:port` as HAProxy writes it: `10.0.0.1:80`, `*:80`, `:80`,
/// `:::80`, `[::1]:80`, `ipv4@`/`ipv6@` prefixes; `what` names it in
/// errors.
pub fn parse_host_port(text: &str, what: &str) -> Result<HostPort, String> {
    let (family, rest) = match text.split_once('@') {
        Some(("ipv4" | "tcp4", rest)) => (Some(false), rest),
        Some(("ipv6" | "tcp6", rest)) => (Some(true), rest),
        Some(("tcp", rest)) => (None, rest),
        Some((prefix, _)) => {
            return Err(format!(
                "{what} '{text}': '{prefix}@' addresses are not supported; lbd uses TCP over \
                 IPv4 or IPv6"
            ))
        }
        None => (None, text),
    };
    if rest.starts_with('/') {
        return Err(format!(
            "{what} '{text}': unix sockets are not supported; lbd uses TCP over IPv4 or IPv6"
        ));
    }
    let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
        let Some((host, after)) = inner.split_once(']') else {
            return Err(format!("{what} '{text}': missing ']'"));
        };
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(format!("{what} '{text}': expected ':<port>' after ']'")),
            },
        }
    } else {
        // As HAProxy: the port is after the last ':' (`:::80` is `::` port
        // 80; an IPv6 address without a port needs brackets).
        match rest.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        }
    };
    let port = match port {
        None | Some("") => None,
        Some(p) => Some(parse_port(p, what, text)?),
    };
    let ip = match host {
        "" | "*" => None,
        _ => Some(host.parse::<IpAddr>().map_err(|_| {
            format!("{what} '{text}': '{host}' is not an IP address (lbd does not resolve names)")
        })?),
    };
    if let (Some(ip), Some(v6)) = (ip, family) {
        if ip.is_ipv6() != v6 {
            return Err(format!(
                "{what} '{text}': the address does not match its prefix"
            ));
        }
    }
    Ok(HostPort {
        ip,
        ipv6: family.unwrap_or(false) || ip.is_some_and(|ip| ip.is_ipv6()),
        port,
    })
}

fn parse_port(port: &str, what: &str, text: &str) -> Result<u16, String> {
    if port.contains('-') || port.starts_with('+') {
        return Err(format!(
            "{what} '{text}': port ranges and offsets are not supported; give one port"
        ));
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("{what} '{text}': '{port}' is not a port (1-65535)")),
        Ok(p) => Ok(p),
    }
}

/// Bind options lbd refuses, and why.
fn refused_option(option: &str) -> Option<&'static str> {
    Some(match option {
        "ssl"
        | "crt"
        | "crt-list"
        | "ca-file"
        | "crl-file"
        | "verify"
        | "strict-sni"
        | "ca-verify-file"
        | "generate-certificates"
        | "quic-cc-algo"
        | "ca-sign-file" => "TLS termination is L7; lbd passes TLS through untouched",
        "accept-proxy" | "accept-netscaler-cip" => {
            "lbd does not accept PROXY protocol headers from clients"
        }
        "interface" | "namespace" => "lbd cannot bind to an interface or a network namespace",
        "uid" | "gid" | "user" | "group" | "mode" => "these apply to unix sockets only",
        "proto" => "lbd has no alternative protocols for binds",
        "tcp-ut" | "mss" | "nice" | "level" | "severity-output" | "expose-fd" => {
            "not supported by lbd"
        }
        _ => return None,
    })
}

/// Bind options that need `ssl` (ignored without it, as in HAProxy).
const TLS_OPTIONS: &[&str] = &[
    "alpn",
    "npn",
    "ciphers",
    "ciphersuites",
    "curves",
    "ecdhe",
    "ssl-min-ver",
    "ssl-max-ver",
    "no-sslv3",
    "no-tlsv10",
    "no-tlsv11",
    "no-tlsv12",
    "no-tlsv13",
    "force-sslv3",
    "force-tlsv10",
    "force-tlsv11",
    "force-tlsv12",
    "force-tlsv13",
    "no-tls-tickets",
    "prefer-client-ciphers",
    "allow-0rtt",
    "tls-ticket-keys",
    "sigalgs",
    "client-sigalgs",
];

/// Bind options with one argument that lbd ignores with a warning.
const IGNORED_WITH_ARG: &[&str] = &["name", "id", "process", "thread", "backlog", "maxconn"];
/// Bind options without argument that lbd ignores with a warning.
const IGNORED_FLAGS: &[&str] = &["defer-accept", "tfo", "transparent"];

pub fn keyword(
    ctx: &mut Ctx,
    _settings: &mut Settings,
    parts: Option<&mut Parts>,
) -> Option<Result<(), String>> {
    if ctx.words[0] != "bind" {
        return None;
    }
    Some(bind(ctx, parts))
}

fn bind(ctx: &mut Ctx, parts: Option<&mut Parts>) -> Result<(), String> {
    let words = ctx.words;
    let parts = need_side(ctx, parts, true)?;
    arg_count(words, 1, 1..=usize::MAX, "bind <addr:port>[,...] [options]")?;
    let mut v6only = false;
    let mut freebind = false;
    let mut i = 2;
    let mut notes: Vec<String> = Vec::new();
    while i < words.len() {
        let option = words[i].as_str();
        if let Some(why) = refused_option(option) {
            return Err(format!("'bind ... {option}': {why}"));
        }
        match option {
            "v6only" => v6only = true,
            "v4v6" => v6only = false,
            "freebind" => freebind = true,
            "transparent" => {
                freebind = true;
                notes.push(
                    "'transparent': lbd binds with IP_FREEBIND (addresses not on this host) \
                     and does not intercept traffic for other addresses"
                        .to_owned(),
                );
            }
            o if IGNORED_WITH_ARG.contains(&o) => {
                if words.get(i + 1).is_none() {
                    return Err(format!("'bind ... {o}' expects an argument"));
                }
                if o != "name" && o != "id" {
                    notes.push(format!("'{o}': not supported by lbd; ignored"));
                }
                i += 1;
            }
            o if IGNORED_FLAGS.contains(&o) => {
                notes.push(format!("'{o}': not supported by lbd; ignored"));
            }
            o if TLS_OPTIONS.contains(&o) => {
                notes.push(format!("'{o}': ignored without 'ssl' (as in HAProxy)"));
                // Every one of them but the flags takes an argument.
                if !o.starts_with("no-")
                    && !o.starts_with("force-")
                    && o != "prefer-client-ciphers"
                    && o != "allow-0rtt"
                {
                    i += 1;
                }
            }
            other => return Err(format!("'bind': unknown option '{other}'")),
        }
        i += 1;
    }
    let mut addrs = Vec::new();
    for text in words[1].split(',') {
        let hp = parse_host_port(text, "bind")?;
        let Some(port) = hp.port else {
            return Err(format!("bind '{text}': a port is required"));
        };
        match hp.ip {
            Some(ip) => {
                addrs.push(SocketAddr::new(ip, port));
                if ip == IpAddr::V6(Ipv6Addr::UNSPECIFIED) && !v6only {
                    addrs.push(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port));
                }
            }
            None if hp.ipv6 => {
                addrs.push(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port));
                if !v6only {
                    addrs.push(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port));
                }
            }
            None => addrs.push(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port)),
        }
    }
    for note in notes {
        ctx.warn(note);
    }
    parts.binds.push(ctx.at(Bind { addrs, freebind }));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::haproxy::test_util::*;

    #[test]
    fn addresses() {
        let v4 = |s: &str| Some(s.parse::<IpAddr>().expect("ip"));
        for (text, ip, ipv6, port) in [
            ("10.0.0.1:80", v4("10.0.0.1"), false, Some(80)),
            ("*:80", None, false, Some(80)),
            (":80", None, false, Some(80)),
            (":::80", v4("::"), true, Some(80)),
            ("[::1]:443", v4("::1"), true, Some(443)),
            ("ipv6@:80", None, true, Some(80)),
            ("ipv4@10.0.0.1:80", v4("10.0.0.1"), false, Some(80)),
            ("10.0.0.1", v4("10.0.0.1"), false, None),
            ("[fe80::1]", v4("fe80::1"), true, None),
        ] {
            assert_eq!(
                parse_host_port(text, "bind"),
                Ok(HostPort { ip, ipv6, port }),
                "{text}"
            );
        }
        for (text, reason) in [
            (
                "example.com:80",
                "is not an IP address (lbd does not resolve names)",
            ),
            ("10.0.0.1:80-90", "port ranges"),
            ("10.0.0.1:+1", "port ranges"),
            ("10.0.0.1:0", "is not a port"),
            ("10.0.0.1:x", "is not a port"),
            ("/run/x.sock", "unix sockets"),
            ("unix@/run/x.sock", "'unix@' addresses are not supported"),
            ("[::1:80", "missing ']'"),
            ("ipv6@10.0.0.1:80", "does not match its prefix"),
        ] {
            let err = parse_host_port(text, "bind").expect_err(text);
            assert!(err.contains(reason), "{text}: {err}");
        }
    }

    fn listeners(bind_lines: &str) -> Vec<(String, String, Option<bool>)> {
        let file = convert_ok(&format!(
            "frontend web\n{bind_lines}\n default_backend b\n timeout client 5s\n\
             backend b\n timeout connect 5s\n timeout server 5s\n server s 127.0.0.1:7001\n"
        ));
        file.listeners
            .iter()
            .map(|l| {
                (
                    l.name.clone().unwrap_or_default(),
                    l.bind.clone().unwrap_or_default(),
                    l.freebind,
                )
            })
            .collect()
    }

    #[test]
    fn each_address_is_a_listener_on_the_pool() {
        let l = |n: &str, b: &str, f: bool| (n.to_owned(), b.to_owned(), f.then_some(true));
        assert_eq!(
            listeners(" bind 127.0.0.1:7000"),
            [l("web", "127.0.0.1:7000", false)]
        );
        assert_eq!(
            listeners(" bind 127.0.0.1:7000,127.0.0.2:7000 freebind\n bind *:7002 transparent"),
            [
                l("web", "127.0.0.1:7000", true),
                l("web.2", "127.0.0.2:7000", true),
                l("web.3", "0.0.0.0:7002", true)
            ]
        );
        assert_eq!(
            listeners(" bind :::7000"),
            [
                l("web", "[::]:7000", false),
                l("web.2", "0.0.0.0:7000", false)
            ]
        );
        assert_eq!(
            listeners(" bind :::7000 v6only"),
            [l("web", "[::]:7000", false)]
        );
        assert_eq!(
            listeners(" bind \"127.0.0.1:${PORT}\" name x id 3"),
            [l("web", "127.0.0.1:7000", false)]
        );
    }

    #[test]
    fn bind_errors() {
        for (line, reason) in [
            ("bind", "expects at least 1 argument(s)"),
            (
                "bind 127.0.0.1:7000 ssl crt /x.pem",
                "TLS termination is L7",
            ),
            (
                "bind 127.0.0.1:7000 accept-proxy",
                "does not accept PROXY protocol",
            ),
            (
                "bind 127.0.0.1:7000 frobnicate",
                "unknown option 'frobnicate'",
            ),
            ("bind 127.0.0.1", "a port is required"),
            ("bind host:80", "not an IP address"),
        ] {
            assert_error(
                &format!(
                    "frontend f\n {line}\n default_backend b\nbackend b\n server s 127.0.0.1:1\n"
                ),
                2,
                reason,
            );
        }
        assert_error(
            "backend b\n bind 127.0.0.1:7000\n server s 127.0.0.1:1\n",
            2,
            "'bind' is not allowed in a 'backend' section",
        );
        assert_error(
            "defaults\n bind 127.0.0.1:7000\n",
            2,
            "'bind' is not allowed in a 'defaults' section",
        );
    }

    #[test]
    fn ignored_bind_options_warn() {
        let warnings = convert_warnings(
            "frontend f\n bind 127.0.0.1:7000 backlog 10 tfo alpn h2 no-tlsv10\n default_backend b\n\
             timeout client 5s\nbackend b\n timeout connect 5s\n timeout server 5s\n server s 127.0.0.1:1\n",
        );
        for text in [
            "'backlog'",
            "'tfo'",
            "'alpn': ignored without 'ssl'",
            "'no-tlsv10'",
        ] {
            assert_warning(&warnings, 2, text);
        }
    }
}
