//! `lbd demo`: three small HTTP backends on loopback and a listener in front
//! of them, so lbd can be tried with nothing but curl.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use lbd_config::Config;

/// Starts `n` demo HTTP backends on 127.0.0.1 (ephemeral ports), each on its
/// own thread, answering every request with its number and address.
pub fn start_backends(n: usize) -> io::Result<Vec<SocketAddr>> {
    (1..=n)
        .map(|i| {
            let listener = TcpListener::bind("127.0.0.1:0")?;
            let addr = listener.local_addr()?;
            thread::Builder::new()
                .name(format!("demo-backend-{i}"))
                .spawn(move || serve(i, addr, listener))?;
            Ok(addr)
        })
        .collect()
}

fn serve(index: usize, addr: SocketAddr, listener: TcpListener) {
    for conn in listener.incoming().flatten() {
        // One short-lived thread per connection is plenty for a demo.
        let _ = thread::Builder::new().spawn(move || {
            let _ = answer(index, addr, conn);
        });
    }
}

fn answer(index: usize, addr: SocketAddr, conn: TcpStream) -> io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    // Read the request head (up to the blank line), whatever it is.
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" || line.len() > 8192
        {
            break;
        }
    }
    let body = format!("hello from demo backend {index} ({addr})\n");
    let mut conn = conn;
    write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    conn.flush()
}

/// The demo's config: a round-robin listener on `bind` over `backends`,
/// HTTP health checks, and the admin server on `admin`.
pub fn config(
    bind: SocketAddr,
    admin: SocketAddr,
    backends: &[SocketAddr],
) -> Result<Config, lbd_config::LoadError> {
    let mut text = format!(
        "[admin]\nbind = \"{admin}\"\n\n\
         [[listener]]\nname = \"demo\"\nbind = \"{bind}\"\npool = \"demo\"\n\n\
         [[pool]]\nname = \"demo\"\nalgorithm = \"round_robin\"\n\
         [pool.health]\ntype = \"http\"\npath = \"/\"\ninterval = \"2s\"\n"
    );
    for b in backends {
        text.push_str(&format!(
            "\n[[pool.member]]\naddress = \"{}\"\nport = {}\n",
            b.ip(),
            b.port()
        ));
    }
    lbd_config::from_toml_str(&text, "built-in demo config")
}
