//! Reads a load balancer and everything under it from Octavia's v2 API.
//!
//! Change detection costs one request per poll: every change to a
//! listener, pool, member or health monitor moves the load balancer
//! through `PENDING_UPDATE` and back, which changes its `updated_at`. Only
//! when that (or its provisioning status) moved, or a full re-read is due,
//! are the children read: listeners and pools of the load balancer (one
//! filtered list each), then each pool's members and health monitor.

use std::collections::BTreeMap;

use anyhow::Context;
use serde::de::DeserializeOwned;

use super::auth::Session;
use super::model::{HealthMonitor, LbTree, Listener, LoadBalancer, Member, Pool};

/// Pages followed at most per list (Octavia pages at 1,000 by default).
const MAX_PAGES: usize = 100;

/// `GET /v2/lbaas/loadbalancers/{id}`; `None` if there is no such load
/// balancer (404), or it is being deleted.
pub async fn load_balancer(session: &Session, id: &str) -> anyhow::Result<Option<LoadBalancer>> {
    let Some(value) = session
        .get_json_opt(&format!("/v2/lbaas/loadbalancers/{id}"))
        .await?
    else {
        return Ok(None);
    };
    let lb: LoadBalancer =
        field(value, "loadbalancer").with_context(|| format!("load balancer {id}"))?;
    Ok((!deleting(&Some(lb.provisioning_status.clone()))).then_some(lb))
}

/// The children of `lb`.
pub async fn tree(session: &Session, lb: LoadBalancer) -> anyhow::Result<LbTree> {
    let mut listeners: Vec<Listener> = list(
        session,
        &format!("/v2/lbaas/listeners?loadbalancer_id={}", lb.id),
        "listeners",
    )
    .await?;
    let mut pools: Vec<Pool> = list(
        session,
        &format!("/v2/lbaas/pools?loadbalancer_id={}", lb.id),
        "pools",
    )
    .await?;
    listeners.retain(|l| !deleting(&l.provisioning_status));
    pools.retain(|p| !deleting(&p.provisioning_status));
    let mut members = BTreeMap::new();
    let mut monitors = BTreeMap::new();
    for pool in &pools {
        let mut list: Vec<Member> = list(
            session,
            &format!("/v2/lbaas/pools/{}/members", pool.id),
            "members",
        )
        .await?;
        list.retain(|m| !deleting(&m.provisioning_status));
        members.insert(pool.id.clone(), list);
        if let Some(id) = &pool.healthmonitor_id {
            let value = session
                .get_json(&format!("/v2/lbaas/healthmonitors/{id}"))
                .await?;
            let monitor: HealthMonitor =
                field(value, "healthmonitor").with_context(|| format!("health monitor {id}"))?;
            if !deleting(&monitor.provisioning_status) {
                monitors.insert(id.clone(), monitor);
            }
        }
    }
    Ok(LbTree {
        lb,
        listeners,
        pools,
        members,
        monitors,
    })
}

/// Objects on their way out are no longer served (the amphora's driver
/// removes them before Octavia reports them deleted).
fn deleting(status: &Option<String>) -> bool {
    matches!(status.as_deref(), Some("PENDING_DELETE" | "DELETED"))
}

/// Every page of a list: `{"<key>": [...], "<key>_links": [{"rel": "next",
/// "href": ...}]}`.
async fn list<T: DeserializeOwned>(
    session: &Session,
    first: &str,
    key: &str,
) -> anyhow::Result<Vec<T>> {
    let mut items = Vec::new();
    let mut path = first.to_owned();
    for _ in 0..MAX_PAGES {
        let mut value = session.get_json(&path).await?;
        let page: Vec<T> = serde_json::from_value(value[key].take())
            .with_context(|| format!("GET {path}: unexpected {key} list"))?;
        items.extend(page);
        match next_page(&value[format!("{key}_links")]) {
            Some(next) => path = next,
            None => return Ok(items),
        }
    }
    anyhow::bail!("GET {first}: more than {MAX_PAGES} pages")
}

/// The path and query of the `next` link, if any.
fn next_page(links: &serde_json::Value) -> Option<String> {
    let href = links
        .as_array()?
        .iter()
        .find(|l| l["rel"] == "next")?
        .get("href")?
        .as_str()?;
    let start = href.find("/v2/")?;
    Some(href[start..].to_owned())
}

fn field<T: DeserializeOwned>(mut value: serde_json::Value, key: &str) -> anyhow::Result<T> {
    serde_json::from_value(value[key].take()).with_context(|| format!("unexpected {key} object"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_links() {
        let links = serde_json::json!([
            {"rel": "previous", "href": "http://o:9876/v2/lbaas/pools?marker=a&page_reverse=True"},
            {"rel": "next", "href": "http://o:9876/load-balancer/v2/lbaas/pools?limit=2&marker=b"}
        ]);
        assert_eq!(
            next_page(&links).as_deref(),
            Some("/v2/lbaas/pools?limit=2&marker=b")
        );
        assert_eq!(next_page(&serde_json::json!([])), None);
        assert_eq!(next_page(&serde_json::Value::Null), None);
    }
}
