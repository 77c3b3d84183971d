//! The interrupt family's series: softirq vectors and hard IRQs, their
//! handler durations, and per CPU their runs and share of the CPU's time.

use sonde_proto::{names, v1::MetricKind};

use super::Builder;
use crate::model::{irq::InterruptLine, Snapshot};

/// Adds the family's metrics of `snapshot` to the report.
pub(super) fn metrics(b: &mut Builder<'_>, snapshot: &Snapshot) {
    let w = &snapshot.irq.window;
    let window_secs = snapshot.window_secs;
    let soft = |line: &InterruptLine| vec![(names::ATTR_SOFTIRQ_VECTOR, line.name.clone())];
    let hard = |line: &InterruptLine| {
        vec![
            (names::ATTR_IRQ_NUMBER, line.name.clone()),
            (
                names::ATTR_IRQ_HANDLER,
                line.handler.clone().unwrap_or_default(),
            ),
        ]
    };
    lines(
        b,
        &w.softirqs,
        &soft,
        window_secs,
        [
            names::SOFTIRQ_DURATION,
            names::SOFTIRQ_COUNT,
            names::SOFTIRQ_UTILIZATION,
        ],
        names::UNIT_SOFTIRQS,
        "softirq",
    );
    lines(
        b,
        &w.irqs,
        &hard,
        window_secs,
        [
            names::IRQ_DURATION,
            names::IRQ_COUNT,
            names::IRQ_UTILIZATION,
        ],
        names::UNIT_INTERRUPTS,
        "hard IRQ",
    );
    if let Some(check) = &w.check {
        let (mut soft, mut hard) = (0i64, 0i64);
        for m in &check.mismatches {
            let off = if m.sonde < m.kernel_min {
                m.kernel_min as i64 - m.sonde as i64
            } else {
                m.kernel_max as i64 - m.sonde as i64
            };
            match m.kind {
                "softirq" => soft += off,
                _ => hard += off,
            }
        }
        let points = vec![
            b.gauge(&[(names::ATTR_COUNTER, "softirq.entries")], soft as f64),
            b.gauge(&[(names::ATTR_COUNTER, "irq.entries")], hard as f64),
        ];
        b.metric(
            names::SELFCHECK_DISCREPANCY,
            names::UNIT_EVENTS,
            "Entries the kernel counted (/proc/softirqs, /proc/interrupts) that sonde did not see, less those it counted beyond the kernel's",
            MetricKind::Gauge,
            points,
        );
    }
}

/// A histogram per line, and per (line, CPU) its runs and share of the CPU.
fn lines(
    b: &mut Builder<'_>,
    lines: &[InterruptLine],
    labels: &dyn Fn(&InterruptLine) -> Vec<(&'static str, String)>,
    window_secs: f64,
    [duration, count, utilization]: [&str; 3],
    unit: &str,
    what: &str,
) {
    let (mut durations, mut counts, mut shares) = (Vec::new(), Vec::new(), Vec::new());
    for line in lines {
        let own = labels(line);
        let refs: Vec<(&str, &str)> = own.iter().map(|(k, v)| (*k, v.as_str())).collect();
        durations.push(b.histogram(&refs, &line.duration));
        for &(cpu, n, secs) in &line.per_cpu {
            let cpu = cpu.to_string();
            let mut with_cpu = refs.clone();
            with_cpu.push((names::ATTR_CPU, &cpu));
            counts.push(b.counter(&with_cpu, n));
            let share = if window_secs > 0.0 {
                secs / window_secs
            } else {
                0.0
            };
            shares.push(b.gauge(&with_cpu, share));
        }
    }
    b.metric(
        duration,
        names::UNIT_SECONDS,
        &format!("Time in each {what} handler run"),
        MetricKind::Histogram,
        durations,
    );
    b.metric(
        count,
        unit,
        &format!("{what} handler runs, per CPU"),
        MetricKind::Counter,
        counts,
    );
    b.metric(
        utilization,
        names::UNIT_RATIO,
        &format!("Time in {what} handlers over the window, as a share of the CPU's time"),
        MetricKind::Gauge,
        shares,
    );
}
