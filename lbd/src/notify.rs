//! systemd's notify protocol (`Type=notify`), as `haproxy -Ws` speaks it:
//! one datagram per state change to the unix socket named by
//! `NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace).
//!
//! lbd sends `READY=1` (with `MAINPID`) once it serves, `RELOADING=1` when
//! a reload starts and `READY=1` when it ended (applied or rejected), and
//! `STOPPING=1` when it stops. Without `NOTIFY_SOCKET` nothing is sent.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Where notifications go, read once from `NOTIFY_SOCKET`.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    to: SocketAddr,
}

impl Notifier {
    /// The notifier of `NOTIFY_SOCKET`, if it is set. HAProxy (and
    /// sd_notify) unset it so that children do not inherit it; so does
    /// this (call it before starting threads).
    pub fn from_env() -> io::Result<Option<Notifier>> {
        let Some(name) = std::env::var_os("NOTIFY_SOCKET") else {
            return Ok(None);
        };
        // Called by the main thread before any other thread runs.
        std::env::remove_var("NOTIFY_SOCKET");
        let bytes = std::os::unix::ffi::OsStrExt::as_bytes(name.as_os_str());
        let to = match bytes.strip_prefix(b"@") {
            Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name)?,
            None => SocketAddr::from_pathname(std::path::Path::new(&name))?,
        };
        let socket = UnixDatagram::unbound()?;
        Ok(Some(Notifier { socket, to }))
    }

    /// Sends one state (`READY=1`, ...); failures are the caller's to log.
    pub fn send(&self, state: &str) -> io::Result<()> {
        self.socket.send_to_addr(state.as_bytes(), &self.to)?;
        Ok(())
    }

    pub fn ready(&self) -> io::Result<()> {
        self.send(&format!("READY=1\nMAINPID={}", std::process::id()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_arrive_as_datagrams() {
        let dir = std::env::temp_dir().join(format!("lbd-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).expect("bind");
        let notifier = Notifier {
            socket: UnixDatagram::unbound().expect("socket"),
            to: SocketAddr::from_pathname(&path).expect("addr"),
        };
        notifier.ready().expect("ready");
        notifier.send("RELOADING=1").expect("reloading");
        let mut buf = [0u8; 256];
        let n = listener.recv(&mut buf).expect("recv");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert_eq!(text, format!("READY=1\nMAINPID={}", std::process::id()));
        let n = listener.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"RELOADING=1");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
