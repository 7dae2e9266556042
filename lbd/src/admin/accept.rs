//! Accept loops of the admin listeners: every accepted connection gets a
//! slot from the listener's [`Limiter`] (which may close a waiting one to
//! make room) or a short 503, never a wait in the accept queue behind slow
//! clients. The loop also sweeps the limiter's timeouts.

use std::io::{Read as _, Write as _};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;
use tracing::error;

use super::http::{self, Context, Role};
use super::limit::{client_key, Limiter};

/// How often the limiter's timeouts are checked (their precision).
const SWEEP_EVERY: Duration = Duration::from_millis(250);

/// What a listener's connections are served with.
#[derive(Clone)]
pub struct Serving {
    pub ctx: Arc<Context>,
    pub role: Role,
    pub tls: Option<TlsAcceptor>,
    pub limiter: Arc<Limiter>,
}

pub async fn tcp(listener: Arc<tokio::net::TcpListener>, serving: Serving) {
    let mut sweep = sweep_timer();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    admit(stream, Some(client_key(peer.ip())), &serving);
                    settle().await;
                }
                Err(e) => accept_error(e).await,
            },
            _ = sweep.tick() => serving.limiter.sweep(),
        }
    }
}

pub async fn unix(listener: tokio::net::UnixListener, serving: Serving) {
    let mut sweep = sweep_timer();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    admit(stream, None, &serving);
                    settle().await;
                }
                Err(e) => accept_error(e).await,
            },
            _ = sweep.tick() => serving.limiter.sweep(),
        }
    }
}

fn sweep_timer() -> tokio::time::Interval {
    let mut timer = tokio::time::interval(SWEEP_EVERY);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    timer
}

/// Lets the connection just spawned read its request before the next
/// accept: a new connection is the youngest and last to be evicted, but a
/// flood of accepts could otherwise evict it before it was ever polled.
async fn settle() {
    tokio::task::yield_now().await;
}

fn admit<S>(stream: S, client: Option<std::net::IpAddr>, serving: &Serving)
where
    S: AsyncRead + AsyncWrite + AsFd + Unpin + Send + 'static,
{
    match serving.limiter.admit(client) {
        Ok(slot) => {
            tokio::spawn(http::serve(
                stream,
                Arc::clone(&serving.ctx),
                serving.role,
                serving.tls.clone(),
                slot,
            ));
        }
        Err(_) => refuse(&stream, serving.tls.is_some()),
    }
}

const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\
Content-Length: 32\r\nRetry-After: 1\r\nConnection: close\r\n\r\n\
admin server busy, retry later.\n";

/// Answers 503 without waiting for anything (TLS listeners just close),
/// then closes. Reads what already arrived first so the close is a FIN
/// rather than a reset that could destroy the answer.
fn refuse(stream: &impl AsFd, tls: bool) {
    if tls {
        return;
    }
    let socket = socket2::SockRef::from(stream);
    let mut sink = [0u8; 4096];
    for _ in 0..4 {
        match (&*socket).read(&mut sink) {
            Ok(n) if n > 0 => continue,
            _ => break,
        }
    }
    let _ = (&*socket).write(REFUSAL);
    let _ = socket.shutdown(std::net::Shutdown::Write);
}

/// Out of descriptors and the like: log, pause, go on.
async fn accept_error(e: std::io::Error) {
    error!("admin: accept failed: {e}");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_is_well_formed() {
        let text = std::str::from_utf8(REFUSAL).expect("ascii");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .and_then(|v| v.parse().ok())
            .expect("length");
        assert_eq!(body.len(), length);
    }
}
