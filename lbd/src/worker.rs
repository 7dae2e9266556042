//! A data-plane worker: one thread, one single-threaded runtime, its own
//! SO_REUSEPORT socket per listener.
//!
//! The worker follows config generations: when the control thread publishes
//! a snapshot it starts accept loops for listeners it does not serve yet.
//! Listeners that went away end by themselves (their sockets are shut down
//! by the control thread). Per-connection state lives in tasks on this
//! thread only; what is shared with other threads is read through `arc-swap`
//! and per-worker atomic counters.

use std::collections::HashMap;
use std::io;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use tracing::{debug, error, warn};

use crate::context::Shared;
use crate::proxy::{local::Local, tcp};
use crate::runtime::Runtime;
use crate::sockets::ListenerSockets;
use crate::state::{now_ms, LogLimiter};

pub struct Worker<R: Runtime> {
    /// What its connections share (id, counters, buffers, config view).
    local: Rc<Local>,
    accept_errors: LogLimiter,
    _runtime: PhantomData<R>,
}

impl<R: Runtime> Worker<R> {
    fn new(id: usize, shared: Arc<Shared>) -> Self {
        Worker {
            local: Rc::new(Local::new(id, shared)),
            accept_errors: LogLimiter::new(5_000),
            _runtime: PhantomData,
        }
    }

    /// Starts accept loops for new listeners, generation after generation.
    async fn follow_config(self: Rc<Self>) {
        let mut changes = self.local.shared.subscribe();
        let mut serving: HashMap<SocketAddr, Arc<ListenerSockets>> = HashMap::new();
        loop {
            let snap = self.local.shared.snapshot();
            serving
                .retain(|bind, sockets| snap.listener_at(*bind).is_some() && !sockets.is_closed());
            for l in &snap.listeners {
                let known = serving
                    .get(&l.cfg.bind)
                    .is_some_and(|s| Arc::ptr_eq(s, &l.sockets));
                if known || l.sockets.is_closed() {
                    continue;
                }
                match l.sockets.for_worker(self.local.id).and_then(R::listener) {
                    Ok(listener) => {
                        serving.insert(l.cfg.bind, Arc::clone(&l.sockets));
                        tokio::task::spawn_local(
                            Rc::clone(&self).accept_loop(listener, Arc::clone(&l.sockets)),
                        );
                    }
                    Err(e) => {
                        error!(worker = self.local.id, bind = %l.cfg.bind, "cannot accept: {e}")
                    }
                }
            }
            if changes.changed().await.is_err() {
                return;
            }
            crate::fault::injected_panic("worker-reload");
        }
    }

    async fn accept_loop(self: Rc<Self>, listener: R::Listener, sockets: Arc<ListenerSockets>) {
        let bind = sockets.bind();
        debug!(worker = self.local.id, %bind, "accepting");
        loop {
            match R::accept(&listener).await {
                Ok((stream, peer)) => {
                    tokio::task::spawn_local(tcp::handle::<R>(
                        Rc::clone(&self.local),
                        bind,
                        stream,
                        peer,
                    ));
                }
                Err(_) if sockets.is_closed() => break,
                Err(e) if is_per_connection(&e) => continue,
                Err(e) => {
                    // Out of fds or memory: back off instead of spinning.
                    if self.accept_errors.allow(now_ms()) {
                        warn!(worker = self.local.id, %bind, "accept failed: {e} (pausing 50ms; logged at most every 5s)");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        debug!(worker = self.local.id, %bind, "stopped accepting");
    }
}

/// Accept errors that concern one connection only (it was aborted before we
/// got to it), not the listener.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ECONNABORTED | libc::EPROTO | libc::EPERM | libc::EINTR | libc::EAGAIN)
    )
}

/// Runs worker `id` on the current thread until the process exits. Reports
/// on `ready` whether its runtime started.
pub fn run<R: Runtime>(id: usize, shared: Arc<Shared>, ready: mpsc::Sender<Result<(), String>>) {
    let started = ready.clone();
    let result = R::block_on(async move {
        let worker = Rc::new(Worker::<R>::new(id, shared));
        let _ = started.send(Ok(()));
        worker.follow_config().await;
    });
    if let Err(e) = result {
        let _ = ready.send(Err(format!(
            "worker {id}: cannot start the {} runtime: {e}",
            R::NAME
        )));
    }
}
