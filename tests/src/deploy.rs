//! systemd units: they verify, and the agent's exact capability set (run as
//! an unprivileged user, as the unit does) attaches every family; with any one
//! capability fewer, `sonde doctor` names the missing one.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use crate::{privileged, sonde_bin};

fn unit(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/systemd")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The unit's `AmbientCapabilities=` list, lower-cased for capsh.
fn ambient_capabilities(unit: &str) -> Vec<String> {
    unit.lines()
        .find_map(|l| l.strip_prefix("AmbientCapabilities="))
        .expect("AmbientCapabilities in the unit")
        .split_whitespace()
        .map(str::to_lowercase)
        .collect()
}

/// A world-readable copy of the sonde binary (the build directory may not be
/// reachable by an unprivileged user).
fn public_sonde(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).expect("temp dir");
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
    let bin = dir.join("sonde");
    std::fs::copy(sonde_bin(), &bin).expect("copy sonde");
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod sonde");
    bin
}

/// `sonde doctor` as user nobody holding exactly `caps` (ambient).
fn doctor_as_nobody(bin: &Path, caps: &[String]) -> (i32, String) {
    let (code, out, _) = as_nobody(caps, &format!("{} doctor", bin.display()));
    (code, out)
}

/// A shell command as user nobody holding exactly `caps` (ambient):
/// (exit code, stdout, stderr).
fn as_nobody(caps: &[String], command: &str) -> (i32, String, String) {
    let set = caps.join(",");
    let out = Command::new("capsh")
        .arg(format!(
            "--caps={set}+eip cap_setpcap,cap_setuid,cap_setgid+ep"
        ))
        .args(["--keep=1", "--user=nobody"])
        .arg(format!("--addamb={set}"))
        .args(["--", "-c"])
        .arg(format!("exec {command}"))
        .output()
        .expect("run capsh (cargo xtask setup installs libcap2-bin)");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn units_verify() {
    if crate::vm_lacks("systemd-analyze (systemd)") {
        return;
    }
    if !privileged() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("sonde-units-{}", std::process::id()));
    let bin = public_sonde(&dir);
    // systemd-analyze checks that ExecStart's binaries exist: point them at real ones.
    let agent =
        unit("sonde-agent.service").replace("/usr/bin/sonde ", &format!("{} ", bin.display()));
    let collector =
        unit("sonde-collector.service").replace("/usr/bin/sonde-collector", "/bin/true");
    std::fs::write(dir.join("sonde-agent.service"), agent).expect("write unit");
    std::fs::write(dir.join("sonde-collector.service"), collector).expect("write unit");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.join("sonde-agent.service"))
        .arg(dir.join("sonde-collector.service"))
        .output()
        .expect("run systemd-analyze");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_units_capabilities_are_enough_and_each_is_needed() {
    if crate::vm_lacks("systemd, capsh and setpriv") {
        return;
    }
    if !privileged() {
        return;
    }
    if !sonde::host::mounts::Mounts::current()
        .expect("mountinfo")
        .tracefs_ready()
    {
        // systemd mounts tracefs before the unit starts (After=sys-kernel-tracing.mount).
        sonde::host::mounts::mount_tracefs().expect("mount tracefs");
    }
    let caps = ambient_capabilities(&unit("sonde-agent.service"));
    assert_eq!(
        caps,
        [
            "cap_bpf",
            "cap_perfmon",
            "cap_dac_read_search",
            "cap_sys_ptrace"
        ]
    );
    let dir = std::env::temp_dir().join(format!("sonde-caps-{}", std::process::id()));
    let bin = public_sonde(&dir);

    let (code, out) = doctor_as_nobody(&bin, &caps);
    assert_eq!(code, 0, "every family attaches with the unit's set:\n{out}");
    assert!(
        !out.contains("unavailable") && !out.contains("degraded"),
        "{out}"
    );
    assert!(!out.contains("missing CAP_"), "{out}");

    for dropped in &caps {
        let fewer: Vec<String> = caps.iter().filter(|c| *c != dropped).cloned().collect();
        let (_, out) = doctor_as_nobody(&bin, &fewer);
        let name = dropped.to_uppercase();
        assert!(
            out.contains(&format!("missing {name}")),
            "without {name}, doctor says:\n{out}"
        );
    }

    // The unit's --pin: in a directory its ExecStartPre gives the service's
    // user, that user pins, and the next start adopts what it pinned.
    let unit = unit("sonde-agent.service");
    assert!(
        unit.contains("ExecStartPre=+/usr/bin/install -d -m 0700 -o sonde-agent /sys/fs/bpf/sonde")
    );
    assert!(unit.contains("sonde agent --pin /sys/fs/bpf/sonde "));
    // Unpinned on drop, whatever happens.
    let pin_dir = crate::pin::PinDir::new("caps");
    let pins = PathBuf::from(pin_dir.arg());
    let state = dir.join("state");
    for (path, mode) in [(&pins, "0700"), (&state, "0700")] {
        let ok = Command::new("install")
            .args(["-d", "-m", mode, "-o", "nobody"])
            .arg(path)
            .status()
            .expect("install -d");
        assert!(ok.success());
    }
    let agent = format!(
        "timeout --preserve-status -s TERM 3 {} agent --probes syscalls --interval 1s --json --pin {} --state-dir {}",
        bin.display(),
        pins.display(),
        state.display()
    );
    let mut last_sequence = None;
    for expect in [
        "first start",
        "kept the programs the last agent left running",
    ] {
        let (code, out, err) = as_nobody(&caps, &agent);
        assert_eq!(code, 0, "{err}");
        assert!(err.contains(expect), "{err}");
        let windows: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON window"))
            .collect();
        let first = windows.first().expect("a window");
        // The second run's first window follows the first run's last.
        assert_eq!(
            first["restart"]["follows_sequence"].as_u64(),
            last_sequence,
            "{}",
            first["restart"]
        );
        last_sequence = windows.last().and_then(|w| w["sequence"].as_u64());
    }
    drop(pin_dir);
    assert!(!pins.exists(), "unpinned");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn kubernetes_manifests_validate_against_the_schemas() {
    if crate::vm_lacks("python3 with kubernetes-validate") {
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("deploy/kubernetes")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "{files:?}");
    let validate = |paths: &[PathBuf]| {
        Command::new(crate::python())
            .args(["-m", "kubernetes_validate", "--strict"])
            .args(paths)
            .output()
            .expect("run kubernetes-validate (cargo xtask setup installs it)")
    };
    let out = validate(&files);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    for kind in [
        "daemonset/sonde-agent",
        "deployment/sonde-collector",
        "service/sonde-collector",
        "poddisruptionbudget/sonde-collector",
    ] {
        assert!(
            text.contains(&format!("passed for resource {kind}")),
            "{kind}: {text}"
        );
    }
    // The validator does reject a broken manifest (a DaemonSet without a selector).
    let broken = std::env::temp_dir().join(format!("sonde-broken-{}.yaml", std::process::id()));
    std::fs::write(&broken, "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: x\nspec:\n  template: {}\n  bogus: 1\n")
        .expect("write");
    let out = validate(std::slice::from_ref(&broken));
    let _ = std::fs::remove_file(&broken);
    assert!(!out.status.success(), "a broken manifest passed");
}

#[test]
fn daemonset_is_not_privileged_and_grants_the_units_capabilities() {
    if crate::vm_lacks("the repository's deploy/ files") {
        return;
    }
    let manifest = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/agent.yaml"),
    )
    .expect("agent.yaml");
    assert!(manifest.contains("privileged: false") && !manifest.contains("privileged: true"));
    assert!(manifest.contains("readOnlyRootFilesystem: true"));
    let add = manifest
        .lines()
        .find_map(|l| l.trim().strip_prefix("add: "))
        .expect("capabilities add list");
    let from_unit: Vec<String> = ambient_capabilities(&unit("sonde-agent.service"))
        .iter()
        .map(|c| format!("\"{}\"", c.trim_start_matches("cap_").to_uppercase()))
        .collect();
    assert_eq!(
        add,
        format!("[{}]", from_unit.join(", ")),
        "the DaemonSet and the systemd unit grant the same set"
    );
}

#[test]
fn helm_chart_renders_the_manifests_and_validates() {
    if crate::vm_lacks("python3 with helm-python-sdk and kubernetes-validate") {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = tempfile::tempdir().expect("temp dir");
    // Helm's own engine (its Go SDK, shipped in the helm-python-sdk wheel):
    // lint, render the defaults and compare them with deploy/kubernetes,
    // render an agents-only install.
    // The chart's PrometheusRule holds what `sonde slo rules --format
    // prometheus-operator` writes for the example SLO.
    let config = out.path().join("sonde.toml");
    std::fs::write(
        &config,
        "[[slo]]\nname = \"web-open\"\nsignal = \"syscall.errors\"\nobjective_percent = 99.9\n\
         selector = { pod = \"shop/web\", syscalls = [\"openat\"] }\n",
    )
    .expect("config");
    let rules = Command::new(crate::sonde_bin())
        .args([
            "slo",
            "rules",
            "--format",
            "prometheus-operator",
            "--config",
        ])
        .arg(&config)
        .output()
        .expect("sonde slo rules");
    assert!(
        rules.status.success(),
        "{}",
        String::from_utf8_lossy(&rules.stderr)
    );
    let rule_file = out.path().join("prometheus-rule.yaml");
    std::fs::write(&rule_file, &rules.stdout).expect("rule file");
    let run = Command::new(crate::python())
        .arg(root.join("tests/py/helm_render.py"))
        .arg(root.join("deploy/helm/sonde"))
        .arg(root.join("deploy/kubernetes"))
        .arg(out.path())
        .arg(&rule_file)
        .output()
        .expect("run helm_render.py (cargo xtask setup installs helm-python-sdk)");
    let text =
        String::from_utf8_lossy(&run.stdout).into_owned() + &String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{text}");
    assert!(text.contains("same objects: 10"), "{text}");
    assert!(
        text.contains("agents-only: ConfigMap DaemonSet Namespace Secret ServiceAccount"),
        "{text}"
    );
    assert!(
        text.contains("remote-write: collector and agents, PodMonitor, PrometheusRule of 1 groups"),
        "{text}"
    );
    for case in ["default", "agents-only"] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(out.path().join(case))
            .expect("rendered manifests")
            .map(|e| e.expect("entry").path())
            .collect();
        files.sort();
        let check = Command::new(crate::python())
            .args(["-m", "kubernetes_validate", "--strict"])
            .args(&files)
            .output()
            .expect("run kubernetes-validate");
        let text = String::from_utf8_lossy(&check.stdout).into_owned()
            + &String::from_utf8_lossy(&check.stderr);
        assert!(check.status.success(), "{case}: {text}");
        assert!(
            text.contains("passed for resource daemonset/sonde-agent"),
            "{text}"
        );
    }
}

#[test]
fn the_slo_configmap_holds_a_valid_config_and_its_example_is_valid_too() {
    if crate::vm_lacks("the repository's deploy/ files") {
        return;
    }
    let manifest = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/slo-config.yaml"),
    )
    .expect("slo-config.yaml");
    // The `sonde.toml: |` block, unindented.
    let toml: String = manifest
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("sonde.toml: |"))
        .skip(1)
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    assert!(toml.contains("# [[slo]]"), "{toml}");
    let example: String = toml
        .lines()
        .map(|l| format!("{}\n", l.strip_prefix("# ").unwrap_or(l)))
        .collect();
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, text, count) in [("shipped", &toml, 0), ("example", &example, 1)] {
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, text).expect("write");
        let out = Command::new(sonde_bin())
            .args(["slo", "check", "--config"])
            .arg(&path)
            .output()
            .expect("run sonde slo check");
        let said = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}: {said}");
        assert!(said.contains(&format!("{count} SLO")), "{name}: {said}");
    }
}

#[test]
fn the_collector_runs_as_spread_replicas_behind_a_headless_service() {
    if crate::vm_lacks("the repository's deploy/ files") {
        return;
    }
    let manifest = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/collector.yaml"),
    )
    .expect("collector.yaml");
    let docs: Vec<&str> = manifest.split("\n---\n").collect();
    let doc = |kind: &str| {
        docs.iter()
            .find(|d| d.lines().any(|l| l == format!("kind: {kind}")))
            .unwrap_or_else(|| panic!("no {kind} in collector.yaml"))
            .lines()
            .map(str::trim)
            .collect::<Vec<_>>()
    };
    let deployment = doc("Deployment");
    assert!(deployment.contains(&"replicas: 2"), "{deployment:?}");
    assert!(deployment.contains(&"topologySpreadConstraints:"));
    assert!(deployment.contains(&"topologyKey: kubernetes.io/hostname"));
    // Agents resolve every replica through the Service's name.
    assert!(doc("Service").contains(&"clusterIP: None"));
    assert!(doc("PodDisruptionBudget").contains(&"minAvailable: 1"));
    // The agents' URL is that Service's name.
    let agent = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/agent.yaml"),
    )
    .expect("agent.yaml");
    assert!(agent.contains("--collector=https://sonde-collector.sonde.svc:7411"));
}
