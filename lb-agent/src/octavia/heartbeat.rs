//! Octavia's amphora heartbeat: how a data plane reports listener, pool
//! and member health and traffic counters to Octavia's health managers.
//!
//! One UDP datagram per health manager and interval:
//! `zlib(level 9, JSON {"id", "seq", "ver": 3, "listeners", "pools"})`
//! followed by HMAC-SHA256(key = heartbeat_key as UTF-8, msg = the
//! compressed bytes) as 64 lower-case hex characters. In version 3 `tx`,
//! `rx`, `totconns` and `ereq` are deltas since the previous heartbeat and
//! `conns` the current count. Pools are keyed `"<pool_id>:<listener_id>"`.
//!
//! [`decode`] checks a packet the way the health manager does (hex HMAC,
//! else a raw 32-byte one) and returns its JSON.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;

use anyhow::{bail, Context};
use flate2::read::ZlibDecoder;
use flate2::write::ZlibEncoder;
use flate2::Compression;
use ring::hmac;
use serde::{Deserialize, Serialize};
use tokio::net::UdpSocket;
use tracing::{debug, warn};

/// Largest packet sent (a UDP datagram is at most 65,507 bytes over IPv4).
pub const MAX_PACKET: usize = 65_000;

/// Largest JSON inflated by [`decode`].
#[allow(dead_code)] // decode is for tests and debugging
pub const MAX_INFLATED: usize = 1 << 20;

/// Length of the hex HMAC trailer.
#[allow(dead_code)] // decode is for tests and debugging
const HEX_TAG: usize = 64;

/// Traffic counters of a listener (deltas, except `conns`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct Counters {
    /// Bytes sent to clients.
    pub tx: u64,
    /// Bytes received from clients.
    pub rx: u64,
    /// Current connections.
    pub conns: u64,
    /// New connections.
    pub totconns: u64,
    /// Request errors.
    pub ereq: u64,
}

/// `OPEN` (ONLINE), or `FULL` at its connection limit (DEGRADED).
/// `UNSUPPORTED` is lbd's own: an enabled listener lbd does not serve; the
/// health manager logs the status and leaves the listener's operating
/// status as it was (see `model`).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerStatus {
    #[serde(rename = "OPEN")]
    Open,
    #[serde(rename = "FULL")]
    Full,
    #[serde(rename = "UNSUPPORTED")]
    Unsupported,
}

/// `UP`, or `DOWN` (ERROR).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolStatus {
    #[serde(rename = "UP")]
    Up,
    #[serde(rename = "DOWN")]
    Down,
}

/// A member's health as the health manager maps it: ONLINE, ERROR,
/// DRAINING, OFFLINE, NO_MONITOR.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberStatus {
    #[serde(rename = "UP")]
    Up,
    #[serde(rename = "DOWN")]
    Down,
    #[serde(rename = "DRAIN")]
    Drain,
    #[serde(rename = "MAINT")]
    Maint,
    #[serde(rename = "no check")]
    NoCheck,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ListenerReport {
    pub status: ListenerStatus,
    pub stats: Counters,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PoolReport {
    pub status: PoolStatus,
    /// By member id.
    pub members: BTreeMap<String, MemberStatus>,
}

/// What one heartbeat says. A listener missing from it is ERROR.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct Report {
    /// By listener id.
    pub listeners: BTreeMap<String, ListenerReport>,
    /// By `"<pool_id>:<listener_id>"`.
    pub pools: BTreeMap<String, PoolReport>,
}

/// The JSON sent.
#[derive(Serialize)]
struct Message<'a> {
    id: &'a str,
    seq: u64,
    ver: u32,
    listeners: &'a BTreeMap<String, ListenerReport>,
    pools: &'a BTreeMap<String, PoolReport>,
}

fn hmac_key(key: &str) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, key.as_bytes())
}

fn to_hex(bytes: &[u8]) -> Vec<u8> {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes
        .iter()
        .flat_map(|b| [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 15)]])
        .collect()
}

#[allow(dead_code)] // decode is for tests and debugging
fn from_hex(hex: &[u8]) -> Option<Vec<u8>> {
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    hex.chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

/// The packet for `report` from amphora `amphora_id`.
pub fn encode(amphora_id: &str, seq: u64, report: &Report, key: &str) -> anyhow::Result<Vec<u8>> {
    let json = serde_json::to_vec(&Message {
        id: amphora_id,
        seq,
        ver: 3,
        listeners: &report.listeners,
        pools: &report.pools,
    })?;
    let mut zlib = ZlibEncoder::new(Vec::new(), Compression::best());
    zlib.write_all(&json)?;
    let mut packet = zlib.finish()?;
    let tag = hmac::sign(&hmac_key(key), &packet);
    packet.extend(to_hex(tag.as_ref()));
    if packet.len() > MAX_PACKET {
        bail!(
            "heartbeat of {} listeners and {} pools is {} bytes, over the {MAX_PACKET} byte limit",
            report.listeners.len(),
            report.pools.len(),
            packet.len()
        );
    }
    Ok(packet)
}

/// The JSON of a heartbeat, once its HMAC checks out with `key`.
#[allow(dead_code)] // for tests and debugging
pub fn decode(packet: &[u8], key: &str) -> anyhow::Result<serde_json::Value> {
    let key = hmac_key(key);
    let verified = |tag_len: usize, tag: Option<Vec<u8>>| {
        let split = packet.len().checked_sub(tag_len)?;
        let (payload, trailer) = packet.split_at(split);
        let tag = tag.unwrap_or_else(|| trailer.to_vec());
        hmac::verify(&key, payload, &tag).ok().map(|()| payload)
    };
    let hex_tag = packet
        .len()
        .checked_sub(HEX_TAG)
        .and_then(|at| from_hex(&packet[at..]));
    let payload = hex_tag
        .and_then(|tag| verified(HEX_TAG, Some(tag)))
        .or_else(|| verified(32, None))
        .context("heartbeat HMAC mismatch (wrong key, or not a heartbeat)")?;

    let mut json = Vec::new();
    ZlibDecoder::new(payload)
        .take(MAX_INFLATED as u64 + 1)
        .read_to_end(&mut json)
        .context("heartbeat is not zlib data")?;
    if json.len() > MAX_INFLATED {
        bail!("heartbeat inflates to more than {MAX_INFLATED} bytes");
    }
    serde_json::from_slice(&json).context("heartbeat is not JSON")
}

/// Sends heartbeats of one amphora to the health managers.
pub struct Sender {
    v4: Option<UdpSocket>,
    v6: Option<UdpSocket>,
    targets: Vec<SocketAddr>,
    key: String,
    amphora_id: String,
    seq: u64,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("targets", &self.targets)
            .field("amphora_id", &self.amphora_id)
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

impl Sender {
    /// Binds an ephemeral UDP port per address family of `targets`.
    pub async fn new(
        targets: Vec<SocketAddr>,
        key: String,
        amphora_id: String,
    ) -> anyhow::Result<Self> {
        if targets.is_empty() {
            bail!("no health manager address to send heartbeats to");
        }
        let v4 = if targets.iter().any(SocketAddr::is_ipv4) {
            Some(
                UdpSocket::bind("0.0.0.0:0")
                    .await
                    .context("binding a UDP socket")?,
            )
        } else {
            None
        };
        let v6 = if targets.iter().any(SocketAddr::is_ipv6) {
            Some(
                UdpSocket::bind("[::]:0")
                    .await
                    .context("binding an IPv6 UDP socket")?,
            )
        } else {
            None
        };
        Ok(Sender {
            v4,
            v6,
            targets,
            key,
            amphora_id,
            seq: 0,
        })
    }

    /// Sends `report` as the next heartbeat (sequence numbers start at 1)
    /// to every health manager. One that cannot be sent to is logged and
    /// skipped; it is an error only if none could.
    pub async fn send(&mut self, report: &Report) -> anyhow::Result<()> {
        self.seq += 1;
        let packet = encode(&self.amphora_id, self.seq, report, &self.key)?;
        let mut sent = 0;
        for target in &self.targets {
            let socket = if target.is_ipv4() { &self.v4 } else { &self.v6 };
            let result = match socket {
                Some(socket) => socket.send_to(&packet, target).await.map(drop),
                None => Err(std::io::Error::other("no socket for its address family")),
            };
            match result {
                Ok(()) => sent += 1,
                Err(e) => warn!(health_manager = %target, error = %e, "heartbeat not sent"),
            }
        }
        if sent == 0 {
            bail!(
                "heartbeat {} reached none of the {} health managers",
                self.seq,
                self.targets.len()
            );
        }
        debug!(seq = self.seq, bytes = packet.len(), sent, "heartbeat");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::Value;

    use super::*;

    const SAMPLE_JSON: &str = include_str!("../../tests/data/octavia/heartbeat-v3-example.json");
    const SAMPLE_PACKET: &[u8] =
        include_bytes!("../../tests/data/octavia/heartbeat-v3-example.key-insecure-test-key.bin");
    const SAMPLE_KEY: &str = "insecure-test-key";

    fn sample() -> Value {
        serde_json::from_str(SAMPLE_JSON).unwrap()
    }

    #[test]
    fn decodes_the_real_sample() {
        assert_eq!(decode(SAMPLE_PACKET, SAMPLE_KEY).unwrap(), sample());
    }

    #[test]
    fn hmac_matches_the_sample() {
        let (compressed, tag) = SAMPLE_PACKET.split_at(SAMPLE_PACKET.len() - HEX_TAG);
        let ours = hmac::sign(&hmac_key(SAMPLE_KEY), compressed);
        assert_eq!(to_hex(ours.as_ref()), tag);
    }

    #[test]
    fn wrong_key_or_damage_is_rejected() {
        let msg = decode(SAMPLE_PACKET, "another-key")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("HMAC"), "{msg}");
        let mut damaged = SAMPLE_PACKET.to_vec();
        damaged[10] ^= 1;
        assert!(decode(&damaged, SAMPLE_KEY).is_err());
        for short in [&b""[..], b"abc", &SAMPLE_PACKET[..40]] {
            assert!(decode(short, SAMPLE_KEY).is_err());
        }
    }

    #[test]
    fn the_sample_is_a_report() {
        let mut json = sample();
        let report: Report = serde_json::from_value(json.clone()).unwrap();
        let pool = &report.pools
            ["26347bd8-172d-4df8-acdb-a4d83ef142cf:1107096f-289d-4b62-a168-9dc67609952a"];
        assert_eq!(pool.status, PoolStatus::Up);
        assert_eq!(
            pool.members["17e91741-dfcf-44ba-b11e-ba30f7860795"],
            MemberStatus::NoCheck
        );
        // Encoding it again gives the same JSON.
        let packet = encode(
            "aaaaaaaa-0000-4000-8000-000000000001",
            1,
            &report,
            SAMPLE_KEY,
        )
        .unwrap();
        assert_eq!(decode(&packet, SAMPLE_KEY).unwrap(), json);
        // The trailer is 64 lower-case hex characters.
        let tag = &packet[packet.len() - HEX_TAG..];
        assert!(tag.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')));
        json["seq"] = 2.into();
        assert_ne!(decode(&packet, SAMPLE_KEY).unwrap(), json);
    }

    fn report(listeners: usize) -> Report {
        let mut report = Report::default();
        for i in 0..listeners {
            // Hash-like ids: they do not compress.
            let id = hex_id(i as u64);
            report.listeners.insert(
                id.clone(),
                ListenerReport {
                    status: if i % 2 == 0 {
                        ListenerStatus::Open
                    } else {
                        ListenerStatus::Full
                    },
                    stats: Counters {
                        tx: i as u64 * 1000,
                        rx: 7,
                        conns: 1,
                        totconns: 2,
                        ereq: 0,
                    },
                },
            );
            let members = [
                MemberStatus::Up,
                MemberStatus::Down,
                MemberStatus::Drain,
                MemberStatus::Maint,
            ]
            .into_iter()
            .enumerate()
            .map(|(m, s)| (hex_id(i as u64 * 10 + m as u64 + 1_000_000), s))
            .collect();
            report.pools.insert(
                format!("{}:{id}", hex_id(i as u64 + 5_000_000)),
                PoolReport {
                    status: PoolStatus::Down,
                    members,
                },
            );
        }
        report
    }

    fn hex_id(n: u64) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, &n.to_le_bytes());
        String::from_utf8(to_hex(&digest.as_ref()[..16])).unwrap()
    }

    #[test]
    fn round_trip() {
        let report = report(3);
        let packet = encode("amp-1", 42, &report, "k").unwrap();
        let json = decode(&packet, "k").unwrap();
        assert_eq!(json["id"], "amp-1");
        assert_eq!(json["seq"], 42);
        assert_eq!(json["ver"], 3);
        let back: Report = serde_json::from_value(json).unwrap();
        assert_eq!(back, report);
        // Empty reports are fine too.
        let packet = encode("amp-1", 1, &Report::default(), "k").unwrap();
        assert_eq!(
            decode(&packet, "k").unwrap()["listeners"],
            serde_json::json!({})
        );
    }

    #[test]
    fn raw_digest_is_accepted() {
        let mut packet = encode("amp-1", 1, &report(1), "k").unwrap();
        let compressed_len = packet.len() - HEX_TAG;
        packet.truncate(compressed_len);
        let tag = hmac::sign(&hmac_key("k"), &packet);
        packet.extend_from_slice(tag.as_ref());
        assert_eq!(decode(&packet, "k").unwrap()["id"], "amp-1");
    }

    #[test]
    fn oversize_report_is_an_error() {
        let msg = encode("amp-1", 1, &report(1000), "k")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("limit"), "{msg}");
    }

    #[test]
    fn inflation_is_bounded() {
        let mut zlib = ZlibEncoder::new(Vec::new(), Compression::best());
        zlib.write_all(&vec![b' '; 2 * MAX_INFLATED]).unwrap();
        let mut packet = zlib.finish().unwrap();
        let tag = hmac::sign(&hmac_key("k"), &packet);
        packet.extend(to_hex(tag.as_ref()));
        let msg = decode(&packet, "k").unwrap_err().to_string();
        assert!(msg.contains("more than"), "{msg}");
    }

    #[tokio::test]
    async fn sender_numbers_heartbeats_and_skips_unreachable_managers() {
        let hm = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let hm_addr = hm.local_addr().unwrap();
        // Port 0 cannot be sent to.
        let dead: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut sender = Sender::new(vec![dead, hm_addr], "k".into(), "amp-1".into())
            .await
            .unwrap();
        let report = report(2);
        for seq in 1..=2 {
            sender.send(&report).await.unwrap();
            let mut buf = vec![0; 65_536];
            let n = tokio::time::timeout(Duration::from_secs(5), hm.recv(&mut buf))
                .await
                .unwrap()
                .unwrap();
            let json = decode(&buf[..n], "k").unwrap();
            assert_eq!(json["seq"], seq);
            assert_eq!(json["id"], "amp-1");
        }

        let mut nowhere = Sender::new(vec![dead], "k".into(), "amp-1".into())
            .await
            .unwrap();
        assert!(nowhere.send(&report).await.is_err());
        assert!(Sender::new(vec![], "k".into(), "a".into()).await.is_err());
    }
}
