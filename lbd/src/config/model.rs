//! The validated, typed configuration the data plane runs on.
//!
//! Every value here has been checked by [`super::validate`]: addresses parse,
//! ports and weights are in range, listener pools exist, binds are unique.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;

pub const DEFAULT_CONNECTION_LIMIT: u32 = 50_000;
pub const DEFAULT_CLIENT_IDLE: Duration = Duration::from_secs(50);
pub const DEFAULT_MEMBER_CONNECT: Duration = Duration::from_secs(5);
pub const DEFAULT_MEMBER_IDLE: Duration = Duration::from_secs(50);
pub const DEFAULT_RETRIES: u32 = 3;
pub const DEFAULT_WEIGHT: u32 = 1;
pub const MAX_WEIGHT: u32 = 256;
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub global: Global,
    pub listeners: Vec<Listener>,
    pub pools: Vec<Pool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Global {
    pub drain_timeout: Duration,
}

impl Default for Global {
    fn default() -> Self {
        Global {
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    pub bind: SocketAddr,
    /// Name of a pool that exists in [`Config::pools`].
    pub pool: String,
    /// At least 1.
    pub connection_limit: u32,
    /// Empty: every client is allowed.
    pub allowed_cidrs: Vec<IpNet>,
    pub client_idle: Duration,
    pub member_connect: Duration,
    pub member_idle: Duration,
    pub proxy_protocol: Option<ProxyProtocol>,
    /// Bind to addresses not (yet) configured on this host (IP_FREEBIND).
    pub freebind: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyProtocol {
    V1,
    V2,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub name: String,
    pub algorithm: Algorithm,
    /// Extra connect attempts on other members after a failed connect.
    pub retries: u32,
    pub members: Vec<Member>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Algorithm {
    /// Smooth weighted round robin (nginx's algorithm).
    #[default]
    RoundRobin,
    /// Fewest active connections relative to weight.
    LeastConnections,
    /// Consistent hashing (Maglev) on the client IP address.
    SourceIp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub address: IpAddr,
    pub port: u16,
    /// 0..=256. 0: no new connections, existing ones continue.
    pub weight: u32,
    /// Used only when no non-backup member is usable.
    pub backup: bool,
    /// Admin state. `false`: no new connections.
    pub enabled: bool,
    pub id: Option<String>,
    pub name: Option<String>,
}

impl Member {
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.port)
    }
}

impl Config {
    pub fn pool(&self, name: &str) -> Option<&Pool> {
        self.pools.iter().find(|p| p.name == name)
    }
}
