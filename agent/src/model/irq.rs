//! The interrupt family's window: where the CPUs' time went to hard IRQ
//! handlers and softirqs, and the check of its counts against the kernel's
//! own (`/proc/softirqs`, `/proc/interrupts`).

use std::fmt::Write as _;

use super::{
    text::{secs, truncate_left, Text},
    top::TopHeader,
};

use serde::{Deserialize, Serialize};
use sonde_slo::Histogram;

/// The interrupt family's part of the snapshot.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Part {
    /// Time in hard IRQ handlers and softirqs per CPU, vector and IRQ, and
    /// the check against `/proc/softirqs` and `/proc/interrupts`.
    #[serde(rename = "irq")]
    pub window: IrqWindow,
}

/// What `sonde top` reads of the family: the share of all CPUs' time in
/// interrupts, and the busiest CPU.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TopPart {
    /// The interrupt window.
    pub irq: TopIrq,
}

/// [`TopPart`]'s figures of the window.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TopIrq {
    /// Time in hard IRQ handlers and softirqs, share of all CPUs' time.
    pub utilization: f64,
    /// Per CPU, busiest first.
    pub cpus: Vec<TopCpu>,
}

/// One CPU's share of the window in interrupts.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TopCpu {
    /// CPU number.
    pub cpu: u32,
    /// Share of the window.
    pub utilization: f64,
}

/// `irq 2.1% (cpu0 7.9%)`: the node's share, then the busiest CPU's; `-`
/// when the family did not count.
impl TopHeader for TopPart {
    fn header(&self, counting: bool) -> Option<String> {
        let share = if counting {
            format!("{:.1}%", 100.0 * self.irq.utilization)
        } else {
            "-".to_owned()
        };
        let busiest = self.irq.cpus.first().map_or(String::new(), |c| {
            format!(" (cpu{} {:.1}%)", c.cpu, 100.0 * c.utilization)
        });
        Some(format!("irq {share}{busiest}"))
    }
}

/// Interrupts over one window.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IrqWindow {
    /// Time in hard IRQ handlers, all CPUs, seconds.
    pub hardirq_secs: f64,
    /// Time in softirqs (without the hard handlers inside them), all
    /// CPUs, seconds.
    pub softirq_secs: f64,
    /// Both, as a share of all online CPUs' time over the window.
    pub utilization: f64,
    /// Per CPU that handled any, busiest first.
    pub cpus: Vec<CpuInterrupts>,
    /// Softirq vectors that ran in the window, most time first.
    pub softirqs: Vec<InterruptLine>,
    /// Hard IRQs whose handlers ran in the window, most time first.
    pub irqs: Vec<InterruptLine>,
    /// sonde's entries against the kernel's, per vector or IRQ and CPU;
    /// `None` when the family did not count through the whole window.
    pub check: Option<IrqCheck>,
}

/// One CPU's time in interrupts over the window.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CpuInterrupts {
    /// CPU number.
    pub cpu: u32,
    /// Seconds in hard IRQ handlers.
    pub hardirq_secs: f64,
    /// Seconds in softirqs.
    pub softirq_secs: f64,
    /// Both, as a share of the window.
    pub utilization: f64,
}

/// One softirq vector or hard IRQ over the window.
#[derive(Debug, Clone, Default, Serialize)]
pub struct InterruptLine {
    /// The vector's name (`NET_RX`), or the IRQ's number.
    pub name: String,
    /// The IRQ's handlers (`virtio1-req.0`), from `/proc/interrupts`;
    /// `None` for a vector, or an IRQ gone from that file.
    pub handler: Option<String>,
    /// Handler entries, all CPUs.
    pub count: u64,
    /// Time in the handler, all CPUs, seconds.
    pub time_secs: f64,
    /// Per CPU: (CPU, entries, seconds), CPUs with entries only.
    pub per_cpu: Vec<(u32, u64, f64)>,
    /// Median handler duration, seconds.
    pub p50_secs: Option<f64>,
    /// 99th percentile handler duration, seconds.
    pub p99_secs: Option<f64>,
    /// Handler durations.
    pub duration: Histogram,
}

/// The check of a window's entries against the kernel's counters, read
/// just before and just after each of the window's two map reads: the
/// kernel's count over the window lies between `kernel_min` (its counts
/// between the inner reads) and `kernel_max` (between the outer ones), and
/// sonde's must too.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct IrqCheck {
    /// Every (vector or IRQ, CPU) checked was within its bounds.
    pub ok: bool,
    /// (softirq vector, CPU) pairs checked.
    pub softirq_pairs: u64,
    /// (IRQ, CPU) pairs checked: IRQs with one handler each (a shared line
    /// runs every handler per interrupt, which the kernel counts once).
    pub irq_pairs: u64,
    /// sonde's softirq entries in the window.
    pub softirq_entries: u64,
    /// sonde's entries of the IRQs checked.
    pub irq_entries: u64,
    /// Those out of bounds.
    pub mismatches: Vec<IrqMismatch>,
}

/// A (vector or IRQ, CPU) whose entries sonde counted outside the kernel's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IrqMismatch {
    /// `softirq` or `irq`.
    pub kind: &'static str,
    /// Vector name or IRQ number.
    pub name: String,
    /// CPU.
    pub cpu: u32,
    /// sonde's count.
    pub sonde: u64,
    /// The kernel's count between the inner reads.
    pub kernel_min: u64,
    /// The kernel's count between the outer reads.
    pub kernel_max: u64,
}

/// The interrupt window as text: the node's share, the busiest CPUs,
/// vectors and IRQs, and the check against the kernel's counts.
impl Text for Part {
    fn text(&self, out: &mut String, top: usize) {
        let w = &self.window;
        if w.softirqs.is_empty() && w.irqs.is_empty() {
            return;
        }
        let cpus = w
            .cpus
            .iter()
            .take(top)
            .map(|c| format!("cpu{} {:.2}%", c.cpu, 100.0 * c.utilization))
            .collect::<Vec<_>>()
            .join("  ");
        let _ = writeln!(
            out,
            "INTERRUPTS {:.2}% of the CPUs (hard {}, soft {})  busiest: {cpus}",
            100.0 * w.utilization,
            secs(Some(w.hardirq_secs)),
            secs(Some(w.softirq_secs)),
        );
        let _ = writeln!(
            out,
            "{:<10} {:<24} {:>10} {:>10} {:>8} {:>8}",
            "IRQ", "HANDLER", "RUNS", "TIME", "P50", "P99"
        );
        let rows = w
            .softirqs
            .iter()
            .map(|l| ("soft", l))
            .chain(w.irqs.iter().map(|l| ("hard", l)));
        let mut rows: Vec<_> = rows.collect();
        rows.sort_by(|a, b| b.1.time_secs.total_cmp(&a.1.time_secs));
        for (kind, l) in rows.into_iter().take(top) {
            let handler = match (kind, &l.handler) {
                ("soft", _) => "softirq".to_owned(),
                (_, Some(h)) => truncate_left(h, 24),
                (_, None) => "-".to_owned(),
            };
            let _ = writeln!(
                out,
                "{:<10} {:<24} {:>10} {:>10} {:>8} {:>8}",
                l.name,
                handler,
                l.count,
                secs(Some(l.time_secs)),
                secs(l.p50_secs),
                secs(l.p99_secs)
            );
        }
        if let Some(c) = &w.check {
            if c.ok {
                let _ = writeln!(
                out,
                "IRQ CHECK {} softirq and {} IRQ (CPU) pairs: sonde's counts within the kernel's",
                c.softirq_pairs, c.irq_pairs
            );
            } else {
                let shown: Vec<String> = c
                    .mismatches
                    .iter()
                    .take(top)
                    .map(|m| {
                        format!(
                            "{} {} cpu{} sonde {} kernel {}..{}",
                            m.kind, m.name, m.cpu, m.sonde, m.kernel_min, m.kernel_max
                        )
                    })
                    .collect();
                let _ = writeln!(out, "IRQ CHECK differs: {}", shown.join("; "));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_says_the_share_and_the_busiest_cpu_or_a_dash() {
        let part = TopPart {
            irq: TopIrq {
                utilization: 0.021,
                cpus: vec![
                    TopCpu {
                        cpu: 1,
                        utilization: 0.079,
                    },
                    TopCpu {
                        cpu: 0,
                        utilization: 0.01,
                    },
                ],
            },
        };
        assert_eq!(part.header(true).as_deref(), Some("irq 2.1% (cpu1 7.9%)"));
        assert_eq!(part.header(false).as_deref(), Some("irq - (cpu1 7.9%)"));
        assert_eq!(TopPart::default().header(false).as_deref(), Some("irq -"));
    }
}
