//! `cargo xtask vm-test`: the integration tests on other kernels and on
//! arm64, under QEMU. Builds sonde and the test binary statically (musl),
//! packs them with busybox into an initramfs, boots each Debian cloud kernel
//! with it, and gathers the guests' verdicts into a matrix (kernel × arch ×
//! probe family, and the tests), printed and written as JSON.

mod cpio;
mod debian;
pub mod expect;
mod guest;
mod matrix;

use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::root;

/// An architecture vm-test builds for and boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Arch {
    #[value(name = "x86_64")]
    X86_64,
    #[value(name = "aarch64")]
    Aarch64,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// Debian's name for it.
    pub fn debian(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
        }
    }

    fn rust_target(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-linux-musl",
            Arch::Aarch64 => "aarch64-unknown-linux-musl",
        }
    }

    /// Environment for cross-building: rust-lld links (no cross gcc
    /// linker needed), and ring's C goes through Debian's cross gcc. The
    /// native musl target uses musl-tools' gcc, as the static build does.
    fn build_env(self) -> Vec<(&'static str, &'static str)> {
        match self {
            Arch::X86_64 => vec![],
            Arch::Aarch64 => vec![
                ("CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER", "rust-lld"),
                ("CC_aarch64_unknown_linux_musl", "aarch64-linux-gnu-gcc"),
                ("AR_aarch64_unknown_linux_musl", "aarch64-linux-gnu-ar"),
            ],
        }
    }

    fn strip(self) -> &'static str {
        match self {
            Arch::X86_64 => "strip",
            Arch::Aarch64 => "aarch64-linux-gnu-strip",
        }
    }

    fn qemu(self, kernel: &Path, initrd: &Path, memory_mib: u32) -> Command {
        // psi=1: Debian builds PSI in but may leave it off by default.
        // panic=-1 with -no-reboot: a panic ends QEMU at once.
        let common = "panic=-1 quiet loglevel=3 psi=1";
        let mut cmd = match self {
            Arch::X86_64 => {
                let mut c = Command::new("qemu-system-x86_64");
                c.args(["-cpu", "max"])
                    .args(["-append", &format!("console=ttyS0 {common}")]);
                c
            }
            Arch::Aarch64 => {
                let mut c = Command::new("qemu-system-aarch64");
                // pauth-impdef: QEMU's cheap pointer authentication; the
                // architected one costs TCG dearly.
                c.args(["-M", "virt", "-cpu", "max,pauth-impdef=on"])
                    .args(["-append", &format!("console=ttyAMA0 {common}")]);
                c
            }
        };
        cmd.args(["-accel", "tcg", "-smp", "2", "-nographic", "-no-reboot"])
            .args(["-m", &memory_mib.to_string()])
            .arg("-kernel")
            .arg(kernel)
            .arg("-initrd")
            .arg(initrd);
        cmd
    }
}

/// What to run.
pub struct Options {
    /// The kernels, in boot order (grouped by architecture).
    pub kernels: Vec<debian::KernelSpec>,
    /// libtest arguments for the guest (filters, `--skip`); empty: all.
    pub tests: Vec<String>,
    pub timeout: Duration,
    /// Where the matrix JSON goes.
    pub out: PathBuf,
    /// Boots of each kernel (a test that fails now and then shows in N).
    pub repeat: u32,
    /// Programs the guest's sonde must fail to load, as a verifier
    /// rejection would (to show the matrix fails such a run).
    pub refuse_programs: Vec<String>,
}

impl Options {
    /// The kernels of `arches` (empty: both) whose version is one of
    /// `versions` (empty: all), every test.
    pub fn select(arches: &[Arch], versions: &[String]) -> Result<Self> {
        let kernels: Vec<debian::KernelSpec> = debian::KERNELS
            .iter()
            .filter(|k| arches.is_empty() || arches.contains(&k.arch))
            .filter(|k| versions.is_empty() || versions.iter().any(|v| v == k.version))
            .copied()
            .collect();
        if kernels.is_empty() {
            let known: Vec<String> = debian::KERNELS
                .iter()
                .map(|k| format!("{} {}", k.arch.name(), k.version))
                .collect();
            bail!("no kernel matches; vm-test knows: {}", known.join(", "));
        }
        Ok(Self {
            kernels,
            tests: Vec::new(),
            timeout: Duration::from_secs(1800),
            repeat: 1,
            refuse_programs: Vec::new(),
            out: root().join("target/vm-test/matrix.json"),
        })
    }

    /// What `cargo xtask test` (CI) runs: the oldest and the newest x86_64
    /// kernels and the newer arm64 one, every test (a boot with all of them
    /// takes four to seven minutes under TCG; the builds take longer).
    pub fn ci() -> Self {
        let kernels = debian::KERNELS
            .iter()
            .filter(|k| {
                (k.arch == Arch::X86_64 && (k.version == "5.10" || k.version == "7.2"))
                    || (k.arch == Arch::Aarch64 && k.version == "6.12")
            })
            .copied()
            .collect();
        Self {
            kernels,
            tests: Vec::new(),
            repeat: 1,
            refuse_programs: Vec::new(),
            timeout: Duration::from_secs(900),
            out: root().join("target/vm-test/ci-matrix.json"),
        }
    }
}

fn say(what: &str) {
    eprintln!("xtask vm-test: {what}");
}

/// Installs what vm-test needs (idempotent): QEMU, the Rust musl targets,
/// Debian's aarch64 cross gcc for ring's C (linking is rust-lld's), and
/// musl-tools for x86_64 (already among setup's packages).
pub fn setup(arches: &[Arch]) -> Result<()> {
    debian::qemu()?;
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("cannot run rustup")?;
    let installed = String::from_utf8_lossy(&installed.stdout).into_owned();
    for arch in arches {
        let target = arch.rust_target();
        if installed.lines().any(|l| l.trim() == target) {
            say(&format!("rust target {target}: present"));
        } else {
            say(&format!("rust target {target}: installing"));
            crate::sh("rustup", &["target", "add", target])?;
        }
    }
    if arches.contains(&Arch::Aarch64) {
        crate::setup::debian_packages(&[
            ("gcc-aarch64-linux-gnu", "command -v aarch64-linux-gnu-gcc"),
            (
                "libc6-dev-arm64-cross",
                "test -e /usr/aarch64-linux-gnu/include/stdint.h",
            ),
        ])?;
    }
    Ok(())
}

/// Runs the matrix; fails when any run is not clean (after writing it).
pub fn run(options: &Options) -> Result<()> {
    let started = Instant::now();
    let mut arches: Vec<Arch> = options.kernels.iter().map(|k| k.arch).collect();
    arches.dedup();
    setup(&arches)?;
    let work = root().join("target/vm-test");
    std::fs::create_dir_all(&work)?;
    let mut runs = Vec::new();
    for arch in &arches {
        let arch_specs: Vec<_> = options.kernels.iter().filter(|k| k.arch == *arch).collect();
        if arch_specs.is_empty() {
            continue;
        }
        let build_started = Instant::now();
        let (sonde, tests_bin) = build(*arch, &work)?;
        say(&format!(
            "{}: built in {:.0} s",
            arch.name(),
            build_started.elapsed().as_secs_f64()
        ));
        let busybox = debian::busybox(*arch)?;
        let tools = debian::guest_tools(*arch)?;
        for spec in arch_specs {
            let kernel = debian::kernel(*spec)?;
            let initrd = work.join(format!("{}-{}.initramfs.gz", arch.name(), spec.version));
            guest::initramfs(
                &guest::Payload {
                    busybox: &busybox,
                    sonde: &sonde,
                    tests_bin: &tests_bin,
                    modules: &kernel.modules,
                    tools: &tools,
                    tests: &options.tests,
                    refuse_programs: &options.refuse_programs,
                },
                &initrd,
            )?;
            for boot_number in 1..=options.repeat {
                let suffix = if options.repeat > 1 {
                    format!("-{boot_number}")
                } else {
                    String::new()
                };
                let log = work.join(format!(
                    "{}-{}{suffix}.console.log",
                    arch.name(),
                    spec.version
                ));
                say(&format!(
                    "booting {} {} ({}){}, console in {}",
                    arch.name(),
                    spec.version,
                    kernel.package,
                    if options.repeat > 1 {
                        format!(", boot {boot_number} of {}", options.repeat)
                    } else {
                        String::new()
                    },
                    log.display()
                ));
                let run = boot(&kernel, &initrd, &log, options.timeout)?;
                say(&format!(
                    "{} {}: {}, {} passed, {} failed, {} skipped in {:.0} s",
                    arch.name(),
                    spec.version,
                    if run.ok() { "clean" } else { "NOT CLEAN" },
                    run.tests.passed.len(),
                    run.tests.failed.len(),
                    run.tests.skipped.len(),
                    run.boot_to_poweroff_secs
                ));
                runs.push(run);
            }
        }
    }
    let table = matrix::render(&runs);
    println!("{table}");
    if let Some(dir) = options.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let json = serde_json::json!({
        "wall_secs": started.elapsed().as_secs(),
        "runs": runs,
    });
    std::fs::write(&options.out, serde_json::to_string_pretty(&json)? + "\n")
        .with_context(|| format!("writing {}", options.out.display()))?;
    say(&format!(
        "matrix in {} ({:.0} s in all)",
        options.out.display(),
        started.elapsed().as_secs_f64()
    ));
    let bad: Vec<String> = runs
        .iter()
        .filter(|r| !r.ok())
        .map(|r| format!("{} {}", r.arch, r.kernel))
        .collect();
    if options.repeat > 1 {
        say(&format!(
            "{} of {} boots clean",
            runs.len() - bad.len(),
            runs.len()
        ));
    }
    if !bad.is_empty() {
        bail!("not clean on: {}", bad.join(", "));
    }
    Ok(())
}

/// Builds `sonde` and the integration test binary for `arch` (release:
/// TCG runs them tens of times slower than the host would) and copies them,
/// stripped, into `work/<arch>/`.
fn build(arch: Arch, work: &Path) -> Result<(PathBuf, PathBuf)> {
    let target = arch.rust_target();
    let cargo = |args: &[&str]| -> Result<std::process::Output> {
        let mut cmd = Command::new("cargo");
        cmd.args(args)
            .args(["--release", "--target", target])
            .current_dir(root())
            .stderr(Stdio::inherit());
        for (k, v) in arch.build_env() {
            cmd.env(k, v);
        }
        let out = cmd.output().context("cannot run cargo")?;
        if !out.status.success() {
            bail!("`cargo {} --target {target}` failed", args.join(" "));
        }
        Ok(out)
    };
    say(&format!(
        "{}: building sonde and the tests for {target}",
        arch.name()
    ));
    cargo(&["build", "--package", "sonde"])?;
    let out = cargo(&[
        "test",
        "--no-run",
        "--package",
        "sonde-tests",
        "--lib",
        "--message-format=json",
    ])?;
    let tests_bin = test_executable(&String::from_utf8_lossy(&out.stdout))
        .context("cargo named no test executable for sonde-tests")?;
    let sonde = root().join("target").join(target).join("release/sonde");
    let dir = work.join(arch.name());
    std::fs::create_dir_all(&dir)?;
    let mut stripped = Vec::new();
    for (from, name) in [(&sonde, "sonde"), (&tests_bin, "sonde-tests")] {
        let to = dir.join(name);
        let status = Command::new(arch.strip())
            .args(["--strip-debug", "-o"])
            .arg(&to)
            .arg(from)
            .status()
            .with_context(|| format!("cannot run {}", arch.strip()))?;
        if !status.success() {
            bail!("{} {} failed", arch.strip(), from.display());
        }
        stripped.push(to);
    }
    Ok((stripped[0].clone(), stripped[1].clone()))
}

/// The test executable in `cargo test --no-run --message-format=json`.
pub(crate) fn test_executable(messages: &str) -> Option<PathBuf> {
    messages
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["profile"]["test"] == true)
        .filter(|m| m["target"]["name"] == "sonde_tests")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
}

/// Boots one kernel with the initramfs, watching its console.
fn boot(
    kernel: &debian::Kernel,
    initrd: &Path,
    log: &Path,
    timeout: Duration,
) -> Result<matrix::Run> {
    let started = Instant::now();
    let mut child = kernel
        .spec
        .arch
        .qemu(&kernel.image, initrd, 1024)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start QEMU (cargo xtask vm-test installs it)")?;
    let stdout = child.stdout.take().context("QEMU's stdout")?;
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut buf = Vec::new();
        while reader.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
            if tx.send(String::from_utf8_lossy(&buf).into_owned()).is_err() {
                break;
            }
            buf.clear();
        }
    });
    let mut file =
        std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut console = String::new();
    let deadline = started + timeout;
    let mut timed_out = false;
    // After a verdict or a kernel bug, a short grace for the rest.
    let mut ending: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let until = ending.unwrap_or(deadline).min(deadline);
        if now >= until {
            timed_out = ending.is_none();
            break;
        }
        match rx.recv_timeout(until - now) {
            Ok(line) => {
                file.write_all(line.as_bytes())?;
                let trimmed = line.trim_end();
                if trimmed.starts_with("test ")
                    || trimmed.contains("SONDE-VM-")
                    || trimmed.contains("Kernel panic")
                    || trimmed.contains("BUG: ")
                {
                    eprintln!("  | {}", trimmed.chars().take(200).collect::<String>());
                }
                console.push_str(&line);
                if ending.is_none()
                    && (trimmed.contains(matrix::VERDICT.trim_end())
                        || trimmed.contains("Kernel panic"))
                {
                    ending = Some(Instant::now() + Duration::from_secs(15));
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let parsed = matrix::parse_console(&console);
    let outcome = if let Some(bug) = &parsed.kernel_bug {
        matrix::Outcome::KernelBug(bug.clone())
    } else if parsed.verdict.is_some() {
        matrix::Outcome::Completed
    } else if timed_out {
        matrix::Outcome::Timeout
    } else {
        matrix::Outcome::NoVerdict
    };
    let verdict = parsed.verdict.unwrap_or(serde_json::Value::Null);
    Ok(matrix::Run {
        arch: kernel.spec.arch.name().to_owned(),
        kernel: kernel.spec.version.to_owned(),
        package: kernel.package.clone(),
        release: verdict["release"].as_str().map(str::to_owned),
        outcome,
        tests_exit: verdict["tests_exit"].as_i64(),
        probes: matrix::probes(&verdict),
        problems: match verdict.get("doctor") {
            Some(doctor) if !doctor.is_null() => expect::problems(doctor),
            _ => Vec::new(),
        },
        tests: parsed.tests,
        kernel_warnings: parsed.kernel_warnings,
        boot_to_poweroff_secs: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_executable_comes_from_cargos_messages() {
        let messages = r#"{"reason":"compiler-artifact","target":{"name":"sonde","kind":["lib"]},"profile":{"test":false},"executable":null}
{"reason":"compiler-artifact","target":{"name":"sonde_tests","kind":["lib"]},"profile":{"test":true},"executable":"/w/target/aarch64-unknown-linux-musl/release/deps/sonde_tests-0123"}
{"reason":"build-finished","success":true}"#;
        assert_eq!(
            test_executable(messages),
            Some(PathBuf::from(
                "/w/target/aarch64-unknown-linux-musl/release/deps/sonde_tests-0123"
            ))
        );
    }
}
