//! `server` and `default-server` lines: the members of a pool.
//!
//! A server's options are its `default-server` options (from `defaults`
//! or the backend, the last line wins per option) with its own on top.
//! Per-server settings that are per pool or per listener in lbd must agree
//! across the backend's servers (checked in [`super::convert`]): the check
//! settings (`inter`, `rise`, `fall`, `check-ssl`, `ca-file`, `crt`,
//! `check-sni`), `send-proxy`/`send-proxy-v2` (the listener's
//! `proxy_protocol`), `maxqueue` (the pool's `max_queue`) and `slowstart`
//! (the pool's `slow_start`).

use std::net::IpAddr;
use std::time::Duration;

use super::bind::parse_host_port;
use super::sections::{arg_count, need_side, number, Ctx, Parts, Settings};
use super::timeouts::parse_time;
use crate::model::{ProxyProtocol, MAX_WEIGHT};

/// `verify none|required` of TLS checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    None,
    Required,
}

/// Options of a `server` or `default-server` line; `None`: not given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerOptions {
    pub weight: Option<u32>,
    pub check: Option<bool>,
    pub inter: Option<Duration>,
    pub rise: Option<u32>,
    pub fall: Option<u32>,
    pub addr: Option<IpAddr>,
    pub port: Option<u16>,
    pub backup: Option<bool>,
    pub disabled: Option<bool>,
    /// `send-proxy` (v1), `send-proxy-v2`, `no-send-proxy` (none).
    pub proxy: Option<Option<ProxyProtocol>>,
    pub check_ssl: Option<bool>,
    pub verify: Option<Verify>,
    pub ca_file: Option<String>,
    pub crt: Option<String>,
    pub check_sni: Option<String>,
    pub maxconn: Option<u32>,
    pub maxqueue: Option<u32>,
    pub slowstart: Option<Duration>,
    /// `on-marked-down shutdown-sessions`.
    pub shutdown_on_down: Option<bool>,
}

impl ServerOptions {
    /// `self` (a server's own options) over `base` (its defaults).
    pub fn over(self, base: &ServerOptions) -> ServerOptions {
        macro_rules! pick {
            ($($f:ident),*) => { ServerOptions { $($f: self.$f.or_else(|| base.$f.clone()),)* } };
        }
        pick!(
            weight,
            check,
            inter,
            rise,
            fall,
            addr,
            port,
            backup,
            disabled,
            proxy,
            check_ssl,
            verify,
            ca_file,
            crt,
            check_sni,
            maxconn,
            maxqueue,
            slowstart,
            shutdown_on_down
        )
    }
}

/// A `server` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub name: String,
    pub ip: IpAddr,
    pub port: u16,
    /// With the `default-server` options applied.
    pub options: ServerOptions,
}

pub fn keyword(
    ctx: &mut Ctx,
    settings: &mut Settings,
    parts: Option<&mut Parts>,
) -> Option<Result<(), String>> {
    match ctx.words[0].as_str() {
        "server" => Some(server(ctx, settings, parts)),
        "default-server" => Some(default_server(ctx, settings)),
        _ => None,
    }
}

fn default_server(ctx: &mut Ctx, settings: &mut Settings) -> Result<(), String> {
    if !ctx.kind.backend_side() {
        return Err("'default-server' is not allowed in a 'frontend' section".to_owned());
    }
    let options = parse_options(ctx, 1)?;
    settings.default_server = options.over(&settings.default_server);
    Ok(())
}

fn server(ctx: &mut Ctx, settings: &mut Settings, parts: Option<&mut Parts>) -> Result<(), String> {
    let words = ctx.words;
    let parts = need_side(ctx, parts, false)?;
    arg_count(
        words,
        1,
        2..=usize::MAX,
        "server <name> <addr:port> [options]",
    )?;
    let name = words[1].clone();
    let hp = parse_host_port(&words[2], &format!("server '{name}'"))?;
    let Some(ip) = hp.ip else {
        return Err(format!(
            "server '{name}' '{}': an IP address is required",
            words[2]
        ));
    };
    let Some(port) = hp.port else {
        return Err(format!(
            "server '{name}' '{}': a port is required (lbd does not forward to the port the \
             client connected to)",
            words[2]
        ));
    };
    if let Some(other) = parts.servers.iter().find(|s| s.value.name == name) {
        return Err(format!(
            "server '{name}' has the same name as the server at {}",
            other.loc
        ));
    }
    let options = parse_options(ctx, 3)?.over(&settings.default_server);
    parts.servers.push(ctx.at(Server {
        name,
        ip,
        port,
        options,
    }));
    Ok(())
}

/// Server options lbd refuses, and why.
fn refused(option: &str) -> Option<&'static str> {
    Some(match option {
        "ssl" | "send-proxy-v2-ssl" | "send-proxy-v2-ssl-cn" | "proxy-v2-options" => {
            "TLS to members is L7; lbd passes bytes through untouched"
        }
        "agent-check" | "agent-port" | "agent-inter" | "agent-addr" | "agent-send" => {
            "lbd has no agent checks"
        }
        "track" => "lbd does not track another server's state",
        "resolvers" | "resolve-prefer" | "resolve-net" | "resolve-opts" => {
            "lbd does not resolve names: members are IP addresses"
        }
        "source" | "usesrc" | "namespace" | "interface" => {
            "lbd connects to members from the route's own address"
        }
        "redir" | "cookie" => "an HTTP feature; lbd is L4 (TCP) only and cannot do it",
        "minconn" => "lbd has no dynamic connection limits (use maxconn)",
        "on-error" | "on-marked-up" => "lbd does not act on members' connections on state changes",
        "check-send-proxy" => "lbd's health checks send no PROXY header",
        "socks4" | "check-via-socks4" => "lbd does not connect through SOCKS",
        "ws" | "proto" | "check-proto" => "lbd has no alternative protocols for members",
        _ => return None,
    })
}

/// TLS options of checks that lbd's rustls checks do not take (ignored
/// with a warning): `(option, takes an argument)`.
const TLS_TUNING: &[(&str, bool)] = &[
    ("alpn", true),
    ("npn", true),
    ("check-alpn", true),
    ("ciphers", true),
    ("ciphersuites", true),
    ("curves", true),
    ("sigalgs", true),
    ("client-sigalgs", true),
    ("ssl-min-ver", true),
    ("ssl-max-ver", true),
    ("crl-file", true),
    ("no-sslv3", false),
    ("no-tlsv10", false),
    ("no-tlsv11", false),
    ("no-tlsv12", false),
    ("no-tlsv13", false),
    ("force-sslv3", false),
    ("force-tlsv10", false),
    ("force-tlsv11", false),
    ("force-tlsv12", false),
    ("force-tlsv13", false),
    ("no-tls-tickets", false),
    ("ssl-reuse", false),
    ("no-ssl-reuse", false),
    ("allow-0rtt", false),
];

/// Options ignored with a warning: `(option, takes an argument, note)`.
const IGNORED: &[(&str, bool, &str)] = &[
    (
        "fastinter",
        true,
        "lbd checks every 'inter', whatever the state",
    ),
    (
        "downinter",
        true,
        "lbd checks every 'inter', whatever the state",
    ),
    (
        "error-limit",
        true,
        "lbd counts failed connects of real traffic as failed checks",
    ),
    (
        "init-addr",
        true,
        "members are IP addresses; nothing to resolve",
    ),
    ("id", true, "lbd numbers members by position"),
    (
        "sni",
        true,
        "used with 'ssl' only (TLS to members), which lbd does not do",
    ),
    ("tfo", false, "not supported by lbd"),
    (
        "pool-max-conn",
        true,
        "lbd keeps no idle member connections",
    ),
    (
        "pool-low-conn",
        true,
        "lbd keeps no idle member connections",
    ),
    (
        "pool-purge-delay",
        true,
        "lbd keeps no idle member connections",
    ),
    ("max-reuse", true, "lbd keeps no idle member connections"),
    ("log-proto", true, "not used by lbd"),
    ("non-stick", false, "lbd keeps no stick table"),
    ("stick", false, "lbd keeps no stick table"),
    ("no-agent-check", false, "lbd has no agent checks"),
    ("no-tfo", false, "not supported by lbd"),
];

/// Parses the options from word `start` on.
fn parse_options(ctx: &mut Ctx, start: usize) -> Result<ServerOptions, String> {
    let words = ctx.words;
    let mut o = ServerOptions::default();
    let mut notes = Vec::new();
    let mut i = start;
    while i < words.len() {
        let option = words[i].as_str();
        let value = words.get(i + 1).map(String::as_str);
        let need = || value.ok_or_else(|| format!("server option '{option}' expects an argument"));
        if let Some(why) = super::not_yet(&words[i..]) {
            return Err(format!("server option '{option}': {why}"));
        }
        if let Some(why) = refused(option) {
            return Err(format!("server option '{option}': {why}"));
        }
        let mut takes_arg = true;
        match option {
            "weight" => o.weight = Some(number(need()?, "weight", 0..=u64::from(MAX_WEIGHT))?),
            "inter" => o.inter = Some(parse_time(need()?, "inter")?),
            "rise" => o.rise = Some(number(need()?, "rise", 1..=u64::from(u32::MAX))?),
            "fall" => o.fall = Some(number(need()?, "fall", 1..=u64::from(u32::MAX))?),
            "addr" => {
                let text = need()?;
                o.addr = Some(
                    text.parse()
                        .map_err(|_| format!("server option 'addr {text}': not an IP address"))?,
                );
            }
            "port" => {
                o.port = Some(u16::try_from(number(need()?, "port", 1..=65_535)?).unwrap_or(1))
            }
            "verify" => {
                o.verify = Some(match need()? {
                    "none" => Verify::None,
                    "required" => Verify::Required,
                    other => {
                        return Err(format!(
                            "server option 'verify {other}': expected none or required"
                        ))
                    }
                })
            }
            "ca-file" => o.ca_file = Some(need()?.to_owned()),
            "crt" => o.crt = Some(need()?.to_owned()),
            "check-sni" => o.check_sni = Some(need()?.to_owned()),
            "maxconn" => o.maxconn = Some(number(need()?, "maxconn", 0..=10_000_000)?),
            "maxqueue" => o.maxqueue = Some(number(need()?, "maxqueue", 0..=10_000_000)?),
            "slowstart" => o.slowstart = Some(parse_time(need()?, "slowstart")?),
            "on-marked-down" => match need()? {
                "shutdown-sessions" => o.shutdown_on_down = Some(true),
                other => {
                    return Err(format!(
                        "server option 'on-marked-down {other}': lbd can only 'shutdown-sessions'"
                    ))
                }
            },
            "observe" => match need()? {
                "layer4" => {}
                other => {
                    return Err(format!(
                        "server option 'observe {other}': lbd observes layer4 only (failed \
                         connects count as failed checks)"
                    ))
                }
            },
            _ => {
                takes_arg = false;
                match option {
                    "check" => o.check = Some(true),
                    "no-check" => o.check = Some(false),
                    "backup" => o.backup = Some(true),
                    "no-backup" => o.backup = Some(false),
                    "disabled" => o.disabled = Some(true),
                    "enabled" => o.disabled = Some(false),
                    "send-proxy" => o.proxy = Some(Some(ProxyProtocol::V1)),
                    "send-proxy-v2" => o.proxy = Some(Some(ProxyProtocol::V2)),
                    "no-send-proxy" | "no-send-proxy-v2" => o.proxy = Some(None),
                    "check-ssl" => o.check_ssl = Some(true),
                    "no-check-ssl" => o.check_ssl = Some(false),
                    _ => {
                        if let Some((_, arg)) = TLS_TUNING.iter().find(|(n, _)| *n == option) {
                            notes.push(format!(
                                "server option '{option}': lbd's TLS checks use rustls' \
                                 defaults (TLS 1.2 and 1.3); ignored"
                            ));
                            takes_arg = *arg;
                        } else if let Some((_, arg, note)) =
                            IGNORED.iter().find(|(n, _, _)| *n == option)
                        {
                            notes.push(format!("server option '{option}': {note}; ignored"));
                            takes_arg = *arg;
                        } else {
                            return Err(format!("unknown server option '{option}'"));
                        }
                        if takes_arg {
                            need()?;
                        }
                    }
                }
            }
        }
        i += if takes_arg { 2 } else { 1 };
    }
    for note in notes {
        ctx.warn(note);
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use crate::file::MemberSection;
    use crate::haproxy::test_util::*;

    fn members(servers: &str) -> Vec<MemberSection> {
        convert_ok(&format!(
            "defaults\n timeout connect 5s\n timeout client 5s\n timeout server 5s\n\
             listen l\n bind 127.0.0.1:7000\n{servers}\n"
        ))
        .pools
        .remove(0)
        .members
    }

    #[test]
    fn member_settings() {
        let m = members(
            " default-server weight 5 maxconn 10\n server a 10.0.0.1:80\n\
             server b 10.0.0.2:81 weight 0 backup disabled maxconn 0\n server c [::1]:82 no-backup enabled",
        );
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].address.as_deref(), Some("10.0.0.1"));
        assert_eq!(m[0].port, Some(80));
        assert_eq!(m[0].weight, Some(5));
        assert_eq!(m[0].max_connections, Some(10));
        assert_eq!(m[0].name.as_deref(), Some("a"));
        assert_eq!(m[0].backup, None);
        assert_eq!(m[1].weight, Some(0));
        assert_eq!(m[1].backup, Some(true));
        assert_eq!(m[1].admin_state.as_deref(), Some("maint"));
        assert_eq!(m[1].max_connections, Some(0));
        assert_eq!(m[2].address.as_deref(), Some("::1"));
        assert_eq!(m[2].admin_state, None);
    }

    #[test]
    fn check_address_and_port() {
        let m = members(
            " server a 10.0.0.1:80 check addr 10.0.0.9 port 9000\n server b 10.0.0.2:80 check port 9001",
        );
        assert_eq!(m[0].monitor_address.as_deref(), Some("10.0.0.9"));
        assert_eq!(m[0].monitor_port, Some(9000));
        assert_eq!(m[1].monitor_address, None);
        assert_eq!(m[1].monitor_port, Some(9001));
    }

    #[test]
    fn server_errors() {
        for (line, reason) in [
            ("server a", "expects at least 2 argument(s)"),
            ("server a host.example:80", "lbd does not resolve names"),
            ("server a 10.0.0.1", "a port is required"),
            ("server a :80", "an IP address is required"),
            (
                "server a 10.0.0.1:80 weight 257",
                "weight 257 is out of range (0-256)",
            ),
            ("server a 10.0.0.1:80 weight", "expects an argument"),
            (
                "server a 10.0.0.1:80 ssl verify none",
                "TLS to members is L7",
            ),
            (
                "server a 10.0.0.1:80 on-marked-down shutdown-backup-sessions",
                "lbd can only 'shutdown-sessions'",
            ),
            ("server a 10.0.0.1:80 track b/c", "does not track"),
            ("server a 10.0.0.1:80 frob", "unknown server option 'frob'"),
            (
                "server a 10.0.0.1:80 observe layer7",
                "observes layer4 only",
            ),
            (
                "server a 10.0.0.1:80 verify maybe",
                "expected none or required",
            ),
            ("server a 10.0.0.1:80 addr nope", "not an IP address"),
        ] {
            assert_error(
                &format!("listen l\n bind 127.0.0.1:7000\n {line}\n"),
                3,
                reason,
            );
        }
        assert_error(
            "listen l\n bind 127.0.0.1:7000\n server a 10.0.0.1:80\n server a 10.0.0.2:80\n",
            4,
            "same name",
        );
        assert_error(
            "frontend f\n bind 127.0.0.1:7000\n server a 10.0.0.1:80\n",
            3,
            "'server' is not allowed in a 'frontend' section",
        );
    }

    #[test]
    fn ignored_server_options_warn() {
        let warnings = convert_warnings(
            "defaults\n timeout connect 5s\n timeout client 5s\n timeout server 5s\n\
             listen l\n bind 127.0.0.1:7000\n server a 10.0.0.1:80 check fastinter 1s id 3 \
             no-tlsv10 observe layer4\n",
        );
        assert_warning(&warnings, 7, "'fastinter': lbd checks every 'inter'");
        assert_warning(&warnings, 7, "'no-tlsv10': lbd's TLS checks use rustls");
    }

    #[test]
    fn queue_and_slow_start_are_per_pool() {
        let file = convert_ok(
            "defaults\n timeout connect 5s\n timeout client 5s\n timeout server 5s\n\
             listen l\n bind 127.0.0.1:7000\n default-server maxconn 2 maxqueue 7 slowstart 30s\n\
             server a 10.0.0.1:80\n server b 10.0.0.2:80\n",
        );
        assert_eq!(file.pools[0].max_queue, Some(7));
        assert_eq!(file.pools[0].slow_start.as_deref(), Some("30s"));
        let file = convert_ok(
            "defaults\n timeout connect 5s\n timeout client 5s\n timeout server 5s\n\
             listen l\n bind 127.0.0.1:7000\n default-server on-marked-down shutdown-sessions\n\
             server a 10.0.0.1:80\n server b 10.0.0.2:80\n",
        );
        assert_eq!(file.pools[0].on_down.as_deref(), Some("shutdown_sessions"));
        assert_error(
            "listen l\n bind 127.0.0.1:7000\n server a 10.0.0.1:80 on-marked-down shutdown-sessions\n server b 10.0.0.2:80\n",
            4,
            "on-marked-down",
        );
        assert_error(
            "listen l\n bind 127.0.0.1:7000\n server a 10.0.0.1:80 maxqueue 3\n server b 10.0.0.2:80 maxqueue 4\n",
            4,
            "maxqueue",
        );
    }
}
