#!/usr/bin/env python3
"""Builds every kustomize overlay under deploy/overlays and validates what comes out, without a
cluster: Kubernetes objects against the Kubernetes OpenAPI schemas (kubernetes-validate,
strict: unknown fields are errors), Flagger objects against the CRD schemas in
../shared/flagger/crd.yaml (also strict), and each agent config in a ConfigMap with
`meshmetrics validate`. Exits 1 on the first overlay that fails, listing every problem in it.

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


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else None
    schemas = crd_schemas()
    failed = False
    for overlay in sorted(os.listdir(OVERLAYS)):
        path = os.path.join(OVERLAYS, overlay)
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
                    env = dict(os.environ, NODE_NAME="node-a", HONEYCOMB_API_KEY="x")
                    v = subprocess.run(
                        [binary, "validate", "--config", f.name],
                        capture_output=True, text=True, env=env,
                    )
                    if v.returncode != 0:
                        problems.append(f"{name}: meshmetrics validate: {v.stdout}{v.stderr}")
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
