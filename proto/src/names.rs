//! Metric and attribute names, per docs/telemetry.md: OpenTelemetry
//! semantic-convention names where they exist, the project's own elsewhere.
//! Prometheus names are derived from these ([`crate::prometheus`]), never
//! written twice.

/// Syscall latency (histogram, seconds).
pub const SYSCALL_DURATION: &str = "system.linux.syscall.duration";
/// Syscall failures (counter).
pub const SYSCALL_ERRORS: &str = "system.linux.syscall.errors";
/// Run-queue latency (histogram, seconds).
pub const RUNQUEUE_DURATION: &str = "system.linux.scheduler.runqueue.duration";
/// Run-queue wait by the cgroup that held the CPU when each wait ended
/// (gauge: seconds waited per second of the window; `linux.cgroup.path`
/// the victim, `linux.cgroup.holder.path` the holder, `idle`, `earlier` or
/// `other`).
pub const RUNQUEUE_WAIT_BY_HOLDER: &str = "system.linux.scheduler.runqueue.wait.by_holder";
/// Memory reclaim stalls (histogram, seconds).
pub const RECLAIM_DURATION: &str = "system.linux.memory.reclaim.duration";
/// Block request latency (histogram, seconds).
pub const DISK_REQUEST_DURATION: &str = "system.disk.request.duration";
/// Block requests completed (counter; OTel's `system.disk.operations`).
pub const DISK_OPERATIONS: &str = "system.disk.operations";
/// Failed block requests (counter).
pub const DISK_ERRORS: &str = "system.disk.errors";
/// OOM kills (counter).
pub const OOM_KILLS: &str = "system.linux.oom_kill.count";
/// Processes ended by a signal (counter); crashes are the crash signals.
pub const PROCESS_SIGNALED: &str = "process.crashes";
/// Processes that exited with a non-zero status (counter).
pub const PROCESS_NONZERO_EXITS: &str = "process.exits.nonzero";
/// TCP connect latency (histogram, seconds).
pub const TCP_CONNECT_DURATION: &str = "network.tcp.connect.duration";
/// Failed TCP connects (counter; `error.type` = refused, reset, timeout, unreachable, other).
pub const TCP_CONNECT_FAILURES: &str = "network.tcp.connect.failures";
/// Retransmitted TCP segments (counter).
pub const TCP_RETRANSMITS: &str = "network.tcp.retransmits";
/// TCP resets (counter; `network.io.direction`).
pub const TCP_RESETS: &str = "network.tcp.resets";
/// Handshakes refused at their last ACK by a full accept queue (counter; `server.port`).
pub const TCP_LISTEN_OVERFLOWS: &str = "network.tcp.listen.overflows";
/// Packets dropped by listening sockets, their own count: SYNs refused by a full queue and more (counter; `server.port`).
pub const TCP_LISTEN_DROPS: &str = "network.tcp.listen.drops";
/// Packets dropped, by the kernel's reason (OTel `system.network.packet.dropped`).
pub const PACKETS_DROPPED: &str = "system.network.packet.dropped";
/// Softirq handler durations (histogram, seconds; `softirq.vector`).
pub const SOFTIRQ_DURATION: &str = "system.linux.softirq.duration";
/// Softirq handler runs (counter; `softirq.vector`, `cpu.logical_number`).
pub const SOFTIRQ_COUNT: &str = "system.linux.softirq.count";
/// Time in softirqs over the window, as a share of the CPU's time (gauge,
/// `1`; `softirq.vector`, `cpu.logical_number`).
pub const SOFTIRQ_UTILIZATION: &str = "system.linux.softirq.utilization";
/// Hard IRQ handler durations (histogram, seconds; `irq.number`, `irq.handler`).
pub const IRQ_DURATION: &str = "system.linux.irq.duration";
/// Hard IRQ handler runs (counter; `irq.number`, `irq.handler`, `cpu.logical_number`).
pub const IRQ_COUNT: &str = "system.linux.irq.count";
/// Time in hard IRQ handlers over the window, as a share of the CPU's time
/// (gauge, `1`; `irq.number`, `irq.handler`, `cpu.logical_number`).
pub const IRQ_UTILIZATION: &str = "system.linux.irq.utilization";
/// A self-check's difference from the kernel's own count over the window:
/// entries the kernel counted that sonde did not see, less those sonde
/// counted beyond the kernel's (gauge; `counter`). 0 when they agree.
pub const SELFCHECK_DISCREPANCY: &str = "sonde.selfcheck.discrepancy";
/// SLO good events (counter; `slo.name`).
pub const SLO_GOOD: &str = "slo.sli.good";
/// SLO valid events (counter; `slo.name`).
pub const SLO_TOTAL: &str = "slo.sli.total";
/// Error budget left over the SLO window, 1 = untouched (gauge; `slo.name`).
pub const SLO_BUDGET_REMAINING: &str = "slo.error_budget.remaining";
/// Burn rate over an alert window (gauge; `slo.name`, `slo.window`).
pub const SLO_BURN_RATE: &str = "slo.burn_rate";
/// 1 while an alert of the severity fires (gauge; `slo.name`, `slo.severity`).
pub const SLO_ALERT: &str = "slo.alert";
/// 1 when the window saw all the data the SLO depends on (gauge;
/// `slo.name`): 0 means its counts are lower bounds. Over a span,
/// its minimum says whether the span was whole.
pub const SLO_COMPLETE: &str = "slo.data.complete";
/// Series folded into an overflow series by the per-metric cap (counter; `metric`).
pub const AGENT_SERIES_OVERFLOW: &str = "sonde.agent.series.overflow";
/// Events the agent lost, by stage, reason and probe (counter).
pub const AGENT_DROPPED: &str = "sonde.agent.dropped";
/// The agent's own CPU time over the window, as a share of one core
/// (gauge, `1`).
pub const AGENT_CPU_UTILIZATION: &str = "sonde.agent.cpu.utilization";
/// A family's time in its kernel programs over the window, as a share of
/// one core, estimated from a sample of the kernel's statistics (gauge,
/// `1`; `probe`).
pub const PROBE_CPU_UTILIZATION: &str = "sonde.probe.cpu.utilization";
/// Samples sent to Prometheus remote-write stores, by outcome (counter;
/// `server.address`, `outcome`: stored, already_stored, refused, queue_full).
pub const REMOTE_WRITE_SAMPLES: &str = "sonde.export.remote_write.samples";
/// Remote-write requests retried, by reason (counter; `server.address`,
/// `reason`: server_error, too_many_requests, connection).
pub const REMOTE_WRITE_RETRIES: &str = "sonde.export.remote_write.retries";
/// Windows some of whose samples a store never got (counter;
/// `server.address`, `reason`).
pub const REMOTE_WRITE_WINDOWS_DROPPED: &str = "sonde.export.remote_write.windows.dropped";
/// Compressed remote-write bytes sent, retries included (counter, `By`).
pub const REMOTE_WRITE_SENT: &str = "sonde.export.remote_write.sent";
/// Time spent writing, by stage (counter, `s`; `server.address`, `stage`:
/// series, encode, compress, request).
pub const REMOTE_WRITE_TIME: &str = "sonde.export.remote_write.time";
/// Bytes waiting in a store's queue (gauge, `By`).
pub const REMOTE_WRITE_QUEUE: &str = "sonde.export.remote_write.queue.size";
/// An agent's moves to another collector replica after the one in use
/// stopped answering (counter, `{failover}`).
pub const COLLECTOR_FAILOVERS: &str = "sonde.export.collector.failovers";
/// Time from losing a collector replica to the next one's first ack,
/// summed over the fail-overs (counter, `s`).
pub const COLLECTOR_FAILOVER_TIME: &str = "sonde.export.collector.failover.time";
/// The longest fail-over (gauge, `s`).
pub const COLLECTOR_FAILOVER_TIME_MAX: &str = "sonde.export.collector.failover.time.max";
/// An agent's moves back to its first-choice replica once it answered
/// again (counter, `{failover}`).
pub const COLLECTOR_RETURNS: &str = "sonde.export.collector.returns";
/// The replica an agent streams to now: 1, by `server.address` (gauge,
/// `{stream}`).
pub const COLLECTOR_CONNECTED: &str = "sonde.export.collector.connected";

/// The node that wrote a window, as remote write stores it: 1, labelled
/// with the node's identity (gauge; `host.id`, `host.arch`, `os.version`,
/// `service.version`). With the window series below, a store alone can
/// answer `sonde fleet` (`sonde-collector --store-url`).
pub const STORE_AGENT_INFO: &str = "sonde.agent.info";
/// The window's sequence number in its agent's run (gauge).
pub const STORE_WINDOW_SEQUENCE: &str = "sonde.window.sequence";
/// 1 when the window lost no event, 0 when it did (gauge).
pub const STORE_WINDOW_COMPLETE: &str = "sonde.window.complete";
/// Start of the window, Unix seconds (gauge, `s`).
pub const STORE_WINDOW_START: &str = "sonde.window.start";
/// End of the window, Unix seconds (gauge, `s`): the samples' timestamp,
/// as a value that `last_over_time` keeps.
pub const STORE_WINDOW_END: &str = "sonde.window.end";
/// Events the window counted, per metric (gauge, `{event}`; `metric`):
/// histogram samples or counter increments, what `sonde fleet` shows of
/// a node's latest window.
pub const STORE_WINDOW_EVENTS: &str = "sonde.window.events";
/// Events the window lost, all stages (gauge, `{event}`).
pub const STORE_WINDOW_LOST: &str = "sonde.window.lost";
/// Since when the window's cumulative values count, Unix seconds (gauge,
/// `s`): a change means the agent restarted and its counters began again.
pub const STORE_TOTALS_START: &str = "sonde.agent.totals.start";
/// 1 when the probe is attached, 0 when degraded or unavailable (gauge; `probe`).
pub const STORE_PROBE_ATTACHED: &str = "sonde.probe.attached";

/// A firing SLO alert's explanation, as remote write stores it: the
/// windows it was explained over (gauge; `slo.name`, `slo.severity`).
/// Its findings and their culprits are the series below, written with the
/// same window, so that any replica reads the fleet's explanations from
/// the store. A finding's sentence is not stored (its figures would make
/// a new series each window): a reader rebuilds it from these.
pub const STORE_EXPLANATION_WINDOWS: &str = "sonde.slo.explanation.windows";
/// Of those windows, the ones that lost data or had a probe down (gauge,
/// `{window}`; `slo.name`).
pub const STORE_EXPLANATION_INCOMPLETE: &str = "sonde.slo.explanation.incomplete";
/// A finding's score (gauge; `slo.name`, `finding.rank`, `finding.kind`,
/// `finding.unit`).
pub const STORE_FINDING_SCORE: &str = "sonde.slo.explanation.finding.score";
/// A finding's magnitude, in its `finding.unit` (gauge; as the score).
pub const STORE_FINDING_MAGNITUDE: &str = "sonde.slo.explanation.finding.magnitude";
/// The share of the symptom a finding accounts for, where it can be
/// computed (gauge, `1`; as the score).
pub const STORE_FINDING_SHARE: &str = "sonde.slo.explanation.finding.share";
/// The incomplete windows behind a finding (gauge, `{window}`; as the score).
pub const STORE_FINDING_INCOMPLETE: &str = "sonde.slo.explanation.finding.incomplete";
/// A culprit's magnitude, in its finding's unit (gauge; `slo.name`,
/// `finding.rank`, `culprit.rank`, `culprit.kind`, `culprit.name`).
pub const STORE_CULPRIT_MAGNITUDE: &str = "sonde.slo.explanation.culprit.magnitude";
/// A culprit's share of its finding (gauge, `1`; as the culprit's magnitude).
pub const STORE_CULPRIT_SHARE: &str = "sonde.slo.explanation.culprit.share";

/// The scope of a fleet view that covers the agents streaming to the
/// collector that answered (`ListNodesResponse.scope`).
pub const SCOPE_REPLICA: &str = "this replica";
/// The scope of a fleet view read from the store: every node that wrote
/// its windows there.
pub const SCOPE_STORE: &str = "the fleet, from the store";

/// Unit of fail-overs.
pub const UNIT_FAILOVERS: &str = "{failover}";
/// Unit of streams.
pub const UNIT_STREAMS: &str = "{stream}";
/// UCUM unit of durations.
pub const UNIT_SECONDS: &str = "s";
/// UCUM unit of syscall failures.
pub const UNIT_ERRORS: &str = "{error}";
/// UCUM unit of block operations.
pub const UNIT_OPERATIONS: &str = "{operation}";
/// UCUM unit of OOM kills.
pub const UNIT_KILLS: &str = "{kill}";
/// UCUM unit of processes.
pub const UNIT_PROCESSES: &str = "{process}";
/// UCUM unit of connections.
pub const UNIT_CONNECTIONS: &str = "{connection}";
/// UCUM unit of TCP segments.
pub const UNIT_SEGMENTS: &str = "{segment}";
/// UCUM unit of packets.
pub const UNIT_PACKETS: &str = "{packet}";
/// UCUM unit of series.
pub const UNIT_SERIES: &str = "{series}";
/// UCUM unit of ratios.
pub const UNIT_RATIO: &str = "1";
/// UCUM unit of samples.
pub const UNIT_SAMPLES: &str = "{sample}";
/// UCUM unit of requests.
pub const UNIT_REQUESTS: &str = "{request}";
/// UCUM unit of windows.
pub const UNIT_WINDOWS: &str = "{window}";
/// UCUM unit of bytes.
pub const UNIT_BYTES: &str = "By";
/// UCUM unit of softirq handler runs.
pub const UNIT_SOFTIRQS: &str = "{softirq}";
/// UCUM unit of hard IRQ handler runs.
pub const UNIT_INTERRUPTS: &str = "{interrupt}";
/// UCUM unit of lost events.
pub const UNIT_EVENTS: &str = "{event}";

/// The cgroup v2 path a series is attributed to (`/` is the host). OTel's
/// `process.linux.cgroup` names a process's cgroup line; sonde's series
/// belong to a cgroup, not a process, hence a name of its own.
pub const ATTR_CGROUP_PATH: &str = "linux.cgroup.path";
/// The cgroup whose task held the CPU when a run-queue wait ended: its v2
/// path, `idle` (nobody held it), `earlier` (the part of a wait before its
/// last holder got the CPU) or `other` (the holders not named one by one).
pub const ATTR_HOLDER_CGROUP_PATH: &str = "linux.cgroup.holder.path";
/// A metric's name (on sonde's own metrics about other metrics).
pub const ATTR_METRIC: &str = "metric";
/// The kernel counter a self-check compares against.
pub const ATTR_COUNTER: &str = "counter";
/// A softirq vector, as `/proc/softirqs` names it (`NET_RX`).
pub const ATTR_SOFTIRQ_VECTOR: &str = "softirq.vector";
/// A hard IRQ's number.
pub const ATTR_IRQ_NUMBER: &str = "irq.number";
/// A hard IRQ's handlers, as `/proc/interrupts` names them.
pub const ATTR_IRQ_HANDLER: &str = "irq.handler";
/// A CPU (OpenTelemetry's `cpu.logical_number`).
pub const ATTR_CPU: &str = "cpu.logical_number";
/// An SLO's name.
pub const ATTR_SLO_NAME: &str = "slo.name";
/// An alert window, e.g. `1h`.
pub const ATTR_SLO_WINDOW: &str = "slo.window";
/// `page` or `ticket`.
pub const ATTR_SLO_SEVERITY: &str = "slo.severity";
/// A finding's rank in its explanation, from 1.
pub const ATTR_FINDING_RANK: &str = "finding.rank";
/// A finding's kind, e.g. `cpu_contention`.
pub const ATTR_FINDING_KIND: &str = "finding.kind";
/// The unit of a finding's magnitude, e.g. `s/s`.
pub const ATTR_FINDING_UNIT: &str = "finding.unit";
/// A culprit's rank in its finding, from 1.
pub const ATTR_CULPRIT_RANK: &str = "culprit.rank";
/// `cgroup`, `device`, `destination` or `signal`.
pub const ATTR_CULPRIT_KIND: &str = "culprit.kind";
/// The culprit: a cgroup path, a device, an address.
pub const ATTR_CULPRIT_NAME: &str = "culprit.name";
/// Syscall name, e.g. `openat`.
pub const ATTR_SYSCALL_NAME: &str = "syscall.name";
/// Low-cardinality failure kind: the errno name, e.g. `ENOENT`.
pub const ATTR_ERROR_TYPE: &str = "error.type";
/// Block device name, e.g. `nvme0n1` (OTel `system.device`).
pub const ATTR_DEVICE: &str = "system.device";
/// Block operation: read, write, flush, discard, other (OTel's
/// `disk.io.direction` has read/write; flush and discard are sonde's).
pub const ATTR_DISK_DIRECTION: &str = "disk.io.direction";
/// `transmit` or `receive` (OTel `network.io.direction`).
pub const ATTR_IO_DIRECTION: &str = "network.io.direction";
/// A server's `host:port` (OTel `server.address`, here with the port).
pub const ATTR_SERVER_ADDRESS: &str = "server.address";
/// A listening port (OTel `server.port`).
pub const ATTR_SERVER_PORT: &str = "server.port";
/// The kernel's drop reason, e.g. `NETFILTER_DROP` (OTel-style `drop.reason`).
pub const ATTR_DROP_REASON: &str = "drop.reason";
/// Signal name, e.g. `SIGSEGV`.
pub const ATTR_SIGNAL_NAME: &str = "signal.name";
/// Exit status of a process.
pub const ATTR_EXIT_CODE: &str = "process.exit.code";
/// Loss stage: `kernel`, `userspace`, `outbox`.
pub const ATTR_STAGE: &str = "stage";
/// Loss reason, snake_case.
pub const ATTR_REASON: &str = "reason";
/// Probe family.
pub const ATTR_PROBE: &str = "probe";

/// Resource attribute: node name.
pub const RES_HOST_NAME: &str = "host.name";
/// Resource attribute: machine id.
pub const RES_HOST_ID: &str = "host.id";
/// Resource attribute: architecture.
pub const RES_HOST_ARCH: &str = "host.arch";
/// Resource attribute: OS kind.
pub const RES_OS_TYPE: &str = "os.type";
/// Resource attribute: kernel release.
pub const RES_OS_VERSION: &str = "os.version";
/// Resource attribute: the service that produced the data.
pub const RES_SERVICE_NAME: &str = "service.name";
/// Resource attribute: its version.
pub const RES_SERVICE_VERSION: &str = "service.version";
