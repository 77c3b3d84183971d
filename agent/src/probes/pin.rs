//! Pinning: the probes' maps and links live under bpffs, so that the kernel
//! goes on counting while the agent restarts or is upgraded.
//!
//! Layout: `<dir>/maps/<MAP>` and `<dir>/links/<program>`. A pinned map is
//! reused only when its type, key size, value size and bound are those this
//! agent would create; otherwise it is removed, with a warning, and created
//! anew. Running programs are adopted only when the manifest the last agent
//! left names the same object and options, the same maps and the same
//! links; otherwise they are replaced, and the caller flags the gap.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use aya::{
    maps::MapInfo,
    programs::links::{FdLink, PinnedLink},
};
use aya_obj::EbpfSectionKind;
use serde::{Deserialize, Serialize};

use sonde_common::family::Family;

use super::{Gap, ProbeState, ProbeStatus};
use crate::host::mounts::{ensure_bpffs, on_bpffs, BPFFS};

/// Where the agent pins by default.
pub const DEFAULT_DIR: &str = "/sys/fs/bpf/sonde";

/// Changes when what the kernel keeps, or what a manifest means, changes.
const FORMAT: &str = "sonde-pins/1";

/// Maps that are never pinned: aya-log's ring is the agent's own, and a
/// program adopted across a restart keeps logging into its own copy.
const UNPINNED: [&str; 1] = ["AYA_LOGS"];

const BPF_MAP_TYPE_RINGBUF: u32 = 27;

/// The shape of a map: what must match for a pinned map to be reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// `bpf_map_type`.
    pub map_type: u32,
    /// Key size in bytes.
    pub key_size: u32,
    /// Value size in bytes (per CPU for per-CPU maps).
    pub value_size: u32,
    /// Bound on entries (bytes for a ring buffer).
    pub max_entries: u32,
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "type {}, key {} B, value {} B, {} entries",
            self.map_type, self.key_size, self.value_size, self.max_entries
        )
    }
}

/// A family's state as the manifest keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredStatus {
    /// Family name.
    pub probe: String,
    /// Its state when pinned.
    pub state: ProbeState,
    /// Its hook.
    pub hook: Option<String>,
    /// Why it was degraded or unavailable.
    pub reason: Option<String>,
    /// What it did not count (absent from manifests of earlier versions).
    #[serde(default)]
    pub gaps: Vec<Gap>,
}

/// What an agent pinned: enough for the next one to decide whether the
/// programs still running are its own. Kept in the agent's state directory
/// with its last window's readings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// `FORMAT`, the object and the load options, hashed.
    pub fingerprint: String,
    /// Pinned map → kernel map id.
    pub maps: BTreeMap<String, u32>,
    /// Program → kernel link id of its pinned link.
    pub links: BTreeMap<String, u32>,
    /// Every family's state.
    pub statuses: Vec<StoredStatus>,
}

/// What loading found under the pin directory and did with it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PinOutcome {
    /// The pin directory.
    pub dir: PathBuf,
    /// The programs the last agent left running were kept: the kernel
    /// counted through the restart.
    pub adopted: bool,
    /// Pinned maps found with another layout, and recreated (their counts
    /// are gone).
    pub recreated: Vec<String>,
    /// Links of an earlier agent that were not adopted and were removed.
    pub replaced: usize,
    /// Pinned maps of an earlier agent that were reused, counts and all.
    pub reused: usize,
    /// Programs whose link cannot be pinned on this kernel (a classic
    /// tracepoint attached through perf ioctls, before 5.15): they stop
    /// with the agent.
    pub unpinnable: Vec<String>,
}

/// 64-bit FNV-1a: stable across builds and platforms.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &byte in *part {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        // Separate the parts, so that moving bytes between them matters.
        hash ^= 0xff;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The identity of what this agent loads: format, object and options.
pub(super) fn fingerprint(object: &[u8], options: &str) -> String {
    format!(
        "{:016x}",
        fnv1a(&[FORMAT.as_bytes(), object, options.as_bytes()])
    )
}

/// The maps of `object` this agent pins, with the layout it creates them
/// with (`overrides`: bounds set at load).
pub(super) fn expected_layouts(
    object: &[u8],
    overrides: &[(&str, u32)],
) -> Result<BTreeMap<String, Layout>, String> {
    let obj = aya_obj::Object::parse(object).map_err(|e| e.to_string())?;
    Ok(obj
        .maps
        .iter()
        .filter(|(name, m)| {
            m.section_kind() == EbpfSectionKind::Maps && !UNPINNED.contains(&name.as_str())
        })
        .map(|(name, m)| {
            let ring = m.map_type() == BPF_MAP_TYPE_RINGBUF;
            let max_entries = overrides
                .iter()
                .find(|(n, _)| n == name)
                .map_or(m.max_entries(), |&(_, v)| v);
            let layout = Layout {
                map_type: m.map_type(),
                key_size: if ring { 0 } else { m.key_size() },
                value_size: if ring { 0 } else { m.value_size() },
                max_entries,
            };
            (name.clone(), layout)
        })
        .collect())
}

/// Makes sure `dir` is on a BPF file system (mounting bpffs at its usual
/// place when nothing is mounted there) and holds `maps/` and `links/`.
pub(super) fn prepare(dir: &Path) -> Result<(), String> {
    if dir.starts_with(BPFFS) {
        ensure_bpffs()?;
    }
    for sub in ["maps", "links"] {
        let path = dir.join(sub);
        std::fs::create_dir_all(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    }
    if !on_bpffs(dir) {
        return Err(format!(
            "{} is not on a BPF file system; pass a directory under a bpffs mount (e.g. {DEFAULT_DIR})",
            dir.display()
        ));
    }
    Ok(())
}

/// The layout of the map pinned at `path`, if one is.
pub fn pinned_layout(path: &Path) -> Option<(u32, Layout)> {
    let info = MapInfo::from_pin(path).ok()?;
    let map_type = info.map_type().map_or(u32::MAX, |t| t as u32);
    Some((
        info.id(),
        Layout {
            map_type,
            key_size: info.key_size(),
            value_size: info.value_size(),
            max_entries: info.max_entries(),
        },
    ))
}

/// Removes the pinned maps whose layout is not the expected one (and pins
/// that are not maps at all); returns their names.
pub(super) fn check_maps(dir: &Path, expected: &BTreeMap<String, Layout>) -> Vec<String> {
    let mut recreated = Vec::new();
    for (name, want) in expected {
        let path = dir.join("maps").join(name);
        if !path.exists() {
            continue;
        }
        let found = pinned_layout(&path);
        if found.is_some_and(|(_, layout)| layout == *want) {
            continue;
        }
        let what = found.map_or("not a map".to_owned(), |(_, l)| l.to_string());
        log::warn!(
            "pinned map {} has another layout ({what}; this agent needs {want}): removed and created anew, its counts are lost",
            path.display()
        );
        if let Err(e) = std::fs::remove_file(&path) {
            log::warn!("cannot remove {}: {e}", path.display());
        }
        recreated.push(name.clone());
    }
    recreated
}

/// Ids of the maps pinned under `dir` for `names`.
pub(super) fn map_ids<'a>(
    dir: &Path,
    names: impl IntoIterator<Item = &'a String>,
) -> BTreeMap<String, u32> {
    names
        .into_iter()
        .filter_map(|name| {
            let (id, _) = pinned_layout(&dir.join("maps").join(name))?;
            Some((name.clone(), id))
        })
        .collect()
}

/// The pinned links of `manifest`, when every one is still pinned under
/// `dir` with the same link id.
pub(super) fn adopt_links(
    dir: &Path,
    manifest: &Manifest,
) -> Option<Vec<(String, PathBuf, FdLink)>> {
    manifest
        .links
        .iter()
        .map(|(program, &id)| {
            let path = dir.join("links").join(program);
            let link = FdLink::from(PinnedLink::from_pin(&path).ok()?);
            (link.info().ok()?.id() == id).then(|| (program.clone(), path, link))
        })
        .collect()
}

/// Ids of the programs behind the links pinned under `dir`.
pub fn pinned_programs(dir: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(dir.join("links")) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| {
            let link = FdLink::from(PinnedLink::from_pin(e.ok()?.path()).ok()?);
            Some(link.info().ok()?.program_id())
        })
        .collect()
}

/// Removes every pinned link under `dir`: the programs behind them stop
/// once nothing else holds them. Returns how many were removed.
pub fn clear_links(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir.join("links")) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| match std::fs::remove_file(e.path()) {
            Ok(()) => true,
            Err(err) => {
                log::warn!("cannot remove {}: {err}", e.path().display());
                false
            }
        })
        .count()
}

/// Removes everything sonde pinned under `dir`: the programs stop and the
/// maps go once no process holds them. Returns (maps, links) removed.
pub fn unpin(dir: &Path) -> std::io::Result<(usize, usize)> {
    let links = clear_links(dir);
    let mut maps = 0;
    match std::fs::read_dir(dir.join("maps")) {
        Ok(entries) => {
            for e in entries {
                std::fs::remove_file(e?.path())?;
                maps += 1;
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    for sub in ["maps", "links"] {
        match std::fs::remove_dir(dir.join(sub)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    Ok((maps, links))
}

/// What is pinned under `dir` now: (maps, links), for `sonde doctor`.
pub fn census(dir: &Path) -> (usize, usize) {
    let count = |sub: &str| {
        std::fs::read_dir(dir.join(sub))
            .map(|entries| entries.count())
            .unwrap_or(0)
    };
    (count("maps"), count("links"))
}

impl Manifest {
    /// The statuses it stored, as the families' statuses.
    pub(super) fn statuses(&self) -> Vec<ProbeStatus> {
        self.statuses
            .iter()
            .filter_map(|s| {
                let probe = Family::from_name(&s.probe)?.name();
                Some(ProbeStatus {
                    probe,
                    state: s.state,
                    hook: s.hook.clone(),
                    reason: s.reason.clone(),
                    gaps: s.gaps.clone(),
                })
            })
            .collect()
    }
}

/// The statuses as a manifest stores them.
pub(super) fn stored(statuses: &[ProbeStatus]) -> Vec<StoredStatus> {
    statuses
        .iter()
        .map(|s| StoredStatus {
            probe: s.probe.to_owned(),
            state: s.state,
            hook: s.hook.clone(),
            reason: s.reason.clone(),
            gaps: s.gaps.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_follows_object_and_options() {
        let a = fingerprint(b"object", "options");
        assert_eq!(a, fingerprint(b"object", "options"));
        assert_ne!(a, fingerprint(b"object2", "options"));
        assert_ne!(a, fingerprint(b"object", "options2"));
        // Bytes moved between parts change it.
        assert_ne!(fingerprint(b"objecto", "ptions"), a);
        assert_eq!(a.len(), 16);
    }

    #[test]
    fn expected_layouts_take_the_overrides() {
        let object = super::super::OBJECT;
        let plain = expected_layouts(object, &[]).expect("parses");
        let bounded = expected_layouts(object, &[("SYSCALL_HIST", 77)]).expect("parses");
        assert_eq!(bounded["SYSCALL_HIST"].max_entries, 77);
        assert_ne!(plain["SYSCALL_HIST"].max_entries, 77);
        assert_eq!(plain["SYSCALL_ERRORS"], bounded["SYSCALL_ERRORS"]);
        assert!(plain.contains_key("EVENTS"), "{:?}", plain.keys());
        assert!(!plain.contains_key("AYA_LOGS"));
        assert!(!plain.keys().any(|k| k.starts_with('.')), "no globals");
    }
}
