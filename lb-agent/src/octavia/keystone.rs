//! Keystone v3 authentication: a project-scoped token from a password, or
//! a token from an application credential, cached until shortly before it
//! expires, and the service catalog that comes with it.
//!
//! `auth_url` may be given as keystone's root (`http://host:5000`), its v3
//! URL (`http://host:5000/v3`) or either with a trailing slash; tokens are
//! requested from `<root>/v3/auth/tokens`. Other versions (`/v2.0`) are
//! refused.
//!
//! Refresh: a token of lifetime L (`expires_at - issued_at`, both keystone's
//! clock, so clock skew does not matter; measured from when the request was
//! sent) is re-issued `min(5 min, L / 4)` before it expires: 5 minutes for
//! keystone's default hour, a quarter of very short test lifetimes. If
//! keystone cannot be reached then, the old token is used until it really
//! expires.
//!
//! Secrets (password, application credential secret, tokens) are never
//! logged nor put in error messages.

use std::fmt;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use hyper::Method;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::Mutex;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::http::HttpClient;

/// The longest a token is refreshed before it expires.
const MAX_REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

/// Who lb-agent is to keystone.
#[derive(Clone)]
pub enum Credentials {
    /// A user's password, scoped to a project (by names).
    Password {
        auth_url: String,
        username: String,
        password: String,
        user_domain: String,
        project_name: String,
        project_domain: String,
    },
    /// An application credential (its project is implied; no scope sent).
    ApplicationCredential {
        auth_url: String,
        id: String,
        secret: String,
    },
}

impl Credentials {
    fn auth_url(&self) -> &str {
        match self {
            Credentials::Password { auth_url, .. } => auth_url,
            Credentials::ApplicationCredential { auth_url, .. } => auth_url,
        }
    }

    /// The body of `POST /v3/auth/tokens`.
    fn request_body(&self) -> Value {
        match self {
            Credentials::Password {
                username,
                password,
                user_domain,
                project_name,
                project_domain,
                ..
            } => json!({"auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {"user": {
                        "name": username,
                        "domain": {"name": user_domain},
                        "password": password,
                    }},
                },
                "scope": {"project": {
                    "name": project_name,
                    "domain": {"name": project_domain},
                }},
            }}),
            Credentials::ApplicationCredential { id, secret, .. } => json!({"auth": {
                "identity": {
                    "methods": ["application_credential"],
                    "application_credential": {"id": id, "secret": secret},
                },
            }}),
        }
    }

    /// Who is authenticating, for logs (no secret).
    fn who(&self) -> String {
        match self {
            Credentials::Password {
                username,
                user_domain,
                project_name,
                project_domain,
                ..
            } => format!(
                "user {username:?} (domain {user_domain:?}), project {project_name:?} \
                 (domain {project_domain:?})"
            ),
            Credentials::ApplicationCredential { id, .. } => {
                format!("application credential {id:?}")
            }
        }
    }
}

/// Secrets redacted.
impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Password {
                auth_url,
                username,
                user_domain,
                project_name,
                project_domain,
                ..
            } => f
                .debug_struct("Password")
                .field("auth_url", auth_url)
                .field("username", username)
                .field("password", &"<redacted>")
                .field("user_domain", user_domain)
                .field("project_name", project_name)
                .field("project_domain", project_domain)
                .finish(),
            Credentials::ApplicationCredential { auth_url, id, .. } => f
                .debug_struct("ApplicationCredential")
                .field("auth_url", auth_url)
                .field("id", id)
                .field("secret", &"<redacted>")
                .finish(),
        }
    }
}

/// Keystone's token response body (the parts used).
#[derive(Deserialize)]
struct TokenResponse {
    token: TokenInfo,
}

#[derive(Deserialize)]
struct TokenInfo {
    expires_at: String,
    #[serde(default)]
    issued_at: Option<String>,
    /// Absent from unscoped tokens.
    #[serde(default)]
    catalog: Vec<Service>,
}

/// One service of the catalog.
#[derive(Deserialize, Debug, Clone)]
struct Service {
    #[serde(rename = "type")]
    service_type: String,
    #[serde(default)]
    endpoints: Vec<Endpoint>,
}

#[derive(Deserialize, Debug, Clone)]
struct Endpoint {
    interface: String,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    region_id: Option<String>,
    url: String,
}

/// The cached token.
struct Cached {
    token: String,
    /// When to ask for a new one.
    refresh_at: Instant,
    /// When keystone stops accepting it (estimated on our clock).
    valid_until: Instant,
}

#[derive(Default)]
struct State {
    token: Option<Cached>,
    /// From the last token issued.
    catalog: Vec<Service>,
}

/// A keystone session: one token at a time, shared by all callers.
pub struct Keystone {
    http: HttpClient,
    creds: Credentials,
    /// Held while authenticating, so concurrent callers wait for one token
    /// instead of each asking for their own.
    state: Mutex<State>,
}

impl Keystone {
    pub fn new(http: HttpClient, creds: Credentials) -> Self {
        Keystone {
            http,
            creds,
            state: Mutex::new(State::default()),
        }
    }

    /// A valid token: the cached one, or a new one when it is due for
    /// refresh or was invalidated.
    pub async fn token(&self) -> anyhow::Result<String> {
        let mut state = self.state.lock().await;
        let now = Instant::now();
        if let Some(cached) = &state.token {
            if now < cached.refresh_at {
                return Ok(cached.token.clone());
            }
        }
        match self.authenticate().await {
            Ok((cached, catalog)) => {
                let token = cached.token.clone();
                state.token = Some(cached);
                state.catalog = catalog;
                Ok(token)
            }
            Err(e) => match &state.token {
                // Keystone is down at refresh time: the token still works.
                Some(cached) if Instant::now() < cached.valid_until => {
                    warn!(error = format!("{e:#}"), "keystone: cannot refresh the token, using the current one until it expires");
                    Ok(cached.token.clone())
                }
                _ => Err(e),
            },
        }
    }

    /// Forgets `token` if it is still the cached one (after a 401 from a
    /// service), so the next [`Keystone::token`] authenticates again.
    pub async fn invalidate(&self, token: &str) {
        let mut state = self.state.lock().await;
        if state.token.as_ref().is_some_and(|c| c.token == token) {
            debug!("keystone: token invalidated");
            state.token = None;
        }
    }

    /// The URL of `service_type`'s `interface` endpoint (`public`,
    /// `internal`, `admin`; `publicURL` style is accepted too) in `region`
    /// (any region if `None`), from the catalog of the current token.
    pub async fn endpoint(
        &self,
        service_type: &str,
        interface: &str,
        region: Option<&str>,
    ) -> anyhow::Result<String> {
        self.token().await?;
        let state = self.state.lock().await;
        find_endpoint(&state.catalog, service_type, interface, region)
    }

    /// Asks keystone for a token.
    async fn authenticate(&self) -> anyhow::Result<(Cached, Vec<Service>)> {
        let url = tokens_url(self.creds.auth_url())?;
        let sent_at = Instant::now();
        let resp = self
            .http
            .request(Method::POST, &url, &[], Some(&self.creds.request_body()))
            .await
            .context("keystone authentication")?;
        match resp.status {
            200 | 201 => {}
            401 => bail!(
                "keystone refused the credentials (HTTP 401): {}",
                resp.body_excerpt()
            ),
            status => bail!(
                "keystone POST {url}: HTTP {status}: {}",
                resp.body_excerpt()
            ),
        }
        let token = resp
            .header("x-subject-token")
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                anyhow!("keystone POST {url}: no X-Subject-Token header in the response")
            })?
            .to_owned();
        let body: TokenResponse = resp
            .json()
            .with_context(|| format!("keystone POST {url}: not a keystone token"))?;
        let expires_at = parse_timestamp(&body.token.expires_at)
            .with_context(|| format!("keystone POST {url}: token expires_at"))?;
        let issued_at = match &body.token.issued_at {
            Some(t) => parse_timestamp(t)
                .with_context(|| format!("keystone POST {url}: token issued_at"))?,
            None => jiff::Timestamp::now(),
        };
        let lifetime = Duration::try_from(expires_at.duration_since(issued_at))
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                anyhow!("keystone POST {url}: the token expires ({expires_at}) before it was issued ({issued_at})")
            })?;
        let (refresh_at, valid_until) = schedule(sent_at, lifetime);
        info!(
            "keystone: new token for {}, expires at {expires_at}, refresh in {:?}",
            self.creds.who(),
            refresh_at.saturating_duration_since(sent_at)
        );
        let cached = Cached {
            token,
            refresh_at,
            valid_until,
        };
        Ok((cached, body.token.catalog))
    }
}

/// `<root>/v3/auth/tokens` from an `auth_url` given with or without `/v3`
/// and trailing slashes.
fn tokens_url(auth_url: &str) -> anyhow::Result<String> {
    let base = auth_url.trim().trim_end_matches('/');
    if base.is_empty() {
        bail!("keystone auth URL is empty");
    }
    if base.ends_with("/v3") {
        return Ok(format!("{base}/auth/tokens"));
    }
    let last = base.rsplit('/').next().unwrap_or_default();
    let versioned = last.len() > 1
        && last.starts_with('v')
        && last[1..].chars().all(|c| c.is_ascii_digit() || c == '.');
    if versioned {
        bail!("keystone auth URL {auth_url:?}: only the v3 API is supported");
    }
    Ok(format!("{base}/v3/auth/tokens"))
}

/// When to refresh a token of `lifetime` asked for at `sent_at`, and when
/// it stops being valid.
fn schedule(sent_at: Instant, lifetime: Duration) -> (Instant, Instant) {
    let margin = (lifetime / 4).min(MAX_REFRESH_MARGIN);
    (sent_at + (lifetime - margin), sent_at + lifetime)
}

/// Keystone's RFC 3339 time (`2026-11-23T20:00:00.000000Z`); fractional
/// seconds optional. A time without offset is taken as UTC, as keystone
/// means it.
fn parse_timestamp(text: &str) -> anyhow::Result<jiff::Timestamp> {
    if let Ok(t) = text.parse::<jiff::Timestamp>() {
        return Ok(t);
    }
    let civil: jiff::civil::DateTime = text
        .parse()
        .map_err(|_| anyhow!("{text:?} is not an RFC 3339 time"))?;
    jiff::tz::Offset::UTC
        .to_timestamp(civil)
        .map_err(|e| anyhow!("{text:?}: {e}"))
}

/// Keystone's interface name for `publicURL` style names.
fn interface_name(interface: &str) -> &str {
    interface.strip_suffix("URL").unwrap_or(interface)
}

/// The matching endpoint's URL, or an error saying what is missing and
/// what the catalog has instead.
fn find_endpoint(
    catalog: &[Service],
    service_type: &str,
    interface: &str,
    region: Option<&str>,
) -> anyhow::Result<String> {
    let interface = interface_name(interface);
    let services: Vec<&Service> = catalog
        .iter()
        .filter(|s| s.service_type == service_type)
        .collect();
    if services.is_empty() {
        let mut types: Vec<&str> = catalog.iter().map(|s| s.service_type.as_str()).collect();
        types.sort_unstable();
        types.dedup();
        let has = if types.is_empty() {
            "an empty catalog (is the token scoped to a project?)".to_owned()
        } else {
            format!("services: {}", types.join(", "))
        };
        bail!("keystone catalog has no {service_type:?} service ({has})");
    }
    let region_of = |e: &Endpoint| {
        e.region_id
            .clone()
            .or_else(|| e.region.clone())
            .unwrap_or_default()
    };
    let endpoints = services.iter().flat_map(|s| &s.endpoints);
    let mut matching = endpoints.clone().filter(|e| {
        e.interface == interface
            && region
                .is_none_or(|r| e.region_id.as_deref() == Some(r) || e.region.as_deref() == Some(r))
    });
    if let Some(endpoint) = matching.next() {
        if let Some(other) = matching.find(|e| e.url != endpoint.url) {
            debug!(
                "keystone catalog: several {service_type:?} {interface} endpoints; using {} \
                 (region {:?}), not {} (region {:?})",
                endpoint.url,
                region_of(endpoint),
                other.url,
                region_of(other)
            );
        }
        return Ok(endpoint.url.clone());
    }
    let has: Vec<String> = endpoints
        .map(|e| format!("{} in {:?}", e.interface, region_of(e)))
        .collect();
    let in_region = region
        .map(|r| format!(" in region {r:?}"))
        .unwrap_or_default();
    bail!(
        "keystone catalog: the {service_type:?} service has no {interface:?} endpoint{in_region} \
         (it has: {})",
        if has.is_empty() {
            "none".to_owned()
        } else {
            has.join(", ")
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_url_forms() {
        for url in [
            "http://ks:5000",
            "http://ks:5000/",
            "http://ks:5000/v3",
            "http://ks:5000/v3/",
            " http://ks:5000/v3// ",
        ] {
            assert_eq!(
                tokens_url(url).unwrap(),
                "http://ks:5000/v3/auth/tokens",
                "{url}"
            );
        }
        assert_eq!(
            tokens_url("https://cloud/identity").unwrap(),
            "https://cloud/identity/v3/auth/tokens"
        );
        assert!(tokens_url("http://ks:5000/v2.0").is_err());
        assert!(tokens_url("http://ks:5000/v2/").is_err());
        assert!(tokens_url("").is_err());
    }

    #[test]
    fn timestamps() {
        let t = parse_timestamp("2026-11-23T20:00:00.000000Z").unwrap();
        assert_eq!(t.as_second(), 1795464000);
        assert_eq!(parse_timestamp("2026-11-23T20:00:00Z").unwrap(), t);
        assert_eq!(parse_timestamp("2026-11-23T21:00:00+01:00").unwrap(), t);
        // No offset: UTC.
        assert_eq!(parse_timestamp("2026-11-23T20:00:00.000000").unwrap(), t);
        let frac = parse_timestamp("2026-11-23T20:00:00.250000Z").unwrap();
        assert_eq!(frac.duration_since(t).as_millis(), 250);
        assert!(parse_timestamp("tomorrow").is_err());
        assert!(parse_timestamp("").is_err());
    }

    #[test]
    fn refresh_margin() {
        let now = Instant::now();
        // Keystone's default hour: 5 minutes early.
        let (refresh, valid) = schedule(now, Duration::from_secs(3600));
        assert_eq!(refresh - now, Duration::from_secs(3300));
        assert_eq!(valid - now, Duration::from_secs(3600));
        // Short lifetimes: a quarter early.
        let (refresh, _) = schedule(now, Duration::from_secs(2));
        assert_eq!(refresh - now, Duration::from_millis(1500));
    }

    #[test]
    fn request_bodies_and_redaction() {
        let password = Credentials::Password {
            auth_url: "http://ks/v3".into(),
            username: "lb".into(),
            password: "hunter2".into(),
            user_domain: "Default".into(),
            project_name: "service".into(),
            project_domain: "Default".into(),
        };
        assert_eq!(
            password.request_body(),
            json!({"auth": {
                "identity": {"methods": ["password"], "password": {"user": {
                    "name": "lb", "domain": {"name": "Default"}, "password": "hunter2"}}},
                "scope": {"project": {"name": "service", "domain": {"name": "Default"}}}}})
        );
        let app = Credentials::ApplicationCredential {
            auth_url: "http://ks/v3".into(),
            id: "abc".into(),
            secret: "s3cret".into(),
        };
        assert_eq!(
            app.request_body(),
            json!({"auth": {"identity": {"methods": ["application_credential"],
                "application_credential": {"id": "abc", "secret": "s3cret"}}}})
        );
        for (creds, secret) in [(&password, "hunter2"), (&app, "s3cret")] {
            let shown = format!("{creds:?} {}", creds.who());
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    fn catalog() -> Vec<Service> {
        serde_json::from_value(json!([
            {"type": "identity", "endpoints": [
                {"interface": "public", "region": "RegionOne", "region_id": "RegionOne",
                 "url": "http://ks/identity"}]},
            {"type": "load-balancer", "endpoints": [
                {"interface": "public", "region": "RegionOne", "region_id": "RegionOne",
                 "url": "http://lb1/public"},
                {"interface": "internal", "region": "RegionOne", "region_id": "RegionOne",
                 "url": "http://lb1/internal"},
                {"interface": "public", "region_id": "RegionTwo", "url": "http://lb2/public"}]}
        ]))
        .unwrap()
    }

    #[test]
    fn endpoints_from_the_catalog() {
        let c = catalog();
        let find = |i, r| find_endpoint(&c, "load-balancer", i, r);
        assert_eq!(find("public", None).unwrap(), "http://lb1/public");
        assert_eq!(find("publicURL", None).unwrap(), "http://lb1/public");
        assert_eq!(
            find("internal", Some("RegionOne")).unwrap(),
            "http://lb1/internal"
        );
        assert_eq!(
            find("public", Some("RegionTwo")).unwrap(),
            "http://lb2/public"
        );

        let msg = find("internal", Some("RegionTwo")).unwrap_err().to_string();
        assert!(
            msg.contains("\"internal\" endpoint in region \"RegionTwo\"")
                && msg.contains("public in \"RegionTwo\""),
            "{msg}"
        );
        let msg = find("admin", None).unwrap_err().to_string();
        assert!(msg.contains("no \"admin\" endpoint ("), "{msg}");
        let msg = find_endpoint(&c, "compute", "public", None)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("no \"compute\" service") && msg.contains("identity, load-balancer"),
            "{msg}"
        );
        let msg = find_endpoint(&[], "load-balancer", "public", None)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("empty catalog"), "{msg}");
    }
}
