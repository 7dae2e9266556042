//! The admin HTTP server (hyper, HTTP/1.1, optional TLS): accepts on a TCP
//! or unix socket, routes requests, and enforces who may write.
//!
//! Routes (all listeners): `GET /` (stats page, `?refresh=N`),
//! `/stats.json`, `/stats.csv`, `/metrics`, `/healthz`. The admin listener
//! only, not the read-only stats one: `GET|PUT /api/config`,
//! `GET|PUT /api/pools/{pool}/members/{address}`.
//!
//! Writes (`PUT`) need a bearer token when `token_file` is set; without one
//! they are allowed only on a loopback or unix-socket bind.
//!
//! With `stats_users`, reads (`GET` of the stats page, JSON, CSV,
//! `/metrics` and the API; not `/healthz`) need HTTP basic auth with one
//! of them, on both listeners: else 401 with `WWW-Authenticate: Basic
//! realm="..."`. The API's reads are included because `GET /api/config`
//! shows the config, passwords included. The credentials are compared in
//! constant time, against every configured user.

use std::convert::Infallible;
use std::sync::Arc;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{
    HeaderValue, AUTHORIZATION, CACHE_CONTROL, CONNECTION, CONTENT_TYPE, WWW_AUTHENTICATE,
};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use lbd_config::StatsAuth;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Mutex;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use super::api::{self, ApiError};
use super::limit::{Phase, Slot, Tracker, BODY_TIMEOUT};
use super::stats::{RateTracker, Stats};
use super::stats_uri::{self, StatsRequest};
use super::watched::Watched;
use super::{csv, metrics, page, show_stat};
use crate::server::Server;

/// Largest accepted request body (a pushed config).
const MAX_BODY: usize = 16 * 1024 * 1024;

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Stats, metrics and the runtime API.
    Admin,
    /// Stats and metrics only (`stats_bind`).
    StatsOnly,
}

/// What every request handler shares.
pub struct Context {
    pub server: Arc<Server>,
    pub rates: RateTracker,
    /// The bearer token write requests must present, if configured.
    pub token: Option<String>,
    /// Whether the admin bind is loopback or a unix socket.
    pub local_bind: bool,
    /// Basic auth for reads, if `stats_users` is set.
    pub readers: Option<Readers>,
    /// Serializes read-modify-write changes of the running config.
    pub writes: Mutex<()>,
}

impl Context {
    pub fn new(
        server: Arc<Server>,
        token: Option<String>,
        local_bind: bool,
        stats_auth: Option<&StatsAuth>,
    ) -> Context {
        Context {
            server,
            rates: RateTracker::default(),
            token,
            local_bind,
            readers: stats_auth.map(Readers::new),
            writes: Mutex::new(()),
        }
    }
}

/// Who may read: the base64 `user:password` credentials a basic auth
/// header carries, and the challenge of a 401.
pub struct Readers {
    credentials: Vec<Vec<u8>>,
    challenge: HeaderValue,
}

impl Readers {
    fn new(auth: &StatsAuth) -> Readers {
        let credentials = auth
            .users
            .iter()
            .map(|u| base64(format!("{}:{}", u.user, u.password).as_bytes()).into_bytes())
            .collect();
        // The validator allows printable ASCII without '"' or '\\' only.
        let challenge = HeaderValue::from_str(&format!("Basic realm=\"{}\"", auth.realm))
            .unwrap_or_else(|_| HeaderValue::from_static("Basic realm=\"lbd statistics\""));
        Readers {
            credentials,
            challenge,
        }
    }

    /// Whether `header` (an Authorization value) names one of the users
    /// with its password. Every user is compared, each in constant time.
    fn admits(&self, header: Option<&HeaderValue>) -> bool {
        let Some((scheme, presented)) = header
            .map(HeaderValue::as_bytes)
            .and_then(|v| v.iter().position(|b| *b == b' ').map(|i| v.split_at(i)))
        else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case(b"basic") {
            return false;
        }
        let presented = presented.trim_ascii();
        self.credentials
            .iter()
            .fold(false, |ok, c| constant_time_eq(presented, c) | ok)
    }
}

/// Standard base64 with padding (RFC 4648), as clients encode basic auth.
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> shift) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Serves one accepted connection (TLS first when `tls` is set) until it
/// ends or its limiter closes it (timeout or eviction); the slot is
/// released when this returns.
pub async fn serve<S>(
    stream: S,
    ctx: Arc<Context>,
    role: Role,
    tls: Option<TlsAcceptor>,
    slot: Slot,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let tracker = slot.tracker();
    let stream = Watched::new(stream, tracker.clone());
    let work = async move {
        match tls {
            None => serve_http(stream, ctx, role, tracker).await,
            // The limiter bounds the handshake like a request head.
            Some(acceptor) => match acceptor.accept(stream).await {
                Ok(stream) => serve_http(stream, ctx, role, tracker).await,
                Err(e) => debug!("admin: TLS handshake failed: {e}"),
            },
        }
    };
    tokio::select! {
        () = work => {}
        why = slot.closed() => debug!("admin: connection closed: {why}"),
    }
}

async fn serve_http<S>(stream: S, ctx: Arc<Context>, role: Role, tracker: Tracker)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let ctx = Arc::clone(&ctx);
        let tracker = tracker.clone();
        tracker.set(Phase::Busy);
        async move {
            let reply = route(req, &ctx, role, &tracker).await;
            tracker.set(Phase::Idle);
            Ok::<_, Infallible>(reply)
        }
    });
    // hyper's own header timer would also cut keep-alive idle time to the
    // head timeout; the limiter times each phase instead.
    let result = hyper::server::conn::http1::Builder::new()
        .header_read_timeout(None)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(e) = result {
        debug!("admin: connection ended: {e}");
    }
}

type Reply = Response<Full<Bytes>>;

async fn route(req: Request<Incoming>, ctx: &Context, role: Role, conn: &Tracker) -> Reply {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    if let Some(readers) = &ctx.readers {
        let read = matches!(method, Method::GET | Method::HEAD);
        let open = segments == ["healthz"] || segments == ["ready"];
        if read && !open && !readers.admits(req.headers().get(AUTHORIZATION)) {
            let mut reply = error(&ApiError::new(401, "authentication required"));
            reply
                .headers_mut()
                .insert(WWW_AUTHENTICATE, readers.challenge.clone());
            return reply;
        }
    }
    if let Some(asked) = at_stats_uri(&req, ctx) {
        return stats_page(asked, &req, ctx);
    }
    match (&method, segments.as_slice()) {
        (&Method::GET, [""]) => {
            let refresh = refresh_param(req.uri().query());
            let stats = Stats::collect(ctx.server.shared(), &ctx.rates);
            text(
                200,
                "text/html; charset=utf-8",
                page::render(&stats, refresh),
            )
        }
        (&Method::GET, ["stats.json"]) => {
            json(200, &Stats::collect(ctx.server.shared(), &ctx.rates))
        }
        (&Method::GET, ["stats.csv"]) => {
            let stats = Stats::collect(ctx.server.shared(), &ctx.rates);
            text(200, "text/csv; charset=utf-8", csv::render(&stats))
        }
        (&Method::GET, ["metrics"]) => {
            let stats = Stats::collect(ctx.server.shared(), &ctx.rates);
            text(200, metrics::CONTENT_TYPE, metrics::render(&stats))
        }
        (&Method::GET, ["healthz"]) => text(200, "text/plain; charset=utf-8", "ok\n".to_owned()),
        (&Method::GET, ["ready"]) => {
            let answer = super::ready::PoolRule::from_query(req.uri().query()).map(|rule| {
                super::ready::verdict(&Stats::collect(ctx.server.shared(), &ctx.rates), rule)
            });
            match answer {
                Ok(Ok(())) => text(200, "text/plain; charset=utf-8", "ready\n".to_owned()),
                Ok(Err(why)) => text(
                    503,
                    "text/plain; charset=utf-8",
                    format!("not ready: {why}\n"),
                ),
                Err(bad) => error(&ApiError::new(400, bad)),
            }
        }
        (_, ["api", ..]) if role == Role::StatsOnly => error(&ApiError::new(
            403,
            "the runtime API is not served on stats_bind; use the admin bind",
        )),
        (_, ["api", "config"]) => config_route(req, ctx, conn).await,
        (_, ["api", "pools", pool, "members", address]) => {
            let (pool, address) = (pool.to_string(), address.to_string());
            member_route(req, ctx, conn, &pool, &address).await
        }
        (_, [""] | ["stats.json"] | ["stats.csv"] | ["metrics"] | ["healthz"] | ["ready"]) => {
            error(&ApiError::new(
                405,
                format!("{method} is not allowed on {path}"),
            ))
        }
        _ => error(&ApiError::new(404, format!("nothing at {path}"))),
    }
}

/// What a GET at the configured `stats uri` asks for (HAProxy's page and
/// its `;csv` / `;json` exports); `None` for every other request.
fn at_stats_uri(req: &Request<Incoming>, ctx: &Context) -> Option<StatsRequest> {
    if req.method() != Method::GET {
        return None;
    }
    let snapshot = ctx.server.shared().snapshot();
    let uri = &snapshot.config.admin.as_ref()?.stats_uri;
    let asked = req.uri().path_and_query().map_or("/", |p| p.as_str());
    stats_uri::classify(asked, uri)
}

fn stats_page(asked: StatsRequest, req: &Request<Incoming>, ctx: &Context) -> Reply {
    let stats = Stats::collect(ctx.server.shared(), &ctx.rates);
    match asked {
        StatsRequest::Page => text(
            200,
            "text/html; charset=utf-8",
            page::render(&stats, refresh_param(req.uri().query())),
        ),
        StatsRequest::Export(query) => text(
            200,
            stats_uri::content_type(query.format),
            show_stat::render(&stats, &query),
        ),
    }
}

async fn config_route(req: Request<Incoming>, ctx: &Context, conn: &Tracker) -> Reply {
    match *req.method() {
        Method::GET => json(200, &api::running_config(&ctx.server)),
        Method::PUT => {
            let toml = req
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("toml"));
            let body = match authorized_body(req, ctx, conn).await {
                Ok(body) => body,
                Err(e) => return e,
            };
            let _one_at_a_time = ctx.writes.lock().await;
            let result = match api::parse_config(&body, toml) {
                Ok(config) => api::replace_config(&ctx.server, config),
                Err(e) => {
                    // Counted like a SIGHUP with a bad file.
                    ctx.server.note_rejected_reload();
                    Err(e)
                }
            };
            log_write("PUT /api/config", &result);
            respond(result)
        }
        _ => error(&ApiError::new(405, "use GET or PUT on /api/config")),
    }
}

async fn member_route(
    req: Request<Incoming>,
    ctx: &Context,
    conn: &Tracker,
    pool: &str,
    address: &str,
) -> Reply {
    match *req.method() {
        Method::GET => {
            let stats = Stats::collect(ctx.server.shared(), &ctx.rates);
            let member = stats
                .pools
                .iter()
                .find(|p| p.name == pool)
                .and_then(|p| p.members.iter().find(|m| m.address == address));
            match member {
                Some(m) => json(200, m),
                None => error(&ApiError::new(
                    404,
                    format!("no member {address} in pool {pool:?}"),
                )),
            }
        }
        Method::PUT => {
            let body = match authorized_body(req, ctx, conn).await {
                Ok(body) => body,
                Err(e) => return e,
            };
            let _one_at_a_time = ctx.writes.lock().await;
            let result = api::change_member(&ctx.server, pool, address, &body);
            log_write(&format!("PUT member {pool}/{address}"), &result);
            respond(result)
        }
        _ => error(&ApiError::new(405, "use GET or PUT on a member")),
    }
}

/// Checks that this request may write, then reads its body, bounded in
/// size and in time (a body that never completes gets a 408). On an error
/// the reply to send; it closes the connection when the body was not read.
async fn authorized_body(
    req: Request<Incoming>,
    ctx: &Context,
    conn: &Tracker,
) -> Result<Bytes, Reply> {
    match &ctx.token {
        Some(token) => {
            let presented = req
                .headers()
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            if !presented.is_some_and(|p| constant_time_eq(p.as_bytes(), token.as_bytes())) {
                return Err(closing(error(&ApiError::new(
                    401,
                    "a valid bearer token is required to write",
                ))));
            }
        }
        None if !ctx.local_bind => {
            return Err(closing(error(&ApiError::new(
                403,
                "writes are refused: the admin bind is not loopback or a unix socket, and no \
                 token_file is configured",
            ))))
        }
        None => {}
    }
    conn.set(Phase::Body);
    let read = tokio::time::timeout(
        BODY_TIMEOUT,
        Limited::new(req.into_body(), MAX_BODY).collect(),
    );
    let body = read.await;
    conn.set(Phase::Busy);
    match body {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) => Err(closing(error(&ApiError::new(
            400,
            format!("cannot read the body (at most 16 MiB): {e}"),
        )))),
        Err(_) => Err(closing(error(&ApiError::new(
            408,
            format!(
                "the request body did not arrive within {} s",
                BODY_TIMEOUT.as_secs()
            ),
        )))),
    }
}

/// Marks a reply as the last on its connection: the request body it
/// answers was not (fully) read, so the connection cannot be reused.
fn closing(mut reply: Reply) -> Reply {
    reply
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    reply
}

/// Compares secrets without stopping at the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn log_write(what: &str, result: &Result<api::Applied, ApiError>) {
    match result {
        Ok(applied) => info!(
            "admin API {what}: applied, generation {}, listeners +{} -{}, members +{} -{}",
            applied.generation,
            applied.listeners_added,
            applied.listeners_removed,
            applied.members_added,
            applied.members_removed
        ),
        Err(e) => warn!("admin API {what}: rejected ({}): {}", e.status, e.error),
    }
}

/// `?refresh=N` with 1 <= N <= 3600.
fn refresh_param(query: Option<&str>) -> Option<u32> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("refresh="))
        .and_then(|v| v.parse().ok())
        .filter(|n| (1..=3600).contains(n))
}

fn respond(result: Result<api::Applied, ApiError>) -> Reply {
    match result {
        Ok(applied) => json(200, &applied),
        Err(e) => error(&e),
    }
}

fn error(e: &ApiError) -> Reply {
    json(e.status, e)
}

fn json(status: u16, value: &impl Serialize) -> Reply {
    match serde_json::to_string_pretty(value) {
        Ok(mut body) => {
            body.push('\n');
            text(status, "application/json", body)
        }
        Err(e) => text(500, "text/plain", format!("cannot encode JSON: {e}\n")),
    }
}

fn text(status: u16, content_type: &'static str, body: String) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from(body)));
    *reply.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = reply.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_parameter_is_bounded() {
        assert_eq!(refresh_param(Some("refresh=5")), Some(5));
        assert_eq!(refresh_param(Some("a=b&refresh=60")), Some(60));
        assert_eq!(refresh_param(Some("refresh=0")), None);
        assert_eq!(refresh_param(Some("refresh=99999")), None);
        assert_eq!(refresh_param(Some("refresh=x")), None);
        assert_eq!(refresh_param(None), None);
    }

    #[test]
    fn base64_of_basic_auth() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(
            base64(b"Aladdin:open sesame"),
            "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
    }

    #[test]
    fn readers_admit_their_users_only() {
        let auth = StatsAuth {
            users: vec![
                lbd_config::StatsUser {
                    user: "Aladdin".to_owned(),
                    password: "open sesame".to_owned(),
                },
                lbd_config::StatsUser {
                    user: "ops".to_owned(),
                    password: "pw".to_owned(),
                },
            ],
            realm: "My LB".to_owned(),
        };
        let readers = Readers::new(&auth);
        assert_eq!(readers.challenge, "Basic realm=\"My LB\"");
        let h = |v: &'static str| Some(HeaderValue::from_static(v));
        assert!(readers.admits(h("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==").as_ref()));
        assert!(readers.admits(h("basic  b3BzOnB3").as_ref()));
        assert!(!readers.admits(h("Basic b3BzOnB4").as_ref())); // ops:px
        assert!(!readers.admits(h("Bearer b3BzOnB3").as_ref()));
        assert!(!readers.admits(h("Basic").as_ref()));
        assert!(!readers.admits(h("Basic ").as_ref()));
        assert!(!readers.admits(None));
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}
