//! Reading a haproxy.cfg (HAProxy 2.6's format) into lbd's one config
//! model: the same [`ConfigFile`] a TOML file gives, checked by the same
//! [`crate::validate`].
//!
//! The reader is for `mode tcp` configs: what Octavia's amphora templates
//! render for TCP listeners and pools of protocol TCP, PROXY and PROXYV2,
//! and what L4 configs in the field use (kube-apiserver fronts, `listen
//! stats`). Every keyword is either carried over, accepted with a warning
//! saying what lbd does instead, or refused with an error in HAProxy's
//! style, naming the file, the line, the keyword and why:
//!
//! ```text
//! [ALERT]    (lbd) : config : parsing [lb.cfg:12] : 'mode http': lbd is L4 (TCP) only ...
//! ```
//!
//! Nothing that changes traffic is ignored silently.
//!
//! Modules: [`lexer`] (words, quotes, variables, `.if` blocks) →
//! [`sections`] (sections, inheritance from `defaults`, keyword dispatch)
//! with one module per keyword family ([`bind`], [`server`],
//! [`timeouts`], [`checks`], [`acl`], [`stats`], [`cli_socket`],
//! [`server_state`]) → [`convert`] (to a
//! [`ConfigFile`], and the TOML text of `lbd convert`).

pub mod acl;
pub mod bind;
pub mod checks;
pub mod cli_socket;
pub mod convert;
pub mod lexer;
pub mod sections;
pub mod server;
pub mod server_state;
pub mod stats;
pub mod timeouts;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use convert::render_toml;
pub use lexer::{Env, HAPROXY_VERSION};

use crate::file::ConfigFile;
use crate::model::Config;

/// Where a line is: file and 1-based line number.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Loc {
    pub file: Arc<str>,
    pub line: usize,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// A conversion step failed; its reasons are already in the [`Diags`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reported;

/// How serious a [`Diag`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// The config is refused.
    Alert,
    /// Accepted; the message says what lbd does instead.
    Warning,
}

/// An error or a warning, with the line it is about when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diag {
    pub level: Level,
    pub loc: Option<Loc>,
    pub message: String,
}

impl fmt::Display for Diag {
    /// HAProxy's layout, with `lbd` where HAProxy prints its pid.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.level {
            Level::Alert => "[ALERT]    (lbd) : config : ",
            Level::Warning => "[WARNING]  (lbd) : config : ",
        };
        match &self.loc {
            Some(loc) => write!(f, "{level}parsing [{loc}] : {}", self.message),
            None => write!(f, "{level}{}", self.message),
        }
    }
}

/// The errors and warnings of one reading, in file order.
#[derive(Debug, Default, Clone)]
pub struct Diags {
    pub errors: Vec<Diag>,
    pub warnings: Vec<Diag>,
}

impl Diags {
    pub fn error(&mut self, loc: Option<Loc>, message: impl Into<String>) {
        self.errors.push(Diag {
            level: Level::Alert,
            loc,
            message: message.into(),
        });
    }

    pub fn warn(&mut self, loc: Option<Loc>, message: impl Into<String>) {
        self.warnings.push(Diag {
            level: Level::Warning,
            loc,
            message: message.into(),
        });
    }
}

/// HAProxy keywords whose lbd feature is being added on another branch:
/// refused by name until then, each in this one place so that wiring one
/// up is removing its line here and mapping it in its family module.
/// `(words the line starts with, why)`.
pub const NOT_YET: &[(&[&str], &str)] = &[];

/// The `NOT_YET` reason for `words` (a line, or a server option and what
/// follows), if it is one of them.
pub fn not_yet(words: &[String]) -> Option<&'static str> {
    NOT_YET.iter().find_map(|(prefix, why)| {
        (words.len() >= prefix.len() && prefix.iter().zip(words).all(|(p, w)| p == w))
            .then_some(*why)
    })
}

/// Settings of the process that are not part of the config model (the
/// command line sets them for TOML configs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Process {
    /// `nbthread`: data-plane workers, unless `--workers` says otherwise.
    pub workers: Option<usize>,
}

/// A haproxy.cfg read into lbd's file model.
#[derive(Debug, Clone)]
pub struct Reading {
    pub file: ConfigFile,
    pub process: Process,
    /// Everything accepted but not carried over as it is, in file order.
    pub warnings: Vec<Diag>,
    /// Where each listener and pool came from (`frontend`/`backend`/
    /// `listen` line), for errors of the validator.
    pub origins: Vec<(String, Loc)>,
    /// The pools that load a server-state file, and from where (applied
    /// when the config is started or reloaded, not by `-c`).
    pub server_state: Vec<server_state::StateSource>,
}

/// Why a haproxy.cfg was refused: every error, and the warnings found
/// before giving up.
#[derive(Debug, Clone)]
pub struct Refused {
    pub errors: Vec<Diag>,
    pub warnings: Vec<Diag>,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// What HAProxy's command line adds to the files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommandLine {
    /// `-N`: the maxconn of frontends that set none.
    pub default_maxconn: Option<u32>,
    /// `-n`: the global `maxconn` when the files set none.
    pub global_maxconn: Option<u32>,
}

/// Reads the files (a directory: its `*.cfg` files in lexical order, as
/// HAProxy does) in order as one config, and converts it.
pub fn read_paths(paths: &[PathBuf], env: Env) -> Result<Reading, Refused> {
    read_paths_with(paths, env, CommandLine::default())
}

/// [`read_paths`] with what the command line adds.
pub fn read_paths_with(
    paths: &[PathBuf],
    env: Env,
    command_line: CommandLine,
) -> Result<Reading, Refused> {
    let mut sources = Vec::new();
    let mut diags = Diags::default();
    for path in paths {
        match expand_path(path) {
            Ok(files) => {
                for file in files {
                    match std::fs::read(&file) {
                        Ok(bytes) => sources.push((file.display().to_string(), bytes)),
                        Err(e) => diags.error(
                            None,
                            format!("Cannot open configuration file {} : {e}", file.display()),
                        ),
                    }
                }
            }
            Err(message) => diags.error(None, message),
        }
    }
    if !diags.errors.is_empty() {
        return Err(Refused {
            errors: diags.errors,
            warnings: diags.warnings,
        });
    }
    let sources: Vec<(&str, &[u8])> = sources
        .iter()
        .map(|(name, bytes)| (name.as_str(), bytes.as_slice()))
        .collect();
    read_sources_with(&sources, env, command_line)
}

/// Reads in-memory files `(name, bytes)` in order as one config.
pub fn read_sources(sources: &[(&str, &[u8])], env: Env) -> Result<Reading, Refused> {
    read_sources_with(sources, env, CommandLine::default())
}

/// [`read_sources`] with what the command line adds.
pub fn read_sources_with(
    sources: &[(&str, &[u8])],
    env: Env,
    command_line: CommandLine,
) -> Result<Reading, Refused> {
    let mut reader = sections::Reader::new(env);
    for (name, bytes) in sources {
        reader.read_file(name, bytes);
    }
    reader.global.default_maxconn = command_line.default_maxconn;
    if reader.global.maxconn.is_none() {
        reader.global.maxconn = command_line.global_maxconn.map(|value| sections::At {
            value,
            loc: Loc {
                file: "command line".into(),
                line: 0,
            },
        });
    }
    convert::convert(reader)
}

/// The files `path` stands for: itself, or a directory's non-hidden
/// `*.cfg` files in lexical order.
fn expand_path(path: &Path) -> Result<Vec<PathBuf>, String> {
    let meta = std::fs::metadata(path).map_err(|e| {
        format!(
            "Cannot open configuration file/directory {} : {e}",
            path.display()
        )
    })?;
    if !meta.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let entries = std::fs::read_dir(path).map_err(|e| {
        format!(
            "Cannot open configuration directory {} : {e}",
            path.display()
        )
    })?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", path.display()))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || !name.ends_with(".cfg") || name.len() == 4 {
            continue;
        }
        if entry.path().is_file() {
            files.push(entry.path());
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(format!(
            "no configuration file (*.cfg) in directory {}",
            path.display()
        ));
    }
    Ok(files)
}

/// Reads, converts and validates haproxy.cfg files; the validator's errors
/// name the `frontend`/`backend` line they are about.
pub fn load_paths(paths: &[PathBuf], env: Env) -> Result<(Config, Reading), Refused> {
    load_paths_with(paths, env, CommandLine::default())
}

/// [`load_paths`] with what the command line adds.
pub fn load_paths_with(
    paths: &[PathBuf],
    env: Env,
    command_line: CommandLine,
) -> Result<(Config, Reading), Refused> {
    let reading = read_paths_with(paths, env, command_line)?;
    validate_reading(reading)
}

/// Validates a reading with the one validator.
pub fn validate_reading(reading: Reading) -> Result<(Config, Reading), Refused> {
    match crate::validate::validate(&reading.file) {
        Ok(config) => Ok((config, reading)),
        Err(errors) => Err(Refused {
            errors: errors
                .into_iter()
                .map(|e| Diag {
                    level: Level::Alert,
                    loc: origin_of(&reading.origins, &e.path),
                    message: e.to_string(),
                })
                .collect(),
            warnings: reading.warnings,
        }),
    }
}

/// The line of the section a validator error path (`pool "b": member 2`)
/// is about.
fn origin_of(origins: &[(String, Loc)], path: &str) -> Option<Loc> {
    let quoted = path.split('"').nth(1)?;
    let kind = path.split(' ').next()?;
    origins
        .iter()
        .find(|(name, _)| name == &format!("{kind} {quoted}"))
        .map(|(_, loc)| loc.clone())
}

/// Whether `text` is a haproxy.cfg rather than TOML: its first line that is
/// not blank or a comment starts with a section keyword (or a `.if`-family
/// directive), as HAProxy's files do; TOML's start with `[`, `key =`.
pub fn looks_like_haproxy(text: &str) -> bool {
    let Some(first) = text
        .lines()
        .map(|l| l.trim())
        .find(|l| !l.is_empty() && !l.starts_with('#'))
    else {
        return false;
    };
    let word = first
        .split(|c: char| c.is_ascii_whitespace())
        .next()
        .unwrap_or_default();
    sections::SECTION_KEYWORDS.contains(&word)
        || matches!(
            word,
            ".if" | ".diag" | ".notice" | ".warning" | ".alert" | "userlist" | "peers"
        )
}

#[cfg(test)]
pub(crate) mod test_util;

/// Whether `paths` are read as haproxy.cfg rather than TOML: several paths,
/// a directory, a file that [`looks_like_haproxy`], or one that is not
/// text (NUL bytes or not UTF-8: the haproxy reader names the lines).
/// A path that cannot be read is left to the TOML loader, whose error
/// names it.
pub fn is_haproxy(paths: &[PathBuf]) -> bool {
    match paths {
        [path] => {
            if path.is_dir() {
                return true;
            }
            match std::fs::read(path) {
                Ok(bytes) => match std::str::from_utf8(&bytes) {
                    Ok(text) => text.contains('\0') || looks_like_haproxy(text),
                    Err(_) => true,
                },
                Err(_) => false,
            }
        }
        _ => true,
    }
}
