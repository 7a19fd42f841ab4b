#!/usr/bin/env python3
"""Builds every kustomize overlay under deploy/overlays, and deploy/grafana, and validates what
comes out, without a cluster: Kubernetes objects against the Kubernetes OpenAPI schemas (kubernetes-validate,
strict: unknown fields are errors), Flagger objects against the CRD schemas in
../shared/flagger/crd.yaml (also strict), and each agent config in a ConfigMap with
`meshmetrics validate`. Then what keeps an install closed by default: every meshmetrics
workload is covered by a NetworkPolicy, every query façade (`promql` exporter) and every OTLP
receiver requires credentials, every MetricTemplate asking meshmetrics sends them
(`secretRef`), and no Service exposes zpages, health or self metrics. Exits 1 if any overlay
fails, listing every problem in it.

    python3 scripts/validate-manifests.py [path/to/meshmetrics]
"""
import os
import subprocess
import sys
import tempfile

import jsonschema
import kubernetes_validate
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OVERLAYS = os.path.join(ROOT, "deploy", "overlays")
CRDS = os.path.join(ROOT, "..", "shared", "flagger", "crd.yaml")
K8S_VERSION = "1.33.0"


def strict(schema):
    """A copy of a structural CRD schema where undeclared properties are errors, as the API
    server's strict field validation makes them."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


def crd_schemas():
    schemas = {}
    with open(CRDS) as f:
        for doc in yaml.safe_load_all(f):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            group = doc["spec"]["group"]
            kind = doc["spec"]["names"]["kind"]
            for v in doc["spec"]["versions"]:
                schema = strict(v["schema"]["openAPIV3Schema"])
                schemas[(f"{group}/{v['name']}", kind)] = schema
    return schemas


def selects(selector, labels):
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def closed_by_default(objects):
    """Problems with how an overlay's objects let callers in."""
    problems = []
    policies = [o for o in objects if o.get("kind") == "NetworkPolicy"]
    for o in objects:
        kind, name = o.get("kind"), o.get("metadata", {}).get("name", "")
        if kind in ("Deployment", "DaemonSet") and name.startswith("meshmetrics"):
            labels = o["spec"]["template"]["metadata"].get("labels", {})
            covered = [
                p for p in policies
                if selects(p["spec"]["podSelector"].get("matchLabels"), labels)
                and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
            ]
            if not covered:
                problems.append(f"{kind}/{name}: no NetworkPolicy governs who reaches it")
        if kind == "Service":
            for port in o["spec"].get("ports", []):
                target = str(port.get("targetPort", port.get("port")))
                if target in ("zpages", "health", "metrics", "55679", "13133", "8888"):
                    problems.append(f"Service/{name}: exposes {port.get('name')} ({target})")
        if kind == "ConfigMap" and "config.yaml" in o.get("data", {}):
            cfg = yaml.safe_load(o["data"]["config.yaml"]) or {}
            for eid, e in (cfg.get("exporters") or {}).items():
                if eid.split("/")[0] == "promql" and not (e or {}).get("auth"):
                    problems.append(f"ConfigMap/{name}: exporter {eid} has no auth")
            for rid, r in (cfg.get("receivers") or {}).items():
                if rid.split("/")[0] != "otlp":
                    continue
                for proto, p in ((r or {}).get("protocols") or {}).items():
                    if not (p or {}).get("auth"):
                        problems.append(f"ConfigMap/{name}: receiver {rid} {proto} has no auth")
        if kind == "MetricTemplate":
            provider = o["spec"].get("provider", {})
            if "meshmetrics" in provider.get("address", "") and not provider.get("secretRef"):
                problems.append(f"MetricTemplate/{name}: asks meshmetrics without secretRef")
    return problems


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else None
    schemas = crd_schemas()
    failed = False
    # The overlays, and the Grafana wiring applied beside any of them.
    paths = [(o, os.path.join(OVERLAYS, o)) for o in sorted(os.listdir(OVERLAYS))]
    paths.append(("grafana", os.path.join(ROOT, "deploy", "grafana")))
    for overlay, path in paths:
        built = subprocess.run(
            ["kubectl", "kustomize", path], capture_output=True, text=True
        )
        if built.returncode != 0:
            print(f"FAIL {overlay}: kubectl kustomize: {built.stderr.strip()}")
            failed = True
            continue
        problems = []
        objects = [d for d in yaml.safe_load_all(built.stdout) if d]
        for obj in objects:
            name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
            api = obj.get("apiVersion", "")
            if api.startswith("flagger.app/"):
                schema = schemas.get((api, obj.get("kind")))
                if schema is None:
                    problems.append(f"{name}: no CRD schema for {api} {obj.get('kind')}")
                    continue
                for err in jsonschema.Draft7Validator(schema).iter_errors(obj):
                    where = ".".join(str(p) for p in err.absolute_path)
                    problems.append(f"{name}: {where}: {err.message}")
                continue
            try:
                kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
            except kubernetes_validate.ValidationError as e:
                where = ".".join(str(p) for p in e.path)
                problems.append(f"{name}: {where}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError as e:
                problems.append(f"{name}: {e}")
            if binary and obj.get("kind") == "ConfigMap" and "config.yaml" in obj.get("data", {}):
                with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
                    f.write(obj["data"]["config.yaml"])
                    f.flush()
                    env = dict(
                        os.environ,
                        NODE_NAME="node-a",
                        HONEYCOMB_API_KEY="x",
                        QUERY_TOKEN="q",
                        OTLP_TOKEN="o",
                    )
                    v = subprocess.run(
                        [binary, "validate", "--config", f.name],
                        capture_output=True, text=True, env=env,
                    )
                    if v.returncode != 0:
                        problems.append(f"{name}: meshmetrics validate: {v.stdout}{v.stderr}")
        if overlay != "grafana":
            problems.extend(closed_by_default(objects))
        kinds = sorted({o["kind"] for o in objects})
        if problems:
            failed = True
            print(f"FAIL {overlay}:")
            for p in problems:
                print(f"  {p}")
        else:
            print(f"ok   {overlay}: {len(objects)} objects ({', '.join(kinds)})")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
