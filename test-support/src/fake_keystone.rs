//! A fake Keystone (identity API v3) for lb-agent's tests: a real keystone
//! cannot run on these machines, so this serves the published token API
//! shapes over HTTP on 127.0.0.1, and guards a service the way
//! keystonemiddleware guards the Octavia API.
//!
//! Token API, like keystone:
//! * `POST /v3/auth/tokens` with the `password` method (user by name and
//!   domain name or id, scoped to a project by name and domain, or by id;
//!   unscoped: a token without catalog) or the `application_credential`
//!   method (by id and secret; a scope is refused). 201 with the token in
//!   `X-Subject-Token` and `{"token": {..., "expires_at", "issued_at",
//!   "catalog"}}`, times in keystone's `2026-11-23T20:00:00.000000Z` form.
//!   The catalog has `identity` and `load-balancer`, the latter at
//!   `<fake URL>/octavia`, `public` and `internal`, region `RegionOne`.
//!   Wrong credentials: 401 with keystone's JSON error; malformed: 400.
//! * `GET` (validate) and `DELETE` (revoke) `/v3/auth/tokens` with
//!   `X-Auth-Token` and `X-Subject-Token`; `GET /v3` version document.
//!
//! The guard: any request under `/octavia/` must carry an `X-Auth-Token`
//! this fake issued, not expired nor revoked, or it gets keystonemiddleware's
//! 401. Accepted requests are relayed to the upstream base URL with the
//! `/octavia` prefix removed and the middleware's identity headers
//! (`X-Identity-Status: Confirmed`, `X-Project-Id`, `X-User-Id`, `X-Roles`,
//! ...) set, spoofed copies of them removed; the response is relayed back.
//!
//! [`FakeKeystone::revoke_all`] invalidates every token issued so far (a
//! revocation, or keystone restarted with new fernet keys). Counters:
//! [`FakeKeystone::tokens_issued`], [`FakeKeystone::unauthorized_responses`]
//! (401s this fake sent itself, not relayed ones).
//!
//! [`Upstream`] is a stub service to guard: `GET /v2/lbaas/loadbalancers`
//! answers `{"loadbalancers": []}`, `/v2/unauthorized` answers 401, the
//! rest 404; it records the requests it got.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

type HttpResponse = Response<Full<Bytes>>;

/// The region of every catalog endpoint.
pub const REGION: &str = "RegionOne";

/// What the fake accepts and how it behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// The password user, its domain (by name; `Default` has id `default`)
    /// and the project it may scope to.
    pub username: String,
    pub password: String,
    pub user_domain: String,
    pub project_name: String,
    pub project_domain: String,
    /// The application credential (of the same user and project).
    pub app_cred_id: String,
    pub app_cred_secret: String,
    /// Token lifetime (keystone's default is an hour).
    pub ttl: Duration,
    /// Base URL that `/octavia/...` requests are relayed to.
    pub upstream: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            username: "lb-agent".into(),
            password: "lb-agent-password".into(),
            user_domain: "Default".into(),
            project_name: "service".into(),
            project_domain: "Default".into(),
            app_cred_id: "0b1e8a3c9d2f4e5a8b7c6d5e4f3a2b1c".into(),
            app_cred_secret: "app-cred-secret".into(),
            ttl: Duration::from_secs(3600),
            upstream: None,
        }
    }
}

/// A domain's id from its name, as keystone's default domain has it.
fn domain_id(name: &str) -> String {
    if name == "Default" {
        "default".into()
    } else {
        format!("{}-domain-id", name.to_lowercase())
    }
}

const PROJECT_ID: &str = "5c1d0b7b0b6a4e0e9a6f1c2d3e4f5a6b";
const USER_ID: &str = "9d8c7b6a5f4e4d3c8b2a1f0e9d8c7b6a";

struct Issued {
    expires: Instant,
    generation: u64,
    /// The `{"token": ...}` body, for validation.
    body: Value,
}

#[derive(Default)]
struct State {
    tokens: HashMap<String, Issued>,
    /// Tokens of older generations are revoked.
    generation: u64,
    issued: usize,
    unauthorized: usize,
    forwarded: usize,
    upstream: Option<String>,
}

struct Inner {
    options: Options,
    url: String,
    state: Mutex<State>,
    client: Client<HttpConnector, Full<Bytes>>,
    serial: AtomicU64,
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The fake keystone; stops when dropped.
pub struct FakeKeystone {
    inner: Arc<Inner>,
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeKeystone {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeKeystone {
    pub async fn start(options: Options) -> FakeKeystone {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let state = State {
            upstream: options.upstream.clone(),
            ..State::default()
        };
        let inner = Arc::new(Inner {
            options,
            url: format!("http://{addr}"),
            state: Mutex::new(state),
            client: Client::builder(TokioExecutor::new()).build_http(),
            serial: AtomicU64::new(0),
        });
        let handler = inner.clone();
        let task = tokio::spawn(serve(listener, move |req| handle(handler.clone(), req)));
        FakeKeystone { inner, addr, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`: keystone's root.
    pub fn url(&self) -> String {
        self.inner.url.clone()
    }

    /// `<url>/v3`, what clouds.yaml calls `auth_url`.
    pub fn auth_url(&self) -> String {
        format!("{}/v3", self.inner.url)
    }

    /// The guarded service's URL, as the catalog has it.
    pub fn octavia_url(&self) -> String {
        format!("{}/octavia", self.inner.url)
    }

    pub fn options(&self) -> &Options {
        &self.inner.options
    }

    /// The id of the project tokens are scoped to.
    pub fn project_id(&self) -> &'static str {
        PROJECT_ID
    }

    /// Changes where `/octavia/...` is relayed to.
    pub fn set_upstream(&self, url: Option<String>) {
        self.inner.state().upstream = url;
    }

    /// Makes every token issued so far invalid.
    pub fn revoke_all(&self) {
        self.inner.state().generation += 1;
    }

    pub fn tokens_issued(&self) -> usize {
        self.inner.state().issued
    }

    /// 401s sent by the fake itself (token API and guard).
    pub fn unauthorized_responses(&self) -> usize {
        self.inner.state().unauthorized
    }

    /// Requests relayed to the upstream.
    pub fn forwarded(&self) -> usize {
        self.inner.state().forwarded
    }
}

/// Accepts HTTP/1 connections until aborted (which closes them all).
async fn serve<F, Fut>(listener: TcpListener, handler: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = HttpResponse> + Send + 'static,
{
    let mut connections = JoinSet::new();
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let handler = handler.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let fut = handler(req);
                async move { Ok::<_, Infallible>(fut.await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
        while connections.try_join_next().is_some() {}
    }
}

fn json_response(status: u16, body: &Value) -> HttpResponse {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = StatusCode::from_u16(status).expect("status");
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// Keystone's error body.
fn error(status: u16, title: &str, message: &str) -> HttpResponse {
    json_response(
        status,
        &json!({"error": {"code": status, "message": message, "title": title}}),
    )
}

const UNAUTHORIZED: &str = "The request you have made requires authentication.";

async fn handle(inner: Arc<Inner>, req: Request<Incoming>) -> HttpResponse {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let resp = if path == "/v3/auth/tokens" {
        match method {
            Method::POST => issue(&inner, req).await,
            Method::GET | Method::HEAD => validate(&inner, &req, false),
            Method::DELETE => validate(&inner, &req, true),
            _ => error(
                405,
                "Method Not Allowed",
                "The method is not allowed for the requested URL.",
            ),
        }
    } else if (path == "/v3" || path == "/v3/") && method == Method::GET {
        json_response(
            200,
            &json!({"version": {
            "id": "v3.14", "status": "stable", "updated": "2020-04-07T00:00:00Z",
            "links": [{"rel": "self", "href": format!("{}/v3/", inner.url)}],
            "media-types": [{"base": "application/json",
                "type": "application/vnd.openstack.identity-v3+json"}]}}),
        )
    } else if path == "/octavia" || path.starts_with("/octavia/") {
        guard(&inner, req).await
    } else {
        error(404, "Not Found", "The resource could not be found.")
    };
    if resp.status() == StatusCode::UNAUTHORIZED {
        inner.state().unauthorized += 1;
    }
    resp
}

async fn read_body(body: Incoming) -> Option<Bytes> {
    Some(Limited::new(body, 1 << 20).collect().await.ok()?.to_bytes())
}

/// `POST /v3/auth/tokens`.
async fn issue(inner: &Inner, req: Request<Incoming>) -> HttpResponse {
    let Some(body) = read_body(req.into_body()).await else {
        return error(400, "Bad Request", "Could not read the request body.");
    };
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return error(400, "Bad Request", "Malformed request body.");
    };
    let identity = &body["auth"]["identity"];
    let Some(methods) = identity["methods"].as_array() else {
        return error(
            400,
            "Bad Request",
            "Invalid input for field 'identity': 'methods' is a required property",
        );
    };
    let o = &inner.options;
    let scope = &body["auth"]["scope"];
    let (method, scoped, app_cred) = if methods.iter().any(|m| m == "password") {
        let user = &identity["password"]["user"];
        let domain = &user["domain"];
        let domain_ok = domain["name"].as_str() == Some(o.user_domain.as_str())
            || domain["id"].as_str() == Some(domain_id(&o.user_domain).as_str());
        let user_ok = (user["name"].as_str() == Some(o.username.as_str()) && domain_ok)
            || user["id"].as_str() == Some(USER_ID);
        if !user_ok || user["password"].as_str() != Some(o.password.as_str()) {
            return error(401, "Unauthorized", UNAUTHORIZED);
        }
        let scoped = if scope.is_null() {
            false
        } else {
            let project = &scope["project"];
            let pdomain = &project["domain"];
            let by_name = project["name"].as_str() == Some(o.project_name.as_str())
                && (pdomain["name"].as_str() == Some(o.project_domain.as_str())
                    || pdomain["id"].as_str() == Some(domain_id(&o.project_domain).as_str()));
            if !(by_name || project["id"].as_str() == Some(PROJECT_ID)) {
                return error(401, "Unauthorized", UNAUTHORIZED);
            }
            true
        };
        ("password", scoped, false)
    } else if methods.iter().any(|m| m == "application_credential") {
        let cred = &identity["application_credential"];
        if cred["id"].as_str() != Some(o.app_cred_id.as_str())
            || cred["secret"].as_str() != Some(o.app_cred_secret.as_str())
        {
            return error(401, "Unauthorized", UNAUTHORIZED);
        }
        if !scope.is_null() {
            return error(401, "Unauthorized", UNAUTHORIZED);
        }
        ("application_credential", true, true)
    } else {
        return error(401, "Unauthorized", UNAUTHORIZED);
    };

    let now = jiff::Timestamp::now();
    let expires = now.checked_add(o.ttl).expect("ttl");
    let stamp = |t: jiff::Timestamp| t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    let serial = inner.serial.fetch_add(1, Ordering::Relaxed);
    let token_id = format!("gAAAAAB{:016x}{:08x}", now.as_nanosecond() as u64, serial);
    let domain = |name: &str| json!({"id": domain_id(name), "name": name});
    let mut token = json!({
        "methods": [method],
        "user": {"id": USER_ID, "name": o.username, "domain": domain(&o.user_domain),
                 "password_expires_at": null},
        "audit_ids": [format!("audit{serial:08x}")],
        "expires_at": stamp(expires),
        "issued_at": stamp(now),
    });
    if scoped {
        let endpoint = |interface: &str, url: String| {
            json!({"id": format!("{interface}-{}", url.len()), "interface": interface,
                   "region": REGION, "region_id": REGION, "url": url})
        };
        let octavia = format!("{}/octavia", inner.url);
        token["project"] =
            json!({"id": PROJECT_ID, "name": o.project_name, "domain": domain(&o.project_domain)});
        token["is_domain"] = json!(false);
        token["roles"] =
            json!([{"id": "r-admin", "name": "admin"}, {"id": "r-member", "name": "member"}]);
        token["catalog"] = json!([
            {"id": "svc-identity", "type": "identity", "name": "keystone", "endpoints": [
                endpoint("public", inner.url.clone()),
                endpoint("internal", inner.url.clone())]},
            {"id": "svc-octavia", "type": "load-balancer", "name": "octavia", "endpoints": [
                endpoint("public", octavia.clone()),
                endpoint("internal", octavia)]},
        ]);
    }
    if app_cred {
        token["application_credential"] =
            json!({"id": o.app_cred_id, "name": "lb-agent", "restricted": true});
    }
    let body = json!({ "token": token });
    let mut state = inner.state();
    let generation = state.generation;
    state.tokens.insert(
        token_id.clone(),
        Issued {
            expires: Instant::now() + o.ttl,
            generation,
            body: body.clone(),
        },
    );
    state.issued += 1;
    drop(state);
    let mut resp = json_response(201, &body);
    resp.headers_mut().insert(
        "x-subject-token",
        HeaderValue::from_str(&token_id).expect("token header"),
    );
    resp
}

/// Whether `token` is one this fake issued, unexpired and unrevoked.
fn valid(state: &State, token: Option<&str>) -> bool {
    token
        .and_then(|t| state.tokens.get(t))
        .is_some_and(|t| t.generation == state.generation && Instant::now() < t.expires)
}

fn header<'r>(req: &'r Request<Incoming>, name: &str) -> Option<&'r str> {
    req.headers().get(name)?.to_str().ok()
}

/// `GET` / `HEAD` / `DELETE /v3/auth/tokens`: validate or revoke the
/// `X-Subject-Token`, as the holder of a valid `X-Auth-Token`.
fn validate(inner: &Inner, req: &Request<Incoming>, revoke: bool) -> HttpResponse {
    let mut state = inner.state();
    if !valid(&state, header(req, "x-auth-token")) {
        return error(401, "Unauthorized", UNAUTHORIZED);
    }
    let subject = header(req, "x-subject-token");
    if !valid(&state, subject) {
        return error(404, "Not Found", "Could not find token.");
    }
    let subject = subject.unwrap_or_default().to_owned();
    if revoke {
        state.tokens.remove(&subject);
        let mut resp = Response::new(Full::new(Bytes::new()));
        *resp.status_mut() = StatusCode::NO_CONTENT;
        return resp;
    }
    let body = state.tokens[&subject].body.clone();
    let mut resp = json_response(200, &body);
    resp.headers_mut().insert(
        "x-subject-token",
        HeaderValue::from_str(&subject).expect("token header"),
    );
    resp
}

/// Headers keystonemiddleware sets; clients' copies are dropped.
const IDENTITY_HEADERS: [&str; 8] = [
    "x-identity-status",
    "x-project-id",
    "x-project-name",
    "x-project-domain-id",
    "x-user-id",
    "x-user-name",
    "x-user-domain-id",
    "x-roles",
];

/// Requests under `/octavia`: check the token, relay to the upstream.
async fn guard(inner: &Inner, req: Request<Incoming>) -> HttpResponse {
    let upstream = {
        let state = inner.state();
        if !valid(&state, header(&req, "x-auth-token")) {
            let mut resp = error(401, "Unauthorized", UNAUTHORIZED);
            let challenge = format!("Keystone uri=\"{}\"", inner.url);
            resp.headers_mut().insert(
                "www-authenticate",
                HeaderValue::from_str(&challenge).expect("header"),
            );
            return resp;
        }
        state.upstream.clone()
    };
    let Some(upstream) = upstream else {
        return error(503, "Service Unavailable", "No upstream configured.");
    };
    let o = &inner.options;
    let (parts, body) = req.into_parts();
    let rest = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/")
        .strip_prefix("/octavia")
        .unwrap_or("/");
    let rest = if rest.is_empty() || rest.starts_with('?') {
        format!("/{rest}")
    } else {
        rest.to_owned()
    };
    let Some(body) = read_body(body).await else {
        return error(400, "Bad Request", "Could not read the request body.");
    };
    let mut fwd = Request::new(Full::new(body));
    *fwd.method_mut() = parts.method;
    let Ok(uri) = format!("{}{rest}", upstream.trim_end_matches('/')).parse() else {
        return error(502, "Bad Gateway", "Bad upstream URL.");
    };
    *fwd.uri_mut() = uri;
    for (name, value) in &parts.headers {
        let n = name.as_str();
        if n == "host"
            || n == "connection"
            || n == "content-length"
            || IDENTITY_HEADERS.contains(&n)
        {
            continue;
        }
        fwd.headers_mut().append(name.clone(), value.clone());
    }
    let identity = [
        ("x-identity-status", "Confirmed".to_owned()),
        ("x-project-id", PROJECT_ID.to_owned()),
        ("x-project-name", o.project_name.clone()),
        ("x-project-domain-id", domain_id(&o.project_domain)),
        ("x-user-id", USER_ID.to_owned()),
        ("x-user-name", o.username.clone()),
        ("x-user-domain-id", domain_id(&o.user_domain)),
        ("x-roles", "admin,member".to_owned()),
    ];
    for (name, value) in identity {
        if let Ok(value) = HeaderValue::from_str(&value) {
            fwd.headers_mut()
                .insert(HeaderName::from_static(name), value);
        }
    }
    inner.state().forwarded += 1;
    let Ok(resp) = inner.client.request(fwd).await else {
        return error(502, "Bad Gateway", "The upstream did not answer.");
    };
    let (parts, body) = resp.into_parts();
    let Ok(body) = Limited::new(body, 64 << 20).collect().await else {
        return error(502, "Bad Gateway", "The upstream's response was cut.");
    };
    let mut out = Response::new(Full::new(body.to_bytes()));
    *out.status_mut() = parts.status;
    for (name, value) in &parts.headers {
        let n = name.as_str();
        if n != "connection"
            && n != "transfer-encoding"
            && n != "content-length"
            && n != "keep-alive"
        {
            out.headers_mut().append(name.clone(), value.clone());
        }
    }
    out
}

/// A request the stub upstream got.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub method: String,
    /// Path and query.
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// Its `X-Auth-Token`.
    pub token: Option<String>,
}

impl SeenRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A stub service to guard (see the module doc); stops when dropped.
pub struct Upstream {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<SeenRequest>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        let task = tokio::spawn(serve(listener, move |req: Request<Incoming>| {
            let log = log.clone();
            async move {
                let seen = SeenRequest {
                    method: req.method().to_string(),
                    path: req
                        .uri()
                        .path_and_query()
                        .map(|pq| pq.to_string())
                        .unwrap_or_default(),
                    headers: req
                        .headers()
                        .iter()
                        .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_owned()))
                        .collect(),
                    token: header(&req, "x-auth-token").map(str::to_owned),
                };
                let path = req.uri().path().to_owned();
                let get = req.method() == Method::GET;
                log.lock().unwrap_or_else(|e| e.into_inner()).push(seen);
                match path.as_str() {
                    "/v2/lbaas/loadbalancers" if get => {
                        json_response(200, &json!({"loadbalancers": []}))
                    }
                    "/v2/unauthorized" => error(401, "Unauthorized", UNAUTHORIZED),
                    _ => json_response(
                        404,
                        &json!({"faultcode": "Client",
                                "faultstring": format!("{path} not found."),
                                "debuginfo": null}),
                    ),
                }
            }
        }));
        Upstream {
            addr,
            requests,
            task,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<SeenRequest> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
