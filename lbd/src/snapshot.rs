//! A snapshot: everything the data path needs for one config generation,
//! built by the control thread and published to workers through `arc-swap`.
//!
//! Building a snapshot from a new config and the previous snapshot carries
//! over what must survive a reload: listening sockets whose `bind` did not
//! change (so no connection is ever refused during a reload), listener state
//! by listener name, a pool's queue by pool name, and member state by pool
//! name and address (counters, active connections, health, slow start). Cost depends on the config size only, never
//! on the number of established connections.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use lbd_config::{Config, HealthCheck, Protocol};

use crate::balance::{PlanMember, PoolPlan};
use crate::queue::PoolQueue;
use crate::sockets::{ListenerSockets, Sharing};
use crate::state::{ListenerState, MemberState};

pub struct Snapshot {
    pub generation: u64,
    pub config: Arc<Config>,
    pub listeners: Vec<ListenerRt>,
    /// A TCP and a UDP listener may share an address.
    by_bind: HashMap<(Protocol, SocketAddr), usize>,
    pub pools: Vec<PoolRt>,
    /// The kernel relay of listeners with `kernel_relay`: loaded once
    /// (kept across reloads); `None` when no listener wants it or it
    /// cannot be loaded (they relay in userspace then).
    pub kernel_relay: Option<Arc<lbd_ebpf::SockPairer>>,
}

pub struct ListenerRt {
    pub cfg: lbd_config::Listener,
    /// Index into [`Snapshot::pools`].
    pub pool: usize,
    pub state: Arc<ListenerState>,
    pub sockets: Arc<ListenerSockets>,
    /// The `connect_hedge` in force: the pool's, else the listener's;
    /// `None`: connects are not hedged.
    pub connect_hedge: Option<Duration>,
}

pub struct PoolRt {
    pub name: String,
    pub retries: u32,
    /// The pool's health checks, if any (`fall` also applies to failed
    /// connects in the data path).
    pub health: Option<Arc<HealthCheck>>,
    pub plan: Arc<PoolPlan>,
    pub members: Vec<MemberRt>,
    /// Whether a member has `max_connections`: only then are limits
    /// looked at and can clients queue.
    pub limited: bool,
    /// Clients waiting for a member slot; kept across reloads by pool name.
    pub queue: Arc<PoolQueue>,
    pub max_queue: Option<u32>,
    /// `None`: the listener's `member_connect`.
    pub queue_timeout: Option<Duration>,
    /// Slow start in milliseconds; 0: none.
    pub slow_start_ms: u64,
    /// `on_down = "shutdown_sessions"`: a member's connections are closed
    /// when it goes down.
    pub shutdown_on_down: bool,
    /// `on_maint = "shutdown_sessions"`: ... when it enters maint.
    pub shutdown_on_maint: bool,
}

pub struct MemberRt {
    pub cfg: lbd_config::Member,
    pub addr: SocketAddr,
    /// `pool/address:port`, for logs (shared by the member's connections).
    pub label: Arc<str>,
    pub state: Arc<MemberState>,
}

/// A new snapshot plus the sockets of the previous one it no longer uses;
/// the caller closes those once the new snapshot is published.
pub struct Built {
    pub snapshot: Snapshot,
    pub retired: Vec<Arc<ListenerSockets>>,
}

/// A listener's address could not be bound. The message includes the OS
/// error, so the error carries no `source` (an error chain would print
/// the cause twice).
#[derive(Debug, thiserror::Error)]
#[error("listener {listener:?}: cannot listen on {bind}: {error}")]
pub struct BindError {
    pub listener: String,
    pub bind: SocketAddr,
    pub error: std::io::Error,
}

impl Snapshot {
    /// Builds the snapshot for `config`, reusing what `prev` has. Opens
    /// sockets for new binds; on a bind error nothing of `prev` is touched.
    pub fn build(
        config: Config,
        prev: Option<&Snapshot>,
        workers: usize,
        generation: u64,
        sharing: Sharing,
    ) -> Result<Built, BindError> {
        let pools: Vec<PoolRt> = config
            .pools
            .iter()
            .map(|p| build_pool(p, prev, workers))
            .collect();

        let mut listeners = Vec::with_capacity(config.listeners.len());
        let mut by_bind = HashMap::new();
        for l in &config.listeners {
            let sockets = match prev.and_then(|p| p.find_listener(l.protocol, l.bind)) {
                Some(old) if !old.sockets.is_closed() => Arc::clone(&old.sockets),
                _ => Arc::new(
                    ListenerSockets::open(
                        l.bind,
                        l.protocol,
                        workers,
                        l.freebind,
                        !prev.is_some_and(|p| p.listens_near(l.protocol, l.bind)),
                        sharing,
                    )
                    .map_err(|error| BindError {
                        listener: l.name.clone(),
                        bind: l.bind,
                        error,
                    })?,
                ),
            };
            let state = prev
                .and_then(|p| p.listeners.iter().find(|o| o.cfg.name == l.name))
                .map(|o| Arc::clone(&o.state))
                .unwrap_or_else(|| Arc::new(ListenerState::new(workers)));
            let pool = config
                .pools
                .iter()
                .position(|p| p.name == l.pool)
                .expect("validated config: listener pools exist");
            let connect_hedge = l.hedge_for(&config.pools[pool]);
            by_bind.insert((l.protocol, l.bind), listeners.len());
            listeners.push(ListenerRt {
                cfg: l.clone(),
                pool,
                state,
                sockets,
                connect_hedge,
            });
        }

        let kernel_relay = if config.listeners.iter().any(|l| l.kernel_relay) {
            prev.and_then(|p| p.kernel_relay.clone())
                .or_else(load_kernel_relay)
        } else {
            None
        };

        let retired = prev
            .map(|p| {
                p.listeners
                    .iter()
                    .filter(|o| !by_bind.contains_key(&(o.cfg.protocol, o.cfg.bind)))
                    .map(|o| Arc::clone(&o.sockets))
                    .collect()
            })
            .unwrap_or_default();

        Ok(Built {
            snapshot: Snapshot {
                generation,
                config: Arc::new(config),
                listeners,
                by_bind,
                pools,
                kernel_relay,
            },
            retired,
        })
    }

    /// Copies what the config says about members into their shared state
    /// (admin state, whether they are checked). Called once the snapshot is
    /// published, so a rejected reload changes nothing.
    pub fn apply_member_settings(&self) {
        for pool in &self.pools {
            for m in &pool.members {
                let old = m.state.set_admin(m.cfg.admin_state);
                if old != m.cfg.admin_state {
                    tracing::info!(
                        member = %m.label,
                        "member {}: admin state {} -> {}",
                        m.label,
                        old.name(),
                        m.cfg.admin_state.name()
                    );
                }
                m.state.set_checked(pool.health.is_some());
            }
        }
    }

    /// The TCP listener bound to `bind`.
    #[inline]
    pub fn listener_at(&self, bind: SocketAddr) -> Option<&ListenerRt> {
        self.find_listener(Protocol::Tcp, bind)
    }

    /// The UDP listener bound to `bind`.
    #[inline]
    pub fn udp_listener_at(&self, bind: SocketAddr) -> Option<&ListenerRt> {
        self.find_listener(Protocol::Udp, bind)
    }

    #[inline]
    pub fn find_listener(&self, protocol: Protocol, bind: SocketAddr) -> Option<&ListenerRt> {
        self.by_bind
            .get(&(protocol, bind))
            .map(|&i| &self.listeners[i])
    }

    pub fn pool(&self, name: &str) -> Option<&PoolRt> {
        self.pools.iter().find(|p| p.name == name)
    }

    /// Whether one of this snapshot's own open listeners would make a new
    /// bind of `bind` look taken (the same port, one side a wildcard of the
    /// same family): a reload moving a listener from `0.0.0.0:80` to
    /// `10.0.0.1:80` must not mistake lbd's own socket for another
    /// process's.
    pub fn listens_near(&self, protocol: Protocol, bind: SocketAddr) -> bool {
        self.listeners.iter().any(|l| {
            let own = l.cfg.bind;
            l.cfg.protocol == protocol
                && !l.sockets.is_closed()
                && own.port() == bind.port()
                && own.is_ipv4() == bind.is_ipv4()
                && (own.ip() == bind.ip()
                    || own.ip().is_unspecified()
                    || bind.ip().is_unspecified())
        })
    }
}

/// Loads the kernel relay; says so, or why not (the listeners then relay
/// in userspace).
fn load_kernel_relay() -> Option<Arc<lbd_ebpf::SockPairer>> {
    match lbd_ebpf::SockPairer::load() {
        Ok(pairer) => {
            tracing::info!("kernel_relay: the sockmap relay is loaded");
            Some(Arc::new(pairer))
        }
        Err(e) => {
            tracing::warn!(
                "kernel_relay: cannot load the sockmap relay ({e}); those listeners relay \
                 in userspace"
            );
            None
        }
    }
}

fn build_pool(p: &lbd_config::Pool, prev: Option<&Snapshot>, workers: usize) -> PoolRt {
    let old_pool = prev.and_then(|s| s.pool(&p.name));
    let members: Vec<MemberRt> = p
        .members
        .iter()
        .map(|m| {
            let addr = m.socket_addr();
            let state = old_pool
                .and_then(|op| op.members.iter().find(|om| om.addr == addr))
                .map(|om| Arc::clone(&om.state))
                .unwrap_or_else(|| {
                    // Not shared yet: starts in its configured admin state.
                    let fresh = MemberState::new(workers);
                    fresh.set_admin(m.admin_state);
                    Arc::new(fresh)
                });
            MemberRt {
                cfg: m.clone(),
                addr,
                label: format!("{}/{}", p.name, addr).into(),
                state,
            }
        })
        .collect();
    let plan_members: Vec<PlanMember> = members
        .iter()
        .map(|m| PlanMember {
            key: m.addr.to_string(),
            weight: m.cfg.weight,
            backup: m.cfg.backup,
        })
        .collect();
    // An unchanged pool keeps its plan: workers then keep their balancer
    // state (round-robin position) and Maglev tables are not rebuilt.
    let plan = match old_pool {
        Some(op)
            if op.plan.algorithm() == p.algorithm
                && op.plan.members() == plan_members.as_slice() =>
        {
            Arc::clone(&op.plan)
        }
        _ => Arc::new(PoolPlan::new(p.algorithm, plan_members)),
    };
    PoolRt {
        name: p.name.clone(),
        retries: p.retries,
        health: p.health.clone().map(Arc::new),
        plan,
        members,
        limited: p.has_limits(),
        queue: old_pool.map_or_else(|| Arc::new(PoolQueue::new()), |op| Arc::clone(&op.queue)),
        max_queue: p.max_queue,
        queue_timeout: p.queue_timeout,
        slow_start_ms: p.slow_start.map_or(0, |d| (d.as_millis() as u64).max(1)),
        shutdown_on_down: p.on_down.shuts_down(),
        shutdown_on_maint: p.on_maint.shuts_down(),
    }
}

impl ListenerRt {
    /// Whether `allowed_cidrs` lets `ip` in (empty list: everyone).
    #[inline]
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.cfg.allowed_cidrs.is_empty() || self.cfg.allowed_cidrs.iter().any(|n| n.contains(&ip))
    }
}
