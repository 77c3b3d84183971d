//! Kernel struct offsets for the programs, from the running kernel's BTF.

use sonde_common::task::{TaskOffsets, COMM_LEN};

use crate::host::btf::Btf;

/// The offsets every task-reading program needs, or why they are missing.
pub fn offsets(btf: Option<&Btf>) -> Result<TaskOffsets, String> {
    let btf = btf.ok_or_else(|| {
        "no kernel BTF (/sys/kernel/btf/vmlinux): task fields cannot be located; use a kernel built with CONFIG_DEBUG_INFO_BTF".to_owned()
    })?;
    let member = |s: &str, m: &str| {
        btf.member(s, m)
            .ok_or_else(|| format!("this kernel's BTF has no {s}.{m}"))
    };
    // `state` became `__state` (an unsigned int) in 5.14.
    let state = btf
        .member("task_struct", "__state")
        .or_else(|| btf.member("task_struct", "state"))
        .ok_or("this kernel's BTF has no task_struct.__state or .state")?;
    let comm = member("task_struct", "comm")?;
    if comm.size as usize != COMM_LEN {
        return Err(format!(
            "task_struct.comm is {} bytes, not {COMM_LEN}",
            comm.size
        ));
    }
    Ok(TaskOffsets {
        task_pid: member("task_struct", "pid")?.offset,
        task_tgid: member("task_struct", "tgid")?.offset,
        task_state: state.offset,
        task_cgroups: member("task_struct", "cgroups")?.offset,
        task_comm: comm.offset,
        task_exit_code: member("task_struct", "exit_code")?.offset,
        css_set_dfl_cgrp: member("css_set", "dfl_cgrp")?.offset,
        cgroup_kn: member("cgroup", "kn")?.offset,
        kernfs_node_id: member("kernfs_node", "id")?.offset,
        valid: 1,
    })
}
