//! `[pool.health]`: the check type, its timing and its HTTP and TLS
//! settings.

use super::fields::{duration_field, expected_list, int_field, lookup, Scope};
use crate::file::HealthSection;
use crate::model::{
    CheckKind, ExpectedCodes, HealthCheck, HttpCheck, TlsCheck, DEFAULT_CHECK_INTERVAL,
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
    let check = HealthCheck {
        kind,
        interval: interval?,
        timeout: timeout?,
        rise: rise?,
        fall: fall?,
        http: http?,
        tls: tls?,
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
fn unused_fields(scope: &mut Scope, kind: CheckKind, fields: &[(&str, bool)], users: &str) -> bool {
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
