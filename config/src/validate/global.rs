//! `[global]`: process-wide settings.

use super::fields::{duration_field, ConfigError, Scope};
use crate::file::GlobalSection;
use crate::model::{Global, DEFAULT_DRAIN_TIMEOUT};

/// Checks `[global]`; an absent section means all defaults.
pub(super) fn validate_global(
    section: Option<&GlobalSection>,
    errors: &mut Vec<ConfigError>,
) -> Global {
    let mut scope = Scope::new("global", errors);
    let drain_timeout = section.and_then(|g| g.drain_timeout.as_deref());
    Global {
        drain_timeout: duration_field(
            &mut scope,
            "drain_timeout",
            drain_timeout,
            DEFAULT_DRAIN_TIMEOUT,
        )
        .unwrap_or(DEFAULT_DRAIN_TIMEOUT),
    }
}
