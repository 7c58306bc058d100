"""What the CLI checks before Ray starts, beyond the config's own validation: every check here
costs seconds and no actor, and fails with the dotted field and what is wrong (exit 2).

- every model and data path exists (the third stage's tables too);
- ``reward.function`` imports and names a callable; one that verifies answers has them
  (``data.answer_key`` or ``data.reasoning_gym``), with its packages installed;
- ``reward.model`` holds a sequence classifier, not a policy (whose score head would be random);
- every name in ``model.lora.target_modules`` names layers of the policy (peft only fails when
  none does, and then inside the learners);
- the trackers ``run.trackers`` names are installed, and an MLflow server it names answers;
- an online stage with fewer usable prompts than ``rollout.prompts_per_step`` repeats prompts
  within a step: allowed (tiny tests do it on purpose), with a one-line warning.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from pathlib import Path

from rayrlhf.config import Config, ConfigError, check_local_paths


def check_reward_function(spec: str) -> None:
    """Import ``module:attribute`` as a reward worker will; ConfigError naming what is wrong."""
    module_name, _, attr = spec.partition(":")
    # A reward worker starts in the run's working directory: so does this lookup.
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # the module's own import errors are the user's to see
        raise ConfigError(
            f"invalid config:\n  reward.function: cannot import module {module_name!r} "
            f"({type(err).__name__}: {err})"
        ) from None
    if not hasattr(module, attr):
        raise ConfigError(
            f"invalid config:\n  reward.function: module {module_name!r} has no attribute {attr!r}"
        )
    if not callable(getattr(module, attr)):
        raise ConfigError(f"invalid config:\n  reward.function: {spec} is not callable")


def check_verified_prompts(config: Config) -> None:
    """A reward that verifies answers has them: a reward function with a ``rows`` parameter
    needs ``data.answer_key`` or ``data.reasoning_gym`` (the task scorer the latter); the
    packages the sources and verifiers import are installed; a held-out task is not the
    training one under the same seed."""
    from rayrlhf.roles.reward import import_function, takes_rows

    d, spec = config.data, config.reward.function
    has_answers = d.answer_key is not None or d.reasoning_gym is not None
    if spec is not None and takes_rows(import_function(spec)) and not has_answers:
        raise ConfigError(
            f"invalid config:\n  reward.function: {spec} verifies answers: set data.answer_key "
            "(the prompts column holding each reference answer) or data.reasoning_gym"
        )
    if spec is not None and spec.endswith(":reasoning_gym_answer") and d.reasoning_gym is None:
        raise ConfigError(
            f"invalid config:\n  reward.function: {spec} scores reasoning-gym rows: set "
            "data.reasoning_gym"
        )
    needs = {"reasoning_gym": d.reasoning_gym or config.eval.reasoning_gym}
    needs["math_verify"] = spec is not None and spec.endswith(":math_answer")
    for package, needed in needs.items():
        if needed and importlib.util.find_spec(package) is None:
            raise ConfigError(
                f"invalid config: the config needs {package.replace('_', '-')}, which is not "
                "installed: pip install 'rayrlhf[reasoning]' (launch/setup.sh installs it)"
            )
    train, held = d.reasoning_gym, config.eval.reasoning_gym
    if train and held and (train.task, train.seed) == (held.task, held.seed):
        raise ConfigError(
            f"invalid config:\n  eval.reasoning_gym.seed: {held.seed} is data.reasoning_gym's "
            "seed: the held-out set would be the training set; give another seed"
        )


def check_reward_model_folder(path: str) -> None:
    """A policy folder given as ``reward.model`` would load with a random score head: refuse it
    from its ``config.json`` alone (no weights read), naming the likely mix-up."""
    meta = Path(path) / "config.json"
    if not meta.is_file():
        return  # not a local HF folder: the loader says what is wrong
    architectures = json.loads(meta.read_text()).get("architectures") or []
    if not architectures or any(a.endswith("ForSequenceClassification") for a in architectures):
        return
    raise ConfigError(
        f"invalid config:\n  reward.model: {path} holds {', '.join(architectures)}, not a "
        "trained reward model (its score head would be random): give a reward model's folder "
        "(a pipeline's reward_model/model), not a policy's (its sft/model)"
    )


def check_lora_targets(policy: str, targets: list[str]) -> None:
    """Each of LoRA's ``targets`` must name a module of the policy at ``policy`` (as peft
    matches: the whole name or its last dotted parts). Read from ``config.json`` into a model
    on the meta device: no weights, no memory."""
    meta = Path(policy) / "config.json"
    if not meta.is_file():
        return  # not a local HF folder: the loader says what is wrong
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(policy))
    names = [n for n, _ in model.named_modules()]
    missing = [t for t in targets if not any(n == t or n.endswith(f".{t}") for n in names)]
    if missing:
        leaves = sorted({n.rsplit(".", 1)[-1] for n in names if n and not n[-1].isdigit()})
        raise ConfigError(
            f"invalid config:\n  model.lora.target_modules: {', '.join(missing)} not in "
            f"{policy}; its modules are named {', '.join(leaves)}"
        )


def prompt_count_warning(config: Config) -> str | None:
    """A warning when a step is larger than the prompts file (each step would repeat prompts
    within itself); None when it is not."""
    from rayrlhf.data.prompts import prompt_table

    d, wanted = config.data, config.rollout.prompts_per_step
    prompts, _, _ = prompt_table(d)
    if len(prompts) >= wanted:
        return None
    source = f"data.prompts ({d.prompts})" if d.prompts else "data.reasoning_gym"
    return (
        f"warning: rollout.prompts_per_step is {wanted} but {source} has "
        f"{len(prompts)} usable prompts: each step repeats prompts within itself"
    )


def check_trackers(trackers: list[str], mlflow_uri: str) -> None:
    """``run.trackers``: each external tracker's package importable; an http(s) MLflow tracking
    URI answering its health check (a run would otherwise fail at its first log line, with its
    actors started)."""
    for name in ("mlflow", "wandb"):
        if name in trackers and importlib.util.find_spec(name) is None:
            raise ConfigError(
                f"run.trackers names {name}, which is not installed: pip install "
                f"'rayrlhf[trackers]' (or bash launch/setup.sh --trackers)"
            )
    if "mlflow" in trackers and mlflow_uri.startswith(("http://", "https://")):
        import urllib.request

        try:
            with urllib.request.urlopen(f"{mlflow_uri.rstrip('/')}/health", timeout=10) as r:
                r.read()
        except OSError as err:
            raise ConfigError(
                f"run.mlflow.tracking_uri: no MLflow server answers at {mlflow_uri} ({err})"
            ) from None


def check_before_start(config: Config, online: bool) -> list[str]:
    """Every check of this module (ConfigError on the first that fails); returns the warnings.
    ``online``: the run has an online (PPO-family) stage."""
    check_local_paths(config)
    if config.reward.function is not None:
        check_reward_function(config.reward.function)
    check_verified_prompts(config)
    if config.rollout.environment is not None:
        from rayrlhf.envs import load_environment

        try:
            load_environment(config.rollout.environment)
        except ValueError as err:
            raise ConfigError(f"invalid config:\n  {err}") from None
    if config.reward.model is not None:
        check_reward_model_folder(config.reward.model)
    lora = config.model.lora
    if lora is not None and lora.target_modules != "all-linear":
        check_lora_targets(config.model.policy, lora.target_modules)
    check_trackers(config.run.trackers, config.run.mlflow.tracking_uri)
    warning = prompt_count_warning(config) if online else None
    return [warning] if warning else []
