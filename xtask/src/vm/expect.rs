//! What the kernel matrix accepts of `sonde doctor --json`: one table of the
//! gaps a family may have, each allowed only when the kernel lacks the
//! feature that explains it, as read from the kernel's BTF (doctor's
//! `kernel_features`), never from its version string. Any other state fails
//! the run: a family unavailable, a gap the table does not name (a program
//! the verifier refused, say), a gap on a kernel that has the feature, or a
//! kernel lacking a feature while sonde claims to count what it needs.
//!
//! Pure, and used twice: by vm-test on each guest's doctor report, and by
//! the tests crate on the host's (`tests/src/doctor.rs` includes this file).

use serde_json::Value;

/// A gap a family may have, and the kernel feature whose absence allows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowed {
    pub probe: &'static str,
    pub gap: &'static str,
    pub when_missing: &'static str,
}

/// Every gap the matrix accepts. The features: argument lists of the
/// tracepoints' BTF prototypes (`btf_trace_<name>`), enumerators of the
/// kernel's enums, and the tracepoints' own existence.
pub const TABLE: &[Allowed] = &[
    // tcp_send_reset(sk, skb, reason) since 6.10; before, it fires only for
    // resets sent from a socket.
    Allowed {
        probe: "tcp",
        gap: "tcp_resets_without_socket",
        when_missing: "tcp_send_reset.reason",
    },
    Allowed {
        probe: "tcp",
        gap: "tcp_synack_retransmits",
        when_missing: "tracepoint.tcp_retransmit_synack",
    },
    // kfree_skb(skb, location, reason) since 5.17.
    Allowed {
        probe: "tcp",
        gap: "tcp_drops",
        when_missing: "kfree_skb.reason",
    },
    // kfree_skb(..., rx_sk) since 6.12.
    Allowed {
        probe: "tcp",
        gap: "tcp_listener_drops",
        when_missing: "kfree_skb.rx_sk",
    },
    // SKB_DROP_REASON_TCP_LISTEN_OVERFLOW since 6.15.
    Allowed {
        probe: "tcp",
        gap: "tcp_listen_overflows",
        when_missing: "skb_drop_reason.TCP_LISTEN_OVERFLOW",
    },
    Allowed {
        probe: "memory",
        gap: "memory_cgroup_reclaim",
        when_missing: "tracepoint.mm_vmscan_memcg_reclaim_begin",
    },
];

/// Everything in a doctor report that the table does not accept, one line
/// each; empty when the report is as this kernel allows.
pub fn problems(doctor: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let Some(probes) = doctor.get("probes").and_then(Value::as_array) else {
        return vec!["doctor gave no probe states".to_owned()];
    };
    if probes.is_empty() {
        out.push("doctor listed no probe family".to_owned());
    }
    let feature = |name: &str| {
        doctor
            .get("kernel_features")
            .and_then(|f| f.get(name))
            .and_then(Value::as_bool)
    };
    for allowed in TABLE {
        if feature(allowed.when_missing).is_none() {
            out.push(format!(
                "doctor does not say whether the kernel has {}",
                allowed.when_missing
            ));
        }
    }
    for p in probes {
        let text = |key: &str| p.get(key).and_then(Value::as_str).unwrap_or("");
        let (probe, state, reason) = (text("probe"), text("state"), text("reason"));
        let gaps: Vec<&str> = p
            .get("gaps")
            .and_then(Value::as_array)
            .map(|g| g.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        match state {
            "attached" if gaps.is_empty() => {}
            "attached" => out.push(format!("{probe}: attached, yet names gaps {gaps:?}")),
            "degraded" if gaps.is_empty() => {
                out.push(format!("{probe}: degraded with no named gap: {reason}"));
            }
            "degraded" => {}
            other => out.push(format!("{probe}: {other}: {reason}")),
        }
        for gap in &gaps {
            match TABLE.iter().find(|a| a.probe == probe && a.gap == *gap) {
                None => out.push(format!(
                    "{probe}: {gap} is not a gap any missing kernel feature explains: {reason}"
                )),
                Some(a) if feature(a.when_missing) == Some(true) => out.push(format!(
                    "{probe}: {gap}, yet the kernel has {}: {reason}",
                    a.when_missing
                )),
                Some(_) => {}
            }
        }
        for a in TABLE.iter().filter(|a| a.probe == probe) {
            if feature(a.when_missing) == Some(false) && !gaps.contains(&a.gap) {
                out.push(format!(
                    "{probe}: the kernel lacks {}, yet sonde does not say it misses {}",
                    a.when_missing, a.gap
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features(missing: &[&str]) -> Value {
        let mut f = serde_json::Map::new();
        for a in TABLE {
            f.insert(
                a.when_missing.to_owned(),
                Value::Bool(!missing.contains(&a.when_missing)),
            );
        }
        Value::Object(f)
    }

    fn report(missing: &[&str], tcp: Value) -> Value {
        serde_json::json!({
            "probes": [
                {"probe": "syscalls", "state": "attached", "hook": "raw_tracepoint:sys_enter", "reason": null},
                {"probe": "memory", "state": "attached", "hook": "raw_tracepoint:x", "reason": null},
                tcp,
            ],
            "kernel_features": features(missing),
        })
    }

    #[test]
    fn a_kernel_with_everything_has_every_family_whole() {
        let tcp = serde_json::json!({"probe": "tcp", "state": "attached", "reason": null});
        assert_eq!(problems(&report(&[], tcp)), Vec::<String>::new());
    }

    #[test]
    fn a_gap_is_accepted_only_where_its_feature_is_missing() {
        let tcp = serde_json::json!({"probe": "tcp", "state": "degraded",
            "reason": "no TCP_LISTEN_OVERFLOW", "gaps": ["tcp_listen_overflows"]});
        let on_6_12 = report(&["skb_drop_reason.TCP_LISTEN_OVERFLOW"], tcp.clone());
        assert_eq!(problems(&on_6_12), Vec::<String>::new());
        let on_6_18 = report(&[], tcp);
        assert_eq!(problems(&on_6_18).len(), 1, "{:?}", problems(&on_6_18));
        assert!(problems(&on_6_18)[0].contains("yet the kernel has"));
    }

    #[test]
    fn a_refused_program_fails_even_with_a_reason() {
        // kfree_skb has its reason (6.12), but the drop program failed to
        // load: a gap no missing feature explains.
        let tcp = serde_json::json!({"probe": "tcp", "state": "degraded",
            "reason": "drops not counted: verifier refused", "gaps": ["tcp_drops"]});
        let p = problems(&report(&[], tcp));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].contains("yet the kernel has kfree_skb.reason"),
            "{p:?}"
        );
        // Degraded with words but no named gap: not accepted either.
        let tcp = serde_json::json!({"probe": "tcp", "state": "degraded", "reason": "something"});
        assert!(problems(&report(&[], tcp))[0].contains("no named gap"));
        let tcp = serde_json::json!({"probe": "tcp", "state": "unavailable", "reason": "no BTF"});
        assert!(problems(&report(&[], tcp))[0].contains("tcp: unavailable: no BTF"));
    }

    #[test]
    fn a_missing_feature_must_show_as_its_gap() {
        let tcp = serde_json::json!({"probe": "tcp", "state": "attached", "reason": null});
        let p = problems(&report(&["tcp_send_reset.reason"], tcp));
        assert_eq!(
            p,
            vec!["tcp: the kernel lacks tcp_send_reset.reason, yet sonde does not say it misses tcp_resets_without_socket"]
        );
        let unknown = serde_json::json!({"probe": "tcp", "state": "degraded", "reason": "x",
            "gaps": ["tcp_something_new"]});
        assert!(problems(&report(&[], unknown))[0].contains("not a gap any missing kernel feature"));
        let silent = serde_json::json!({"probes": [], "kernel_features": {}});
        assert!(problems(&silent).len() > TABLE.len());
    }
}
