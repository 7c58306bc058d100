"""A tiny PPO run scored by `rayrlhf serve-reward` on loopback: the in-process model's rewards."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import torch

from rayrlhf.loops.online import OnlineTrainer
from rayrlhf.rewards.model_scorer import ModelScorer
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


def test_rewards_over_http_equal_the_in_process_model_for_every_sample(
    ray_local, make_config, served_reward_model
):
    """Every sample of a 3-step PPO run scored over HTTP is logged, then scored again by the
    reward model in this process with one thread, as a reward actor: the same numbers, sample
    for sample. Equal rewards make equal runs, so the run equals one scored in process."""
    model, url = served_reward_model
    cfg = make_config(
        "reward.function=null",
        f"reward.url={url}",
        "run.name=rm-http",
        "run.num_steps=3",
        "run.log_samples=8",  # every sample of a step
        "rollout.prompts_per_step=8",
        "rollout.chunk_size=4",
        "reward.batch_size=3",  # several requests a chunk
    )
    trainer = OnlineTrainer(cfg)
    try:
        history = trainer.run()
    finally:
        trainer.shutdown()
    rows = [
        json.loads(line) for line in (trainer.run_dir / "samples.jsonl").read_text().splitlines()
    ]
    assert len(rows) == 3 * 8 and len({r["response"] for r in rows}) > 8  # the policy moved
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local = ModelScorer(str(model), batch_size=3)
        for chunk in range(3 * 2):  # as the reward worker saw them: a chunk (4) at a time
            part = rows[chunk * 4 : (chunk + 1) * 4]
            scores = local([r["prompt"] for r in part], [r["response"] for r in part])
            assert [r["reward"] for r in part] == scores, chunk
    finally:
        torch.set_num_threads(threads)
    means = [sum(r["reward"] for r in rows[s * 8 : (s + 1) * 8]) / 8 for s in range(3)]
    assert [m["reward/mean"] for m in history] == pytest.approx(means, abs=1e-7)  # float32 sums
