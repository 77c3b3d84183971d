//! What the running kernel offers sonde, read from /proc and sysfs.

pub mod btf;
pub mod caps;
pub mod kernel;
pub mod mounts;
pub mod netns;
pub mod pressure;
pub mod sockdiag;
pub mod throttle;

pub use caps::Capabilities;
pub use kernel::KernelInfo;
