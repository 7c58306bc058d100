"""``rayrlhf pipeline``: SFT → reward model → PPO, each stage reading the one before.

Run directory::

    RUN_DIR/config.yaml               the whole pipeline config
    RUN_DIR/sft/model                 SFT'd policy (HF folder) — PPO's policy, reference, value
    RUN_DIR/reward_model/model        reward model (HF sequence classifier) — PPO's reward.model
    RUN_DIR/ppo/model                 the PPO-trained policy; ppo/eval.json before/after
                                      (dpo/ or ilql/ instead when the config has that section)
    RUN_DIR/<stage>/done.json         written last: the stage finished, with its fingerprint
    RUN_DIR/plots/*.png               curves of every stage

Re-running the command skips every stage whose ``done.json`` matches the stage's fingerprint
(its config, the data files' size and mtime, and for PPO its upstream stages'); a finished stage
whose config changed is an error, checked before anything runs; a stage that died half-way
resumes from its newest checkpoint (``RUN_DIR/<stage>/checkpoints``) or, without one, starts
again, and PPO runs again from scratch whenever a stage it reads from ran again.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from rayrlhf.checkpoint import POINTER
from rayrlhf.config import Config, from_dict, to_dict
from rayrlhf.config.results import fingerprint, stage_tree
from rayrlhf.controller.heldout import mean_std_stderr
from rayrlhf.data.prompts import prompt_extras
from rayrlhf.data.tables import load_rows
from rayrlhf.loops.done import DONE, finished_record, mark_done
from rayrlhf.resume import data_digests

OFFLINE = ("dpo", "ilql")  # third steps that learn from feedback rows, without rollouts


def third_stage(config: Config) -> str:
    """``dpo`` or ``ilql`` when the config has that section, else ``ppo`` (GRPO, RLOO, ...:
    its algorithm)."""
    return next((s for s in OFFLINE if getattr(config, s) is not None), "ppo")


def stage_names(config: Config) -> list[str]:
    """The stages a pipeline config runs, in order."""
    first = [s for s in ("sft", "reward_model") if getattr(config, s) is not None]
    return [*first, third_stage(config)]


def run_dir_of(config: Config) -> Path:
    """``run.output_dir / run.name``."""
    return Path(config.run.output_dir) / config.run.name


def third_stage_config(config: Config, run_dir: Path) -> Config:
    """The third stage's config (online, DPO or ILQL): policy from the SFT stage, reward model
    from the RM stage.

    The tokenizer follows the policy unless ``model.tokenizer`` names one.
    """
    tree = to_dict(config)
    tree["sft"], tree["reward_model"] = None, None
    if config.sft is not None:
        tree["model"]["policy"] = str((run_dir / "sft" / "model").resolve())
    if config.reward_model is not None:
        tree["reward"]["model"] = str((run_dir / "reward_model" / "model").resolve())
    return from_dict(tree)


def stage_parts(config: Config) -> dict[str, dict[str, Any]]:
    """Per stage, the part of the config tree that decides its result (the third stage: what it
    trains and evaluates, everything but the upstream stages)."""
    tree = to_dict(config)
    parts = {s: stage_tree(tree, s) for s in ("sft", "reward_model") if getattr(config, s)}
    parts[third_stage(config)] = stage_tree(tree, "ppo")
    return parts


def fingerprints(config: Config) -> dict[str, str]:
    """A hash per stage of everything that decides its result (upstream stages included), by
    :mod:`rayrlhf.config.results`' rule; data files by their contents, not their paths."""
    out: dict[str, str] = {}
    for stage, part in stage_parts(config).items():
        upstream = [out[s] for s in ("sft", "reward_model") if s in out and s != stage]
        out[stage] = fingerprint(part, *upstream, data_digests(part))
    return out


def finished(stage_dir: Path, fingerprint: str, part: dict[str, Any] | None = None) -> Any:
    """The stage's recorded summary if it finished with this fingerprint; None if not run.

    Raises :class:`ConfigError` when it finished with another config (naming the changed
    fields of ``part``), and clears a stage folder that has no ``done.json`` (a run that died
    part-way) so it restarts cleanly.
    """
    record = finished_record(stage_dir, fingerprint, part or {}, f"stage {stage_dir.name}")
    if record is not None:
        return record
    if (stage_dir / "checkpoints" / POINTER).exists():
        print(f"[pipeline] {stage_dir.name}: unfinished earlier run, resuming it")
    elif stage_dir.exists():
        print(f"[pipeline] {stage_dir.name}: unfinished earlier run, starting it again")
        shutil.rmtree(stage_dir)
    return None


def run_train(config: Config, run_dir: Path) -> tuple[dict[str, Any], bool]:
    """``rayrlhf train``: the online stage in ``run_dir``, unless it finished there already.

    Returns the summary and whether it was recorded earlier: a finished run is reported and
    left as it was (byte for byte); one finished with another config is refused (ConfigError,
    before Ray starts); ``run.resume=never`` starts it over.
    """
    fingerprint, part = fingerprints(config)["ppo"], stage_parts(config)["ppo"]
    if config.run.resume == "never":
        (run_dir / DONE).unlink(missing_ok=True)
    else:
        summary = finished_record(run_dir, fingerprint, part, f"run {config.run.name}")
        if summary is not None:
            return summary, True
    start = time.monotonic()
    summary = run_online_stage(config, run_dir)
    mark_done(run_dir, fingerprint, summary, time.monotonic() - start, part)
    return summary, False


def run_online_stage(config: Config, stage_dir: Path) -> dict[str, Any]:
    """PPO with held-out evaluation before and after; saves the policy to ``stage_dir/model``.

    The evaluation before training is kept in ``eval_before.json``: a resumed run compares
    against the policy it started from, not the one it resumed with.
    """
    from rayrlhf.loops.online import OnlineTrainer
    from rayrlhf.metrics import read_metrics

    trainer = OnlineTrainer(config, run_dir=stage_dir)
    before_file = stage_dir / "eval_before.json"
    try:
        prompts, rows = eval_prompts(config)
        before = None
        if prompts and trainer.resumed_from is not None and before_file.exists():
            before = json.loads(before_file.read_text())
        elif prompts and trainer.step == 0:
            before = trainer.evaluate(prompts, rows)
            before_file.write_text(json.dumps(before))
        trainer.run()
        after = trainer.evaluate(prompts, rows) if before is not None else None
        trainer.save_policy(stage_dir / "model")
    finally:
        trainer.shutdown()
    history = read_metrics(stage_dir)  # every step, also those before a resume
    last = history[-1]
    summary: dict[str, Any] = {
        "steps": len(history),
        "algorithm": config.algorithm.name,
        "train/reward_first": history[0]["reward/mean"],
        "train/reward_last": last["reward/mean"],
        "train/kl_last": last.get("kl/mean"),
    }
    if before is not None and after is not None:
        summary["eval"] = write_eval(stage_dir, eval_record(before, after, config.eval.examples))
    return summary


def run_offline_stage(config: Config, stage: str, stage_dir: Path) -> dict[str, Any]:
    """DPO or ILQL, then the same held-out comparison as PPO's: the starting (SFT) policy and
    the trained one on the same prompts and seeds, scored by the config's reward, KL to the
    start."""
    from rayrlhf.controller.heldout import evaluate_policies
    from rayrlhf.loops.dpo import run_dpo_stage
    from rayrlhf.loops.supervised import run_supervised_stage

    if stage == "dpo":
        summary = run_dpo_stage(config, stage_dir)
    else:
        summary = run_supervised_stage(config, stage, stage_dir)
    prompts, rows = eval_prompts(config)
    if prompts:
        before, after = evaluate_policies(config, [str(stage_dir / "model")], prompts, rows)
        summary["eval"] = write_eval(stage_dir, eval_record(before, after, config.eval.examples))
    return summary


def eval_prompts(config: Config) -> tuple[list[str], list[dict[str, Any]] | None]:
    """The first ``eval.num_prompts`` held-out prompts and their rows (None: text alone); no
    prompts when neither ``eval.prompts`` nor ``eval.reasoning_gym`` is set.

    With ``data.answer_key`` the held-out table's rows need their reference answer too (the
    same column name unless ``eval.prompts.columns`` maps ``answer``); a reasoning-gym task's
    held-out rows drop any question of the training task.
    """
    e, n = config.eval, config.eval.num_prompts
    if e.reasoning_gym is not None:
        from rayrlhf.data.reasoning_tasks import heldout_rows

        rows, dropped = heldout_rows(e.reasoning_gym, config.data.reasoning_gym)
        if dropped:
            print(f"[eval] {dropped} held-out questions are also training ones: left out")
        rows = rows[:n]
        return [r["prompt"] for r in rows], [prompt_extras(r) for r in rows]
    if e.prompts is None:
        return [], None
    answer_key = config.data.answer_key
    columns = {"answer": answer_key, **e.prompts.columns} if answer_key else e.prompts.columns
    table = e.prompts.model_copy(update={"limit": n, "columns": columns})
    rows, _ = load_rows(table, "verified_prompts" if answer_key else "prompts")
    extras = [prompt_extras(r) for r in rows] if answer_key else None
    return [r["prompt"] for r in rows], extras


def eval_record(before: dict, after: dict, examples: int) -> dict[str, Any]:
    """Before/after metrics, the paired gain, and every held-out prompt's pair of samples (same
    prompt, same sampling seed; ``examples`` of them printed at the end)."""
    b_samples, a_samples = before.pop("samples_text"), after.pop("samples_text")
    pairs = [
        {
            "prompt": b["prompt"],
            "before": b["response"],
            "before_reward": b["reward"],
            "after": a["response"],
            "after_reward": a["reward"],
            # The reward's named parts (a verifier's correct), before and after.
            **{k: [b[k], a[k]] for k in b if k.startswith("reward/")},
        }
        for b, a in zip(b_samples, a_samples, strict=True)
    ]
    # Same prompts, same seeds: the per-prompt difference has far less noise than either mean.
    diffs = [a["reward"] - b["reward"] for b, a in zip(b_samples, a_samples, strict=True)]
    mean, _, stderr = mean_std_stderr(diffs)
    gain = {
        "mean": mean,
        "stderr": stderr,
        "improved": sum(d > 0 for d in diffs) / len(diffs),
        "worsened": sum(d < 0 for d in diffs) / len(diffs),
    }
    record = {"before": before, "after": after, "gain": gain, "examples": pairs[:examples]}
    return {**record, "pairs": pairs}


def write_eval(stage_dir: Path, evals: dict[str, Any]) -> dict[str, Any]:
    """Write a stage's held-out record to ``eval.json``; the part its summary keeps (every
    held-out pair stays in ``eval.json`` alone, not again in ``done.json``)."""
    (stage_dir / "eval.json").write_text(json.dumps(evals, indent=1))
    return {k: v for k, v in evals.items() if k != "pairs"}


def run_pipeline(config: Config) -> dict[str, dict[str, Any]]:
    """Run every configured stage in order, skipping finished ones; returns their summaries.

    Every finished stage is checked against the config before anything runs or is written, so a
    refused run costs seconds and leaves the run directory as it was. PPO reads the models of
    both other stages: when either runs again, a finished PPO stage is stale and runs again too.
    """
    from rayrlhf.loops.supervised import run_supervised_stage

    run_dir = run_dir_of(config)
    prints, parts = fingerprints(config), stage_parts(config)
    stages = stage_names(config)
    third = stages[-1]
    if config.run.resume == "never":  # starting over is this explicit choice, never a default
        for stage in stages:
            shutil.rmtree(run_dir / stage, ignore_errors=True)
    done = {stage: finished(run_dir / stage, prints[stage], parts[stage]) for stage in stages}
    run_dir.mkdir(parents=True, exist_ok=True)
    if any(record is None for record in done.values()):  # a finished run stays as it was
        (run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
    summaries: dict[str, dict[str, Any]] = {}
    upstream_ran = False
    for stage in stages:
        stage_dir = run_dir / stage
        stale = stage == third and upstream_ran
        if done[stage] is not None and not stale:
            print(f"[pipeline] {stage}: finished earlier ({stage_dir}/done.json), skipping")
            summaries[stage] = done[stage]
            continue
        if stale and stage_dir.exists():  # finished or part-way, on the old upstream models
            print(f"[pipeline] {stage}: built on a stage that just ran again, redoing it")
            shutil.rmtree(stage_dir)
        print(f"[pipeline] {stage}: starting ({stage_dir})")
        upstream_ran = True
        start = time.monotonic()
        if stage == "ppo":
            summary = run_online_stage(third_stage_config(config, run_dir), stage_dir)
        elif stage in OFFLINE:
            summary = run_offline_stage(third_stage_config(config, run_dir), stage, stage_dir)
        else:
            summary = run_supervised_stage(config, stage, stage_dir)
        mark_done(stage_dir, prints[stage], summary, time.monotonic() - start, parts[stage])
        # A finished stage is never resumed (its model folder is what later stages read):
        # its checkpoints, gigabytes for a real model, go.
        shutil.rmtree(stage_dir / "checkpoints", ignore_errors=True)
        summaries[stage] = summary
    return summaries
