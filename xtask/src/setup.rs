//! `cargo xtask setup`: installs, idempotently, what a fresh machine of the
//! reference kind (Debian 12, rustup with stable and nightly) needs, and says
//! what it did.

use std::{path::PathBuf, process::Command};

use anyhow::{bail, Context as _, Result};

use crate::sh;

/// bpf-linker release built against the nightly's own LLVM.
const BPF_LINKER_VERSION: &str = "0.13.0";
/// cargo-fuzz release that builds and runs the fuzz targets (`cargo xtask fuzz`).
const CARGO_FUZZ_VERSION: &str = "0.13.1";
/// Debian packages the integration tests use, each with the shell check
/// that says it is there: `unshare`, `setpriv`, `losetup`, `mount`; fusepy
/// for the FUSE fixture that injects block I/O errors; capsh and
/// systemd-analyze for the systemd units' tests; Prometheus and `promtool`
/// for the exporter test; Python's venv for the OTLP receiver; `ip` for the
/// TCP tests' network namespaces and veth pairs, and `nft` for their loss and
/// drop rules; musl-tools for the static build's C (ring, mimalloc).
const TEST_PACKAGES: &[(&str, &str)] = &[
    ("util-linux", "command -v setpriv && command -v unshare"),
    ("mount", "command -v mount && command -v losetup"),
    (
        "python3-fusepy",
        "test -e /usr/lib/python3/dist-packages/fusepy.py",
    ),
    ("libcap2-bin", "command -v capsh"),
    ("systemd", "command -v systemd-analyze"),
    ("prometheus", "command -v promtool && command -v prometheus"),
    ("python3-venv", "python3 -c 'import ensurepip, venv'"),
    ("musl-tools", "command -v x86_64-linux-musl-gcc"),
    // objcopy: the static build strips the image's binaries with it.
    ("binutils", "command -v objcopy"),
    ("iproute2", "PATH=$PATH:/usr/sbin:/sbin command -v ip"),
    ("nftables", "PATH=$PATH:/usr/sbin:/sbin command -v nft"),
    // A terminal for `sonde top`'s interactive test.
    ("tmux", "command -v tmux"),
];
/// PyPI packages the tests run in their own venv: the official OpenTelemetry
/// protos and gRPC (the OTLP receiver), the Kubernetes schema validator, and
/// Helm's Go SDK as a library (`helm-python-sdk`: no registry here has a
/// `helm` binary) to lint and render the chart.
const PYTHON_PACKAGES: &[&str] = &[
    "grpcio",
    "opentelemetry-proto",
    "kubernetes-validate",
    "helm-python-sdk",
];
/// Debian packages the benchmarks use.
const BENCH_PACKAGES: &[(&str, &str)] = &[("bpftrace", "command -v bpftrace")];

pub fn run(bench: bool) -> Result<()> {
    rust_src()?;
    bpf_linker()?;
    cargo_fuzz()?;
    let mut packages = TEST_PACKAGES.to_vec();
    if bench {
        packages.extend_from_slice(BENCH_PACKAGES);
    }
    debian_packages(&packages)?;
    python_venv()
}

/// Where the tests' Python lives: a venv of its own, so the system's
/// Python is left as it is.
pub fn venv() -> Result<PathBuf> {
    let home = std::env::var("HOME").context("HOME not set")?;
    Ok(PathBuf::from(home).join(".local/share/sonde/venv"))
}

/// A venv with the [`PYTHON_PACKAGES`].
fn python_venv() -> Result<()> {
    let venv = venv()?;
    let python = venv.join("bin/python");
    let check = "import grpc, helm_python, kubernetes_validate, opentelemetry.proto.collector.metrics.v1.metrics_service_pb2_grpc";
    if output(&python.to_string_lossy(), &["-c", check]).is_some() {
        say(&format!(
            "Python packages: present ({})",
            PYTHON_PACKAGES.join(", ")
        ));
        return Ok(());
    }
    say(&format!(
        "Python packages: installing {} in {}",
        PYTHON_PACKAGES.join(", "),
        venv.display()
    ));
    if !python.exists() {
        sh("python3", &["-m", "venv", &venv.to_string_lossy()])?;
    }
    let mut args = vec![
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ];
    args.extend(PYTHON_PACKAGES);
    sh(&python.to_string_lossy(), &args)?;
    output(&python.to_string_lossy(), &["-c", check])
        .context("the Python packages were installed but do not import")?;
    Ok(())
}

fn say(what: &str) {
    eprintln!("xtask setup: {what}");
}

fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The kernel programs build with `-Z build-std=core`, which needs rust-src.
fn rust_src() -> Result<()> {
    let installed = output(
        "rustup",
        &["component", "list", "--toolchain", "nightly", "--installed"],
    )
    .context(
        "no nightly toolchain: `rustup toolchain install nightly` (the kernel programs need it)",
    )?;
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        say("nightly rust-src: present");
        return Ok(());
    }
    say("nightly rust-src: installing");
    sh(
        "rustup",
        &["component", "add", "rust-src", "--toolchain", "nightly"],
    )
}

/// bpf-linker, built from crates.io against the nightly toolchain's own
/// libLLVM (the LLVM rustc emits bitcode for, so versions always match).
fn bpf_linker() -> Result<()> {
    if let Some(v) = output("bpf-linker", &["--version"]) {
        if v.contains(BPF_LINKER_VERSION) {
            say(&format!("bpf-linker {BPF_LINKER_VERSION}: present"));
            return Ok(());
        }
    }
    let sysroot = output("rustup", &["run", "nightly", "rustc", "--print", "sysroot"])
        .context("cannot find the nightly sysroot")?;
    let lib_dir = PathBuf::from(sysroot.trim()).join("lib");
    let llvm = std::fs::read_dir(&lib_dir)?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so.") && n.contains("-rust-"))
        })
        .with_context(|| format!("no libLLVM.so.*-rust-* in {}", lib_dir.display()))?;
    let file_name = llvm
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_owned();
    // libLLVM.so.22.1-rust-1.97.0-nightly -> 22
    let major = file_name
        .trim_start_matches("libLLVM.so.")
        .split('.')
        .next()
        .unwrap_or_default()
        .to_owned();
    let home = std::env::var("HOME").context("HOME not set")?;
    let prefix = PathBuf::from(home).join(".local/share/sonde/llvm");
    let prefix_lib = prefix.join("lib");
    std::fs::create_dir_all(&prefix_lib)?;
    for link in [prefix_lib.join("libLLVM.so"), prefix_lib.join(&file_name)] {
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&llvm, &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    say(&format!("bpf-linker: building {BPF_LINKER_VERSION} against the nightly's LLVM {major} (about a minute)"));
    let status = Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--locked",
            "--force",
            "--no-default-features",
            "--features",
            &format!("llvm-{major}"),
        ])
        .env("LLVM_PREFIX", &prefix)
        .status()?;
    if !status.success() {
        bail!("building bpf-linker failed");
    }
    output("bpf-linker", &["--version"])
        .context("bpf-linker was installed but does not run; is ~/.cargo/bin on PATH?")?;
    say("bpf-linker: installed");
    Ok(())
}

/// cargo-fuzz, from crates.io with its own lock file (it drives nightly's
/// libFuzzer support; nothing else to install).
fn cargo_fuzz() -> Result<()> {
    if let Some(v) = output("cargo", &["fuzz", "--version"]) {
        if v.contains(CARGO_FUZZ_VERSION) {
            say(&format!("cargo-fuzz {CARGO_FUZZ_VERSION}: present"));
            return Ok(());
        }
    }
    say(&format!(
        "cargo-fuzz: installing {CARGO_FUZZ_VERSION} (about a minute)"
    ));
    sh(
        "cargo",
        &[
            "install",
            "cargo-fuzz",
            "--version",
            CARGO_FUZZ_VERSION,
            "--locked",
            "--force",
        ],
    )?;
    output("cargo", &["fuzz", "--version"])
        .context("cargo-fuzz was installed but does not run; is ~/.cargo/bin on PATH?")?;
    Ok(())
}

pub(crate) fn debian_packages(packages: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .filter(|(_, check)| output("sh", &["-c", check]).is_none())
        .map(|(package, _)| *package)
        .collect();
    if missing.is_empty() {
        say(&format!(
            "Debian packages: present ({})",
            packages
                .iter()
                .map(|(p, _)| *p)
                .collect::<Vec<_>>()
                .join(", ")
        ));
        return Ok(());
    }
    say(&format!(
        "Debian packages: installing {}",
        missing.join(", ")
    ));
    sh("apt-get", &["update", "-qq"])?;
    let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
    args.extend(&missing);
    let status = Command::new("apt-get")
        .args(&args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()?;
    if !status.success() {
        bail!("apt-get install {} failed", missing.join(" "));
    }
    Ok(())
}
