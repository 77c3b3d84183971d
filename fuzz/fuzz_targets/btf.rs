//! BTF blobs as `/sys/kernel/btf/vmlinux` could hold them: parsed by the
//! agent's own reader, then asked what the agent asks (struct members,
//! tracepoint prototypes, enums), by the names the agent uses and by short
//! names a small blob can hold.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sonde::host::btf::Btf;

const STRUCTS: [&str; 4] = ["task_struct", "sock", "a", "b"];
const MEMBERS: [&str; 5] = ["pid", "comm", "sk_cgrp_data", "a", "b"];
const TRACEPOINTS: [&str; 3] = ["sched_switch", "kfree_skb", "a"];
const ENUMS: [&str; 3] = ["skb_drop_reason", "sk_rst_reason", "a"];

fuzz_target!(|blob: &[u8]| {
    let Ok(btf) = Btf::parse(blob) else {
        return;
    };
    for s in STRUCTS {
        for m in MEMBERS {
            let _ = btf.member(s, m);
        }
    }
    for tp in TRACEPOINTS {
        for index in 0..4 {
            let _ = btf.tracepoint_arg_is_pointer(tp, index);
        }
    }
    for e in ENUMS {
        if let Some(values) = btf.enum_values(e) {
            for (_, name) in values {
                assert!(name.len() <= blob.len(), "a name comes from the blob");
            }
        }
    }
});
