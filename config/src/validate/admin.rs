//! `[admin]`: the admin server's binds, token file and TLS files.

use super::fields::{binds_overlap, socket_addr_field, ConfigError, Scope};
use crate::file::AdminSection;
use crate::model::{Admin, AdminBind, AdminTls, Listener, DEFAULT_ADMIN_BIND};
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
    Some(Admin {
        bind: bind?,
        stats_bind: stats_bind?,
        token_file: token_file?,
        tls: tls?,
    })
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
