//! Metric and attribute names, per docs/telemetry.md: OpenTelemetry
//! semantic-convention names where they exist, the project's own elsewhere.
//! Prometheus names are derived from these ([`crate::prometheus`]), never
//! written twice.

/// Syscall latency (histogram, seconds).
pub const SYSCALL_DURATION: &str = "system.linux.syscall.duration";
/// Syscall failures (counter).
pub const SYSCALL_ERRORS: &str = "system.linux.syscall.errors";
/// Events the agent lost, by stage, reason and probe (counter).
pub const AGENT_DROPPED: &str = "sonde.agent.dropped";

/// UCUM unit of durations.
pub const UNIT_SECONDS: &str = "s";
/// UCUM unit of syscall failures.
pub const UNIT_ERRORS: &str = "{error}";
/// UCUM unit of lost events.
pub const UNIT_EVENTS: &str = "{event}";

/// The cgroup v2 path a series is attributed to (`/` is the host). OTel's
/// `process.linux.cgroup` names a process's cgroup line; sonde's series
/// belong to a cgroup, not a process, hence a name of its own.
pub const ATTR_CGROUP_PATH: &str = "linux.cgroup.path";
/// Syscall name, e.g. `openat`.
pub const ATTR_SYSCALL_NAME: &str = "syscall.name";
/// Low-cardinality failure kind: the errno name, e.g. `ENOENT`.
pub const ATTR_ERROR_TYPE: &str = "error.type";
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
