//! A small JSON-over-HTTP(S) client for Keystone and the Octavia API.
//!
//! One hyper (legacy pool) client with keep-alive connection reuse, rustls
//! with the ring provider for `https` URLs. Server certificates are checked
//! against, in this order of preference:
//! * nothing (`insecure`): any certificate is accepted, but the handshake
//!   signatures are still verified (the server must hold the certificate's
//!   key);
//! * the PEM `ca_file` only (like `requests`' `verify=<file>`);
//! * the system's CA store (`rustls-native-certs`). If it holds no usable
//!   certificate, `https` requests fail at once asking for a CA file.
//!
//! Every request, body included, is bounded by the client's timeout, and
//! response bodies by [`MAX_BODY`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE, USER_AGENT};
use hyper::{HeaderMap, Method, Request, Uri};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::crypto::ring;
use rustls::{ClientConfig, RootCertStore};
use serde::de::DeserializeOwned;
use tracing::{debug, warn};

/// Largest response body read (Octavia lists of a big deployment are a few
/// MiB).
pub const MAX_BODY: usize = 64 << 20;

/// How long an idle pooled connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(30);

/// How server certificates are verified.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// PEM CA certificates to trust instead of the system store.
    pub ca_file: Option<PathBuf>,
    /// Accept any server certificate (handshake signatures are still
    /// verified). Wins over `ca_file`.
    pub insecure: bool,
}

type Connector = HttpsConnector<HttpConnector>;

/// A cheap-to-clone client; clones share the connection pool.
#[derive(Clone)]
pub struct HttpClient {
    client: Client<Connector, Full<Bytes>>,
    timeout: Duration,
    /// Why `https` URLs cannot be used, when no CA is trusted at all.
    no_https: Option<Arc<str>>,
}

/// A whole response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl HttpClient {
    /// A client whose every request (connect, send, whole body) must finish
    /// within `timeout`. Fails on an unreadable or invalid `ca_file`.
    pub fn new(tls: &TlsOptions, timeout: Duration) -> anyhow::Result<Self> {
        let (config, no_https) = client_config(tls)?;
        let mut http = HttpConnector::new();
        // hyper-rustls handles the scheme; the inner connector must accept
        // `https` URIs.
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeout));
        let https = HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE)
            .build(https);
        Ok(HttpClient {
            client,
            timeout,
            no_https,
        })
    }

    /// Sends one request and reads the whole response. `headers` override
    /// the defaults (`Accept: application/json`, a `User-Agent`); a `body`
    /// is sent as JSON. Any HTTP status is a successful result: callers
    /// judge it. Errors name the method and URL, never header values.
    pub async fn request(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&serde_json::Value>,
    ) -> anyhow::Result<Response> {
        let what = format!("{method} {url}");
        let uri: Uri = url
            .parse()
            .with_context(|| format!("{what}: invalid URL"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                if let Some(why) = &self.no_https {
                    bail!("{what}: {why}");
                }
            }
            _ => bail!("{what}: not an http:// or https:// URL"),
        }
        if uri.host().is_none() {
            bail!("{what}: the URL has no host");
        }

        let mut req = Request::new(Full::new(match body {
            Some(v) => Bytes::from(serde_json::to_vec(v)?),
            None => Bytes::new(),
        }));
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        let h = req.headers_mut();
        h.insert(ACCEPT, HeaderValue::from_static("application/json"));
        h.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("lb-agent/", env!("CARGO_PKG_VERSION"))),
        );
        if body.is_some() {
            h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        for (name, value) in headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| anyhow!("{what}: invalid header name {name:?}"))?;
            // The value may be a secret (a token): never quote it.
            let mut value = HeaderValue::from_str(value)
                .map_err(|_| anyhow!("{what}: invalid value for header {name}"))?;
            if name.as_str().eq_ignore_ascii_case("x-auth-token") {
                value.set_sensitive(true);
            }
            h.insert(name, value);
        }

        let exchange = async {
            let resp = self.client.request(req).await?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, MAX_BODY)
                .collect()
                .await
                .map_err(|e| anyhow!(e))?
                .to_bytes();
            anyhow::Ok(Response {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(resp)) => {
                debug!(request = %what, status = resp.status, bytes = resp.body.len(), "http");
                Ok(resp)
            }
            Ok(Err(e)) => Err(e.context(what)),
            Err(_) => bail!("{what}: no complete response within {:?}", self.timeout),
        }
    }
}

impl Response {
    /// The body parsed as JSON into `T`.
    pub fn json<T: DeserializeOwned>(&self) -> anyhow::Result<T> {
        serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "HTTP {} response is not the expected JSON: {}",
                self.status,
                self.body_excerpt()
            )
        })
    }

    /// A header's value, if present and valid text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)?.to_str().ok()
    }

    /// The start of the body (300 characters at most, whitespace runs
    /// collapsed), for error messages.
    pub fn body_excerpt(&self) -> String {
        const MAX_CHARS: usize = 300;
        let text = String::from_utf8_lossy(&self.body);
        let mut out = String::new();
        for (n, word) in text.split_whitespace().enumerate() {
            if n > 0 {
                out.push(' ');
            }
            out.push_str(word);
            if out.chars().count() > MAX_CHARS {
                break;
            }
        }
        if out.chars().count() > MAX_CHARS {
            out = out.chars().take(MAX_CHARS).collect();
            out.push('…');
        }
        if out.is_empty() {
            out.push_str("(empty body)");
        }
        out
    }
}

/// The rustls config for `tls`, and why `https` is unusable if it is.
fn client_config(tls: &TlsOptions) -> anyhow::Result<(ClientConfig, Option<Arc<str>>)> {
    if tls.insecure || tls.ca_file.is_some() {
        if tls.insecure {
            if tls.ca_file.is_some() {
                warn!("insecure: the CA file is ignored");
            }
            warn!("insecure: server certificates are not verified");
        }
        let check = lbd_config::TlsCheck {
            ca_file: if tls.insecure {
                None
            } else {
                tls.ca_file.clone()
            },
            ..Default::default()
        };
        // Without a ca_file lbd's config accepts any certificate but checks
        // the handshake signatures; with one it verifies chain and name.
        let config = lbd_config::tls_client::client_config(&check, false)?;
        return Ok((Arc::unwrap_or_clone(config), None));
    }

    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        debug!(error = %e, "system CA store");
    }
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    debug!(added, ignored, "system CA certificates");
    let no_https = roots.is_empty().then(|| {
        Arc::from(
            "the system CA store has no usable certificate: \
             give a CA file (or, for tests only, insecure)",
        )
    });
    let config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok((config, no_https))
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use hyper::body::Incoming;
    use hyper_util::rt::TokioIo;
    use serde_json::{json, Value};
    use tokio::net::TcpListener;

    use super::*;

    /// A loopback HTTP(S) server answering every request with a JSON echo
    /// of it; counts accepted connections.
    struct EchoServer {
        addr: SocketAddr,
        conns: Arc<AtomicUsize>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for EchoServer {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    async fn echo(
        req: hyper::Request<Incoming>,
    ) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
        let method = req.method().to_string();
        let path = req.uri().path().to_owned();
        let headers: serde_json::Map<String, Value> = req
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or(""))))
            .collect();
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if path == "/slow" {
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        let out = json!({"method": method, "path": path, "headers": headers, "body": body});
        let resp = hyper::Response::builder()
            .status(if path == "/missing" { 404 } else { 200 })
            .header("x-echo", "yes")
            .body(Full::new(Bytes::from(out.to_string())))
            .unwrap();
        Ok(resp)
    }

    impl EchoServer {
        async fn start(tls: Option<Arc<rustls::ServerConfig>>) -> EchoServer {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let conns = Arc::new(AtomicUsize::new(0));
            let counter = conns.clone();
            let task = tokio::spawn(async move {
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        return;
                    };
                    counter.fetch_add(1, Ordering::SeqCst);
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(echo);
                        let http = hyper::server::conn::http1::Builder::new();
                        match tls {
                            None => {
                                let _ = http.serve_connection(TokioIo::new(tcp), service).await;
                            }
                            Some(config) => {
                                let acceptor = tokio_rustls::TlsAcceptor::from(config);
                                let Ok(stream) = acceptor.accept(tcp).await else {
                                    return;
                                };
                                let _ = http.serve_connection(TokioIo::new(stream), service).await;
                            }
                        }
                    });
                }
            });
            EchoServer { addr, conns, task }
        }
    }

    /// A self-signed certificate for 127.0.0.1: the server config and the
    /// certificate as a PEM file.
    fn tls_server(name: &str) -> (Arc<rustls::ServerConfig>, PathBuf) {
        let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.key_pair.serialize_der().into());
        let config =
            rustls::ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![ck.cert.der().clone()], key)
                .unwrap();
        let path = std::env::temp_dir().join(format!(
            "lb-agent-http-test-{}-{name}.pem",
            std::process::id()
        ));
        std::fs::write(&path, ck.cert.pem()).unwrap();
        (Arc::new(config), path)
    }

    fn client(tls: TlsOptions) -> HttpClient {
        HttpClient::new(&tls, Duration::from_secs(5)).unwrap()
    }

    #[tokio::test]
    async fn json_round_trip_and_connection_reuse() {
        let server = EchoServer::start(None).await;
        let http = client(TlsOptions::default());
        let url = format!("http://{}/v3/auth/tokens", server.addr);
        let body = json!({"auth": {"x": 1}});
        let resp = http
            .request(Method::POST, &url, &[("X-Auth-Token", "t0k")], Some(&body))
            .await
            .unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("x-echo"), Some("yes"));
        assert_eq!(resp.header("X-Echo"), Some("yes"));
        let echoed: Value = resp.json().unwrap();
        assert_eq!(echoed["method"], "POST");
        assert_eq!(echoed["path"], "/v3/auth/tokens");
        assert_eq!(echoed["body"], body);
        assert_eq!(echoed["headers"]["x-auth-token"], "t0k");
        assert_eq!(echoed["headers"]["content-type"], "application/json");
        assert_eq!(echoed["headers"]["accept"], "application/json");

        // A second request (and a clone's) reuses the kept-alive connection.
        let resp = http
            .clone()
            .request(Method::GET, &url, &[], None)
            .await
            .unwrap();
        let echoed: Value = resp.json().unwrap();
        assert_eq!(echoed["method"], "GET");
        assert_eq!(echoed["body"], Value::Null);
        assert_eq!(server.conns.load(Ordering::SeqCst), 1);

        // Statuses are the caller's business.
        let missing = format!("http://{}/missing", server.addr);
        let resp = http
            .request(Method::GET, &missing, &[], None)
            .await
            .unwrap();
        assert_eq!(resp.status, 404);
    }

    #[tokio::test]
    async fn whole_request_is_bounded_by_the_timeout() {
        let server = EchoServer::start(None).await;
        let http = HttpClient::new(&TlsOptions::default(), Duration::from_millis(300)).unwrap();
        let url = format!("http://{}/slow", server.addr);
        let started = std::time::Instant::now();
        let err = http
            .request(Method::GET, &url, &[], None)
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(3));
        let msg = format!("{err:#}");
        assert!(msg.contains(&url) && msg.contains("within"), "{msg}");
    }

    #[tokio::test]
    async fn refused_connection_and_bad_urls_are_errors() {
        let http = client(TlsOptions::default());
        // Bind then drop, so nothing listens on the port.
        let addr = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let url = format!("http://{addr}/x");
        let msg = format!(
            "{:#}",
            http.request(Method::GET, &url, &[], None)
                .await
                .unwrap_err()
        );
        assert!(msg.starts_with(&format!("GET {url}")), "{msg}");
        for bad in ["ftp://127.0.0.1/", "not a url", "/relative"] {
            assert!(
                http.request(Method::GET, bad, &[], None).await.is_err(),
                "{bad}"
            );
        }
        // A bad header value is reported by name, never quoted.
        let err = http
            .request(Method::GET, &url, &[("X-Auth-Token", "sec\nret")], None)
            .await
            .unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("x-auth-token") && !msg.contains("sec"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn https_with_ca_file_insecure_and_untrusted() {
        let (config, cert) = tls_server("trusted");
        let (_, other_cert) = tls_server("other");
        let server = EchoServer::start(Some(config)).await;
        let url = format!("https://{}/v2/lbaas/loadbalancers", server.addr);

        let trusting = client(TlsOptions {
            ca_file: Some(cert.clone()),
            insecure: false,
        });
        let resp = trusting
            .request(Method::GET, &url, &[], None)
            .await
            .unwrap();
        assert_eq!(
            resp.json::<Value>().unwrap()["path"],
            "/v2/lbaas/loadbalancers"
        );

        let insecure = client(TlsOptions {
            ca_file: None,
            insecure: true,
        });
        let resp = insecure
            .request(Method::GET, &url, &[], None)
            .await
            .unwrap();
        assert_eq!(resp.status, 200);

        // Another CA, or the system store: the self-signed cert is refused.
        for tls in [
            TlsOptions {
                ca_file: Some(other_cert.clone()),
                insecure: false,
            },
            TlsOptions::default(),
        ] {
            let err = client(tls)
                .request(Method::GET, &url, &[], None)
                .await
                .unwrap_err();
            let msg = format!("{err:#}");
            assert!(msg.starts_with(&format!("GET {url}")), "{msg}");
        }

        // An unreadable CA file fails at construction.
        let missing = TlsOptions {
            ca_file: Some(PathBuf::from("/nonexistent/ca.pem")),
            insecure: false,
        };
        assert!(HttpClient::new(&missing, Duration::from_secs(1)).is_err());
        let _ = std::fs::remove_file(cert);
        let _ = std::fs::remove_file(other_cert);
    }

    #[test]
    fn body_excerpt_is_short_and_readable() {
        let resp = |body: &str| Response {
            status: 500,
            headers: HeaderMap::new(),
            body: Bytes::from(body.to_owned()),
        };
        assert_eq!(resp("").body_excerpt(), "(empty body)");
        assert_eq!(resp("{\n  \"a\":  1\n}").body_excerpt(), "{ \"a\": 1 }");
        let long = resp(&"é".repeat(1000)).body_excerpt();
        assert_eq!(long.chars().count(), 301);
        assert!(long.ends_with('…'));
        assert!(resp("nope").json::<Value>().is_err());
    }
}
