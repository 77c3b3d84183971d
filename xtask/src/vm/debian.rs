//! What vm-test fetches from Debian's archive, through apt alone: QEMU from
//! bookworm-backports, busybox-static for each architecture, and the
//! unsigned cloud kernels. Every lookup and download uses a private apt
//! configuration (its own sources, lists and cache under `target/vm-cache`),
//! so the machine's `/etc/apt` and its package lists are left as they are.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

use super::Arch;

const MIRROR: &str = "http://deb.debian.org/debian";
const SECURITY: &str = "http://deb.debian.org/debian-security";

/// A Debian release and the archive lines it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suite {
    Bullseye,
    Bookworm,
    BookwormBackports,
    Sid,
}

impl Suite {
    fn name(self) -> &'static str {
        match self {
            Suite::Bullseye => "bullseye",
            Suite::Bookworm => "bookworm",
            Suite::BookwormBackports => "bookworm-backports",
            Suite::Sid => "sid",
        }
    }

    /// `sources.list` lines.
    fn sources(self) -> String {
        let lines: Vec<String> = match self {
            Suite::Bullseye | Suite::Bookworm => {
                let s = self.name();
                vec![
                    format!("deb {MIRROR} {s} main"),
                    format!("deb {MIRROR} {s}-updates main"),
                    format!("deb {SECURITY} {s}-security main"),
                ]
            }
            Suite::BookwormBackports => vec![format!("deb {MIRROR} bookworm-backports main")],
            Suite::Sid => vec![format!("deb {MIRROR} sid main")],
        };
        lines.join("\n") + "\n"
    }
}

/// A kernel vm-test knows how to fetch.
#[derive(Debug, Clone, Copy)]
pub struct KernelSpec {
    /// The version asked for on the command line (`6.1`).
    pub version: &'static str,
    pub arch: Arch,
    pub suite: Suite,
}

/// Every kernel of the full matrix. Debian's cloud flavour: small, with
/// BTF, virtio and the serial consoles QEMU offers built in.
pub const KERNELS: &[KernelSpec] = &[
    KernelSpec {
        version: "5.10",
        arch: Arch::X86_64,
        suite: Suite::Bullseye,
    },
    KernelSpec {
        version: "6.1",
        arch: Arch::X86_64,
        suite: Suite::Bookworm,
    },
    KernelSpec {
        version: "6.12",
        arch: Arch::X86_64,
        suite: Suite::BookwormBackports,
    },
    KernelSpec {
        version: "7.2",
        arch: Arch::X86_64,
        suite: Suite::Sid,
    },
    KernelSpec {
        version: "6.1",
        arch: Arch::Aarch64,
        suite: Suite::Bookworm,
    },
    KernelSpec {
        version: "6.12",
        arch: Arch::Aarch64,
        suite: Suite::BookwormBackports,
    },
];

/// A kernel ready to boot.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub spec: KernelSpec,
    /// The Debian package it came from.
    pub package: String,
    pub image: PathBuf,
    /// Modules `/init` loads (the loop driver, a module in Debian's builds).
    pub modules: Vec<PathBuf>,
}

/// The cache: downloads and unpacked kernels, in a folder git ignores.
pub fn cache() -> PathBuf {
    crate::root().join("target/vm-cache")
}

fn say(what: &str) {
    eprintln!("xtask vm-test: {what}");
}

/// A private apt root for one suite, both architectures.
struct Apt {
    dir: PathBuf,
}

impl Apt {
    fn new(suite: Suite) -> Result<Self> {
        let dir = cache().join("apt").join(suite.name());
        for sub in ["lists/partial", "cache/archives/partial", "parts", "dl"] {
            std::fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating {}", dir.join(sub).display()))?;
        }
        std::fs::write(dir.join("sources.list"), suite.sources())?;
        Ok(Self { dir })
    }

    fn options(&self) -> Vec<String> {
        let d = |s: &str| self.dir.join(s).to_string_lossy().into_owned();
        [
            format!("Dir::Etc::sourcelist={}", d("sources.list")),
            format!("Dir::Etc::sourceparts={}", d("parts")),
            format!("Dir::State::Lists={}", d("lists")),
            format!("Dir::Cache={}", d("cache")),
            "APT::Architectures::=amd64".to_owned(),
            "APT::Architectures::=arm64".to_owned(),
            // Downloads land in our own folder, which apt's sandbox user
            // may not write to.
            "APT::Sandbox::User=root".to_owned(),
        ]
        .into_iter()
        .flat_map(|o| ["-o".to_owned(), o])
        .collect()
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<String> {
        let out = Command::new(program)
            .args(self.options())
            .args(args)
            .current_dir(self.dir.join("dl"))
            .output()
            .with_context(|| format!("cannot run {program}"))?;
        if !out.status.success() {
            bail!(
                "`{program} {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Reads the suite's package lists: a few seconds, once per run, and
    /// only when something must be downloaded.
    fn update(&self) -> Result<()> {
        static UPDATED: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
        let mut updated = UPDATED
            .lock()
            .map_err(|_| anyhow::anyhow!("apt update lock poisoned"))?;
        if updated.contains(&self.dir) {
            return Ok(());
        }
        self.run("apt-get", &["update", "-qq"])?;
        updated.push(self.dir.clone());
        Ok(())
    }

    /// Downloads `package` and unpacks it into `into`; returns the .deb.
    fn fetch(&self, package: &str, into: &Path) -> Result<()> {
        let dl = self.dir.join("dl");
        for old in std::fs::read_dir(&dl)?.flatten() {
            let _ = std::fs::remove_file(old.path());
        }
        self.run("apt-get", &["download", "-qq", package])?;
        let deb = std::fs::read_dir(&dl)?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "deb"))
            .with_context(|| format!("apt-get download {package} left no .deb"))?;
        std::fs::create_dir_all(into)?;
        crate::sh(
            "dpkg-deb",
            &["-x", &deb.to_string_lossy(), &into.to_string_lossy()],
        )?;
        let _ = std::fs::remove_file(&deb);
        Ok(())
    }
}

/// `package` for `arch`, as apt names a foreign architecture's package.
fn qualified(package: &str, arch: Arch) -> String {
    match arch {
        Arch::X86_64 => package.to_owned(),
        Arch::Aarch64 => format!("{package}:arm64"),
    }
}

/// The names in `apt-cache depends` output that start with `prefix`.
pub fn depends_with_prefix(depends: &str, prefix: &str) -> Vec<String> {
    depends
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .map(|d| d.trim().trim_start_matches('<').trim_end_matches('>'))
        .map(|d| d.split(':').next().unwrap_or(d).to_owned())
        .filter(|d| d.starts_with(prefix))
        .collect()
}

/// The versions in `apt-cache madison` output, in its order (newest first).
pub fn madison_versions(madison: &str) -> Vec<String> {
    let mut out: Vec<String> = madison
        .lines()
        .filter_map(|l| l.split('|').nth(1))
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect();
    out.dedup();
    out
}

/// The kernel for `spec`, from the cache or downloaded.
pub fn kernel(spec: KernelSpec) -> Result<Kernel> {
    let dir = cache()
        .join("kernels")
        .join(format!("{}-{}", spec.arch.debian(), spec.version));
    let image = dir.join("vmlinuz");
    let package_file = dir.join("package");
    let modules_dir = dir.join("modules");
    // The marker holds the module list it was made for: a new list remakes it.
    let modules_done = std::fs::read_to_string(modules_dir.join(COMPLETE))
        .is_ok_and(|list| list == GUEST_MODULES.join(" "));
    if image.exists() && package_file.exists() && modules_done {
        let package = std::fs::read_to_string(&package_file)?.trim().to_owned();
        say(&format!(
            "kernel {} {}: cached ({package})",
            spec.arch.name(),
            spec.version
        ));
        return Ok(Kernel {
            spec,
            package,
            image,
            modules: modules_in(&modules_dir)?,
        });
    }
    let apt = Apt::new(spec.suite)?;
    apt.update()?;
    let meta = qualified(
        &format!("linux-image-cloud-{}", spec.arch.debian()),
        spec.arch,
    );
    let versions = madison_versions(&apt.run("apt-cache", &["madison", &meta])?);
    let mut errors = Vec::new();
    // The newest first; an archive that lists a version it no longer
    // serves (a 404) falls back to the next.
    for version in &versions {
        let depends = apt.run("apt-cache", &["depends", &format!("{meta}={version}")])?;
        let Some(abi) = depends_with_prefix(&depends, "linux-image-")
            .into_iter()
            .next()
        else {
            continue;
        };
        if !abi.starts_with(&format!("linux-image-{}.", spec.version)) {
            errors.push(format!("{abi} is not {}", spec.version));
            continue;
        }
        // Newer Debian kernels keep the image in linux-binary-*; older ones
        // in the unsigned twin of the (signed) image package.
        let abi_depends = apt.run("apt-cache", &["depends", &qualified(&abi, spec.arch)])?;
        let package = depends_with_prefix(&abi_depends, "linux-binary-")
            .into_iter()
            .next()
            .unwrap_or_else(|| format!("{abi}-unsigned"));
        say(&format!(
            "kernel {} {}: downloading {package}",
            spec.arch.name(),
            spec.version
        ));
        let unpacked = dir.join("unpacked");
        let _ = std::fs::remove_dir_all(&unpacked);
        if let Err(e) = apt.fetch(&qualified(&package, spec.arch), &unpacked) {
            errors.push(format!("{e:#}"));
            continue;
        }
        // Those split the modules off into linux-modules-*.
        if let Some(abi) = package.strip_prefix("linux-binary-") {
            let modules = format!("linux-modules-{abi}");
            if let Err(e) = apt.fetch(&qualified(&modules, spec.arch), &unpacked) {
                errors.push(format!("{e:#}"));
                continue;
            }
        }
        let found = find_files(&unpacked, &|name| name.starts_with("vmlinuz"))?;
        let vmlinuz = found
            .into_iter()
            .next()
            .with_context(|| format!("no vmlinuz in {package}"))?;
        std::fs::copy(&vmlinuz, &image)?;
        guest_modules(&unpacked, &modules_dir)?;
        let _ = std::fs::remove_dir_all(&unpacked);
        std::fs::write(&package_file, format!("{package}\n"))?;
        return Ok(Kernel {
            spec,
            package,
            image,
            modules: modules_in(&modules_dir)?,
        });
    }
    bail!(
        "no {} {} cloud kernel could be fetched from {}: {}",
        spec.arch.name(),
        spec.version,
        spec.suite.name(),
        errors.join("; ")
    )
}

/// Marks a cache folder as whole.
const COMPLETE: &str = ".complete";

/// The modules the guest loads, with what they depend on: the loop driver
/// (block tests), veth and nf_tables with numgen (the TCP tests' namespace
/// pairs and loss rules), tcp_diag (sock_diag for TCP sockets, which a host
/// loads on demand and the guest, without modprobe, cannot). crc32c first:
/// libcrc32c (nf_tables' dependency before 6.12) asks the crypto API for it
/// at load. A module the kernel has built in is simply not found.
const GUEST_MODULES: &[&str] = &[
    "crc32c_generic",
    "loop",
    "veth",
    "nf_tables",
    "nft_numgen",
    "tcp_diag",
];

/// Copies `GUEST_MODULES` and their dependencies out of an unpacked kernel
/// package into `into`, uncompressed (busybox's insmod reads plain ELF),
/// named `NN-name.ko` in load order.
fn guest_modules(unpacked: &Path, into: &Path) -> Result<()> {
    let _ = std::fs::remove_dir_all(into);
    std::fs::create_dir_all(into)?;
    let mut files = std::collections::BTreeMap::new();
    for path in find_files(unpacked, &|name| name.contains(".ko"))? {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let stem = name.split(".ko").next().unwrap_or(name).replace('-', "_");
        files.insert(stem, path);
    }
    let mut order: Vec<(String, Vec<u8>)> = Vec::new();
    let mut stack: Vec<(String, bool)> = GUEST_MODULES
        .iter()
        .rev()
        .map(|m| ((*m).to_owned(), false))
        .collect();
    // Depth first; a module is placed after everything it depends on.
    let mut seen = std::collections::BTreeSet::new();
    while let Some((name, expanded)) = stack.pop() {
        if order.iter().any(|(n, _)| *n == name) {
            continue;
        }
        let Some(path) = files.get(&name) else {
            continue;
        };
        let bytes = read_module(path)?;
        if expanded {
            order.push((name, bytes));
            continue;
        }
        if !seen.insert(name.clone()) {
            continue;
        }
        stack.push((name.clone(), true));
        for dep in modinfo_depends(&bytes) {
            stack.push((dep, false));
        }
    }
    for (i, (name, bytes)) in order.iter().enumerate() {
        std::fs::write(into.join(format!("{i:02}-{name}.ko")), bytes)?;
    }
    std::fs::write(into.join(COMPLETE), GUEST_MODULES.join(" "))?;
    Ok(())
}

/// A module file's bytes, uncompressed.
fn read_module(path: &Path) -> Result<Vec<u8>> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        "xz"
    } else if name.ends_with(".zst") {
        "zstd"
    } else if name.ends_with(".gz") {
        "gzip"
    } else {
        return std::fs::read(path).with_context(|| format!("reading {name}"));
    };
    let out = Command::new(tool)
        .arg("-dc")
        .arg(path)
        .output()
        .with_context(|| format!("cannot run {tool} to unpack {name}"))?;
    if !out.status.success() {
        bail!("{tool} -dc {name} failed");
    }
    Ok(out.stdout)
}

/// The `depends=` list of a module's `.modinfo` strings (NUL-separated
/// `key=value` pairs).
pub fn modinfo_depends(module: &[u8]) -> Vec<String> {
    module
        .split(|b| *b == 0)
        .filter_map(|field| field.strip_prefix(b"depends="))
        .flat_map(|list| {
            String::from_utf8_lossy(list)
                .split(',')
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .map(|d| d.trim().replace('-', "_"))
        .filter(|d| !d.is_empty())
        .collect()
}

fn modules_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "ko"))
        .collect();
    out.sort();
    Ok(out)
}

fn find_files(dir: &Path, matches: &dyn Fn(&str) -> bool) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)?.flatten() {
            let path = entry.path();
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file()
                && path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(matches)
            {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Debian packages (bookworm) the guest gets besides busybox: iproute2's
/// `ip` (busybox's has no `ip netns`) and nft, for the TCP tests' network
/// namespaces and loss rules, with the shared libraries they link (`ldd`)
/// and the dynamic loader (libc6).
const GUEST_PACKAGES: &[&str] = &[
    "iproute2",
    "nftables",
    "libnftables1",
    "libnftnl11",
    "libmnl0",
    "libjansson4",
    "libxtables12",
    "libedit2",
    "libtinfo6",
    "libbsd0",
    "libmd0",
    "libgmp10",
    "libcap2",
    "libelf1",
    "libbpf1",
    "zlib1g",
    "libc6",
];

/// The unpacked `GUEST_PACKAGES` for `arch` (documentation left out), cached.
pub fn guest_tools(arch: Arch) -> Result<PathBuf> {
    let dir = cache().join("tools").join(arch.debian());
    let root = dir.join("root");
    if dir.join(COMPLETE).exists() {
        say(&format!(
            "guest tools {}: cached (iproute2, nftables)",
            arch.name()
        ));
        return Ok(root);
    }
    say(&format!(
        "guest tools {}: downloading {}",
        arch.name(),
        GUEST_PACKAGES.join(", ")
    ));
    let apt = Apt::new(Suite::Bookworm)?;
    apt.update()?;
    let _ = std::fs::remove_dir_all(&root);
    for package in GUEST_PACKAGES {
        apt.fetch(&qualified(package, arch), &root)?;
    }
    for unneeded in ["usr/share", "etc/init.d", "etc/iproute2/rt_protos.d"] {
        let _ = std::fs::remove_dir_all(root.join(unneeded));
    }
    std::fs::write(dir.join(COMPLETE), "")?;
    Ok(root)
}

/// busybox-static for `arch`, from bookworm, cached.
pub fn busybox(arch: Arch) -> Result<PathBuf> {
    let path = cache().join("busybox").join(arch.debian()).join("busybox");
    if path.exists() {
        say(&format!("busybox-static {}: cached", arch.name()));
        return Ok(path);
    }
    say(&format!("busybox-static {}: downloading", arch.name()));
    let apt = Apt::new(Suite::Bookworm)?;
    apt.update()?;
    let unpacked = cache().join("busybox").join(arch.debian()).join("unpacked");
    let _ = std::fs::remove_dir_all(&unpacked);
    apt.fetch(&qualified("busybox-static", arch), &unpacked)?;
    std::fs::copy(unpacked.join("bin/busybox"), &path)
        .context("busybox-static holds no bin/busybox")?;
    let _ = std::fs::remove_dir_all(&unpacked);
    Ok(path)
}

/// QEMU for both architectures, from bookworm-backports: the machine image
/// has backports' qemu-utils, which plain bookworm's QEMU would remove.
/// Installed through a private sources list (bookworm, -updates,
/// -security, -backports), so `/etc/apt` stays untouched.
pub fn qemu() -> Result<()> {
    let check = "command -v qemu-system-x86_64 && command -v qemu-system-aarch64";
    if Command::new("sh")
        .args(["-c", check])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        say("QEMU (x86_64, aarch64): present");
        return Ok(());
    }
    say("QEMU: installing qemu-system-x86 and qemu-system-arm from bookworm-backports");
    let dir = cache().join("apt/qemu");
    std::fs::create_dir_all(dir.join("parts"))?;
    let sources = format!(
        "{}deb {MIRROR} bookworm-backports main\n",
        Suite::Bookworm.sources()
    );
    std::fs::write(dir.join("sources.list"), sources)?;
    let options = [
        "-o".to_owned(),
        format!(
            "Dir::Etc::sourcelist={}",
            dir.join("sources.list").display()
        ),
        "-o".to_owned(),
        format!("Dir::Etc::sourceparts={}", dir.join("parts").display()),
    ];
    let status = Command::new("apt-get")
        .args(&options)
        .args(["update", "-qq"])
        .status()?;
    if !status.success() {
        bail!("apt-get update (bookworm-backports) failed");
    }
    let status = Command::new("apt-get")
        .args(&options)
        .args([
            "install",
            "-y",
            "-qq",
            "--no-install-recommends",
            "-t",
            "bookworm-backports",
            "qemu-system-x86",
            "qemu-system-arm",
        ])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()?;
    if !status.success() {
        bail!("apt-get install qemu-system-x86 qemu-system-arm failed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_are_read_without_arch_or_angle_brackets() {
        let text = "linux-image-cloud-arm64:arm64\n  Depends: linux-base-cloud-arm64:arm64\n  Depends: linux-image-7.2.13+deb14-cloud-arm64:arm64\n |Depends: dracut\n  Depends: <linux-initramfs-tool>\n";
        assert_eq!(
            depends_with_prefix(text, "linux-image-"),
            vec!["linux-image-7.2.13+deb14-cloud-arm64"]
        );
        assert_eq!(
            depends_with_prefix(text, "linux-initramfs"),
            vec!["linux-initramfs-tool"]
        );
    }

    #[test]
    fn modinfo_gives_the_dependencies() {
        let bytes = b"\x7fELF junk\0license=GPL\0depends=nfnetlink,libcrc32c\0retpoline=Y\0name=nf_tables\0";
        assert_eq!(modinfo_depends(bytes), vec!["nfnetlink", "libcrc32c"]);
        assert!(modinfo_depends(b"\0depends=\0name=veth\0").is_empty());
    }

    #[test]
    fn madison_lists_versions_newest_first() {
        let text = "linux-image-cloud-amd64 | 5.10.262-1 | http://deb.debian.org/debian-security bullseye-security/main amd64 Packages\nlinux-image-cloud-amd64 | 5.10.223-1 | http://deb.debian.org/debian bullseye/main amd64 Packages\n";
        assert_eq!(madison_versions(text), vec!["5.10.262-1", "5.10.223-1"]);
    }
}
