//! The control side of the data plane: starts workers, publishes config
//! snapshots (start and reload), and drains on shutdown. Nothing here runs
//! on the per-connection path.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use lbd_config::Config;
use tracing::{error, info, warn};

use crate::context::Shared;
use crate::health::HealthService;
use crate::runtime::{epoll::Epoll, uring::Uring, RuntimeKind};
use crate::service::Services;
use crate::snapshot::{BindError, Snapshot};
use crate::sockets::Sharing;
use crate::worker;
use crate::xdp::XdpService;

/// Why a reload was refused. The running config stays in every case.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error("lbd is shutting down")]
    ShuttingDown,
}

/// Why a runtime change ([`Server::adjust`]) was not applied.
#[derive(Debug, thiserror::Error)]
pub enum AdjustError<E> {
    /// The change itself refused (e.g. a weight out of range).
    #[error("{0}")]
    Refused(E),
    #[error(transparent)]
    Reload(ReloadError),
}

/// What a reload changed, for the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    pub generation: u64,
    pub listeners_added: usize,
    pub listeners_removed: usize,
    pub members_added: usize,
    pub members_removed: usize,
}

struct ControlState {
    generation: u64,
    draining: bool,
    /// The config of the last reload (or the start): what runtime changes
    /// ([`Server::adjust`]) start from, and where HAProxy's "initial"
    /// weights come from.
    loaded: Arc<Config>,
}

/// A config as its files give it, and the config that runs: the same, or
/// with runtime state applied on top (HAProxy's server-state file, see
/// `lbd_config::haproxy::server_state`). [`Server::loaded_config`] is the
/// first.
#[derive(Debug, Clone)]
pub struct Versions {
    pub loaded: Config,
    pub running: Config,
}

impl From<Config> for Versions {
    fn from(config: Config) -> Versions {
        Versions {
            loaded: config.clone(),
            running: config,
        }
    }
}

/// A running data plane.
pub struct Server {
    shared: Arc<Shared>,
    control: Mutex<ControlState>,
    /// Health checks, the XDP fast path and the admin server.
    services: Services,
}

impl Server {
    /// Binds every listener, starts `workers` worker threads on `runtime`
    /// and returns once all of them run.
    pub fn start(config: Config, workers: usize, runtime: RuntimeKind) -> anyhow::Result<Server> {
        Self::start_sharing(config, workers, runtime, Sharing::Exclusive)
    }

    /// [`Server::start`], saying whether the listeners may share their
    /// addresses with processes being replaced (`haproxy -sf/-st`).
    pub fn start_sharing(
        config: impl Into<Versions>,
        workers: usize,
        runtime: RuntimeKind,
        sharing: Sharing,
    ) -> anyhow::Result<Server> {
        let workers = workers.max(1);
        let Versions { loaded, running } = config.into();
        let (loaded, config) = (Arc::new(loaded), running);
        let built = Snapshot::build(config, None, workers, 1, sharing)?;
        built.snapshot.apply_member_settings();
        let shared = Arc::new(Shared::new(built.snapshot, workers, runtime));

        let (ready_tx, ready_rx) = mpsc::channel();
        for id in 0..workers {
            let shared = Arc::clone(&shared);
            let ready = ready_tx.clone();
            thread::Builder::new()
                .name(format!("lbd-worker-{id}"))
                .spawn(move || {
                    let run = std::panic::AssertUnwindSafe(|| match runtime {
                        RuntimeKind::IoUring => {
                            worker::run::<Uring>(id, Arc::clone(&shared), ready)
                        }
                        RuntimeKind::Epoll => worker::run::<Epoll>(id, Arc::clone(&shared), ready),
                    });
                    if std::panic::catch_unwind(run).is_err() {
                        // The panic itself was logged by the panic hook.
                        error!("worker {id} stopped by a panic; lbd must stop");
                        shared.worker_died.notify_one();
                    }
                })
                .context("cannot spawn a worker thread")?;
        }
        drop(ready_tx);
        for _ in 0..workers {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => anyhow::bail!(e),
                Err(_) => anyhow::bail!("a worker thread exited while starting"),
            }
        }
        let services = Services::default();
        services
            .start(HealthService {
                shared: Arc::clone(&shared),
            })
            .context("cannot start the health checker")?;
        services
            .start(XdpService {
                shared: Arc::clone(&shared),
            })
            .context("cannot start the XDP fast path thread")?;
        Ok(Server {
            shared,
            control: Mutex::new(ControlState {
                generation: 1,
                draining: false,
                loaded,
            }),
            services,
        })
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The background services; the admin server joins them when it starts.
    pub fn services(&self) -> &Services {
        &self.services
    }

    /// Stops the background services (after [`Server::drain`]): health
    /// checks end, the XDP program is detached, the admin server stops and
    /// removes its unix socket. Waits up to `timeout` for them.
    pub fn stop_services(&self, timeout: Duration) {
        self.services.signal().fire();
        // The XDP loop may be waiting for member events: wake it now.
        crate::events::MEMBER_EVENTS.notify();
        self.services.shutdown(timeout);
    }

    /// Swaps in a validated config: new listeners start accepting, listeners
    /// with an unchanged `bind` keep their sockets, removed ones stop
    /// accepting; established connections are untouched. On error nothing
    /// changes. This is what SIGHUP and the admin API call.
    pub fn reload(&self, config: impl Into<Versions>) -> Result<ReloadSummary, ReloadError> {
        let mut control = self.control.lock().unwrap_or_else(|p| p.into_inner());
        let Versions { loaded, running } = config.into();
        let loaded = Arc::new(loaded);
        let result = self.swap_config(&mut control, running);
        match &result {
            Ok(_) => {
                control.loaded = loaded;
                self.shared.reloads.fetch_add(1, Relaxed)
            }
            Err(_) => self.shared.reload_failures.fetch_add(1, Relaxed),
        };
        result
    }

    /// A runtime change (the stats socket's `set server`, `set maxconn`...):
    /// `change` edits a copy of the running config and the result is
    /// swapped in as by a reload, all under the reload lock, so that two
    /// changes never undo each other. The change must keep the config valid
    /// (the callers check ranges); when `change` fails nothing happens.
    /// Unlike [`Server::reload`] it is not counted as a reload and leaves
    /// [`Server::loaded_config`] as it is: the next reload from the config
    /// file replaces it, as HAProxy's runtime changes are.
    pub fn adjust<E>(
        &self,
        change: impl FnOnce(&mut Config) -> Result<(), E>,
    ) -> Result<ReloadSummary, AdjustError<E>> {
        let mut control = self.control.lock().unwrap_or_else(|p| p.into_inner());
        let mut config = self.shared.snapshot().config.as_ref().clone();
        change(&mut config).map_err(AdjustError::Refused)?;
        self.swap_config(&mut control, config)
            .map_err(AdjustError::Reload)
    }

    /// The config of the last reload (or of the start), without the runtime
    /// changes made since ([`Server::adjust`]).
    pub fn loaded_config(&self) -> Arc<Config> {
        Arc::clone(
            &self
                .control
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .loaded,
        )
    }

    /// Counts a reload rejected before it reached [`Server::reload`] (a
    /// config file that does not parse or validate).
    pub fn note_rejected_reload(&self) {
        self.shared.reload_failures.fetch_add(1, Relaxed);
    }

    fn swap_config(
        &self,
        control: &mut ControlState,
        config: Config,
    ) -> Result<ReloadSummary, ReloadError> {
        if control.draining {
            return Err(ReloadError::ShuttingDown);
        }
        let old = self.shared.snapshot();
        let generation = control.generation + 1;
        let built = Snapshot::build(
            config,
            Some(&old),
            self.shared.workers.len(),
            generation,
            Sharing::Exclusive,
        )?;
        let summary = summarize(&old, &built.snapshot);
        let snapshot = Arc::new(built.snapshot);
        snapshot.apply_member_settings();
        self.shared.publish(snapshot);
        control.generation = generation;
        for sockets in built.retired {
            sockets.close();
        }
        self.shared.wake_workers();
        Ok(summary)
    }

    /// Stops accepting on every listener (connections in progress go on).
    pub fn stop_accepting(&self) {
        let mut control = self.control.lock().unwrap_or_else(|p| p.into_inner());
        control.draining = true;
        for l in &self.shared.snapshot().listeners {
            l.sockets.close();
        }
        self.shared.wake_workers();
    }

    /// Stops accepting and waits until every connection has finished or
    /// `timeout` passed. Returns how many connections were still open.
    pub async fn drain(&self, timeout: Duration) -> u64 {
        self.stop_accepting();
        // Validation bounds the timeout; never panic on one that is not.
        let deadline = Instant::now().checked_add(timeout);
        let open = self.shared.active_connections();
        if open > 0 {
            info!(
                "draining {open} connection(s), waiting up to {}",
                humantime::format_duration(timeout)
            );
        }
        loop {
            let open = self.shared.active_connections();
            if open == 0 {
                return 0;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                warn!("drain timeout: closing {open} connection(s) still open");
                return open;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn summarize(old: &Snapshot, new: &Snapshot) -> ReloadSummary {
    let members = |s: &Snapshot| -> Vec<(String, std::net::SocketAddr)> {
        s.pools
            .iter()
            .flat_map(|p| p.members.iter().map(move |m| (p.name.clone(), m.addr)))
            .collect()
    };
    let (old_m, new_m) = (members(old), members(new));
    ReloadSummary {
        generation: new.generation,
        listeners_added: new
            .listeners
            .iter()
            .filter(|l| old.listener_at(l.cfg.bind).is_none())
            .count(),
        listeners_removed: old
            .listeners
            .iter()
            .filter(|l| new.listener_at(l.cfg.bind).is_none())
            .count(),
        members_added: new_m.iter().filter(|m| !old_m.contains(m)).count(),
        members_removed: old_m.iter().filter(|m| !new_m.contains(m)).count(),
    }
}
