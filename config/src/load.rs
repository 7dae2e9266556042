//! Loading a config file: reading it once it has settled, parsing the
//! TOML and validating it, with errors that name the file.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::file::ConfigFile;
use crate::model::Config;
use crate::validate::{validate, ConfigError};

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file kept changing while it was read (being written right now).
    #[error(
        "{}: the file kept changing for 3s while being read; not applied (write the new \
         config to another file and rename it over this one)",
        path.display()
    )]
    Unsettled { path: PathBuf },
    /// TOML syntax errors and unknown fields; `message` carries line/column.
    #[error("{origin}: {message}")]
    Syntax { origin: String, message: String },
    /// The file parsed but has invalid values; every problem is listed.
    #[error("{}", InvalidList { origin, errors })]
    Invalid {
        origin: String,
        errors: Vec<ConfigError>,
    },
}

struct InvalidList<'a> {
    origin: &'a str,
    errors: &'a [ConfigError],
}

impl fmt::Display for InvalidList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {e}", self.origin)?;
        }
        Ok(())
    }
}

/// Reads, parses and validates a config file, once it has settled (see
/// [`read_settled`]).
pub fn load_file(path: &Path) -> Result<Config, LoadError> {
    let text = read_settled(path)?;
    from_toml_str(&text, &path.display().to_string())
}

/// A file written less than this long ago may still be being written.
const SETTLED_AFTER: Duration = Duration::from_secs(1);
/// Time between two reads of a file that was written just now.
const SETTLE_PAUSE: Duration = Duration::from_millis(100);
/// Reads of a recently written file before giving up (about 3 s).
const SETTLE_TRIES: usize = 30;

/// Reads a config file that may be being written right now (a `cp` over
/// it while SIGHUP arrives): the text is taken only when the file's size,
/// inode and modification time are the same before and after reading it,
/// and, if it was modified less than [`SETTLED_AFTER`] ago, when a second
/// read [`SETTLE_PAUSE`] later finds it unchanged. A file that keeps
/// changing is an error. (Writing the new file and renaming it over the
/// old one avoids the wait altogether.)
pub fn read_settled(path: &Path) -> Result<String, LoadError> {
    let read_error = |source| LoadError::Read {
        path: path.to_owned(),
        source,
    };
    let stamp = || -> std::io::Result<FileStamp> {
        let meta = std::fs::metadata(path)?;
        Ok(FileStamp {
            len: meta.len(),
            inode: std::os::unix::fs::MetadataExt::ino(&meta),
            modified: meta.modified()?,
        })
    };
    let mut previous: Option<(FileStamp, String)> = None;
    for _ in 0..SETTLE_TRIES {
        let before = stamp().map_err(read_error)?;
        let text = std::fs::read_to_string(path).map_err(read_error)?;
        let after = stamp().map_err(read_error)?;
        if before == after {
            let old_enough = after
                .modified
                .elapsed()
                .is_ok_and(|age| age >= SETTLED_AFTER);
            let same_as_before = previous
                .as_ref()
                .is_some_and(|(stamp, prev)| *stamp == after && *prev == text);
            if old_enough || same_as_before {
                return Ok(text);
            }
            previous = Some((after, text));
        } else {
            previous = None;
        }
        std::thread::sleep(SETTLE_PAUSE);
    }
    Err(LoadError::Unsettled {
        path: path.to_owned(),
    })
}

/// What tells two versions of a file apart without reading it.
#[derive(Debug, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    inode: u64,
    modified: std::time::SystemTime,
}

/// Parses and validates TOML text; `origin` names it in errors (a file path).
pub fn from_toml_str(text: &str, origin: &str) -> Result<Config, LoadError> {
    let file: ConfigFile = toml::from_str(text).map_err(|e| LoadError::Syntax {
        origin: origin.to_owned(),
        message: e.to_string().trim_end().to_owned(),
    })?;
    validate(&file).map_err(|errors| LoadError::Invalid {
        origin: origin.to_owned(),
        errors,
    })
}

#[cfg(test)]
mod tests {
    use crate::validate::tests::*;

    #[test]
    fn from_toml_str_reports_invalid_values_with_origin() {
        let text = pool_with("", &["address = \"10.0.0.1\"\nport = 70000"]);
        let err = from_toml_str(&text, "lbd.toml").expect_err("invalid");
        assert!(matches!(err, LoadError::Invalid { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "lbd.toml: pool \"api\": member 1: port 70000 out of range (1-65535)"
        );
    }
}
