//! The container image's binaries (`cargo xtask build --static`): static
//! musl release builds, shipped without debug info or symbols, each with
//! its debug info kept beside it in `debug/<name>.debug`, found again by the
//! build id both files carry (and by a `.gnu_debuglink` section), so that a
//! crash report from a node can be symbolised.
//!
//! Only the host binary's own sections are stripped: the kernel programs
//! are an ELF object embedded as bytes in the binary's read-only data, and
//! their BTF (which the kernel needs to load them) is inside those bytes.
//! `check` proves both: no debug section or symbol table is left, and the
//! stripped agent's `doctor` attaches every family this kernel allows.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, ensure, Context as _, Result};

use crate::{root, sh};

/// The static (musl) release binaries the container image ships.
pub const STATIC_TARGET: &str = "x86_64-unknown-linux-musl";

/// The binaries of the images.
const BINARIES: [&str; 2] = ["sonde", "sonde-collector"];

/// Where the shipped binaries are put (deploy/Dockerfile copies them from
/// there), relative to the workspace root.
pub const IMAGE_DIR: &str = "target/image";

/// Builds the static binaries, then strips them into `target/image/` with
/// their debug info in `target/image/debug/`, and checks what it shipped.
pub fn build() -> Result<()> {
    sh("rustup", &["target", "add", STATIC_TARGET])?;
    // ring and mimalloc compile C: musl-tools' x86_64-linux-musl-gcc does it.
    sh(
        "cargo",
        &[
            "build",
            "--release",
            "--target",
            STATIC_TARGET,
            "--package",
            "sonde",
            "--package",
            "sonde-collector",
        ],
    )?;
    let built = root().join("target").join(STATIC_TARGET).join("release");
    let image = root().join(IMAGE_DIR);
    std::fs::create_dir_all(image.join("debug"))
        .with_context(|| format!("cannot create {}", image.display()))?;
    for name in BINARIES {
        let from = built.join(name);
        let debug = debug_file(&image, name);
        let shipped = image.join(name);
        objcopy(&["--only-keep-debug"], &from, &debug)?;
        // The debuglink names the file alone: a debugger looks for it beside
        // the binary and under /usr/lib/debug, the build id finds it in a
        // debuginfod or a `.build-id/` tree.
        let link = format!("--add-gnu-debuglink={}", debug.display());
        objcopy(&["--strip-all", &link], &from, &shipped)?;
        let (before, after) = (size(&from)?, size(&shipped)?);
        eprintln!(
            "xtask: {name}: {} MB as built, {} MB shipped ({}), debug info in {}",
            mb(before),
            mb(after),
            shipped.display(),
            debug.display()
        );
    }
    check()
}

/// What `build` shipped is what it should be: every binary without debug
/// sections or symbols, with a build id equal to its debug file's.
pub fn check() -> Result<()> {
    let image = root().join(IMAGE_DIR);
    for name in BINARIES {
        let shipped = image.join(name);
        let elf = crate::elf::Elf::read(&shipped)?;
        // Loaded sections stay: `.debug_gdb_scripts`, despite its name, is
        // 34 bytes of data rustc puts in memory (the names of gdb's
        // pretty-printers), not debug info.
        let leftover: Vec<&str> = elf
            .unloaded_section_names()
            .filter(|n| n.starts_with(".debug") || *n == ".symtab" || *n == ".strtab")
            .collect();
        ensure!(
            leftover.is_empty(),
            "{} still carries {leftover:?}: the strip step did not run",
            shipped.display()
        );
        let id = elf
            .build_id()
            .with_context(|| format!("{} has no build id", shipped.display()))?;
        let debug = crate::elf::Elf::read(&debug_file(&image, name))?;
        for needed in [".debug_info", ".symtab"] {
            ensure!(
                debug.section_names().any(|n| n == needed),
                "the debug file of {name} holds no {needed}"
            );
        }
        ensure!(
            debug.build_id() == Some(id.clone()),
            "the debug file of {name} is not of the same build (build ids differ)"
        );
        eprintln!(
            "xtask: {name}: no debug section or symbol table; build id {}",
            hex(&id)
        );
    }
    Ok(())
}

/// Runs the shipped agent's `doctor --json` and holds it to the kernel
/// expectations vm-test uses: every family attached, or degraded only where
/// this kernel lacks a feature. Needs root (it loads the programs).
pub fn check_doctor() -> Result<()> {
    let agent = root().join(IMAGE_DIR).join("sonde");
    let out = Command::new(&agent)
        .args(["doctor", "--json"])
        .output()
        .with_context(|| format!("cannot run {}", agent.display()))?;
    let doctor: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "the stripped agent's doctor gave no report ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let problems = crate::vm::expect::problems(&doctor);
    if !problems.is_empty() {
        bail!("the stripped agent's doctor: {}", problems.join("; "));
    }
    let families = doctor
        .get("probes")
        .and_then(serde_json::Value::as_array)
        .map_or(0, Vec::len);
    eprintln!(
        "xtask: the stripped agent loads its programs: doctor passes for {families} families"
    );
    Ok(())
}

fn debug_file(image: &Path, name: &str) -> PathBuf {
    image.join("debug").join(format!("{name}.debug"))
}

fn objcopy(args: &[&str], from: &Path, to: &Path) -> Result<()> {
    let status = Command::new("objcopy")
        .args(args)
        .arg(from)
        .arg(to)
        .status()
        .context("cannot run objcopy (Debian package binutils)")?;
    ensure!(
        status.success(),
        "objcopy {args:?} {} failed",
        from.display()
    );
    Ok(())
}

fn size(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .len())
}

fn mb(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / 1e6)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// deploy/Dockerfile ships what `build` makes, stripped: each of its
    /// `COPY --from=build` takes a file of `IMAGE_DIR`.
    #[test]
    fn the_dockerfile_copies_the_stripped_binaries() {
        let dockerfile =
            std::fs::read_to_string(root().join("deploy/Dockerfile")).expect("deploy/Dockerfile");
        let copied: Vec<&str> = dockerfile
            .lines()
            .filter_map(|l| l.strip_prefix("COPY --from=build /src/"))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        let mut expected: Vec<String> = BINARIES
            .iter()
            .map(|b| format!("{IMAGE_DIR}/{b}"))
            .collect();
        expected.push(format!("{IMAGE_DIR}/debug/"));
        assert_eq!(copied, expected);
    }
}
