//! `tcp_script` checks: HAProxy's `tcp-check connect / send / send-binary /
//! expect string|rstring|binary` steps, run in order over TCP, the check's
//! timeout bounding the whole script.
//!
//! As in HAProxy: a script without a `connect` step starts on a connection
//! to the member's check address; an `expect` looks at everything that
//! arrived since the last `send` (or `connect`), reading more until it
//! matches, and fails when the member closes, when
//! [`SCRIPT_BUFFER`] bytes arrived without a match (HAProxy's
//! `tune.bufsize`) or at the timeout. So a member that streams forever or
//! never answers fails with at most that much of its answer in memory.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use lbd_config::model::{Expectation, ScriptStep, SCRIPT_BUFFER};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::http::quote;

/// Bytes of a binary answer quoted (in hex) in a failure reason.
const HEX_QUOTE_MAX: usize = 32;

/// A configured script, shared by the tasks checking each member.
pub struct Script {
    steps: Vec<ScriptStep>,
    timeout: Duration,
}

/// Why a script failed: at which step (from 1, as configured; `None` for
/// the implicit first connect) and what happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptFailure {
    pub step: Option<usize>,
    pub reason: String,
    /// lbd could not open the connection for lack of its own resources:
    /// says nothing about the member.
    pub local: bool,
}

impl std::fmt::Display for ScriptFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.step {
            Some(step) => write!(f, "tcp_script step {step}: {}", self.reason),
            None => write!(f, "tcp_script: {}", self.reason),
        }
    }
}

/// The state of one run: the connection, the answer since the last send,
/// and the step being run.
struct Run {
    stream: Option<TcpStream>,
    answer: Vec<u8>,
    len: usize,
    /// The member closed its side (or reset after sending something).
    closed: bool,
    step: Option<usize>,
}

impl Script {
    pub fn new(steps: &[ScriptStep], timeout: Duration) -> Script {
        Script {
            steps: steps.to_vec(),
            timeout,
        }
    }

    /// Runs the script against `target` (the member's check address).
    pub async fn run(&self, target: SocketAddr) -> Result<(), ScriptFailure> {
        let mut run = Run {
            stream: None,
            answer: vec![0; SCRIPT_BUFFER],
            len: 0,
            closed: false,
            step: None,
        };
        let result = tokio::time::timeout(self.timeout, run.all(&self.steps, target)).await;
        match result {
            Ok(result) => result,
            Err(_) => Err(run.timed_out(&self.steps, self.timeout)),
        }
    }
}

impl Run {
    async fn all(&mut self, steps: &[ScriptStep], target: SocketAddr) -> Result<(), ScriptFailure> {
        if !matches!(steps.first(), Some(ScriptStep::Connect { .. })) {
            self.connect(target).await?;
        }
        for (i, step) in steps.iter().enumerate() {
            self.step = Some(i + 1);
            match step {
                ScriptStep::Connect { port } => {
                    let port = port.unwrap_or(target.port());
                    self.connect(SocketAddr::new(target.ip(), port)).await?;
                }
                ScriptStep::Send(payload) => self.send(payload.bytes()).await?,
                ScriptStep::Expect(expect) => self.expect(expect).await?,
            }
        }
        Ok(())
    }

    fn fail(&self, reason: impl Into<String>) -> ScriptFailure {
        ScriptFailure {
            step: self.step,
            reason: reason.into(),
            local: false,
        }
    }

    async fn connect(&mut self, target: SocketAddr) -> Result<(), ScriptFailure> {
        self.stream = None;
        self.len = 0;
        self.closed = false;
        match TcpStream::connect(target).await {
            Ok(stream) => {
                self.stream = Some(stream);
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                Err(self.fail(format!("connect to {target} refused")))
            }
            Err(e) => Err(ScriptFailure {
                local: crate::sockets::is_local_shortage(&e),
                ..self.fail(format!("connect to {target}: {e}"))
            }),
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), ScriptFailure> {
        // HAProxy forgets the previous answer when it sends.
        self.len = 0;
        let Some(stream) = self.stream.as_mut() else {
            return Err(self.fail("no connection"));
        };
        match stream.write_all(bytes).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.fail(format!("write: {e}"))),
        }
    }

    /// Reads until the answer matches, the member closes or the buffer is
    /// full.
    async fn expect(&mut self, expect: &Expectation) -> Result<(), ScriptFailure> {
        loop {
            let answer = &self.answer[..self.len];
            if matches(expect, answer) {
                return Ok(());
            }
            if self.closed {
                return Err(self.fail(mismatch(expect, answer, "")));
            }
            if self.len == SCRIPT_BUFFER {
                let within = format!(" in the first {} KiB", SCRIPT_BUFFER / 1024);
                return Err(self.fail(mismatch(expect, answer, &within)));
            }
            let Some(stream) = self.stream.as_mut() else {
                return Err(self.fail("no connection"));
            };
            match stream.read(&mut self.answer[self.len..]).await {
                Ok(0) => self.closed = true,
                Ok(n) => self.len += n,
                // A reset right after an answer ends it, as in HAProxy.
                Err(_) if self.len > 0 => self.closed = true,
                Err(e) => return Err(self.fail(format!("read: {e}"))),
            }
        }
    }

    /// The failure when the timeout cut the script short.
    fn timed_out(&self, steps: &[ScriptStep], timeout: Duration) -> ScriptFailure {
        let after = format!("timeout after {}", humantime::format_duration(timeout));
        let doing = match self.step.and_then(|s| steps.get(s - 1)) {
            None | Some(ScriptStep::Connect { .. }) => format!("{after} connecting"),
            Some(ScriptStep::Send(_)) => format!("{after} sending"),
            Some(ScriptStep::Expect(expect)) => {
                mismatch(expect, &self.answer[..self.len], &format!(" ({after})"))
            }
        };
        self.fail(doing)
    }
}

/// Whether `answer` holds what `expect` looks for.
fn matches(expect: &Expectation, answer: &[u8]) -> bool {
    match expect {
        Expectation::String(text) => contains(answer, text.as_bytes()),
        Expectation::Binary(bytes) => contains(answer, bytes),
        Expectation::Regex(regex) => regex.is_match(answer),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// `expected "+PONG"{context}, got "-ERR"`: what was expected and what
/// came, quoted (hex for binary expectations).
fn mismatch(expect: &Expectation, answer: &[u8], context: &str) -> String {
    let (wanted, got) = match expect {
        Expectation::String(text) => (format!("\"{}\"", quote(text.as_bytes())), text_of(answer)),
        Expectation::Regex(regex) => (format!("a match of /{}/", regex.as_str()), text_of(answer)),
        Expectation::Binary(bytes) => (format!("binary {}", hex(bytes)), hex_of(answer)),
    };
    format!("expected {wanted}{context}, got {got}")
}

fn text_of(answer: &[u8]) -> String {
    match answer.is_empty() {
        true => "nothing".to_owned(),
        false => format!("\"{}\"", quote(answer)),
    }
}

fn hex_of(answer: &[u8]) -> String {
    match answer.is_empty() {
        true => "nothing".to_owned(),
        false => format!("binary {}", hex(answer)),
    }
}

fn hex(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(HEX_QUOTE_MAX)];
    let more = if cut.len() < bytes.len() { "..." } else { "" };
    format!("{}{more}", lbd_config::check_program::to_hex(cut))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use lbd_config::model::{Payload, ScriptRegex};
    use tokio::net::TcpListener;

    use super::*;

    /// What a test member answers to each request it reads.
    type Answer = Arc<dyn Fn(&[u8]) -> Option<Vec<u8>> + Send + Sync>;

    /// A member on loopback that sends `banner` on connect, then answers
    /// each read with `answer` (`None`: close).
    async fn member(banner: &'static [u8], answer: Answer) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let answer = Arc::clone(&answer);
                tokio::spawn(async move {
                    if conn.write_all(banner).await.is_err() {
                        return;
                    }
                    let mut buf = vec![0u8; 4096];
                    while let Ok(n @ 1..) = conn.read(&mut buf).await {
                        match answer(&buf[..n]) {
                            Some(reply) => {
                                if conn.write_all(&reply).await.is_err() {
                                    return;
                                }
                            }
                            None => return,
                        }
                    }
                });
            }
        });
        addr
    }

    fn redis(pong: &'static str) -> Answer {
        Arc::new(move |req| {
            Some(match req {
                b"PING\r\n" => pong.as_bytes().to_vec(),
                _ => b"-ERR unknown command\r\n".to_vec(),
            })
        })
    }

    fn send(text: &str) -> ScriptStep {
        ScriptStep::Send(Payload::Text(text.into()))
    }

    fn expect(text: &str) -> ScriptStep {
        ScriptStep::Expect(Expectation::String(text.into()))
    }

    async fn run(steps: &[ScriptStep], target: SocketAddr) -> Result<(), String> {
        Script::new(steps, Duration::from_millis(500))
            .run(target)
            .await
            .map_err(|f| f.to_string())
    }

    #[tokio::test]
    async fn redis_ping() {
        let script = [send("PING\r\n"), expect("+PONG")];
        let good = member(b"", redis("+PONG\r\n")).await;
        assert_eq!(run(&script, good).await, Ok(()));
        let wrong = member(b"", redis("-LOADING\r\n")).await;
        assert_eq!(
            run(&script, wrong).await,
            Err("tcp_script step 2: expected \"+PONG\" (timeout after 500ms), got \"-LOADING\\r\\n\"".into())
        );
        let closes = member(b"", Arc::new(|_| None)).await;
        assert_eq!(
            run(&script, closes).await,
            Err("tcp_script step 2: expected \"+PONG\", got nothing".into())
        );
        let refused = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        assert_eq!(
            run(&script, refused).await,
            Err(format!("tcp_script: connect to {refused} refused"))
        );
    }

    #[tokio::test]
    async fn binary_and_regex() {
        let echo = member(b"", Arc::new(|req| Some(req.to_vec()))).await;
        let binary = [
            ScriptStep::Send(Payload::Binary(vec![0, 1, 0xfe, 0xff])),
            ScriptStep::Expect(Expectation::Binary(vec![1, 0xfe])),
        ];
        assert_eq!(run(&binary, echo).await, Ok(()));
        let other = [
            ScriptStep::Send(Payload::Binary(vec![0, 1, 0xfe, 0xff])),
            ScriptStep::Expect(Expectation::Binary(vec![0xfe, 1])),
        ];
        assert_eq!(
            run(&other, echo).await,
            Err("tcp_script step 2: expected binary fe01 (timeout after 500ms), got binary 0001feff".into())
        );
        let regex = |p: &str| ScriptStep::Expect(Expectation::Regex(ScriptRegex::new(p).unwrap()));
        let info = member(
            b"",
            Arc::new(|_| Some(b"# Replication\r\nrole:master\r\n".to_vec())),
        )
        .await;
        assert_eq!(
            run(&[send("INFO\r\n"), regex("role:(master|slave)")], info).await,
            Ok(())
        );
        assert_eq!(
            run(&[send("INFO\r\n"), regex("^role:slave")], info).await,
            Err(
                "tcp_script step 2: expected a match of /^role:slave/ (timeout after 500ms), \
                 got \"# Replication\\r\\nrole:master\\r\\n\""
                    .into()
            )
        );
    }

    #[tokio::test]
    async fn banner_and_answers_in_pieces() {
        // An SMTP-like banner, then an answer written a byte at a time.
        let slow = member(
            b"220 mail ESMTP\r\n",
            Arc::new(|_| Some(b"250 OK\r\n".to_vec())),
        )
        .await;
        let script = [expect("220 "), send("NOOP\r\n"), expect("250 OK")];
        assert_eq!(run(&script, slow).await, Ok(()));
        // An expect after a send does not see what came before the send.
        let script = [expect("220 "), send("NOOP\r\n"), expect("220")];
        assert!(run(&script, slow).await.is_err());
    }

    #[tokio::test]
    async fn connect_steps_and_ports() {
        let a = member(b"+OK POP3 ready\r\n", Arc::new(|_| None)).await;
        let b = member(b"* OK IMAP4 ready\r\n", Arc::new(|_| None)).await;
        let script = [
            ScriptStep::Connect { port: None },
            expect("+OK POP3"),
            ScriptStep::Connect {
                port: Some(b.port()),
            },
            expect("* OK IMAP4"),
        ];
        assert_eq!(run(&script, a).await, Ok(()));
        let script = [
            ScriptStep::Connect {
                port: Some(a.port()),
            },
            expect("* OK"),
        ];
        assert_eq!(
            run(&script, b).await,
            Err(
                "tcp_script step 2: expected \"* OK\" (timeout after 500ms), \
                 got \"+OK POP3 ready\\r\\n\""
                    .into()
            )
        );
    }

    #[tokio::test]
    async fn a_member_that_streams_forever_fails_at_the_buffer() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let streaming = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let chunk = vec![b'x'; 64 * 1024];
            // Bounded: 64 MiB at most, or until the check hangs up.
            for _ in 0..1024 {
                if conn.write_all(&chunk).await.is_err() {
                    break;
                }
            }
        });
        let started = std::time::Instant::now();
        let result = Script::new(&[expect("+PONG")], Duration::from_secs(5))
            .run(addr)
            .await;
        let failure = result.unwrap_err().to_string();
        assert!(
            failure.starts_with(
                "tcp_script step 1: expected \"+PONG\" in the first 16 KiB, got \"xxx"
            ),
            "{failure}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
        let _ = tokio::time::timeout(Duration::from_secs(5), streaming).await;
    }
}
