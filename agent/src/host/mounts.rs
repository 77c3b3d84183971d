//! Mount points sonde depends on: tracefs (classic tracepoints) and the
//! cgroup v2 hierarchy (cgroup ids), found in `/proc/self/mountinfo`.

use std::path::{Path, PathBuf};

/// Where tracefs is conventionally mounted.
pub const TRACEFS: &str = "/sys/kernel/tracing";

/// Mount points of interest, parsed from a mountinfo text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mounts {
    /// First mount of type `tracefs`.
    pub tracefs: Option<PathBuf>,
    /// First mount of type `cgroup2` (pure v2: `/sys/fs/cgroup`; hybrids:
    /// often `/sys/fs/cgroup/unified`).
    pub cgroup2: Option<PathBuf>,
    /// Mount of the cgroup v1 hierarchy that holds the `cpu` controller.
    pub cgroup1_cpu: Option<PathBuf>,
}

impl Mounts {
    /// Reads the calling process's mount table.
    pub fn current() -> std::io::Result<Self> {
        Ok(Self::parse_mountinfo(&std::fs::read_to_string(
            "/proc/self/mountinfo",
        )?))
    }

    /// Parses `/proc/<pid>/mountinfo`: field 5 is the mount point, and the
    /// filesystem type follows the ` - ` separator.
    pub fn parse_mountinfo(text: &str) -> Self {
        let mut mounts = Self::default();
        for line in text.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let Some(mount_point) = left.split(' ').nth(4) else {
                continue;
            };
            let mount_point = PathBuf::from(unescape(mount_point));
            match right.split(' ').next() {
                Some("tracefs") if mounts.tracefs.is_none() => mounts.tracefs = Some(mount_point),
                Some("cgroup2") if mounts.cgroup2.is_none() => mounts.cgroup2 = Some(mount_point),
                Some("cgroup")
                    if mounts.cgroup1_cpu.is_none()
                        && right
                            .split(' ')
                            .nth(2)
                            .is_some_and(|opts| opts.split(',').any(|o| o == "cpu")) =>
                {
                    mounts.cgroup1_cpu = Some(mount_point)
                }
                _ => {}
            }
        }
        mounts
    }

    /// Whether classic tracepoints can be attached: tracefs mounted with events.
    pub fn tracefs_ready(&self) -> bool {
        self.tracefs
            .as_deref()
            .is_some_and(|p| p.join("events").is_dir())
    }
}

/// Mounts tracefs at its conventional place when it is missing (a fresh
/// machine may not have it; classic tracepoints need it). Root only.
pub fn mount_tracefs() -> std::io::Result<()> {
    mount_fs("tracefs", TRACEFS)
}

/// Where the BPF file system is conventionally mounted.
pub const BPFFS: &str = "/sys/fs/bpf";

/// Mounts the BPF file system at `target` (pinned maps and links live
/// there; a fresh machine may not have it mounted). Root only.
pub fn mount_bpffs(target: &Path) -> std::io::Result<()> {
    mount_fs("bpf", target.to_str().unwrap_or(BPFFS))
}

/// `statfs` magic of the BPF file system.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Whether `path` lies on a BPF file system.
pub fn on_bpffs(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt as _;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs fills the zeroed struct; the path is NUL-terminated.
    unsafe {
        let mut buf: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut buf) == 0 && buf.f_type as i64 == BPF_FS_MAGIC
    }
}

/// Mounts bpffs at its conventional place unless it is there already (a
/// freshly booted machine without systemd has none; systemd mounts it at
/// boot). What the agent does before it pins, and what a test that makes a
/// directory for pins does first. Root only when a mount is needed.
pub fn ensure_bpffs() -> Result<(), String> {
    let bpffs = Path::new(BPFFS);
    if on_bpffs(bpffs) {
        return Ok(());
    }
    mount_bpffs(bpffs).map_err(|e| {
        format!("bpffs is not mounted at {BPFFS} and mounting it failed ({e}); mount it: `mount -t bpf bpf {BPFFS}`")
    })
}

fn mount_fs(fstype: &str, target: &str) -> std::io::Result<()> {
    let c = |s: &str| std::ffi::CString::new(s).map_err(std::io::Error::other);
    let (source, target_c, fstype_c) = (c(fstype)?, c(target)?, c(fstype)?);
    if !Path::new(target).is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no {target} directory"),
        ));
    }
    // SAFETY: all pointers are valid NUL-terminated strings for the call.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target_c.as_ptr(),
            fstype_c.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// mountinfo escapes space, tab, newline and backslash as octal (`\040`);
/// a backslash not followed by three octal digits of a byte stays as it is.
fn unescape(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    let mut rest = s.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        if first == b'\\' {
            if let Some(byte) = tail.get(..3).and_then(octal_byte) {
                out.push(byte);
                rest = tail.get(3..).unwrap_or_default();
                continue;
            }
        }
        out.push(first);
        rest = tail;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Three octal digits as a byte; `None` past `\377` or for a non-digit.
fn octal_byte(digits: &[u8]) -> Option<u8> {
    let mut value: u32 = 0;
    for &d in digits {
        if !(b'0'..=b'7').contains(&d) {
            return None;
        }
        value = value * 8 + u32::from(d - b'0');
    }
    u8::try_from(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
32 25 0:27 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
33 32 0:28 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw
40 32 0:35 / /sys/fs/cgroup/cpu rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,cpu
50 25 0:12 / /sys/kernel/tracing rw,nosuid,nodev,noexec,relatime shared:20 - tracefs tracefs rw
60 30 0:50 / /mnt/with\\040space rw - ext4 /dev/vdb rw
";

    #[test]
    fn finds_cgroup2_and_tracefs_on_a_hybrid() {
        let m = Mounts::parse_mountinfo(HYBRID);
        assert_eq!(
            m.cgroup2.as_deref(),
            Some(Path::new("/sys/fs/cgroup/unified"))
        );
        assert_eq!(m.tracefs.as_deref(), Some(Path::new("/sys/kernel/tracing")));
        assert_eq!(
            m.cgroup1_cpu.as_deref(),
            Some(Path::new("/sys/fs/cgroup/cpu"))
        );
    }

    #[test]
    fn pure_v2_and_no_tracefs() {
        let m = Mounts::parse_mountinfo(
            "30 1 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n",
        );
        assert_eq!(m.cgroup2.as_deref(), Some(Path::new("/sys/fs/cgroup")));
        assert!(m.tracefs.is_none());
        assert!(!m.tracefs_ready());
    }

    #[test]
    fn unescapes_octal() {
        assert_eq!(unescape("/mnt/with\\040space"), "/mnt/with space");
        assert_eq!(unescape("trailing\\04"), "trailing\\04");
    }

    #[test]
    fn keeps_escapes_past_a_byte() {
        // Found by the proc_text fuzz target: `\777` overflowed a byte.
        assert_eq!(unescape("/a\\777b"), "/a\\777b");
        assert_eq!(unescape("\\377"), "\u{fffd}");
        assert_eq!(unescape("\\134x"), "\\x");
        let m = Mounts::parse_mountinfo("1 2 0:3 / /m\\777 rw - cgroup2 cgroup2 rw\n");
        assert_eq!(m.cgroup2.as_deref(), Some(Path::new("/m\\777")));
    }
}
