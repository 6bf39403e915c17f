"""hubcap's chart through the real Helm engine (Helm's Go SDK as a library,
from the PyPI package helm-python-sdk; Debian has no `helm`).

    python3 xtask/helm.py lint CHART [VALUES_JSON]
    python3 xtask/helm.py render CHART NAME NAMESPACE [VALUES_JSON]
    python3 xtask/helm.py install|upgrade CHART NAME NAMESPACE KUBECONFIG [VALUES_JSON]
    python3 xtask/helm.py uninstall NAME NAMESPACE KUBECONFIG
    python3 xtask/helm.py manifests CHART OUTDIR

`manifests` writes the plain manifests of deploy/kubernetes/ from the chart
with its default values (release and namespace `hubcap`).
"""

import json
import os
import sys

import helm_python as helm


def values(args, i):
    return json.loads(args[i]) if len(args) > i else None


def render(chart_dir, name, namespace, vals):
    chart = helm.Chart.load(chart_dir)
    rendered = chart.render(vals, name=name, namespace=namespace, is_install=True)
    docs = [text for path, text in sorted(rendered.items()) if text.strip() and not path.endswith(".txt")]
    return chart, docs


def main(args):
    command = args[0]
    if command == "lint":
        report = helm.lint(args[1], values(args, 2), strict=True)
        print(json.dumps(report))
        return 1 if report.get("errors") or any(m["severity"] >= 2 for m in report.get("messages", [])) else 0
    if command == "render":
        _, docs = render(args[1], args[2], args[3], values(args, 4))
        print("\n---\n".join(d.strip("\n") for d in docs))
        return 0
    if command in ("install", "upgrade"):
        chart_dir, name, namespace, kubeconfig = args[1:5]
        config = helm.Config(kubeconfig_path=kubeconfig, namespace=namespace)
        action = config.install if command == "install" else config.upgrade
        extra = {"create_namespace": True} if command == "install" else {}
        release = action(helm.Chart.load(chart_dir), name, values(args, 5), namespace=namespace, timeout=60, **extra)
        print(json.dumps({k: v for k, v in release.items() if k not in ("manifest", "chart", "config")}, default=str))
        return 0
    if command == "uninstall":
        name, namespace, kubeconfig = args[1:4]
        config = helm.Config(kubeconfig_path=kubeconfig, namespace=namespace)
        release = config.uninstall(name, timeout=60)
        print(json.dumps({k: v for k, v in (release or {}).items() if k not in ("manifest", "chart", "config")}, default=str))
        return 0
    if command == "manifests":
        chart_dir, out = args[1], args[2]
        chart = helm.Chart.load(chart_dir)
        rendered = chart.render(None, name="hubcap", namespace="hubcap", is_install=True)
        header = "# Generated from deploy/helm/hubcap with its default values by\n# `cargo xtask manifests`; edit the chart, not this file.\n"
        by_file = {os.path.basename(p): t.strip("\n") for p, t in rendered.items() if t.strip()}
        namespace = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: hubcap"
        files = {
            "rbac.yaml": by_file["rbac.yaml"],
            "daemonset.yaml": "\n---\n".join([namespace, by_file["daemonset.yaml"]] + [by_file[f] for f in ("services.yaml",) if f in by_file]),
            "crds.yaml": "\n".join(c["data"].strip("\n") for c in chart.crds),
        }
        for name, text in files.items():
            with open(os.path.join(out, name), "w") as f:
                f.write(header + text + "\n")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
