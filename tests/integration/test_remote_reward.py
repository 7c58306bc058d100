"""A tiny PPO run scored by `rayrlhf serve-reward` on loopback: the in-process model's rewards."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from rayrlhf.loops.ppo import PPOTrainer
from rayrlhf.tiny_models import save_tiny_reward_model

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served_reward_model(tmp_path_factory):
    model = save_tiny_reward_model(tmp_path_factory.mktemp("rm") / "model")
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "rayrlhf.cli", "serve-reward", str(model), "--port", str(port)]
        + ["--threads", "1"],  # as a reward actor with num_cpus 1: the same float sums
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
                assert json.loads(reply.read())["status"] == "ok"
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"serve-reward did not start: {proc.communicate()[0]}")
            time.sleep(0.3)
    yield model, f"{url}/score"
    proc.terminate()
    proc.wait(30)


def test_rewards_over_http_equal_the_in_process_model_step_for_step(
    ray_local, make_config, served_reward_model
):
    model, url = served_reward_model
    rewards = {}
    for name, scorer in (("local", f"reward.model={model}"), ("http", f"reward.url={url}")):
        cfg = make_config(
            "reward.function=null",
            scorer,
            f"run.name=rm-{name}",
            "run.num_steps=2",
            "rollout.prompts_per_step=8",
            "rollout.chunk_size=4",
            "reward.batch_size=3",  # several requests a chunk
        )
        trainer = PPOTrainer(cfg)
        try:
            rewards[name] = [m["reward/mean"] for m in trainer.run()]
        finally:
            trainer.shutdown()
    assert rewards["http"] == rewards["local"]
    assert len(set(rewards["local"])) > 1  # the policy moved: not a constant reward
