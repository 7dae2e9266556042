//! Gets lb-agent's listeners and pools into lbd, two ways:
//!
//! * through lbd's admin API: read the running config (`GET /api/config`),
//!   replace the listeners and pools lb-agent owns (names starting with
//!   `k8s:`, or the one pool of `apiservers` mode), and `PUT` it back only
//!   if that changes anything. Whatever else is in lbd's config (`[admin]`,
//!   static listeners) stays. Run periodically, this also re-pushes after
//!   lbd restarted with its file config;
//! * as a config file for an lbd started with `-c`: a base file plus
//!   lb-agent's entries, written atomically (temp file + rename), then
//!   SIGHUP to the pid in a pid file.
//!
//! The admin API is spoken over plain HTTP/1.1 (TCP or a unix socket),
//! with the bearer token when one is configured.

use std::path::PathBuf;

use anyhow::{bail, Context};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use lbd_config::file::{ListenerSection, PoolSection};
use lbd_config::ConfigFile;
use tokio::io::{AsyncRead, AsyncWrite};

/// Which listeners and pools of lbd's config lb-agent owns.
pub trait Owned {
    fn owns_listener(&self, l: &ListenerSection) -> bool;
    fn owns_pool(&self, p: &PoolSection) -> bool;
}

/// Owns every entry whose name starts with a prefix.
pub struct Prefix(pub &'static str);

impl Owned for Prefix {
    fn owns_listener(&self, l: &ListenerSection) -> bool {
        l.name.as_deref().is_some_and(|n| n.starts_with(self.0))
    }
    fn owns_pool(&self, p: &PoolSection) -> bool {
        p.name.as_deref().is_some_and(|n| n.starts_with(self.0))
    }
}

/// Where lbd's config goes.
#[derive(Debug, Clone)]
pub enum Target {
    /// lbd's admin API: `http://host:port` or `unix:/path`.
    Api { url: String, token: Option<String> },
    /// A config file for `lbd run -c`, built on `base`, and the pid file
    /// of the lbd to SIGHUP.
    File {
        path: PathBuf,
        base: Option<PathBuf>,
        pid_file: Option<PathBuf>,
    },
}

/// `current` with the owned entries replaced by `listeners` and `pools`.
pub fn merge(
    current: &ConfigFile,
    owned: &impl Owned,
    listeners: &[ListenerSection],
    pools: &[PoolSection],
) -> ConfigFile {
    let mut merged = current.clone();
    merged.listeners.retain(|l| !owned.owns_listener(l));
    merged.pools.retain(|p| !owned.owns_pool(p));
    merged.listeners.extend(listeners.iter().cloned());
    merged.pools.extend(pools.iter().cloned());
    merged
}

/// Makes lbd run `edit(its current config)` (for a file target, the edit
/// of the base config). Returns `true` if something was pushed, `false` if
/// lbd already had it.
pub async fn reconcile(
    target: &Target,
    edit: impl Fn(&ConfigFile) -> anyhow::Result<ConfigFile>,
) -> anyhow::Result<bool> {
    match target {
        Target::Api { url, token } => {
            let (code, body) = request(url, token.as_deref(), "GET", "/api/config", "").await?;
            if code != 200 {
                bail!("GET {url}/api/config: HTTP {code}: {}", body.trim());
            }
            let current: ConfigFile =
                serde_json::from_str(&body).context("lbd's running config is not valid JSON")?;
            let merged = edit(&current)?;
            if !changes(&current, &merged)? {
                return Ok(false);
            }
            let json = serde_json::to_string(&merged)?;
            let (code, body) = request(url, token.as_deref(), "PUT", "/api/config", &json).await?;
            if code != 200 {
                bail!("PUT {url}/api/config: HTTP {code}: {}", body.trim());
            }
            Ok(true)
        }
        Target::File {
            path,
            base,
            pid_file,
        } => {
            let base = match base {
                Some(base) => read_toml(base)?,
                None => ConfigFile::default(),
            };
            let merged = edit(&base)?;
            if path.exists() && !changes(&read_toml(path)?, &merged)? {
                return Ok(false);
            }
            write_file(path, &merged)?;
            if let Some(pid_file) = pid_file {
                signal_reload(pid_file)?;
            }
            Ok(true)
        }
    }
}

/// Whether `merged` is a different config from `current` for lbd (compared
/// as validated configs, so defaults spelled out or left out are equal).
/// Errors if `merged` is not a valid config.
fn changes(current: &ConfigFile, merged: &ConfigFile) -> anyhow::Result<bool> {
    let merged_cfg = lbd_config::validate(merged).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("the merged config is not valid: {}", lines.join("; "))
    })?;
    Ok(lbd_config::validate(current).ok().as_ref() != Some(&merged_cfg))
}

fn read_toml(path: &std::path::Path) -> anyhow::Result<ConfigFile> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("{} is not an lbd config", path.display()))
}

/// Writes `config` as TOML next to `path`, then renames it over `path`.
fn write_file(path: &std::path::Path, config: &ConfigFile) -> anyhow::Result<()> {
    let text = format!(
        "# Written by lb-agent; changes are overwritten.\n{}",
        toml::to_string(config).context("cannot render the config as TOML")?
    );
    let tmp = path.with_extension("tmp-lb-agent");
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))
}

/// SIGHUP to the pid in `pid_file`.
fn signal_reload(pid_file: &std::path::Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(pid_file)
        .with_context(|| format!("cannot read pid file {}", pid_file.display()))?;
    let pid: i32 = text
        .trim()
        .parse()
        .with_context(|| format!("{} holds no pid", pid_file.display()))?;
    // SAFETY: kill(2) with a pid read from the operator's pid file.
    if unsafe { libc::kill(pid, libc::SIGHUP) } != 0 {
        bail!(
            "cannot SIGHUP lbd (pid {pid}): {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// One HTTP/1.1 request to lbd's admin API; returns status and body.
pub async fn request(
    url: &str,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: &str,
) -> anyhow::Result<(u16, String)> {
    let exchange = async {
        if let Some(socket) = url.strip_prefix("unix:") {
            let stream = tokio::net::UnixStream::connect(socket)
                .await
                .with_context(|| format!("cannot connect to lbd at {url}"))?;
            send(stream, "localhost", token, method, path, body).await
        } else {
            let host = url
                .strip_prefix("http://")
                .context("the lbd URL must be http://host:port or unix:/path")?
                .trim_end_matches('/');
            let stream = tokio::net::TcpStream::connect(host)
                .await
                .with_context(|| format!("cannot connect to lbd at {url}"))?;
            send(stream, host, token, method, path, body).await
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), exchange)
        .await
        .with_context(|| format!("{method} {url}{path}: no answer within 30s"))?
}

async fn send<S>(
    stream: S,
    host: &str,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: &str,
) -> anyhow::Result<(u16, String)>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", host)
        .header("content-type", "application/json");
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    let request = builder.body(Full::new(Bytes::from(body.to_owned())))?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener(name: &str, bind: &str) -> ListenerSection {
        ListenerSection {
            name: Some(name.into()),
            bind: Some(bind.into()),
            pool: Some(name.into()),
            ..Default::default()
        }
    }

    fn pool(name: &str) -> PoolSection {
        PoolSection {
            name: Some(name.into()),
            ..Default::default()
        }
    }

    #[test]
    fn merge_replaces_only_owned_entries() {
        let current = ConfigFile {
            listeners: vec![
                listener("static", "0.0.0.0:80"),
                listener("k8s:a:b:1", "10.0.0.1:1"),
            ],
            pools: vec![pool("static"), pool("k8s:a:b:1")],
            ..Default::default()
        };
        let merged = merge(
            &current,
            &Prefix("k8s:"),
            &[listener("k8s:a:c:2", "10.0.0.1:2")],
            &[pool("k8s:a:c:2")],
        );
        let names: Vec<_> = merged
            .listeners
            .iter()
            .filter_map(|l| l.name.clone())
            .collect();
        assert_eq!(names, ["static", "k8s:a:c:2"]);
        let pools: Vec<_> = merged.pools.iter().filter_map(|p| p.name.clone()).collect();
        assert_eq!(pools, ["static", "k8s:a:c:2"]);
    }

    #[test]
    fn equal_configs_need_no_push_and_invalid_ones_are_refused() {
        let current = ConfigFile {
            listeners: vec![listener("k8s:a:b:1", "10.0.0.1:1")],
            pools: vec![pool("k8s:a:b:1")],
            ..Default::default()
        };
        // The same, spelled with a default written out.
        let mut same = current.clone();
        same.pools[0].algorithm = Some("round_robin".into());
        assert!(!changes(&current, &same).expect("valid"));
        let mut other = current.clone();
        other.listeners[0].bind = Some("10.0.0.1:2".into());
        assert!(changes(&current, &other).expect("valid"));
        let mut broken = current.clone();
        broken.listeners[0].bind = Some("nowhere".into());
        assert!(changes(&current, &broken).is_err());
    }
}
