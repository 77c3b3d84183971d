//! Offsets into kernel structs, read by the agent from the running kernel's
//! BTF and handed to the programs as a read-only global before load. No
//! offset is ever compiled in.

/// Byte offsets the programs need to read a task's identity and cgroup.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskOffsets {
    /// `task_struct.pid`.
    pub task_pid: u32,
    /// `task_struct.tgid`.
    pub task_tgid: u32,
    /// `task_struct.__state` (5.14+) or `.state`; only its low 32 bits are read.
    pub task_state: u32,
    /// `task_struct.cgroups` (a `struct css_set *`).
    pub task_cgroups: u32,
    /// `task_struct.comm` (16 bytes).
    pub task_comm: u32,
    /// `task_struct.exit_code`.
    pub task_exit_code: u32,
    /// `css_set.dfl_cgrp` (the cgroup v2 cgroup).
    pub css_set_dfl_cgrp: u32,
    /// `cgroup.kn` (its `struct kernfs_node *`).
    pub cgroup_kn: u32,
    /// `kernfs_node.id` (the cgroup id: the directory's inode number).
    pub kernfs_node_id: u32,
    /// 1 once the agent has filled the offsets in; programs that need them
    /// count a loss and do nothing while it is 0.
    pub valid: u32,
}

const _: () = assert!(core::mem::size_of::<TaskOffsets>() == 40);

/// Length of `task_struct.comm`.
pub const COMM_LEN: usize = 16;

/// Start of something a task waits for (run queue, reclaim), one per slot of
/// an array indexed by the task id and a mask; the id says who owns the slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StartSlot {
    /// Owner (pid or tid); 0 when free.
    pub id: u32,
    /// Explicit padding.
    pub _pad: u32,
    /// `bpf_ktime_get_ns()` at the start.
    pub ts_ns: u64,
}

/// Key of a per-cgroup latency histogram map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CgroupBucketKey {
    /// cgroup v2 id.
    pub cgroup_id: u64,
    /// Biased bucket key of the latency in binary nanoseconds.
    pub bucket: u32,
    /// Explicit padding.
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<StartSlot>() == 16);
const _: () = assert!(core::mem::size_of::<CgroupBucketKey>() == 16);
