//! Service annotations that tune what lb-agent renders for a Service.
//!
//! | annotation | values | default |
//! |---|---|---|
//! | `lbd.io/algorithm` | `round_robin`, `least_connections`, `source_ip` | `round_robin` |
//! | `lbd.io/proxy-protocol` | `v1`, `v2` (TCP ports only) | none |
//! | `lbd.io/health-interval` | duration, e.g. `5s` | `5s` |
//! | `lbd.io/health-timeout` | duration | `3s` |
//! | `lbd.io/health-rise` | 1-10 | `2` |
//! | `lbd.io/health-fall` | 1-10 | `2` |
//!
//! A value that is not valid is reported (an Event on the Service) and the
//! default is used instead.

use std::collections::BTreeMap;

/// Prefix of every annotation lb-agent reads.
pub const PREFIX: &str = "lbd.io/";

/// What the annotations ask for, defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub algorithm: String,
    pub proxy_protocol: Option<String>,
    pub interval: String,
    pub timeout: String,
    pub rise: i64,
    pub fall: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            algorithm: "round_robin".to_owned(),
            proxy_protocol: None,
            interval: "5s".to_owned(),
            timeout: "3s".to_owned(),
            rise: 2,
            fall: 2,
        }
    }
}

/// Reads the `lbd.io/` annotations. Returns the settings and one message
/// per annotation that was ignored.
pub fn parse(annotations: Option<&BTreeMap<String, String>>) -> (Settings, Vec<String>) {
    let mut settings = Settings::default();
    let mut problems = Vec::new();
    let Some(annotations) = annotations else {
        return (settings, problems);
    };
    for (key, value) in annotations {
        let Some(name) = key.strip_prefix(PREFIX) else {
            continue;
        };
        let ok = match name {
            "algorithm" => set_choice(
                &mut settings.algorithm,
                value,
                &["round_robin", "least_connections", "source_ip"],
            ),
            "proxy-protocol" => {
                let ok = ["v1", "v2"].contains(&value.as_str());
                if ok {
                    settings.proxy_protocol = Some(value.clone());
                }
                ok
            }
            "health-interval" => set_duration(&mut settings.interval, value),
            "health-timeout" => set_duration(&mut settings.timeout, value),
            "health-rise" => set_count(&mut settings.rise, value),
            "health-fall" => set_count(&mut settings.fall, value),
            _ => {
                problems.push(format!("annotation {key} is not known; ignored"));
                continue;
            }
        };
        if !ok {
            problems.push(format!(
                "annotation {key}: {value:?} is not valid; the default is used"
            ));
        }
    }
    if humantime::parse_duration(&settings.timeout).ok()
        > humantime::parse_duration(&settings.interval).ok()
    {
        problems.push(format!(
            "health timeout {} exceeds the interval {}; the timeout is set to the interval",
            settings.timeout, settings.interval
        ));
        settings.timeout = settings.interval.clone();
    }
    (settings, problems)
}

fn set_choice(slot: &mut String, value: &str, allowed: &[&str]) -> bool {
    let ok = allowed.contains(&value);
    if ok {
        *slot = value.to_owned();
    }
    ok
}

fn set_duration(slot: &mut String, value: &str) -> bool {
    let ok = humantime::parse_duration(value)
        .is_ok_and(|d| !d.is_zero() && d <= lbd_config::MAX_DURATION);
    if ok {
        *slot = value.to_owned();
    }
    ok
}

fn set_count(slot: &mut i64, value: &str) -> bool {
    match value.parse::<i64>() {
        Ok(n @ 1..=10) => {
            *slot = n;
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_without_annotations() {
        assert_eq!(parse(None), (Settings::default(), vec![]));
    }

    #[test]
    fn values_and_problems() {
        let a = annotations(&[
            ("lbd.io/algorithm", "source_ip"),
            ("lbd.io/proxy-protocol", "v2"),
            ("lbd.io/health-interval", "10s"),
            ("lbd.io/health-rise", "11"),
            ("lbd.io/colour", "red"),
            ("other.io/x", "y"),
        ]);
        let (s, problems) = parse(Some(&a));
        assert_eq!(s.algorithm, "source_ip");
        assert_eq!(s.proxy_protocol.as_deref(), Some("v2"));
        assert_eq!(s.interval, "10s");
        assert_eq!(s.rise, 2);
        assert_eq!(
            problems,
            [
                "annotation lbd.io/colour is not known; ignored",
                "annotation lbd.io/health-rise: \"11\" is not valid; the default is used",
            ]
        );
    }

    #[test]
    fn durations_past_lbds_limit_are_not_used() {
        let a = annotations(&[("lbd.io/health-interval", "18446744073709551615s")]);
        let (s, problems) = parse(Some(&a));
        assert_eq!(s.interval, Settings::default().interval);
        assert_eq!(problems.len(), 1, "{problems:?}");
    }

    #[test]
    fn timeout_is_capped_by_interval() {
        let a = annotations(&[("lbd.io/health-interval", "1s")]);
        let (s, problems) = parse(Some(&a));
        assert_eq!(s.timeout, "1s");
        assert_eq!(problems.len(), 1);
    }
}
