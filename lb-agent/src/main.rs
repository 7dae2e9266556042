//! lb-agent: the control plane that keeps lbd's configuration in sync with
//! a Kubernetes Service/Node watch (and, an open issue, OpenStack Octavia).

mod apiservers;
mod kubernetes;
mod lbd_push;
mod sync;

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use tracing::error;

use kubernetes::model::{Options, Vips};
use lbd_push::Target;

#[derive(Parser)]
#[command(
    name = "lb-agent",
    version,
    about = "Keeps lbd's config in sync with Kubernetes"
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
    /// Sync from OpenStack Octavia (not built yet).
    Octavia,
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
    let result = match cli.command {
        Command::Kubernetes(args) => run_kubernetes(*args),
        Command::Apiservers(args) => run_apiservers(*args),
        Command::Octavia => {
            eprintln!("lb-agent octavia is not built yet (an open issue)");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_kubernetes(args: KubernetesArgs) -> anyhow::Result<()> {
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
    tokio::runtime::Runtime::new()
        .context("cannot start the runtime")?
        .block_on(kubernetes::run(settings))
}

fn run_apiservers(args: ApiserversArgs) -> anyhow::Result<()> {
    let settings = apiservers::Settings {
        timing: args.watch.timing(),
        kubeconfig: args.watch.kubeconfig,
        pool: args.pool,
        seed: args.seed,
        target: target(args.target)?,
    };
    tokio::runtime::Runtime::new()
        .context("cannot start the runtime")?
        .block_on(apiservers::run(settings))
}

fn target(args: TargetArgs) -> anyhow::Result<Target> {
    if let Some(path) = args.output {
        return Ok(Target::File {
            path,
            base: args.base_config,
            pid_file: args.lbd_pid_file,
        });
    }
    let token = match &args.lbd_token_file {
        Some(path) => Some(
            lbd::config::validate::read_token(path)
                .map_err(|e| anyhow::anyhow!("--lbd-token-file {}: {e}", path.display()))?,
        ),
        None => None,
    };
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
