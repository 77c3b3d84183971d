//! Builds the kernel programs (`sonde-ebpf`) with nightly for the BPF target
//! and leaves the object in OUT_DIR, where `probes` embeds it.
use anyhow::{anyhow, Context as _};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?;
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
