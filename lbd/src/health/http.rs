//! The HTTP/1.1 side of `http` and `https` checks: the request sent and the
//! parsing of the status line that comes back. Pure functions; the socket
//! work is in [`super::probe`].

use std::net::SocketAddr;

use lbd_config::model::HttpCheck;

/// The longest status line read before giving up (HAProxy's default
/// `tune.bufsize` is larger, but a status line is never near this).
pub(super) const MAX_STATUS_LINE: usize = 8 * 1024;

/// Longest piece of a bad answer quoted in an error message.
const QUOTE_MAX: usize = 64;

/// The request of one check of `target`. `Host` is the configured host, or
/// `target` itself (`10.0.0.1:80`, `[fd00::1]:80`). `Connection: close`
/// because the answer is never read past its status line.
pub(super) fn request(check: &HttpCheck, target: SocketAddr) -> Vec<u8> {
    let host = match &check.host {
        Some(host) => host.clone(),
        // SocketAddr's Display puts IPv6 addresses in brackets.
        None => target.to_string(),
    };
    format!(
        "{} {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: lbd-health-check\r\n\
         Accept: */*\r\nConnection: close\r\n\r\n",
        check.method, check.path
    )
    .into_bytes()
}

/// The status code of a status line, `HTTP/1.x NNN[ reason]`, with or
/// without its line end. `Err` says what is wrong, quoting the line.
pub(super) fn status_code(line: &[u8]) -> Result<u16, String> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    parse(line).ok_or_else(|| format!("not an HTTP/1.x status line: \"{}\"", quote(line)))
}

fn parse(line: &[u8]) -> Option<u16> {
    let rest = line.strip_prefix(b"HTTP/1.")?;
    let (minor, rest) = rest.split_first()?;
    let rest = rest.strip_prefix(b" ").filter(|_| minor.is_ascii_digit())?;
    let (code, after) = rest.split_at_checked(3)?;
    if !code.iter().all(u8::is_ascii_digit) || !(after.is_empty() || after[0] == b' ') {
        return None;
    }
    std::str::from_utf8(code).ok()?.parse().ok()
}

/// At most [`QUOTE_MAX`] bytes of `bytes`, printable, for an error message.
pub(super) fn quote(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(QUOTE_MAX)];
    let more = if cut.len() < bytes.len() { "..." } else { "" };
    format!("{}{more}", cut.escape_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(method: &str, path: &str, host: Option<&str>) -> HttpCheck {
        HttpCheck {
            method: method.to_owned(),
            path: path.to_owned(),
            host: host.map(str::to_owned),
            ..HttpCheck::default()
        }
    }

    #[test]
    fn request_defaults_host_to_target() {
        let req = request(&HttpCheck::default(), "10.0.0.1:6443".parse().unwrap());
        assert_eq!(
            String::from_utf8(req).unwrap(),
            "GET / HTTP/1.1\r\nHost: 10.0.0.1:6443\r\nUser-Agent: lbd-health-check\r\n\
             Accept: */*\r\nConnection: close\r\n\r\n"
        );
        let req = request(&HttpCheck::default(), "[fd00::1]:80".parse().unwrap());
        assert!(req.starts_with(b"GET / HTTP/1.1\r\nHost: [fd00::1]:80\r\n"));
    }

    #[test]
    fn request_uses_method_path_and_host() {
        let check = check("HEAD", "/healthz?verbose=1", Some("api.example"));
        let req = request(&check, "10.0.0.1:80".parse().unwrap());
        assert_eq!(
            String::from_utf8(req).unwrap(),
            "HEAD /healthz?verbose=1 HTTP/1.1\r\nHost: api.example\r\n\
             User-Agent: lbd-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn status_codes_parse() {
        assert_eq!(status_code(b"HTTP/1.1 200 OK\r\n"), Ok(200));
        assert_eq!(status_code(b"HTTP/1.0 503 Service Unavailable\n"), Ok(503));
        assert_eq!(status_code(b"HTTP/1.1 204"), Ok(204));
        assert_eq!(status_code(b"HTTP/1.1 404 \r\n"), Ok(404));
    }

    #[test]
    fn bad_status_lines_are_refused() {
        for line in [
            &b""[..],
            b"SSH-2.0-OpenSSH_9.2\r\n",
            b"HTTP/2 200\r\n",
            b"HTTP/1.1 20 OK\r\n",
            b"HTTP/1.1 2000\r\n",
            b"HTTP/1.1  200 OK\r\n",
            b"HTTP/1.x 200 OK\r\n",
            b"HTTP/1.1 2x0 OK\r\n",
            b"http/1.1 200 OK\r\n",
        ] {
            assert!(status_code(line).is_err(), "{}", quote(line));
        }
        assert_eq!(
            status_code(b"\x16\x03\x01garbage\r\n"),
            Err(r#"not an HTTP/1.x status line: "\x16\x03\x01garbage""#.to_owned())
        );
    }

    #[test]
    fn quotes_are_short_and_printable() {
        assert_eq!(quote(b"a\"\0"), "a\\\"\\x00");
        assert_eq!(quote(&[b'x'; 100]), format!("{}...", "x".repeat(QUOTE_MAX)));
    }
}
