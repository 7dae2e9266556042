//! One health check of one member: connect, then optionally a TLS handshake
//! and an HTTP request, all within the check's timeout; or a program
//! ([`super::external`]) or a script of steps ([`super::script`]). Says
//! whether the check passed and, if not, why.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lbd_config::model::{CheckKind, HealthCheck, HttpCheck, UdpCheck};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::external::{Program, Subject};
use super::http;
use super::script::Script;
use crate::tls::{self, TlsSetupError};

/// One configured check, built once per pool health config and shared
/// (`Arc`) by the tasks that check each member.
pub struct Probe {
    mode: Mode,
    timeout: Duration,
    http: HttpCheck,
}

/// What is done after connecting.
enum Mode {
    Tcp,
    Http,
    Https(Tls),
    TlsHello(Tls),
    External(Program),
    Script(Script),
    Udp(UdpCheck),
}

struct Tls {
    connector: TlsConnector,
    /// The configured `sni`; `None`: the member's IP address (no SNI sent).
    name: Option<ServerName<'static>>,
}

/// The result of one check and how long it took.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub result: Result<Passed, Failure>,
    /// From the start of the connect to the verdict (about the timeout
    /// when it timed out).
    pub took: Duration,
}

/// How a check passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Passed {
    /// `tcp`: the connection was established.
    Connected,
    /// `tls_hello`: the TLS handshake completed.
    Handshake,
    /// `http`, `https`: an expected status code.
    Http(u16),
    /// `external`: the program exited 0.
    Exited,
    /// `tcp_script`: every step passed.
    Script,
    /// `udp_connect`: no ICMP error within the timeout.
    NoError,
    /// `udp_connect` with `expect`: the expected reply.
    Replied,
}

impl fmt::Display for Passed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Passed::Connected => f.write_str("connected"),
            Passed::Handshake => f.write_str("TLS handshake done"),
            Passed::Http(code) => write!(f, "HTTP {code}"),
            Passed::Exited => f.write_str("external: exit 0"),
            Passed::Script => f.write_str("tcp_script passed"),
            Passed::NoError => f.write_str("udp: no ICMP error"),
            Passed::Replied => f.write_str("udp: expected reply"),
        }
    }
}

/// Why a check failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    #[error("connect refused")]
    Refused,
    /// Any other connect error (unreachable, reset...).
    #[error("connect: {0}")]
    Connect(String),
    /// The check did not finish within its configured timeout.
    #[error("timeout after {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error("TLS: {0}")]
    Tls(String),
    /// A status code not in `expected_codes`.
    #[error("HTTP {0}")]
    Status(u16),
    /// No parseable status line.
    #[error("bad HTTP response: {0}")]
    BadResponse(String),
    /// The member closed the connection before answering anything.
    #[error("closed before answering")]
    Closed,
    /// A read or write error, e.g. `read: Connection reset by peer (os error 104)`.
    #[error("{0}")]
    Io(String),
    /// lbd itself could not open the check's connection (out of file
    /// descriptors, memory or local ports): says nothing about the member.
    #[error("lbd could not open a connection: {0}")]
    Local(String),
    /// `external`: `exit 1: <first line of output>`, `timeout after 1s
    /// (killed)`...
    #[error("external: {0}")]
    External(String),
    /// `tcp_script`: `tcp_script step 2: expected "+PONG", got "-ERR"`.
    #[error("{0}")]
    Script(String),
}

impl Failure {
    /// Whether the failure is lbd's own shortage, not the member's: such a
    /// check is not counted either way.
    pub fn is_local(&self) -> bool {
        matches!(self, Failure::Local(_))
    }
}

impl Probe {
    /// Prepares `check`; reads its TLS files for `https` and `tls_hello`.
    pub fn new(check: &HealthCheck) -> Result<Probe, TlsSetupError> {
        let tls = |alpn_http| -> Result<Tls, TlsSetupError> {
            Ok(Tls {
                connector: TlsConnector::from(tls::client_config(&check.tls, alpn_http)?),
                name: tls::server_name(&check.tls)?,
            })
        };
        let mode = match check.kind {
            CheckKind::Tcp => Mode::Tcp,
            CheckKind::Http => Mode::Http,
            CheckKind::Https => Mode::Https(tls(true)?),
            CheckKind::TlsHello => Mode::TlsHello(tls(false)?),
            CheckKind::External => Mode::External(Program::new(&check.external, check.timeout)),
            CheckKind::TcpScript => Mode::Script(Script::new(&check.script, check.timeout)),
            CheckKind::UdpConnect => Mode::Udp(check.udp.clone()),
        };
        Ok(Probe {
            mode,
            timeout: check.timeout,
            http: check.http.clone(),
        })
    }

    /// The limit of one whole check.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs one check against `target` (the member's check address),
    /// bounded as a whole by the timeout. An external check is told about
    /// `subject`, which has `current` connections open.
    pub async fn run(&self, target: SocketAddr, subject: &Subject, current: u64) -> Outcome {
        let start = Instant::now();
        let result = match &self.mode {
            // Both end themselves at the timeout: a program's process
            // group must be killed, a script's failure names its step.
            Mode::External(program) => {
                let run = program.run(subject, current).await;
                match run.verdict() {
                    Ok(()) => Ok(Passed::Exited),
                    Err(why) if run.is_local() => Err(Failure::Local(why)),
                    Err(why) => Err(Failure::External(why)),
                }
            }
            Mode::Script(script) => match script.run(target).await {
                Ok(()) => Ok(Passed::Script),
                Err(failure) if failure.local => Err(Failure::Local(failure.to_string())),
                Err(failure) => Err(Failure::Script(failure.to_string())),
            },
            Mode::Udp(udp) => udp_check(udp, target, self.timeout).await,
            _ => tokio::time::timeout(self.timeout, self.check(target))
                .await
                .unwrap_or(Err(Failure::Timeout(self.timeout))),
        };
        Outcome {
            result,
            took: start.elapsed(),
        }
    }

    async fn check(&self, target: SocketAddr) -> Result<Passed, Failure> {
        let tcp = TcpStream::connect(target).await.map_err(|e| {
            if e.kind() == io::ErrorKind::ConnectionRefused {
                Failure::Refused
            } else if crate::sockets::is_local_shortage(&e) {
                Failure::Local(e.to_string())
            } else {
                Failure::Connect(e.to_string())
            }
        })?;
        match &self.mode {
            Mode::Tcp => Ok(Passed::Connected),
            Mode::Http => self.http_exchange(tcp, target).await,
            Mode::Https(tls) => {
                let stream = tls.handshake(tcp, target).await?;
                self.http_exchange(stream, target).await
            }
            Mode::TlsHello(tls) => {
                let mut stream = tls.handshake(tcp, target).await?;
                // Best effort close_notify; the check has passed already.
                let _ = stream.shutdown().await;
                Ok(Passed::Handshake)
            }
            // Run by `run` itself.
            Mode::External(_) | Mode::Script(_) | Mode::Udp(_) => Ok(Passed::Connected),
        }
    }

    /// Sends the request and judges the status line of the answer.
    async fn http_exchange<S>(&self, mut stream: S, target: SocketAddr) -> Result<Passed, Failure>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let request = http::request(&self.http, target);
        let written = match stream.write_all(&request).await {
            Ok(()) => stream.flush().await,
            Err(e) => Err(e),
        };
        written.map_err(|e| io_failure("write", e))?;
        let line = read_status_line(&mut stream).await?;
        let code = http::status_code(&line).map_err(Failure::BadResponse)?;
        if self.http.expected_codes.contains(code) {
            Ok(Passed::Http(code))
        } else {
            Err(Failure::Status(code))
        }
    }
}

/// A `udp_connect` check (see [`UdpCheck`]): one datagram from a socket
/// connected to `target`, then up to `timeout` for a reply or an error.
async fn udp_check(
    udp: &UdpCheck,
    target: SocketAddr,
    timeout: Duration,
) -> Result<Passed, Failure> {
    let local = |e: io::Error| {
        if crate::sockets::is_local_shortage(&e) {
            Failure::Local(e.to_string())
        } else {
            Failure::Connect(e.to_string())
        }
    };
    let socket = crate::runtime::datagram::connected_to(target)
        .and_then(|s| {
            s.set_nonblocking(true)?;
            tokio::net::UdpSocket::from_std(s)
        })
        .map_err(local)?;
    let refused = |e: io::Error| {
        if e.kind() == io::ErrorKind::ConnectionRefused {
            Failure::Refused
        } else {
            io_failure("udp", e)
        }
    };
    socket.send(udp.send.as_bytes()).await.map_err(refused)?;
    let mut buf = vec![0u8; http::MAX_STATUS_LINE];
    // Replies that do not contain `expect` are read past, until the
    // timeout (bounded by it).
    let wait = async {
        loop {
            let n = socket.recv(&mut buf).await.map_err(refused)?;
            match &udp.expect {
                None => return Ok(Passed::Replied),
                Some(want) if contains(&buf[..n], want.as_bytes()) => return Ok(Passed::Replied),
                Some(_) => continue,
            }
        }
    };
    match tokio::time::timeout(timeout, wait).await {
        Ok(result) => result,
        Err(_) if udp.expect.is_none() => Ok(Passed::NoError),
        Err(_) => Err(Failure::Timeout(timeout)),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

impl Tls {
    async fn handshake(
        &self,
        tcp: TcpStream,
        target: SocketAddr,
    ) -> Result<TlsStream<TcpStream>, Failure> {
        let name = match &self.name {
            Some(name) => name.clone(),
            None => ServerName::IpAddress(target.ip().into()),
        };
        self.connector.connect(name, tcp).await.map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                Failure::Closed
            } else {
                Failure::Tls(e.to_string())
            }
        })
    }
}

/// Reads up to and including the first `\n`, at most
/// [`http::MAX_STATUS_LINE`] bytes. The rest of the answer is left unread.
async fn read_status_line<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Vec<u8>, Failure> {
    let mut buf = vec![0; http::MAX_STATUS_LINE];
    let mut len = 0;
    while len < buf.len() {
        let n = match stream.read(&mut buf[len..]).await {
            Ok(n) => n,
            // A TLS peer that closed without close_notify.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(io_failure("read", e)),
        };
        if n == 0 {
            return Err(match len {
                0 => Failure::Closed,
                _ => Failure::BadResponse(format!(
                    "closed within the status line \"{}\"",
                    http::quote(&buf[..len])
                )),
            });
        }
        if let Some(end) = buf[len..len + n].iter().position(|&b| b == b'\n') {
            buf.truncate(len + end + 1);
            return Ok(buf);
        }
        len += n;
    }
    Err(Failure::BadResponse(format!(
        "no line end in the first {} KiB",
        http::MAX_STATUS_LINE / 1024
    )))
}

/// A read or write error; a TLS error (e.g. an alert refusing our client
/// certificate, which TLS 1.3 sends after the handshake) is a TLS failure.
fn io_failure(what: &str, e: io::Error) -> Failure {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => Failure::Tls(tls.to_string()),
        None => Failure::Io(format!("{what}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use lbd_config::model::{ExpectedCodes, TlsCheck};
    use rustls::crypto::ring;
    use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
    use rustls::server::WebPkiClientVerifier;
    use rustls::{RootCertStore, ServerConfig};
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;
    use tokio_rustls::TlsAcceptor;

    use super::*;
    use crate::tls::tests::{self_signed, TempFile};

    const OK: &str = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";

    /// What a test server does with each connection.
    #[derive(Clone)]
    enum Peer {
        /// Reads the request up to its blank line, reports it, sends this.
        Answer(String),
        /// Sends this at once, like an SSH or SMTP server.
        Banner(String),
        /// Sends back what it receives.
        Echo,
        /// Never sends anything.
        Silent,
        /// Closes its side (FIN, or close_notify over TLS) at once.
        Close,
    }

    struct Server {
        addr: SocketAddr,
        /// The requests received by [`Peer::Answer`].
        requests: mpsc::UnboundedReceiver<Vec<u8>>,
    }

    /// A server on 127.0.0.1 behaving as `peer`, behind TLS with `tls`.
    async fn serve(peer: Peer, tls: Option<TlsAcceptor>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (sender, requests) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (peer, sender, tls) = (peer.clone(), sender.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        None => handle(tcp, peer, sender).await,
                        Some(tls) => {
                            if let Ok(stream) = tls.accept(tcp).await {
                                handle(stream, peer, sender).await;
                            }
                        }
                    }
                });
            }
        });
        Server { addr, requests }
    }

    async fn handle<S>(mut stream: S, peer: Peer, requests: mpsc::UnboundedSender<Vec<u8>>)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut buf = vec![0; 16 * 1024];
        let send = match &peer {
            Peer::Answer(reply) => {
                let mut request = Vec::new();
                while !request.ends_with(b"\r\n\r\n") && request.len() < buf.len() {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = requests.send(request);
                Some(reply)
            }
            Peer::Banner(text) => Some(text),
            Peer::Echo | Peer::Silent | Peer::Close => None,
        };
        if let Some(text) = send {
            let _ = stream.write_all(text.as_bytes()).await;
            let _ = stream.flush().await;
        }
        if let Peer::Close = peer {
            let _ = stream.shutdown().await;
        }
        // Hold the connection until the client closes it.
        while let Ok(n @ 1..) = stream.read(&mut buf).await {
            if let Peer::Echo = peer {
                if stream.write_all(&buf[..n]).await.is_err() || stream.flush().await.is_err() {
                    break;
                }
            }
        }
    }

    /// A TLS server config with the certificate `id`, requiring a client
    /// certificate issued by `client_ca` if given.
    fn acceptor(
        id: &rcgen::CertifiedKey,
        client_ca: Option<&CertificateDer<'static>>,
    ) -> TlsAcceptor {
        let provider = Arc::new(ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                roots.add(ca.clone()).unwrap();
                let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider);
                builder.with_client_cert_verifier(verifier.build().unwrap())
            }
        };
        let key = PrivatePkcs8KeyDer::from(id.key_pair.serialize_der()).into();
        let config = builder
            .with_single_cert(vec![id.cert.der().clone()], key)
            .unwrap();
        TlsAcceptor::from(Arc::new(config))
    }

    fn check(kind: CheckKind) -> HealthCheck {
        HealthCheck {
            kind,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(5),
            rise: 2,
            fall: 3,
            http: HttpCheck::default(),
            tls: TlsCheck::default(),
            external: Default::default(),
            script: Vec::new(),
            udp: UdpCheck::default(),
        }
    }

    fn subject(target: SocketAddr) -> Subject {
        Subject {
            pool: "p".into(),
            pool_id: 1,
            server: target.to_string(),
            server_id: "1".into(),
            addr: target,
            max_connections: 0,
        }
    }

    async fn run(check: &HealthCheck, target: SocketAddr) -> Outcome {
        Probe::new(check)
            .unwrap()
            .run(target, &subject(target), 0)
            .await
    }

    /// The result of an `http` check expecting `codes` of a server sending `reply`.
    async fn http_result(
        reply: &str,
        codes: &[std::ops::RangeInclusive<u16>],
    ) -> Result<Passed, Failure> {
        let server = serve(Peer::Answer(reply.to_owned()), None).await;
        let mut check = check(CheckKind::Http);
        check.http.expected_codes = ExpectedCodes(codes.to_vec());
        run(&check, server.addr).await.result
    }

    #[test]
    fn probe_can_be_shared_by_spawned_tasks() {
        fn send_sync<T: Send + Sync>(_: &T) {}
        fn send<T: Send>(_: &T) {}
        let target = "127.0.0.1:1".parse().unwrap();
        for kind in CheckKind::ALL {
            let mut check = check(kind);
            check.external.command = vec!["/bin/true".into()];
            let probe = Probe::new(&check).unwrap();
            send_sync(&probe);
            send(&probe.run(target, &subject(target), 0));
        }
    }

    #[test]
    fn messages() {
        assert_eq!(Passed::Connected.to_string(), "connected");
        assert_eq!(Passed::Handshake.to_string(), "TLS handshake done");
        assert_eq!(Passed::Http(200).to_string(), "HTTP 200");
        assert_eq!(Failure::Refused.to_string(), "connect refused");
        assert_eq!(
            Failure::Timeout(Duration::from_secs(3)).to_string(),
            "timeout after 3s"
        );
        assert_eq!(Failure::Status(503).to_string(), "HTTP 503");
        assert_eq!(Failure::Closed.to_string(), "closed before answering");
        assert_eq!(
            Failure::BadResponse("x".into()).to_string(),
            "bad HTTP response: x"
        );
        assert_eq!(Failure::Tls("x".into()).to_string(), "TLS: x");
    }

    #[tokio::test]
    async fn tcp_open_and_refused() {
        let server = serve(Peer::Silent, None).await;
        let mut tcp = check(CheckKind::Tcp);
        // TLS settings are not read for a tcp check.
        tcp.tls.ca_file = Some("/nonexistent/ca.pem".into());
        assert_eq!(run(&tcp, server.addr).await.result, Ok(Passed::Connected));
        let closed = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        assert_eq!(run(&tcp, closed).await.result, Err(Failure::Refused));
    }

    #[tokio::test]
    async fn udp_connect_refused_silent_and_replies() {
        let mut udp = check(CheckKind::UdpConnect);
        udp.timeout = Duration::from_millis(300);
        // A closed port: the ICMP port unreachable fails it.
        let closed = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .unwrap();
        assert_eq!(run(&udp, closed).await.result, Err(Failure::Refused));
        // A socket that never answers: passes without `expect`, times out
        // with it.
        let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let at = silent.local_addr().unwrap();
        assert_eq!(run(&udp, at).await.result, Ok(Passed::NoError));
        udp.udp.expect = Some("pong".into());
        assert_eq!(
            run(&udp, at).await.result,
            Err(Failure::Timeout(Duration::from_millis(300)))
        );
        // One that answers "pong" to "ping" (and something else first).
        let answering = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let at = answering.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            for _ in 0..2 {
                let (n, from) = answering.recv_from(&mut buf).await.unwrap();
                assert_eq!(&buf[..n], b"ping");
                answering.send_to(b"noise", from).await.unwrap();
                answering.send_to(b"+pong", from).await.unwrap();
            }
        });
        udp.udp.send = "ping".into();
        assert_eq!(run(&udp, at).await.result, Ok(Passed::Replied));
        udp.udp.expect = None;
        assert_eq!(run(&udp, at).await.result, Ok(Passed::Replied));
        server.await.unwrap();
    }

    #[tokio::test]
    async fn http_status_codes() {
        let default = ExpectedCodes::default().0;
        assert_eq!(http_result(OK, &default).await, Ok(Passed::Http(200)));
        let unavailable = "HTTP/1.1 503 Service Unavailable\r\n\r\n";
        assert_eq!(
            http_result(unavailable, &default).await,
            Err(Failure::Status(503))
        );
        let range = [200..=204];
        let no_content = "HTTP/1.0 204 No Content\r\n\r\n";
        assert_eq!(http_result(no_content, &range).await, Ok(Passed::Http(204)));
        let reset = "HTTP/1.1 205 Reset Content\r\n\r\n";
        assert_eq!(http_result(reset, &range).await, Err(Failure::Status(205)));
        let list = [200..=200, 202..=202];
        let accepted = "HTTP/1.1 202 Accepted\r\n\r\n";
        assert_eq!(http_result(accepted, &list).await, Ok(Passed::Http(202)));
        let created = "HTTP/1.1 201 Created\r\n\r\n";
        assert_eq!(http_result(created, &list).await, Err(Failure::Status(201)));
    }

    #[tokio::test]
    async fn http_bad_responses() {
        let codes = ExpectedCodes::default().0;
        let ssh = http_result("SSH-2.0-OpenSSH_9.2\r\n", &codes).await;
        assert!(
            matches!(ssh, Err(Failure::BadResponse(ref s)) if s.contains("SSH-2.0")),
            "{ssh:?}"
        );
        let long = http_result(&"x".repeat(9000), &codes).await;
        let expected = Failure::BadResponse("no line end in the first 8 KiB".into());
        assert_eq!(long, Err(expected));
        let server = serve(Peer::Close, None).await;
        let outcome = run(&check(CheckKind::Http), server.addr).await;
        assert_eq!(outcome.result, Err(Failure::Closed));
    }

    #[tokio::test]
    async fn silent_server_times_out() {
        let server = serve(Peer::Silent, None).await;
        let mut http = check(CheckKind::Http);
        http.timeout = Duration::from_millis(300);
        let outcome = run(&http, server.addr).await;
        assert_eq!(outcome.result, Err(Failure::Timeout(http.timeout)));
        assert!(outcome.took >= http.timeout, "{:?}", outcome.took);
        assert!(
            outcome.took < http.timeout + Duration::from_secs(1),
            "{:?}",
            outcome.took
        );
    }

    #[tokio::test]
    async fn http_request_bytes() {
        let mut server = serve(Peer::Answer(OK.to_owned()), None).await;
        let mut http = check(CheckKind::Http);
        assert_eq!(run(&http, server.addr).await.result, Ok(Passed::Http(200)));
        let expected = format!(
            "GET / HTTP/1.1\r\nHost: {}\r\nUser-Agent: lbd-health-check\r\n\
             Accept: */*\r\nConnection: close\r\n\r\n",
            server.addr
        );
        assert_eq!(server.requests.try_recv().unwrap(), expected.as_bytes());
        http.http.method = "HEAD".into();
        http.http.path = "/healthz".into();
        http.http.host = Some("api.example".into());
        assert_eq!(run(&http, server.addr).await.result, Ok(Passed::Http(200)));
        let expected = "HEAD /healthz HTTP/1.1\r\nHost: api.example\r\n\
                        User-Agent: lbd-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n";
        assert_eq!(server.requests.try_recv().unwrap(), expected.as_bytes());
    }

    #[tokio::test]
    async fn https_without_and_with_ca_file() {
        let id = self_signed();
        let server = serve(Peer::Answer(OK.to_owned()), Some(acceptor(&id, None))).await;
        let mut https = check(CheckKind::Https);
        assert_eq!(run(&https, server.addr).await.result, Ok(Passed::Http(200)));
        let ca = TempFile::new(id.cert.pem());
        https.tls.ca_file = Some(ca.0.clone());
        // No sni: the certificate must be for the address, 127.0.0.1.
        assert_eq!(run(&https, server.addr).await.result, Ok(Passed::Http(200)));
        https.tls.sni = Some("localhost".into());
        assert_eq!(run(&https, server.addr).await.result, Ok(Passed::Http(200)));
        https.tls.sni = Some("other.example".into());
        let result = run(&https, server.addr).await.result;
        assert!(matches!(result, Err(Failure::Tls(_))), "{result:?}");
        let other_ca = TempFile::new(self_signed().cert.pem());
        https.tls.ca_file = Some(other_ca.0.clone());
        https.tls.sni = Some("localhost".into());
        let result = run(&https, server.addr).await.result;
        assert!(matches!(result, Err(Failure::Tls(_))), "{result:?}");
    }

    #[tokio::test]
    async fn https_client_certificate() {
        let (server_id, client_id) = (self_signed(), self_signed());
        let tls = acceptor(&server_id, Some(client_id.cert.der()));
        let server = serve(Peer::Answer(OK.to_owned()), Some(tls)).await;
        let mut https = check(CheckKind::Https);
        let result = run(&https, server.addr).await.result;
        assert!(matches!(result, Err(Failure::Tls(_))), "{result:?}");
        let cert = TempFile::new(client_id.cert.pem());
        let key = TempFile::new(client_id.key_pair.serialize_pem());
        https.tls.client_cert = Some(cert.0.clone());
        https.tls.client_key = Some(key.0.clone());
        assert_eq!(run(&https, server.addr).await.result, Ok(Passed::Http(200)));
    }

    #[tokio::test]
    async fn tls_hello() {
        let tls_server = serve(Peer::Silent, Some(acceptor(&self_signed(), None))).await;
        let hello = check(CheckKind::TlsHello);
        assert_eq!(
            run(&hello, tls_server.addr).await.result,
            Ok(Passed::Handshake)
        );
        let echo = serve(Peer::Echo, None).await;
        let banner = serve(Peer::Banner("220 mail ESMTP\r\n".into()), None).await;
        let close = serve(Peer::Close, None).await;
        for server in [echo, banner, close] {
            let outcome = run(&hello, server.addr).await;
            let failed = matches!(outcome.result, Err(Failure::Tls(_) | Failure::Closed));
            assert!(failed, "{:?}", outcome.result);
            assert!(outcome.took < Duration::from_secs(1), "{:?}", outcome.took);
        }
    }

    #[tokio::test]
    async fn bad_sni_is_a_setup_error() {
        let mut hello = check(CheckKind::TlsHello);
        hello.tls.sni = Some("not a name".into());
        let e = Probe::new(&hello).err().unwrap();
        assert_eq!(
            (e.field, e.to_string().as_str()),
            ("sni", "sni \"not a name\": not a valid DNS name")
        );
    }
}
