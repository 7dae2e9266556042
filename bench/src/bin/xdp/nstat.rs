//! The kernel's IP/TCP counters of a network namespace (`/proc/net/snmp`
//! and `/proc/net/netstat`, as `nstat` shows them), read from a thread
//! inside it: which side retransmits SYNs, who rejects what, checksum
//! errors.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use lbd_test_support::netlab::Ns;

/// Counter name (`Tcp.RetransSegs`, `TcpExt.PAWSTimewait`, ...) -> value.
pub type Counters = BTreeMap<String, u64>;

/// Parses the pairs of lines of `/proc/net/snmp` or `/proc/net/netstat`:
/// `Proto: Name1 Name2 ...` followed by `Proto: v1 v2 ...`.
pub fn parse(text: &str, into: &mut Counters) -> Result<()> {
    let mut lines = text.lines();
    while let Some(names) = lines.next() {
        let Some(values) = lines.next() else {
            bail!("odd number of lines: {names:?} has no values");
        };
        let (proto, names) = names.split_once(':').context("no `:` in a header line")?;
        let (proto2, values) = values.split_once(':').context("no `:` in a value line")?;
        if proto != proto2 {
            bail!("header {proto:?} followed by values of {proto2:?}");
        }
        for (n, v) in names.split_whitespace().zip(values.split_whitespace()) {
            // Some values (Tcp MaxConn) are -1: not counters, skipped.
            if let Ok(v) = v.parse::<u64>() {
                into.insert(format!("{proto}.{n}"), v);
            }
        }
    }
    Ok(())
}

/// The counters of `ns`.
pub fn read(ns: &Ns) -> Result<Counters> {
    let texts = ns.run(|| -> std::io::Result<(String, String)> {
        Ok((
            std::fs::read_to_string("/proc/thread-self/net/snmp")?,
            std::fs::read_to_string("/proc/thread-self/net/netstat")?,
        ))
    });
    let (snmp, netstat) = texts.with_context(|| format!("reading the counters of {}", ns.name))?;
    let mut c = Counters::new();
    parse(&snmp, &mut c)?;
    parse(&netstat, &mut c)?;
    Ok(c)
}

/// `after - before`, only the counters that moved.
pub fn delta(after: &Counters, before: &Counters) -> Counters {
    after
        .iter()
        .filter_map(|(k, &a)| {
            let d = a.saturating_sub(before.get(k).copied().unwrap_or(0));
            (d > 0).then(|| (k.clone(), d))
        })
        .collect()
}

/// Sums several deltas (e.g. the three members).
pub fn sum<'a>(deltas: impl IntoIterator<Item = &'a Counters>) -> Counters {
    let mut out = Counters::new();
    for d in deltas {
        for (k, v) in d {
            *out.entry(k.clone()).or_insert(0) += v;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_snmp_and_netstat() {
        // Trimmed from /proc/net/snmp and /proc/net/netstat (kernel 6.18).
        let snmp = "Ip: Forwarding DefaultTTL InReceives\nIp: 2 64 643504811\n\
                    Tcp: RtoAlgorithm MaxConn RetransSegs InCsumErrors\nTcp: 1 -1 1564 0\n";
        let netstat = "TcpExt: SyncookiesSent TW PAWSTimewait TCPSynRetrans\n\
                       TcpExt: 0 7796 527 1564\n";
        let mut c = Counters::new();
        parse(snmp, &mut c).unwrap();
        parse(netstat, &mut c).unwrap();
        assert_eq!(c["Ip.InReceives"], 643_504_811);
        assert_eq!(c["Tcp.RetransSegs"], 1564);
        assert!(!c.contains_key("Tcp.MaxConn"));
        assert_eq!(c["TcpExt.PAWSTimewait"], 527);
        let mut later = c.clone();
        *later.get_mut("TcpExt.PAWSTimewait").unwrap() += 3;
        let d = delta(&later, &c);
        assert_eq!(d.len(), 1);
        assert_eq!(d["TcpExt.PAWSTimewait"], 3);
        assert_eq!(sum([&d, &d])["TcpExt.PAWSTimewait"], 6);
        assert!(parse("Tcp: A B\n", &mut c).is_err());
        assert!(parse("Tcp: A\nIp: 1\n", &mut c).is_err());
    }
}
