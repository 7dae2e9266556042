//! `lbd ready`: asks a running lbd's admin server whether it can serve
//! (`GET /ready`, see [`crate::admin::ready`]), for keepalived's
//! `vrrp_script` and other failover scripts. One HTTP/1.0 request over TCP
//! or the admin's unix socket (`unix:/path`), every step within the
//! timeout, the answer read up to 64 KiB.

use std::io::{self, Read, Write};
use std::time::Duration;

/// The answer: the HTTP status and the body.
pub struct Answer {
    pub status: u16,
    pub body: String,
}

/// `GET /ready?pools=<pools>` on the admin server at `admin` (`addr:port`
/// or `unix:/path`).
pub fn ask(admin: &str, pools: &str, timeout: Duration) -> io::Result<Answer> {
    let request = format!("GET /ready?pools={pools} HTTP/1.0\r\nHost: lbd\r\n\r\n");
    let raw = match admin.strip_prefix("unix:") {
        Some(path) => {
            let mut s = std::os::unix::net::UnixStream::connect(path)?;
            s.set_read_timeout(Some(timeout))?;
            s.set_write_timeout(Some(timeout))?;
            exchange(&mut s, &request)?
        }
        None => {
            let addr = admin.parse().map_err(|e| {
                io::Error::new(io::ErrorKind::InvalidInput, format!("{admin}: {e}"))
            })?;
            let mut s = std::net::TcpStream::connect_timeout(&addr, timeout)?;
            s.set_read_timeout(Some(timeout))?;
            s.set_write_timeout(Some(timeout))?;
            exchange(&mut s, &request)?
        }
    };
    parse(&raw).ok_or_else(|| io::Error::other("not an HTTP answer"))
}

fn exchange(s: &mut (impl Read + Write), request: &str) -> io::Result<Vec<u8>> {
    s.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    s.take(64 << 10).read_to_end(&mut raw)?;
    Ok(raw)
}

fn parse(raw: &[u8]) -> Option<Answer> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some(Answer {
        status,
        body: body.trim_end().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_an_answer() {
        let a = parse(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 9\r\n\r\nnot ready\n")
            .expect("answer");
        assert_eq!(a.status, 503);
        assert_eq!(a.body, "not ready");
        assert!(parse(b"garbage").is_none());
    }
}
