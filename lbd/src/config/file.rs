//! The config file as written by an operator: TOML, parsed with serde.
//!
//! Types here are deliberately loose (strings for addresses and durations,
//! `i64` for numbers, `Option` for required fields) so that parsing never
//! stops at the first mistake: [`super::validate`] turns a [`ConfigFile`] into
//! a typed [`super::Config`] and reports *every* problem with its field path.
//! Unknown fields are rejected at parse time (`deny_unknown_fields`).
//!
//! lb-agent builds a `ConfigFile` and serializes it (TOML for `lbd -c`, the
//! same structure as JSON for the admin API), so these types are also the wire
//! format.

use serde::{Deserialize, Serialize};

/// A whole config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// `[global]`: process-wide settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global: Option<GlobalSection>,
    /// `[[listener]]` tables.
    #[serde(default, rename = "listener", skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<ListenerSection>,
    /// `[[pool]]` tables.
    #[serde(default, rename = "pool", skip_serializing_if = "Vec::is_empty")]
    pub pools: Vec<PoolSection>,
}

/// `[global]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalSection {
    /// How long SIGTERM/SIGINT waits for established connections to finish
    /// before exiting anyway (HAProxy `hard-stop-after`). Default 30 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_timeout: Option<String>,
}

/// `[[listener]]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerSection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `addr:port`, IPv4 (`0.0.0.0:8080`) or IPv6 (`[::]:8080`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    /// Name of a `[[pool]]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_limit: Option<i64>,
    /// CIDRs allowed to connect; empty means everyone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_cidrs: Vec<String>,
    /// Durations such as `"50s"`, `"500ms"`, `"2m"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_idle: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_connect: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_idle: Option<String>,
    /// `"v1"` or `"v2"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<String>,
    /// Bind even if the address is not (yet) on this host, e.g. a VIP that
    /// keepalived moves here later (IP_FREEBIND).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freebind: Option<bool>,
}

/// `[[pool]]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `"round_robin"` (default), `"least_connections"` or `"source_ip"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<i64>,
    /// `[[pool.member]]` tables.
    #[serde(default, rename = "member", skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberSection>,
}

/// `[[pool.member]]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberSection {
    /// An IP address (hostnames are not resolved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    /// 0..=256, default 1. 0: no new connections, existing ones continue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Opaque identifiers for the control plane (Octavia member id, node name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

// ------------------------------------------------- typed config → file model

use std::time::Duration;

use super::model::{Config, Global, Listener, Member, Pool};
use super::validate::{algorithm_name, proxy_protocol_name};

/// Renders a typed config back into the file model, every setting written
/// out explicitly (defaults included), so that for any `cfg` returned by
/// [`super::validate`], `validate(&ConfigFile::from(&cfg)) == Ok(cfg)`.
/// lb-agent uses this to write configs.
impl From<&Config> for ConfigFile {
    fn from(config: &Config) -> Self {
        ConfigFile {
            global: Some(GlobalSection::from(&config.global)),
            listeners: config.listeners.iter().map(ListenerSection::from).collect(),
            pools: config.pools.iter().map(PoolSection::from).collect(),
        }
    }
}

impl From<&Global> for GlobalSection {
    fn from(global: &Global) -> Self {
        GlobalSection {
            drain_timeout: Some(duration_text(global.drain_timeout)),
        }
    }
}

impl From<&Listener> for ListenerSection {
    fn from(listener: &Listener) -> Self {
        ListenerSection {
            name: Some(listener.name.clone()),
            bind: Some(listener.bind.to_string()),
            pool: Some(listener.pool.clone()),
            connection_limit: Some(i64::from(listener.connection_limit)),
            allowed_cidrs: listener
                .allowed_cidrs
                .iter()
                .map(ToString::to_string)
                .collect(),
            client_idle: Some(duration_text(listener.client_idle)),
            member_connect: Some(duration_text(listener.member_connect)),
            member_idle: Some(duration_text(listener.member_idle)),
            proxy_protocol: listener
                .proxy_protocol
                .map(|version| proxy_protocol_name(version).to_owned()),
            freebind: Some(listener.freebind),
        }
    }
}

impl From<&Pool> for PoolSection {
    fn from(pool: &Pool) -> Self {
        PoolSection {
            name: Some(pool.name.clone()),
            algorithm: Some(algorithm_name(pool.algorithm).to_owned()),
            retries: Some(i64::from(pool.retries)),
            members: pool.members.iter().map(MemberSection::from).collect(),
        }
    }
}

impl From<&Member> for MemberSection {
    fn from(member: &Member) -> Self {
        MemberSection {
            address: Some(member.address.to_string()),
            port: Some(i64::from(member.port)),
            weight: Some(i64::from(member.weight)),
            backup: Some(member.backup),
            enabled: Some(member.enabled),
            id: member.id.clone(),
            name: member.name.clone(),
        }
    }
}

/// A duration as `humantime` writes it (`"1m 30s"`), which it parses back
/// exactly.
fn duration_text(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}
