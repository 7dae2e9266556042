//! The shared context of the data plane: what the worker threads, the
//! control thread and the service threads (health, admin, XDP) share.
//!
//! It sits below everything that runs: workers and connections read the
//! current [`Snapshot`] and write their [`WorkerCounters`] through it;
//! the control side ([`crate::server`]) publishes snapshots; services
//! follow them and publish what they learn (the XDP status). It imports
//! only the types it holds (snapshot, state, runtime kind, member events),
//! so nothing on the hot path needs the modules that run services.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::sync::watch;

use crate::events::MEMBER_EVENTS;
use crate::runtime::RuntimeKind;
use crate::snapshot::Snapshot;
use crate::state::WorkerCounters;

/// What workers and the control thread share.
pub struct Shared {
    snapshot: ArcSwap<Snapshot>,
    changed: watch::Sender<u64>,
    /// One per worker, indexed by worker id.
    pub workers: Vec<Arc<WorkerCounters>>,
    pub runtime: RuntimeKind,
    /// When the data plane started.
    pub started: Instant,
    /// Reloads applied.
    pub reloads: AtomicU64,
    /// Reloads rejected (bad config file or pushed config, unbindable
    /// address); the running config stayed each time.
    pub reload_failures: AtomicU64,
    /// The XDP fast path's state, published by its thread; `None` while no
    /// listener asks for it.
    pub xdp: ArcSwapOption<XdpStatus>,
    /// Signalled when a worker thread ended by a panic: its listening
    /// sockets would keep taking connections nobody accepts, so lbd must
    /// stop (see `lbd run`).
    pub worker_died: tokio::sync::Notify,
}

impl Shared {
    /// The current snapshot (an `Arc` of it).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Cheap access for the per-connection path.
    pub fn load_snapshot(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.snapshot.load()
    }

    /// Notified with the generation of every published snapshot.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Wakes the workers to look at their listeners again: one was
    /// closed ([`crate::sockets::ListenerSockets::close`]).
    pub fn wake_workers(&self) {
        self.changed.send_modify(|_| {});
    }

    /// Client connections open right now, all workers and listeners.
    pub fn active_connections(&self) -> u64 {
        self.workers.iter().map(|w| w.active.load(Relaxed)).sum()
    }
}

impl Shared {
    /// The context of a data plane about to start with `snapshot`
    /// (generation 1) and `workers` worker threads.
    pub fn new(snapshot: Snapshot, workers: usize, runtime: RuntimeKind) -> Shared {
        let (changed, _) = watch::channel(snapshot.generation);
        Shared {
            snapshot: ArcSwap::from_pointee(snapshot),
            changed,
            workers: (0..workers.max(1))
                .map(|_| Arc::new(WorkerCounters::default()))
                .collect(),
            runtime,
            started: Instant::now(),
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
            xdp: ArcSwapOption::empty(),
            worker_died: tokio::sync::Notify::new(),
        }
    }

    /// Makes `snapshot` the current one and tells whoever follows them:
    /// workers and services through [`Shared::subscribe`], threads waiting
    /// on member events through [`MEMBER_EVENTS`].
    pub fn publish(&self, snapshot: Arc<Snapshot>) {
        let generation = snapshot.generation;
        self.snapshot.store(snapshot);
        self.changed.send_replace(generation);
        MEMBER_EVENTS.notify();
    }
}

/// What the stats page and `/metrics` show about the XDP fast path,
/// published by its control loop ([`crate::xdp`]).
#[derive(Debug, Clone, Default)]
pub struct XdpStatus {
    /// Interfaces and how the program is attached (`native`, `generic`).
    pub interfaces: Vec<(String, &'static str)>,
    /// Why the fast path is not running, if it should be.
    pub error: Option<String>,
    /// Fast-path listeners by name.
    pub listeners: Vec<String>,
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
    pub flows: u64,
    /// Packets dropped, by reason.
    pub drops: Vec<(&'static str, u64)>,
}
