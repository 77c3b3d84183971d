//! Who a cgroup id belongs to. For now: the cgroup's path in the v2
//! hierarchy ("/" is the host). Pod, container and unit attribution build on it.

pub mod cgroup;

pub use cgroup::CgroupPaths;
