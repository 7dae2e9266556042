//! `[admin]`: the admin server's binds, token file, TLS files and the
//! basic auth of its read-only pages.

use super::fields::{binds_overlap, socket_addr_field, ConfigError, Scope};
use crate::file::AdminSection;
use crate::model::{
    Admin, AdminBind, AdminTls, Listener, StatsAuth, StatsUser, DEFAULT_ADMIN_BIND,
    DEFAULT_STATS_REALM, DEFAULT_STATS_URI,
};
use crate::tls_files;

/// Longest accepted admin token file.
const MAX_TOKEN_FILE: u64 = 4096;

/// Checks `[admin]`; `None` if anything in it is wrong (errors reported).
pub(super) fn validate_admin(
    section: &AdminSection,
    listeners: &[Listener],
    errors: &mut Vec<ConfigError>,
) -> Option<Admin> {
    let mut scope = Scope::new("admin", errors);
    let bind = match section.bind.as_deref() {
        None => Some(AdminBind::Tcp(DEFAULT_ADMIN_BIND)),
        Some(text) => match text.strip_prefix("unix:") {
            Some("") => {
                scope.error(
                    "bind \"unix:\" needs a socket path (e.g. \"unix:/run/lbd/admin.sock\")",
                );
                None
            }
            Some(path) => Some(AdminBind::Unix(path.into())),
            None => socket_addr_field(&mut scope, "bind", text).map(AdminBind::Tcp),
        },
    };
    let stats_bind = match section.stats_bind.as_deref() {
        None => Some(None),
        Some(text) => socket_addr_field(&mut scope, "stats_bind", text).map(Some),
    };
    let tcp_binds = [
        (
            "bind",
            bind.as_ref().and_then(|b| match b {
                AdminBind::Tcp(addr) => Some(*addr),
                AdminBind::Unix(_) => None,
            }),
        ),
        ("stats_bind", stats_bind.flatten()),
    ];
    for (field, addr) in tcp_binds {
        let Some(addr) = addr else { continue };
        if let Some(l) = listeners
            .iter()
            .find(|l| l.bind == addr || binds_overlap(l.bind, addr))
        {
            scope.error(format!(
                "{field} {addr} clashes with listener {:?} on {}",
                l.name, l.bind
            ));
        }
    }
    if let (Some(AdminBind::Tcp(a)), Some(Some(b))) = (&bind, stats_bind) {
        if *a == b || binds_overlap(*a, b) {
            scope.error(format!("stats_bind {b} clashes with bind {a}"));
        }
    }
    let token_file = match section.token_file.as_deref() {
        None => Some(None),
        Some(path) => match read_token(std::path::Path::new(path)) {
            Ok(_) => Some(Some(path.into())),
            Err(reason) => {
                scope.error(format!("token_file {path:?}: {reason}"));
                None
            }
        },
    };
    let tls = match (section.tls_cert.as_deref(), section.tls_key.as_deref()) {
        (None, None) => Some(None),
        (Some(cert), Some(key)) => {
            let tls = AdminTls {
                cert: cert.into(),
                key: key.into(),
            };
            match tls_files::check_server_files(&tls.cert, &tls.key) {
                Ok(_) => Some(Some(tls)),
                Err(e) => {
                    scope.error(e.to_string());
                    None
                }
            }
        }
        _ => {
            scope.error("tls_cert and tls_key must be set together");
            None
        }
    };
    let stats_auth = stats_auth(section, &mut scope);
    let stats_uri = match section.stats_uri.as_deref() {
        None => Some(DEFAULT_STATS_URI.to_owned()),
        Some(uri)
            if uri.starts_with('/')
                && uri.len() <= MAX_AUTH_FIELD
                && uri.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Some(uri.to_owned())
        }
        Some(uri) => {
            scope.error(format!(
                "stats_uri {uri:?}: a path starting with '/', 1-256 printable ASCII characters \
                 without spaces"
            ));
            None
        }
    };
    Some(Admin {
        bind: bind?,
        stats_bind: stats_bind?,
        token_file: token_file?,
        tls: tls?,
        stats_auth: stats_auth?,
        stats_uri: stats_uri?,
    })
}

/// Longest accepted user name, password and realm.
const MAX_AUTH_FIELD: usize = 256;

/// `stats_users` and `stats_realm`: `Some(None)` when unset.
fn stats_auth(section: &AdminSection, scope: &mut Scope) -> Option<Option<StatsAuth>> {
    // Printable ASCII: what every client sends in a basic auth header.
    let printable = |s: &str| s.bytes().all(|b| (0x20..0x7f).contains(&b));
    let mut ok = true;
    let mut users: Vec<StatsUser> = Vec::new();
    for (i, entry) in section.stats_users.iter().enumerate() {
        let mut fail = |why: &str| {
            // The entry holds a password: name it by index and user only.
            let user = entry.split(':').next().unwrap_or_default();
            scope.error(format!("stats_users[{i}] (user {user:?}): {why}"));
            ok = false;
        };
        let Some((user, password)) = entry.split_once(':') else {
            fail("expected \"user:password\"");
            continue;
        };
        if user.is_empty() || password.is_empty() {
            fail("the user name and the password must not be empty");
        } else if !printable(user) || !printable(password) {
            fail("only printable ASCII characters are allowed");
        } else if user.len() > MAX_AUTH_FIELD || password.len() > MAX_AUTH_FIELD {
            fail("the user name and the password are at most 256 bytes each");
        } else if users.iter().any(|u| u.user == user) {
            fail("a second entry for this user");
        } else {
            users.push(StatsUser {
                user: user.to_owned(),
                password: password.to_owned(),
            });
        }
    }
    let realm = match section.stats_realm.as_deref() {
        None => DEFAULT_STATS_REALM,
        Some(realm) => {
            if section.stats_users.is_empty() {
                scope.error("stats_realm needs stats_users (the realm of their password prompt)");
                ok = false;
            } else if realm.is_empty()
                || realm.len() > MAX_AUTH_FIELD
                || !printable(realm)
                || realm.contains(['"', '\\'])
            {
                scope.error(format!(
                    "stats_realm {realm:?}: 1-256 printable ASCII characters without '\"' or '\\'"
                ));
                ok = false;
            }
            realm
        }
    };
    if !ok {
        return None;
    }
    Some((!users.is_empty()).then(|| StatsAuth {
        users,
        realm: realm.to_owned(),
    }))
}

/// Reads an admin token file: the token is its content without surrounding
/// whitespace, non-empty, at most 4 KiB.
pub fn read_token(path: &std::path::Path) -> Result<String, String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_TOKEN_FILE + 1).read_to_string(&mut text))
        .map_err(|e| format!("cannot read: {e}"))?;
    if text.len() as u64 > MAX_TOKEN_FILE {
        return Err(format!("longer than {MAX_TOKEN_FILE} bytes"));
    }
    let token = text.trim();
    if token.is_empty() {
        return Err("is empty".to_owned());
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the token must not contain spaces or control characters".to_owned());
    }
    Ok(token.to_owned())
}

#[cfg(test)]
mod tests {
    use crate::validate::tests::*;

    #[test]
    fn admin_section() {
        let none = valid("[global]\n");
        assert_eq!(none.admin, None);
        let default = valid("[admin]\n").admin.expect("admin");
        assert_eq!(default.bind, AdminBind::Tcp(DEFAULT_ADMIN_BIND));
        assert!(default.bind.is_local());
        let unix =
            valid("[admin]\nbind = \"unix:/run/lbd.sock\"\nstats_bind = \"0.0.0.0:32700\"\n")
                .admin
                .expect("admin");
        assert_eq!(unix.bind, AdminBind::Unix("/run/lbd.sock".into()));
        assert!(unix.bind.is_local());
        assert_eq!(
            unix.stats_bind,
            Some("0.0.0.0:32700".parse().expect("addr"))
        );
        let open = valid("[admin]\nbind = \"0.0.0.0:8404\"\n")
            .admin
            .expect("admin");
        assert!(!open.bind.is_local());
    }

    #[test]
    fn admin_errors() {
        let text = format!(
            "[admin]\nbind = \"unix:\"\nstats_bind = \"127.0.0.1:8080\"\n\
             token_file = \"/nonexistent/lbd-token\"\ntls_cert = \"/c.pem\"\n{}",
            listeners(&[("web", "0.0.0.0:8080")])
        );
        let errors = invalid(&text);
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert_eq!(
            errors[0],
            "admin: bind \"unix:\" needs a socket path (e.g. \"unix:/run/lbd/admin.sock\")"
        );
        assert_eq!(
            errors[1],
            "admin: stats_bind 127.0.0.1:8080 clashes with listener \"web\" on 0.0.0.0:8080"
        );
        assert!(
            errors[2].starts_with("admin: token_file \"/nonexistent/lbd-token\": cannot read: "),
            "{errors:?}"
        );
        assert_eq!(
            errors[3],
            "admin: tls_cert and tls_key must be set together"
        );
    }

    #[test]
    fn stats_auth() {
        assert_eq!(valid("[admin]\n").admin.expect("admin").stats_auth, None);
        let auth = valid(
            "[admin]\nstats_users = [\"admin:s3:cret\", \"ops:x y\"]\nstats_realm = \"My LB\"\n",
        )
        .admin
        .and_then(|a| a.stats_auth)
        .expect("stats auth");
        assert_eq!(auth.realm, "My LB");
        assert_eq!(
            auth.users,
            [
                StatsUser {
                    user: "admin".to_owned(),
                    password: "s3:cret".to_owned()
                },
                StatsUser {
                    user: "ops".to_owned(),
                    password: "x y".to_owned()
                }
            ]
        );
        assert!(!format!("{auth:?}").contains("s3:cret"), "{auth:?}");
        let default = valid("[admin]\nstats_users = [\"a:b\"]\n")
            .admin
            .and_then(|a| a.stats_auth)
            .expect("stats auth");
        assert_eq!(default.realm, DEFAULT_STATS_REALM);
    }

    #[test]
    fn stats_auth_errors() {
        let errors = invalid(
            "[admin]\nstats_users = [\"nocolon\", \":pw\", \"u:\", \"a:b\", \"a:c\", \"t:\tab\"]\n\
             stats_realm = \"a\\\"b\"\n",
        );
        assert_eq!(
            errors,
            [
                "admin: stats_users[0] (user \"nocolon\"): expected \"user:password\"",
                "admin: stats_users[1] (user \"\"): the user name and the password must not be empty",
                "admin: stats_users[2] (user \"u\"): the user name and the password must not be empty",
                "admin: stats_users[4] (user \"a\"): a second entry for this user",
                "admin: stats_users[5] (user \"t\"): only printable ASCII characters are allowed",
                "admin: stats_realm \"a\\\"b\": 1-256 printable ASCII characters without '\"' or '\\'",
            ]
        );
        assert_eq!(
            invalid("[admin]\nstats_realm = \"x\"\n"),
            ["admin: stats_realm needs stats_users (the realm of their password prompt)"]
        );
        // A password never appears in an error.
        let errors = invalid("[admin]\nstats_users = [\"u:s3cr\\u007fet\"]\n");
        assert!(!errors.iter().any(|e| e.contains("s3cr")), "{errors:?}");
    }

    #[test]
    fn admin_token_file_rules() {
        let dir = std::env::temp_dir().join(format!("lbd-token-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("write token");
            path
        };
        assert_eq!(
            read_token(&write("ok", "s3cret\n")),
            Ok("s3cret".to_owned())
        );
        assert_eq!(
            read_token(&write("empty", " \n")),
            Err("is empty".to_owned())
        );
        assert!(read_token(&write("space", "a b")).is_err());
        assert!(read_token(&write("long", &"x".repeat(5000))).is_err());
        let ok = dir.join("ok");
        let config = valid(&format!("[admin]\ntoken_file = \"{}\"\n", ok.display()));
        assert_eq!(config.admin.and_then(|a| a.token_file), Some(ok));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
