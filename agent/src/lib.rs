//! sonde: an eBPF node agent for host-level reliability signals.
//!
//! The rooms (see `docs/ARCHITECTURE.md`): `probes` loads the kernel programs
//! and turns their maps into plain model types (nothing else touches aya
//! maps); `host` reads what the kernel publishes in /proc and sysfs;
//! `attribution` names cgroups; `model` holds the snapshot types; `export` holds
//! the sinks (gRPC to a collector, OTLP, Prometheus) and the one conversion
//! from model to wire; `local` serves windows and events to other
//! copies of sonde on the node over a Unix socket; `pipeline` is the agent's
//! work each window (read, budget, SLOs, sinks, checkpoint) as a type;
//! `top` turns windows into
//! the rows of `sonde top` (pure); `cli` is one file per subcommand and only
//! calls the library.

pub mod attribution;
pub mod budget;
pub mod checkpoint;
pub mod cli;
pub mod explain;
pub mod export;
pub mod host;
pub mod local;
pub mod model;
pub mod pipeline;
pub mod probes;
pub mod sampler;
pub mod slo;
pub mod top;
