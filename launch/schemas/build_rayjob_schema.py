"""Write ``rayjob.v1.schema.json`` from KubeRay's RayJob CRD, for ``tests/unit/test_launchers.py``.

    python launch/schemas/build_rayjob_schema.py PATH/TO/ray.io_rayjobs.yaml

The CRD (``ray-operator/config/crd/bases/ray.io_rayjobs.yaml`` in ray-project/kuberay, 1.4 MB)
is the resource's documented schema as the API server applies it. Two changes make it a check:

- **Unknown fields are errors.** The API server prunes fields a structural schema does not name,
  silently: a misspelt ``shutdownAfterJobFinished`` would just vanish and the cluster outlive
  its job. Every object that names its properties gets ``additionalProperties: false``, except
  where the CRD keeps unknown fields (``x-kubernetes-preserve-unknown-fields``) or is a map.
- **Small enough to commit.** Descriptions go; the Pod template, repeated for the head, each
  worker group and the submitter, is kept once under ``$defs``, and inside it the fields the
  launch files use (containers and their image, env, ports, resources, volume mounts; volumes,
  tolerations, node selection) keep their full schema while the rest of a PodSpec is dropped,
  so a field outside that list is flagged for review rather than passed unchecked.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

POD_SPEC_KEPT = {
    "containers", "volumes", "tolerations", "nodeSelector", "restartPolicy",
    "serviceAccountName", "imagePullSecrets", "securityContext",
    "terminationGracePeriodSeconds", "priorityClassName",
}  # fmt: skip
CONTAINER_KEPT = {
    "name", "image", "imagePullPolicy", "command", "args", "env", "envFrom", "ports",
    "resources", "volumeMounts", "securityContext", "workingDir",
}  # fmt: skip
# The submission modes KubeRay's RayJob documents (the CRD types the field as a plain string).
SUBMISSION_MODES = ["K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"]


def strip(node: Any) -> Any:
    """Drop descriptions; close every object that lists its properties."""
    if isinstance(node, list):
        return [strip(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: strip(v) for k, v in node.items() if k != "description"}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def pod_template(schema: dict) -> dict:
    """A PodTemplateSpec schema cut to the kept fields."""
    spec = schema["properties"]["spec"]
    props = {k: v for k, v in spec["properties"].items() if k in POD_SPEC_KEPT}
    item = props["containers"]["items"]
    item["properties"] = {k: v for k, v in item["properties"].items() if k in CONTAINER_KEPT}
    spec["properties"] = props
    return schema


def build(crd: dict) -> dict:
    """The RayJob v1 JSON schema (draft 2020-12) from the CRD document."""
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    root = strip(version["schema"]["openAPIV3Schema"])
    spec = root["properties"]["spec"]["properties"]
    cluster = spec["rayClusterSpec"]["properties"]
    pod = pod_template(cluster["headGroupSpec"]["properties"]["template"])
    ref = {"$ref": "#/$defs/podTemplate"}
    cluster["headGroupSpec"]["properties"]["template"] = ref
    cluster["workerGroupSpecs"]["items"]["properties"]["template"] = ref
    spec["submitterPodTemplate"] = ref
    spec["submissionMode"]["enum"] = SUBMISSION_MODES
    root["properties"]["apiVersion"] = {"const": "ray.io/v1"}
    root["properties"]["kind"] = {"const": "RayJob"}
    root["properties"]["metadata"] = {
        "type": "object",
        "required": ["name"],
        "properties": {"name": {"type": "string"}, "namespace": {"type": "string"}},
    }
    root["required"] = ["apiVersion", "kind", "metadata", "spec"]
    root.pop("additionalProperties", None)
    root["properties"].pop("status", None)  # written by the operator, never by a user
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "KubeRay RayJob (ray.io/v1), from the CRD",
        **root,
        "$defs": {"podTemplate": pod},
    }


if __name__ == "__main__":
    crd = yaml.safe_load(Path(sys.argv[1]).read_text())
    out = Path(__file__).with_name("rayjob.v1.schema.json")
    out.write_text(json.dumps(build(crd), sort_keys=True, separators=(",", ":")) + "\n")
    print(f"{out}: {out.stat().st_size} bytes")
