//! Configuration: the file format ([`file`]), the validated model ([`model`])
//! and the checks between them ([`validate`]).

pub mod file;
pub mod model;
pub mod validate;

use std::fmt;
use std::path::{Path, PathBuf};

pub use file::ConfigFile;
pub use model::*;
pub use validate::{validate, ConfigError};

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
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

/// Reads, parses and validates a config file.
pub fn load_file(path: &Path) -> Result<Config, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_owned(),
        source,
    })?;
    from_toml_str(&text, &path.display().to_string())
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
