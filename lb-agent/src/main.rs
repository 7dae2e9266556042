//! The `lb-agent` binary: parses the command line and runs the library's
//! [`lb_agent::Mode`] it describes (see `lib.rs`).

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use tracing::error;

use lb_agent::kubernetes::model::{Options, Vips};
use lb_agent::lbd_push::Target;
use lb_agent::octavia::connect::{AuthSettings, Connect};
use lb_agent::octavia::http::TlsOptions;
use lb_agent::octavia::keystone::Credentials;
use lb_agent::{apiservers, kubernetes, octavia, sync, Mode};

#[derive(Parser)]
#[command(
    name = "lb-agent",
    version,
    about = "Keeps lbd's config in sync with Kubernetes or OpenStack Octavia"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log filter (tracing syntax); RUST_LOG wins.
    #[arg(long, global = true, default_value = "info")]
    log: String,
}

#[derive(Subcommand)]
enum Command {
    /// Serve Services of type LoadBalancer on the nodes' NodePorts.
    Kubernetes(Box<KubernetesArgs>),
    /// Keep lbd's kube-apiserver pool in step with the default/kubernetes
    /// EndpointSlices.
    Apiservers(Box<ApiserversArgs>),
    /// Serve Octavia load balancers (amphora mode) and report health back.
    Octavia(Box<OctaviaArgs>),
}

#[derive(Args)]
struct OctaviaArgs {
    /// Load balancer to serve (repeatable).
    #[arg(long = "loadbalancer-id", required = true)]
    loadbalancer_ids: Vec<String>,
    /// Octavia's API (default: the `load-balancer` endpoint of Keystone's
    /// catalog).
    #[arg(long, required_if_eq("auth", "noauth"))]
    octavia_url: Option<String>,
    /// How to authenticate to Octavia.
    #[arg(long, value_enum, default_value_t = AuthMode::Keystone)]
    auth: AuthMode,
    /// With --auth noauth: the X-Project-Id header.
    #[arg(long)]
    project_id: Option<String>,
    #[command(flatten)]
    keystone: KeystoneArgs,
    /// CA certificates (PEM) for Keystone and Octavia.
    #[arg(long, env = "OS_CACERT")]
    ca_file: Option<PathBuf>,
    /// Do not verify Keystone's and Octavia's certificates.
    #[arg(long)]
    insecure: bool,
    /// How often the load balancers are polled (one request each when
    /// nothing changed).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    poll: Duration,
    /// Re-read every listener, pool and member at least this often.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    full_sync: Duration,
    /// Bind the listeners here instead of the load balancer's VIP.
    #[arg(long)]
    bind_address: Option<IpAddr>,
    #[command(flatten)]
    heartbeat: HeartbeatArgs,
    #[command(flatten)]
    target: TargetArgs,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum AuthMode {
    Keystone,
    Noauth,
}

/// Keystone v3: a password or an application credential (the usual
/// `OS_*` variables; keep secrets in the environment, not on the command
/// line).
#[derive(Args)]
struct KeystoneArgs {
    #[arg(long, env = "OS_AUTH_URL")]
    os_auth_url: Option<String>,
    #[arg(long, env = "OS_USERNAME")]
    os_username: Option<String>,
    #[arg(long, env = "OS_PASSWORD", hide_env_values = true)]
    os_password: Option<String>,
    #[arg(long, env = "OS_USER_DOMAIN_NAME", default_value = "Default")]
    os_user_domain_name: String,
    #[arg(long, env = "OS_PROJECT_NAME")]
    os_project_name: Option<String>,
    #[arg(long, env = "OS_PROJECT_DOMAIN_NAME", default_value = "Default")]
    os_project_domain_name: String,
    #[arg(long, env = "OS_APPLICATION_CREDENTIAL_ID")]
    os_application_credential_id: Option<String>,
    #[arg(long, env = "OS_APPLICATION_CREDENTIAL_SECRET", hide_env_values = true)]
    os_application_credential_secret: Option<String>,
    #[arg(long, env = "OS_REGION_NAME")]
    os_region_name: Option<String>,
    /// The catalog interface of Octavia's endpoint.
    #[arg(long, env = "OS_INTERFACE", default_value = "public")]
    os_interface: String,
}

/// Octavia's amphora heartbeat; without an amphora id, none is sent.
#[derive(Args)]
struct HeartbeatArgs {
    /// The amphora agent's config file: amphora_id, controller_ip_port_list,
    /// heartbeat_key and heartbeat_interval (flags below win).
    #[arg(long)]
    amphora_agent_config: Option<PathBuf>,
    /// This amphora's id in Octavia.
    #[arg(long)]
    amphora_id: Option<String>,
    /// A health manager's ip:port (repeatable).
    #[arg(long = "health-manager")]
    health_managers: Vec<std::net::SocketAddr>,
    /// File holding Octavia's heartbeat_key.
    #[arg(long)]
    heartbeat_key_file: Option<PathBuf>,
    /// Default: the config file's, else 10s.
    #[arg(long, value_parser = humantime::parse_duration)]
    heartbeat_interval: Option<Duration>,
}

#[derive(Args)]
struct ApiserversArgs {
    #[command(flatten)]
    watch: WatchArgs,
    /// The lbd pool whose members are the apiservers.
    #[arg(long, default_value = "apiservers")]
    pool: String,
    /// Apiserver address:port used until the API answers (repeatable).
    #[arg(long = "seed", required = true)]
    seed: Vec<std::net::SocketAddr>,
    #[command(flatten)]
    target: TargetArgs,
}

/// How lb-agent reaches the API and paces its passes.
#[derive(Args)]
struct WatchArgs {
    /// kubeconfig file (default: in-cluster config, then ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Quiet time after a change before pushing (a burst is one push).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    debounce: Duration,
    /// Reconcile at least this often (re-pushes after an lbd restart).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    resync: Duration,
}

impl WatchArgs {
    fn timing(&self) -> sync::Timing {
        sync::Timing {
            debounce: self.debounce,
            resync: self.resync,
        }
    }
}

#[derive(Args)]
struct KubernetesArgs {
    #[command(flatten)]
    watch: WatchArgs,
    /// The spec.loadBalancerClass served.
    #[arg(long, default_value = "lbd.io/lbd")]
    class: String,
    /// Also serve LoadBalancer Services without a loadBalancerClass.
    #[arg(long)]
    default_class: bool,
    /// One VIP shared by every Service (ports must not collide).
    #[arg(
        long,
        conflicts_with = "vip_range",
        required_unless_present = "vip_range"
    )]
    vip: Option<IpAddr>,
    /// A VIP per Service from FIRST-LAST (e.g. 10.0.0.100-10.0.0.120) or a CIDR.
    #[arg(long)]
    vip_range: Option<String>,
    #[command(flatten)]
    target: TargetArgs,
}

#[derive(Args)]
struct TargetArgs {
    /// lbd's admin API: http://host:port or unix:/path.
    #[arg(long, default_value = "http://127.0.0.1:8404")]
    lbd_url: String,
    /// File with the admin API's bearer token.
    #[arg(long)]
    lbd_token_file: Option<PathBuf>,
    /// Write a config file for `lbd run -c` instead of using the admin API.
    #[arg(long)]
    output: Option<PathBuf>,
    /// With --output: the config the generated entries are added to.
    #[arg(long, requires = "output")]
    base_config: Option<PathBuf>,
    /// With --output: SIGHUP the pid in this file after writing.
    #[arg(long, requires = "output")]
    lbd_pid_file: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&cli.log))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let mode = match cli.command {
        Command::Kubernetes(args) => kubernetes_mode(*args),
        Command::Apiservers(args) => apiservers_mode(*args),
        Command::Octavia(args) => octavia_mode(*args),
    };
    match mode.and_then(lb_agent::run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn kubernetes_mode(args: KubernetesArgs) -> anyhow::Result<Mode> {
    let vips = match (args.vip, &args.vip_range) {
        (Some(vip), _) => Vips::Shared(vip),
        (None, Some(range)) => Vips::Range(parse_range(range)?),
        (None, None) => bail!("--vip or --vip-range is required"),
    };
    let settings = kubernetes::Settings {
        timing: args.watch.timing(),
        kubeconfig: args.watch.kubeconfig,
        options: Options {
            class: args.class,
            default_class: args.default_class,
            vips,
        },
        target: target(args.target)?,
    };
    Ok(Mode::Kubernetes(settings))
}

fn apiservers_mode(args: ApiserversArgs) -> anyhow::Result<Mode> {
    let settings = apiservers::Settings {
        timing: args.watch.timing(),
        kubeconfig: args.watch.kubeconfig,
        pool: args.pool,
        seed: args.seed,
        target: target(args.target)?,
    };
    Ok(Mode::Apiservers(settings))
}

fn octavia_mode(args: OctaviaArgs) -> anyhow::Result<Mode> {
    let auth = match args.auth {
        AuthMode::Noauth => AuthSettings::NoAuth {
            project_id: args.project_id,
        },
        AuthMode::Keystone => AuthSettings::Keystone(credentials(&args.keystone)?),
    };
    let (stats_url, stats_token) = (args.target.lbd_url.clone(), lbd_token(&args.target)?);
    let settings = octavia::agent::Settings {
        connect: Connect {
            tls: TlsOptions {
                ca_file: args.ca_file,
                insecure: args.insecure,
            },
            timeout: Duration::from_secs(30),
            auth,
            octavia_url: args.octavia_url,
            interface: args.keystone.os_interface,
            region: args.keystone.os_region_name,
        },
        lb_ids: args.loadbalancer_ids,
        poll: args.poll,
        full_sync: args.full_sync,
        options: octavia::model::Options {
            bind_address: args.bind_address,
        },
        target: target(args.target)?,
        stats_url,
        stats_token,
        heartbeat: heartbeat(args.heartbeat)?,
    };
    Ok(Mode::Octavia(Box::new(settings)))
}

/// Keystone credentials from the `OS_*` settings: an application
/// credential if one is given, else a password.
fn credentials(k: &KeystoneArgs) -> anyhow::Result<Credentials> {
    let auth_url = k
        .os_auth_url
        .clone()
        .context("--os-auth-url (OS_AUTH_URL) is required with --auth keystone")?;
    if let Some(id) = k.os_application_credential_id.clone() {
        let secret = k.os_application_credential_secret.clone().context(
            "OS_APPLICATION_CREDENTIAL_SECRET is required with OS_APPLICATION_CREDENTIAL_ID",
        )?;
        return Ok(Credentials::ApplicationCredential {
            auth_url,
            id,
            secret,
        });
    }
    let required = |value: &Option<String>, what: &str| {
        value
            .clone()
            .with_context(|| format!("{what} is required for Keystone password auth"))
    };
    Ok(Credentials::Password {
        auth_url,
        username: required(&k.os_username, "OS_USERNAME")?,
        password: required(&k.os_password, "OS_PASSWORD")?,
        user_domain: k.os_user_domain_name.clone(),
        project_name: required(&k.os_project_name, "OS_PROJECT_NAME")?,
        project_domain: k.os_project_domain_name.clone(),
    })
}

/// Heartbeat settings from the amphora agent's file and the flags; `None`
/// without an amphora id.
fn heartbeat(args: HeartbeatArgs) -> anyhow::Result<Option<octavia::agent::HeartbeatSettings>> {
    let file = match &args.amphora_agent_config {
        Some(path) => octavia::amphora_conf::read(path)?,
        None => Default::default(),
    };
    let Some(amphora_id) = args.amphora_id.or(file.amphora_id) else {
        return Ok(None);
    };
    let health_managers = if args.health_managers.is_empty() {
        file.health_managers
    } else {
        args.health_managers
    };
    if health_managers.is_empty() {
        bail!("heartbeats need --health-manager (or controller_ip_port_list)");
    }
    let key = match &args.heartbeat_key_file {
        Some(path) => lbd_config::read_token(path)
            .map_err(|e| anyhow::anyhow!("--heartbeat-key-file {}: {e}", path.display()))?,
        None => file
            .heartbeat_key
            .context("heartbeats need --heartbeat-key-file (or heartbeat_key)")?,
    };
    Ok(Some(octavia::agent::HeartbeatSettings {
        amphora_id,
        health_managers,
        key,
        interval: args
            .heartbeat_interval
            .or(file.heartbeat_interval)
            .unwrap_or(Duration::from_secs(10)),
    }))
}

fn lbd_token(args: &TargetArgs) -> anyhow::Result<Option<String>> {
    match &args.lbd_token_file {
        Some(path) => Ok(Some(lbd_config::read_token(path).map_err(|e| {
            anyhow::anyhow!("--lbd-token-file {}: {e}", path.display())
        })?)),
        None => Ok(None),
    }
}

fn target(args: TargetArgs) -> anyhow::Result<Target> {
    let token = lbd_token(&args)?;
    if let Some(path) = args.output {
        return Ok(Target::File {
            path,
            base: args.base_config,
            pid_file: args.lbd_pid_file,
        });
    }
    Ok(Target::Api {
        url: args.lbd_url,
        token,
    })
}

/// `10.0.0.100-10.0.0.120` or `10.0.0.96/28` (at most 65,536 addresses).
fn parse_range(text: &str) -> anyhow::Result<Vec<IpAddr>> {
    if let Ok(net) = text.parse::<ipnet::IpNet>() {
        let hosts: Vec<IpAddr> = net.hosts().take(65_537).collect();
        if hosts.len() > 65_536 {
            bail!("--vip-range {text} is larger than 65,536 addresses");
        }
        return Ok(hosts);
    }
    let (first, last) = text
        .split_once('-')
        .context("--vip-range must be FIRST-LAST or a CIDR")?;
    let (first, last): (IpAddr, IpAddr) = (
        first.trim().parse().context("--vip-range: first address")?,
        last.trim().parse().context("--vip-range: last address")?,
    );
    let range: Vec<IpAddr> = match (first, last) {
        (IpAddr::V4(a), IpAddr::V4(b)) if a <= b => ipnet::Ipv4AddrRange::new(a, b)
            .take(65_537)
            .map(IpAddr::V4)
            .collect(),
        (IpAddr::V6(a), IpAddr::V6(b)) if a <= b => ipnet::Ipv6AddrRange::new(a, b)
            .take(65_537)
            .map(IpAddr::V6)
            .collect(),
        _ => bail!("--vip-range {text}: the first address must not be after the last, same family"),
    };
    if range.len() > 65_536 {
        bail!("--vip-range {text} is larger than 65,536 addresses");
    }
    Ok(range)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vip_ranges() {
        let r = parse_range("10.0.0.1-10.0.0.3").expect("range");
        assert_eq!(r.len(), 3);
        assert_eq!(parse_range("10.0.0.0/30").expect("cidr").len(), 2);
        assert!(parse_range("10.0.0.3-10.0.0.1").is_err());
        assert!(parse_range("10.0.0.1-::1").is_err());
        assert!(parse_range("10.0.0.0/8").is_err());
    }
}
