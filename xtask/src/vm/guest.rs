//! The guest's initramfs: busybox, iproute2 and nft (Debian's, with their
//! libraries), sonde, the integration test binary, the kernel modules the
//! tests need, and a `/init` that runs them and prints a verdict.

use std::path::Path;

use anyhow::{Context as _, Result};

use super::{
    cpio::{self, Entry},
    matrix::{DMESG, SKIP, VERDICT},
};

/// Directories `/init` mounts on or writes to.
const DIRS: &[&str] = &[
    "bin",
    "dev",
    "proc",
    "sys",
    "tmp",
    "run",
    "root",
    "var",
    "lib",
    "lib/modules",
];

/// The guest's `/init`: a busybox shell script. `tests` are libtest
/// arguments (filters, `--skip`, `--exact`).
pub fn init_script(tests: &[String], refuse_programs: &[String]) -> String {
    let args: Vec<String> = tests.iter().map(|t| shell_quote(t)).collect();
    let refuse = if refuse_programs.is_empty() {
        String::new()
    } else {
        format!(
            "export SONDE_REFUSE_PROGRAMS={}\n",
            shell_quote(&refuse_programs.join(","))
        )
    };
    format!(
        r#"#!/bin/busybox sh
# busybox's applets in a folder of their own, last on PATH: iproute2's ip
# (with ip netns) and nft come first.
/bin/busybox mkdir -p /busybox
/bin/busybox --install -s /busybox
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:/busybox
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t bpf bpf /sys/fs/bpf
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug
# Pure cgroup v2: the tests' cgroups need the controllers they limit.
for c in cpu memory io pids; do
    echo "+$c" > /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null
done
# Without it a connect to 127.0.0.1 hangs.
ip link set lo up
# In dependency order (NN-name.ko).
for m in /lib/modules/*.ko; do
    [ -e "$m" ] && insmod "$m"
done
# Full paths: Debian's busybox shell runs its own applets before PATH.
/bin/ip -V; /usr/sbin/nft --version
export SONDE_VM=1 SONDE_BIN=/bin/sonde SONDE_VM_SKIPS=/tmp/skips HOME=/root TMPDIR=/tmp
{refuse}echo "SONDE-VM-BOOTED $(uname -r) $(uname -m) $(nproc) cpus"
/bin/sonde doctor --json > /tmp/doctor.json 2> /tmp/doctor.err
doctor_exit=$?
/bin/sonde doctor 2>&1
/bin/sonde-tests --test-threads=1 {args}
tests_exit=$?
# The console shows only panics and worse (loglevel=3): warnings from here.
# (The OOM test's oom-killer report has a call trace of its own: not these.)
dmesg | grep -E "WARNING: |BUG: |Oops" | while read -r line; do echo "{DMESG}$line"; done
if [ -e /tmp/skips ]; then
    while read -r line; do echo "{SKIP}$line"; done < /tmp/skips
fi
doctor=$(tr -d '\n' < /tmp/doctor.json)
[ -n "$doctor" ] || doctor=null
echo "{VERDICT}{{\"release\":\"$(uname -r)\",\"machine\":\"$(uname -m)\",\"doctor_exit\":$doctor_exit,\"tests_exit\":$tests_exit,\"doctor\":$doctor}}"
sync
poweroff -f
"#,
        args = args.join(" "),
    )
}

/// Adds every directory, file and symlink under `dir` (paths relative to
/// `base`), modes kept.
fn tree(base: &Path, dir: &Path, entries: &mut Vec<Entry>) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut children: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .collect();
    children.sort();
    for path in children {
        let rel = path
            .strip_prefix(base)
            .context("a path inside the tree")?
            .to_string_lossy()
            .into_owned();
        let meta = std::fs::symlink_metadata(&path)?;
        let mode = meta.permissions().mode() & 0o7777;
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path)?;
            entries.push(Entry::Symlink {
                path: rel,
                target: target.to_string_lossy().into_owned(),
            });
        } else if meta.is_dir() {
            entries.push(Entry::Dir { path: rel, mode });
            tree(base, &path, entries)?;
        } else if meta.is_file() {
            entries.push(Entry::File {
                path: rel,
                mode,
                data: std::fs::read(&path)?,
            });
        }
    }
    Ok(())
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The files of one guest.
pub struct Payload<'a> {
    pub busybox: &'a Path,
    pub sonde: &'a Path,
    pub tests_bin: &'a Path,
    pub modules: &'a [std::path::PathBuf],
    /// A folder of unpacked Debian packages laid over the root.
    pub tools: &'a Path,
    pub tests: &'a [String],
    pub refuse_programs: &'a [String],
}

/// Writes the gzip-compressed `newc` initramfs to `out`.
pub fn initramfs(payload: &Payload<'_>, out: &Path) -> Result<()> {
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let mut entries: Vec<Entry> = DIRS
        .iter()
        .map(|d| Entry::Dir {
            path: (*d).to_owned(),
            mode: 0o755,
        })
        .collect();
    // `ip netns` keeps its namespaces under /var/run.
    entries.push(Entry::Symlink {
        path: "var/run".into(),
        target: "/run".into(),
    });
    tree(payload.tools, payload.tools, &mut entries)?;
    entries.push(Entry::File {
        path: "bin/busybox".into(),
        mode: 0o755,
        data: read(payload.busybox)?,
    });
    entries.push(Entry::Symlink {
        path: "bin/sh".into(),
        target: "busybox".into(),
    });
    entries.push(Entry::File {
        path: "bin/sonde".into(),
        mode: 0o755,
        data: read(payload.sonde)?,
    });
    entries.push(Entry::File {
        path: "bin/sonde-tests".into(),
        mode: 0o755,
        data: read(payload.tests_bin)?,
    });
    for module in payload.modules {
        let name = module
            .file_name()
            .and_then(|n| n.to_str())
            .context("module name")?;
        entries.push(Entry::File {
            path: format!("lib/modules/{name}"),
            mode: 0o644,
            data: read(module)?,
        });
    }
    entries.push(Entry::File {
        path: "init".into(),
        mode: 0o755,
        data: init_script(payload.tests, payload.refuse_programs).into_bytes(),
    });
    // Parents before children, each path once (the first wins).
    let mut seen = std::collections::BTreeSet::new();
    entries.retain(|e| seen.insert(cpio::path(e).to_owned()));
    entries.sort_by(|a, b| cpio::path(a).cmp(cpio::path(b)));
    let archive = cpio::write(&entries);
    let raw = out.with_extension("cpio");
    std::fs::write(&raw, archive).with_context(|| format!("writing {}", raw.display()))?;
    // gzip -1: the kernel unpacks it either way; speed matters more here.
    let gz = std::process::Command::new("gzip")
        .args(["-1", "-f", "-n"])
        .arg(&raw)
        .status()
        .context("cannot run gzip")?;
    anyhow::ensure!(gz.success(), "gzip {} failed", raw.display());
    std::fs::rename(raw.with_extension("cpio.gz"), out)
        .with_context(|| format!("moving the initramfs to {}", out.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_runs_the_chosen_tests_and_prints_the_verdict() {
        let init = init_script(&["syscalls::".into(), "it's".into()], &[]);
        assert!(init.starts_with("#!/bin/busybox sh\n"));
        assert!(init.contains("/bin/sonde-tests --test-threads=1 'syscalls::' 'it'\\''s'\n"));
        assert!(init.contains("export SONDE_VM=1 "));
        assert!(init.contains("ip link set lo up"));
        assert!(init.contains("echo \"SONDE-VM-SKIP $line\""));
        assert!(init.contains("echo \"SONDE-VM-RESULT {\\\"release\\\":\\\"$(uname -r)\\\""));
        assert!(init.trim_end().ends_with("poweroff -f"));
    }
}
