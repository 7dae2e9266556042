//! Parsers for the `/proc` files the bench reads: `/proc/PID/stat` (CPU time,
//! process group), `/proc/PID/status` (resident memory) and `/proc/net/tcp`
//! (listening and established sockets). Pure functions on text, so they are
//! tested on captured samples.

use anyhow::{bail, Context, Result};

/// What the bench needs from `/proc/PID/stat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// Field 2: the command (thread) name, without the parentheses.
    pub comm: String,
    /// Field 3: the state (`R`, `S`, `D`, `Z` for a zombie, ...).
    pub state: char,
    /// Field 5: the process group.
    pub pgrp: i32,
    /// Field 9: the kernel's `PF_*` flags.
    pub flags: u64,
    /// Field 14: user time, clock ticks.
    pub utime: u64,
    /// Field 15: system time, clock ticks.
    pub stime: u64,
}

/// Parses one `/proc/PID/stat` line. The command name (field 2) is in
/// parentheses and may hold spaces and parentheses itself, so fields are
/// counted from the last `)`.
pub fn parse_stat(text: &str) -> Result<Stat> {
    let close = text
        .rfind(')')
        .with_context(|| format!("no ')' in /proc/PID/stat: {text:?}"))?;
    // After ") ": field 3 (state) is index 0.
    let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
    let field = |n: usize| -> Result<&str> {
        rest.get(n - 3)
            .copied()
            .with_context(|| format!("/proc/PID/stat has no field {n}: {text:?}"))
    };
    let num = |n: usize| -> Result<u64> {
        let f = field(n)?;
        f.parse::<u64>()
            .with_context(|| format!("/proc/PID/stat field {n} is not a number ({f:?}): {text:?}"))
    };
    let state = field(3)?.chars().next().unwrap_or('?');
    let pgrp_text = field(5)?;
    let pgrp = pgrp_text
        .parse::<i32>()
        .with_context(|| format!("/proc/PID/stat field 5 is not a pid ({pgrp_text:?})"))?;
    let comm = text
        .find('(')
        .filter(|&open| open < close)
        .map_or_else(String::new, |open| text[open + 1..close].to_string());
    Ok(Stat {
        comm,
        state,
        pgrp,
        flags: num(9)?,
        utime: num(14)?,
        stime: num(15)?,
    })
}

/// `PF_KTHREAD` in [`Stat::flags`]: a kernel thread.
pub const PF_KTHREAD: u64 = 0x0020_0000;

impl Stat {
    /// User + system time, clock ticks.
    pub fn ticks(&self) -> u64 {
        self.utime + self.stime
    }

    pub fn is_kernel_thread(&self) -> bool {
        self.flags & PF_KTHREAD != 0
    }
}

/// `VmRSS` from `/proc/PID/status`, in bytes. `None` for a process without
/// one (a zombie or a kernel thread).
pub fn parse_vmrss(text: &str) -> Result<Option<u64>> {
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("VmRSS:") {
            let mut parts = rest.split_whitespace();
            let value = parts
                .next()
                .with_context(|| format!("empty VmRSS line: {line:?}"))?;
            let kib: u64 = value
                .parse()
                .with_context(|| format!("VmRSS is not a number: {line:?}"))?;
            match parts.next() {
                Some("kB") => return Ok(Some(kib * 1024)),
                other => bail!("VmRSS in an unknown unit {other:?}: {line:?}"),
            }
        }
    }
    Ok(None)
}

/// Signal masks from `/proc/PID/status`: (`SigBlk`, `SigCgt`), bit `n-1`
/// for signal `n`.
pub fn parse_sig_masks(text: &str) -> Result<(u64, u64)> {
    let mask = |name: &str| -> Result<u64> {
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .with_context(|| format!("no {name} line in /proc/PID/status"))?;
        u64::from_str_radix(line.trim(), 16)
            .with_context(|| format!("{name} is not a hex mask: {line:?}"))
    };
    Ok((mask("SigBlk:")?, mask("SigCgt:")?))
}

/// TCP socket states as `/proc/net/tcp` writes them (hex).
pub const TCP_ESTABLISHED: u8 = 0x01;
pub const TCP_LISTEN: u8 = 0x0A;

/// One row of `/proc/net/tcp` (IPv4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpRow {
    pub local: std::net::SocketAddrV4,
    pub remote: std::net::SocketAddrV4,
    pub state: u8,
}

/// Parses `/proc/net/tcp`: a header line, then one socket per line, e.g.
/// `0: 0100007F:1F90 00000000:0000 0A ...` (addresses in host byte order
/// hex, ports big-endian hex, state hex).
pub fn parse_net_tcp(text: &str) -> Result<Vec<TcpRow>> {
    let mut rows = Vec::new();
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 4 {
            continue;
        }
        let state = u8::from_str_radix(fields[3], 16)
            .with_context(|| format!("bad state in /proc/net/tcp line {line:?}"))?;
        rows.push(TcpRow {
            local: parse_hex_addr(fields[1])
                .with_context(|| format!("bad local address in /proc/net/tcp line {line:?}"))?,
            remote: parse_hex_addr(fields[2])
                .with_context(|| format!("bad remote address in /proc/net/tcp line {line:?}"))?,
            state,
        });
    }
    Ok(rows)
}

fn parse_hex_addr(s: &str) -> Result<std::net::SocketAddrV4> {
    let (ip, port) = s.split_once(':').context("no ':'")?;
    let ip = u32::from_str_radix(ip, 16).context("bad address")?;
    let port = u16::from_str_radix(port, 16).context("bad port")?;
    // The kernel prints the network-order address as a native u32, so its
    // native bytes are the address bytes (127.0.0.1 reads 0100007F on x86).
    let ip = std::net::Ipv4Addr::from(ip.to_ne_bytes());
    Ok(std::net::SocketAddrV4::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from an nginx worker (`cat /proc/PID/stat`).
    const NGINX_STAT: &str = "4242 (nginx) S 4241 4241 4241 0 -1 4194624 1071 0 0 0 \
        153 287 0 0 20 0 1 0 12345678 58757120 1203 18446744073709551615 1 1 0 0 0 0 0 \
        16781312 402738695 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0";

    #[test]
    fn stat_fields() {
        let s = parse_stat(NGINX_STAT).unwrap();
        assert_eq!(
            s,
            Stat {
                comm: "nginx".into(),
                state: 'S',
                pgrp: 4241,
                flags: 4194624,
                utime: 153,
                stime: 287
            }
        );
    }

    #[test]
    fn stat_flags() {
        // Captured: `cat /proc/14/stat` (ksoftirqd/0) and an nginx worker.
        let ksoftirqd = "14 (ksoftirqd/0) S 2 0 0 0 -1 69238848 0 0 0 0 17 3270 0 0 20 0 1 0 \
            24 0 0 18446744073709551615 0 0 0 0 0 0 0 2147483647 0 1 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0";
        let k = parse_stat(ksoftirqd).unwrap();
        assert!(k.is_kernel_thread());
        assert_eq!(k.ticks(), 3287);
        assert_eq!(k.comm, "ksoftirqd/0");
        let n = parse_stat(NGINX_STAT).unwrap();
        assert!(!n.is_kernel_thread());
        assert_eq!(n.ticks(), 440);
        assert!(parse_stat("1 (x) S 0").is_err());
    }

    #[test]
    fn stat_with_parentheses_and_spaces_in_comm() {
        let text = "77 (a) b (c)) R 1 77 77 0 -1 0 0 0 0 0 5 6 0 0 20 0 1 0 1 1 1";
        let s = parse_stat(text).unwrap();
        assert_eq!((s.pgrp, s.utime, s.stime), (77, 5, 6));
        assert_eq!(s.comm, "a) b (c)");
        assert_eq!(s.state, 'R');
    }

    #[test]
    fn stat_truncated_is_an_error_with_the_text() {
        let e = parse_stat("1 (x) S 0 1").unwrap_err();
        assert!(format!("{e:#}").contains("1 (x) S 0 1"), "{e:#}");
        assert!(parse_stat("garbage").is_err());
    }

    const STATUS: &str = "Name:\thaproxy\nUmask:\t0022\nState:\tS (sleeping)\n\
        VmPeak:\t  120100 kB\nVmSize:\t  120036 kB\nVmHWM:\t   12540 kB\n\
        VmRSS:\t   12312 kB\nRssAnon:\t    4200 kB\nThreads:\t1\n";

    #[test]
    fn vmrss() {
        assert_eq!(parse_vmrss(STATUS).unwrap(), Some(12312 * 1024));
        assert_eq!(parse_vmrss("Name:\tkthreadd\nState:\tS\n").unwrap(), None);
        assert!(parse_vmrss("VmRSS:\t12 MB\n").is_err());
        assert!(parse_vmrss("VmRSS:\tlots kB\n").is_err());
    }

    #[test]
    fn signal_masks() {
        // Captured from an HAProxy 2.6 master: while it loads a new config
        // (SIGUSR2 blocked, not caught), then in its wait loop.
        let loading = "Name:\thaproxy\nSigQ:\t0/95562\nSigPnd:\t0000000000000000\n\
            ShdPnd:\t0000000000000000\nSigBlk:\t0000000000310a01\nSigIgn:\t0000000004001004\n\
            SigCgt:\t0000000100000000\nCapInh:\t0000000000000000\n";
        let (blk, cgt) = parse_sig_masks(loading).unwrap();
        let usr2 = 1u64 << (libc::SIGUSR2 - 1);
        assert!(blk & usr2 != 0 && cgt & usr2 == 0);
        let waiting = loading
            .replace("0000000000310a01", "0000000000000000")
            .replace("0000000100000000", "0000000100716a03");
        let (blk, cgt) = parse_sig_masks(&waiting).unwrap();
        assert!(blk & usr2 == 0 && cgt & usr2 != 0);
        assert!(parse_sig_masks("SigBlk:\tzz\nSigCgt:\t0\n").is_err());
        assert!(parse_sig_masks("Name:\tx\n").is_err());
    }

    // Captured from `cat /proc/net/tcp` with a listener on 127.0.0.1:8080
    // and one established connection to it.
    const NET_TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2273913 1 0000000000000000 100 0 0 10 0\n\
   1: 0100007F:1F90 0100007F:A2C4 01 00000000:00000000 00:00000000 00000000     0        0 2276001 1 0000000000000000 20 4 30 10 -1\n\
   2: 0100007F:A2C4 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 2276000 1 0000000000000000 20 4 30 10 -1\n";

    #[test]
    fn net_tcp() {
        let rows = parse_net_tcp(NET_TCP).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].local.to_string(), "127.0.0.1:8080");
        assert_eq!(rows[0].state, TCP_LISTEN);
        assert_eq!(rows[1].remote.to_string(), "127.0.0.1:41668");
        assert_eq!(rows[2].state, TCP_ESTABLISHED);
        assert!(parse_net_tcp("hdr\n 0: zz:1 00000000:0000 0A\n").is_err());
    }
}
