//! `[pool.health]`: the check type, its timing and its HTTP and TLS
//! settings (those of `external` and `tcp_script` checks are in
//! [`super::program`]).

use super::fields::{duration_field, expected_list, int_field, lookup, Scope};
use super::program;
use crate::file::HealthSection;
use crate::model::{
    CheckKind, ExpectedCodes, HealthCheck, HttpCheck, TlsCheck, UdpCheck, DEFAULT_CHECK_INTERVAL,
    DEFAULT_CHECK_TIMEOUT, DEFAULT_FALL, DEFAULT_RISE, MAX_RISE_FALL,
};
use crate::tls_client;

/// Checks a `[pool.health]` section (`scope` is `pool "x": health`).
pub(super) fn validate_health(scope: &mut Scope, section: &HealthSection) -> Option<HealthCheck> {
    let kind = match section.kind.as_deref() {
        None => Some(CheckKind::Tcp),
        Some(text) => {
            let kind = lookup(&CheckKind::ALL, CheckKind::name, text);
            if kind.is_none() {
                scope.error(format!(
                    "type {text:?} is not valid (expected {})",
                    expected_list(&CheckKind::ALL, CheckKind::name)
                ));
            }
            kind
        }
    };
    let interval = duration_field(
        scope,
        "interval",
        section.interval.as_deref(),
        DEFAULT_CHECK_INTERVAL,
    );
    let timeout = duration_field(
        scope,
        "timeout",
        section.timeout.as_deref(),
        DEFAULT_CHECK_TIMEOUT,
    );
    if let (Some(interval), Some(timeout)) = (interval, timeout) {
        if timeout > interval {
            scope.error(format!(
                "timeout {} must not exceed interval {}",
                humantime::format_duration(timeout),
                humantime::format_duration(interval)
            ));
        }
    }
    let rise = int_field(scope, "rise", section.rise, 1..=MAX_RISE_FALL, DEFAULT_RISE);
    let fall = int_field(scope, "fall", section.fall, 1..=MAX_RISE_FALL, DEFAULT_FALL);
    let kind = kind?;
    let http = http_check_fields(scope, kind, section);
    let tls = tls_check_fields(scope, kind, section);
    let external = program::external_fields(scope, kind, section);
    let script = program::script_fields(scope, kind, section);
    let udp = udp_check_fields(scope, kind, section);
    let check = HealthCheck {
        kind,
        interval: interval?,
        timeout: timeout?,
        rise: rise?,
        fall: fall?,
        http: http?,
        tls: tls?,
        external: external?,
        script: script?,
        udp: udp?,
    };
    if timeout > interval {
        return None;
    }
    // TLS files and the SNI name are checked by building the client config
    // the health checker uses, so check-config catches what it would trip
    // over.
    if matches!(check.kind, CheckKind::Https | CheckKind::TlsHello) {
        if let Err(e) = tls_client::client_config(&check.tls, false) {
            scope.error(e.to_string());
            return None;
        }
    }
    Some(check)
}

/// The fields of a `udp_connect` check; an error if set for another type.
fn udp_check_fields(
    scope: &mut Scope,
    kind: CheckKind,
    section: &HealthSection,
) -> Option<UdpCheck> {
    if kind != CheckKind::UdpConnect {
        let fields = [
            ("send", section.send.is_some()),
            ("expect", section.expect.is_some()),
        ];
        return unused_fields(scope, kind, &fields, "udp_connect").then(UdpCheck::default);
    }
    let send = section.send.clone().unwrap_or_default();
    if send.len() > MAX_UDP_CHECK_PAYLOAD {
        scope.error(format!(
            "send is {} bytes; at most {MAX_UDP_CHECK_PAYLOAD} fit one datagram",
            send.len()
        ));
        return None;
    }
    if section.expect.as_deref() == Some("") {
        scope.error("expect must not be empty (leave it out to pass without a reply)");
        return None;
    }
    Some(UdpCheck {
        send,
        expect: section.expect.clone(),
    })
}

/// The largest `send` of a `udp_connect` check (one IPv4 UDP datagram).
const MAX_UDP_CHECK_PAYLOAD: usize = 65_507;

/// The HTTP fields of a health check; an error if set for a check type that
/// does not use them.
fn http_check_fields(
    scope: &mut Scope,
    kind: CheckKind,
    section: &HealthSection,
) -> Option<HttpCheck> {
    let fields = [
        ("method", section.method.is_some()),
        ("path", section.path.is_some()),
        ("host", section.host.is_some()),
        ("expected_codes", section.expected_codes.is_some()),
    ];
    if !matches!(kind, CheckKind::Http | CheckKind::Https) {
        return unused_fields(scope, kind, &fields, "http and https").then(HttpCheck::default);
    }
    let defaults = HttpCheck::default();
    let method = match section.method.as_deref() {
        None => Some(defaults.method),
        Some(m) if !m.is_empty() && m.len() <= 32 && m.bytes().all(is_token_byte) => {
            Some(m.to_owned())
        }
        Some(m) => {
            scope.error(format!("method {m:?} is not an HTTP method (e.g. \"GET\")"));
            None
        }
    };
    let path = match section.path.as_deref() {
        None => Some(defaults.path),
        Some(p) if p.starts_with('/') && p.len() <= 2048 && is_visible_ascii(p) => {
            Some(p.to_owned())
        }
        Some(p) => {
            scope.error(format!(
                "path {p:?} must start with '/' and contain no spaces or control characters"
            ));
            None
        }
    };
    let host = match section.host.as_deref() {
        None => Some(None),
        Some(h) if !h.is_empty() && h.len() <= 255 && is_visible_ascii(h) => {
            Some(Some(h.to_owned()))
        }
        Some(h) => {
            scope.error(format!(
                "host {h:?} must be non-empty, without spaces or control characters"
            ));
            None
        }
    };
    let expected_codes = match section.expected_codes.as_deref() {
        None => Some(defaults.expected_codes),
        Some(text) => {
            let codes = parse_expected_codes(text);
            if codes.is_none() {
                scope.error(format!(
                    "expected_codes {text:?} is not valid (e.g. \"200\", \"200,202\", \
                     \"200-204\"; codes 100-599)"
                ));
            }
            codes
        }
    };
    Some(HttpCheck {
        method: method?,
        path: path?,
        host: host?,
        expected_codes: expected_codes?,
    })
}

/// The TLS fields of a health check; an error if set for a check type that
/// does not use them.
fn tls_check_fields(
    scope: &mut Scope,
    kind: CheckKind,
    section: &HealthSection,
) -> Option<TlsCheck> {
    let fields = [
        ("ca_file", section.ca_file.is_some()),
        ("sni", section.sni.is_some()),
        ("client_cert", section.client_cert.is_some()),
        ("client_key", section.client_key.is_some()),
    ];
    if !matches!(kind, CheckKind::Https | CheckKind::TlsHello) {
        return unused_fields(scope, kind, &fields, "https and tls_hello").then(TlsCheck::default);
    }
    if section.client_cert.is_some() != section.client_key.is_some() {
        scope.error("client_cert and client_key must be set together");
        return None;
    }
    Some(TlsCheck {
        ca_file: section.ca_file.as_ref().map(Into::into),
        sni: section.sni.clone(),
        client_cert: section.client_cert.as_ref().map(Into::into),
        client_key: section.client_key.as_ref().map(Into::into),
    })
}

/// Reports every field in `fields` that is set although a `kind` check does
/// not use it. Returns whether none was set.
pub(super) fn unused_fields(
    scope: &mut Scope,
    kind: CheckKind,
    fields: &[(&str, bool)],
    users: &str,
) -> bool {
    let mut clean = true;
    for (field, _) in fields.iter().filter(|(_, set)| *set) {
        scope.error(format!(
            "{field} is only used by {users} checks, not {:?}",
            CheckKind::name(kind)
        ));
        clean = false;
    }
    clean
}

/// RFC 9110 `tchar`: what an HTTP method may consist of.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Printable ASCII without spaces: safe inside an HTTP request line.
fn is_visible_ascii(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_graphic())
}

/// Parses `"200"`, `"200,202"`, `"200-204"`, `"200, 300-399"`.
fn parse_expected_codes(text: &str) -> Option<ExpectedCodes> {
    let code = |t: &str| {
        t.trim()
            .parse::<u16>()
            .ok()
            .filter(|c| (100..=599).contains(c))
    };
    let ranges = text
        .split(',')
        .map(|part| match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (code(a)?, code(b)?);
                (a <= b).then_some(a..=b)
            }
            None => code(part).map(|c| c..=c),
        })
        .collect::<Option<Vec<_>>>()?;
    Some(ExpectedCodes(ranges))
}

#[cfg(test)]
mod tests {
    use crate::validate::tests::*;

    #[test]
    fn udp_connect_checks() {
        let config = valid(&health_with("type = \"udp_connect\""));
        let check = config.pools[0].health.clone().expect("health");
        assert_eq!(check.kind, CheckKind::UdpConnect);
        assert_eq!(check.udp, UdpCheck::default());
        let config = valid(&health_with(
            "type = \"udp_connect\"\nsend = \"ping\"\nexpect = \"pong\"",
        ));
        let udp = config.pools[0].health.clone().expect("health").udp;
        assert_eq!(
            (udp.send.as_str(), udp.expect.as_deref()),
            ("ping", Some("pong"))
        );
        let errors = invalid(&health_with("type = \"tcp\"\nsend = \"ping\""));
        assert!(
            errors[0].contains("send is only used by udp_connect checks"),
            "{errors:?}"
        );
        let errors = invalid(&health_with("type = \"udp_connect\"\nexpect = \"\""));
        assert!(errors[0].contains("expect must not be empty"), "{errors:?}");
        let errors = invalid(&health_with("type = \"udp_connect\"\npath = \"/\""));
        assert!(
            errors[0].contains("path is only used by http and https"),
            "{errors:?}"
        );
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
                 \"https\", \"tls_hello\", \"external\", \"tcp_script\" or \"udp_connect\")",
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
            errors[0]
                .starts_with("pool \"api\": health: ca_file \"/nonexistent/lbd-test-ca.pem\": "),
            "{errors:?}"
        );
    }
}
