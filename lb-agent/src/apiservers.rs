//! `lb-agent apiservers`: keeps the members of lbd's kube-apiserver pool in
//! step with the `default/kubernetes` EndpointSlices (the apiservers the
//! cluster itself considers ready).
//!
//! The pool, its listener and its `/readyz` health check live in lbd's own
//! config; lb-agent only replaces the pool's members. Until the API answers
//! with at least one ready endpoint, the static `--seed` list is used, so
//! lbd works before the API is reachable (lb-agent may well reach the API
//! through lbd). Once the API has answered, its view wins; if the API goes
//! away later, the last view stays.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::watcher;
use lbd_config::file::{ConfigFile, MemberSection};
use tokio::sync::Notify;
use tracing::info;

use crate::lbd_push::{self, Target};
use crate::sync::{follow, Backoff, Timing};

/// The label EndpointSlices carry with their Service's name.
const SERVICE_LABEL: &str = "kubernetes.io/service-name";

pub struct Settings {
    pub kubeconfig: Option<std::path::PathBuf>,
    /// The lbd pool whose members are managed.
    pub pool: String,
    /// Members until the API has answered.
    pub seed: Vec<SocketAddr>,
    pub target: Target,
    pub timing: Timing,
}

/// Runs until the process is stopped.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let client = crate::kubernetes::client(settings.kubeconfig.as_ref()).await?;
    let api: Api<EndpointSlice> = Api::namespaced(client, "default");
    let config = watcher::Config::default().labels(&format!("{SERVICE_LABEL}=kubernetes"));
    let changed = Arc::new(Notify::new());
    let slices = follow(api, config, Arc::clone(&changed));

    let mut members: BTreeSet<SocketAddr> = settings.seed.iter().copied().collect();
    info!(
        "lb-agent: pool {:?} starts with the seed list ({} member(s))",
        settings.pool,
        members.len()
    );
    let mut backoff = Backoff::default();
    loop {
        let state: Vec<EndpointSlice> = slices.state().iter().map(|s| (**s).clone()).collect();
        let seen = ready_endpoints(&state);
        if !seen.is_empty() && seen != members {
            info!(
                "lb-agent: pool {:?}: the API lists {} ready apiserver(s)",
                settings.pool,
                seen.len()
            );
            members = seen;
        }
        let result = lbd_push::reconcile(&settings.target, |current| {
            set_members(current, &settings.pool, &members)
        })
        .await;
        match result {
            Ok(pushed) => {
                backoff.succeeded();
                if pushed {
                    info!("lb-agent: pool {:?} updated in lbd", settings.pool);
                }
                settings.timing.next_pass(&changed).await;
            }
            Err(e) => backoff.failed(&e).await,
        }
    }
}

/// Ready endpoints (addresses x the `https` port, or the only port) of the
/// slices. An endpoint counts as ready unless its `ready` condition is
/// false, as the EndpointSlice API specifies.
pub fn ready_endpoints(slices: &[EndpointSlice]) -> BTreeSet<SocketAddr> {
    let mut out = BTreeSet::new();
    for slice in slices {
        let ports = slice.ports.as_deref().unwrap_or_default();
        let port = ports
            .iter()
            .find(|p| p.name.as_deref() == Some("https"))
            .or(ports.first())
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok());
        let Some(port) = port else { continue };
        for endpoint in &slice.endpoints {
            let ready = endpoint.conditions.as_ref().and_then(|c| c.ready);
            if ready == Some(false) {
                continue;
            }
            for address in &endpoint.addresses {
                if let Ok(ip) = address.parse() {
                    out.insert(SocketAddr::new(ip, port));
                }
            }
        }
    }
    out
}

/// `current` with pool `pool`'s members replaced by `members`; members
/// already there keep their settings (weight, admin state, names).
fn set_members(
    current: &ConfigFile,
    pool: &str,
    members: &BTreeSet<SocketAddr>,
) -> anyhow::Result<ConfigFile> {
    let mut edited = current.clone();
    let section = edited
        .pools
        .iter_mut()
        .find(|p| p.name.as_deref() == Some(pool))
        .with_context(|| format!("lbd's config has no pool {pool:?}"))?;
    let addr_of = |m: &MemberSection| -> Option<SocketAddr> {
        let ip = m.address.as_deref()?.parse().ok()?;
        Some(SocketAddr::new(ip, u16::try_from(m.port?).ok()?))
    };
    let mut kept: Vec<MemberSection> = section
        .members
        .iter()
        .filter(|m| addr_of(m).is_some_and(|a| members.contains(&a)))
        .cloned()
        .collect();
    let have: BTreeSet<SocketAddr> = kept.iter().filter_map(addr_of).collect();
    kept.extend(
        members
            .iter()
            .filter(|a| !have.contains(a))
            .map(|a| MemberSection {
                address: Some(a.ip().to_string()),
                port: Some(i64::from(a.port())),
                ..MemberSection::default()
            }),
    );
    section.members = kept;
    Ok(edited)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lbd_config::file::PoolSection;
    use serde_json::json;

    fn slice(endpoints: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": "kubernetes", "namespace": "default",
                         "labels": {SERVICE_LABEL: "kubernetes"}},
            "addressType": "IPv4",
            "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}],
            "endpoints": endpoints
        }))
        .expect("slice")
    }

    #[test]
    fn ready_and_unknown_endpoints_count_not_ready_ones() {
        let s = slice(json!([
            {"addresses": ["10.0.0.1"], "conditions": {"ready": true}},
            {"addresses": ["10.0.0.2"], "conditions": {"ready": false}},
            {"addresses": ["10.0.0.3"]}
        ]));
        let got: Vec<String> = ready_endpoints(&[s])
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(got, ["10.0.0.1:6443", "10.0.0.3:6443"]);
    }

    #[test]
    fn members_are_replaced_and_kept_ones_keep_their_settings() {
        let current = ConfigFile {
            pools: vec![PoolSection {
                name: Some("apiservers".into()),
                members: vec![
                    MemberSection {
                        address: Some("10.0.0.1".into()),
                        port: Some(6443),
                        weight: Some(5),
                        ..Default::default()
                    },
                    MemberSection {
                        address: Some("10.0.0.9".into()),
                        port: Some(6443),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        };
        let wanted: BTreeSet<SocketAddr> = ["10.0.0.1:6443", "10.0.0.2:6443"]
            .iter()
            .map(|a| a.parse().expect("addr"))
            .collect();
        let edited = set_members(&current, "apiservers", &wanted).expect("pool exists");
        let members = &edited.pools[0].members;
        assert_eq!(members.len(), 2);
        assert_eq!(members[0].weight, Some(5), "kept member keeps its weight");
        assert_eq!(members[1].address.as_deref(), Some("10.0.0.2"));
        assert!(set_members(&current, "nope", &wanted).is_err());
    }
}
