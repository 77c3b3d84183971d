//! Builds the kernel programs (`sonde-ebpf`) with nightly for the BPF target
//! and leaves the object in OUT_DIR, where `probes` embeds it.
//!
//! With `AYA_BUILD_SKIP=1` (aya-build's own switch) the kernel programs are
//! not built and an empty object is embedded instead: the library's parsers
//! and decoders still build and run (the fuzz targets use this), but loading
//! the probes fails with `LoadError::NoKernelPrograms`.
use anyhow::{anyhow, Context as _};
use aya_build::{Package, Toolchain};

/// aya-build's switch; read here too, to leave an empty object behind.
const SKIP: &str = "AYA_BUILD_SKIP";

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?;
    println!("cargo::rerun-if-env-changed={SKIP}");
    if std::env::var(SKIP).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
        let out_dir = std::env::var("OUT_DIR").context("OUT_DIR not set")?;
        let object = std::path::Path::new(&out_dir).join("sonde");
        std::fs::write(&object, b"").with_context(|| format!("writing {}", object.display()))?;
        return Ok(());
    }
    let ebpf_dir = std::path::Path::new(&manifest_dir).join("../agent-ebpf");
    let ebpf_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path to agent-ebpf"))?;
    println!("cargo::rerun-if-changed=../agent-common/src");
    aya_build::build_ebpf(
        [Package {
            name: "sonde-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        Toolchain::default(),
    )
    .map_err(|e| anyhow!("building the kernel programs failed (is bpf-linker installed? run `cargo xtask setup`): {e:#}"))
}
