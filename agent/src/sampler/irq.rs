//! The interrupt window: deltas of the family's per-CPU counters, the IRQs'
//! names, and the check of its entries against the kernel's own counts in
//! `/proc/softirqs` and `/proc/interrupts`.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use sonde_common::irq::{KIND_HARD, KIND_SOFT, SOFTIRQ_NAMES};
use sonde_slo::Histogram;

use crate::{
    model::irq::{CpuInterrupts, InterruptLine, IrqCheck, IrqMismatch, IrqWindow},
    probes::irq::{IrqReading, Totals},
};

/// The kernel's entry counts: per softirq vector name and per IRQ number,
/// per CPU.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelCounts {
    /// Vector name → CPU → entries.
    pub softirqs: BTreeMap<String, BTreeMap<u32, u64>>,
    /// IRQ number → CPU → entries, of IRQs with exactly one handler.
    pub irqs: BTreeMap<u32, BTreeMap<u32, u64>>,
    /// IRQ number → its handlers' names, as the file lists them.
    pub names: BTreeMap<u32, String>,
}

/// The CPU numbers of a header line (`CPU0 CPU1 ...`).
fn cpus(header: &str) -> Vec<u32> {
    header
        .split_whitespace()
        .filter_map(|c| c.strip_prefix("CPU")?.parse().ok())
        .collect()
}

/// Parses `/proc/softirqs`: a header of CPUs, then `NAME: n n ...`.
pub fn parse_softirqs(text: &str) -> BTreeMap<String, BTreeMap<u32, u64>> {
    let mut lines = text.lines();
    let cpus = lines.next().map(cpus).unwrap_or_default();
    let mut out = BTreeMap::new();
    for line in lines {
        let Some((name, counts)) = line.split_once(':') else {
            continue;
        };
        let per_cpu = cpus
            .iter()
            .zip(counts.split_whitespace().map(str::parse::<u64>))
            .filter_map(|(&cpu, n)| Some((cpu, n.ok()?)))
            .collect();
        out.insert(name.trim().to_owned(), per_cpu);
    }
    out
}

/// Parses `/proc/interrupts`: a header of CPUs, then per IRQ
/// `N: n n ... chip hwirq-type  handler[, handler...]`. The named lines
/// (`LOC:`, `NMI:`) are the architecture's interrupts, which are not IRQ
/// handlers, and are left out. Returns the counts of the IRQs with one
/// handler, and every IRQ's handler names.
pub fn parse_interrupts(text: &str) -> (BTreeMap<u32, BTreeMap<u32, u64>>, BTreeMap<u32, String>) {
    let mut lines = text.lines();
    let cpus = lines.next().map(cpus).unwrap_or_default();
    let (mut counts, mut names) = (BTreeMap::new(), BTreeMap::new());
    for line in lines {
        let Some((irq, rest)) = line.split_once(':') else {
            continue;
        };
        let Ok(irq) = irq.trim().parse::<u32>() else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let per_cpu: BTreeMap<u32, u64> = cpus
            .iter()
            .map_while(|&cpu| Some((cpu, fields.next()?.parse::<u64>().ok()?)))
            .collect();
        if per_cpu.len() != cpus.len() {
            continue;
        }
        // The handlers follow the last run of two spaces (the kernel
        // prints "  %s" before the first and ", %s" between the others).
        let handlers = rest
            .rsplit_once("  ")
            .map(|(_, h)| h.trim())
            .filter(|h| !h.is_empty() && h.parse::<u64>().is_err());
        if let Some(h) = handlers {
            names.insert(irq, h.to_owned());
            if !h.contains(", ") {
                counts.insert(irq, per_cpu);
            }
        }
    }
    (counts, names)
}

/// Reads both files under `proc_root`; `None` if either cannot be read.
pub fn kernel_counts(proc_root: &Path) -> Option<KernelCounts> {
    let softirqs = std::fs::read_to_string(proc_root.join("softirqs")).ok()?;
    let interrupts = std::fs::read_to_string(proc_root.join("interrupts")).ok()?;
    let (irqs, names) = parse_interrupts(&interrupts);
    Some(KernelCounts {
        softirqs: parse_softirqs(&softirqs),
        irqs,
        names,
    })
}

/// The kernel's counts just before and just after one map read.
#[derive(Debug, Clone, Default)]
pub struct Bracket {
    /// Read just before the maps.
    pub before: KernelCounts,
    /// Read just after.
    pub after: KernelCounts,
}

/// Reads the kernel's counts around each map read, while the family
/// counts (nothing is read otherwise).
#[derive(Debug)]
pub struct IrqCheckState {
    proc_root: PathBuf,
    /// Around the read before the last one: the window's start.
    last: Option<Bracket>,
    /// Around the last read: the window's end.
    now: Option<Bracket>,
}

impl IrqCheckState {
    /// A check that reads under `proc_root` (`/proc`).
    pub fn new(proc_root: PathBuf) -> Self {
        Self {
            proc_root,
            last: None,
            now: None,
        }
    }

    /// Runs `read` (the maps' read) between two reads of the kernel's
    /// counts, when `counting` says the family counts.
    pub fn around<T>(&mut self, counting: bool, read: impl FnOnce() -> T) -> T {
        let before = self.before(counting);
        let out = read();
        self.after(before);
        out
    }

    /// The kernel's counts before a read, when the family counts.
    fn before(&self, counting: bool) -> Option<KernelCounts> {
        counting.then(|| kernel_counts(&self.proc_root)).flatten()
    }

    /// After the read: the bracket of `before` and now is the window's end.
    fn after(&mut self, before: Option<KernelCounts>) {
        let after = before
            .is_some()
            .then(|| kernel_counts(&self.proc_root))
            .flatten();
        self.last = self.now.take();
        self.now = before
            .zip(after)
            .map(|(before, after)| Bracket { before, after });
    }

    /// The window's start and end brackets, when both were read: the
    /// family counted through the window.
    pub fn brackets(&self) -> Option<(&Bracket, &Bracket)> {
        Some((self.last.as_ref()?, self.now.as_ref()?))
    }

    /// Drops the last read's bracket: the next window has no start to
    /// check from.
    pub fn forget(&mut self) {
        self.now = None;
    }
}

/// The family in the sampler: the kernel's counts around each read, for
/// the check.
pub struct State {
    check: IrqCheckState,
    /// Read before the maps, waiting for the read's end.
    before: Option<KernelCounts>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            check: IrqCheckState::new(PathBuf::from("/proc")),
            before: None,
        }
    }
}

impl super::FamilyWindow for State {
    fn before_read(&mut self, counting: bool) {
        self.before = self.check.before(counting);
    }

    fn after_read(&mut self) {
        self.check.after(self.before.take());
    }

    fn resumed(&mut self) {
        // The first window starts at the last run's reading, which no
        // bracket of this run's holds.
        self.check.forget();
    }

    type Part = crate::model::irq::Part;

    fn window(&mut self, cx: &mut super::Cx<'_>, part: &mut Self::Part) {
        let (before, after) = (&cx.before.irq, &cx.after.irq);
        let brackets = self.check.brackets();
        let names = match brackets {
            Some((_, end)) => end.after.names.clone(),
            None if !after.hard.is_empty() => read_names(Path::new("/proc")),
            None => Default::default(),
        };
        part.window = irq_window(before, after, cx.window_secs, &names, brackets);
    }
}

/// `after - before`, or `after` when the counter went backwards (its map
/// was made anew).
fn delta(before: u64, after: u64) -> u64 {
    after.checked_sub(before).unwrap_or(after)
}

/// Per CPU, the window's deltas of one line.
fn line_deltas(before: Option<&Vec<Totals>>, after: &[Totals]) -> Vec<(u32, Totals)> {
    after
        .iter()
        .enumerate()
        .filter_map(|(cpu, a)| {
            let b = before.and_then(|b| b.get(cpu)).copied().unwrap_or_default();
            let d = Totals {
                count: delta(b.count, a.count),
                time_ns: delta(b.time_ns, a.time_ns),
            };
            (d.count > 0 || d.time_ns > 0).then_some((cpu as u32, d))
        })
        .collect()
}

/// Checks sonde's deltas against the kernel's between two brackets.
pub fn check(
    soft: &BTreeMap<String, BTreeMap<u32, u64>>,
    hard: &BTreeMap<u32, BTreeMap<u32, u64>>,
    start: &Bracket,
    end: &Bracket,
) -> IrqCheck {
    let mut out = IrqCheck::default();
    let mut one = |kind: &'static str,
                   name: String,
                   cpu: u32,
                   sonde: u64,
                   kernel: &dyn Fn(&KernelCounts) -> Option<u64>| {
        let (Some(sb), Some(sa), Some(eb), Some(ea)) = (
            kernel(&start.before),
            kernel(&start.after),
            kernel(&end.before),
            kernel(&end.after),
        ) else {
            return None;
        };
        let (min, max) = (eb.saturating_sub(sa), ea.saturating_sub(sb));
        if sonde < min || sonde > max {
            out.mismatches.push(IrqMismatch {
                kind,
                name,
                cpu,
                sonde,
                kernel_min: min,
                kernel_max: max,
            });
        }
        Some(())
    };
    // Every (vector, CPU) the kernel lists, sonde's zero included.
    let mut soft_pairs = 0;
    let mut soft_entries = 0;
    for (vector, per_cpu) in &end.after.softirqs {
        for &cpu in per_cpu.keys() {
            let sonde = soft
                .get(vector)
                .and_then(|c| c.get(&cpu))
                .copied()
                .unwrap_or(0);
            let kernel = |k: &KernelCounts| k.softirqs.get(vector)?.get(&cpu).copied();
            if one("softirq", vector.clone(), cpu, sonde, &kernel).is_some() {
                soft_pairs += 1;
                soft_entries += sonde;
            }
        }
    }
    let mut irq_pairs = 0;
    let mut irq_entries = 0;
    for (&irq, per_cpu) in &end.after.irqs {
        for &cpu in per_cpu.keys() {
            let sonde = hard
                .get(&irq)
                .and_then(|c| c.get(&cpu))
                .copied()
                .unwrap_or(0);
            let kernel = |k: &KernelCounts| k.irqs.get(&irq)?.get(&cpu).copied();
            if one("irq", irq.to_string(), cpu, sonde, &kernel).is_some() {
                irq_pairs += 1;
                irq_entries += sonde;
            }
        }
    }
    out.softirq_pairs = soft_pairs;
    out.irq_pairs = irq_pairs;
    out.softirq_entries = soft_entries;
    out.irq_entries = irq_entries;
    out.ok = out.mismatches.is_empty();
    out
}

/// CPUs online, for the node's share.
fn online_cpus() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    u64::try_from(n).unwrap_or(1).max(1)
}

/// The window between two readings. `names` are the IRQs' handlers;
/// `brackets` the kernel's counts around the window's two reads, when the
/// family counted through it.
pub fn irq_window(
    before: &IrqReading,
    after: &IrqReading,
    window_secs: f64,
    names: &BTreeMap<u32, String>,
    brackets: Option<(&Bracket, &Bracket)>,
) -> IrqWindow {
    let secs = |ns: u64| ns as f64 / 1e9;
    let share = |s: f64| {
        if window_secs > 0.0 {
            s / window_secs
        } else {
            0.0
        }
    };
    let durations = |kind: u32, number: u32| -> Histogram {
        let empty = Histogram::new();
        match after.durations.get(&(kind, number)) {
            Some(a) => a
                .delta(before.durations.get(&(kind, number)).unwrap_or(&empty))
                .unwrap_or_else(|_| a.clone()),
            None => Histogram::new(),
        }
    };
    let mut cpus: BTreeMap<u32, CpuInterrupts> = BTreeMap::new();
    let mut soft_counts: BTreeMap<String, BTreeMap<u32, u64>> = BTreeMap::new();
    let mut hard_counts: BTreeMap<u32, BTreeMap<u32, u64>> = BTreeMap::new();
    let line = |name: String, handler: Option<String>, deltas: &[(u32, Totals)], h: Histogram| {
        InterruptLine {
            name,
            handler,
            count: deltas.iter().map(|(_, t)| t.count).sum(),
            time_secs: secs(deltas.iter().map(|(_, t)| t.time_ns).sum()),
            per_cpu: deltas
                .iter()
                .map(|&(cpu, t)| (cpu, t.count, secs(t.time_ns)))
                .collect(),
            p50_secs: h.quantile(0.5),
            p99_secs: h.quantile(0.99),
            duration: h,
        }
    };
    let mut softirqs = Vec::new();
    for (vector, a) in after.soft.iter().enumerate() {
        let Some(&name) = SOFTIRQ_NAMES.get(vector) else {
            continue;
        };
        let deltas = line_deltas(before.soft.get(vector), a);
        for &(cpu, t) in &deltas {
            let c = cpus.entry(cpu).or_default();
            c.softirq_secs += secs(t.time_ns);
            soft_counts
                .entry(name.to_owned())
                .or_default()
                .insert(cpu, t.count);
        }
        if !deltas.is_empty() {
            let h = durations(KIND_SOFT, vector as u32);
            softirqs.push(line(name.to_owned(), None, &deltas, h));
        }
    }
    let mut irqs = Vec::new();
    for (&irq, a) in &after.hard {
        let deltas = line_deltas(before.hard.get(&irq), a);
        for &(cpu, t) in &deltas {
            cpus.entry(cpu).or_default().hardirq_secs += secs(t.time_ns);
            hard_counts.entry(irq).or_default().insert(cpu, t.count);
        }
        if !deltas.is_empty() {
            let h = durations(KIND_HARD, irq);
            irqs.push(line(irq.to_string(), names.get(&irq).cloned(), &deltas, h));
        }
    }
    let by_time = |a: &InterruptLine, b: &InterruptLine| {
        b.time_secs
            .total_cmp(&a.time_secs)
            .then_with(|| b.count.cmp(&a.count))
            .then_with(|| a.name.cmp(&b.name))
    };
    softirqs.sort_by(by_time);
    irqs.sort_by(by_time);
    let mut cpus: Vec<CpuInterrupts> = cpus
        .into_iter()
        .map(|(cpu, mut c)| {
            c.cpu = cpu;
            c.utilization = share(c.hardirq_secs + c.softirq_secs);
            c
        })
        .collect();
    cpus.sort_by(|a, b| {
        b.utilization
            .total_cmp(&a.utilization)
            .then(a.cpu.cmp(&b.cpu))
    });
    let hardirq_secs: f64 = cpus.iter().map(|c| c.hardirq_secs).sum();
    let softirq_secs: f64 = cpus.iter().map(|c| c.softirq_secs).sum();
    IrqWindow {
        hardirq_secs,
        softirq_secs,
        utilization: share(hardirq_secs + softirq_secs) / online_cpus() as f64,
        cpus,
        softirqs,
        irqs,
        check: brackets.map(|(start, end)| check(&soft_counts, &hard_counts, start, end)),
    }
}

/// The IRQ names straight from `/proc/interrupts`, for a window without a
/// bracket that has IRQs to name.
pub fn read_names(proc_root: &Path) -> BTreeMap<u32, String> {
    std::fs::read_to_string(proc_root.join("interrupts"))
        .map(|t| parse_interrupts(&t).1)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOFTIRQS: &str = "                    CPU0       CPU1       
          HI:          0          0
       TIMER:     158156     243837
      NET_RX:     364813     410226
";

    const INTERRUPTS: &str = "           CPU0       CPU1       
 24:          1          0  IO-APIC   5-edge      ACPI:Ged
 26:          0         16  IO-APIC   4-edge      ttyS0
 27:          3          4  IO-APIC  12-edge      i8042, serio
 36:          0     264289 PCI-MSIX-0000:00:02.0   1-edge      virtio1-req.0
 44:          0          0 PCI-MSIX-0000:00:02.0   2-edge      
NMI:          0          0   Non-maskable interrupts
LOC:    3441902    3527180   Local timer interrupts
ERR:          0
";

    #[test]
    fn softirqs_parse_per_vector_and_cpu() {
        let s = parse_softirqs(SOFTIRQS);
        assert_eq!(s.len(), 3);
        assert_eq!(s["NET_RX"], BTreeMap::from([(0, 364813), (1, 410226)]));
        assert_eq!(s["HI"], BTreeMap::from([(0, 0), (1, 0)]));
    }

    #[test]
    fn interrupts_parse_single_handler_lines_and_every_name() {
        let (counts, names) = parse_interrupts(INTERRUPTS);
        assert_eq!(counts.keys().copied().collect::<Vec<_>>(), [24, 26, 36]);
        assert_eq!(counts[&36], BTreeMap::from([(0, 0), (1, 264289)]));
        assert_eq!(names[&36], "virtio1-req.0");
        assert_eq!(names[&24], "ACPI:Ged");
        assert_eq!(names[&27], "i8042, serio");
        assert!(!names.contains_key(&44));
    }

    fn counts(n: u64) -> KernelCounts {
        KernelCounts {
            softirqs: BTreeMap::from([("NET_RX".to_owned(), BTreeMap::from([(0, n)]))]),
            irqs: BTreeMap::from([(36, BTreeMap::from([(1, n / 2)]))]),
            names: BTreeMap::new(),
        }
    }

    #[test]
    fn the_check_bounds_sonde_between_the_inner_and_outer_reads() {
        let start = Bracket {
            before: counts(100),
            after: counts(104),
        };
        let end = Bracket {
            before: counts(200),
            after: counts(210),
        };
        // Kernel: NET_RX on CPU0 between 96 (200-104) and 110 (210-100).
        let soft = |n| BTreeMap::from([("NET_RX".to_owned(), BTreeMap::from([(0, n)]))]);
        let hard = |n| BTreeMap::from([(36, BTreeMap::from([(1, n)]))]);
        for (n, ok) in [(96, true), (110, true), (95, false), (111, false)] {
            let c = check(&soft(n), &hard(50), &start, &end);
            assert_eq!(c.ok, ok, "{n}: {c:?}");
            assert_eq!((c.softirq_pairs, c.irq_pairs), (1, 1));
        }
        // IRQ 36 on CPU1: between 48 (100-52) and 55 (105-50).
        assert!(check(&soft(100), &hard(48), &start, &end).ok);
        let c = check(&soft(100), &hard(56), &start, &end);
        assert_eq!(
            c.mismatches,
            [IrqMismatch {
                kind: "irq",
                name: "36".into(),
                cpu: 1,
                sonde: 56,
                kernel_min: 48,
                kernel_max: 55
            }]
        );
    }

    #[test]
    fn brackets_come_only_from_two_counting_reads_in_a_row() {
        let dir = std::env::temp_dir().join(format!("sonde-irq-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("softirqs"), SOFTIRQS).unwrap();
        std::fs::write(dir.join("interrupts"), INTERRUPTS).unwrap();
        let mut check = IrqCheckState::new(dir.clone());
        // Not counting: the files are not read, the read still runs.
        assert_eq!(check.around(false, || 7), 7);
        assert!(check.now.is_none() && check.brackets().is_none());
        check.around(true, || ());
        assert!(check.brackets().is_none(), "one read is no window");
        check.around(true, || ());
        let (start, end) = check.brackets().unwrap();
        assert_eq!(start.after.softirqs["NET_RX"][&1], 410226);
        assert_eq!(end.after.names[&36], "virtio1-req.0");
        check.forget();
        check.around(true, || ());
        assert!(
            check.brackets().is_none(),
            "a forgotten read starts no window"
        );
        check.around(false, || ());
        assert!(check.brackets().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_window_sums_per_cpu_and_shares_the_window() {
        let t = |count, time_ns| Totals { count, time_ns };
        let mut before = IrqReading::default();
        let mut after = IrqReading::default();
        before.soft = vec![vec![t(0, 0); 2]; 10];
        after.soft = before.soft.clone();
        after.soft[3] = vec![t(10, 200_000_000), t(5, 100_000_000)];
        after.hard.insert(36, vec![t(0, 0), t(4, 300_000_000)]);
        let names = BTreeMap::from([(36, "virtio1-req.0".to_owned())]);
        let w = irq_window(&before, &after, 1.0, &names, None);
        assert_eq!(w.softirqs.len(), 1);
        assert_eq!(w.softirqs[0].name, "NET_RX");
        assert_eq!(w.softirqs[0].count, 15);
        assert_eq!(w.irqs[0].handler.as_deref(), Some("virtio1-req.0"));
        assert_eq!(w.irqs[0].per_cpu, [(1, 4, 0.3)]);
        assert!((w.softirq_secs - 0.3).abs() < 1e-12);
        assert!((w.hardirq_secs - 0.3).abs() < 1e-12);
        // CPU1: 0.1 s soft + 0.3 s hard of a 1 s window, first.
        assert_eq!(w.cpus[0].cpu, 1);
        assert!((w.cpus[0].utilization - 0.4).abs() < 1e-12);
        assert!(w.check.is_none());
    }
}
