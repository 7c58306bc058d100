"""The launch files are checked, not only written: the cluster launcher's YAML against Ray's own
validation, the KubeRay RayJob against the resource's schema (launch/schemas/), and the SLURM
script through its dry run."""

import copy
import json
import os
import shlex
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

LAUNCH = Path(__file__).resolve().parents[2] / "launch"


def cluster_yaml() -> dict:
    return yaml.safe_load((LAUNCH / "cluster.yaml").read_text())


def test_cluster_yaml_passes_the_cluster_launchers_validation():
    # What `ray up` runs first: defaults filled in, then ray-schema.json and its own checks.
    validate_config(prepare_config(cluster_yaml()))


@pytest.mark.parametrize(
    "breakage",
    [
        lambda c: c.update(max_worker=2),  # misspelt top-level key
        lambda c: c.update(head_node_type="hed"),
        lambda c: c["available_node_types"]["gpu_worker"].update(min_workers=5),
        lambda c: c["available_node_types"]["head"].pop("node_config"),
    ],
)
def test_cluster_validation_catches_mistakes(breakage):
    broken = cluster_yaml()
    breakage(broken)
    with pytest.raises((jsonschema.ValidationError, ValueError)):
        validate_config(prepare_config(broken))


def test_cluster_yaml_keeps_its_security_defaults():
    c = cluster_yaml()
    head = " ".join(c["head_start_ray_commands"])
    assert "RAY_AUTH_MODE=token" in head and "--dashboard-host=127.0.0.1" in head
    assert "RAY_AUTH_MODE=token" in " ".join(c["worker_start_ray_commands"])
    assert c["provider"]["security_group"]["IpPermissions"] == []


def rayjob_validator() -> jsonschema.Draft202012Validator:
    schema = json.loads((LAUNCH / "schemas" / "rayjob.v1.schema.json").read_text())
    return jsonschema.Draft202012Validator(schema)


def rayjob() -> dict:
    return yaml.safe_load((LAUNCH / "kuberay-rayjob.yaml").read_text())


def test_kuberay_rayjob_matches_the_resource_schema():
    errors = [f"{e.json_path}: {e.message}" for e in rayjob_validator().iter_errors(rayjob())]
    assert errors == []
    spec = rayjob()["spec"]
    assert spec["entrypoint"].split()[:3] == ["python", "-m", "rayrlhf.cli"]
    assert yaml.safe_load(spec["runtimeEnvYAML"])["working_dir"]
    head = spec["rayClusterSpec"]["headGroupSpec"]
    assert head["serviceType"] == "ClusterIP" and head["rayStartParams"]["num-cpus"] == "0"
    for group in spec["rayClusterSpec"]["workerGroupSpecs"]:
        (container,) = group["template"]["spec"]["containers"]
        assert container["image"] and container["resources"]["limits"]["nvidia.com/gpu"] == 8


def _spec(doc: dict) -> dict:
    return doc["spec"]


@pytest.mark.parametrize(
    "breakage",
    [
        lambda d: _spec(d).update(shutdownAfterJobFinished=True),  # silently pruned by k8s
        lambda d: _spec(d).update(submissionMode="K8sMode"),
        lambda d: _spec(d).update(ttlSecondsAfterFinished="600"),
        lambda d: _spec(d)["rayClusterSpec"]["workerGroupSpecs"][0].pop("groupName"),
        lambda d: _spec(d)["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][
            0
        ].update(imagee="x"),
        lambda d: d.update(kind="RayCluster"),
    ],
)
def test_rayjob_schema_catches_mistakes(breakage):
    broken = copy.deepcopy(rayjob())
    breakage(broken)
    assert list(rayjob_validator().iter_errors(broken))


def dry_run(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    return subprocess.run(
        ["bash", str(LAUNCH / "slurm.sh"), "--dry-run", *args],
        cwd=LAUNCH.parent,
        env={**clean, **env},
        capture_output=True,
        text=True,
    )


def commands(out: str) -> list[list[str]]:
    """The '+ ...' lines of a dry run, split as the shell would."""
    return [shlex.split(line[2:].rstrip(" &")) for line in out.splitlines() if line[:2] == "+ "]


def test_slurm_dry_run_renders_head_workers_and_the_job(tmp_path):
    out = dry_run(
        "--nodelist", "gpu01,gpu02,gpu03", "--gpus-per-node", "4",
        "launch/configs/gpu_20b.yaml", "--set", "run.name=neox",
        PATH=f"{tmp_path}:{os.environ['PATH']}",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "# nodes: gpu01 gpu02 gpu03 (3); head: gpu01; workers: gpu02 gpu03" in out.stdout
    assert "export RAY_AUTH_MODE=token" in out.stdout
    cmds = commands(out.stdout)
    starts = [c for c in cmds if c[0] == "srun"]
    assert [c[c.index("-w") + 1] for c in starts] == ["gpu01", "gpu02", "gpu03"]
    head, *workers = starts
    assert "--head" in head and "--dashboard-host=127.0.0.1" in head and "--num-gpus=4" in head
    for w in workers:
        assert "--address=HEAD_IP:6379" in w and "--head" not in w
    job = next(c for c in cmds if c[0] == "env")
    assert job == [
        "env", "RAY_ADDRESS=HEAD_IP:6379", "python", "-m", "rayrlhf.cli", "train",
        "launch/configs/gpu_20b.yaml", "--set", "run.name=neox",
    ]  # fmt: skip
    assert cmds[-1] == ["ray", "stop"]


def test_slurm_dry_run_reads_the_allocation_and_refuses_bad_input(tmp_path):
    # Inside an allocation the nodes come from scontrol; a stand-in answers here.
    fake = tmp_path / "scontrol"
    fake.write_text("#!/bin/sh\nprintf 'a1\\na2\\n'\n")
    fake.chmod(0o755)
    out = dry_run(
        "launch/configs/gpu_7b.yaml",
        PATH=f"{tmp_path}:{os.environ['PATH']}",
        SLURM_JOB_NODELIST="a[1-2]",
        SLURM_GPUS_ON_NODE="2",
        COMMAND="pipeline",
    )
    assert out.returncode == 0, out.stderr
    assert "head: a1; workers: a2" in out.stdout and "--num-gpus=2" in out.stdout
    assert commands(out.stdout)[-2][5:7] == ["pipeline", "launch/configs/gpu_7b.yaml"]
    missing = dry_run("launch/configs/nope.yaml")
    assert missing.returncode == 2 and "config launch/configs/nope.yaml not found" in missing.stderr
    unknown = dry_run("--node", "x", "launch/configs/gpu_7b.yaml")
    assert unknown.returncode == 2 and "unknown option --node" in unknown.stderr
