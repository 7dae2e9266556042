//! The fake keystone (`lbd_test_support::fake_keystone`) answers like keystone and
//! keystonemiddleware do, so that lb-agent's keystone tests (unit tests in
//! `src/octavia/auth.rs`, which drive the same fake) cannot pass on
//! leniency. Plain HTTP on loopback.

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use lbd_test_support::fake_keystone::{FakeKeystone, Options, Upstream, REGION};
use serde_json::{json, Value};

/// A response: status, headers, JSON body (`Null` if none).
struct Reply {
    status: u16,
    headers: hyper::HeaderMap,
    body: Value,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)?.to_str().ok()
    }
}

async fn call(method: Method, url: &str, headers: &[(&str, &str)], body: Option<Value>) -> Reply {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        body,
    }
}

fn password_body(o: &Options, password: &str, scope: Option<Value>) -> Value {
    let mut body = json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": o.username, "domain": {"name": o.user_domain}, "password": password}}}}});
    if let Some(scope) = scope {
        body["auth"]["scope"] = scope;
    }
    body
}

fn project_scope(o: &Options) -> Value {
    json!({"project": {"name": o.project_name, "domain": {"name": o.project_domain}}})
}

async fn issue(ks: &FakeKeystone, body: Value) -> Reply {
    let url = format!("{}/auth/tokens", ks.auth_url());
    call(Method::POST, &url, &[], Some(body)).await
}

/// A scoped password token.
async fn token(ks: &FakeKeystone) -> String {
    let o = ks.options().clone();
    let reply = issue(ks, password_body(&o, &o.password, Some(project_scope(&o)))).await;
    assert_eq!(reply.status, 201);
    reply.header("x-subject-token").unwrap().to_owned()
}

fn is_keystone_401(reply: &Reply) -> bool {
    reply.status == 401
        && reply.body
            == json!({"error": {"code": 401, "title": "Unauthorized",
                "message": "The request you have made requires authentication."}})
}

#[tokio::test]
async fn password_tokens_look_like_keystones() {
    let ks = FakeKeystone::start(Options::default()).await;
    let o = ks.options().clone();
    let reply = issue(&ks, password_body(&o, &o.password, Some(project_scope(&o)))).await;
    assert_eq!(reply.status, 201);
    assert!(reply
        .header("x-subject-token")
        .is_some_and(|t| t.len() > 20));
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let token = &reply.body["token"];
    assert_eq!(token["methods"], json!(["password"]));
    assert_eq!(token["project"]["id"], ks.project_id());
    assert_eq!(token["project"]["domain"]["id"], "default");
    // Keystone's time format: microseconds and Z.
    for field in ["expires_at", "issued_at"] {
        let t = token[field].as_str().unwrap();
        assert_eq!(t.len(), "2026-11-23T20:00:00.000000Z".len(), "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[19] == b'.', "{t}");
    }
    assert!(token["expires_at"].as_str() > token["issued_at"].as_str());
    let lb = token["catalog"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["type"] == "load-balancer")
        .unwrap();
    let endpoints = lb["endpoints"].as_array().unwrap();
    for interface in ["public", "internal"] {
        let e = endpoints
            .iter()
            .find(|e| e["interface"] == interface)
            .unwrap();
        assert_eq!(e["url"], ks.octavia_url());
        assert_eq!(e["region_id"], REGION);
        assert_eq!(e["region"], REGION);
    }

    // By domain id, and unscoped (no catalog).
    let mut by_id = password_body(&o, &o.password, None);
    by_id["auth"]["identity"]["password"]["user"]["domain"] = json!({"id": "default"});
    let reply = issue(&ks, by_id).await;
    assert_eq!(reply.status, 201);
    assert!(reply.body["token"].get("catalog").is_none());
    assert_eq!(ks.tokens_issued(), 2);
    assert_eq!(ks.unauthorized_responses(), 0);

    // GET /v3: the version document.
    let reply = call(Method::GET, &ks.auth_url(), &[], None).await;
    assert_eq!(reply.body["version"]["id"], "v3.14");
}

#[tokio::test]
async fn wrong_or_malformed_credentials_are_refused() {
    let ks = FakeKeystone::start(Options::default()).await;
    let o = ks.options().clone();
    let scope = Some(project_scope(&o));
    assert!(is_keystone_401(
        &issue(&ks, password_body(&o, "wrong", scope.clone())).await
    ));
    let mut other_domain = password_body(&o, &o.password, scope.clone());
    other_domain["auth"]["identity"]["password"]["user"]["domain"] = json!({"name": "Other"});
    assert!(is_keystone_401(&issue(&ks, other_domain).await));
    let other_project = json!({"project": {"name": "admin", "domain": {"name": "Default"}}});
    assert!(is_keystone_401(
        &issue(&ks, password_body(&o, &o.password, Some(other_project))).await
    ));
    assert_eq!(ks.unauthorized_responses(), 3);

    for bad in [json!({}), json!({"auth": {"identity": {}}})] {
        assert_eq!(issue(&ks, bad).await.status, 400);
    }
    let url = format!("{}/auth/tokens", ks.auth_url());
    let reply = call(Method::PUT, &url, &[], None).await;
    assert_eq!(reply.status, 405);
    assert_eq!(ks.tokens_issued(), 0);
}

#[tokio::test]
async fn application_credentials() {
    let ks = FakeKeystone::start(Options::default()).await;
    let o = ks.options().clone();
    let body = |secret: &str| {
        json!({"auth": {"identity": {"methods": ["application_credential"],
            "application_credential": {"id": o.app_cred_id, "secret": secret}}}})
    };
    let reply = issue(&ks, body(&o.app_cred_secret)).await;
    assert_eq!(reply.status, 201);
    assert_eq!(
        reply.body["token"]["application_credential"]["id"],
        o.app_cred_id
    );
    assert!(reply.body["token"]["catalog"].is_array());
    assert!(is_keystone_401(&issue(&ks, body("wrong")).await));
    // Application credentials carry their scope: asking for one is refused.
    let mut scoped = body(&o.app_cred_secret);
    scoped["auth"]["scope"] = project_scope(&o);
    assert!(is_keystone_401(&issue(&ks, scoped).await));
    assert_eq!(ks.tokens_issued(), 1);
}

#[tokio::test]
async fn the_guard_relays_only_valid_tokens() {
    let upstream = Upstream::start().await;
    let ks = FakeKeystone::start(Options {
        upstream: Some(upstream.url()),
        ..Options::default()
    })
    .await;
    let url = format!("{}/v2/lbaas/loadbalancers?limit=5", ks.octavia_url());

    // No token, or one the fake never issued: keystonemiddleware's 401.
    let reply = call(Method::GET, &url, &[], None).await;
    assert!(is_keystone_401(&reply));
    assert_eq!(
        reply.header("www-authenticate"),
        Some(format!("Keystone uri=\"{}\"", ks.url()).as_str())
    );
    let reply = call(
        Method::GET,
        &url,
        &[("X-Auth-Token", "gAAAAABforged")],
        None,
    )
    .await;
    assert!(is_keystone_401(&reply));
    assert!(upstream.requests().is_empty());

    // A valid token: relayed without the prefix, identity headers set by
    // the guard (a client's own X-Roles is dropped).
    let token = token(&ks).await;
    let headers = [("X-Auth-Token", token.as_str()), ("X-Roles", "spoofed")];
    let reply = call(Method::GET, &url, &headers, None).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, json!({"loadbalancers": []}));
    let seen = &upstream.requests()[0];
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.path, "/v2/lbaas/loadbalancers?limit=5");
    assert_eq!(seen.token.as_deref(), Some(token.as_str()));
    assert_eq!(seen.header("x-roles"), Some("admin,member"));
    assert_eq!(seen.header("x-project-id"), Some(ks.project_id()));
    assert_eq!(seen.header("x-identity-status"), Some("Confirmed"));

    // The upstream's errors come back as they are.
    let missing = format!("{}/v2/lbaas/pools/nope", ks.octavia_url());
    let reply = call(Method::GET, &missing, &[("X-Auth-Token", &token)], None).await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.body["faultcode"], "Client");
    assert_eq!(ks.forwarded(), 2);
    assert_eq!(ks.unauthorized_responses(), 2);

    // Without an upstream: 503.
    ks.set_upstream(None);
    let reply = call(Method::GET, &url, &[("X-Auth-Token", &token)], None).await;
    assert_eq!(reply.status, 503);
}

#[tokio::test]
async fn tokens_expire_and_can_be_revoked() {
    let upstream = Upstream::start().await;
    let ks = FakeKeystone::start(Options {
        ttl: Duration::from_millis(800),
        upstream: Some(upstream.url()),
        ..Options::default()
    })
    .await;
    let url = format!("{}/v2/lbaas/loadbalancers", ks.octavia_url());
    let get = |token: String| {
        let url = url.clone();
        async move { call(Method::GET, &url, &[("X-Auth-Token", &token)], None).await }
    };

    let old = token(&ks).await;
    assert_eq!(get(old.clone()).await.status, 200);
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(is_keystone_401(&get(old).await));

    // revoke_all: every token issued so far; new ones work.
    let a = token(&ks).await;
    let b = token(&ks).await;
    ks.revoke_all();
    assert!(is_keystone_401(&get(a).await));
    assert!(is_keystone_401(&get(b).await));
    let c = token(&ks).await;
    assert_eq!(get(c.clone()).await.status, 200);

    // Validate and revoke one token through the API.
    let d = token(&ks).await;
    let tokens_url = format!("{}/auth/tokens", ks.auth_url());
    let headers = [
        ("X-Auth-Token", c.as_str()),
        ("X-Subject-Token", d.as_str()),
    ];
    let reply = call(Method::GET, &tokens_url, &headers, None).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-subject-token"), Some(d.as_str()));
    assert_eq!(reply.body["token"]["project"]["id"], ks.project_id());
    assert_eq!(
        call(Method::DELETE, &tokens_url, &headers, None)
            .await
            .status,
        204
    );
    assert!(is_keystone_401(&get(d.clone()).await));
    assert_eq!(
        call(Method::GET, &tokens_url, &headers, None).await.status,
        404
    );
    assert_eq!(ks.tokens_issued(), 5);
    assert_eq!(ks.unauthorized_responses(), 4);
    assert_eq!(upstream.requests().len(), 2);
}
