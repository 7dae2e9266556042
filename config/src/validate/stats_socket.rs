//! `[[stats_socket]]`: unix sockets speaking HAProxy's CLI.

use std::collections::HashSet;

use super::fields::{duration_field, expected_list, lookup, ConfigError, Scope};
use crate::file::StatsSocketSection;
use crate::model::{CliLevel, StatsSocket, DEFAULT_CLI_TIMEOUT, MAX_UNIX_PATH};

/// Checks every `[[stats_socket]]`; the valid ones, in order.
pub(super) fn validate_stats_sockets(
    sections: &[StatsSocketSection],
    errors: &mut Vec<ConfigError>,
) -> Vec<StatsSocket> {
    let mut seen = HashSet::new();
    let mut valid = Vec::new();
    for (i, section) in sections.iter().enumerate() {
        let mut scope = Scope::new(format!("stats_socket #{}", i + 1), errors);
        if let Some(socket) = validate_one(section, &mut scope) {
            if seen.insert(socket.path.clone()) {
                valid.push(socket);
            } else {
                scope.error(format!(
                    "path {:?} is used by another stats_socket",
                    socket.path.display()
                ));
            }
        }
    }
    valid
}

fn validate_one(section: &StatsSocketSection, scope: &mut Scope) -> Option<StatsSocket> {
    let path = match section.path.as_deref() {
        None | Some("") => {
            scope.error("path is missing (the unix socket's path, e.g. \"/run/lbd/stats.sock\")");
            None
        }
        Some(p) if p.len() > MAX_UNIX_PATH => {
            scope.error(format!(
                "path {p:?} is {} bytes long; a unix socket path has at most {MAX_UNIX_PATH}",
                p.len()
            ));
            None
        }
        Some(p) if p.contains('\0') => {
            scope.error(format!("path {p:?} contains a NUL byte"));
            None
        }
        Some(p) => Some(p.into()),
    };
    let mode = match section.mode.as_deref() {
        None => Some(None),
        Some(text) => match u32::from_str_radix(text, 8) {
            Ok(m) if m <= 0o777 => Some(Some(m)),
            _ => {
                scope.error(format!(
                    "mode {text:?} is not octal permissions (0 to 0777, e.g. \"0660\")"
                ));
                None
            }
        },
    };
    let level = match section.level.as_deref() {
        None => Some(CliLevel::Operator),
        Some(text) => lookup(&CliLevel::ALL, CliLevel::name, text).or_else(|| {
            scope.error(format!(
                "level {text:?} is not {}",
                expected_list(&CliLevel::ALL, CliLevel::name)
            ));
            None
        }),
    };
    let timeout = duration_field(
        scope,
        "timeout",
        section.timeout.as_deref(),
        DEFAULT_CLI_TIMEOUT,
    );
    Some(StatsSocket {
        path: path?,
        mode: mode?,
        level: level?,
        expose_fd_listeners: section.expose_fd_listeners.unwrap_or(false),
        timeout: timeout?,
    })
}

#[cfg(test)]
mod tests {
    use crate::model::CliLevel;
    use crate::validate::tests::{invalid, valid};

    const POOL: &str =
        "[[pool]]\nname = \"p\"\n[[pool.member]]\naddress = \"127.0.0.1\"\nport = 1\n";

    #[test]
    fn a_stats_socket_with_every_field() {
        let config = valid(&format!(
            "[[stats_socket]]\npath = \"/run/lbd/a.sock\"\nmode = \"0660\"\nlevel = \"admin\"\n\
             expose_fd_listeners = true\n[[stats_socket]]\npath = \"/run/lbd/b.sock\"\n{POOL}"
        ));
        let [a, b] = &config.stats_sockets[..] else {
            panic!("{:?}", config.stats_sockets)
        };
        assert_eq!(a.path.to_str(), Some("/run/lbd/a.sock"));
        assert_eq!(
            (a.mode, a.level, a.expose_fd_listeners),
            (Some(0o660), CliLevel::Admin, true)
        );
        assert_eq!(
            (b.mode, b.level, b.expose_fd_listeners),
            (None, CliLevel::Operator, false)
        );
    }

    #[test]
    fn bad_stats_sockets_are_named() {
        let long = "/x".repeat(60);
        let text = format!(
            "[[stats_socket]]\nmode = \"0999\"\nlevel = \"root\"\n\
             [[stats_socket]]\npath = \"{long}\"\n\
             [[stats_socket]]\npath = \"/a\"\n[[stats_socket]]\npath = \"/a\"\n{POOL}"
        );
        assert_eq!(
            invalid(&text),
            [
                "stats_socket #1: path is missing (the unix socket's path, e.g. \"/run/lbd/stats.sock\")",
                "stats_socket #1: mode \"0999\" is not octal permissions (0 to 0777, e.g. \"0660\")",
                "stats_socket #1: level \"root\" is not \"user\", \"operator\" or \"admin\"",
                &format!(
                    "stats_socket #2: path {long:?} is 120 bytes long; a unix socket path has at most 107"
                ),
                "stats_socket #4: path \"/a\" is used by another stats_socket",
            ]
        );
    }
}
