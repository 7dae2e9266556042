//! `lb-agent kubernetes`: serves Services of type LoadBalancer with lbd.
//!
//! Watches Services and Nodes (kube-rs reflectors: list, then watch,
//! re-list after `410 Gone` or a broken watch), renders lbd's listeners and
//! pools ([`model`]), pushes them to lbd ([`crate::lbd_push`]), and then
//! tells each Service what happened: `status.loadBalancer.ingress` with its
//! VIP, Events for problems, and a finalizer so that a deleted Service's
//! listeners are gone from lbd before the Service is.
//!
//! A burst of changes (nodes flapping) becomes one push: after a change the
//! agent waits `--debounce` for more. Every `--resync` it reconciles anyway,
//! which re-pushes after lbd restarted. When lbd cannot be reached it
//! retries with a back-off (1 s doubling to 30 s).

pub mod annotations;
pub mod model;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use k8s_openapi::api::core::v1::{Node, ObjectReference, Service};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::Client;
use serde_json::json;
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::lbd_push::{self, Prefix, Target};
use crate::sync::{follow, Backoff, Timing};
use model::{Options, Outcome, Rendered, ServiceKey};

/// The finalizer lb-agent puts on the Services it serves.
pub const FINALIZER: &str = "lbd.io/load-balancer-cleanup";

/// How `lb-agent kubernetes` runs.
pub struct Settings {
    pub kubeconfig: Option<PathBuf>,
    pub options: Options,
    pub target: Target,
    pub timing: Timing,
}

/// A Kubernetes client from `--kubeconfig`, or in-cluster / default config.
pub async fn client(kubeconfig: Option<&PathBuf>) -> anyhow::Result<Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    Ok(Client::try_from(config)?)
}

/// Runs until the process is stopped.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let client = client(settings.kubeconfig.as_ref()).await?;
    let changed = Arc::new(Notify::new());
    let all = watcher::Config::default;
    let services = follow::<Service>(Api::all(client.clone()), all(), Arc::clone(&changed));
    let nodes = follow::<Node>(Api::all(client.clone()), all(), Arc::clone(&changed));
    services.wait_until_ready().await?;
    nodes.wait_until_ready().await?;
    info!("lb-agent: watching Services and Nodes");

    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "lb-agent".into(),
            instance: std::env::var("HOSTNAME").ok(),
        },
    );
    let mut agent = Agent {
        client,
        recorder,
        settings,
        reported: BTreeSet::new(),
    };
    let mut backoff = Backoff::default();
    loop {
        agent.settings.timing.next_pass(&changed).await;
        let services: Vec<Service> = services.state().iter().map(|s| (**s).clone()).collect();
        let nodes: Vec<Node> = nodes.state().iter().map(|n| (**n).clone()).collect();
        match agent.reconcile(&services, &nodes).await {
            Ok(()) => backoff.succeeded(),
            Err(e) => {
                backoff.failed(&e).await;
                changed.notify_one();
            }
        }
    }
}

struct Agent {
    client: Client,
    recorder: Recorder,
    settings: Settings,
    /// Problems already reported as Events (each once per process).
    reported: BTreeSet<(ServiceKey, &'static str, String)>,
}

impl Agent {
    /// One pass: finalizers on, push to lbd, then statuses, Events and
    /// finalizers off for what is gone from lbd.
    async fn reconcile(&mut self, services: &[Service], nodes: &[Node]) -> anyhow::Result<()> {
        let rendered = model::render(services, nodes, &self.settings.options);
        for service in services {
            let key = model::key(service);
            if rendered.services.get(&key).is_some_and(|o| !o.deleting) {
                self.set_finalizer(service, true).await?;
            }
        }
        let pushed = lbd_push::reconcile(&self.settings.target, |current| {
            Ok(lbd_push::merge(
                current,
                &Prefix(model::NAME_PREFIX),
                &rendered.listeners,
                &rendered.pools,
            ))
        })
        .await?;
        if pushed {
            info!(
                "lb-agent: lbd updated: {} listener(s) for {} Service(s)",
                rendered.listeners.len(),
                rendered
                    .services
                    .values()
                    .filter(|o| o.vip.is_some())
                    .count()
            );
        }
        self.report(services, &rendered).await
    }

    /// After a successful push: statuses, Events, finalizers of Services
    /// that are gone from lbd.
    async fn report(&mut self, services: &[Service], rendered: &Rendered) -> anyhow::Result<()> {
        for service in services {
            let key = model::key(service);
            match rendered.services.get(&key) {
                Some(outcome) if !outcome.deleting => {
                    self.set_status(service, outcome).await?;
                    self.publish_problems(service, &key, outcome).await;
                }
                // Deleted, or no longer ours: clean up after ourselves.
                _ if has_finalizer(service) => {
                    if service.metadata.deletion_timestamp.is_none() {
                        self.set_status(service, &Outcome::default()).await?;
                    }
                    self.set_finalizer(service, false).await?;
                    info!("lb-agent: {key}: removed from lbd");
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Patches `status.loadBalancer` when it differs from what `outcome`
    /// says.
    async fn set_status(&self, service: &Service, outcome: &Outcome) -> anyhow::Result<()> {
        let ingress: Vec<serde_json::Value> = outcome
            .vip
            .map(|vip| {
                let ports: Vec<_> = outcome
                    .ports
                    .iter()
                    .map(|(port, protocol)| json!({"port": port, "protocol": protocol}))
                    .collect();
                let mode = if outcome.proxy_mode { "Proxy" } else { "VIP" };
                vec![json!({"ip": vip.to_string(), "ipMode": mode, "ports": ports})]
            })
            .unwrap_or_default();
        let current = service
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .map(|i| serde_json::to_value(i).unwrap_or_default())
            .unwrap_or_else(|| json!([]));
        if current == json!(ingress) {
            return Ok(());
        }
        let key = model::key(service);
        let api: Api<Service> = Api::namespaced(self.client.clone(), &key.namespace);
        let ingress = if ingress.is_empty() {
            serde_json::Value::Null
        } else {
            json!(ingress)
        };
        let patch = json!({"status": {"loadBalancer": {"ingress": ingress}}});
        api.patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .with_context(|| format!("cannot update the status of {key}"))?;
        info!("lb-agent: {key}: status ingress {ingress}");
        Ok(())
    }

    /// Adds or removes [`FINALIZER`] (merge patch with the resourceVersion,
    /// so a concurrent change makes it fail and the next pass retries).
    async fn set_finalizer(&self, service: &Service, present: bool) -> anyhow::Result<()> {
        if has_finalizer(service) == present {
            return Ok(());
        }
        let mut finalizers: Vec<String> = service
            .metadata
            .finalizers
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|f| f != FINALIZER)
            .collect();
        if present {
            finalizers.push(FINALIZER.to_owned());
        }
        let key = model::key(service);
        let api: Api<Service> = Api::namespaced(self.client.clone(), &key.namespace);
        let patch = json!({"metadata": {
            "finalizers": finalizers,
            "resourceVersion": service.metadata.resource_version,
        }});
        api.patch(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .with_context(|| format!("cannot update the finalizers of {key}"))?;
        Ok(())
    }

    /// One Event per problem (each reported once per process).
    async fn publish_problems(&mut self, service: &Service, key: &ServiceKey, outcome: &Outcome) {
        for problem in &outcome.problems {
            let id = (key.clone(), problem.reason, problem.message.clone());
            if self.reported.contains(&id) {
                continue;
            }
            warn!("lb-agent: {key}: {}: {}", problem.reason, problem.message);
            let event = Event {
                type_: EventType::Warning,
                reason: problem.reason.to_owned(),
                note: Some(problem.message.clone()),
                action: "EnsureLoadBalancer".to_owned(),
                secondary: None,
            };
            match self.recorder.publish(&event, &reference(service)).await {
                Ok(()) => {
                    self.reported.insert(id);
                }
                Err(e) => warn!("lb-agent: {key}: cannot publish an Event: {e}"),
            }
        }
    }
}

fn has_finalizer(service: &Service) -> bool {
    service
        .metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|f| f == FINALIZER))
}

fn reference(service: &Service) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".to_owned()),
        kind: Some("Service".to_owned()),
        namespace: service.metadata.namespace.clone(),
        name: service.metadata.name.clone(),
        uid: service.metadata.uid.clone(),
        resource_version: service.metadata.resource_version.clone(),
        field_path: None,
    }
}
