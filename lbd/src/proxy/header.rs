//! PROXY protocol headers (HAProxy's spec, versions 1 and 2) that tell a
//! member the real client address. Written once, right after connecting.

use std::io::Write;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use lbd_config::ProxyProtocol;

/// The 12-byte signature that starts every v2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// Longest header we produce (v1 TCP6 with full addresses is 104 bytes).
pub const MAX_LEN: usize = 108;

/// Encodes the header for a connection from `client` to `local` (the address
/// the client connected to) into `out`.
pub fn encode(version: ProxyProtocol, client: SocketAddr, local: SocketAddr, out: &mut Vec<u8>) {
    let (src, dst) = same_family(client, local);
    match version {
        ProxyProtocol::V1 => v1(src, dst, out),
        ProxyProtocol::V2 => v2(src, dst, out),
    }
}

/// Both addresses in one family: IPv4-mapped IPv6 becomes IPv4, and if the
/// families still differ the IPv4 one is mapped into IPv6.
fn same_family(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    let (a, b) = (crate::proxy::canonical(a), crate::proxy::canonical(b));
    match (a.ip(), b.ip()) {
        (IpAddr::V4(x), IpAddr::V6(_)) => (SocketAddr::new(x.to_ipv6_mapped().into(), a.port()), b),
        (IpAddr::V6(_), IpAddr::V4(y)) => (a, SocketAddr::new(y.to_ipv6_mapped().into(), b.port())),
        _ => (a, b),
    }
}

fn v1(src: SocketAddr, dst: SocketAddr, out: &mut Vec<u8>) {
    let proto = if src.is_ipv4() { "TCP4" } else { "TCP6" };
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "PROXY {proto} {} {} {} {}\r\n",
        src.ip(),
        dst.ip(),
        src.port(),
        dst.port()
    );
}

fn v2(src: SocketAddr, dst: SocketAddr, out: &mut Vec<u8>) {
    out.extend_from_slice(&V2_SIGNATURE);
    out.push(0x21); // version 2, command PROXY
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.push(0x11); // AF_INET, STREAM
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        (s, d) => {
            out.push(0x21); // AF_INET6, STREAM
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&v6(s).octets());
            out.extend_from_slice(&v6(d).octets());
        }
    }
    out.extend_from_slice(&src.port().to_be_bytes());
    out.extend_from_slice(&dst.port().to_be_bytes());
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: ProxyProtocol, c: &str, l: &str) -> Vec<u8> {
        let mut out = Vec::new();
        encode(v, c.parse().unwrap(), l.parse().unwrap(), &mut out);
        assert!(out.len() <= MAX_LEN);
        out
    }

    #[test]
    fn v1_ipv4_and_ipv6() {
        assert_eq!(
            enc(ProxyProtocol::V1, "192.168.0.1:56324", "192.168.0.11:443"),
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
        );
        assert_eq!(
            enc(ProxyProtocol::V1, "[2001:db8::1]:1000", "[::1]:80"),
            b"PROXY TCP6 2001:db8::1 ::1 1000 80\r\n"
        );
    }

    #[test]
    fn v1_mapped_addresses_become_ipv4() {
        assert_eq!(
            enc(
                ProxyProtocol::V1,
                "[::ffff:10.1.2.3]:5000",
                "[::ffff:10.0.0.1]:80"
            ),
            b"PROXY TCP4 10.1.2.3 10.0.0.1 5000 80\r\n"
        );
    }

    #[test]
    fn v1_longest_header_fits() {
        let h = enc(
            ProxyProtocol::V1,
            "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe]:65535",
            "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
        );
        assert_eq!(h.len(), 104);
    }

    #[test]
    fn v2_ipv4_layout() {
        let h = enc(ProxyProtocol::V2, "10.0.0.1:4000", "10.0.0.2:80");
        let mut want = V2_SIGNATURE.to_vec();
        want.extend_from_slice(&[
            0x21, 0x11, 0, 12, 10, 0, 0, 1, 10, 0, 0, 2, 0x0f, 0xa0, 0, 80,
        ]);
        assert_eq!(h, want);
    }

    #[test]
    fn v2_ipv6_and_mixed_families() {
        let h = enc(ProxyProtocol::V2, "[::1]:1", "10.0.0.2:2");
        assert_eq!(&h[12..16], &[0x21, 0x21, 0, 36]);
        assert_eq!(h.len(), 16 + 36);
        let mut dst = [0u8; 16];
        dst[10] = 0xff;
        dst[11] = 0xff;
        dst[12..].copy_from_slice(&[10, 0, 0, 2]);
        assert_eq!(&h[32..48], &dst);
        assert_eq!(&h[48..], &[0, 1, 0, 2]);
    }
}
