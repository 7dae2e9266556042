//! `lb-agent octavia`: two loops.
//!
//! * Sync: every `poll`, read each followed load balancer (one request);
//!   when it changed, or a full re-read is due, read its children, render
//!   lbd's listeners and pools, and reconcile lbd (a `PUT` only when the
//!   validated config differs; established connections are untouched by
//!   lbd's reload). What lbd cannot do is logged once when it appears and
//!   once when it goes away.
//! * Heartbeat: every `interval`, read lbd's `/stats.json` and send
//!   Octavia's amphora heartbeat to every health manager. Nothing is sent
//!   before the first render, nor while lbd does not answer (a dead data
//!   plane must look dead to Octavia).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use lbd_config::ConfigFile;
use tokio::sync::watch;
use tracing::{info, warn};

use super::api;
use super::auth::Session;
use super::connect::Connect;
use super::heartbeat::Sender;
use super::model::{self, LbTree, Options, Rendered, NAME_PREFIX};
use super::report::{Deltas, LbdStats};
use crate::lbd_push::{self, Prefix, Target};
use crate::sync::Backoff;

pub struct Settings {
    pub connect: Connect,
    pub lb_ids: Vec<String>,
    /// How often the load balancers are polled.
    pub poll: Duration,
    /// Children are re-read at least this often even without a visible
    /// change.
    pub full_sync: Duration,
    pub options: Options,
    pub target: Target,
    /// lbd's admin API for `/stats.json` (heartbeats).
    pub stats_url: String,
    pub stats_token: Option<String>,
    pub heartbeat: Option<HeartbeatSettings>,
}

#[derive(Debug, Clone)]
pub struct HeartbeatSettings {
    pub amphora_id: String,
    pub health_managers: Vec<SocketAddr>,
    pub key: String,
    pub interval: Duration,
}

/// What the heartbeat reports on: the last render's listeners.
#[derive(Debug, Clone, Default)]
struct OnAir {
    served: Vec<model::ServedListener>,
    refused: Vec<String>,
}

/// Runs until the process is stopped.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let (on_air_tx, on_air_rx) = watch::channel(None::<OnAir>);
    if let Some(heartbeat) = settings.heartbeat.clone() {
        let sender = Sender::new(
            heartbeat.health_managers.clone(),
            heartbeat.key.clone(),
            heartbeat.amphora_id.clone(),
        )
        .await?;
        info!(
            "lb-agent: heartbeats as amphora {} to {} health manager(s) every {}",
            heartbeat.amphora_id,
            heartbeat.health_managers.len(),
            humantime::format_duration(heartbeat.interval)
        );
        tokio::spawn(heartbeats(
            sender,
            heartbeat.interval,
            settings.stats_url.clone(),
            settings.stats_token.clone(),
            on_air_rx,
        ));
    }

    let session = connect(&settings.connect).await;
    info!(
        "lb-agent: following {} load balancer(s) at {}",
        settings.lb_ids.len(),
        session.endpoint()
    );
    let mut follower = Follower::default();
    let mut backoff = Backoff::default();
    loop {
        match follower.pass(&session, &settings).await {
            Ok(rendered) => {
                backoff.succeeded();
                on_air_tx.send_replace(Some(OnAir {
                    served: rendered.served,
                    refused: rendered.refused,
                }));
                tokio::time::sleep(settings.poll).await;
            }
            Err(e) => backoff.failed(&e).await,
        }
    }
}

/// A session with Octavia, retried (with back-off) until it works.
async fn connect(connect: &Connect) -> Session {
    let mut backoff = Backoff::default();
    loop {
        match connect.session().await {
            Ok(session) => return session,
            Err(e) => backoff.failed(&e.context("cannot reach Octavia")).await,
        }
    }
}

/// What one pass remembers for the next.
#[derive(Default)]
struct Follower {
    /// Last read tree per load balancer id.
    trees: BTreeMap<String, LbTree>,
    /// When each load balancer's children were last read.
    read_at: BTreeMap<String, Instant>,
    /// Problems logged and not yet resolved.
    problems: BTreeSet<String>,
    /// The last render lbd accepted (or already had).
    pushed: Option<(
        Vec<lbd_config::file::ListenerSection>,
        Vec<lbd_config::file::PoolSection>,
    )>,
}

impl Follower {
    async fn pass(&mut self, session: &Session, settings: &Settings) -> anyhow::Result<Rendered> {
        for id in &settings.lb_ids {
            self.refresh(session, id, settings.full_sync).await?;
        }
        let trees: Vec<LbTree> = settings
            .lb_ids
            .iter()
            .filter_map(|id| self.trees.get(id).cloned())
            .collect();
        let rendered = model::render(&trees, &settings.options);
        // What lbd would refuse next to the rest of its config is left
        // out (and logged), decided against the config lbd has now.
        let kept = std::sync::Mutex::new(None);
        let result = lbd_push::reconcile(&settings.target, |current: &ConfigFile| {
            let owned = Prefix(NAME_PREFIX);
            let base = lbd_push::merge(current, &owned, &[], &[]);
            let valid = model::keep_valid(&rendered, &base);
            let merged = lbd_push::merge(current, &owned, &valid.listeners, &valid.pools);
            *kept.lock().unwrap_or_else(|e| e.into_inner()) = Some(valid);
            Ok(merged)
        })
        .await;
        let rendered = kept
            .into_inner()
            .unwrap_or_else(|e| e.into_inner())
            .unwrap_or(rendered);
        self.log_problems(&rendered);
        let pushed = result?;
        let now = (rendered.listeners.clone(), rendered.pools.clone());
        if pushed {
            info!(
                "lb-agent: lbd updated: {} listener(s) from Octavia",
                rendered.listeners.len()
            );
        } else if self.pushed.as_ref() != Some(&now) {
            info!(
                "lb-agent: lbd already serves the {} listener(s) from Octavia",
                rendered.listeners.len()
            );
        }
        self.pushed = Some(now);
        Ok(rendered)
    }

    /// Re-reads load balancer `id`'s children if it changed (or on
    /// schedule); forgets it if it was deleted.
    async fn refresh(
        &mut self,
        session: &Session,
        id: &str,
        full_sync: Duration,
    ) -> anyhow::Result<()> {
        let Some(lb) = api::load_balancer(session, id).await? else {
            self.read_at.remove(id);
            if self.trees.remove(id).is_some() {
                warn!("lb-agent: load balancer {id} no longer exists; its listeners are removed");
            }
            return Ok(());
        };
        let due = self
            .read_at
            .get(id)
            .is_none_or(|at| at.elapsed() >= full_sync);
        let moved = self.trees.get(id).is_none_or(|tree| {
            tree.lb.updated_at != lb.updated_at
                || tree.lb.provisioning_status != lb.provisioning_status
                || tree.lb.admin_state_up != lb.admin_state_up
        });
        if !due && !moved {
            return Ok(());
        }
        let tree = api::tree(session, lb)
            .await
            .with_context(|| format!("load balancer {id}"))?;
        self.read_at.insert(id.to_owned(), Instant::now());
        self.trees.insert(id.to_owned(), tree);
        Ok(())
    }

    fn log_problems(&mut self, rendered: &Rendered) {
        let now: BTreeSet<String> = rendered.problems.iter().map(ToString::to_string).collect();
        for problem in now.difference(&self.problems) {
            warn!("lb-agent: {problem}");
        }
        for gone in self.problems.difference(&now) {
            info!("lb-agent: resolved: {gone}");
        }
        self.problems = now;
    }
}

/// Sends a heartbeat every `interval` once there is something to report.
async fn heartbeats(
    mut sender: Sender,
    interval: Duration,
    stats_url: String,
    token: Option<String>,
    on_air: watch::Receiver<Option<OnAir>>,
) {
    let mut on_air = on_air;
    // The first heartbeat goes out right after the first render: it is
    // also the baseline of the traffic deltas, so take it before clients
    // arrive on listeners just created.
    if on_air.wait_for(Option::is_some).await.is_err() {
        return;
    }
    let mut deltas = Deltas::default();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut lbd_down = false;
    loop {
        ticker.tick().await;
        let Some(current) = on_air.borrow().clone() else {
            continue;
        };
        let stats = match lbd_stats(&stats_url, token.as_deref()).await {
            Ok(stats) => {
                if lbd_down {
                    info!("lb-agent: lbd answers again; heartbeats resume");
                    lbd_down = false;
                }
                stats
            }
            Err(e) => {
                if !lbd_down {
                    warn!("lb-agent: no heartbeat while lbd does not answer: {e:#}");
                    lbd_down = true;
                }
                continue;
            }
        };
        let report = deltas.report(&stats, &current.served, &current.refused);
        if let Err(e) = sender.send(&report).await {
            warn!("lb-agent: heartbeat: {e:#}");
        }
    }
}

async fn lbd_stats(url: &str, token: Option<&str>) -> anyhow::Result<LbdStats> {
    let (code, body) = lbd_push::request(url, token, "GET", "/stats.json", "").await?;
    if code != 200 {
        anyhow::bail!("GET {url}/stats.json: HTTP {code}");
    }
    serde_json::from_str(&body).context("lbd's /stats.json has an unexpected shape")
}
