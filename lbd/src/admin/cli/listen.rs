//! Binding the CLI sockets, and accepting on them.
//!
//! * A unix socket is bound at `<path>.<pid>.tmp`, given its mode, then
//!   renamed over `<path>` (see the module above).
//! * A TCP socket is bound with SO_REUSEADDR (a restart binds over
//!   TIME_WAIT leftovers) and without SO_REUSEPORT, as the admin HTTP
//!   binds: a second process cannot share the address and take part of
//!   the connections, its bind fails. `[::]` binds are v6-only. A reload
//!   that keeps an address keeps its socket ([`Held`]): binding it again
//!   while it is served would fail. A process taking over (`haproxy -x
//!   <unix stats socket> -sf <pid>`) takes the old one's socket from those
//!   it received ([`crate::sockets::take_one_inherited`]), and `_getsocks`
//!   hands the served ones over with the listeners
//!   ([`served_listeners`]).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context as _;
use lbd_config::{StatsAddress, StatsSocket};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use crate::admin::socket_file::SocketFile;

/// The TCP sockets served, by address (duplicates of the served ones).
pub type Held = HashMap<SocketAddr, std::net::TcpListener>;

/// The TCP stats sockets being served, for `_getsocks`.
static SERVED: Mutex<Option<Held>> = Mutex::new(None);

/// Records `held` as the TCP stats sockets being served.
pub fn set_served(held: &Held) {
    let copies = held
        .iter()
        .filter_map(|(addr, l)| Some((*addr, l.try_clone().ok()?)))
        .collect();
    *SERVED.lock().unwrap_or_else(|p| p.into_inner()) = Some(copies);
}

/// Duplicates of the TCP stats sockets being served.
pub fn served_listeners() -> Vec<std::net::TcpListener> {
    let served = SERVED.lock().unwrap_or_else(|p| p.into_inner());
    served
        .iter()
        .flat_map(|held| held.values().filter_map(|l| l.try_clone().ok()))
        .collect()
}

/// One bound CLI socket, not yet serving.
pub struct Bound {
    pub config: StatsSocket,
    socket: BoundSocket,
}

enum BoundSocket {
    Unix {
        listener: std::os::unix::net::UnixListener,
        file: SocketFile,
    },
    Tcp(std::net::TcpListener),
}

/// A socket being served.
pub enum Listener {
    Unix(UnixListener),
    Tcp(TcpListener),
}

/// An accepted connection.
pub enum Conn {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Listener {
    pub async fn accept(&self) -> io::Result<Conn> {
        match self {
            Listener::Unix(l) => l.accept().await.map(|(s, _)| Conn::Unix(s)),
            Listener::Tcp(l) => l.accept().await.map(|(s, _)| Conn::Tcp(s)),
        }
    }
}

/// Binds every socket of `configs`, or none (the first error). A TCP
/// address in `held` is not bound again: its socket is duplicated.
pub fn bind_all(configs: &[StatsSocket], held: &Held) -> anyhow::Result<Vec<Bound>> {
    configs
        .iter()
        .map(|config| {
            let socket = match &config.address {
                StatsAddress::Unix(path) => bind_unix(path, config.mode)?,
                StatsAddress::Tcp(addr) => BoundSocket::Tcp(bind_tcp(*addr, held)?),
            };
            Ok(Bound {
                config: config.clone(),
                socket,
            })
        })
        .collect()
}

/// Binds at a temporary path next to `path`, sets the mode, and renames
/// it over `path`.
fn bind_unix(path: &Path, mode: Option<u32>) -> anyhow::Result<BoundSocket> {
    let tmp = temporary_path(path);
    let _ = std::fs::remove_file(&tmp);
    let listener = std::os::unix::net::UnixListener::bind(&tmp)
        .with_context(|| format!("stats socket: cannot listen on {}", tmp.display()))?;
    let placed = (|| {
        if let Some(mode) = mode {
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
        }
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("stats socket: cannot create {}", path.display()));
    }
    let file = SocketFile::created(path)
        .with_context(|| format!("stats socket: cannot stat {}", path.display()))?;
    Ok(BoundSocket::Unix { listener, file })
}

/// `<path>.<pid>.tmp`.
fn temporary_path(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    PathBuf::from(tmp)
}

fn bind_tcp(addr: SocketAddr, held: &Held) -> anyhow::Result<std::net::TcpListener> {
    let socket = match held.get(&addr) {
        Some(served) => served.try_clone(),
        None => match crate::sockets::take_one_inherited(addr) {
            Some(inherited) => {
                tracing::info!("stats socket {addr}: taken from the old process (-x)");
                Ok(inherited)
            }
            None => crate::admin::tcp_listener(addr),
        },
    };
    socket.with_context(|| format!("stats socket: cannot listen on {addr}"))
}

impl Bound {
    /// Registers the socket with the runtime; a TCP one is also kept in
    /// `held`. The file of a unix socket goes when the returned one does.
    pub fn serve(self, held: &mut Held) -> io::Result<(Listener, Option<SocketFile>)> {
        match self.socket {
            BoundSocket::Unix { listener, file } => {
                listener.set_nonblocking(true)?;
                Ok((
                    Listener::Unix(UnixListener::from_std(listener)?),
                    Some(file),
                ))
            }
            BoundSocket::Tcp(listener) => {
                listener.set_nonblocking(true)?;
                let kept = listener.try_clone()?;
                let listener = TcpListener::from_std(listener)?;
                if let StatsAddress::Tcp(addr) = self.config.address {
                    held.insert(addr, kept);
                }
                Ok((Listener::Tcp(listener), None))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_temporary_path_is_next_to_the_socket() {
        let tmp = temporary_path(Path::new("/run/lbd/x.sock"));
        assert_eq!(
            tmp,
            PathBuf::from(format!("/run/lbd/x.sock.{}.tmp", std::process::id()))
        );
    }

    #[tokio::test]
    async fn a_kept_tcp_address_is_not_bound_again() {
        let config = |addr: SocketAddr| StatsSocket {
            address: StatsAddress::Tcp(addr),
            mode: None,
            level: lbd_config::CliLevel::User,
            expose_fd_listeners: false,
            timeout: lbd_config::DEFAULT_CLI_TIMEOUT,
        };
        let any = config("127.0.0.1:0".parse().expect("addr"));
        let mut held = Held::new();
        let mut bound = bind_all(&[any], &held).expect("binds");
        let first = bound.pop().expect("one");
        let (listener, _) = first.serve(&mut held).expect("serves");
        let Listener::Tcp(l) = &listener else {
            panic!("not tcp")
        };
        let addr = l.local_addr().expect("addr");
        // `held` has it under the configured address (port 0 here): keyed
        // as configured, so look it up by the bound one for the test.
        let kept = held.drain().map(|(_, l)| l).next().expect("held");
        let held = Held::from([(addr, kept)]);
        // Bound again while served: a second bind would fail.
        assert!(crate::admin::tcp_listener(addr).is_err());
        assert!(bind_all(&[config(addr)], &held).is_ok());
        assert!(bind_all(&[config(addr)], &Held::new()).is_err());
    }
}
