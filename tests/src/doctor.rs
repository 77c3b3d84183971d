//! The kernel matrix's table of expectations, on the host: `sonde doctor`
//! here passes the same check vm-test applies to every guest, the features
//! doctor reports agree with the kernel's BTF as this test reads it itself,
//! and a program refused at load (the test switch) fails the check.

use std::process::Command;

use serde_json::Value;

use crate::privileged;

#[path = "../../xtask/src/vm/expect.rs"]
#[allow(dead_code)]
mod expect;

fn doctor(refuse: Option<&str>) -> Value {
    let mut cmd = Command::new(crate::sonde_bin());
    cmd.args(["doctor", "--json"]);
    if let Some(program) = refuse {
        cmd.env("SONDE_REFUSE_PROGRAMS", program);
    }
    let out = cmd.output().expect("run sonde doctor");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor --json: {e}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn doctor_is_as_the_kernel_allows_and_its_features_are_the_kernels() {
    if !privileged() {
        return;
    }
    let report = doctor(None);
    assert_eq!(
        expect::problems(&report),
        Vec::<String>::new(),
        "{report:#}"
    );
    let btf = std::fs::read("/sys/kernel/btf/vmlinux").expect(
        "this kernel has BTF (/sys/kernel/btf/vmlinux): every kernel sonde is tested on does",
    );
    let kernel = own_btf::Types::parse(&btf);
    // (tracepoint, parameter index after the context, whether a pointer)
    let param = |tracepoint: &str, index: usize, pointer: bool| {
        kernel
            .tracepoint_params(tracepoint)
            .unwrap_or_else(|| panic!("no tracepoint {tracepoint} in the kernel's BTF"))
            .get(index)
            == Some(&pointer)
    };
    let truth = [
        (
            "tcp_send_reset.reason",
            // tcp_send_reset(sk, skb, reason)
            param("tcp_send_reset", 2, false),
        ),
        // kfree_skb(skb, location, reason, rx_sk)
        ("kfree_skb.reason", param("kfree_skb", 2, false)),
        ("kfree_skb.rx_sk", param("kfree_skb", 3, true)),
        (
            "skb_drop_reason.TCP_LISTEN_OVERFLOW",
            kernel.has_string("SKB_DROP_REASON_TCP_LISTEN_OVERFLOW"),
        ),
        (
            "tracepoint.tcp_retransmit_synack",
            kernel.tracepoint_params("tcp_retransmit_synack").is_some(),
        ),
        (
            "tracepoint.mm_vmscan_memcg_reclaim_begin",
            kernel
                .tracepoint_params("mm_vmscan_memcg_reclaim_begin")
                .is_some(),
        ),
    ];
    for (feature, present) in truth {
        assert_eq!(
            report["kernel_features"][feature].as_bool(),
            Some(present),
            "{feature}: doctor says {}, the kernel's BTF {present}",
            report["kernel_features"][feature]
        );
    }
    // Every feature the table names is one this test checks.
    for allowed in expect::TABLE {
        assert!(
            truth.iter().any(|(f, _)| *f == allowed.when_missing),
            "{}",
            allowed.when_missing
        );
    }
}

#[test]
fn a_program_refused_at_load_fails_the_check_though_it_gives_a_reason() {
    if !privileged() {
        return;
    }
    // A family refused whole (both its hooks) is unavailable, and that
    // fails too.
    let report = doctor(Some("proc_exit_tp,proc_exit"));
    assert!(
        expect::problems(&report)
            .iter()
            .any(|p| p.starts_with("process: unavailable")),
        "{:?}",
        expect::problems(&report)
    );
    // The drop program is attached on its own: refusing it leaves tcp
    // degraded with a reason, as a verifier rejection would.
    let report = doctor(Some("tcp_skb_drop"));
    if report["kernel_features"]["kfree_skb.reason"] != true {
        // The drop program is not attached at all there.
        eprintln!("skipping the drop program's part: kfree_skb has no reason argument on this kernel (Linux 5.17+)");
        return;
    }
    let tcp = report["probes"]
        .as_array()
        .expect("probes")
        .iter()
        .find(|p| p["probe"] == "tcp")
        .expect("tcp");
    assert_eq!(tcp["state"], "degraded", "{tcp}");
    assert!(
        tcp["reason"]
            .as_str()
            .is_some_and(|r| r.contains("drops not counted")),
        "{tcp}"
    );
    let problems = expect::problems(&report);
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("tcp: tcp_drops, yet the kernel has kfree_skb.reason")),
        "{problems:?}"
    );
}

/// The few facts of the kernel's BTF this test needs, read by its own
/// code (a shared bug in sonde's reader would agree with itself).
mod own_btf {
    use std::collections::HashMap;

    pub struct Types<'a> {
        strings: &'a [u8],
        /// Per type id (1-based): (kind, name offset, type or size, extra).
        types: Vec<(u32, u32, u32, &'a [u8])>,
        by_name: HashMap<&'a [u8], u32>,
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    impl<'a> Types<'a> {
        pub fn parse(btf: &'a [u8]) -> Self {
            assert_eq!(&btf[..2], &[0x9f, 0xeb], "little-endian BTF magic");
            let hdr_len = u32_at(btf, 4) as usize;
            let (type_off, type_len) = (u32_at(btf, 8) as usize, u32_at(btf, 12) as usize);
            let (str_off, str_len) = (u32_at(btf, 16) as usize, u32_at(btf, 20) as usize);
            let types_bytes = &btf[hdr_len + type_off..hdr_len + type_off + type_len];
            let strings = &btf[hdr_len + str_off..hdr_len + str_off + str_len];
            let mut types = Vec::new();
            let mut at = 0;
            while at < types_bytes.len() {
                let name = u32_at(types_bytes, at);
                let info = u32_at(types_bytes, at + 4);
                let size_or_type = u32_at(types_bytes, at + 8);
                let kind = (info >> 24) & 0x1f;
                let vlen = (info & 0xffff) as usize;
                // Bytes that follow the 12-byte header, per kind (btf.h).
                let extra = match kind {
                    1 | 14 | 17 => 4,             // INT, VAR, DECL_TAG
                    3 => 12,                      // ARRAY
                    4 | 5 | 15 | 19 => vlen * 12, // STRUCT, UNION, DATASEC, ENUM64
                    6 | 13 => vlen * 8,           // ENUM, FUNC_PROTO
                    _ => 0,
                };
                let body = &types_bytes[at + 12..at + 12 + extra];
                types.push((kind, name, size_or_type, body));
                at += 12 + extra;
            }
            let mut by_name = HashMap::new();
            for (i, &(_, name, _, _)) in types.iter().enumerate() {
                by_name.entry(cstr(strings, name)).or_insert(i as u32 + 1);
            }
            Self {
                strings,
                types,
                by_name,
            }
        }

        pub fn has_string(&self, s: &str) -> bool {
            self.strings
                .split(|&b| b == 0)
                .any(|name| name == s.as_bytes())
        }

        /// For each parameter of a tracepoint's prototype (the typedef
        /// `btf_trace_<name>`: a pointer to a function whose first parameter
        /// is the context, left out here), whether it is a pointer; `None`
        /// when there is no such tracepoint. By position: the kernel's BTF
        /// keeps no names for a function pointer's parameters.
        pub fn tracepoint_params(&self, tracepoint: &str) -> Option<Vec<bool>> {
            let typedef = format!("btf_trace_{tracepoint}");
            let &id = self.by_name.get(typedef.as_bytes())?;
            let proto = self.strip(id, true);
            assert_eq!(proto.0, 13, "{typedef} is no function prototype");
            Some(
                proto
                    .3
                    .chunks(8)
                    .skip(1)
                    .map(|param| self.strip(u32_at(param, 4), false).0 == 2)
                    .collect(),
            )
        }

        /// The type `id` names under typedefs and qualifiers (and, with
        /// `through_pointer`, pointers).
        fn strip(&self, mut id: u32, through_pointer: bool) -> (u32, u32, u32, &'a [u8]) {
            loop {
                let ty = self.types[id as usize - 1];
                match ty.0 {
                    8..=11 | 18 => id = ty.2,
                    2 if through_pointer => id = ty.2,
                    _ => return ty,
                }
            }
        }
    }

    fn cstr(strings: &[u8], at: u32) -> &[u8] {
        let rest = &strings[at as usize..];
        &rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())]
    }
}
