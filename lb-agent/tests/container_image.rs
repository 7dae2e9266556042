//! lb-agent's container image (`configs/container/Containerfile`, built by
//! `scripts/container-image`) with Debian's podman.
//!
//! The machine has no registry to pull the real base image
//! (`gcr.io/distroless/cc-debian12`) from, so the test gives the build a
//! stand-in with what that image provides lb-agent: the libraries `ldd`
//! lists, the CA bundle and a non-root user 65532, imported from a tarball.
//! It then checks what the Deployment relies on: the entrypoint, the
//! non-root user, and that the binary in the image, run as that user in the
//! image's file system, accepts every flag
//! `configs/kubernetes/lb-agent-deployment.yaml` passes. Containers are not
//! started: the sandbox refuses crun's rlimit set-up, so the image's file
//! system runs under `chroot` instead.
//!
//! podman keeps its images under this test's scratch directory (`--root`,
//! `--runroot`, the vfs driver), so nothing outside it changes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use lbd_test_support::scratch_dir;
use lbd_test_support::tools::{available, run_bounded, succeeded as ok};

const LIMIT: Duration = Duration::from_secs(180);
const TAG: &str = "localhost/lbd-test/lb-agent:test";
const BASE: &str = "localhost/lbd-test/base:test";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
}

/// podman with its storage in `dir`.
struct Podman {
    global: Vec<String>,
}

impl Podman {
    fn new(dir: &Path) -> Podman {
        Podman {
            global: vec![
                format!("--root={}", dir.join("storage").display()),
                format!("--runroot={}", dir.join("run").display()),
                "--storage-driver=vfs".into(),
            ],
        }
    }

    fn run(&self, args: &[&str], what: &str) -> String {
        let mut cmd = Command::new("podman");
        cmd.args(&self.global).args(args);
        ok(run_bounded(cmd, LIMIT), what)
    }
}

/// The shared objects `bin` loads (the loader included), from `ldd`.
fn libraries(bin: &Path) -> Vec<PathBuf> {
    let mut cmd = Command::new("ldd");
    cmd.arg(bin);
    let listing = ok(run_bounded(cmd, LIMIT), "ldd");
    let libs: Vec<PathBuf> = listing
        .lines()
        .filter_map(|l| {
            let path = l.split("=>").last()?.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect();
    assert!(
        libs.iter().any(|l| l.to_string_lossy().contains("libc.so")),
        "ldd lists no libc:\n{listing}"
    );
    libs
}

/// A stand-in for distroless/cc: `bin`'s libraries, the CA bundle, and the
/// `nonroot` user, as a tarball for `podman import`.
fn base_tarball(dir: &Path, bin: &Path) -> PathBuf {
    let root = dir.join("base");
    for lib in libraries(bin) {
        let at = root.join(lib.strip_prefix("/").expect("absolute"));
        std::fs::create_dir_all(at.parent().expect("parent")).expect("lib dir");
        // The real file, not the symlink's target name only.
        std::fs::copy(&lib, &at).unwrap_or_else(|e| panic!("copy {}: {e}", lib.display()));
    }
    std::fs::create_dir_all(root.join("etc/ssl/certs")).expect("certs dir");
    let bundle = Path::new("/etc/ssl/certs/ca-certificates.crt");
    if bundle.exists() {
        std::fs::copy(bundle, root.join("etc/ssl/certs/ca-certificates.crt")).expect("CA bundle");
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n",
    )
    .expect("passwd");
    std::fs::write(root.join("etc/group"), "root:x:0:\nnonroot:x:65532:\n").expect("group");
    let tar = dir.join("base.tar");
    let mut cmd = Command::new("tar");
    cmd.arg("-C").arg(&root).arg("-cf").arg(&tar).arg(".");
    ok(run_bounded(cmd, LIMIT), "tar base");
    tar
}

/// The `--flags` the Deployment passes to lb-agent, and its subcommand.
fn deployment_args() -> (String, Vec<String>) {
    let yaml = std::fs::read_to_string(repo().join("configs/kubernetes/lb-agent-deployment.yaml"))
        .expect("deployment yaml");
    let args: Vec<String> = yaml
        .lines()
        .skip_while(|l| l.trim() != "args:")
        .skip(1)
        .take_while(|l| l.trim_start().starts_with("- "))
        .map(|l| l.trim_start().trim_start_matches("- ").to_string())
        .collect();
    let (sub, flags) = args.split_first().expect("the Deployment passes args");
    let flags = flags
        .iter()
        .map(|f| f.split('=').next().unwrap_or(f).to_string())
        .collect();
    (sub.clone(), flags)
}

#[test]
fn the_image_runs_lb_agent_as_the_deployment_does() {
    if !available("/usr/bin/podman", "podman") || !available("/usr/bin/ldd", "libc-bin") {
        return;
    }
    let agent = Path::new(env!("CARGO_BIN_EXE_lb-agent"));
    let dir = scratch_dir();
    let podman = Podman::new(&dir);

    let tar = base_tarball(&dir, agent);
    podman.run(
        &["import", &tar.display().to_string(), BASE],
        "podman import",
    );

    let mut build = Command::new(repo().join("scripts/container-image"));
    build
        .arg("--lb-agent")
        .arg(agent)
        .args(["--tag", TAG, "--base", BASE, "--tool", "podman", "--"])
        .args(&podman.global);
    let built = ok(run_bounded(build, LIMIT), "scripts/container-image");
    assert_eq!(built.trim(), TAG);

    let config = podman.run(
        &[
            "image",
            "inspect",
            "--format",
            "{{json .Config.Entrypoint}} {{.Config.User}} {{json .Config.Cmd}}",
            TAG,
        ],
        "podman image inspect",
    );
    assert_eq!(
        config.trim(),
        r#"["/usr/bin/lb-agent"] 65532:65532 ["--help"]"#
    );

    // The image's file system, run as its user: the binary starts with
    // only the base's libraries, and takes the Deployment's flags.
    let id = podman.run(&["create", TAG], "podman create");
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(&rootfs).expect("rootfs");
    let export = dir.join("image.tar");
    podman.run(
        &["export", "-o", &export.display().to_string(), id.trim()],
        "podman export",
    );
    let mut untar = Command::new("tar");
    untar.arg("-C").arg(&rootfs).arg("-xf").arg(&export);
    ok(run_bounded(untar, LIMIT), "tar -x");
    let (sub, flags) = deployment_args();
    let mut help = Command::new("/usr/sbin/chroot");
    help.arg("--userspec=65532:65532")
        .arg(&rootfs)
        .args(["/usr/bin/lb-agent", &sub, "--help"])
        .env_clear();
    let text = ok(run_bounded(help, LIMIT), "lb-agent --help in the image");
    assert!(!flags.is_empty());
    for flag in &flags {
        assert!(
            text.contains(flag.as_str()),
            "the Deployment passes {flag}, which `lb-agent {sub}` in the image does not take:\n{text}"
        );
    }
    // Nothing in the image but the binary and the base.
    let mut extra: Vec<String> = Vec::new();
    for entry in std::fs::read_dir(rootfs.join("usr/bin")).expect("usr/bin") {
        extra.push(
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned(),
        );
    }
    assert_eq!(extra, ["lb-agent"]);
    let _ = podman.run(&["rm", id.trim()], "podman rm");
}
