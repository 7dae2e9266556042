//! Health checks: `option httpchk`, `http-check expect|send|connect`,
//! `option ssl-hello-chk`, `option external-check` with `external-check
//! command|path`, `option tcp-check` with `tcp-check connect|send|
//! send-binary|expect`, `option redis-check`, and the servers' `check`,
//! `inter`, `rise`, `fall`, `addr`, `port`, `check-ssl`, `verify`,
//! `ca-file`, `crt`, `check-sni`; all become the pool's `[pool.health]`.
//!
//! | HAProxy | lbd check `type` |
//! |---|---|
//! | `check` | `tcp` |
//! | `check check-ssl` (or `http-check connect ssl` without httpchk) | `tls_hello` |
//! | `option ssl-hello-chk` | `tls_hello` (a full handshake) |
//! | `option httpchk` | `http`, or `https` with `check-ssl` / `http-check connect ssl` |
//! | `option external-check` | `external` |
//! | `option tcp-check` + `tcp-check` rules, `option redis-check` | `tcp_script` |
//!
//! As in HAProxy, a proxy's own `http-check`/`tcp-check` rules replace
//! those it inherits from `defaults`. Without `http-check expect` an HTTP
//! check passes on 2xx and 3xx, as HAProxy's does.

use std::time::Duration;

use super::sections::{arg_count, At, Ctx, Parts, Proxy, Settings};
use super::server::{Server, Verify};
use super::{Diags, Reported};
use crate::file::{ConnectSection, HealthSection, ScriptStepSection};
use crate::model::{DEFAULT_CHECK_INTERVAL, DEFAULT_FALL, DEFAULT_RISE};

/// The check `option` of a proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckOption {
    HttpChk(HttpRequest),
    SslHello,
    External,
    TcpCheck,
    Redis,
}

/// The request of an HTTP check.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpRequest {
    pub method: Option<String>,
    pub uri: Option<String>,
    pub host: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct CheckSettings {
    pub option: Option<At<CheckOption>>,
    /// `http-check expect`: the codes, in lbd's `expected_codes` syntax.
    pub expect: Option<At<String>>,
    /// `http-check send`.
    pub send: Option<At<HttpRequest>>,
    /// `http-check connect`: TLS, and a port.
    pub connect_ssl: Option<At<bool>>,
    pub connect_port: Option<At<u16>>,
    /// `tcp-check` rules.
    pub steps: Vec<At<ScriptStepSection>>,
    pub external_command: Option<At<String>>,
    pub external_path: Option<At<String>>,
    /// The section's own `http-check` / `tcp-check` lines began (those
    /// inherited were dropped).
    own_http: bool,
    own_tcp: bool,
}

impl CheckSettings {
    /// Called when a section starts from these settings: its own rules
    /// will replace the inherited ones.
    pub fn inherit(&mut self) {
        self.own_http = false;
        self.own_tcp = false;
    }

    fn own_http_rules(&mut self) {
        if !self.own_http {
            self.expect = None;
            self.send = None;
            self.connect_ssl = None;
            self.connect_port = None;
            self.own_http = true;
        }
    }
}

/// `option httpchk|ssl-hello-chk|external-check|tcp-check|redis-check`
/// (and those lbd refuses); `None` if `name` is not a check option.
pub fn option(
    ctx: &mut Ctx,
    settings: &mut Settings,
    name: &str,
    args: &[String],
    negated: bool,
) -> Option<Result<(), String>> {
    let option = match name {
        "httpchk" => match http_request_args(args) {
            Ok(request) => CheckOption::HttpChk(request),
            Err(e) => return Some(Err(e)),
        },
        "ssl-hello-chk" => CheckOption::SslHello,
        "external-check" => CheckOption::External,
        "tcp-check" => CheckOption::TcpCheck,
        "redis-check" => CheckOption::Redis,
        "ldap-check" | "mysql-check" | "pgsql-check" | "smtpchk" | "spop-check" => {
            return Some(Err(format!(
                "'option {name}' is not supported: lbd's checks are tcp, http(s), tls_hello, \
                 external or tcp_script ('option tcp-check' with tcp-check rules)"
            )))
        }
        _ => return None,
    };
    if !matches!(option, CheckOption::HttpChk(_)) && !args.is_empty() {
        return Some(Err(format!("'option {name}' takes no argument")));
    }
    if negated {
        if settings
            .checks
            .option
            .as_ref()
            .is_some_and(|o| std::mem::discriminant(&o.value) == std::mem::discriminant(&option))
        {
            settings.checks.option = None;
        }
    } else {
        settings.checks.option = Some(ctx.at(option));
    }
    Some(Ok(()))
}

/// `option httpchk [<method>] <uri> [<version>]`; the version may carry
/// headers (`HTTP/1.1\r\nHost:\ example`), of which `Host` is kept.
fn http_request_args(args: &[String]) -> Result<HttpRequest, String> {
    let (method, uri, version) =
        match args {
            [] => (None, None, None),
            [uri] => (None, Some(uri), None),
            [method, uri] => (Some(method), Some(uri), None),
            [method, uri, version] => (Some(method), Some(uri), Some(version)),
            _ => return Err(
                "'option httpchk' expects at most 3 arguments (usage: option httpchk [<method>] \
                 <uri> [<version>])"
                    .to_owned(),
            ),
        };
    let mut request = HttpRequest {
        method: method.cloned(),
        uri: uri.cloned(),
        host: None,
    };
    if let Some(version) = version {
        let mut lines = version.split("\r\n");
        check_version(lines.next().unwrap_or_default())?;
        for header in lines.filter(|l| !l.is_empty()) {
            request.host = Some(host_header(header)?);
        }
    }
    Ok(request)
}

fn check_version(version: &str) -> Result<(), String> {
    match version {
        "HTTP/1.0" | "HTTP/1.1" => Ok(()),
        other => Err(format!(
            "HTTP version '{other}' is not supported: lbd's checks speak HTTP/1.1"
        )),
    }
}

fn host_header(header: &str) -> Result<String, String> {
    match header.split_once(':') {
        Some((name, value)) if name.trim().eq_ignore_ascii_case("host") => {
            Ok(value.trim().to_owned())
        }
        _ => Err(format!(
            "check request header '{header}' is not supported: lbd's HTTP checks send only a \
             Host header"
        )),
    }
}

pub fn keyword(
    ctx: &mut Ctx,
    settings: &mut Settings,
    _parts: Option<&mut Parts>,
) -> Option<Result<(), String>> {
    let words = ctx.words;
    let result = match words[0].as_str() {
        "http-check" => http_check(ctx, settings),
        "tcp-check" => tcp_check(ctx, settings),
        "external-check" => external_check(ctx, settings),
        _ => return None,
    };
    if result.is_ok() && !ctx.kind.backend_side() {
        ctx.warn("ignored: a frontend has no backend side (as in HAProxy)");
    }
    Some(result)
}

/// Skips `comment <text>` pairs, which lbd does not use.
fn without_comments(words: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < words.len() {
        if words[i] == "comment" {
            i += 2;
        } else {
            out.push(words[i].clone());
            i += 1;
        }
    }
    out
}

fn http_check(ctx: &mut Ctx, settings: &mut Settings) -> Result<(), String> {
    arg_count(
        ctx.words,
        1,
        1..=usize::MAX,
        "http-check expect|send|connect ...",
    )?;
    let action = ctx.words[1].as_str();
    let args = without_comments(ctx.args(2));
    let checks = &mut settings.checks;
    match action {
        "expect" => {
            checks.own_http_rules();
            if let Some(previous) = &checks.expect {
                return Err(format!(
                    "a second 'http-check expect' (the first is at {}): lbd's HTTP checks \
                     have one expectation",
                    previous.loc
                ));
            }
            let codes = match args.as_slice() {
                [neg, ..] if neg == "!" => {
                    return Err(
                        "'http-check expect !': negated expectations are not supported".to_owned(),
                    )
                }
                [kind, pattern] if kind == "status" => {
                    status_codes(pattern)?;
                    pattern.clone()
                }
                [kind, pattern] if kind == "rstatus" => rstatus_codes(pattern)?,
                [kind, ..]
                    if [
                        "string",
                        "rstring",
                        "hdr",
                        "fhdr",
                        "rstring-lf",
                        "string-lf",
                    ]
                    .contains(&kind.as_str()) =>
                {
                    return Err(format!(
                        "'http-check expect {kind}' is not supported: lbd's HTTP checks match the \
                         status code only"
                    ))
                }
                _ => {
                    return Err(
                        "'http-check expect' expects 'status <codes>' or 'rstatus <regex>' (other \
                         options are not supported)"
                            .to_owned(),
                    )
                }
            };
            checks.expect = Some(ctx.at(codes));
        }
        "send" => {
            checks.own_http_rules();
            let mut request = HttpRequest::default();
            let mut i = 0;
            while i < args.len() {
                let value = args
                    .get(i + 1)
                    .ok_or_else(|| format!("'http-check send {}' expects an argument", args[i]))?;
                match args[i].as_str() {
                    "meth" => request.method = Some(value.clone()),
                    "uri" => request.uri = Some(value.clone()),
                    "ver" => check_version(value)?,
                    "hdr" => {
                        let header_value = args.get(i + 2).ok_or_else(|| {
                            "'http-check send hdr' expects a name and a value".to_owned()
                        })?;
                        request.host = Some(host_header(&format!("{value}: {header_value}"))?);
                        i += 1;
                    }
                    other => {
                        return Err(format!(
                            "'http-check send {other}' is not supported (lbd sends a method, a \
                             URI and a Host header)"
                        ))
                    }
                }
                i += 2;
            }
            checks.send = Some(ctx.at(request));
        }
        "connect" => {
            checks.own_http_rules();
            let mut i = 0;
            while i < args.len() {
                match args[i].as_str() {
                    "ssl" => checks.connect_ssl = Some(ctx.at(true)),
                    "default" | "linger" => {}
                    "port" => {
                        let port = args
                            .get(i + 1)
                            .ok_or("'http-check connect port' expects a port")?;
                        let port = super::sections::number(port, "port", 1..=65_535)?;
                        checks.connect_port = Some(ctx.at(u16::try_from(port).unwrap_or(1)));
                        i += 1;
                    }
                    other => {
                        return Err(format!(
                            "'http-check connect {other}' is not supported (lbd takes 'ssl' and \
                             'port')"
                        ))
                    }
                }
                i += 1;
            }
        }
        "comment" => {}
        "disable-on-404" => {
            return Err(
                "'http-check disable-on-404' is not supported: lbd does not drain members by \
                 their check answer"
                    .to_owned(),
            )
        }
        "send-state" => ctx.warn("lbd's checks send no state header; ignored"),
        other => return Err(format!("unknown 'http-check {other}'")),
    }
    Ok(())
}

/// Checks an `expected_codes`-style list: `200`, `200,202`, `200-299`.
fn status_codes(text: &str) -> Result<(), String> {
    let ok = text.split(',').all(|part| {
        let mut ends = part.splitn(2, '-');
        ends.all(|n| n.len() == 3 && n.parse::<u16>().is_ok_and(|c| (100..=599).contains(&c)))
    });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "'http-check expect status {text}': expected status codes such as 200, 200,202 or \
             200-299"
        ))
    }
}

/// The codes 100-599 a `rstatus` regular expression matches, as lbd's
/// `expected_codes` (Octavia renders `200|202` for `200,202`).
pub fn rstatus_codes(regex: &str) -> Result<String, String> {
    let re = regex::Regex::new(regex).map_err(|e| {
        format!("'http-check expect rstatus {regex}': not a regular expression: {e}")
    })?;
    let mut ranges: Vec<(u16, u16)> = Vec::new();
    for code in 100u16..=599 {
        if re.is_match(&code.to_string()) {
            match ranges.last_mut() {
                Some((_, end)) if *end + 1 == code => *end = code,
                _ => ranges.push((code, code)),
            }
        }
    }
    if ranges.is_empty() {
        return Err(format!(
            "'http-check expect rstatus {regex}' matches no status code (100-599)"
        ));
    }
    Ok(ranges
        .iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(","))
}

fn tcp_check(ctx: &mut Ctx, settings: &mut Settings) -> Result<(), String> {
    arg_count(
        ctx.words,
        1,
        1..=usize::MAX,
        "tcp-check connect|send|send-binary|expect ...",
    )?;
    let action = ctx.words[1].as_str();
    let args = without_comments(ctx.args(2));
    let checks = &mut settings.checks;
    if !checks.own_tcp {
        checks.steps.clear();
        checks.own_tcp = true;
    }
    let one = |args: &[String], usage: &str| -> Result<String, String> {
        match args {
            [value] => Ok(value.clone()),
            _ => Err(format!(
                "'tcp-check {action}' expects one argument (usage: {usage})"
            )),
        }
    };
    let mut step = ScriptStepSection::default();
    match action {
        "connect" => {
            let mut port = None;
            let mut i = 0;
            while i < args.len() {
                match args[i].as_str() {
                    "port" => {
                        let p = args
                            .get(i + 1)
                            .ok_or("'tcp-check connect port' expects a port")?;
                        port = Some(i64::from(super::sections::number(p, "port", 1..=65_535)?));
                        i += 1;
                    }
                    "default" | "linger" => {}
                    other => {
                        return Err(format!(
                            "'tcp-check connect {other}' is not supported (lbd takes 'port')"
                        ))
                    }
                }
                i += 1;
            }
            step.connect = Some(ConnectSection { port });
        }
        "send" => step.send = Some(one(&args, "tcp-check send <data>")?),
        "send-binary" => step.send_binary = Some(one(&args, "tcp-check send-binary <hex>")?),
        "expect" => {
            match args.as_slice() {
                [neg, ..] if neg == "!" => {
                    return Err(
                        "'tcp-check expect !': negated expectations are not supported".to_owned(),
                    )
                }
                [kind, pattern] => match kind.as_str() {
                    "string" => step.expect_string = Some(pattern.clone()),
                    "rstring" => step.expect_rstring = Some(pattern.clone()),
                    "binary" => step.expect_binary = Some(pattern.clone()),
                    other => {
                        return Err(format!(
                        "'tcp-check expect {other}' is not supported (lbd takes string, rstring \
                         and binary)"
                    ))
                    }
                },
                _ => return Err(
                    "'tcp-check expect' expects string|rstring|binary <pattern> (other options \
                     are not supported)"
                        .to_owned(),
                ),
            }
        }
        "comment" => return Ok(()),
        other => return Err(format!("'tcp-check {other}' is not supported")),
    }
    checks.steps.push(ctx.at(step));
    Ok(())
}

fn external_check(ctx: &mut Ctx, settings: &mut Settings) -> Result<(), String> {
    arg_count(ctx.words, 1, 2..=2, "external-check command|path <value>")?;
    let value = ctx.at(ctx.words[2].clone());
    match ctx.words[1].as_str() {
        "command" => settings.checks.external_command = Some(value),
        "path" => settings.checks.external_path = Some(value),
        other => return Err(format!("unknown 'external-check {other}'")),
    }
    Ok(())
}

/// Check settings all checked servers of a backend must share in lbd.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Shared {
    inter: Duration,
    rise: u32,
    fall: u32,
    ssl: bool,
    ca_file: Option<String>,
    crt: Option<String>,
    sni: Option<String>,
}

/// The pool's `[pool.health]` from the proxy's check settings and its
/// servers' `check` options; `Err` when lbd cannot express them (reasons
/// with the line they are about go to `diags`).
pub fn health_section(
    proxy: &Proxy,
    servers: &[At<Server>],
    diags: &mut Diags,
) -> Result<Option<HealthSection>, Reported> {
    let checks = &proxy.settings.checks;
    let checked: Vec<&At<Server>> = servers
        .iter()
        .filter(|s| s.value.options.check == Some(true))
        .collect();
    if checked.is_empty() {
        if let Some(option) = &checks.option {
            diags.warn(
                Some(option.loc.clone()),
                format!(
                    "backend '{}': no server has 'check', so nothing is checked (as in HAProxy)",
                    proxy.name
                ),
            );
        }
        return Ok(None);
    }
    if let Some(unchecked) = servers.iter().find(|s| s.value.options.check != Some(true)) {
        diags.error(
            Some(unchecked.loc.clone()),
            format!(
                "server '{}' has no 'check' while others in backend '{}' have: lbd checks all \
                 members of a pool or none",
                unchecked.value.name, proxy.name
            ),
        );
        return Err(Reported);
    }
    let mut failed = false;
    let shared = |s: &Server, diags: &mut Diags, loc: &super::Loc| -> Option<Shared> {
        let o = &s.options;
        let ssl = o.check_ssl == Some(true);
        let verify = o.verify.unwrap_or(Verify::Required);
        let ca_file = match (verify, &o.ca_file) {
            (Verify::Required, None) if ssl => {
                diags.error(
                    Some(loc.clone()),
                    format!(
                        "server '{}': 'check-ssl' verifies the certificate by default but no \
                         'ca-file' is given; add 'verify none' or a 'ca-file' (as HAProxy requires)",
                        s.name
                    ),
                );
                return None;
            }
            (Verify::None, Some(_)) => {
                diags.warn(
                    Some(loc.clone()),
                    format!(
                        "server '{}': 'ca-file' with 'verify none': the certificate is not \
                         verified; ca-file ignored",
                        s.name
                    ),
                );
                None
            }
            (_, ca) => ca.clone(),
        };
        Some(Shared {
            inter: o.inter.unwrap_or(DEFAULT_CHECK_INTERVAL),
            rise: o.rise.unwrap_or(DEFAULT_RISE),
            fall: o.fall.unwrap_or(DEFAULT_FALL),
            ssl,
            ca_file: ca_file.filter(|_| ssl),
            crt: o.crt.clone().filter(|_| ssl),
            sni: o.check_sni.clone().filter(|_| ssl),
        })
    };
    let first = checked[0];
    let Some(reference) = shared(&first.value, diags, &first.loc) else {
        return Err(Reported);
    };
    for server in &checked[1..] {
        match shared(&server.value, diags, &server.loc) {
            None => failed = true,
            Some(s) if s != reference => {
                diags.error(
                    Some(server.loc.clone()),
                    format!(
                        "server '{}' is checked differently from server '{}' (inter, rise, fall, \
                         check-ssl, ca-file, crt or check-sni): lbd's checks are per pool",
                        server.value.name, first.value.name
                    ),
                );
                failed = true;
            }
            Some(_) => {}
        }
    }
    if failed {
        return Err(Reported);
    }
    let ssl = reference.ssl || checks.connect_ssl.as_ref().is_some_and(|c| c.value);
    let mut health = HealthSection {
        interval: Some(text(reference.inter)),
        rise: Some(i64::from(reference.rise)),
        fall: Some(i64::from(reference.fall)),
        ..HealthSection::default()
    };
    // HAProxy's check timeout is 'timeout check' (else 'inter'); lbd's
    // must not exceed the interval.
    let timeout = match &proxy.settings.timeouts.check {
        Some(t) if t.value > reference.inter => {
            diags.warn(
                Some(t.loc.clone()),
                format!(
                    "'timeout check' {} is longer than 'inter' {}: lbd starts a check every \
                     interval and bounds each by it, so the timeout is {}",
                    text(t.value),
                    text(reference.inter),
                    text(reference.inter)
                ),
            );
            reference.inter
        }
        Some(t) => t.value,
        None => reference.inter,
    };
    health.timeout = Some(text(timeout));
    let kind = match checks.option.as_ref().map(|o| &o.value) {
        None if ssl => "tls_hello",
        None => "tcp",
        Some(CheckOption::SslHello) => "tls_hello",
        Some(CheckOption::HttpChk(request)) => {
            let send = checks.send.as_ref().map(|s| &s.value);
            let method = send
                .and_then(|s| s.method.clone())
                .or_else(|| request.method.clone());
            health.method = Some(method.unwrap_or_else(|| "OPTIONS".to_owned()));
            let uri = send
                .and_then(|s| s.uri.clone())
                .or_else(|| request.uri.clone());
            health.path = Some(uri.unwrap_or_else(|| "/".to_owned()));
            health.host = send
                .and_then(|s| s.host.clone())
                .or_else(|| request.host.clone());
            // HAProxy passes 2xx and 3xx when nothing is expected.
            health.expected_codes = Some(
                checks
                    .expect
                    .as_ref()
                    .map_or_else(|| "200-399".to_owned(), |e| e.value.clone()),
            );
            if ssl {
                "https"
            } else {
                "http"
            }
        }
        Some(CheckOption::External) => {
            let Some(command) = &checks.external_command else {
                diags.error(
                    checks.option.as_ref().map(|o| o.loc.clone()),
                    format!(
                        "backend '{}': 'option external-check' needs 'external-check command'",
                        proxy.name
                    ),
                );
                return Err(Reported);
            };
            health.command = vec![command.value.clone()];
            health.command_path = checks.external_path.as_ref().map(|p| p.value.clone());
            "external"
        }
        Some(CheckOption::TcpCheck) if checks.steps.is_empty() => "tcp",
        Some(CheckOption::TcpCheck) => {
            health.steps = checks.steps.iter().map(|s| s.value.clone()).collect();
            "tcp_script"
        }
        Some(CheckOption::Redis) => {
            health.steps = vec![
                ScriptStepSection {
                    send: Some("PING\r\n".to_owned()),
                    ..ScriptStepSection::default()
                },
                ScriptStepSection {
                    expect_string: Some("+PONG".to_owned()),
                    ..ScriptStepSection::default()
                },
            ];
            "tcp_script"
        }
    };
    if matches!(kind, "https" | "tls_hello") {
        health.ca_file = reference.ca_file.clone();
        health.sni = reference.sni.clone();
        health.client_cert = reference.crt.clone();
        health.client_key = reference.crt.clone();
    } else if reference.ssl {
        diags.warn(
            Some(first.loc.clone()),
            format!("'check-ssl' is not used by {kind} checks; ignored"),
        );
    }
    if matches!(kind, "http" | "https")
        && servers
            .iter()
            .any(|s| s.value.options.proxy.flatten().is_some())
        && servers.iter().any(|s| s.value.options.port.is_none())
    {
        diags.warn(
            Some(first.loc.clone()),
            format!(
                "backend '{}': lbd's HTTP checks send no PROXY protocol header (HAProxy sends one \
                 when a 'send-proxy' server is checked on its traffic port); a member that \
                 requires the header fails them: check a 'port' that does not",
                proxy.name
            ),
        );
    }
    health.kind = Some(kind.to_owned());
    Ok(Some(health))
}

fn text(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::haproxy::test_util::*;

    const TIMEOUTS: &str =
        "defaults\n timeout connect 5s\n timeout client 5s\n timeout server 5s\n";

    fn health(backend: &str) -> HealthSection {
        let file = convert_ok(&format!(
            "{TIMEOUTS}listen l\n bind 127.0.0.1:7000\n{backend}\n"
        ));
        file.pools[0].health.clone().expect("a health check")
    }

    #[test]
    fn rstatus_to_codes() {
        for (re, codes) in [
            ("418", "418"),
            ("200|202", "200,202"),
            ("^2", "200-299"),
            ("^(2|3)[0-9][0-9]$", "200-399"),
            ("200|201|202|203|204", "200-204"),
        ] {
            assert_eq!(rstatus_codes(re).as_deref(), Ok(codes), "{re}");
        }
        assert!(rstatus_codes("^9").is_err());
        assert!(rstatus_codes("(").is_err());
    }

    #[test]
    fn tcp_check_by_default() {
        let h = health(" server a 10.0.0.1:80 check inter 3s rise 4 fall 5\n timeout check 1s");
        assert_eq!(h.kind.as_deref(), Some("tcp"));
        assert_eq!(h.interval.as_deref(), Some("3s"));
        assert_eq!(h.timeout.as_deref(), Some("1s"));
        assert_eq!(h.rise, Some(4));
        assert_eq!(h.fall, Some(5));
        // No 'timeout check': HAProxy bounds a check by 'inter'.
        let h = health(" server a 10.0.0.1:80 check");
        assert_eq!(
            (h.interval.as_deref(), h.timeout.as_deref()),
            (Some("2s"), Some("2s"))
        );
    }

    #[test]
    fn octavia_http_check() {
        let h = health(
            " timeout check 31s\n option httpchk GET /index.html HTTP/1.0\n \
             http-check expect rstatus 200|202\n \
             server a 10.0.0.1:80 weight 13 check inter 30s fall 3 rise 2 addr 192.168.1.1 port 9000",
        );
        assert_eq!(h.kind.as_deref(), Some("http"));
        assert_eq!(h.method.as_deref(), Some("GET"));
        assert_eq!(h.path.as_deref(), Some("/index.html"));
        assert_eq!(h.expected_codes.as_deref(), Some("200,202"));
        // 31s > inter 30s: bounded by the interval.
        assert_eq!(h.timeout.as_deref(), Some("30s"));
    }

    #[test]
    fn http_check_forms() {
        let h = health(" option httpchk\n server a 10.0.0.1:80 check");
        assert_eq!(
            (
                h.method.as_deref(),
                h.path.as_deref(),
                h.expected_codes.as_deref()
            ),
            (Some("OPTIONS"), Some("/"), Some("200-399"))
        );
        let h = health(" option httpchk /healthz\n server a 10.0.0.1:80 check");
        assert_eq!(h.path.as_deref(), Some("/healthz"));
        let h = health(
            " option httpchk GET /readyz \"HTTP/1.1\\r\\nHost: api.example\"\n \
             http-check expect status 200-204\n server a 10.0.0.1:80 check",
        );
        assert_eq!(h.host.as_deref(), Some("api.example"));
        assert_eq!(h.expected_codes.as_deref(), Some("200-204"));
        let h = health(
            " option httpchk\n http-check connect ssl\n http-check send meth HEAD uri /livez ver \
             HTTP/1.1 hdr Host k8s\n http-check expect status 200\n \
             server a 10.0.0.1:6443 check verify none",
        );
        assert_eq!(h.kind.as_deref(), Some("https"));
        assert_eq!(h.method.as_deref(), Some("HEAD"));
        assert_eq!(h.path.as_deref(), Some("/livez"));
        assert_eq!(h.host.as_deref(), Some("k8s"));
    }

    #[test]
    fn tls_checks() {
        let h = health(
            " option httpchk GET /\n server a 10.0.0.1:80 check check-ssl verify none check-sni x",
        );
        assert_eq!(h.kind.as_deref(), Some("https"));
        assert_eq!(h.sni.as_deref(), Some("x"));
        assert_eq!(h.ca_file, None);
        let h = health(" option ssl-hello-chk\n server a 10.0.0.1:80 check");
        assert_eq!(h.kind.as_deref(), Some("tls_hello"));
        let h = health(" server a 10.0.0.1:80 check check-ssl verify none");
        assert_eq!(h.kind.as_deref(), Some("tls_hello"));
        assert_error(
            &format!(
                "{TIMEOUTS}listen l\n bind 127.0.0.1:7000\n server a 10.0.0.1:80 check check-ssl\n"
            ),
            7,
            "no 'ca-file' is given",
        );
    }

    #[test]
    fn defaults_rules_are_replaced_by_the_proxys_own() {
        let h = health(
            " option httpchk GET /x\n http-check expect status 204\n server a 10.0.0.1:80 check",
        );
        assert_eq!(h.expected_codes.as_deref(), Some("204"));
        let file = convert_ok(&format!(
            "{TIMEOUTS} option httpchk GET /d\n http-check expect status 201\n\
             listen l\n bind 127.0.0.1:7000\n server a 10.0.0.1:80 check\n\
             listen m\n bind 127.0.0.1:7001\n http-check expect status 202\n server a 10.0.0.1:80 check\n"
        ));
        let codes: Vec<_> = file
            .pools
            .iter()
            .map(|p| p.health.as_ref().and_then(|h| h.expected_codes.clone()))
            .collect();
        assert_eq!(codes, [Some("201".to_owned()), Some("202".to_owned())]);
    }

    #[test]
    fn external_and_script_checks() {
        let h = health(
            " option external-check\n external-check command /var/lib/octavia/ping-wrapper.sh\n \
             external-check path /usr/bin:/bin\n server a 10.0.0.1:80 check",
        );
        assert_eq!(h.kind.as_deref(), Some("external"));
        assert_eq!(h.command, ["/var/lib/octavia/ping-wrapper.sh"]);
        assert_eq!(h.command_path.as_deref(), Some("/usr/bin:/bin"));
        let h = health(
            " option tcp-check\n tcp-check connect port 6380\n tcp-check send PING\\r\\n\n \
             tcp-check expect string +PONG comment pong\n tcp-check send-binary 00ff\n \
             tcp-check expect rstring ^role:(master|slave)\n tcp-check expect binary 0a\n \
             server a 10.0.0.1:6379 check",
        );
        assert_eq!(h.kind.as_deref(), Some("tcp_script"));
        assert_eq!(h.steps.len(), 6);
        assert_eq!(
            h.steps[0].connect,
            Some(ConnectSection { port: Some(6380) })
        );
        assert_eq!(h.steps[1].send.as_deref(), Some("PING\r\n"));
        assert_eq!(h.steps[2].expect_string.as_deref(), Some("+PONG"));
        assert_eq!(h.steps[3].send_binary.as_deref(), Some("00ff"));
        assert_eq!(
            h.steps[4].expect_rstring.as_deref(),
            Some("^role:(master|slave)")
        );
        assert_eq!(h.steps[5].expect_binary.as_deref(), Some("0a"));
        let h = health(" option redis-check\n server a 10.0.0.1:6379 check");
        assert_eq!(h.kind.as_deref(), Some("tcp_script"));
        assert_eq!(h.steps[1].expect_string.as_deref(), Some("+PONG"));
    }

    #[test]
    fn check_errors() {
        for (lines, line, reason) in [
            (" option mysql-check\n server a 10.0.0.1:80 check", 7, "'option mysql-check' is not supported"),
            (" option httpchk a b c d\n server a 10.0.0.1:80 check", 7, "at most 3 arguments"),
            (" option httpchk GET / HTTP/2\n server a 10.0.0.1:80 check", 7, "HTTP version 'HTTP/2'"),
            (" http-check expect ! status 200\n server a 10.0.0.1:80 check", 7, "negated"),
            (" http-check expect string OK\n server a 10.0.0.1:80 check", 7, "status code only"),
            (" http-check expect status 2x\n server a 10.0.0.1:80 check", 7, "expected status codes"),
            (" http-check expect status 200\n http-check expect status 201\n server a 10.0.0.1:80 check", 8, "a second 'http-check expect'"),
            (" http-check send hdr X-Y z\n server a 10.0.0.1:80 check", 7, "only a Host header"),
            (" http-check disable-on-404\n server a 10.0.0.1:80 check", 7, "disable-on-404"),
            (" tcp-check expect rbinary ^0a\n server a 10.0.0.1:80 check", 7, "rbinary"),
            (" tcp-check connect ssl\n server a 10.0.0.1:80 check", 7, "'tcp-check connect ssl'"),
            (" tcp-check send\n server a 10.0.0.1:80 check", 7, "expects one argument"),
            (" option external-check\n server a 10.0.0.1:80 check", 7, "needs 'external-check command'"),
            (" server a 10.0.0.1:80 check\n server b 10.0.0.2:80", 8, "lbd checks all members of a pool or none"),
            (" server a 10.0.0.1:80 check inter 2s\n server b 10.0.0.2:80 check inter 3s", 8, "checks are per pool"),
        ] {
            assert_error(
                &format!("{TIMEOUTS}listen l\n bind 127.0.0.1:7000\n{lines}\n"),
                line,
                reason,
            );
        }
    }

    #[test]
    fn unchecked_servers_with_a_check_option_warn() {
        let warnings = convert_warnings(&format!(
            "{TIMEOUTS}listen l\n bind 127.0.0.1:7000\n option httpchk\n server a 10.0.0.1:80\n"
        ));
        assert_warning(&warnings, 7, "no server has 'check'");
    }
}
