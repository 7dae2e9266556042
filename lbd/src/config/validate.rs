//! Checks a [`ConfigFile`] and builds the typed [`Config`]. (Being written.)

use super::file::ConfigFile;
use super::model::Config;

/// One problem in a config: where (`pool "api": member 2: port`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub reason: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

pub fn validate(_file: &ConfigFile) -> Result<Config, Vec<ConfigError>> {
    Err(vec![ConfigError {
        path: String::new(),
        reason: "validation not written yet".into(),
    }])
}
