"""Renders deploy/helm/sonde with Helm's own template engine (Helm's Go SDK,
through the helm-python-sdk package: no helm binary exists in this project's
registries) and checks it against deploy/kubernetes.

usage: helm_render.py CHART MANIFESTS OUT

- lints the chart (warnings fail);
- renders the defaults in namespace `sonde` into OUT/default/ and checks
  that they are the same objects as MANIFESTS/*.yaml (comments aside);
- renders an agents-only install in namespace `obs` with an outside
  collector into OUT/agents-only/ and checks what changed.
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


main()
