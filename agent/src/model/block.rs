//! The block family's part of a window: requests per (device, operation),
//! and the requests that failed.

use super::text::Text;

use std::collections::BTreeMap;

use serde::Serialize;
use sonde_slo::Histogram;

/// The block family's part of the snapshot.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Part {
    /// Block I/O per (device, operation).
    #[serde(rename = "block")]
    pub devices: Vec<DeviceIo>,
    /// Block requests that failed in the window, oldest first.
    pub io_errors: Vec<IoErrorRecord>,
}

/// What `sonde top` reads of the family for its header: nothing.
pub type TopPart = super::top::NoHeader;

/// Block requests of one device and operation over the window.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceIo {
    /// Device name (`loop0`, `nvme0n1`), or `major:minor`.
    pub device: String,
    /// Device major number.
    pub major: u32,
    /// Device minor number.
    pub minor: u32,
    /// `read`, `write`, `flush`, `discard` or `other`.
    pub op: &'static str,
    /// Requests issued to the driver in the window.
    pub issued: u64,
    /// Requests completed in the window (failed ones included).
    pub completed: u64,
    /// Failed requests by errno name.
    pub errors: BTreeMap<String, u64>,
    /// Requests issued but not completed at the end of the window (since the
    /// probes attached).
    pub in_flight: u64,
    /// Median latency, seconds.
    pub p50_secs: Option<f64>,
    /// 99th percentile latency, seconds.
    pub p99_secs: Option<f64>,
    /// Latency from issue to completion, OTLP exponential layout at scale 3.
    pub latency: Histogram,
}

/// A block request that completed with an error. The completion runs in
/// no particular task's context: it names the device and the request.
#[derive(Debug, Clone, Serialize)]
pub struct IoErrorRecord {
    /// `io_error`.
    pub kind: &'static str,
    /// When, Unix time in nanoseconds.
    pub time_unix_ns: u64,
    /// Device name (`loop0`), or `major:minor`.
    pub device: String,
    /// Device major number.
    pub major: u32,
    /// Device minor number.
    pub minor: u32,
    /// read, write, flush, discard or other.
    pub op: &'static str,
    /// The errno name, e.g. `EIO`.
    pub error: String,
    /// First sector of the request.
    pub sector: u64,
}

/// Not in the table: failed requests go to `sonde events`, and the
/// devices' figures to the wire and `sonde top`.
impl Text for Part {
    fn text(&self, _out: &mut String, _top: usize) {}
}
