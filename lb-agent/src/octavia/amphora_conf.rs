//! The heartbeat settings of an amphora, read from the amphora agent's own
//! config file (`/etc/octavia/amphora-agent.conf`, written by Octavia's
//! controller when it builds the amphora):
//!
//! ```ini
//! [amphora_agent]
//! amphora_id = 1e0cc7e2-...
//! [health_manager]
//! controller_ip_port_list = 192.0.2.10:5555, 192.0.2.11:5555
//! heartbeat_key = insecure
//! heartbeat_interval = 10
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};

/// What the file says; every field is optional (flags fill the gaps).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AmphoraConf {
    pub amphora_id: Option<String>,
    pub health_managers: Vec<SocketAddr>,
    pub heartbeat_key: Option<String>,
    pub heartbeat_interval: Option<Duration>,
}

/// Reads `path`; errors name the file and line.
pub fn read(path: &std::path::Path) -> anyhow::Result<AmphoraConf> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse(&text).with_context(|| path.display().to_string())
}

fn parse(text: &str) -> anyhow::Result<AmphoraConf> {
    let mut conf = AmphoraConf::default();
    let mut section = String::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_owned();
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            bail!("line {}: expected `key = value`", n + 1);
        };
        let (key, value) = (key.trim(), value.trim());
        match (section.as_str(), key) {
            ("amphora_agent", "amphora_id") => conf.amphora_id = Some(value.to_owned()),
            ("health_manager", "controller_ip_port_list") => {
                conf.health_managers = value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| {
                        s.parse()
                            .with_context(|| format!("line {}: {s:?} is not ip:port", n + 1))
                    })
                    .collect::<anyhow::Result<_>>()?;
            }
            ("health_manager", "heartbeat_key") => conf.heartbeat_key = Some(value.to_owned()),
            ("health_manager", "heartbeat_interval") => {
                let seconds: u64 = value.parse().with_context(|| {
                    format!(
                        "line {}: heartbeat_interval {value:?} is not seconds",
                        n + 1
                    )
                })?;
                if seconds == 0 {
                    bail!("line {}: heartbeat_interval must be at least 1", n + 1);
                }
                conf.heartbeat_interval = Some(Duration::from_secs(seconds));
            }
            _ => {}
        }
    }
    Ok(conf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_amphora_agent_conf() {
        let conf = parse(
            "[DEFAULT]\ndebug = False\n\n[haproxy_amphora]\nbase_path = /var/lib/octavia\n\
             [health_manager]\ncontroller_ip_port_list = 192.0.2.10:5555, 192.0.2.11:5555\n\
             heartbeat_interval = 10\nheartbeat_key = insecure\n\n\
             [amphora_agent]\n# comment\namphora_id = 1e0cc7e2-4f7a-4c66-9c8b-2f1d6e3a9b10\n",
        )
        .expect("parses");
        assert_eq!(
            conf,
            AmphoraConf {
                amphora_id: Some("1e0cc7e2-4f7a-4c66-9c8b-2f1d6e3a9b10".into()),
                health_managers: vec![
                    "192.0.2.10:5555".parse().expect("addr"),
                    "192.0.2.11:5555".parse().expect("addr")
                ],
                heartbeat_key: Some("insecure".into()),
                heartbeat_interval: Some(Duration::from_secs(10)),
            }
        );
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse("[health_manager]\ncontroller_ip_port_list = nowhere\n").unwrap_err();
        assert!(format!("{e:#}").contains("line 2"), "{e:#}");
        let e = parse("[health_manager]\nheartbeat_interval = 0\n").unwrap_err();
        assert!(format!("{e:#}").contains("at least 1"), "{e:#}");
        assert!(parse("garbage\n").is_err());
    }
}
