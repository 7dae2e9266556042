//! What both watch modes share: following a resource with a reflector, the
//! rhythm of sync passes (after a change, debounced; at least every resync)
//! and the back-off after a failed pass.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::Resource;
use tokio::sync::Notify;
use tracing::warn;

/// When sync passes run.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Quiet time after a change before a pass (a burst is one pass).
    pub debounce: Duration,
    /// Longest time between passes.
    pub resync: Duration,
}

impl Timing {
    /// Waits for the next pass: a change plus the debounce, or the resync.
    pub async fn next_pass(&self, changed: &Notify) {
        tokio::select! {
            _ = changed.notified() => tokio::time::sleep(self.debounce).await,
            _ = tokio::time::sleep(self.resync) => {}
        }
    }
}

/// A reflector store of `api`'s objects (selected by `config`), kept
/// current by a background watch that re-lists after `410 Gone` or a
/// broken stream; every change wakes `changed`.
pub fn follow<K>(api: Api<K>, config: watcher::Config, changed: Arc<Notify>) -> reflector::Store<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api, config).default_backoff().reflect(writer);
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => changed.notify_one(),
                Err(e) => warn!("lb-agent: watch {}: {e}", K::plural(&())),
            }
        }
    });
    reader
}

/// Retry delays after failed passes: 1 s, doubling up to 30 s.
pub struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Backoff(Duration::from_secs(1))
    }
}

impl Backoff {
    pub fn succeeded(&mut self) {
        *self = Backoff::default();
    }

    /// Logs `error` and sleeps for the current delay, then doubles it.
    pub async fn failed(&mut self, error: &anyhow::Error) {
        warn!(
            "lb-agent: {error:#}; retrying in {}",
            humantime::format_duration(self.0)
        );
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(Duration::from_secs(30));
    }
}
