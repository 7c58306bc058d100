"""Shared fixtures: a tiny model folder, a prompts file, configs, and one local Ray per session."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from rayrlhf import config as cfg_mod
from rayrlhf.tiny_models import save_tiny

PROMPTS = ["the movie was very", "a film is", "the plot", "this story was", "the actor is"]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random GPT-2 and word-level tokenizer saved as a Hugging Face folder."""
    return save_tiny(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tiny_vllm_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny GPT-2 with one head of 64 (vLLM's CPU attention takes no head size under 32)."""
    return save_tiny(tmp_path_factory.mktemp("tiny-vllm") / "model", heads=1)


@pytest.fixture(scope="session")
def prompts_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A JSONL prompts file."""
    path = tmp_path_factory.mktemp("data") / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    return path


@pytest.fixture
def make_config(tiny_model: Path, prompts_file: Path, tmp_path: Path):
    """Build a validated config for the tiny model; extra ``key=value`` overrides win."""

    def make(*overrides: str) -> cfg_mod.Config:
        base = [
            f"model.policy={tiny_model}",
            f"data.prompts={prompts_file}",
            "reward.function=rayrlhf.rewards.rules:target_word_frequency",
            f"run.output_dir={tmp_path}",
            "run.progress_bar=false",
            "rollout.max_new_tokens=8",
            "learner.policy_lr=1e-3",
            "learner.value_lr=1e-3",
        ]
        return cfg_mod.load(None, [*base, *overrides])

    return make


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the whole test session (integration tier)."""
    import ray

    # Logical CPUs, not cores: a module-scoped run may stay alive while other tests start theirs.
    ray.init(num_cpus=32, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """``mlflow server`` on a free loopback port with a SQLite store; its tracking URI."""
    root = tmp_path_factory.mktemp("mlflow")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mlflow = Path(sys.executable).with_name("mlflow")
    server = subprocess.Popen(
        [str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
         "--artifacts-destination", str(root / "artifacts")],
        stdout=subprocess.DEVNULL, stderr=(root / "server.log").open("w"),
        start_new_session=True,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2):
                break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError((root / "server.log").read_text()[-2000:]) from None
            time.sleep(0.5)
    yield uri
    os.killpg(server.pid, signal.SIGTERM)
    server.wait(30)
