"""The closing report of ``rayrlhf pipeline`` and ``rayrlhf train``: what each stage achieved and
where the trained model is, in a few lines a person reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# How the report names each online algorithm (algorithm.name), as the papers spell them.
ALGORITHM_TITLES = {
    "ppo": "PPO",
    "grpo": "GRPO",
    "dr_grpo": "Dr. GRPO",
    "dapo": "DAPO",
    "rloo": "RLOO",
    "reinforce_pp": "REINFORCE++",
}
STAGE_TITLES = {"sft": "SFT", "reward_model": "reward model", "dpo": "DPO", "ilql": "ILQL"}


def _fmt(value: Any, spec: str = ".3f") -> str:
    return format(value, spec) if isinstance(value, int | float) else "n/a"


def stage_title(stage: str, summary: dict[str, Any]) -> str:
    """A stage as a person calls it; the online stage ("ppo") by the algorithm that ran."""
    if stage == "ppo":
        name = str(summary.get("algorithm", "ppo"))
        return ALGORITHM_TITLES.get(name, name.upper())
    return STAGE_TITLES.get(stage, stage)


def trained_stage(summaries: dict[str, dict[str, Any]]) -> str:
    """The stage whose model is the result: the last one (the pipeline's third, or train's)."""
    return next((s for s in ("dpo", "ilql", "ppo") if s in summaries), "ppo")


def format_summary(
    summaries: dict[str, dict[str, Any]], run_dir: Path, pipeline: bool = True
) -> str:
    """Held-out figures per stage, before/after examples of the trained policy, and where it
    was saved.

    ``pipeline``: the stages ran in ``run_dir/<stage>/`` (``rayrlhf pipeline``); False: one
    online run straight in ``run_dir`` (``rayrlhf train``), which is what the heading names.
    """
    last = trained_stage(summaries)
    title = stage_title(last, summaries.get(last, {}))
    if pipeline:
        ran = " → ".join(stage_title(s, summaries[s]) for s in summaries)
        lines = [f"=== RLHF pipeline ({ran}): {run_dir} ==="]
        model_dir = run_dir / last / "model"
    else:
        lines = [f"=== {title} run: {run_dir} ==="]
        model_dir = run_dir / "model"
    sft = summaries.get("sft")
    if sft:
        lines.append(
            f"SFT           held-out loss {_fmt(sft.get('eval/loss_before'))} → "
            f"{_fmt(sft.get('eval/loss'))} (perplexity {_fmt(sft.get('eval/perplexity'), '.2f')})"
            f", {int(sft['steps'])} steps on {int(sft['train_items'])} training items"
        )
    rm = summaries.get("reward_model")
    if rm:
        if "eval/accuracy" in rm:
            measure = (
                f"held-out accuracy {_fmt(rm['eval/accuracy'])} on {int(rm['eval/examples'])} "
                f"(before training {_fmt(rm.get('eval/accuracy_before'))})"
            )
        else:
            measure = f"held-out RMSE {_fmt(rm.get('eval/rmse'))}, MAE {_fmt(rm.get('eval/mae'))}"
        lines.append(f"Reward model  {measure}, {int(rm['steps'])} steps")
    if "dpo" in summaries:
        third = summaries["dpo"]
        label = f"{'DPO':<14}"
        trained = (
            f"held-out implicit-reward accuracy {_fmt(third.get('eval/accuracy'))}, "
            f"{int(third['steps'])} steps"
        )
    elif "ilql" in summaries:
        third = summaries["ilql"]
        label = f"{'ILQL':<14}"
        trained = (
            f"held-out ILQL loss {_fmt(third.get('eval/loss_before'))} → "
            f"{_fmt(third.get('eval/loss'))}, {int(third['steps'])} steps"
        )
    else:
        third = summaries.get("ppo", {})
        label = f"{title:<14}"  # the online stage's algorithm
        trained = f"{_fmt(third.get('train/kl_last'))} (last training step); "
        trained += f"{int(third['steps'])} steps" if "steps" in third else ""
    evals = third.get("eval")
    if evals:
        b, a = evals["before"], evals["after"]
        lines.append(
            f"{label}mean reward on {int(a['samples'])} held-out prompts: "
            f"{_fmt(b['reward/mean'])} ± {_fmt(b['reward/stderr'])} before → "
            f"{_fmt(a['reward/mean'])} ± {_fmt(a['reward/stderr'])} after "
            f"(paired gain {evals['gain']['mean']:+.3f} ± {evals['gain']['stderr']:.3f}; "
            f"{evals['gain']['improved']:.0%} of prompts improved)"
        )
        lines.append(
            f"              KL to the reference {_fmt(a.get('kl/mean'))} nats per response "
            f"(held-out), {trained}"
        )
        if "response/distinct_2" in a:  # how varied the continuations stay (1: no bigram twice)
            lines.append(
                f"              distinct-2 of the held-out continuations "
                f"{_fmt(b.get('response/distinct_2'), '.2f')} before → "
                f"{_fmt(a['response/distinct_2'], '.2f')} after"
            )
        for ex in evals["examples"]:
            lines.append(f"  prompt: {ex['prompt']!r}")
            lines.append(f"    before ({ex['before_reward']:+.2f}): {ex['before']!r}")
            lines.append(f"    after  ({ex['after_reward']:+.2f}): {ex['after']!r}")
    elif third:
        lines.append(
            f"{label}training reward {_fmt(third.get('train/reward_first'))} → "
            f"{_fmt(third.get('train/reward_last'))}, KL {_fmt(third.get('train/kl_last'))}"
        )
    lines.append(f"{'Model':<14}{title} policy saved in {model_dir}")
    return "\n".join(lines)
