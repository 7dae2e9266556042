//! `timeout client|server|connect|check|queue` and HAProxy's time format
//! (a number with an optional unit `us`, `ms`, `s`, `m`, `h` or `d`;
//! milliseconds without one).
//!
//! `timeout client` is the listener's `client_idle`, `timeout server` and
//! `timeout connect` the `member_idle` and `member_connect` of the
//! listeners that use the backend, `timeout queue` the pool's
//! `queue_timeout`, `timeout check` the health check's `timeout`.
//! `timeout tunnel` and `timeout server-fin` are the `tunnel_idle` and
//! `member_fin` of the listeners that use the backend, `timeout
//! client-fin` the listener's `client_fin`; the HTTP timeouts are
//! HTTP-only.

use std::time::Duration;

use super::sections::{arg_count, At, Ctx, Parts, Settings};

#[derive(Debug, Clone, Default)]
pub struct Timeouts {
    pub client: Option<At<Duration>>,
    pub server: Option<At<Duration>>,
    pub connect: Option<At<Duration>>,
    pub check: Option<At<Duration>>,
    pub queue: Option<At<Duration>>,
    pub tunnel: Option<At<Duration>>,
    pub client_fin: Option<At<Duration>>,
    pub server_fin: Option<At<Duration>>,
}

/// HTTP-only timeouts: ignored by `mode tcp` proxies, as in HAProxy.
const HTTP_TIMEOUTS: &[&str] = &["http-request", "http-keep-alive", "tarpit"];

pub fn keyword(
    ctx: &mut Ctx,
    settings: &mut Settings,
    parts: Option<&mut Parts>,
) -> Option<Result<(), String>> {
    let words = ctx.words;
    match words[0].as_str() {
        "timeout" => Some(timeout(ctx, settings, parts)),
        "contimeout" | "clitimeout" | "srvtimeout" => Some(Err(format!(
            "'{}' was removed from HAProxy; use 'timeout connect|client|server'",
            words[0]
        ))),
        _ => None,
    }
}

fn timeout(
    ctx: &mut Ctx,
    settings: &mut Settings,
    parts: Option<&mut Parts>,
) -> Result<(), String> {
    let words = ctx.words;
    arg_count(words, 1, 2..=2, "timeout <name> <time>")?;
    let name = words[1].as_str();
    let value = parse_time(&words[2], &format!("timeout {name}"))?;
    if value.is_zero() && !HTTP_TIMEOUTS.contains(&name) {
        return Err(format!(
            "'timeout {name} {}': 0 (no timeout) is not supported; lbd's timeouts are at most \
             30 days",
            words[2]
        ));
    }
    let kind = ctx.kind;
    let slot = match name {
        "client" if kind.frontend_side() => &mut settings.timeouts.client,
        "server" if kind.backend_side() => &mut settings.timeouts.server,
        "connect" if kind.backend_side() => &mut settings.timeouts.connect,
        "check" if kind.backend_side() => &mut settings.timeouts.check,
        "queue" if kind.backend_side() => &mut settings.timeouts.queue,
        "tunnel" if kind.backend_side() => &mut settings.timeouts.tunnel,
        "client-fin" if kind.frontend_side() => &mut settings.timeouts.client_fin,
        "server-fin" if kind.backend_side() => &mut settings.timeouts.server_fin,
        "client" | "server" | "connect" | "check" | "queue" | "tunnel" | "client-fin"
        | "server-fin" => {
            ctx.warn(format!(
                "ignored: a {} has no {} side (as in HAProxy)",
                kind.name(),
                if name.starts_with("client") {
                    "frontend"
                } else {
                    "backend"
                }
            ));
            return Ok(());
        }
        n if HTTP_TIMEOUTS.contains(&n) => {
            match parts {
                None => settings.http_only.push(ctx.at(words.join(" "))),
                Some(_) => ctx.warn("ignored: it needs 'mode http' (as in HAProxy)"),
            }
            return Ok(());
        }
        other => return Err(format!("unknown timeout 'timeout {other}'")),
    };
    *slot = Some(ctx.at(value));
    Ok(())
}

/// HAProxy's time format: `50000` (ms), `500ms`, `5s`, `2m`, `1h`, `1d`,
/// `100us`.
pub fn parse_time(text: &str, what: &str) -> Result<Duration, String> {
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let bad = || format!("{what} {text:?} is not a time (e.g. 5000, 500ms, 5s, 2m, 1h, 1d)");
    let n: u64 = number.parse().map_err(|_| bad())?;
    let scale = |per: u64, make: fn(u64) -> Duration| -> Result<Duration, String> {
        n.checked_mul(per)
            .map(make)
            .filter(|d| *d <= crate::validate::MAX_DURATION)
            .ok_or_else(|| format!("{what} {text:?} is too large (at most 30 days)"))
    };
    match unit {
        "" | "ms" => scale(1, Duration::from_millis),
        "us" => scale(1, Duration::from_micros),
        "s" => scale(1, Duration::from_secs),
        "m" => scale(60, Duration::from_secs),
        "h" => scale(3600, Duration::from_secs),
        "d" => scale(86_400, Duration::from_secs),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::haproxy::test_util::*;

    #[test]
    fn time_format() {
        for (text, ms) in [
            ("50000", 50_000),
            ("500ms", 500),
            ("5s", 5_000),
            ("2m", 120_000),
            ("1h", 3_600_000),
            ("1d", 86_400_000),
            ("0", 0),
        ] {
            assert_eq!(
                parse_time(text, "t"),
                Ok(Duration::from_millis(ms)),
                "{text}"
            );
        }
        assert_eq!(parse_time("1500us", "t"), Ok(Duration::from_micros(1500)));
        for text in ["", "5x", "s", "-1", "1.5s", "31d", "99999999999999999999"] {
            assert!(parse_time(text, "t").is_err(), "{text}");
        }
    }

    #[test]
    fn timeouts_map_to_listener_and_pool() {
        let file = convert_ok(
            "defaults\n timeout connect 4s\n timeout client 30s\n timeout server 40s\n\
             frontend f\n bind 127.0.0.1:7000\n default_backend b\n timeout client 1m\n\
             backend b\n timeout queue 2s\n timeout server 90000\n server s 127.0.0.1:7001\n",
        );
        let l = &file.listeners[0];
        assert_eq!(l.client_idle.as_deref(), Some("1m"));
        assert_eq!(l.member_connect.as_deref(), Some("4s"));
        assert_eq!(l.member_idle.as_deref(), Some("1m 30s"));
        assert_eq!(file.pools[0].queue_timeout.as_deref(), Some("2s"));
        assert_eq!(l.tunnel_idle, None);
        assert_eq!(l.client_fin, None);
        assert_eq!(l.member_fin, None);
    }

    #[test]
    fn tunnel_and_fin_timeouts_map_to_the_listener() {
        let file = convert_ok(
            "defaults\n timeout connect 4s\n timeout client 30s\n timeout server 40s\n\
             timeout tunnel 1h\n\
             frontend f\n bind 127.0.0.1:7000\n default_backend b\n timeout client-fin 5s\n\
             backend b\n timeout server-fin 7s\n server s 127.0.0.1:7001\n",
        );
        let l = &file.listeners[0];
        assert_eq!(l.tunnel_idle.as_deref(), Some("1h"));
        assert_eq!(l.client_fin.as_deref(), Some("5s"));
        assert_eq!(l.member_fin.as_deref(), Some("7s"));
    }

    #[test]
    fn timeout_errors() {
        for (line, reason) in [
            ("timeout client", "expects 2 argument(s)"),
            ("timeout client 5x", "is not a time"),
            ("timeout client 0", "0 (no timeout) is not supported"),
            ("timeout nope 5s", "unknown timeout 'timeout nope'"),
            ("clitimeout 5s", "was removed from HAProxy"),
        ] {
            let text =
                format!("listen l\n bind 127.0.0.1:7000\n {line}\n server s 127.0.0.1:7001\n");
            assert_error(&text, 3, reason);
        }
    }

    #[test]
    fn http_and_misplaced_timeouts_warn() {
        let warnings = convert_warnings(
            "defaults\n timeout http-request 5s\nfrontend f\n bind 127.0.0.1:7000\n\
             default_backend b\n timeout server 5s\nbackend b\n timeout client 5s\n\
             server s 127.0.0.1:7001\n",
        );
        assert_warning(&warnings, 2, "HTTP-only");
        assert_warning(&warnings, 6, "a frontend has no backend side");
        assert_warning(&warnings, 8, "a backend has no frontend side");
    }
}
