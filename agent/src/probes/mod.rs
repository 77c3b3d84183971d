//! The kernel programs: load, attach, read. This is the only module that
//! touches aya; it hands back plain readings (cumulative counts).
//!
//! One object holds every family's programs and maps. Each family attaches on
//! its own: a hook that is missing degrades that family, is reported in its
//! [`ProbeStatus`], and never stops the others.

pub mod events;
mod family;
// Each family's module, `families!` below.
mod gone;
mod missed;
pub mod pin;
mod task;

use std::{
    collections::{BTreeMap, HashMap},
    hash::Hash,
    path::{Path, PathBuf},
};

use aya::{
    maps::{MapData, MapError, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{
        links::FdLink, trace_point::TracePointLink, ProgramError, RawTracePoint, TracePoint,
    },
    Ebpf, EbpfLoader,
};
use serde::{Deserialize, Serialize};

use sonde_common::{family::Family, hist::THRESHOLD_SLOTS, loss::CgroupLossKey};

use crate::host::{btf::Btf, mounts::Mounts, Capabilities};
pub use crate::model::probe::{Gap, ProbeState, ProbeStatus};

/// The kernel programs, built by `build.rs` from `agent-ebpf`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sonde"));

/// What the running kernel offers that decides whether a family counts
/// whole, as sonde read it from the kernel's BTF: feature name → present.
pub type KernelFeatures = BTreeMap<&'static str, bool>;

/// The features sonde checks, by name.
pub mod feature {
    /// `tcp_send_reset` has its `reason` argument (Linux 6.10+).
    pub const TCP_SEND_RESET_REASON: &str = "tcp_send_reset.reason";
    /// `kfree_skb` has its `reason` argument (Linux 5.17+).
    pub const KFREE_SKB_REASON: &str = "kfree_skb.reason";
    /// `kfree_skb` has its `rx_sk` argument (Linux 6.12+).
    pub const KFREE_SKB_RX_SK: &str = "kfree_skb.rx_sk";
    /// `SKB_DROP_REASON_TCP_LISTEN_OVERFLOW` exists (Linux 6.15+).
    pub const DROP_REASON_LISTEN_OVERFLOW: &str = "skb_drop_reason.TCP_LISTEN_OVERFLOW";
    /// The `tcp_retransmit_synack` tracepoint exists.
    pub const TP_TCP_RETRANSMIT_SYNACK: &str = "tracepoint.tcp_retransmit_synack";
    /// The `mm_vmscan_memcg_reclaim_begin` tracepoint exists.
    pub const TP_MEMCG_RECLAIM: &str = "tracepoint.mm_vmscan_memcg_reclaim_begin";
    /// Syscall tracepoints may fault (`struct tracepoint_ext.faultable`):
    /// their raw tracepoint programs run preemptibly where the kernel
    /// preempts (next), and the syscall family then prefers the classic
    /// tracepoints. Decides a hook, not a gap.
    pub const FAULTABLE_SYSCALL_TRACEPOINTS: &str = "tracepoint_ext.faultable";
    /// The kernel preempts kernel code (model full or lazy; not from BTF:
    /// debugfs `sched/preempt`, else the version string).
    pub const KERNEL_PREEMPTS: &str = "kernel.preempts";
}

/// A family's kernel loss counters: (index, stable name).
pub fn losses(family: Family) -> &'static [(u32, &'static str)] {
    family::of(family).losses()
}

impl Reading {
    /// A family's kernel loss counters in this reading, cumulative.
    pub fn loss_counts(&self, family: Family) -> &[u64] {
        family::of(family).loss_counts(self)
    }
}

/// Why the probes could not be loaded at all.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The process lacks the capabilities to load tracing programs.
    #[error(
        "no privilege to load eBPF programs (missing {}); run as root or grant the capabilities, e.g. `setcap cap_bpf,cap_perfmon,cap_dac_read_search+ep sonde`",
        missing.join(", ")
    )]
    NoPrivilege {
        /// Names of the missing capabilities.
        missing: Vec<&'static str>,
    },
    /// The capabilities could not be read.
    #[error("cannot read the process's capabilities from /proc/self/status")]
    Capabilities(#[source] std::io::Error),
    /// The kernel refused the object (maps or BTF).
    #[error("the kernel refused sonde's eBPF object; run `sonde doctor` for details")]
    Object(#[source] aya::EbpfError),
    /// `load_floor` was asked for a family that has no floor programs.
    #[error(
        "the {family} family has no floor programs (agent-ebpf/src/floor.rs has none on its hooks)"
    )]
    NoFloor {
        /// The family asked for.
        family: Family,
    },
    /// The pin directory is unusable.
    #[error("pinning: {0}")]
    Pin(String),
    /// This binary was built with `AYA_BUILD_SKIP=1`: it embeds no kernel
    /// programs (a build for the fuzz targets, which need only the parsers).
    #[error(
        "this sonde was built without its kernel programs (AYA_BUILD_SKIP=1); rebuild without it"
    )]
    NoKernelPrograms,
}

/// A kernel map could not be read, or a key deleted from it. aya's error
/// is its source: outside `probes/` nothing names aya's types.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// aya's error on one of the maps.
    #[error("a kernel map could not be read or written")]
    Map(#[from] MapError),
}

/// The embedded object, or why there is none.
fn object() -> Result<&'static [u8], LoadError> {
    if OBJECT.is_empty() {
        return Err(LoadError::NoKernelPrograms);
    }
    Ok(OBJECT)
}

/// Options for loading the probes.
#[derive(Debug, Clone, Default)]
pub struct ProbeOptions {
    /// Which hook the syscall family uses.
    pub syscall_hook: syscalls::SyscallHook,
    /// Which hook the scheduler family uses.
    pub sched_hook: sched::SchedHook,
    /// Bound of the syscall latency map, in (cgroup, syscall, bucket) keys;
    /// `None` keeps the built-in default.
    pub syscall_hist_max_entries: Option<u32>,
    /// Bound of the syscall failure map, in (cgroup, syscall, errno) keys.
    pub syscall_errors_max_entries: Option<u32>,
    /// Families to leave out (not even attached); empty runs them all.
    pub disabled: Vec<Family>,
    /// Exact SLO latency thresholds for the kernel: (bucket key, ns), at
    /// most one per bucket (`sonde_slo::spec::kernel_thresholds`).
    pub latency_thresholds_ns: Vec<(usize, u64)>,
    /// Pin maps and links under this bpffs directory, so that the kernel
    /// goes on counting across a restart; with the manifest the last agent
    /// left, its programs still running are adopted.
    pub pin: Option<(PathBuf, Option<pin::Manifest>)>,
}

impl ProbeOptions {
    /// What the kernel programs depend on, for the pin fingerprint.
    fn identity(&self) -> String {
        // The disabled families by name, as the fingerprint always had them.
        let disabled: Vec<&str> = self.disabled.iter().map(|f| f.name()).collect();
        format!(
            "{:?} {:?} {:?} {:?} {:?} {:?}",
            self.syscall_hook,
            self.sched_hook,
            self.syscall_hist_max_entries,
            self.syscall_errors_max_entries,
            disabled,
            self.latency_thresholds_ns
        )
    }

    /// Map bounds set at load, by map name.
    fn max_entries(&self) -> Vec<(&'static str, u32)> {
        let mut out = Vec::new();
        if let Some(n) = self.syscall_hist_max_entries {
            out.push(("SYSCALL_HIST", n));
        }
        if let Some(n) = self.syscall_errors_max_entries {
            out.push(("SYSCALL_ERRORS", n));
        }
        out
    }
}

/// Each family's user side, `<family>.rs` (or `<family>/mod.rs`), and the
/// cumulative counts of every family: the list is `sonde_common::family`'s.
macro_rules! families {
    ($($module:ident $variant:ident),*) => {
        $(pub mod $module;)*

        /// Cumulative counts of every family, as the kernel holds them now.
        #[derive(Debug, Clone, Default, Serialize, Deserialize)]
        pub struct Reading {
            $(
                /// The family's part (absent in a checkpoint from before
                /// the family: empty).
                #[serde(default)]
                pub $module: $module::Part,
            )*
            /// Events that found the ring buffer full, per kind.
            pub event_loss: [u64; sonde_common::events::kind::COUNT as usize],
            /// Ring-buffer records that could not be decoded (cumulative).
            pub malformed_events: u64,
            /// Per attached program (by kernel id): its family and the runs of it
            /// the kernel skipped, cumulative over the program's life (see
            /// `missed`). Keyed by program, so that a program loaded anew (a
            /// restart that did not adopt) counts from its own zero.
            #[serde(default)]
            pub program_missed: BTreeMap<u32, (String, u64)>,
            /// Lost events by (cgroup, family, reason), cumulative; see
            /// `sonde_common::loss`.
            #[serde(with = "pairs", default)]
            pub cgroup_losses: HashMap<(u64, u32, u32), u64>,
            /// Lost events no cgroup could be named for, cumulative, at
            /// `sonde_common::loss::unattributed_slot(family, reason)`.
            #[serde(default)]
            pub unattributed_losses: Vec<u64>,
        }
    };
}
sonde_common::for_each_family!(families);

/// The loaded object and its attached families.
pub struct Probes {
    ebpf: Ebpf,
    // Owns the log ring buffer: dropping it breaks later program loads.
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    statuses: Vec<ProbeStatus>,
    events: Option<RingBuf<MapData>>,
    malformed_events: u64,
    /// The last count of skipped runs read of each program (by id).
    missed_last: HashMap<u32, u64>,
    /// Programs whose count of skipped runs could not be read (said once).
    missed_unreadable: std::collections::HashSet<u32>,
    features: KernelFeatures,
    tcp_names: tcp::TcpNames,
    /// Families detached while running: their maps still hold what they
    /// counted before, and are still read.
    detached: Vec<Family>,
    /// The programs' attachments.
    links: Links,
    /// With pinning: what was found and done, and the manifest's parts.
    pinned: Option<Pinned>,
    /// What attaching a family needs, kept to attach one again after a
    /// detach (`None` for the benchmark's floor programs).
    setup: Option<Setup>,
}

/// What the families' configure and attach steps need: read from the
/// kernel before the object is loaded, and the options.
struct Setup {
    options: ProbeOptions,
    offsets: Result<sonde_common::task::TaskOffsets, String>,
    tcp: tcp::TcpSetup,
    block: Result<sonde_common::block::BlockOffsets, String>,
    /// The kernel's syscall tracepoints may fault and it preempts kernel
    /// code, so their callbacks can be preempted (see `syscalls::attach`).
    faultable_syscall_tracepoints: bool,
    /// `mark_victim`'s first argument is the victim task (6.x), not its pid.
    victim_is_task: bool,
}

/// A pinning agent's view of its pins.
struct Pinned {
    outcome: pin::PinOutcome,
    fingerprint: String,
    maps: BTreeMap<String, u32>,
}

/// A program's attachment, taken from aya's program so that it can be
/// pinned (and outlive the agent).
enum KeptLink {
    /// Held by its file descriptor: it ends with the agent.
    Fd(FdLink),
    /// Pinned under bpffs: it outlives the agent. The fd is held so the
    /// link can be inspected; the pin is what keeps it.
    Pinned {
        path: PathBuf,
        id: u32,
        _held: FdLink,
    },
    /// A perf event attached through ioctls (classic tracepoints before
    /// 5.15): it cannot be pinned.
    Perf(TracePointLink),
}

/// Every program's attachments, by program name.
#[derive(Default)]
pub(crate) struct Links {
    pinning: bool,
    kept: Vec<(String, KeptLink)>,
}

impl Links {
    fn new(pinning: bool) -> Self {
        Self {
            pinning,
            kept: Vec::new(),
        }
    }

    /// Keeps a link that has a file descriptor (raw and BTF tracepoints).
    pub(crate) fn fd(&mut self, program: &str, link: impl Into<FdLink>) {
        self.kept
            .push((program.to_owned(), KeptLink::Fd(link.into())));
    }

    /// Attaches a classic tracepoint program and keeps its link: as an fd
    /// link when pinning and the kernel made one (5.15+), else as is.
    pub(crate) fn tracepoint(
        &mut self,
        program: &mut TracePoint,
        name: &str,
        category: &str,
        tracepoint: &str,
    ) -> Result<(), ProgramError> {
        let id = program.attach(category, tracepoint)?;
        let link = program.take_link(id)?;
        if !self.pinning {
            self.kept.push((name.to_owned(), KeptLink::Perf(link)));
            return Ok(());
        }
        match FdLink::try_from(link) {
            Ok(fd) => self.kept.push((name.to_owned(), KeptLink::Fd(fd))),
            Err(_) => {
                // The conversion dropped (and detached) an ioctl attachment:
                // attach again, unpinnable.
                let id = program.attach(category, tracepoint)?;
                let link = program.take_link(id)?;
                self.kept.push((name.to_owned(), KeptLink::Perf(link)));
            }
        }
        Ok(())
    }

    /// Detaches `programs`: their links are dropped, and unpinned.
    pub(crate) fn release<'a>(&mut self, programs: impl IntoIterator<Item = &'a str>) {
        let programs: Vec<&str> = programs.into_iter().collect();
        self.kept.retain(|(name, link)| {
            if !programs.contains(&name.as_str()) {
                return true;
            }
            if let KeptLink::Pinned { path, .. } = link {
                if let Err(e) = std::fs::remove_file(path) {
                    log::warn!("cannot unpin {}: {e}", path.display());
                }
            }
            false
        });
    }

    /// Pins every fd link under `dir/links`; returns the programs whose
    /// link cannot be pinned.
    fn pin_all(&mut self, dir: &Path) -> Vec<String> {
        let mut unpinnable = Vec::new();
        for (name, link) in std::mem::take(&mut self.kept) {
            let link = match link {
                KeptLink::Fd(fd) => {
                    let path = dir.join("links").join(&name);
                    let id = fd.info().map(|i| i.id()).unwrap_or(0);
                    match fd.pin(&path) {
                        Ok(pinned) => KeptLink::Pinned {
                            path,
                            id,
                            _held: FdLink::from(pinned),
                        },
                        Err(e) => {
                            // The link went with the error: the program stopped.
                            log::warn!("cannot pin {name}'s link at {}: {e}", path.display());
                            unpinnable.push(name);
                            continue;
                        }
                    }
                }
                KeptLink::Perf(p) => {
                    unpinnable.push(name.clone());
                    KeptLink::Perf(p)
                }
                pinned @ KeptLink::Pinned { .. } => pinned,
            };
            self.kept.push((name, link));
        }
        unpinnable
    }

    /// Program → link id of the pinned links; 0 for one that is not pinned.
    fn ids(&self) -> BTreeMap<String, u32> {
        self.kept
            .iter()
            .map(|(name, link)| {
                let id = match link {
                    KeptLink::Pinned { id, .. } => *id,
                    _ => 0,
                };
                (name.clone(), id)
            })
            .collect()
    }
}

/// Serializes a map with compound keys as a list of pairs (JSON object
/// keys must be strings).
pub(crate) mod pairs {
    use super::{Deserialize, Hash, HashMap, Serialize};

    pub(crate) fn serialize<S, K, V>(map: &HashMap<K, V>, s: S) -> Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
        K: Serialize,
        V: Serialize,
    {
        s.collect_seq(map.iter())
    }

    pub(crate) fn deserialize<'de, D, K, V>(d: D) -> Result<HashMap<K, V>, D::Error>
    where
        D: serde::Deserializer<'de>,
        K: Deserialize<'de> + Eq + Hash,
        V: Deserialize<'de>,
    {
        Vec::<(K, V)>::deserialize(d).map(|pairs| pairs.into_iter().collect())
    }
}

impl Probes {
    /// Loads the object and attaches every family it can.
    pub fn load(options: ProbeOptions) -> Result<Self, LoadError> {
        let caps = Capabilities::current().map_err(LoadError::Capabilities)?;
        let missing = caps.missing_for_tracing();
        if !missing.is_empty() {
            return Err(LoadError::NoPrivilege { missing });
        }
        raise_memlock_rlimit();

        let btf = match Btf::from_sys_fs() {
            Ok(Ok(btf)) => Some(btf),
            Ok(Err(e)) => {
                log::warn!("cannot parse the kernel's BTF: {e}");
                None
            }
            Err(e) => {
                log::debug!("no kernel BTF: {e}");
                None
            }
        };
        let offsets = task::offsets(btf.as_ref());
        let victim_is_task = memory::victim_arg_is_task(btf.as_ref());
        let tcp_setup = tcp::setup(btf.as_ref());
        let faultable = syscalls::faultable_tracepoints(btf.as_ref());
        let preempts = syscalls::kernel_preempts();
        let faultable_syscall_tracepoints = faultable && preempts;
        let mut features = KernelFeatures::new();
        features.insert(feature::FAULTABLE_SYSCALL_TRACEPOINTS, faultable);
        features.insert(feature::KERNEL_PREEMPTS, preempts);
        tcp::features(&tcp_setup, btf.as_ref(), &mut features);
        memory::features(btf.as_ref(), &mut features);
        // Done with our reading of BTF before aya parses it too: one at a time
        // keeps the agent's peak memory down.
        drop(btf);
        let mounts = Mounts::current().unwrap_or_default();
        let block_offsets = if options.disabled.contains(&Family::Block) {
            Err("disabled".to_owned())
        } else {
            block::offsets(&mounts)
        };
        // Mounting tracefs for the block family changes what syscalls sees.
        let mounts = Mounts::current().unwrap_or(mounts);
        // aya's own view of the kernel's BTF: for relocations and tp_btf.
        let aya_btf = aya::Btf::from_sys_fs().ok();
        // Pinning: maps whose pinned layout differs go first; the rest are
        // reused by the loader.
        let mut pin_names: Vec<(String, PathBuf)> = Vec::new();
        let (mut recreated, mut reused) = (Vec::new(), 0);
        if let Some((dir, _)) = &options.pin {
            pin::prepare(dir).map_err(LoadError::Pin)?;
            let layouts =
                pin::expected_layouts(object()?, &options.max_entries()).map_err(LoadError::Pin)?;
            recreated = pin::check_maps(dir, &layouts);
            reused = layouts
                .keys()
                .filter(|name| dir.join("maps").join(name).exists())
                .count();
            pin_names = layouts
                .into_keys()
                .map(|name| {
                    let path = dir.join("maps").join(&name);
                    (name, path)
                })
                .collect();
        }
        let setup = Setup {
            options: options.clone(),
            offsets,
            tcp: tcp_setup,
            block: block_offsets,
            faultable_syscall_tracepoints,
            victim_is_task,
        };
        let mut loader = EbpfLoader::new();
        for (name, path) in &pin_names {
            loader.map_pin_path(name.as_str(), path.as_path());
        }
        loader.btf(aya_btf.as_ref());
        let given = setup.offsets.clone().unwrap_or_default();
        loader.override_global("TASK_OFFSETS", &given, true);
        let mut thresholds = [0u64; THRESHOLD_SLOTS];
        for &(slot, ns) in &options.latency_thresholds_ns {
            if let Some(t) = thresholds.get_mut(slot) {
                *t = ns;
            }
        }
        loader.override_global("LATENCY_THRESHOLDS_NS", &thresholds, true);
        // Every family's globals and map sizes, disabled or not: one object
        // holds them all.
        for family in Family::ALL {
            family::of(family).configure(&mut loader, &setup);
        }
        let mut ebpf = loader.load(object()?).map_err(LoadError::Object)?;
        let logger = match aya_log::EbpfLogger::init(&mut ebpf) {
            Ok(logger) => Some(logger),
            Err(e) => {
                log::debug!("kernel-side logging unavailable: {e}");
                None
            }
        };
        let mut links = Links::new(options.pin.is_some());
        // With pins: the last agent's programs are adopted when its
        // manifest names this object and these options, these maps and
        // links that are all still pinned.
        let mut pinned = None;
        let mut adopted = None;
        if let Some((dir, manifest)) = &options.pin {
            let fingerprint = pin::fingerprint(object()?, &options.identity());
            let maps = pin::map_ids(dir, pin_names.iter().map(|(name, _)| name));
            let kept = manifest
                .as_ref()
                .filter(|m| m.fingerprint == fingerprint && m.maps == maps && recreated.is_empty())
                .and_then(|m| Some((m.statuses(), pin::adopt_links(dir, m)?)));
            let mut outcome = pin::PinOutcome {
                dir: dir.clone(),
                adopted: kept.is_some(),
                recreated,
                reused,
                ..Default::default()
            };
            match kept {
                Some((statuses, kept)) => {
                    for (program, path, link) in kept {
                        let id = link.info().map(|i| i.id()).unwrap_or(0);
                        let kept = KeptLink::Pinned {
                            path,
                            id,
                            _held: link,
                        };
                        links.kept.push((program, kept));
                    }
                    adopted = Some(statuses);
                }
                // Whatever ran before stops before ours start.
                None => outcome.replaced = pin::clear_links(dir),
            }
            pinned = Some(Pinned {
                outcome,
                fingerprint,
                maps,
            });
        }
        let statuses = match adopted {
            Some(statuses) => statuses,
            // A disabled family is left out entirely: it neither counts nor
            // makes a window incomplete.
            None => Family::ALL
                .into_iter()
                .filter(|family| !options.disabled.contains(family))
                .map(|family| {
                    attach_family(
                        &mut ebpf,
                        &mut links,
                        &setup,
                        family,
                        aya_btf.as_ref(),
                        &mounts,
                    )
                })
                .collect(),
        };
        if let Some(p) = &mut pinned {
            if !p.outcome.adopted {
                p.outcome.unpinnable = links.pin_all(&p.outcome.dir);
            }
        }
        drop(aya_btf);
        // Parsing the kernel's BTF (twice: aya's and ours) is the agent's
        // largest allocation; give the freed heap back to the system.
        #[cfg(target_env = "gnu")]
        // SAFETY: malloc_trim only releases free heap memory.
        unsafe {
            libc::malloc_trim(0);
        }
        let events = match ebpf.take_map("EVENTS").map(RingBuf::try_from) {
            Some(Ok(ring)) => Some(ring),
            Some(Err(e)) => {
                log::warn!("event ring buffer unusable: {e}");
                None
            }
            None => None,
        };
        Ok(Self {
            ebpf,
            logger,
            statuses,
            events,
            malformed_events: 0,
            missed_last: HashMap::new(),
            missed_unreadable: Default::default(),
            features,
            tcp_names: setup.tcp.names.clone(),
            detached: Vec::new(),
            links,
            pinned,
            setup: Some(setup),
        })
    }

    /// Attaches again a family detached while running (when its cost is
    /// back within the budget, say). Returns its new state; its maps kept
    /// what it counted before, so readings go on from there.
    pub fn reattach(&mut self, family: Family) -> Option<&ProbeStatus> {
        let index = self.detached.iter().position(|&f| f == family)?;
        let setup = self.setup.as_ref()?;
        let aya_btf = family::of(family)
            .attaches_by_btf()
            .then(|| aya::Btf::from_sys_fs().ok())
            .flatten();
        let mounts = Mounts::current().unwrap_or_default();
        let status = attach_family(
            &mut self.ebpf,
            &mut self.links,
            setup,
            family,
            aya_btf.as_ref(),
            &mounts,
        );
        if let Some(p) = &self.pinned {
            let dir = p.outcome.dir.clone();
            self.links.pin_all(&dir);
        }
        if status.state != ProbeState::Unavailable {
            self.detached.remove(index);
        }
        log::warn!("{family} attached again: {:?}", status.state);
        let slot = self.statuses.iter_mut().find(|s| s.probe == status.probe)?;
        *slot = status;
        Some(slot)
    }

    /// Kernel program ids of every attached program, with its family.
    pub fn program_ids(&self) -> Vec<(Family, u32)> {
        self.programs()
            .into_iter()
            .map(|(_, family, id)| (family, id))
            .collect()
    }

    /// Every attached program: (name, family, kernel id).
    fn programs(&self) -> Vec<(String, Family, u32)> {
        self.links
            .kept
            .iter()
            .filter_map(|(name, link)| {
                let family = Family::of_program(name)?;
                let id = match link {
                    KeptLink::Fd(l) | KeptLink::Pinned { _held: l, .. } => {
                        l.info().ok()?.program_id()
                    }
                    KeptLink::Perf(_) => self.ebpf.program(name)?.info().ok()?.id(),
                };
                Some((name.clone(), family, id))
            })
            .collect()
    }

    /// With pinning: what was found under the pin directory and done.
    pub fn pin_outcome(&self) -> Option<&pin::PinOutcome> {
        self.pinned.as_ref().map(|p| &p.outcome)
    }

    /// With pinning: what the next agent needs to adopt these programs.
    pub fn manifest(&self) -> Option<pin::Manifest> {
        self.pinned.as_ref().map(|p| pin::Manifest {
            fingerprint: p.fingerprint.clone(),
            maps: p.maps.clone(),
            links: self.links.ids(),
            statuses: pin::stored(&self.statuses),
        })
    }

    /// The kernel's names of its drop and reset reasons.
    pub fn tcp_names(&self) -> &tcp::TcpNames {
        &self.tcp_names
    }

    /// The state of every family.
    pub fn statuses(&self) -> &[ProbeStatus] {
        &self.statuses
    }

    /// Detaches every program of `family` while the agent runs (an
    /// operator shedding its cost, say): from the next window on it counts
    /// nothing and is reported unavailable with `reason`, so every window
    /// and SLO that depends on it is marked incomplete. Returns false for a
    /// family that was not attached.
    pub fn detach(&mut self, family: Family, reason: &str) -> bool {
        let Some(status) = self
            .statuses
            .iter_mut()
            .find(|s| s.probe == family.name() && s.state != ProbeState::Unavailable)
        else {
            return false;
        };
        let prefix = family.program_prefix();
        let names: Vec<String> = self
            .ebpf
            .programs()
            .map(|(name, _)| name.to_owned())
            .filter(|name| name.starts_with(prefix))
            .collect();
        unload(
            &mut self.ebpf,
            &mut self.links,
            names.iter().map(String::as_str),
        );
        status.state = ProbeState::Unavailable;
        status.reason = Some(format!("detached while running: {reason}"));
        self.detached.push(family);
        log::warn!("{family} detached: {reason}");
        true
    }

    /// Whether at least one family is counting.
    pub fn any_attached(&self) -> bool {
        self.statuses
            .iter()
            .any(|s| s.state != ProbeState::Unavailable)
    }

    /// Reads every attached family's maps.
    pub fn read(&mut self) -> Result<Reading, ReadError> {
        self.flush_logs();
        let mut reading = Reading::default();
        for family in Family::ALL.into_iter().filter(|&f| self.attached(f)) {
            family::of(family).read(&self.ebpf, &mut reading)?;
        }
        let event_loss: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(map(&self.ebpf, "EVENT_LOSS")?)?;
        reading.event_loss = events::read_loss(&event_loss)?;
        reading.malformed_events = self.malformed_events;
        reading.program_missed = self.program_missed();
        let by_cgroup: PerCpuHashMap<&MapData, CgroupLossKey, u64> =
            PerCpuHashMap::try_from(map(&self.ebpf, "LOSS_BY_CGROUP")?)?;
        for item in by_cgroup.iter() {
            let (key, values) = item?;
            let count: u64 = values.iter().sum();
            reading
                .cgroup_losses
                .insert((key.cgroup_id, key.family, key.reason), count);
        }
        let unattributed: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(map(&self.ebpf, "LOSS_UNATTRIBUTED")?)?;
        reading.unattributed_losses = vec![0; sonde_common::loss::UNATTRIBUTED_SLOTS as usize];
        read_losses(&unattributed, &mut reading.unattributed_losses)?;
        Ok(reading)
    }

    /// Per attached program, the kernel's count of the runs it skipped. A
    /// count that cannot be read this time is the last one read (never a
    /// fall to zero that the next reading would count again); one never
    /// read is left out, and said once in the log.
    fn program_missed(&mut self) -> BTreeMap<u32, (String, u64)> {
        let mut out = BTreeMap::new();
        for (name, family, id) in self.programs() {
            let read = match self.ebpf.program(&name).map(aya::programs::Program::fd) {
                Some(Ok(fd)) => missed::recursion_misses(std::os::fd::AsFd::as_fd(fd)),
                _ => missed::recursion_misses_by_id(id),
            };
            let count = match read {
                Ok(n) => {
                    self.missed_last.insert(id, n);
                    Some(n)
                }
                Err(e) => {
                    if self.missed_unreadable.insert(id) {
                        log::warn!(
                            "cannot read how many runs of {name} the kernel skipped ({e}); its family's program_missed leaves it out"
                        );
                    }
                    self.missed_last.get(&id).copied()
                }
            };
            if let Some(n) = count {
                out.insert(id, (family.name().to_owned(), n));
            }
        }
        out
    }

    /// What the running kernel offers that decides whether each family
    /// counts whole (read from its BTF at load).
    pub fn kernel_features(&self) -> &KernelFeatures {
        &self.features
    }

    /// Takes the events the kernel sent since the last call.
    pub fn drain_events(&mut self) -> Vec<events::KernelEvent> {
        let mut out = Vec::new();
        if let Some(ring) = self.events.as_mut() {
            self.malformed_events += events::drain(ring, &mut out);
        }
        out
    }

    /// Moves the kernel programs' diagnostics into the agent's log.
    pub fn flush_logs(&mut self) {
        if let Some(logger) = self.logger.as_mut() {
            logger.flush();
        }
    }

    /// Whether the family's maps hold counts: attached now, or before it
    /// was detached.
    fn attached(&self, family: Family) -> bool {
        self.detached.contains(&family)
            || self
                .statuses
                .iter()
                .any(|s| s.probe == family.name() && s.state != ProbeState::Unavailable)
    }

    /// Attaches empty programs on a family's hooks instead of sonde's own:
    /// the floor that any tracing on those hooks pays (benchmarks only; a
    /// family has floor programs when its `attach_floor` attaches them).
    pub fn load_floor(family: Family) -> Result<Self, LoadError> {
        let mut ebpf = EbpfLoader::new()
            .load(object()?)
            .map_err(LoadError::Object)?;
        let mut links = Links::default();
        let statuses = vec![family::of(family)
            .attach_floor(&mut ebpf, &mut links)
            .ok_or(LoadError::NoFloor { family })?];
        Ok(Self {
            ebpf,
            logger: None,
            statuses,
            events: None,
            malformed_events: 0,
            missed_last: HashMap::new(),
            missed_unreadable: Default::default(),
            features: KernelFeatures::new(),
            tcp_names: tcp::TcpNames::default(),
            detached: Vec::new(),
            links,
            pinned: None,
            setup: None,
        })
    }
}

/// Attaches one family's programs.
fn attach_family(
    ebpf: &mut Ebpf,
    links: &mut Links,
    setup: &Setup,
    family: Family,
    btf: Option<&aya::Btf>,
    mounts: &Mounts,
) -> ProbeStatus {
    family::of(family).attach(&mut family::Attach {
        ebpf,
        links,
        setup,
        btf,
        mounts,
    })
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; later ones use
/// memcg accounting. Raising it may be refused (no CAP_SYS_RESOURCE): then
/// only old kernels are affected, and their load error says so.
fn raise_memlock_rlimit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid pointer to an initialised rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        log::debug!(
            "could not raise RLIMIT_MEMLOCK ({}); fine on kernels >= 5.11",
            std::io::Error::last_os_error()
        );
    }
}

/// Loads and attaches `hooks` (program, raw tracepoint) all or nothing.
pub(crate) fn attach_raw_tracepoints(
    ebpf: &mut Ebpf,
    links: &mut Links,
    probe: &'static str,
    hooks: &[(&str, &str)],
) -> ProbeStatus {
    let result = hooks.iter().try_for_each(|(name, tp)| {
        let program: &mut RawTracePoint = program(ebpf, name)?.try_into()?;
        program.load()?;
        let id = program.attach(tp)?;
        links.fd(name, program.take_link(id)?);
        Ok::<_, ProgramError>(())
    });
    match result {
        Ok(()) => ProbeStatus {
            probe,
            state: ProbeState::Attached,
            hook: Some(format!(
                "raw_tracepoint:{}",
                hooks
                    .iter()
                    .map(|(_, tp)| *tp)
                    .collect::<Vec<_>>()
                    .join("+")
            )),
            reason: None,
            gaps: Vec::new(),
        },
        Err(e) => {
            unload(ebpf, links, hooks.iter().map(|(name, _)| *name));
            unavailable(probe, format!("raw tracepoints: {}", explain(&e)))
        }
    }
}

/// A family that is not counting, and why.
pub(crate) fn unavailable(probe: &'static str, reason: String) -> ProbeStatus {
    ProbeStatus {
        probe,
        state: ProbeState::Unavailable,
        hook: None,
        reason: Some(reason),
        gaps: Vec::new(),
    }
}

/// The environment variable that makes the named programs (comma-separated)
/// fail as a verifier rejection would: a test switch, so that the kernel
/// matrix can show it fails a run whose family lost a program for no reason
/// the kernel explains (`cargo xtask vm-test --refuse-program NAME`).
pub const REFUSE_PROGRAMS_ENV: &str = "SONDE_REFUSE_PROGRAMS";

pub(crate) fn program<'a>(
    ebpf: &'a mut Ebpf,
    name: &str,
) -> Result<&'a mut aya::programs::Program, ProgramError> {
    if std::env::var(REFUSE_PROGRAMS_ENV).is_ok_and(|v| v.split(',').any(|p| p == name)) {
        return Err(ProgramError::SyscallError(aya::sys::SyscallError {
            call: "bpf_prog_load (refused by SONDE_REFUSE_PROGRAMS, a test switch)",
            io_error: std::io::Error::from_raw_os_error(libc::EACCES),
        }));
    }
    ebpf.program_mut(name)
        .ok_or_else(|| ProgramError::InvalidName {
            name: name.to_owned(),
        })
}

/// Detaches and unloads programs (after a partial attach, or to detach a
/// family).
pub(crate) fn unload<'a>(
    ebpf: &mut Ebpf,
    links: &mut Links,
    programs: impl IntoIterator<Item = &'a str>,
) {
    let programs: Vec<&str> = programs.into_iter().collect();
    links.release(programs.iter().copied());
    for name in programs {
        let result = match ebpf.program_mut(name) {
            Some(aya::programs::Program::RawTracePoint(p)) => p.unload(),
            Some(aya::programs::Program::TracePoint(p)) => p.unload(),
            Some(aya::programs::Program::BtfTracePoint(p)) => p.unload(),
            _ => Ok(()),
        };
        if let Err(e) = result {
            log::debug!("unloading {name}: {e}");
        }
    }
}

/// A program error as one line with its likely cause and fix.
pub(crate) fn explain(e: &ProgramError) -> String {
    let text = error_chain(e);
    let hint = if text.contains("Operation not permitted") || text.contains("EPERM") {
        " (no privilege: run as root or grant CAP_BPF and CAP_PERFMON)"
    } else if text.contains("No such file") || text.contains("ENOENT") {
        " (hook missing on this kernel)"
    } else {
        ""
    };
    format!("{text}{hint}")
}

pub(crate) fn map<'a>(ebpf: &'a Ebpf, name: &str) -> Result<&'a aya::maps::Map, MapError> {
    ebpf.map(name).ok_or_else(|| MapError::InvalidName {
        name: name.to_owned(),
    })
}

/// Sums a per-CPU loss array into `out`.
pub(crate) fn read_losses(
    losses: &PerCpuArray<&MapData, u64>,
    out: &mut [u64],
) -> Result<(), MapError> {
    for (index, slot) in out.iter_mut().enumerate() {
        *slot = losses.get(&(index as u32), 0)?.iter().sum();
    }
    Ok(())
}

/// One line that names why a program failed, from aya's error chain.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// In-kernel run statistics of one loaded program (needs
/// `kernel.bpf_stats_enabled=1`, which itself adds ~100 ns per run on the
/// reference VM: use them for each program's share, not absolute cost).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProgramStats {
    /// Program name (as the kernel keeps it, at most 15 bytes).
    pub name: String,
    /// Kernel program id.
    pub id: u32,
    /// Runs counted while stats were enabled.
    pub run_count: u64,
    /// Time spent in the program while stats were enabled, in nanoseconds.
    pub run_time_ns: u64,
}

/// Switches the kernel's program statistics on until the returned fd is
/// dropped (`BPF_ENABLE_STATS`, 5.8+; needs CAP_SYS_ADMIN).
pub fn enable_stats() -> Result<std::os::fd::OwnedFd, aya::sys::SyscallError> {
    aya::sys::enable_stats(aya::sys::Stats::RunTime)
}

/// Program id → (time in the program in ns, runs) of the programs `ids`
/// names, while the kernel's statistics are on.
pub fn program_totals(ids: &[(Family, u32)]) -> HashMap<u32, (u64, u64)> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|info| ids.iter().any(|&(_, id)| id == info.id()))
        .map(|info| {
            let ns = u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX);
            (info.id(), (ns, info.run_count()))
        })
        .collect()
}

/// Run statistics of every loaded program whose name is in `names`, from
/// any process (the benchmark reads the agent's programs this way).
pub fn program_stats(names: &[&str]) -> Vec<ProgramStats> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter_map(|info| {
            let name = info.name_as_str()?.to_owned();
            names.contains(&name.as_str()).then(|| ProgramStats {
                name,
                id: info.id(),
                run_count: info.run_count(),
                run_time_ns: info.run_time().as_nanos() as u64,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The programs of no family: the benchmark's empty programs.
    const NON_FAMILY_PREFIX: &str = "floor_";

    fn embedded() -> aya_obj::Object {
        aya_obj::Object::parse(object().expect("the kernel programs are embedded"))
            .expect("the embedded object parses")
    }

    #[test]
    fn every_program_belongs_to_exactly_one_family_or_is_a_floor_program() {
        let obj = embedded();
        assert!(!obj.programs.is_empty());
        for name in obj.programs.keys() {
            assert!(
                name.len() <= sonde_common::family::PROGRAM_NAME_MAX,
                "{name}: the kernel keeps 15 bytes"
            );
            let families: Vec<Family> = Family::ALL
                .into_iter()
                .filter(|f| name.starts_with(f.program_prefix()))
                .collect();
            match families.as_slice() {
                [family] => assert_eq!(Family::of_program(name), Some(*family)),
                [] => assert!(name.starts_with(NON_FAMILY_PREFIX), "{name}: no family"),
                more => panic!("{name}: the prefix of {more:?}"),
            }
        }
        // Every family has programs.
        for family in Family::ALL {
            assert!(
                obj.programs
                    .keys()
                    .any(|n| n.starts_with(family.program_prefix())),
                "{family}: no program"
            );
        }
    }

    #[test]
    fn every_map_keyed_by_cgroup_is_in_the_object() {
        let obj = embedded();
        for family in Family::ALL {
            for name in family.cgroup_maps() {
                assert!(obj.maps.contains_key(*name), "{family}: {name}");
            }
        }
    }
}
