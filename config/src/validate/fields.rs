//! What every part of validation shares: the error type, the collector
//! of errors for one place in the config ([`Scope`]), section names, and
//! the parsers of field kinds that occur in several sections (addresses,
//! integers in a range, durations, enum spellings).

use std::collections::HashMap;
use std::fmt::Display;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::Duration;

/// One problem in a config: where (`pool "api": member 2`) and why
/// (`port 70000 out of range (1-65535)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub reason: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            // About the config as a whole.
            return f.write_str(&self.reason);
        }
        write!(f, "{}: {}", self.path, self.reason)
    }
}

/// Collects errors for one place in the config (`listener "web"`).
pub(super) struct Scope<'a> {
    path: String,
    errors: &'a mut Vec<ConfigError>,
}

impl<'a> Scope<'a> {
    pub(super) fn new(path: impl Into<String>, errors: &'a mut Vec<ConfigError>) -> Self {
        Scope {
            path: path.into(),
            errors,
        }
    }

    /// Records a problem at this scope's path.
    pub(super) fn error(&mut self, reason: impl Into<String>) {
        self.errors.push(ConfigError {
            path: self.path.clone(),
            reason: reason.into(),
        });
    }

    /// A nested scope: `pool "api"` → `pool "api": member 2`.
    pub(super) fn child(&mut self, suffix: impl Display) -> Scope<'_> {
        Scope {
            path: format!("{}: {suffix}", self.path),
            errors: self.errors,
        }
    }

    /// Unwraps a required field, reporting `{field} is required` when absent.
    pub(super) fn required<'v, T: ?Sized>(
        &mut self,
        field: &str,
        value: Option<&'v T>,
    ) -> Option<&'v T> {
        if value.is_none() {
            self.error(format!("{field} is required"));
        }
        value
    }
}

// ----------------------------------------------------------------- names

/// What the name of a `[[listener]]` or `[[pool]]` turned out to be.
enum NameStatus {
    /// Present, well-formed and the first of its spelling.
    Good(String),
    /// Absent, empty, badly formed or a duplicate; the reason says which.
    Bad(String),
}

/// The names of one kind of section (`listener`, `pool`), checked together
/// because uniqueness and labels depend on the other sections.
pub(super) struct Names {
    statuses: Vec<NameStatus>,
    /// How each section is called in error paths: `listener "web"` or
    /// `listener #2`.
    labels: Vec<String>,
}

impl Names {
    /// Checks every name of sections of `kind`, in file order.
    pub(super) fn check<'a>(kind: &str, names: impl Iterator<Item = Option<&'a str>>) -> Self {
        let mut first_use: HashMap<&str, usize> = HashMap::new();
        let mut statuses = Vec::new();
        let mut labels = Vec::new();
        for (index, name) in names.enumerate() {
            let position = index + 1;
            let status = match name {
                None => NameStatus::Bad("name is required".to_owned()),
                Some(name) => match name_problem(name) {
                    Some(problem) => NameStatus::Bad(problem),
                    None => match first_use.get(name) {
                        Some(first) => NameStatus::Bad(format!(
                            "name {name:?} is already used by {kind} #{first}"
                        )),
                        None => {
                            first_use.insert(name, position);
                            NameStatus::Good(name.to_owned())
                        }
                    },
                },
            };
            labels.push(match &status {
                NameStatus::Good(name) => format!("{kind} {name:?}"),
                NameStatus::Bad(_) => format!("{kind} #{position}"),
            });
            statuses.push(status);
        }
        Names { statuses, labels }
    }

    /// The checked name of section `index`, reporting its problem if any.
    pub(super) fn take(&self, index: usize, scope: &mut Scope) -> Option<String> {
        match self.statuses.get(index)? {
            NameStatus::Good(name) => Some(name.clone()),
            NameStatus::Bad(reason) => {
                scope.error(reason.clone());
                None
            }
        }
    }

    /// The error-path label of section `index`.
    pub(super) fn label(&self, index: usize) -> &str {
        self.labels.get(index).map_or("", String::as_str)
    }
}

/// Whether `c` may appear in a name (names become metric labels).
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')
}

/// Why `name` is not acceptable as a listener or pool name, if it is not.
fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("name is empty".to_owned());
    }
    name.chars().find(|&c| !is_name_char(c)).map(|c| {
        format!(
            "name {name:?} contains {c:?}; only ASCII letters, digits, '_', '.', ':' and '-' \
             are allowed"
        )
    })
}

/// A `{field}` that must be an `addr:port` with a non-zero port.
pub(super) fn socket_addr_field(scope: &mut Scope, field: &str, text: &str) -> Option<SocketAddr> {
    let Ok(addr) = text.parse::<SocketAddr>() else {
        scope.error(format!(
            "{field} {text:?} is not an address:port (e.g. \"0.0.0.0:8080\", \"[::]:8080\")"
        ));
        return None;
    };
    if addr.port() == 0 {
        scope.error(format!("{field} {addr}: port 0 is not allowed"));
        return None;
    }
    Some(addr)
}

/// Two different binds overlap when they share family and port and one of
/// them is the unspecified (wildcard) address.
pub(super) fn binds_overlap(a: SocketAddr, b: SocketAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
        && a.port() == b.port()
        && (a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// An IP address field (hostnames are not resolved).
pub(super) fn ip_field(scope: &mut Scope, field: &str, text: &str) -> Option<IpAddr> {
    let address = text.parse::<IpAddr>().ok();
    if address.is_none() {
        scope.error(format!(
            "{field} {text:?} is not an IP address (hostnames are not resolved)"
        ));
    }
    address
}

// ---------------------------------------------------------- field helpers

/// An optional integer field that must lie in `range`; `default` when absent.
pub(super) fn int_field<T>(
    scope: &mut Scope,
    field: &str,
    value: Option<i64>,
    range: RangeInclusive<T>,
    default: T,
) -> Option<T>
where
    T: TryFrom<i64> + PartialOrd + Display,
{
    match value {
        Some(value) => int_in_range(scope, field, value, range),
        None => Some(default),
    }
}

/// Converts `value` if it lies in `range`, else reports
/// `{field} {value} out of range ({start}-{end})`.
pub(super) fn int_in_range<T>(
    scope: &mut Scope,
    field: &str,
    value: i64,
    range: RangeInclusive<T>,
) -> Option<T>
where
    T: TryFrom<i64> + PartialOrd + Display,
{
    match T::try_from(value) {
        Ok(converted) if range.contains(&converted) => Some(converted),
        _ => {
            scope.error(format!(
                "{field} {value} out of range ({}-{})",
                range.start(),
                range.end()
            ));
            None
        }
    }
}

/// The longest duration any field accepts: 30 days. Longer ones are
/// surely mistakes, and near the top of the range an `Instant` plus the
/// duration would overflow (HAProxy caps its timeouts at about 24.8 days).
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

/// An optional duration (absent: `None`), validated as [`duration_field`]
/// does: greater than zero, at most [`MAX_DURATION`].
pub(super) fn optional_duration(
    scope: &mut Scope,
    field: &str,
    value: &Option<String>,
) -> Option<Option<Duration>> {
    match value.as_deref() {
        None => Some(None),
        Some(text) => duration_field(scope, field, Some(text), Duration::ZERO).map(Some),
    }
}

/// An optional duration field (`"30s"`, `"500ms"`, `"2m"`) that must be
/// greater than zero and at most [`MAX_DURATION`]; `default` when absent.
pub(super) fn duration_field(
    scope: &mut Scope,
    field: &str,
    value: Option<&str>,
    default: Duration,
) -> Option<Duration> {
    let Some(text) = value else {
        return Some(default);
    };
    match humantime::parse_duration(text) {
        Ok(duration) if duration.is_zero() => {
            scope.error(format!("{field} {text:?} must be greater than zero"));
            None
        }
        Ok(duration) if duration > MAX_DURATION => {
            scope.error(format!(
                "{field} {text:?} is too long (at most {})",
                humantime::format_duration(MAX_DURATION)
            ));
            None
        }
        Ok(duration) => Some(duration),
        Err(err) => {
            scope.error(format!(
                "{field} {text:?} is not a duration (e.g. \"30s\", \"500ms\", \"2m\"): {err}"
            ));
            None
        }
    }
}

/// Finds the value of `all` whose spelling (`name`) is exactly `text`.
pub(super) fn lookup<T: Copy>(all: &[T], name: fn(T) -> &'static str, text: &str) -> Option<T> {
    all.iter().copied().find(|&value| name(value) == text)
}

/// A field that names one of `all` (by `name`), `default` when absent;
/// an unknown spelling is an error listing the valid ones.
pub(super) fn choice_field<T: Copy>(
    scope: &mut Scope,
    field: &str,
    value: Option<&str>,
    all: &[T],
    name: fn(T) -> &'static str,
    default: T,
) -> Option<T> {
    let Some(text) = value else {
        return Some(default);
    };
    let found = lookup(all, name, text);
    if found.is_none() {
        scope.error(format!(
            "{field} {text:?} is not valid (expected {})",
            expected_list(all, name)
        ));
    }
    found
}

/// `"a", "b" or "c"`: the spellings of `all`, for error messages.
pub(super) fn expected_list<T: Copy>(all: &[T], name: fn(T) -> &'static str) -> String {
    let quoted: Vec<String> = all
        .iter()
        .map(|&value| format!("{:?}", name(value)))
        .collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        Some((last, _)) => last.clone(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::lookup;
    use crate::validate::tests::*;

    #[test]
    fn bad_duration() {
        for field in ["client_idle", "member_connect", "member_idle"] {
            let errors = invalid(&listener_with(&format!("{field} = \"5 parsecs\"")));
            assert_eq!(errors.len(), 1, "{errors:?}");
            let want = format!(
                "listener \"l\": {field} \"5 parsecs\" is not a duration (e.g. \"30s\", \
                 \"500ms\", \"2m\"): "
            );
            assert!(errors[0].starts_with(&want), "{errors:?}");
        }
        let errors = invalid("[global]\ndrain_timeout = \"30\"\n");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("global: drain_timeout \"30\" is not a duration"),
            "{errors:?}"
        );
    }

    #[test]
    fn zero_duration() {
        for zero in ["0", "0s", "0ms"] {
            assert_eq!(
                invalid(&listener_with(&format!("member_connect = \"{zero}\""))),
                [format!(
                    "listener \"l\": member_connect \"{zero}\" must be greater than zero"
                )]
            );
        }
        assert_eq!(
            invalid("[global]\ndrain_timeout = \"0s\"\n"),
            ["global: drain_timeout \"0s\" must be greater than zero"]
        );
    }

    #[test]
    fn durations_are_bounded() {
        const HUGE: &str = "18446744073709551615s";
        for field in ["client_idle", "member_connect", "member_idle"] {
            assert_eq!(
                invalid(&listener_with(&format!("{field} = \"{HUGE}\""))),
                [format!(
                    "listener \"l\": {field} \"{HUGE}\" is too long (at most 30days)"
                )]
            );
        }
        assert_eq!(
            invalid(&format!("[global]\ndrain_timeout = \"{HUGE}\"\n")),
            [format!(
                "global: drain_timeout \"{HUGE}\" is too long (at most 30days)"
            )]
        );
        for field in ["interval", "timeout"] {
            let errors = invalid(&format!(
                "[[pool]]\nname = \"p\"\n[pool.health]\n{field} = \"31days\"\n"
            ));
            assert!(
                errors.contains(&format!(
                    "pool \"p\": health: {field} \"31days\" is too long (at most 30days)"
                )),
                "{errors:?}"
            );
        }
        let longest = listener_with(
            "client_idle = \"30days\"\nmember_connect = \"30days\"\nmember_idle = \"720h\"",
        );
        assert_eq!(valid(&longest).listeners[0].client_idle, MAX_DURATION);
    }

    #[test]
    fn durations_accept_humantime_forms() {
        let text = listener_with(
            "client_idle = \"1h 2m 3s\"\nmember_connect = \"1.5s\"\nmember_idle = \"250ms\"",
        );
        let listener = &valid(&text).listeners[0];
        assert_eq!(listener.client_idle, Duration::from_secs(3723));
        assert_eq!(listener.member_connect, Duration::from_millis(1500));
        assert_eq!(listener.member_idle, Duration::from_millis(250));
    }

    #[test]
    fn spellings_round_trip() {
        for algorithm in Algorithm::ALL {
            assert_eq!(
                lookup(&Algorithm::ALL, Algorithm::name, Algorithm::name(algorithm)),
                Some(algorithm)
            );
        }
        for version in ProxyProtocol::ALL {
            assert_eq!(
                lookup(
                    &ProxyProtocol::ALL,
                    ProxyProtocol::name,
                    ProxyProtocol::name(version)
                ),
                Some(version)
            );
        }
    }
}
