//! Memory family: an OOM kill counted once, against the kernel's own count.

use sonde::{probes::ProbeOptions, sampler::Sampler};

use crate::{privileged, set_comm, MemoryLimit, TestCgroup, Workload};

const LIMIT_BYTES: u64 = 32 << 20;
const ALLOC_BYTES: usize = 64 << 20;

#[test]
fn oom_kill_counted_once_with_the_victim() {
    if !privileged() {
        return;
    }
    let probes = crate::load_probes("memory", ProbeOptions::default());
    let cgroup = TestCgroup::new("oom");
    let limit = MemoryLimit::new(&cgroup, "oom", LIMIT_BYTES);
    let before = limit.oom_kills();
    let extra = limit.extra_procs();
    let child = Workload::fork_joining(&cgroup, extra.as_deref(), || {
        set_comm(c"sonde-oom");
        // SAFETY: an anonymous private mapping, touched page by page.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                ALLOC_BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if p == libc::MAP_FAILED {
                libc::_exit(5);
            }
            for offset in (0..ALLOC_BYTES).step_by(4096) {
                (p as *mut u8).add(offset).write_volatile(1);
            }
        }
    });
    let pid = child.pid();
    let mut sampler = Sampler::start(probes).expect("first reading");
    child.go();
    let status = child.wait_status();
    let snapshot = sampler.tick().expect("second reading");

    assert!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL,
        "status {status:#x}"
    );
    let kernel = limit.oom_kills() - before;
    assert_eq!(kernel, 1, "the kernel's own oom_kill count");
    assert_eq!(snapshot.oom_kills(cgroup.id()), kernel);
    let events: Vec<_> = snapshot
        .process
        .events
        .iter()
        .filter(|e| e.kind == "oom_kill")
        .collect();
    let victim = events
        .iter()
        .find(|e| e.pid == pid as u32)
        .unwrap_or_else(|| panic!("no oom_kill event for {pid}: {events:?}"));
    assert_eq!(victim.cgroup.cgroup_id, cgroup.id());
    assert_eq!(victim.comm, "sonde-oom");
    // `mark_victim` names the victim task since 6.x (its first argument is
    // the task); before, only its pid, and the cgroup is the triggering
    // task's: here the victim itself, the only process in the cgroup.
    let task_arg = first_arg_is_pointer(
        &std::fs::read("/sys/kernel/btf/vmlinux").unwrap_or_default(),
        "mark_victim",
    );
    assert_eq!(
        victim.cgroup_of_trigger, !task_arg,
        "the victim's cgroup comes from the victim task exactly when the kernel names it"
    );
    // The victim died by SIGKILL: a crash in its cgroup too.
    let exits = snapshot.exits(cgroup.id()).expect("exits");
    assert_eq!(exits.signals.get("SIGKILL"), Some(&1));
    // Reclaim against the 32 MiB limit stalled the child before the kill.
    let reclaim = snapshot
        .memory
        .reclaim
        .iter()
        .find(|c| c.cgroup.cgroup_id == cgroup.id());
    assert!(
        reclaim.is_some_and(|r| r.count > 0),
        "no reclaim stall recorded"
    );
    assert_eq!(snapshot.lost(), 0, "{:?}", snapshot.losses);
}

/// Whether raw tracepoint `tp`'s first argument is a pointer, read from the
/// kernel's BTF by this test's own walk rather than sonde's parser: the
/// typedef `btf_trace_<tp>` points to a function prototype whose
/// parameters are `void *data`, then the tracepoint's arguments. False
/// without BTF or without the tracepoint.
fn first_arg_is_pointer(blob: &[u8], tp: &str) -> bool {
    const PTR: u32 = 2;
    const TYPEDEF: u32 = 8;
    const FUNC_PROTO: u32 = 13;
    // Kinds whose type is another's: volatile, const, restrict, type tag.
    const MODIFIERS: [u32; 5] = [TYPEDEF, 9, 10, 11, 18];
    if blob.len() < 24 || blob[..2] != [0x9f, 0xeb] {
        return false;
    }
    let word = |at: usize| u32::from_le_bytes(blob[at..at + 4].try_into().unwrap());
    let header = word(4) as usize;
    let (types, strings) = (header + word(8) as usize, header + word(16) as usize);
    let name = |off: u32| {
        let start = strings + off as usize;
        let end = blob[start..].iter().position(|&b| b == 0).unwrap() + start;
        &blob[start..end]
    };
    // (kind, name offset, size or type, offset of the data after it), by id.
    let mut all = vec![(0, 0, 0, 0)]; // id 0 is void
    let mut at = types;
    while at < types + word(12) as usize {
        let info = word(at + 4);
        let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
        all.push((kind, word(at), word(at + 8), at + 12));
        at += 12
            + match kind {
                1 | 14 | 17 => 4,        // int, var, decl tag
                3 => 12,                 // array
                4 | 5 | 15 => 12 * vlen, // struct, union, datasec
                6 | 13 => 8 * vlen,      // enum, func proto
                19 => 12 * vlen,         // enum64
                _ => 0,
            };
    }
    let typedef = format!("btf_trace_{tp}");
    let Some(&(_, _, pointer, _)) = all
        .iter()
        .find(|t| t.0 == TYPEDEF && name(t.1) == typedef.as_bytes())
    else {
        return false;
    };
    let (kind, _, proto, _) = all[pointer as usize];
    assert_eq!(kind, PTR, "{typedef} is a pointer");
    let (kind, _, _, params) = all[proto as usize];
    assert_eq!(kind, FUNC_PROTO, "{typedef} points to a prototype");
    // The second parameter (after `void *data`): its type id.
    let mut ty = word(params + 8 + 4);
    while MODIFIERS.contains(&all[ty as usize].0) {
        ty = all[ty as usize].2;
    }
    all[ty as usize].0 == PTR
}
