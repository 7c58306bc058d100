"""Environment workers as actors: a chunk's episodes of the sandboxed Python tool on two threads
of an environment worker, and the one error the rollout worker raises when that worker dies
(the driver replaces it; the survival tests show the run costs nothing)."""

from __future__ import annotations

import os
import signal

import pytest
from trained import pid_of

from rayrlhf import cluster
from rayrlhf.faults import EnvironmentLost, is_lost
from rayrlhf.roles.environment import RemoteEnvs

pytestmark = pytest.mark.integration

PYTHON = "rollout.environment=rayrlhf.envs.python_tool:PythonToolEnv"


def test_an_environment_worker_runs_the_python_tool_and_its_death_is_one_error(
    ray_local, make_config
):
    config = make_config(PYTHON, "env_workers.num_workers=1", "env_workers.num_cpus=2")
    group = cluster.env_groups(config)["environment"]
    try:
        [actor] = group.actors
        rows = [{"prompt": "What is 2**10?"}, {"prompt": "What is 3**4?"}]
        envs = RemoteEnvs(actor, "0-0", rows, ["0-0", "0-1"], timeout_s=60)
        assert envs.stop == ["</python>"] and envs.firsts[0].startswith("What is 2**10?\n")
        steps = envs.step(
            [0, 1], ["<python>print(2**10)</python>", "<python>1/0</python>"], [[], []]
        )
        assert steps[0].observation == "\nOutput: 1024\n" and steps[0].tool_errors == 0
        assert steps[1].tool_errors == 1 and "ZeroDivisionError" in steps[1].observation
        os.kill(pid_of(actor), signal.SIGKILL)
        with pytest.raises(
            EnvironmentLost, match="environment worker lost during chunk '0-0'"
        ) as e:
            envs.step([0], ["<python>print(1)</python>"], [[]])
        assert is_lost(e.value)  # a fault to recover from, not an error of the work
    finally:
        group.shutdown()
