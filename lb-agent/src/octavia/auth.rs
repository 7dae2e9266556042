//! An authenticated session with the Octavia API: where it is, and how
//! each request proves who lb-agent is.
//!
//! * Keystone: `X-Auth-Token` with a cached token; a 401 invalidates it and
//!   the request is retried once with a new one (the token was revoked, or
//!   keystone restarted with new keys).
//! * No auth (Octavia's `auth_strategy = noauth`): an `X-Project-Id` header
//!   if a project is given, and the API URL must be given.
//!
//! The endpoint is used without its trailing slash; a trailing `/v2` or
//! `/v2.0` (some catalogs register versioned URLs) is dropped too, since
//! request paths start with `/v2/`.

use anyhow::{bail, Context};
use hyper::Method;
use serde_json::Value;
use tracing::{info, warn};

use super::http::{HttpClient, Response};
use super::keystone::Keystone;

/// How requests are authenticated.
// One per session: the size of the keystone variant does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Auth {
    NoAuth { project_id: Option<String> },
    Keystone(Keystone),
}

/// The Octavia API at one endpoint.
pub struct Session {
    http: HttpClient,
    auth: Auth,
    endpoint: String,
}

impl Session {
    /// Finds the endpoint: `explicit_url` if given, else the keystone
    /// catalog's `load-balancer` endpoint for `interface` / `region`
    /// (authenticating now). Without keystone `explicit_url` is required.
    pub async fn connect(
        http: HttpClient,
        auth: Auth,
        explicit_url: Option<String>,
        interface: &str,
        region: Option<&str>,
    ) -> anyhow::Result<Self> {
        let url = match (explicit_url, &auth) {
            (Some(url), _) => url,
            (None, Auth::Keystone(keystone)) => keystone
                .endpoint("load-balancer", interface, region)
                .await
                .context("finding the Octavia API in the keystone catalog")?,
            (None, Auth::NoAuth { .. }) => {
                bail!("without keystone authentication the Octavia API URL must be given")
            }
        };
        let endpoint = base_url(&url);
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            bail!("Octavia API URL {url:?} is not an http:// or https:// URL");
        }
        info!(endpoint, "Octavia API");
        Ok(Session {
            http,
            auth,
            endpoint,
        })
    }

    /// The API's base URL, without trailing slash.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// `GET <endpoint><path>` (`path` like `/v2/lbaas/loadbalancers`),
    /// parsed as JSON. Statuses other than 2xx are errors quoting the start
    /// of the body.
    pub async fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        let url = self.url(path);
        let resp = self.get(&url).await?;
        if !(200..300).contains(&resp.status) {
            bail!("GET {url}: HTTP {}: {}", resp.status, resp.body_excerpt());
        }
        resp.json().with_context(|| format!("GET {url}"))
    }

    /// Like [`Session::get_json`], but `None` for a 404 (the object does
    /// not exist).
    pub async fn get_json_opt(&self, path: &str) -> anyhow::Result<Option<Value>> {
        let url = self.url(path);
        let resp = self.get(&url).await?;
        match resp.status {
            404 => Ok(None),
            200..=299 => Ok(Some(resp.json().with_context(|| format!("GET {url}"))?)),
            code => bail!("GET {url}: HTTP {code}: {}", resp.body_excerpt()),
        }
    }

    /// The endpoint joined with `path` (with or without leading slash).
    fn url(&self, path: &str) -> String {
        format!("{}/{}", self.endpoint, path.trim_start_matches('/'))
    }

    /// One authenticated GET; with keystone, retried once on a 401.
    async fn get(&self, url: &str) -> anyhow::Result<Response> {
        match &self.auth {
            Auth::NoAuth { project_id } => {
                let headers: Vec<(&str, &str)> = project_id
                    .iter()
                    .map(|p| ("X-Project-Id", p.as_str()))
                    .collect();
                self.http.request(Method::GET, url, &headers, None).await
            }
            Auth::Keystone(keystone) => {
                let token = keystone.token().await?;
                let resp = self
                    .http
                    .request(Method::GET, url, &[("X-Auth-Token", &token)], None)
                    .await?;
                if resp.status != 401 {
                    return Ok(resp);
                }
                warn!(
                    url,
                    "Octavia API refused the token (HTTP 401); authenticating again"
                );
                keystone.invalidate(&token).await;
                let token = keystone.token().await?;
                self.http
                    .request(Method::GET, url, &[("X-Auth-Token", &token)], None)
                    .await
            }
        }
    }
}

/// `url` without trailing slashes nor a trailing API version.
fn base_url(url: &str) -> String {
    let mut base = url.trim().trim_end_matches('/');
    for version in ["/v2.0", "/v2"] {
        if let Some(stripped) = base.strip_suffix(version) {
            base = stripped.trim_end_matches('/');
        }
    }
    base.to_owned()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use lbd_test_support::fake_keystone::{FakeKeystone, Options, Upstream};

    use super::*;
    use crate::octavia::http::TlsOptions;
    use crate::octavia::keystone::Credentials;

    const LIST: &str = "/v2/lbaas/loadbalancers";

    fn http() -> HttpClient {
        HttpClient::new(&TlsOptions::default(), Duration::from_secs(5)).unwrap()
    }

    fn password(ks: &FakeKeystone, password: &str) -> Credentials {
        let o = ks.options();
        Credentials::Password {
            auth_url: ks.auth_url(),
            username: o.username.clone(),
            password: password.to_owned(),
            user_domain: o.user_domain.clone(),
            project_name: o.project_name.clone(),
            project_domain: o.project_domain.clone(),
        }
    }

    /// A fake keystone guarding a stub Octavia, with `ttl` tokens.
    async fn setup(ttl: Duration) -> (FakeKeystone, Upstream) {
        let upstream = Upstream::start().await;
        let ks = FakeKeystone::start(Options {
            ttl,
            upstream: Some(upstream.url()),
            ..Options::default()
        })
        .await;
        (ks, upstream)
    }

    async fn session(creds: Credentials) -> Session {
        let keystone = Keystone::new(http(), creds);
        Session::connect(http(), Auth::Keystone(keystone), None, "public", None)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn password_auth_endpoint_from_catalog_and_cached_token() {
        let (ks, upstream) = setup(Duration::from_secs(3600)).await;
        let s = session(password(&ks, &ks.options().password)).await;
        assert_eq!(s.endpoint(), ks.octavia_url());
        for _ in 0..3 {
            assert_eq!(
                s.get_json(LIST).await.unwrap(),
                json!({"loadbalancers": []})
            );
        }
        // Relative paths work too.
        assert_eq!(
            s.get_json("v2/lbaas/loadbalancers").await.unwrap(),
            json!({"loadbalancers": []})
        );
        assert_eq!(ks.tokens_issued(), 1);
        assert_eq!(ks.unauthorized_responses(), 0);
        assert_eq!(upstream.requests().len(), 4);
        // keystonemiddleware's identity headers reach the service.
        let seen = &upstream.requests()[0];
        assert_eq!(seen.path, LIST);
        assert_eq!(seen.header("x-project-id"), Some(ks.project_id()));
        assert_eq!(seen.header("x-identity-status"), Some("Confirmed"));

        // get_json_opt: None for a 404; other errors as get_json.
        assert_eq!(s.get_json_opt("/v2/lbaas/pools/nope").await.unwrap(), None);
        assert_eq!(
            s.get_json_opt(LIST).await.unwrap(),
            Some(json!({"loadbalancers": []}))
        );
        let err = s.get_json_opt("/v2/unauthorized").await.unwrap_err();
        assert!(format!("{err:#}").contains("HTTP 401"), "{err:#}");
        assert_eq!(ks.tokens_issued(), 2);

        // A 404 is an error quoting the body.
        let msg = format!(
            "{:#}",
            s.get_json("/v2/lbaas/pools/nope").await.unwrap_err()
        );
        assert!(
            msg.starts_with(&format!(
                "GET {}/v2/lbaas/pools/nope: HTTP 404: ",
                ks.octavia_url()
            )),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn application_credential_and_other_interfaces() {
        let (ks, _upstream) = setup(Duration::from_secs(3600)).await;
        let o = ks.options();
        let creds = Credentials::ApplicationCredential {
            auth_url: format!("{}/", ks.url()), // root URL, trailing slash
            id: o.app_cred_id.clone(),
            secret: o.app_cred_secret.clone(),
        };
        let keystone = Keystone::new(http(), creds);
        assert_eq!(
            keystone
                .endpoint("load-balancer", "internal", Some("RegionOne"))
                .await
                .unwrap(),
            ks.octavia_url()
        );
        let msg = keystone
            .endpoint("load-balancer", "public", Some("RegionTwo"))
            .await
            .unwrap_err()
            .to_string();
        assert!(msg.contains("\"RegionTwo\""), "{msg}");
        let s = Session::connect(http(), Auth::Keystone(keystone), None, "internal", None)
            .await
            .unwrap();
        assert_eq!(
            s.get_json(LIST).await.unwrap(),
            json!({"loadbalancers": []})
        );
        assert_eq!(ks.tokens_issued(), 1);
    }

    #[tokio::test]
    async fn token_refreshed_before_expiry() {
        let (ks, upstream) = setup(Duration::from_secs(2)).await;
        let s = session(password(&ks, &ks.options().password)).await;
        s.get_json(LIST).await.unwrap();
        assert_eq!(ks.tokens_issued(), 1);
        // Refresh is due at 1.5 s, the token expires at 2 s.
        tokio::time::sleep(Duration::from_millis(1700)).await;
        s.get_json(LIST).await.unwrap();
        assert_eq!(ks.tokens_issued(), 2);
        assert_eq!(ks.unauthorized_responses(), 0);
        let requests = upstream.requests();
        assert_ne!(requests[0].token, requests[1].token);
    }

    #[tokio::test]
    async fn keystone_down_at_refresh_time_keeps_the_token_until_expiry() {
        let (ks, _upstream) = setup(Duration::from_secs(3)).await;
        let keystone = Keystone::new(http(), password(&ks, &ks.options().password));
        let token = keystone.token().await.unwrap();
        drop(ks);
        // Past the refresh time (2.25 s), before expiry (3 s).
        tokio::time::sleep(Duration::from_millis(2400)).await;
        assert_eq!(keystone.token().await.unwrap(), token);
        tokio::time::sleep(Duration::from_millis(700)).await;
        let msg = format!("{:#}", keystone.token().await.unwrap_err());
        assert!(msg.starts_with("keystone authentication: POST"), "{msg}");
    }

    #[tokio::test]
    async fn revoked_token_is_replaced_with_one_retry() {
        let (ks, upstream) = setup(Duration::from_secs(3600)).await;
        let s = session(password(&ks, &ks.options().password)).await;
        s.get_json(LIST).await.unwrap();
        ks.revoke_all();
        assert_eq!(
            s.get_json(LIST).await.unwrap(),
            json!({"loadbalancers": []})
        );
        assert_eq!(ks.tokens_issued(), 2);
        assert_eq!(ks.unauthorized_responses(), 1);
        assert_eq!(upstream.requests().len(), 2);

        // A service that keeps refusing: one retry, then the 401 is an error.
        let msg = format!("{:#}", s.get_json("/v2/unauthorized").await.unwrap_err());
        assert!(msg.contains("HTTP 401"), "{msg}");
        assert_eq!(ks.tokens_issued(), 3);
        assert_eq!(upstream.requests().len(), 4);
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_token() {
        let (ks, _upstream) = setup(Duration::from_secs(3600)).await;
        let keystone = Keystone::new(http(), password(&ks, &ks.options().password));
        let s = Session::connect(
            http(),
            Auth::Keystone(keystone),
            Some(format!("{}/", ks.octavia_url())),
            "public",
            None,
        )
        .await
        .unwrap();
        // connect with an explicit URL does not authenticate.
        assert_eq!(ks.tokens_issued(), 0);
        assert_eq!(s.endpoint(), ks.octavia_url());
        let gets = (0..5).map(|_| s.get_json(LIST));
        for r in futures::future::join_all(gets).await {
            r.unwrap();
        }
        assert_eq!(ks.tokens_issued(), 1);
    }

    #[tokio::test]
    async fn bad_password_is_a_clear_error() {
        let (ks, _upstream) = setup(Duration::from_secs(3600)).await;
        let keystone = Keystone::new(http(), password(&ks, "wrong-password"));
        let err = Session::connect(http(), Auth::Keystone(keystone), None, "public", None)
            .await
            .err()
            .unwrap();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("keystone refused the credentials (HTTP 401): ")
                && msg.contains("requires authentication"),
            "{msg}"
        );
        assert!(!msg.contains("wrong-password"), "{msg}");
        assert_eq!(ks.tokens_issued(), 0);
    }

    #[tokio::test]
    async fn keystone_unreachable_is_an_error() {
        let addr = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let creds = Credentials::ApplicationCredential {
            auth_url: format!("http://{addr}/v3"),
            id: "id".into(),
            secret: "secret".into(),
        };
        let keystone = Keystone::new(http(), creds);
        let msg = format!("{:#}", keystone.token().await.unwrap_err());
        assert!(
            msg.starts_with("keystone authentication: POST http://"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn noauth_sends_the_project_and_needs_a_url() {
        let upstream = Upstream::start().await;
        let auth = Auth::NoAuth {
            project_id: Some("p-123".into()),
        };
        let s = Session::connect(
            http(),
            auth,
            Some(format!("{}/v2/", upstream.url())),
            "public",
            None,
        )
        .await
        .unwrap();
        assert_eq!(s.endpoint(), upstream.url());
        assert_eq!(
            s.get_json(LIST).await.unwrap(),
            json!({"loadbalancers": []})
        );
        assert_eq!(upstream.requests()[0].header("x-project-id"), Some("p-123"));
        assert_eq!(upstream.requests()[0].token, None);

        let auth = Auth::NoAuth { project_id: None };
        assert!(Session::connect(http(), auth, None, "public", None)
            .await
            .is_err());
        let auth = Auth::NoAuth { project_id: None };
        assert!(
            Session::connect(http(), auth, Some("ftp://x".into()), "public", None)
                .await
                .is_err()
        );
    }

    #[test]
    fn base_urls() {
        for url in [
            "http://o:9876",
            "http://o:9876/",
            "http://o:9876/v2",
            "http://o:9876/v2.0/",
        ] {
            assert_eq!(base_url(url), "http://o:9876", "{url}");
        }
        assert_eq!(
            base_url("http://c/load-balancer/"),
            "http://c/load-balancer"
        );
    }
}
