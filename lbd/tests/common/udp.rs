//! UDP members and clients for the UDP listener tests: a member answers
//! each datagram with `<tag> <length>` (so a 64 KiB datagram gets a short
//! answer), a client asks and waits a bounded time.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// A UDP member on 127.0.0.1; stops when dropped.
pub struct UdpMember {
    pub addr: SocketAddr,
    pub tag: String,
    /// Datagrams it received.
    pub received: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl UdpMember {
    /// On a port below the ephemeral range ([`super::free_addr`]): a test
    /// that stops a member and starts it again on the same address must
    /// not find the port taken meanwhile by some socket's ephemeral bind
    /// (lbd's flow sockets, clients): CI once lost a test to that.
    pub async fn start(tag: &str) -> UdpMember {
        for _ in 0..20 {
            if let Ok(socket) = UdpSocket::bind(super::free_addr()).await {
                return Self::serve(socket, tag);
            }
        }
        panic!("no free UDP port for member {tag}");
    }

    /// On a given address (a member restarted where it was).
    pub async fn start_on(addr: SocketAddr, tag: &str) -> UdpMember {
        let socket = UdpSocket::bind(addr).await.expect("bind member again");
        Self::serve(socket, tag)
    }

    fn serve(socket: UdpSocket, tag: &str) -> UdpMember {
        let addr = socket.local_addr().expect("member addr");
        let received = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&received);
        let answer = tag.to_string();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 70_000];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                counted.fetch_add(1, Ordering::Relaxed);
                let reply = format!("{answer} {n}");
                let _ = socket.send_to(reply.as_bytes(), from).await;
            }
        });
        UdpMember {
            addr,
            tag: tag.to_string(),
            received,
            task,
        }
    }

    /// Stops answering and closes its socket: datagrams to it then draw
    /// an ICMP port unreachable.
    pub async fn stop(self) {
        self.task.abort();
        // The socket closes when the aborted task is dropped; wait for it.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !self.task.is_finished() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(self.task.is_finished(), "member task did not stop");
        // Let the runtime drop the task (and its socket).
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Drop for UdpMember {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A `[[pool.member]]` entry for `m`.
pub fn udp_member(m: &UdpMember) -> String {
    format!(
        "[[pool.member]]\naddress = \"127.0.0.1\"\nport = {}\n",
        m.addr.port()
    )
}

/// A client socket (its own port: its own flow).
pub async fn client() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.expect("bind client")
}

/// Sends `payload` to `to` and waits up to `within` for an answer:
/// `(tag, length)` as the member wrote it, or `None`.
pub async fn ask(
    socket: &UdpSocket,
    to: SocketAddr,
    payload: &[u8],
    within: Duration,
) -> Option<(String, usize)> {
    socket.send_to(payload, to).await.expect("send");
    let mut buf = vec![0u8; 2048];
    let (n, from) = tokio::time::timeout(within, socket.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    assert_eq!(from, to, "the answer must come from the listener's address");
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    let (tag, len) = text.split_once(' ')?;
    Some((tag.to_string(), len.parse().ok()?))
}

/// Like [`ask`], retried (at most `tries` times, `within` each) until an
/// answer comes: datagrams may be lost.
pub async fn ask_until_answered(
    socket: &UdpSocket,
    to: SocketAddr,
    payload: &[u8],
    within: Duration,
    tries: usize,
) -> Option<(String, usize)> {
    for _ in 0..tries {
        if let Some(answer) = ask(socket, to, payload, within).await {
            return Some(answer);
        }
    }
    None
}
