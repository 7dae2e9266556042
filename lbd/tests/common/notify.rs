//! A stand-in for systemd's notify socket: what lbd sends to
//! `NOTIFY_SOCKET` (`Type=notify`, `haproxy -Ws`).

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use super::WAIT;

pub struct NotifySocket {
    socket: UnixDatagram,
    pub path: PathBuf,
}

impl NotifySocket {
    pub fn bind(path: &Path) -> NotifySocket {
        let socket = UnixDatagram::bind(path).expect("bind notify socket");
        socket.set_read_timeout(Some(WAIT)).expect("timeout");
        NotifySocket {
            socket,
            path: path.to_owned(),
        }
    }

    /// The next notification, waiting at most [`WAIT`] (blocks the thread:
    /// call it inside `tokio::task::block_in_place`).
    pub fn next(&self) -> String {
        let mut buf = [0u8; 512];
        let n = self
            .socket
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no notification within {WAIT:?}: {e}"));
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}
