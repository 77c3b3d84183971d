//! `cargo xtask setup | build | run | test | fuzz | vm-test | chaos | bench`: sonde's developer
//! workflow. Every command that builds calls `setup` first, so a fresh
//! machine needs nothing but `cargo`.

mod bench;
mod elf;
mod fuzz;
mod image;
mod setup;
mod vm;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "sonde's build, test and benchmark tasks"
)]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing need (idempotent).
    Setup {
        /// Also install what the benchmarks need (bpftrace).
        #[arg(long)]
        bench: bool,
    },
    /// Build the agent (and its kernel programs).
    Build {
        /// Optimised build.
        #[arg(long)]
        release: bool,
        /// Static release binaries for the container image (musl), as
        /// deploy/Dockerfile builds them: stripped into target/image/, their
        /// debug info in target/image/debug/ (same build id).
        #[arg(long, conflicts_with = "release")]
        r#static: bool,
    },
    /// Build (release) and run sonde as root; arguments default to `agent`.
    Run {
        /// Arguments for `sonde`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Lints, unit tests, the privileged integration tests, the static
    /// build, each fuzz target briefly, then a vm-test of two kernels.
    Test {
        /// Skip fmt and clippy.
        #[arg(long)]
        no_lint: bool,
    },
    /// Only the privileged integration tests, one at a time (what `test`
    /// runs after the unit tests), optionally in a random order.
    Integration {
        /// Run the tests in a random order (libtest's shuffle; the seed is
        /// printed), to show that none depends on another's leftovers.
        #[arg(long)]
        shuffle: bool,
        /// Shuffle with this seed (repeats an earlier order).
        #[arg(long)]
        seed: Option<u64>,
        /// libtest filters (test names or parts of them).
        filters: Vec<String>,
    },
    /// Fuzz every decoder (cargo-fuzz targets in `fuzz/`): build them, run
    /// each for some seconds on its seeds and grown corpus; fails on a crash.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Only these targets (default: every one).
        targets: Vec<String>,
    },
    /// The integration tests on other kernels and arm64, under QEMU: a
    /// matrix of kernel × arch × probe family (default: every kernel, both
    /// architectures, every test).
    VmTest {
        /// Only this architecture (repeatable).
        #[arg(long = "arch", value_enum)]
        arches: Vec<vm::Arch>,
        /// Only this kernel version, e.g. 6.1 (repeatable).
        #[arg(long = "kernel")]
        kernels: Vec<String>,
        /// Only these tests (libtest filters, repeatable; `--skip NAME` too
        /// after `--`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        tests: Vec<String>,
        /// Give up on one boot after this many seconds (default: 1800, with
        /// --ci 900).
        #[arg(long)]
        timeout_secs: Option<u64>,
        /// Exactly what `cargo xtask test` (CI) runs: 5.10 and 7.2 x86_64
        /// and 6.12 arm64, every test.
        #[arg(long, conflicts_with_all = ["arches", "kernels", "tests"])]
        ci: bool,
        /// Boot each kernel this many times (a test that fails now and then
        /// shows as the count of clean boots).
        #[arg(long, default_value_t = 1)]
        repeat: u32,
        /// Make the guest's sonde fail to load this program, as a verifier
        /// rejection would (repeatable): the matrix must then fail.
        #[arg(long = "refuse-program")]
        refuse_programs: Vec<String>,
    },
    /// The chaos suite, minutes per scenario (not part of `test`): the
    /// collector down for minutes, 5 % loss and seconds of delay on a veth
    /// pair, the agent SIGKILLed mid-flush, the collector restarted under
    /// load. Needs root; everything runs on loopback or in test network
    /// namespaces it removes.
    Chaos {
        /// Only this scenario: outage, lossy_link, agent_kills or
        /// collector_restarts (default: all four, one after the other).
        filter: Option<String>,
        /// Length of each scenario's fault phase in minutes (default: the
        /// scenario's own, 1 to 3).
        #[arg(long)]
        minutes: Option<f64>,
    },
    /// Benchmarks: sonde on versus off in the same run.
    Bench {
        /// Which benchmark.
        #[arg(default_value = "all")]
        which: bench::Which,
        /// Operations per measurement (default: each benchmark's own).
        #[arg(long)]
        ops: Option<u64>,
        /// Rounds; each runs every condition once, in an order rotated by
        /// one from the round before.
        #[arg(long, default_value_t = 5)]
        rounds: u32,
        /// Another build's `sonde` binary: its agent runs as one more
        /// condition beside this build's, a change's before and after in
        /// one run (workload benchmarks only).
        #[arg(long)]
        before: Option<std::path::PathBuf>,
    },
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("xtask: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Task::Setup { bench } => setup::run(bench),
        Task::Build { release, r#static } => {
            setup::run(false)?;
            if r#static {
                image::build()
            } else {
                build(release)
            }
        }
        Task::Run { args } => {
            setup::run(false)?;
            // The release build: what a user runs, at the cost a user pays
            // (a debug build's agent costs several times the CPU).
            build(true)?;
            let args = if args.is_empty() {
                vec!["agent".to_owned()]
            } else {
                args
            };
            let status = Command::new(root().join("target/release/sonde"))
                .args(&args)
                .status()?;
            if !status.success() {
                bail!("sonde exited with {status}");
            }
            Ok(())
        }
        Task::Test { no_lint } => {
            setup::run(false)?;
            test(!no_lint)
        }
        Task::Integration {
            shuffle,
            seed,
            filters,
        } => {
            setup::run(false)?;
            build(false)?;
            let seed = seed.map(|n| n.to_string());
            let mut args: Vec<&str> = filters.iter().map(String::as_str).collect();
            if shuffle || seed.is_some() {
                args.extend(["-Z", "unstable-options", "--shuffle"]);
            }
            if let Some(seed) = &seed {
                args.extend(["--shuffle-seed", seed]);
            }
            let status = if shuffle || seed.is_some() {
                // libtest's shuffle is an unstable option of the stable test
                // harness, which RUSTC_BOOTSTRAP lets the test binary accept.
                // Set for the binary alone: on cargo it would rebuild all.
                let out = Command::new("cargo")
                    .args(["test", "--package", "sonde-tests", "--lib", "--no-run"])
                    .arg("--message-format=json")
                    .current_dir(root())
                    .stderr(std::process::Stdio::inherit())
                    .output()
                    .context("cannot run cargo")?;
                if !out.status.success() {
                    bail!("building the integration tests failed");
                }
                let binary = vm::test_executable(&String::from_utf8_lossy(&out.stdout))
                    .context("cargo named no test executable for sonde-tests")?;
                let mut command = Command::new(binary);
                command.arg("--test-threads=1").args(&args);
                integration_env(&mut command)?;
                // Where cargo runs a package's tests.
                command.current_dir(root().join("tests"));
                command.env("RUSTC_BOOTSTRAP", "1").status()?
            } else {
                integration_tests(&args)?.status()?
            };
            if !status.success() {
                bail!("integration tests failed");
            }
            Ok(())
        }
        Task::Fuzz { seconds, targets } => {
            setup::run(false)?;
            fuzz::run(seconds, &targets)
        }
        Task::VmTest {
            arches,
            kernels,
            tests,
            timeout_secs,
            ci,
            repeat,
            refuse_programs,
        } => {
            setup::run(false)?;
            let mut options = if ci {
                vm::Options::ci()
            } else {
                let mut options = vm::Options::select(&arches, &kernels)?;
                options.tests = tests;
                options
            };
            if let Some(secs) = timeout_secs {
                options.timeout = std::time::Duration::from_secs(secs);
            }
            options.repeat = repeat.max(1);
            options.refuse_programs = refuse_programs;
            vm::run(&options)
        }
        Task::Chaos { filter, minutes } => {
            setup::run(false)?;
            chaos(filter.as_deref(), minutes)
        }
        Task::Bench {
            which,
            ops,
            rounds,
            before,
        } => {
            setup::run(true)?;
            bench::run(which, ops, rounds, before.as_deref())
        }
    }
}

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Runs a command in the workspace root; fails with its command line.
pub fn sh(program: &str, args: &[&str]) -> Result<()> {
    let status = Command::new(program)
        .args(args)
        .current_dir(root())
        .status()
        .with_context(|| format!("cannot run {program}"))?;
    if !status.success() {
        bail!("`{program} {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

fn build(release: bool) -> Result<()> {
    let mut args = vec![
        "build",
        "--package",
        "sonde",
        "--package",
        "sonde-collector",
    ];
    if release {
        args.push("--release");
    }
    sh("cargo", &args)
}

/// `cargo fmt` formats the files it reaches through `mod` items, and a
/// module declared by a macro (every family's module, declared from
/// `for_each_family!`) is not one of them: rustfmt checks every `.rs` file
/// of the workspace by name too.
fn fmt_check_every_file() -> Result<()> {
    let mut files = Vec::new();
    rust_files(&root(), &mut files)?;
    files.sort();
    let mut args = vec!["--edition", "2021", "--check"];
    let names: Vec<String> = files
        .iter()
        .filter_map(|f| f.strip_prefix(root()).ok())
        .map(|f| f.display().to_string())
        .collect();
    args.extend(names.iter().map(String::as_str));
    sh("rustfmt", &args)
}

/// The `.rs` files under `dir`, outside build output, hidden directories
/// and the fuzz workspace (checked by its own `cargo fmt`).
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if path.is_dir() {
            if !(name.starts_with('.') || name == "target" || name == "fuzz") {
                rust_files(&path, out)?;
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// Seconds each fuzz target runs in `cargo xtask test` (CI).
const CI_FUZZ_SECONDS: u64 = 5;

fn test(lint: bool) -> Result<()> {
    if lint {
        step("cargo fmt --check");
        sh("cargo", &["fmt", "--all", "--", "--check"])?;
        sh(
            "cargo",
            &["fmt", "--manifest-path", "fuzz/Cargo.toml", "--", "--check"],
        )?;
        fmt_check_every_file()?;
        step("clippy (host crates)");
        sh(
            "cargo",
            &["clippy", "--all-targets", "--", "-D", "warnings"],
        )?;
        step("clippy (fuzz targets)");
        // Their own workspace, checked in the main target directory so that
        // what both share (dependencies, the agent's build script and its
        // kernel object) is not built twice.
        let target = root().join("target");
        let status = Command::new("cargo")
            .args([
                "clippy",
                "--manifest-path",
                "fuzz/Cargo.toml",
                "--all-targets",
            ])
            .arg("--target-dir")
            .arg(&target)
            .args(["--", "-D", "warnings"])
            .current_dir(root())
            .status()
            .context("cannot run cargo clippy")?;
        if !status.success() {
            bail!("clippy on the fuzz targets failed ({status})");
        }
        step("clippy (kernel programs, bpfel-unknown-none)");
        sh(
            "cargo",
            &[
                "+nightly",
                "clippy",
                "--package",
                "sonde-ebpf",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--",
                "-D",
                "warnings",
            ],
        )?;
    }
    step("unit tests");
    sh(
        "cargo",
        &[
            "test",
            "--package",
            "sonde-common",
            "--package",
            "sonde-slo",
            "--package",
            "sonde",
            "--package",
            "sonde-proto",
            "--package",
            "sonde-collector",
            "--package",
            "xtask",
        ],
    )?;
    step("integration tests (root, real kernel)");
    build(false)?;
    let is_root = is_root()?;
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    if !is_root && ci {
        bail!(
            "CI=true and not root: the integration tests load eBPF programs and must run as root"
        );
    }
    if !is_root {
        eprintln!("xtask: not root: the integration tests will skip; run `sudo -E cargo xtask test` for them");
    }
    let status = integration_tests(&[])?.status()?;
    if !status.success() {
        bail!("integration tests failed");
    }
    // The container image's build steps, without the engine (none runs here).
    step("static build, as deploy/Dockerfile runs it: stripped, and the stripped agent's doctor");
    image::build()?;
    if is_root {
        image::check_doctor()?;
    }
    step(&format!(
        "fuzz: every target for {CI_FUZZ_SECONDS} s (`cargo xtask fuzz` runs them longer)"
    ));
    fuzz::run(CI_FUZZ_SECONDS, &[])?;
    step("vm-test --ci: the integration tests on the oldest and the newest x86_64 kernels (5.10, 7.2) and on arm64 (6.12), under QEMU (`cargo xtask vm-test` runs every kernel)");
    vm::run(&vm::Options::ci())
}

/// The tests crate's run, one test at a time, against the debug binaries,
/// with `args` for the test harness.
fn integration_tests(args: &[&str]) -> Result<Command> {
    let mut command = Command::new("cargo");
    command
        .args(["test", "--package", "sonde-tests", "--lib", "--"])
        .arg("--test-threads=1")
        .args(args);
    integration_env(&mut command)?;
    Ok(command)
}

/// What the integration tests find their binaries and Python by.
fn integration_env(command: &mut Command) -> Result<()> {
    command
        .env("SONDE_BIN", root().join("target/debug/sonde"))
        .env(
            "SONDE_COLLECTOR_BIN",
            root().join("target/debug/sonde-collector"),
        )
        .env("SONDE_PYTHON", setup::venv()?.join("bin/python"))
        .current_dir(root());
    Ok(())
}

fn is_root() -> Result<bool> {
    Ok(Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))?)
}

/// Runs the chaos scenarios (the tests crate's `#[ignore]`d `chaos::`
/// tests) one at a time and prints each one's figures.
fn chaos(filter: Option<&str>, minutes: Option<f64>) -> Result<()> {
    step("build");
    build(false)?;
    if !is_root()? {
        bail!("the chaos suite loads eBPF programs and creates cgroups and network namespaces: run it as root");
    }
    let results = root().join("target/chaos/results.jsonl");
    std::fs::create_dir_all(results.parent().unwrap_or(Path::new(".")))?;
    let _ = std::fs::remove_file(&results);
    let filter = format!("chaos::{}", filter.unwrap_or(""));
    step(&format!("chaos scenarios matching {filter}"));
    let mut command = integration_tests(&["--ignored", &filter])?;
    command.env("SONDE_CHAOS_RESULTS", &results);
    if let Some(m) = minutes {
        command.env("SONDE_CHAOS_MINUTES", m.to_string());
    }
    let status = command.status()?;
    let figures = std::fs::read_to_string(&results).unwrap_or_default();
    for line in figures.lines() {
        eprintln!("xtask: chaos: {line}");
    }
    eprintln!("xtask: chaos figures in {}", results.display());
    if !status.success() {
        bail!("a chaos scenario failed");
    }
    Ok(())
}

fn step(what: &str) {
    eprintln!("xtask: == {what}");
}
