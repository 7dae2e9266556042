//! Test backends for health checks: a minimal kube-apiserver look-alike
//! ([`ApiServer`]: `/readyz`, `/livez`, `/healthz` and a data path, over
//! plain HTTP/1.1 or TLS), a member that accepts but never answers
//! ([`SilentServer`]), and small HTTP client helpers ([`http_get`],
//! [`http_get_once`]).
//!
//! Everything listens on 127.0.0.1 and every wait is bounded by
//! [`super::WAIT`]. Misbehaving clients (garbage, oversized heads, failed
//! TLS handshakes) just get their connection dropped.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use super::WAIT;

/// Largest request or response head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Largest response body [`http_get`] accepts.
const MAX_BODY: usize = 1024 * 1024;

/// How open connections should end when the server goes away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Halt {
    /// Keep serving.
    No,
    /// Close normally (FIN): the server was dropped.
    Close,
    /// Reset (SO_LINGER 0): the process "died".
    Reset,
}

/// State shared by the accept loop and the connection tasks.
struct State {
    tag: String,
    ready: AtomicBool,
    silent: AtomicBool,
    /// Answers to `/readyz` and `/healthz`, by status code.
    health: Mutex<BTreeMap<u16, usize>>,
    data: AtomicUsize,
    open: AtomicUsize,
    accepted: AtomicUsize,
    halt: watch::Sender<Halt>,
}

/// Counts one open connection for as long as it lives.
struct OpenGuard(Arc<State>);

impl OpenGuard {
    fn new(state: &Arc<State>) -> Self {
        state.open.fetch_add(1, Ordering::SeqCst);
        OpenGuard(state.clone())
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// PEM files of a client certificate accepted by
/// [`ApiServer::start_tls_with_client_auth`].
#[derive(Clone, Debug)]
pub struct ClientCreds {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

/// A kube-apiserver-like HTTP/1.1 server on 127.0.0.1 (keep-alive,
/// requests without bodies), optionally over TLS.
///
/// `/readyz` and `/healthz` answer `200 ok` when ready and `503 not ready`
/// otherwise; `/livez` always answers `200 ok`; any other path answers
/// `200` with body `"{tag}\n"`. Stops and closes its connections when
/// dropped.
pub struct ApiServer {
    /// Returned as the body of data requests.
    pub tag: String,
    addr: SocketAddr,
    state: Arc<State>,
    accept_task: Mutex<Option<JoinHandle<()>>>,
    ca_pem: Option<PathBuf>,
}

impl ApiServer {
    /// Starts a ready server on a fresh port; with `tls`, it speaks TLS
    /// with a self-signed certificate (see [`ApiServer::ca_pem_path`]).
    pub async fn start(tag: &str, tls: bool) -> ApiServer {
        if !tls {
            return Self::launch(tag, None, None).await;
        }
        let (chain, key, ca_pem) = server_cert();
        let config = tls_builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server TLS config");
        Self::launch(tag, Some(config), Some(ca_pem)).await
    }

    /// Starts TLS servers that all present one self-signed certificate, so
    /// a client trusting [`ApiServer::ca_pem_path`] of any of them can
    /// reach each one (through a load balancer, say).
    pub async fn start_tls_sharing_a_certificate(tags: &[&str]) -> Vec<ApiServer> {
        let (chain, key, ca_pem) = server_cert();
        let mut servers = Vec::new();
        for tag in tags {
            let config = tls_builder()
                .with_no_client_auth()
                .with_single_cert(chain.clone(), key.clone_key())
                .expect("server TLS config");
            servers.push(Self::launch(tag, Some(config), Some(ca_pem.clone())).await);
        }
        servers
    }

    /// Starts a TLS server that requires a client certificate signed by a
    /// fresh test CA, and returns the PEM files of one such certificate.
    pub async fn start_tls_with_client_auth(tag: &str) -> (ApiServer, ClientCreds) {
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "lbd test client CA");
        let ca = ca_params.self_signed(&ca_key).expect("CA cert");

        let client_key = rcgen::KeyPair::generate().expect("client key");
        let mut params = rcgen::CertificateParams::new(vec!["lbd-health-check".to_owned()])
            .expect("client params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "lbd-health-check");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let client = params
            .signed_by(&client_key, &ca, &ca_key)
            .expect("client cert");
        let creds = ClientCreds {
            cert_path: write_scratch("client-cert.pem", &client.pem()),
            key_path: write_scratch("client-key.pem", &client_key.serialize_pem()),
        };

        let mut roots = RootCertStore::empty();
        roots.add(ca.der().clone()).expect("trust client CA");
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .expect("client verifier");
        let (chain, key, ca_pem) = server_cert();
        let config = tls_builder()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .expect("server TLS config");
        (Self::launch(tag, Some(config), Some(ca_pem)).await, creds)
    }

    async fn launch(tag: &str, tls: Option<ServerConfig>, ca_pem: Option<PathBuf>) -> ApiServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind apiserver");
        let addr = listener.local_addr().expect("apiserver addr");
        let state = Arc::new(State {
            tag: tag.to_owned(),
            ready: AtomicBool::new(true),
            silent: AtomicBool::new(false),
            health: Mutex::new(BTreeMap::new()),
            data: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            accepted: AtomicUsize::new(0),
            halt: watch::Sender::new(Halt::No),
        });
        let acceptor = tls.map(|config| TlsAcceptor::from(Arc::new(config)));
        let accept_state = state.clone();
        let accept_task = tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    // Transient (ECONNABORTED, EMFILE...): keep listening.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                accept_state.accepted.fetch_add(1, Ordering::SeqCst);
                // Counted before spawning, so `kill` cannot miss it.
                let open = OpenGuard::new(&accept_state);
                tokio::spawn(handle(open, conn, acceptor.clone()));
            }
        });
        ApiServer {
            tag: tag.to_owned(),
            addr,
            state,
            accept_task: Mutex::new(Some(accept_task)),
            ca_pem,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// With TLS: a PEM file holding the (self-signed) server certificate,
    /// usable as the client's CA file with server name `localhost` or
    /// `127.0.0.1`.
    pub fn ca_pem_path(&self) -> Option<PathBuf> {
        self.ca_pem.clone()
    }

    /// Makes `/readyz` and `/healthz` answer 200 (ready) or 503.
    pub fn set_ready(&self, ready: bool) {
        self.state.ready.store(ready, Ordering::SeqCst);
    }

    /// When silent, requests get no answer at all: the connection is held
    /// and whatever arrives is read and ignored (with TLS, not even the
    /// handshake is answered on new connections).
    pub fn set_silent(&self, silent: bool) {
        self.state.silent.store(silent, Ordering::SeqCst);
    }

    /// How many `/readyz` and `/healthz` requests were answered with `code`.
    pub fn health_answers(&self, code: u16) -> usize {
        let health = self.state.health.lock().expect("health counters");
        health.get(&code).copied().unwrap_or(0)
    }

    /// Waits (bounded by [`WAIT`]) until at least `n` health requests were
    /// answered with `code`.
    pub async fn wait_health_answers(&self, code: u16, n: usize) {
        let deadline = Instant::now() + WAIT;
        while self.health_answers(code) < n {
            assert!(
                Instant::now() < deadline,
                "apiserver {:?}: {} health answers with {code} after {WAIT:?}, wanted {n}",
                self.tag,
                self.health_answers(code),
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// How many requests for other paths than the health ones were answered.
    pub fn data_requests(&self) -> usize {
        self.state.data.load(Ordering::SeqCst)
    }

    /// Connections open right now, health-check ones included.
    pub fn open_connections(&self) -> usize {
        self.state.open.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// Stops accepting: once this returns the port refuses connections.
    /// Open connections are still served.
    pub async fn stop_listening(&self) {
        let task = self.accept_task.lock().expect("accept task").take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await; // the listener is closed once this returns
        }
    }

    /// The process "dies": the port refuses connections and every open
    /// connection is reset (SO_LINGER 0), all before this returns.
    pub async fn kill(self) {
        self.stop_listening().await;
        self.state.halt.send_replace(Halt::Reset);
        let deadline = Instant::now() + WAIT;
        while self.open_connections() > 0 {
            assert!(
                Instant::now() < deadline,
                "apiserver {:?}: {} connections still open {WAIT:?} after kill",
                self.tag,
                self.open_connections(),
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(task) = self.accept_task.get_mut().ok().and_then(Option::take) {
            task.abort();
        }
        self.state.halt.send_if_modified(|halt| {
            let first = *halt == Halt::No;
            if first {
                *halt = Halt::Close;
            }
            first
        });
    }
}

/// Serves one accepted connection until the client leaves or the server
/// halts; on [`Halt::Reset`] the socket is closed with a reset.
async fn handle(open: OpenGuard, conn: TcpStream, tls: Option<TlsAcceptor>) {
    let state = open.0.clone();
    let mut halt = state.halt.subscribe();
    // A second handle on the socket, to set SO_LINGER while `work` owns it.
    let Ok(twin) = socket2::SockRef::from(&conn).try_clone() else {
        return;
    };
    let work = async {
        if state.silent.load(Ordering::SeqCst) {
            return swallow(conn).await;
        }
        match tls {
            None => serve(&state, conn).await,
            Some(acceptor) => {
                if let Ok(conn) = acceptor.accept(conn).await {
                    serve(&state, conn).await;
                }
            }
        }
    };
    tokio::select! {
        () = work => {}
        halted = halt.wait_for(|h| *h != Halt::No) => {
            if halted.is_ok_and(|h| *h == Halt::Reset) {
                let _ = twin.set_linger(Some(Duration::ZERO));
            }
        }
    }
    // `work` (owning the stream) is gone; dropping `twin` closes the socket,
    // then `open` uncounts it.
    drop(twin);
    drop(open);
}

/// Answers requests on one connection until it closes or misbehaves.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(state: &State, mut io: S) {
    let mut buf = Vec::new();
    while let Some(head) = read_head(&mut io, &mut buf).await {
        if state.silent.load(Ordering::SeqCst) {
            return swallow(io).await;
        }
        let Some((path, keep_alive)) = parse_request(&head) else {
            return; // garbage: drop the connection
        };
        let (code, body) = answer(state, path);
        let response =
            format!(
            "HTTP/1.1 {code} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n{body}",
            if code == 200 { "OK" } else { "Service Unavailable" },
            body.len(),
            if keep_alive { "" } else { "Connection: close\r\n" },
        );
        if io.write_all(response.as_bytes()).await.is_err() || io.flush().await.is_err() {
            return;
        }
        if !keep_alive {
            let _ = io.shutdown().await;
            return;
        }
    }
}

/// The status and body for `path`, counting the request.
fn answer(state: &State, path: &str) -> (u16, String) {
    let ready = state.ready.load(Ordering::SeqCst);
    let (code, body) = match path {
        "/livez" => return (200, "ok".to_owned()),
        "/readyz" | "/healthz" if ready => (200, "ok"),
        "/readyz" | "/healthz" => (503, "not ready"),
        _ => {
            state.data.fetch_add(1, Ordering::SeqCst);
            return (200, format!("{}\n", state.tag));
        }
    };
    let mut health = state.health.lock().expect("health counters");
    *health.entry(code).or_insert(0) += 1;
    (code, body.to_owned())
}

/// Parses a request head: the path (without query) and whether the
/// connection stays open afterwards. None if it is not HTTP/1.x.
fn parse_request(head: &[u8]) -> Option<(&str, bool)> {
    let head = std::str::from_utf8(head).ok()?;
    let mut lines = head.split("\r\n");
    let mut words = lines.next()?.split(' ');
    let (_method, target, version) = (words.next()?, words.next()?, words.next()?);
    if words.next().is_some() || !target.starts_with('/') {
        return None;
    }
    let mut keep_alive = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => return None,
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name.trim().eq_ignore_ascii_case("connection") {
            let value = value.trim();
            if value.eq_ignore_ascii_case("close") {
                keep_alive = false;
            } else if value.eq_ignore_ascii_case("keep-alive") {
                keep_alive = true;
            }
        }
    }
    let path = target.split('?').next().unwrap_or(target);
    Some((path, keep_alive))
}

/// Reads up to and including the next `\r\n\r\n`, keeping any bytes after
/// it in `buf` for the next call. None on EOF, error or an oversized head.
async fn read_head<S: AsyncRead + Unpin>(io: &mut S, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(buf.drain(..end + 4).collect());
        }
        if buf.len() > MAX_HEAD {
            return None;
        }
        let mut chunk = [0u8; 4096];
        match io.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Reads and ignores everything until the peer goes away.
async fn swallow<S: AsyncRead + Unpin>(mut io: S) {
    let mut sink = [0u8; 4096];
    while matches!(io.read(&mut sink).await, Ok(n) if n > 0) {}
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_builder() -> rustls::ConfigBuilder<ServerConfig, rustls::WantsVerifier> {
    ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
}

/// A self-signed certificate for `localhost` and `127.0.0.1`: the chain,
/// its key, and a scratch PEM file holding the certificate.
fn server_cert() -> (
    Vec<CertificateDer<'static>>,
    PrivateKeyDer<'static>,
    PathBuf,
) {
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(names).expect("self-signed cert");
    let pem = write_scratch("apiserver-ca.pem", &cert.pem());
    let key = PrivatePkcs8KeyDer::from(key_pair.serialize_der());
    (vec![cert.der().clone()], key.into(), pem)
}

/// A self-signed certificate for `localhost` and `127.0.0.1` as PEM files
/// (certificate, key) in a fresh scratch directory.
pub fn self_signed_pem_files() -> (PathBuf, PathBuf) {
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(names).expect("self-signed cert");
    let dir = super::scratch_dir();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).expect("write cert");
    std::fs::write(&key_path, key_pair.serialize_pem()).expect("write key");
    (cert_path, key_path)
}

/// A TLS connection to `addr` trusting only the PEM certificate `ca`, for
/// `server_name`, optionally presenting a client certificate.
pub async fn tls_connect(
    addr: SocketAddr,
    ca: &std::path::Path,
    server_name: &str,
    creds: Option<&ClientCreds>,
) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(ca).expect("read CA PEM"))
        .expect("trust CA");
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots);
    let config = match creds {
        None => builder.with_no_client_auth(),
        Some(creds) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_file(&creds.cert_path).expect("client cert")],
                PrivateKeyDer::from_pem_file(&creds.key_path).expect("client key"),
            )
            .expect("client auth config"),
    };
    let name = rustls::pki_types::ServerName::try_from(server_name.to_owned())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let tcp = super::connect_from(addr, None).await?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

/// Writes `contents` to a file named `name` in a fresh scratch directory.
fn write_scratch(name: &str, contents: &str) -> PathBuf {
    let path = super::scratch_dir().join(name);
    std::fs::write(&path, contents).expect("write scratch file");
    path
}

/// A member that accepts TCP connections and never writes anything,
/// holding them open (and reading and ignoring what arrives).
pub struct SilentServer(ApiServer);

impl SilentServer {
    pub async fn start() -> SilentServer {
        let server = ApiServer::start("silent", false).await;
        server.set_silent(true);
        SilentServer(server)
    }

    pub fn addr(&self) -> SocketAddr {
        self.0.addr()
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.0.accepted()
    }
}

/// Sends `GET {path}` on an open connection (plain TCP, or any stream such
/// as a TLS one) and reads one response, all within [`WAIT`]. Returns the
/// status code and the body (read by `Content-Length`, which is required),
/// leaving the connection ready for the next request.
pub async fn http_get<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut S,
    path: &str,
) -> io::Result<(u16, String)> {
    http_request(conn, "GET", path, &[], b"").await
}

/// Like [`http_get`] with any method, extra headers (`"Name: value"`) and a
/// body (sent with its `Content-Length`).
pub async fn http_request<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut S,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &[u8],
) -> io::Result<(u16, String)> {
    let exchange = async {
        let mut request = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n");
        for header in headers {
            request.push_str(header);
            request.push_str("\r\n");
        }
        if !body.is_empty() || method != "GET" {
            request.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        request.push_str("\r\n");
        conn.write_all(request.as_bytes()).await?;
        conn.write_all(body).await?;
        conn.flush().await?;
        let head = read_response_head(conn).await?;
        let (code, length) = parse_response(&head)?;
        if length > MAX_BODY {
            return Err(invalid(format!("body of {length} bytes is too large")));
        }
        let mut body = vec![0u8; length];
        conn.read_exact(&mut body).await?;
        Ok((code, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(WAIT, exchange).await.map_err(|_| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{method} {path}: no response"),
        )
    })?
}

/// [`http_request`] on a new connection to `addr`.
pub async fn http_request_once(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &[u8],
) -> io::Result<(u16, String)> {
    let mut conn = super::connect_from(addr, None).await?;
    http_request(&mut conn, method, path, headers, body).await
}

/// [`http_get`] on a new connection to `addr`.
pub async fn http_get_once(addr: SocketAddr, path: &str) -> io::Result<(u16, String)> {
    let mut conn = super::connect_from(addr, None).await?;
    http_get(&mut conn, path).await
}

/// Reads a response head a byte at a time, so nothing after it is consumed.
async fn read_response_head<S: AsyncRead + Unpin>(conn: &mut S) -> io::Result<Vec<u8>> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > MAX_HEAD {
            return Err(invalid("response head too large".to_owned()));
        }
        head.push(conn.read_u8().await?);
    }
    Ok(head)
}

/// The status code and `Content-Length` of a response head.
fn parse_response(head: &[u8]) -> io::Result<(u16, usize)> {
    let head = String::from_utf8_lossy(head);
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let code = status
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| invalid(format!("bad status line {status:?}")))?;
    let length = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
        .ok_or_else(|| invalid(format!("no valid Content-Length in {head:?}")))?;
    Ok((code, length))
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// `GET /stats.json` of the admin server at `admin`, parsed; fails the test
/// unless it answers 200 with JSON.
pub async fn stats(admin: SocketAddr) -> serde_json::Value {
    let (code, body) = http_request_once(admin, "GET", "/stats.json", &[], b"")
        .await
        .expect("GET /stats.json");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("stats.json is JSON")
}
