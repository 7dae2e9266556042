//! HAProxy's server-state file: `server-state-file`, `server-state-base`
//! (global), `load-server-state-from-file global|local|none` and
//! `server-state-file-name` (backend). The file is what `show servers state`
//! printed before a reload (Octavia's amphora agent saves it there); the
//! next start or reload applies the runtime state it holds to the config
//! the files give, as HAProxy 2.6 does:
//!
//! * admin state: when a server's `disabled` (config maintenance, bit
//!   0x04) is the same in the file and in the config, a forced maintenance
//!   (0x01) is kept and a server taken out of config maintenance at run
//!   time stays ready; when the config changed, the config wins. A forced
//!   drain (0x08) is kept.
//! * weight: the run-time weight (`srv_uweight`) is kept when the file's
//!   initial weight (`srv_iweight`) is still the config's.
//!
//! Health is not read from the file: a reload keeps the members' health in
//! the running process, and a new process checks again. Lines that do not
//! parse, and servers or backends the config no longer has, are skipped
//! with a warning; a file that cannot be read is a warning (it does not
//! exist before the first save).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Diag, Level, Loc};
use crate::model::{AdminState, Config, MAX_WEIGHT};

/// Where one pool's saved state comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateSource {
    pub pool: String,
    pub path: PathBuf,
    /// The `load-server-state-from-file` line.
    pub loc: Loc,
}

/// The path of a state file: `file` under `base` unless it is absolute.
pub fn resolve(base: Option<&str>, file: &str) -> PathBuf {
    match base {
        Some(base) if !file.starts_with('/') => Path::new(base).join(file),
        _ => PathBuf::from(file),
    }
}

/// One server line of a state file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Saved {
    admin: u32,
    uweight: u32,
    iweight: u32,
    line: usize,
}

/// A state file's servers by (backend, server).
type SavedFile = HashMap<(String, String), Saved>;

/// `srv_admin_state` bits (HAProxy's `SRV_ADMF_*`).
const FORCED_MAINT: u32 = 0x01;
const CONFIG_MAINT: u32 = 0x04;
const FORCED_DRAIN: u32 = 0x08;

/// Applies the state files of `sources` to `config`; returns warnings.
pub fn apply(config: &mut Config, sources: &[StateSource]) -> Vec<Diag> {
    let mut warnings = Vec::new();
    let mut files: HashMap<&Path, Option<SavedFile>> = HashMap::new();
    for source in sources {
        let saved = files
            .entry(source.path.as_path())
            .or_insert_with(|| read(&source.path, &source.loc, &mut warnings));
        let Some(saved) = saved else { continue };
        let Some(pool) = config.pools.iter_mut().find(|p| p.name == source.pool) else {
            continue;
        };
        for member in &mut pool.members {
            let Some(name) = member.name.as_deref() else {
                continue;
            };
            let Some(s) = saved.get(&(source.pool.clone(), name.to_owned())) else {
                continue;
            };
            let configured_maint = member.admin_state == AdminState::Maint;
            if (s.admin & CONFIG_MAINT != 0) == configured_maint {
                if s.admin & FORCED_MAINT != 0 {
                    member.admin_state = AdminState::Maint;
                } else if configured_maint {
                    member.admin_state = AdminState::Ready;
                }
            }
            if s.admin & FORCED_DRAIN != 0 && member.admin_state == AdminState::Ready {
                member.admin_state = AdminState::Drain;
            }
            if s.iweight == member.weight {
                if s.uweight <= MAX_WEIGHT {
                    member.weight = s.uweight;
                } else {
                    warnings.push(warn(
                        &source.path,
                        s.line,
                        format!(
                            "weight {} of {}/{name} is above {MAX_WEIGHT}; ignored",
                            s.uweight, pool.name
                        ),
                    ));
                }
            }
        }
    }
    warnings
}

fn warn(path: &Path, line: usize, message: String) -> Diag {
    Diag {
        level: Level::Warning,
        loc: Some(Loc {
            file: Arc::from(path.display().to_string()),
            line,
        }),
        message,
    }
}

/// Reads a state file: `(backend, server) -> state`; `None` (and a
/// warning) when it cannot be read or is not version 1.
fn read(path: &Path, from: &Loc, warnings: &mut Vec<Diag>) -> Option<SavedFile> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            warnings.push(Diag {
                level: Level::Warning,
                loc: Some(from.clone()),
                message: format!(
                    "cannot read server state file '{}': {e}; servers start in their configured \
                     state",
                    path.display()
                ),
            });
            return None;
        }
    };
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, "1")) => {}
        other => {
            warnings.push(warn(
                path,
                1,
                format!(
                    "not a server state file of version 1 (first line {:?}); ignored",
                    other.map_or("", |(_, l)| l)
                ),
            ));
            return None;
        }
    }
    let mut saved = HashMap::new();
    for (index, line) in lines {
        let line_no = index + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match parse_line(line) {
            Some((backend, server, state)) => {
                saved.insert(
                    (backend, server),
                    Saved {
                        line: line_no,
                        ..state
                    },
                );
            }
            None => warnings.push(warn(
                path,
                line_no,
                "not a server state line (be_id be_name srv_id srv_name srv_addr srv_op_state \
                 srv_admin_state srv_uweight srv_iweight ...); skipped"
                    .to_owned(),
            )),
        }
    }
    Some(saved)
}

/// `be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state
/// srv_uweight srv_iweight ...`
fn parse_line(line: &str) -> Option<(String, String, Saved)> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.len() < 9 {
        return None;
    }
    let number = |i: usize| fields[i].parse::<u32>().ok();
    number(0)?;
    number(2)?;
    number(5)?;
    Some((
        fields[1].to_owned(),
        fields[3].to_owned(),
        Saved {
            admin: number(6)?,
            uweight: number(7)?,
            iweight: number(8)?,
            line: 0,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::haproxy::load_paths;
    use crate::haproxy::test_util::env;

    fn config(dir: &Path, state: &str) -> Config {
        let cfg = dir.join("lb.cfg");
        std::fs::write(
            &cfg,
            format!(
                "global\n  server-state-file {}\n\
                 defaults\n  mode tcp\n  timeout connect 1s\n  timeout client 1s\n  timeout server 1s\n\
                 frontend fe\n  bind 127.0.0.1:1\n  default_backend be\n\
                 backend be\n  load-server-state-from-file global\n\
                   server a 127.0.0.1:2 weight 10\n  server b 127.0.0.1:3 disabled\n\
                   server c 127.0.0.1:4 weight 5\n  server d 127.0.0.1:5 disabled\n",
                dir.join("state").display()
            ),
        )
        .expect("write");
        std::fs::write(dir.join("state"), state).expect("write");
        let (mut config, reading) = load_paths(&[cfg], env()).unwrap_or_else(|e| panic!("{e}"));
        let warnings = apply(&mut config, &reading.server_state);
        assert!(warnings.is_empty(), "{warnings:?}");
        config
    }

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("lbd-state-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("dir");
        d
    }

    #[test]
    fn runtime_states_and_weights_come_back() {
        let d = dir("apply");
        // a: forced drain, weight 3 (initial 10: kept); b: config-disabled,
        // then made ready; c: forced maint, weight saved with another
        // initial weight (ignored); d: config-disabled and still in maint.
        let config = config(
            &d,
            "1\n# be_id be_name srv_id srv_name ...\n\
             3 be 1 a 127.0.0.1 2 8 3 10 0 1 0 0 0 0 0 0 - 2 0 0 0 - 0\n\
             3 be 2 b 127.0.0.1 2 4 1 1 0 1 0 0 0 0 0 0 - 3 0 0 0 - 0\n\
             3 be 3 c 127.0.0.1 0 1 7 9 0 1 0 0 0 0 0 0 - 4 0 0 0 - 0\n\
             3 be 4 d 127.0.0.1 0 5 1 1 0 1 0 0 0 0 0 0 - 5 0 0 0 - 0\n",
        );
        let m = &config.pools[0].members;
        let got: Vec<(AdminState, u32)> = m.iter().map(|m| (m.admin_state, m.weight)).collect();
        assert_eq!(
            got,
            [
                (AdminState::Drain, 3),
                (AdminState::Ready, 1),
                (AdminState::Maint, 5),
                (AdminState::Maint, 1),
            ]
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_changed_config_wins_over_the_file() {
        let d = dir("changed");
        // The file says a was config-disabled (0x05); the config no
        // longer disables it: ready.
        let config = config(
            &d,
            "1\n3 be 1 a 127.0.0.1 0 5 10 10 0 1 0 0 0 0 0 0 - 2 0 0 0 - 0\n",
        );
        assert_eq!(config.pools[0].members[0].admin_state, AdminState::Ready);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn bad_files_and_lines_are_warnings() {
        let d = dir("bad");
        let loc = Loc {
            file: Arc::from("lb.cfg"),
            line: 3,
        };
        let source = |p: &Path| StateSource {
            pool: "be".to_owned(),
            path: p.to_owned(),
            loc: loc.clone(),
        };
        let mut config = config(&d, "1\n");
        let before = config.clone();
        let missing = apply(&mut config, &[source(&d.join("nope"))]);
        assert!(
            missing[0]
                .to_string()
                .contains("cannot read server state file"),
            "{missing:?}"
        );
        std::fs::write(d.join("v2"), "2\n").expect("write");
        let version = apply(&mut config, &[source(&d.join("v2"))]);
        assert!(version[0].to_string().contains("version 1"), "{version:?}");
        std::fs::write(d.join("junk"), "1\n3 be x a\n\u{0}\u{1}garbage\n").expect("write");
        let junk = apply(&mut config, &[source(&d.join("junk"))]);
        assert_eq!(junk.len(), 2, "{junk:?}");
        assert!(junk[0].to_string().contains("junk:2"), "{junk:?}");
        assert_eq!(config, before);
        let _ = std::fs::remove_dir_all(&d);
    }
}
