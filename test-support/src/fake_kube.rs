//! A fake Kubernetes API server for lb-agent's tests: no kube-apiserver can
//! run on these machines, so this serves the published API shapes for the
//! resources lb-agent uses, in memory, over HTTP on 127.0.0.1.
//!
//! What it does like a real apiserver (and strictly: whatever a real one
//! would reject, it rejects):
//! * one resourceVersion counter for all objects; list with `limit` and
//!   `continue`, `resourceVersion`, `resourceVersionMatch`, `labelSelector`
//!   (`k=v`, `k`), `fieldSelector` (`metadata.name`, `metadata.namespace`);
//! * watch streams of ADDED / MODIFIED / DELETED / BOOKMARK events from a
//!   history; resuming from a version older than the last compaction gets
//!   an ERROR event with a `410 Expired` Status, as does a `continue` token
//!   from before it; `timeoutSeconds` ends a stream;
//! * PATCH with JSON merge patch or JSON patch (with `test`) only; a patch
//!   of the object never changes its status and a patch of `/status` changes
//!   nothing else; a stale `metadata.resourceVersion` is a 409 Conflict;
//! * deletion with finalizers: `deletionTimestamp` first, the object goes
//!   once a patch empties `metadata.finalizers`; adding a finalizer to an
//!   object being deleted is refused;
//! * events.k8s.io/v1 Events with their required fields checked;
//! * a bearer token on every request (401 without), unknown query
//!   parameters and unknown paths answered 400 and 404 with a Status.
//!
//! Tests drive it with plain methods (`apply_service`, `delete_service`,
//! `drop_watches`, `compact`...) and read back what clients did
//! (`status_updates`, `events`).

// Handlers return ready HTTP error responses as their `Err`; this is test
// code, where their size does not matter.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Request, Response};
use serde_json::{json, Value};
use tokio::sync::watch;

/// A response body: a whole JSON document, or a watch stream.
type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// The resources served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Service,
    Node,
    EndpointSlice,
    Event,
}

impl Kind {
    fn kind(self) -> &'static str {
        match self {
            Kind::Service => "Service",
            Kind::Node => "Node",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Event => "Event",
        }
    }

    fn api_version(self) -> &'static str {
        match self {
            Kind::Service | Kind::Node => "v1",
            Kind::EndpointSlice => "discovery.k8s.io/v1",
            Kind::Event => "events.k8s.io/v1",
        }
    }

    fn namespaced(self) -> bool {
        self != Kind::Node
    }
}

type Key = (Kind, String, String);

/// One change, as watch streams send it.
#[derive(Clone)]
struct Change {
    rv: u64,
    kind: Kind,
    event: &'static str,
    object: Value,
}

#[derive(Default)]
struct State {
    rv: u64,
    /// Watches and continue tokens from before this version get 410.
    compacted: u64,
    objects: BTreeMap<Key, Value>,
    history: Vec<Change>,
    status_updates: Vec<(String, Value)>,
    requests: Vec<String>,
    uid: u64,
}

/// The fake API server; stops when dropped.
pub struct FakeKube {
    addr: SocketAddr,
    token: String,
    state: Arc<Mutex<State>>,
    /// Wakes watch streams: the current resourceVersion.
    changed: watch::Sender<u64>,
    /// Bumped by [`FakeKube::drop_watches`]: open streams end.
    cut: watch::Sender<u64>,
    kubeconfig: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct Shared {
    token: String,
    state: Arc<Mutex<State>>,
    changed: watch::Sender<u64>,
    cut: watch::Sender<u64>,
}

impl FakeKube {
    pub async fn start() -> FakeKube {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake apiserver");
        let addr = listener.local_addr().expect("addr");
        let token = format!("fake-token-{}", std::process::id());
        let shared = Shared {
            token: token.clone(),
            state: Arc::new(Mutex::new(State {
                rv: 100,
                ..State::default()
            })),
            changed: watch::channel(100).0,
            cut: watch::channel(0).0,
        };
        let serving = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let shared = serving.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(handle(&shared, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(conn), service)
                        .await;
                });
            }
        });
        let kubeconfig = crate::scratch_dir().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    \
                 server: http://{addr}\nusers:\n- name: agent\n  user:\n    token: {token}\n\
                 contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: agent\n\
                 current-context: fake\n"
            ),
        )
        .expect("kubeconfig");
        FakeKube {
            addr,
            token,
            state: shared.state,
            changed: shared.changed,
            cut: shared.cut,
            kubeconfig,
            task,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// A kubeconfig for this server (plain HTTP, the bearer token).
    pub fn kubeconfig(&self) -> PathBuf {
        self.kubeconfig.clone()
    }

    fn shared(&self) -> Shared {
        Shared {
            token: self.token.clone(),
            state: Arc::clone(&self.state),
            changed: self.changed.clone(),
            cut: self.cut.clone(),
        }
    }

    /// Creates or replaces a Service (its status is kept unless `service`
    /// has one).
    pub fn apply_service(&self, service: Value) {
        self.shared().apply(Kind::Service, service);
    }

    pub fn apply_node(&self, node: Value) {
        self.shared().apply(Kind::Node, node);
    }

    pub fn apply_endpointslice(&self, slice: Value) {
        self.shared().apply(Kind::EndpointSlice, slice);
    }

    /// Deletes like `kubectl delete`: with finalizers, the object only gets
    /// a deletionTimestamp until they are gone.
    pub fn delete_service(&self, ns: &str, name: &str) {
        self.shared()
            .delete(&(Kind::Service, ns.into(), name.into()));
    }

    pub fn delete_node(&self, name: &str) {
        self.shared()
            .delete(&(Kind::Node, String::new(), name.into()));
    }

    pub fn service(&self, ns: &str, name: &str) -> Option<Value> {
        self.get(&(Kind::Service, ns.into(), name.into()))
    }

    fn get(&self, key: &Key) -> Option<Value> {
        let state = self.state.lock().expect("state");
        state.objects.get(key).map(|o| with_kind(key.0, o))
    }

    /// Every Event clients created (events.k8s.io/v1 shape).
    pub fn events(&self) -> Vec<Value> {
        let state = self.state.lock().expect("state");
        state
            .objects
            .iter()
            .filter(|((kind, _, _), _)| *kind == Kind::Event)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Bodies of every accepted status patch of `ns/name`.
    pub fn status_updates(&self, ns: &str, name: &str) -> Vec<Value> {
        let key = format!("{ns}/{name}");
        let state = self.state.lock().expect("state");
        state
            .status_updates
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// `METHOD path?query` of every request, in order.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().expect("state").requests.clone()
    }

    /// Forgets the history: resuming a watch from any version handed out so
    /// far, or a `continue` token from before now, gets `410 Gone`.
    pub fn compact(&self) {
        let mut state = self.state.lock().expect("state");
        // Every version handed out so far is now too old to resume from.
        state.compacted = state.rv + 1;
        state.history.clear();
    }

    /// Ends every open watch stream at once, without a final event.
    pub fn drop_watches(&self) {
        self.cut.send_modify(|n| *n += 1);
    }
}

impl Shared {
    fn apply(&self, kind: Kind, mut object: Value) {
        let ns = if kind.namespaced() {
            object["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_owned()
        } else {
            String::new()
        };
        let name = object["metadata"]["name"]
            .as_str()
            .expect("objects need a name")
            .to_owned();
        let key = (kind, ns.clone(), name);
        let mut state = self.state.lock().expect("state");
        let old = state.objects.get(&key).cloned();
        let meta = &mut object["metadata"];
        if kind.namespaced() {
            meta["namespace"] = json!(ns);
        }
        match &old {
            Some(old) => {
                for field in [
                    "uid",
                    "creationTimestamp",
                    "finalizers",
                    "deletionTimestamp",
                ] {
                    if meta.get(field).is_none() && !old["metadata"][field].is_null() {
                        meta[field] = old["metadata"][field].clone();
                    }
                }
                if object.get("status").is_none() && old.get("status").is_some() {
                    object["status"] = old["status"].clone();
                }
            }
            None => {
                state.uid += 1;
                meta["uid"] = json!(format!("00000000-0000-0000-0000-{:012}", state.uid));
                if meta.get("creationTimestamp").is_none() {
                    meta["creationTimestamp"] = json!(timestamp(state.uid));
                }
            }
        }
        let event = if old.is_some() { "MODIFIED" } else { "ADDED" };
        commit(&mut state, &self.changed, key, object, event);
    }

    fn delete(&self, key: &Key) {
        let mut state = self.state.lock().expect("state");
        let Some(mut object) = state.objects.get(key).cloned() else {
            return;
        };
        let has_finalizers = object["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if has_finalizers {
            object["metadata"]["deletionTimestamp"] = json!(timestamp(state.rv));
            object["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            commit(&mut state, &self.changed, key.clone(), object, "MODIFIED");
        } else {
            remove(&mut state, &self.changed, key);
        }
    }
}

/// Stores `object` at the next resourceVersion and records the change.
fn commit(
    state: &mut State,
    changed: &watch::Sender<u64>,
    key: Key,
    mut object: Value,
    event: &'static str,
) -> Value {
    state.rv += 1;
    object["metadata"]["resourceVersion"] = json!(state.rv.to_string());
    let rv = state.rv;
    state.history.push(Change {
        rv,
        kind: key.0,
        event,
        object: with_kind(key.0, &object),
    });
    state.objects.insert(key, object.clone());
    changed.send_replace(rv);
    object
}

fn remove(state: &mut State, changed: &watch::Sender<u64>, key: &Key) {
    if let Some(mut object) = state.objects.remove(key) {
        state.rv += 1;
        object["metadata"]["resourceVersion"] = json!(state.rv.to_string());
        let rv = state.rv;
        state.history.push(Change {
            rv,
            kind: key.0,
            event: "DELETED",
            object: with_kind(key.0, &object),
        });
        changed.send_replace(rv);
    }
}

fn with_kind(kind: Kind, object: &Value) -> Value {
    let mut object = object.clone();
    object["kind"] = json!(kind.kind());
    object["apiVersion"] = json!(kind.api_version());
    object
}

/// An RFC 3339 time that grows with `n` (creation order).
fn timestamp(n: u64) -> String {
    format!(
        "2026-01-01T{:02}:{:02}:{:02}Z",
        (n / 3600) % 24,
        (n / 60) % 60,
        n % 60
    )
}

// ------------------------------------------------------------- requests

/// What a request is about, parsed from its path.
struct Target {
    kind: Kind,
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
}

fn parse_path(path: &str) -> Option<Target> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group_len, rest) = match parts.as_slice() {
        ["api", "v1", rest @ ..] => (2, rest),
        ["apis", "discovery.k8s.io", "v1", rest @ ..] => (3, rest),
        ["apis", "events.k8s.io", "v1", rest @ ..] => (3, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        rest => (None, rest),
    };
    let (resource, name, status) = match rest {
        [resource] => (*resource, None, false),
        [resource, name] => (*resource, Some(name.to_string()), false),
        [resource, name, "status"] => (*resource, Some(name.to_string()), true),
        _ => return None,
    };
    let kind = match (group_len, parts.get(1).copied(), resource) {
        (2, _, "services") => Kind::Service,
        (2, _, "nodes") => Kind::Node,
        (3, Some("discovery.k8s.io"), "endpointslices") => Kind::EndpointSlice,
        (3, Some("events.k8s.io"), "events") => Kind::Event,
        _ => return None,
    };
    if !kind.namespaced() && namespace.is_some() {
        return None;
    }
    if status && kind != Kind::Service {
        return None;
    }
    Some(Target {
        kind,
        namespace,
        name,
        status,
    })
}

async fn handle(shared: &Shared, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query: Vec<(String, String)> = req.uri().query().map(form_pairs).unwrap_or_default();
    shared
        .state
        .lock()
        .expect("state")
        .requests
        .push(format!("{method} {}", req.uri()));
    let authorized = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        == Some(format!("Bearer {}", shared.token).as_str());
    if !authorized {
        return status(401, "Unauthorized", "Unauthorized");
    }
    let Some(target) = parse_path(&path) else {
        return status(
            404,
            "NotFound",
            &format!("the server could not find the requested resource ({path})"),
        );
    };
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return status(400, "BadRequest", "cannot read the body"),
    };
    let params: BTreeMap<String, String> = query.into_iter().collect();
    match (method.as_str(), &target.name) {
        ("GET", None) if params.get("watch").is_some_and(|w| w == "true" || w == "1") => {
            watch_stream(shared, &target, &params)
        }
        ("GET", None) => list(shared, &target, &params),
        ("GET", Some(name)) => get(shared, &target, name, &params),
        ("PATCH", Some(name)) => patch(shared, &target, name, &params, &content_type, &body),
        ("POST", None) if target.kind == Kind::Event => {
            create_event(shared, &target, &params, &body)
        }
        _ => status(
            405,
            "MethodNotAllowed",
            &format!("{method} is not supported on {path}"),
        ),
    }
}

/// `a=b&c=d` with percent-decoding.
fn form_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Refuses query parameters a real server would not accept here.
fn check_params(params: &BTreeMap<String, String>, allowed: &[&str]) -> Result<(), Response<Body>> {
    match params.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(status(
            400,
            "BadRequest",
            &format!("unknown query parameter {k:?}"),
        )),
        None => Ok(()),
    }
}

const LIST_PARAMS: &[&str] = &[
    "limit",
    "continue",
    "resourceVersion",
    "resourceVersionMatch",
    "labelSelector",
    "fieldSelector",
    "timeoutSeconds",
    "pretty",
];
const WATCH_PARAMS: &[&str] = &[
    "watch",
    "resourceVersion",
    "resourceVersionMatch",
    "labelSelector",
    "fieldSelector",
    "timeoutSeconds",
    "allowWatchBookmarks",
    "sendInitialEvents",
];

/// Label and field selectors of a list or watch.
struct Selector {
    labels: Vec<(String, Option<String>)>,
    fields: Vec<(String, String)>,
}

impl Selector {
    fn parse(params: &BTreeMap<String, String>) -> Result<Selector, Response<Body>> {
        let mut labels = Vec::new();
        for term in params
            .get("labelSelector")
            .map(String::as_str)
            .unwrap_or("")
            .split(',')
        {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            match term.split_once('=') {
                Some((k, v)) => labels.push((
                    k.trim_end_matches('=').to_owned(),
                    Some(v.trim_start_matches('=').to_owned()),
                )),
                None if term
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "./-_".contains(c)) =>
                {
                    labels.push((term.to_owned(), None))
                }
                None => {
                    return Err(status(
                        400,
                        "BadRequest",
                        &format!("unsupported label selector {term:?}"),
                    ))
                }
            }
        }
        let mut fields = Vec::new();
        for term in params
            .get("fieldSelector")
            .map(String::as_str)
            .unwrap_or("")
            .split(',')
        {
            if term.is_empty() {
                continue;
            }
            match term.split_once('=') {
                Some((k @ ("metadata.name" | "metadata.namespace"), v)) => {
                    fields.push((k.to_owned(), v.trim_start_matches('=').to_owned()))
                }
                _ => {
                    return Err(status(
                        400,
                        "BadRequest",
                        &format!("field label not supported: {term}"),
                    ))
                }
            }
        }
        Ok(Selector { labels, fields })
    }

    fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        self.labels.iter().all(|(k, v)| match v {
            Some(v) => labels[k].as_str() == Some(v.as_str()),
            None => !labels[k].is_null(),
        }) && self.fields.iter().all(|(k, v)| {
            let field = if k == "metadata.name" {
                "name"
            } else {
                "namespace"
            };
            object["metadata"][field].as_str() == Some(v.as_str())
        })
    }
}

fn in_scope(target: &Target, kind: Kind, ns: &str) -> bool {
    kind == target.kind && target.namespace.as_deref().is_none_or(|t| t == ns)
}

fn list(shared: &Shared, target: &Target, params: &BTreeMap<String, String>) -> Response<Body> {
    if let Err(r) = check_params(params, LIST_PARAMS) {
        return r;
    }
    if params.contains_key("resourceVersionMatch") && !params.contains_key("resourceVersion") {
        return status(
            422,
            "Invalid",
            "resourceVersionMatch is forbidden unless resourceVersion is provided",
        );
    }
    if params.contains_key("continue") && params.contains_key("resourceVersion") {
        return status(
            422,
            "Invalid",
            "specifying resource version is not allowed when using continue",
        );
    }
    let selector = match Selector::parse(params) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let state = shared.state.lock().expect("state");
    let (start, list_rv) = match params.get("continue") {
        Some(token) => match token
            .split_once(':')
            .and_then(|(rv, i)| Some((rv.parse::<u64>().ok()?, i.parse::<usize>().ok()?)))
        {
            Some((rv, _)) if rv < state.compacted => {
                return status(410, "Expired", "The provided continue parameter is too old")
            }
            Some((rv, i)) => (i, rv),
            None => return status(400, "BadRequest", "invalid continue token"),
        },
        None => (0, state.rv),
    };
    let items: Vec<Value> = state
        .objects
        .iter()
        .filter(|((kind, ns, _), o)| in_scope(target, *kind, ns) && selector.matches(o))
        .map(|(_, o)| o.clone())
        .collect();
    let limit = params
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let page: Vec<Value> = items.iter().skip(start).take(limit).cloned().collect();
    let mut metadata = json!({"resourceVersion": list_rv.to_string()});
    if start + page.len() < items.len() {
        metadata["continue"] = json!(format!("{list_rv}:{}", start + page.len()));
    }
    document(
        200,
        &json!({
            "kind": format!("{}List", target.kind.kind()),
            "apiVersion": target.kind.api_version(),
            "metadata": metadata,
            "items": page,
        }),
    )
}

fn get(
    shared: &Shared,
    target: &Target,
    name: &str,
    params: &BTreeMap<String, String>,
) -> Response<Body> {
    if let Err(r) = check_params(params, &["resourceVersion", "pretty"]) {
        return r;
    }
    let key = (
        target.kind,
        target.namespace.clone().unwrap_or_default(),
        name.to_owned(),
    );
    match shared.state.lock().expect("state").objects.get(&key) {
        Some(o) => document(200, &with_kind(target.kind, o)),
        None => not_found(target.kind, name),
    }
}

fn watch_stream(
    shared: &Shared,
    target: &Target,
    params: &BTreeMap<String, String>,
) -> Response<Body> {
    if let Err(r) = check_params(params, WATCH_PARAMS) {
        return r;
    }
    if params.get("sendInitialEvents").is_some_and(|v| v == "true") {
        return status(
            422,
            "Invalid",
            "sendInitialEvents is not enabled on this server",
        );
    }
    let selector = match Selector::parse(params) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let bookmarks = params
        .get("allowWatchBookmarks")
        .is_some_and(|v| v == "true");
    let timeout = params
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let mut from: u64;
    let initial: Vec<Value>;
    {
        let state = shared.state.lock().expect("state");
        let requested = params
            .get("resourceVersion")
            .map(String::as_str)
            .unwrap_or("");
        match requested {
            // "" or "0": the current state as ADDED, then changes.
            "" | "0" => {
                from = state.rv;
                initial = state
                    .objects
                    .iter()
                    .filter(|((kind, ns, _), o)| in_scope(target, *kind, ns) && selector.matches(o))
                    .map(
                        |((kind, _, _), o)| json!({"type": "ADDED", "object": with_kind(*kind, o)}),
                    )
                    .collect();
            }
            rv => match rv.parse::<u64>() {
                Ok(rv) if rv < state.compacted => {
                    initial = vec![
                        json!({"type": "ERROR", "object": status_object(410, "Expired", &format!("too old resource version: {rv} ({})", state.compacted))}),
                    ];
                    let _ = tx.try_send(Bytes::from(format!("{}\n", initial[0])));
                    drop(tx);
                    return streaming(rx);
                }
                Ok(rv) => {
                    from = rv;
                    initial = Vec::new();
                }
                Err(_) => {
                    return status(
                        400,
                        "BadRequest",
                        &format!("invalid resourceVersion {rv:?}"),
                    )
                }
            },
        }
    }
    let state = Arc::clone(&shared.state);
    let mut changed = shared.changed.subscribe();
    let mut cut = shared.cut.subscribe();
    let kind = target.kind;
    let namespace = target.namespace.clone();
    tokio::spawn(async move {
        for event in initial {
            if tx.send(Bytes::from(format!("{event}\n"))).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut bookmark = tokio::time::interval(Duration::from_secs(1));
        loop {
            let pending: Option<Vec<Change>> = {
                let state = state.lock().expect("state");
                (from >= state.compacted).then(|| {
                    state
                        .history
                        .iter()
                        .filter(|c| c.rv > from)
                        .cloned()
                        .collect()
                })
            };
            let Some(pending) = pending else {
                let gone = json!({"type": "ERROR", "object": status_object(410, "Expired", "too old resource version")});
                let _ = tx.send(Bytes::from(format!("{gone}\n"))).await;
                return;
            };
            for change in pending {
                from = change.rv;
                let ns = change.object["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("");
                let scope = Target {
                    kind,
                    namespace: namespace.clone(),
                    name: None,
                    status: false,
                };
                if !in_scope(&scope, change.kind, ns) || !selector.matches(&change.object) {
                    continue;
                }
                let line = json!({"type": change.event, "object": change.object});
                if tx.send(Bytes::from(format!("{line}\n"))).await.is_err() {
                    return;
                }
            }
            tokio::select! {
                _ = changed.changed() => {}
                _ = cut.changed() => return,
                _ = tokio::time::sleep_until(deadline) => return,
                _ = bookmark.tick(), if bookmarks => {
                    let mark = json!({"type": "BOOKMARK", "object": {
                        "kind": kind.kind(), "apiVersion": kind.api_version(),
                        "metadata": {"resourceVersion": from.to_string()}}});
                    if tx.send(Bytes::from(format!("{mark}\n"))).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    streaming(rx)
}

fn streaming(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Response<Body> {
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().expect("header"));
    response
}

fn patch(
    shared: &Shared,
    target: &Target,
    name: &str,
    params: &BTreeMap<String, String>,
    content_type: &str,
    body: &[u8],
) -> Response<Body> {
    if let Err(r) = check_params(
        params,
        &[
            "fieldManager",
            "fieldValidation",
            "dryRun",
            "force",
            "pretty",
        ],
    ) {
        return r;
    }
    let patch: Value = match serde_json::from_slice(body) {
        Ok(p) => p,
        Err(e) => return status(400, "BadRequest", &format!("the patch is not JSON: {e}")),
    };
    let key = (
        target.kind,
        target.namespace.clone().unwrap_or_default(),
        name.to_owned(),
    );
    let mut state = shared.state.lock().expect("state");
    let Some(old) = state.objects.get(&key).cloned() else {
        return not_found(target.kind, name);
    };
    let mut new = old.clone();
    let media = content_type.split(';').next().unwrap_or("").trim();
    let applied = match media {
        "application/merge-patch+json" => {
            merge_patch(&mut new, &patch);
            Ok(())
        }
        "application/json-patch+json" => json_patch(&mut new, &patch),
        "application/strategic-merge-patch+json" | "application/apply-patch+yaml" => Err(status(
            415,
            "UnsupportedMediaType",
            &format!("the fake supports merge and JSON patches, not {media}"),
        )),
        other => Err(status(415, "UnsupportedMediaType", &format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {other:?})"))),
    };
    if let Err(r) = applied {
        return r;
    }
    if let Some(rv) = new["metadata"]["resourceVersion"].as_str() {
        if Some(rv) != old["metadata"]["resourceVersion"].as_str() {
            return status(409, "Conflict", &format!("Operation cannot be fulfilled on {} {name:?}: the object has been modified; please apply your changes to the latest version and try again", target.kind.kind()));
        }
    }
    // The subresource decides what may change.
    if target.status {
        let status_part = new.get("status").cloned();
        new = old.clone();
        match status_part {
            Some(s) => new["status"] = s,
            None => {
                if let Some(map) = new.as_object_mut() {
                    map.remove("status");
                }
            }
        }
    } else {
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(map) = new.as_object_mut() {
                    map.remove("status");
                }
            }
        }
        for field in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "namespace",
            "name",
        ] {
            new["metadata"][field] = old["metadata"][field].clone();
        }
    }
    let deleting = !old["metadata"]["deletionTimestamp"].is_null();
    if deleting
        && finalizers(&new)
            .iter()
            .any(|f| !finalizers(&old).contains(f))
    {
        return status(422, "Invalid", "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted");
    }
    if target.status {
        let id = format!("{}/{}", key.1, key.2);
        state.status_updates.push((id, patch.clone()));
    }
    if deleting && finalizers(&new).is_empty() {
        remove(&mut state, &shared.changed, &key);
        return document(200, &with_kind(target.kind, &new));
    }
    let stored = commit(&mut state, &shared.changed, key, new, "MODIFIED");
    document(200, &with_kind(target.kind, &stored))
}

/// RFC 7386.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Some(patch_map) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let map = target.as_object_mut().expect("object");
    for (k, v) in patch_map {
        if v.is_null() {
            map.remove(k);
        } else {
            merge_patch(map.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// RFC 6902: add, remove, replace, test.
fn json_patch(target: &mut Value, ops: &Value) -> Result<(), Response<Body>> {
    let invalid = |m: &str| status(422, "Invalid", m);
    let Some(ops) = ops.as_array() else {
        return Err(status(
            400,
            "BadRequest",
            "a JSON patch is an array of operations",
        ));
    };
    for op in ops {
        let path = op["path"]
            .as_str()
            .ok_or_else(|| invalid("op without path"))?;
        let pointer_ok = path.is_empty() || path.starts_with('/');
        if !pointer_ok {
            return Err(invalid("path is not a JSON pointer"));
        }
        let (parent, last) = path.rsplit_once('/').unwrap_or(("", ""));
        let last = last.replace("~1", "/").replace("~0", "~");
        match op["op"].as_str() {
            Some("test") => {
                if target.pointer(path) != Some(&op["value"]) {
                    return Err(invalid(&format!("the test operation on {path} failed")));
                }
            }
            Some("remove") => {
                let container = target
                    .pointer_mut(parent)
                    .ok_or_else(|| invalid("no such path"))?;
                let removed = match container {
                    Value::Object(m) => m.remove(&last).is_some(),
                    Value::Array(a) => last
                        .parse::<usize>()
                        .ok()
                        .filter(|i| *i < a.len())
                        .map(|i| a.remove(i))
                        .is_some(),
                    _ => false,
                };
                if !removed {
                    return Err(invalid(&format!("nothing to remove at {path}")));
                }
            }
            Some(kind @ ("add" | "replace")) => {
                let value = op
                    .get("value")
                    .cloned()
                    .ok_or_else(|| invalid("op without value"))?;
                let container = target
                    .pointer_mut(parent)
                    .ok_or_else(|| invalid("no such path"))?;
                match container {
                    Value::Object(m) => {
                        if kind == "replace" && !m.contains_key(&last) {
                            return Err(invalid(&format!("nothing to replace at {path}")));
                        }
                        m.insert(last, value);
                    }
                    Value::Array(a) if last == "-" && kind == "add" => a.push(value),
                    Value::Array(a) => {
                        let i = last
                            .parse::<usize>()
                            .ok()
                            .filter(|i| *i <= a.len())
                            .ok_or_else(|| invalid("bad array index"))?;
                        if kind == "add" {
                            a.insert(i, value);
                        } else if i < a.len() {
                            a[i] = value;
                        } else {
                            return Err(invalid("bad array index"));
                        }
                    }
                    _ => return Err(invalid("the parent is not a container")),
                }
            }
            other => return Err(invalid(&format!("unsupported op {other:?}"))),
        }
    }
    Ok(())
}

fn create_event(
    shared: &Shared,
    target: &Target,
    params: &BTreeMap<String, String>,
    body: &[u8],
) -> Response<Body> {
    if let Err(r) = check_params(
        params,
        &["fieldManager", "fieldValidation", "dryRun", "pretty"],
    ) {
        return r;
    }
    let Ok(mut event) = serde_json::from_slice::<Value>(body) else {
        return status(400, "BadRequest", "the Event is not JSON");
    };
    for field in [
        "eventTime",
        "reportingController",
        "reportingInstance",
        "action",
        "reason",
        "regarding",
    ] {
        if event[field].is_null() {
            return status(422, "Invalid", &format!("{field}: Required value"));
        }
    }
    if !matches!(event["type"].as_str(), Some("Normal" | "Warning")) {
        return status(422, "Invalid", "type: Unsupported value (Normal, Warning)");
    }
    let ns = target.namespace.clone().unwrap_or_default();
    let name = match event["metadata"]["name"].as_str() {
        Some(n) => n.to_owned(),
        None => return status(422, "Invalid", "metadata.name: Required value"),
    };
    let key = (Kind::Event, ns.clone(), name);
    let mut state = shared.state.lock().expect("state");
    if state.objects.contains_key(&key) {
        return status(409, "AlreadyExists", "the Event already exists");
    }
    event["metadata"]["namespace"] = json!(ns);
    let stored = commit(&mut state, &shared.changed, key, event, "ADDED");
    document(201, &with_kind(Kind::Event, &stored))
}

fn document(code: u16, value: &Value) -> Response<Body> {
    let mut response = Response::new(BodyExt::boxed(Full::new(Bytes::from(value.to_string()))));
    *response.status_mut() = hyper::StatusCode::from_u16(code).expect("status code");
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().expect("header"));
    response
}

fn status_object(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn status(code: u16, reason: &str, message: &str) -> Response<Body> {
    document(code, &status_object(code, reason, message))
}

fn not_found(kind: Kind, name: &str) -> Response<Body> {
    status(
        404,
        "NotFound",
        &format!("{} {name:?} not found", kind.kind().to_lowercase()),
    )
}

/// `metadata.finalizers` of an object.
pub fn finalizers(object: &Value) -> Vec<String> {
    object["metadata"]["finalizers"]
        .as_array()
        .map(|f| {
            f.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

// ------------------------------------------------------------- builders

/// A Service of type LoadBalancer: `ports` are (name, port, nodePort,
/// protocol).
pub fn service_lb(
    ns: &str,
    name: &str,
    ports: &[(&str, u16, u16, &str)],
    class: Option<&str>,
) -> Value {
    let ports: Vec<Value> = ports
        .iter()
        .map(|(n, port, node_port, protocol)| {
            json!({"name": n, "port": port, "targetPort": port, "nodePort": node_port, "protocol": protocol})
        })
        .collect();
    let mut spec = json!({
        "type": "LoadBalancer",
        "clusterIP": "10.96.0.10",
        "clusterIPs": ["10.96.0.10"],
        "externalTrafficPolicy": "Cluster",
        "sessionAffinity": "None",
        "ports": ports,
        "selector": {"app": name},
    });
    if let Some(class) = class {
        spec["loadBalancerClass"] = json!(class);
    }
    json!({"metadata": {"namespace": ns, "name": name, "labels": {"app": name}}, "spec": spec, "status": {"loadBalancer": {}}})
}

/// `service` with `externalTrafficPolicy: Local` and its health check port.
pub fn with_local_traffic(mut service: Value, health_check_node_port: u16) -> Value {
    service["spec"]["externalTrafficPolicy"] = json!("Local");
    service["spec"]["healthCheckNodePort"] = json!(health_check_node_port);
    service
}

/// A Node with an InternalIP and a Ready condition.
pub fn node(name: &str, internal_ip: &str, ready: bool) -> Value {
    json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}},
        "spec": {"podCIDR": "10.244.0.0/24"},
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": internal_ip},
                {"type": "Hostname", "address": name}
            ],
            "conditions": [{
                "type": "Ready",
                "status": if ready { "True" } else { "False" },
                "reason": if ready { "KubeletReady" } else { "KubeletNotReady" },
                "lastHeartbeatTime": "2026-01-01T00:00:00Z",
                "lastTransitionTime": "2026-01-01T00:00:00Z"
            }]
        }
    })
}

/// An EndpointSlice of `service` with ready endpoints at `addresses`.
pub fn endpointslice(ns: &str, name: &str, service: &str, addresses: &[&str], port: u16) -> Value {
    let endpoints: Vec<Value> = addresses
        .iter()
        .map(|a| json!({"addresses": [a], "conditions": {"ready": true, "serving": true, "terminating": false}}))
        .collect();
    json!({
        "metadata": {"namespace": ns, "name": name, "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}]
    })
}
