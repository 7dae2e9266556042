//! The stats proxy: a `listen` or `frontend` with `stats enable`, `stats
//! uri` or `http-request use-service prometheus-exporter if { path
//! /metrics }`. It becomes lbd's admin server on its `bind`: the stats
//! page at `/`, `/stats.csv`, `/stats.json` and `/metrics` (and the
//! runtime API, whose writes need a loopback bind or a `token_file`).
//! Such a proxy may be `mode http`; it carries no traffic. `stats auth
//! user:password` (repeatable) and `stats realm` become `stats_users` and
//! `stats_realm`: HTTP basic auth on those pages.

use super::sections::{arg_count, At, Ctx, Parts, Settings};
use super::timeouts::parse_time;

#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub enable: Option<super::Loc>,
    pub uri: Option<At<String>>,
    pub refresh: Option<At<String>>,
    pub prometheus: Option<super::Loc>,
    /// `stats auth user:password`, in file order.
    pub auth: Vec<At<String>>,
    pub realm: Option<At<String>>,
}

impl Stats {
    /// Whether the proxy is a stats proxy.
    pub fn is_stats(&self) -> bool {
        self.enable.is_some() || self.uri.is_some() || self.prometheus.is_some()
    }
}

pub fn keyword(
    ctx: &mut Ctx,
    _settings: &mut Settings,
    parts: Option<&mut Parts>,
) -> Option<Result<(), String>> {
    let words = ctx.words;
    match words[0].as_str() {
        "stats" => Some(stats(ctx, parts)),
        "http-request"
            if words.get(1).map(String::as_str) == Some("use-service")
                && words.get(2).map(String::as_str) == Some("prometheus-exporter") =>
        {
            Some(prometheus(ctx, parts))
        }
        _ => None,
    }
}

fn stats(ctx: &mut Ctx, parts: Option<&mut Parts>) -> Result<(), String> {
    let words = ctx.words;
    arg_count(
        words,
        1,
        1..=usize::MAX,
        "stats enable|uri|refresh|auth|realm ...",
    )?;
    let Some(parts) = parts else {
        return Err(
            "'stats' in a 'defaults' section is not supported: put it in the stats 'listen' \
             section"
                .to_owned(),
        );
    };
    if !ctx.kind.frontend_side() {
        return Err(format!(
            "'stats {}' in a 'backend' section is not supported: lbd serves its stats page on a \
             'listen' or 'frontend' bind",
            words[1]
        ));
    }
    match words[1].as_str() {
        "enable" => {
            arg_count(words, 2, 0..=0, "stats enable")?;
            parts.stats.enable = Some(ctx.loc.clone());
        }
        "uri" => {
            arg_count(words, 2, 1..=1, "stats uri <prefix>")?;
            parts.stats.uri = Some(ctx.at(words[2].clone()));
        }
        "refresh" => {
            arg_count(words, 2, 1..=1, "stats refresh <time>")?;
            let every = parse_time(&words[2], "stats refresh")?;
            parts.stats.refresh = Some(ctx.at(words[2].clone()));
            ctx.warn(format!(
                "lbd's page refreshes when asked in its URL (/?refresh={}); ignored",
                every.as_secs().max(1)
            ));
        }
        "auth" => {
            arg_count(words, 2, 1..=1, "stats auth <user>:<passwd>")?;
            if !words[2].contains(':') {
                return Err("'stats auth' expects <user>:<passwd>".to_owned());
            }
            parts.stats.auth.push(ctx.at(words[2].clone()));
        }
        "realm" => {
            arg_count(words, 2, 1..=1, "stats realm <realm>")?;
            parts.stats.realm = Some(ctx.at(words[2].clone()));
        }
        "admin" => ctx.warn(
            "lbd's stats page is read-only; change members through the runtime API \
             (PUT /api/pools/...); ignored",
        ),
        "show-legends" | "show-node" | "show-desc" | "hide-version" | "scope" | "show-modules"
        | "bind-process" => ctx.warn("not supported by lbd's stats page; ignored"),
        other => return Err(format!("unknown 'stats {other}'")),
    }
    Ok(())
}

/// `http-request use-service prometheus-exporter if { path /metrics }`:
/// lbd serves `/metrics` there.
fn prometheus(ctx: &mut Ctx, parts: Option<&mut Parts>) -> Result<(), String> {
    let Some(parts) = parts else {
        return Err("'http-request' in a 'defaults' section is not supported here".to_owned());
    };
    let cond: Vec<&str> = ctx.words[3..].iter().map(String::as_str).collect();
    match cond.as_slice() {
        [] | ["if", "{", "path", "/metrics", "}"] => {
            parts.stats.prometheus = Some(ctx.loc.clone());
            Ok(())
        }
        _ => Err(
            "only 'http-request use-service prometheus-exporter if { path /metrics }' is \
             supported: lbd serves /metrics on its stats listener"
                .to_owned(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use crate::haproxy::test_util::*;

    const TRAFFIC: &str = "defaults\n timeout connect 5s\n timeout client 5s\n timeout server 5s\n\
                           listen l\n bind 127.0.0.1:7000\n server a 10.0.0.1:80\n";

    #[test]
    fn stats_listen_becomes_the_admin_bind() {
        let text = format!(
            "{TRAFFIC}listen stats\n bind 127.0.0.1:8404\n mode http\n stats enable\n \
             stats uri /\n stats refresh 10s\n \
             http-request use-service prometheus-exporter if {{ path /metrics }}\n"
        );
        let file = convert_ok(&text);
        assert_eq!(file.listeners.len(), 1);
        assert_eq!(
            file.admin.and_then(|a| a.bind).as_deref(),
            Some("127.0.0.1:8404")
        );
        let warnings = convert_warnings(&text);
        assert_warning(&warnings, 13, "/?refresh=10");
    }

    #[test]
    fn stats_auth_and_realm() {
        let file = convert_ok(&format!(
            "{TRAFFIC}listen stats\n bind 127.0.0.1:8404\n mode http\n stats enable\n \
             stats auth admin:s3cret\n stats auth ops:a:b\n stats realm My\\ LB\n"
        ));
        let admin = file.admin.expect("admin");
        assert_eq!(admin.stats_users, ["admin:s3cret", "ops:a:b"]);
        assert_eq!(admin.stats_realm.as_deref(), Some("My LB"));
        // A realm without users protects nothing: a warning.
        let text =
            format!("{TRAFFIC}listen stats\n bind 127.0.0.1:8404\n stats enable\n stats realm x\n");
        let admin = convert_ok(&text).admin.expect("admin");
        assert_eq!(admin.stats_realm, None);
        assert_warning(&convert_warnings(&text), 11, "no 'stats auth'");
    }

    #[test]
    fn octavia_prometheus_frontend() {
        let file = convert_ok(&format!(
            "{TRAFFIC}frontend prometheus-exporter-internal-endpoint\n bind 127.0.0.1:9101\n \
             mode http\n no log\n http-request use-service prometheus-exporter if {{ path /metrics }}\n \
             http-request reject\n timeout http-request 5s\n timeout client 5s\n"
        ));
        assert_eq!(
            file.admin.and_then(|a| a.bind).as_deref(),
            Some("127.0.0.1:9101")
        );
    }

    #[test]
    fn stats_errors() {
        for (lines, line, reason) in [
            (" stats auth admin", 12, "expects <user>:<passwd>"),
            (" stats realm", 12, "expects 1 argument(s)"),
            (" stats frob", 12, "unknown 'stats frob'"),
            (" stats uri", 12, "expects 1 argument(s)"),
            (
                " http-request use-service prometheus-exporter if { path /x }",
                12,
                "only 'http-request use-service",
            ),
        ] {
            assert_error(
                &format!("{TRAFFIC}listen stats\n bind 127.0.0.1:8404\n mode http\n stats enable\n{lines}\n"),
                line,
                reason,
            );
        }
        assert_error(
            &format!(
                "{TRAFFIC}listen s1\n bind 127.0.0.1:8404\n stats enable\nlisten s2\n \
                 bind 127.0.0.1:8405\n stats enable\n"
            ),
            11,
            "a second stats",
        );
        assert_error(
            &format!("{TRAFFIC}listen s1\n bind 127.0.0.1:8404,127.0.0.1:8405\n stats enable\n"),
            8,
            "one address",
        );
    }
}
