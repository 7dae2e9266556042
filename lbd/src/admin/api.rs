//! The runtime API: read and replace the running config, set a member's
//! admin state and weight. Every change goes through
//! [`Server::reload`](crate::server::Server::reload), exactly like SIGHUP:
//! validated first, swapped atomically, established connections untouched,
//! and on any error the running config stays.
//!
//! Changes made here live until the next SIGHUP, which re-reads the config
//! file (as HAProxy's runtime API changes do); lb-agent pushes whole configs
//! with `PUT /api/config` instead.

use std::net::SocketAddr;

use lbd_config::{AdminState, Config, ConfigFile, MAX_WEIGHT};
use serde::{Deserialize, Serialize};

use crate::server::{ReloadError, ReloadSummary, Server};

/// An API error: HTTP status and a JSON body `{"error": ..., "errors": [...]}`.
#[derive(Debug, Serialize)]
pub struct ApiError {
    #[serde(skip)]
    pub status: u16,
    pub error: String,
    /// Every config problem, with its field path, for rejected configs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

#[derive(Debug, Serialize)]
pub struct FieldError {
    pub path: String,
    pub reason: String,
}

impl ApiError {
    pub fn new(status: u16, error: impl Into<String>) -> ApiError {
        ApiError {
            status,
            error: error.into(),
            errors: Vec::new(),
        }
    }
}

impl From<ReloadError> for ApiError {
    fn from(e: ReloadError) -> Self {
        let status = match e {
            ReloadError::Bind(_) => 409,
            ReloadError::ShuttingDown => 503,
        };
        ApiError::new(
            status,
            format!("not applied, the running config stays: {e}"),
        )
    }
}

/// What a successful change did.
#[derive(Debug, Serialize)]
pub struct Applied {
    pub generation: u64,
    pub listeners_added: usize,
    pub listeners_removed: usize,
    pub members_added: usize,
    pub members_removed: usize,
}

impl From<ReloadSummary> for Applied {
    fn from(s: ReloadSummary) -> Self {
        Applied {
            generation: s.generation,
            listeners_added: s.listeners_added,
            listeners_removed: s.listeners_removed,
            members_added: s.members_added,
            members_removed: s.members_removed,
        }
    }
}

/// The running config in the file model (what `GET /api/config` returns).
pub fn running_config(server: &Server) -> ConfigFile {
    ConfigFile::from(server.shared().snapshot().config.as_ref())
}

/// Parses a pushed config: TOML when `toml` is set, else JSON of the same
/// structure as the config file.
pub fn parse_config(body: &[u8], toml: bool) -> Result<Config, ApiError> {
    let text =
        std::str::from_utf8(body).map_err(|_| ApiError::new(400, "the body is not UTF-8"))?;
    if toml {
        return lbd_config::from_toml_str(text, "pushed config").map_err(|e| match e {
            lbd_config::LoadError::Invalid { errors, .. } => invalid(errors),
            other => ApiError::new(400, other.to_string()),
        });
    }
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| ApiError::new(400, format!("pushed config: {e}")))?;
    // serde would take an array as a struct's fields in order
    // (`[{...}, {...}]` as [global], [admin]): only an object is a config.
    if !value.is_object() {
        return Err(ApiError::new(
            400,
            "pushed config: the JSON document must be an object ({\"listener\": [...], ...}), \
             the running config stays",
        ));
    }
    let file: ConfigFile = serde_json::from_value(value)
        .map_err(|e| ApiError::new(400, format!("pushed config: {e}")))?;
    lbd_config::validate(&file).map_err(invalid)
}

fn invalid(errors: Vec<lbd_config::ConfigError>) -> ApiError {
    ApiError {
        status: 400,
        error: format!(
            "config rejected ({} problem(s)), the running config stays",
            errors.len()
        ),
        errors: errors
            .into_iter()
            .map(|e| FieldError {
                path: e.path,
                reason: e.reason,
            })
            .collect(),
    }
}

/// `PUT /api/config`. A config without `[admin]` is refused: applying it
/// would shut down the admin server the request came through, and nothing
/// could be pushed after it (SIGHUP with a file can still remove it).
pub fn replace_config(server: &Server, config: Config) -> Result<Applied, ApiError> {
    if config.admin.is_none() {
        server.note_rejected_reload();
        return Err(ApiError::new(
            400,
            "refused: the pushed config has no [admin], so applying it would stop the admin \
             server this request came through; the running config stays (to remove [admin], \
             edit the config file and send SIGHUP)",
        ));
    }
    Ok(server.reload(config)?.into())
}

/// The body of `PUT /api/pools/{pool}/members/{address}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberChange {
    pub admin_state: Option<String>,
    pub weight: Option<i64>,
}

/// `PUT /api/pools/{pool}/members/{address}`: a new config with the
/// member's admin state and/or weight changed, applied like a reload.
pub fn change_member(
    server: &Server,
    pool: &str,
    address: &str,
    body: &[u8],
) -> Result<Applied, ApiError> {
    let change: MemberChange = serde_json::from_slice(body)
        .map_err(|e| ApiError::new(400, format!("member change: {e}")))?;
    let mut config = server.shared().snapshot().config.as_ref().clone();
    let member = find_member(&mut config, pool, address)?;
    if let Some(state) = &change.admin_state {
        member.admin_state = parse_admin_state(state)?;
    }
    if let Some(weight) = change.weight {
        member.weight = u32::try_from(weight)
            .ok()
            .filter(|w| *w <= MAX_WEIGHT)
            .ok_or_else(|| {
                ApiError::new(
                    400,
                    format!("weight {weight} out of range (0-{MAX_WEIGHT})"),
                )
            })?;
    }
    replace_config(server, config)
}

fn find_member<'a>(
    config: &'a mut Config,
    pool: &str,
    address: &str,
) -> Result<&'a mut lbd_config::Member, ApiError> {
    let addr: SocketAddr = address.parse().map_err(|_| {
        ApiError::new(
            400,
            format!("member {address:?} is not an address:port (e.g. 10.0.0.1:80, [fd00::1]:80)"),
        )
    })?;
    let pool_cfg = config
        .pools
        .iter_mut()
        .find(|p| p.name == pool)
        .ok_or_else(|| ApiError::new(404, format!("no pool {pool:?}")))?;
    pool_cfg
        .members
        .iter_mut()
        .find(|m| m.socket_addr() == addr)
        .ok_or_else(|| ApiError::new(404, format!("pool {pool:?} has no member {addr}")))
}

fn parse_admin_state(text: &str) -> Result<AdminState, ApiError> {
    AdminState::ALL
        .into_iter()
        .find(|s| s.name() == text)
        .ok_or_else(|| {
            ApiError::new(
                400,
                format!("admin_state {text:?} is not valid (expected \"ready\", \"drain\" or \"maint\")"),
            )
        })
}
