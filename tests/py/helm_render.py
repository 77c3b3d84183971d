"""Renders deploy/helm/sonde with Helm's own template engine (Helm's Go SDK,
through the helm-python-sdk package: no helm binary exists in this project's
registries) and checks it against deploy/kubernetes.

usage: helm_render.py CHART MANIFESTS OUT [PROMETHEUS_RULE]

- lints the chart (warnings fail);
- renders the defaults in namespace `sonde` into OUT/default/ and checks
  that they are the same objects as MANIFESTS/*.yaml (comments aside);
- renders an agents-only install in namespace `obs` with an outside
  collector into OUT/agents-only/ and checks what changed;
- with PROMETHEUS_RULE (the output of `sonde slo rules --format
  prometheus-operator`), renders remote write from the collector, then from
  the agents, with a header from a Secret and a store CA, a PodMonitor and
  that PrometheusRule's groups into OUT/remote-write/, and checks them.
Exits non-zero with the reason on any difference.
"""

import pathlib
import sys

import helm_python as helm
import yaml


def objects(texts):
    out = {}
    for text in texts:
        for doc in yaml.safe_load_all(text):
            if doc:
                meta = doc["metadata"]
                out[(doc["kind"], meta.get("namespace", ""), meta["name"])] = doc
    return out


def render(chart, values, namespace, out):
    out.mkdir(parents=True, exist_ok=True)
    with helm.Chart.load(chart) as c:
        manifests = c.render(values, name="sonde", namespace=namespace, is_install=True)
    for path, text in manifests.items():
        if text.strip():
            (out / pathlib.Path(path).name).write_text(text)
    return objects(manifests.values())


def fail(why):
    print(f"helm_render: {why}")
    sys.exit(1)


def main():
    chart, manifests, out = (pathlib.Path(a) for a in sys.argv[1:4])
    print(f"helm SDK {helm.helm_sdk_version()}")
    report = helm.lint(str(chart), namespace="sonde", strict=True)
    findings = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    if findings:
        fail(f"lint: {findings}")

    rendered = render(str(chart), {}, "sonde", out / "default")
    static = objects(p.read_text() for p in sorted(manifests.glob("*.yaml")))
    if set(rendered) != set(static):
        fail(f"objects differ: chart only {set(rendered) - set(static)}, "
             f"manifests only {set(static) - set(rendered)}")
    for key in sorted(static):
        if rendered[key] != static[key]:
            fail(f"{key} differs:\nchart: {rendered[key]}\nmanifests: {static[key]}")
    print(f"same objects: {len(static)}")

    values = {"collector": {"enabled": False},
              "agent": {"collectorUrl": "https://collector.example:7411"}}
    agents = render(str(chart), values, "obs", out / "agents-only")
    kinds = sorted(k[0] for k in agents)
    if any(k[0] == "Deployment" for k in agents) or any(k[1] not in ("", "obs") for k in agents):
        fail(f"agents-only: {sorted(agents)}")
    ds = agents[("DaemonSet", "obs", "sonde-agent")]
    args = ds["spec"]["template"]["spec"]["containers"][0]["args"]
    if "--collector=https://collector.example:7411" not in args:
        fail(f"agents-only args: {args}")
    print(f"agents-only: {' '.join(kinds)}")

    if len(sys.argv) > 4:
        remote_write(chart, pathlib.Path(sys.argv[4]), out)


def container(objs, kind, name):
    return objs[(kind, "sonde", name)]["spec"]["template"]["spec"]["containers"][0]


def remote_write(chart, rule_file, out):
    rule = yaml.safe_load(rule_file.read_text())
    url = "https://mimir.example/api/v1/push"
    values = {
        "remoteWrite": {
            "urls": [url],
            "headers": [{"name": "X-Scope-OrgID", "secret": "sonde-remote-write", "key": "tenant"}],
            "tlsSecret": "sonde-remote-write-tls",
            "queryUrl": "https://mimir.example/prometheus",
        },
        "podMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True, "groups": rule["spec"]["groups"]},
    }
    objs = render(str(chart), values, "sonde", out / "remote-write")
    collector = container(objs, "Deployment", "sonde-collector")
    agent = container(objs, "DaemonSet", "sonde-agent")
    want = [f"--remote-write-url={url}",
            "--remote-write-header=X-Scope-OrgID=$(SONDE_REMOTE_WRITE_HEADER_0)",
            "--remote-write-tls-ca=/etc/sonde/remote-write-tls/ca.crt",
            "--remote-write-queue-max-bytes=67108864"]
    if any(a not in collector["args"] for a in want + ["--store-url=https://mimir.example/prometheus"]):
        fail(f"collector remote-write args: {collector['args']}")
    if any(a.startswith("--remote-write") for a in agent["args"]):
        fail(f"agents write too while the collector does: {agent['args']}")
    env = {e["name"]: e for e in collector.get("env", [])}
    ref = env.get("SONDE_REMOTE_WRITE_HEADER_0", {}).get("valueFrom", {}).get("secretKeyRef")
    if ref != {"name": "sonde-remote-write", "key": "tenant"}:
        fail(f"header from the Secret: {collector.get('env')}")
    if "remote-write-tls" not in [m["name"] for m in collector["volumeMounts"]]:
        fail(f"store CA not mounted: {collector['volumeMounts']}")
    pm = objs[("PodMonitor", "sonde", "sonde-agent")]
    pod_labels = objs[("DaemonSet", "sonde", "sonde-agent")]["spec"]["template"]["metadata"]["labels"]
    if any(pod_labels.get(k) != v for k, v in pm["spec"]["selector"]["matchLabels"].items()):
        fail(f"PodMonitor selects {pm['spec']['selector']}, pods are {pod_labels}")
    if pm["spec"]["podMetricsEndpoints"][0]["port"] not in [p["name"] for p in agent["ports"]]:
        fail("PodMonitor port")
    pr = objs[("PrometheusRule", "sonde", "sonde-slo")]
    if pr["spec"]["groups"] != rule["spec"]["groups"] or pr["apiVersion"] != rule["apiVersion"]:
        fail("PrometheusRule groups differ from sonde slo rules'")

    values["remoteWrite"]["from"] = "agents"
    agents = render(str(chart), values, "sonde", out / "remote-write-agents")
    agent = container(agents, "DaemonSet", "sonde-agent")
    collector = container(agents, "Deployment", "sonde-collector")
    if any(a not in agent["args"] for a in want) or any(
            a.startswith(("--remote-write", "--store-url")) for a in collector["args"]):
        fail(f"from agents: agent {agent['args']}, collector {collector['args']}")
    env = [e["name"] for e in agent["env"]]
    if env != ["NODE_NAME", "SONDE_REMOTE_WRITE_HEADER_0"]:
        fail(f"agent env: {env}")
    groups = len(pr["spec"]["groups"])
    print(f"remote-write: collector and agents, PodMonitor, PrometheusRule of {groups} groups")


main()
