//! sonde's pure math, shared by the agent and the collector: exponential
//! histograms, SLIs and SLOs. No I/O, so everything here is unit-tested
//! without privileges.

pub mod histogram;
pub mod rules;
pub mod slo;
pub mod spec;

pub use histogram::{Histogram, HistogramError};
