"""The tool demo's table: held-out accuracy before and after GRPO, with the calculator and
without it (the same model answering directly), on the same problems and sampling seeds.

    python -m rayrlhf.demo.arith_report launch/configs/arith_tools.yaml

Reads the finished pipeline's held-out evaluation (with the tool: its ``ppo/eval.json``),
evaluates the SFT and GRPO policies once more without the tool (``rollout.environment`` null, the
problems asking for the answer directly), and writes ``tool_table.json`` and ``tool_table.md``
into the run directory, with three example episodes (the tool's turns shown).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from rayrlhf.config import from_dict, load, to_dict
from rayrlhf.controller.heldout import evaluate_policies
from rayrlhf.loops.pipeline import eval_prompts, run_dir_of


def _cell(metrics: dict[str, Any]) -> str:
    return f"{metrics['reward/correct']:.3f} ± {metrics['reward/correct_stderr']:.3f}"


def episodes_to_show(pairs: list[dict[str, Any]], n: int = 3) -> list[dict[str, Any]]:
    """``n`` held-out episodes, before and after GRPO: first those GRPO turned from a wrong
    answer into a right one (in held-out order), then any others."""
    fixed = [p for p in pairs if p.get("reward/correct") == [0.0, 1.0]]
    return (fixed + [p for p in pairs if p not in fixed])[:n]


def shown(response: str) -> str:
    """An episode's text with the calculator's answers (observations, never trained on) marked
    ``⟦ … ⟧``: what the policy wrote is everything else."""
    return re.sub(r"(</calc>)( = [^\n]*)", r"\1⟦\2⟧", response)


def direct_config(config: Any, run_dir: Path, direct_prompts: str) -> Any:
    """The evaluation config without the tool: SFT policy, no environment, direct prompts."""
    tree = to_dict(config)
    tree["sft"] = tree["reward_model"] = None
    tree["model"]["policy"] = str((run_dir / "sft" / "model").resolve())
    tree["rollout"]["environment"] = None
    tree["rollout"]["max_new_tokens"] = tree["rollout"]["max_episode_tokens"] or 80
    tree["eval"]["prompts"] = {"path": direct_prompts}
    return from_dict(tree)


def report(config_path: str, overrides: list[str]) -> dict[str, Any]:
    """Evaluate without the tool, join with the pipeline's tool evaluation; the table."""
    config = load(config_path, overrides)
    run_dir = run_dir_of(config)
    with_tool = json.loads((run_dir / "ppo" / "eval.json").read_text())
    direct_path = str(Path(config.eval.prompts.path).with_name("prompts_direct.jsonl"))
    direct = direct_config(config, run_dir, direct_path)
    prompts, rows = eval_prompts(direct)
    before, after = evaluate_policies(direct, [str(run_dir / "ppo" / "model")], prompts, rows)
    table = {
        "with the tool": {"sft": with_tool["before"], "grpo": with_tool["after"]},
        "without (answering directly)": {"sft": before, "grpo": after},
    }
    lines = [
        f"| held-out accuracy (n = {len(prompts)}) | after SFT warm-up | after GRPO |",
        "| --- | --- | --- |",
        *(f"| {name} | {_cell(cells['sft'])} | {_cell(cells['grpo'])} |"
          for name, cells in table.items()),
    ]  # fmt: skip
    examples = episodes_to_show(with_tool.get("pairs") or with_tool.get("examples", []))
    out = {
        "table": {k: {s: m.get("reward/correct") for s, m in v.items()} for k, v in table.items()},
        "stderr": {
            k: {s: m.get("reward/correct_stderr") for s, m in v.items()} for k, v in table.items()
        },
        "markdown": "\n".join(lines),
        "gain": with_tool["gain"],
        "examples": examples,
    }
    (run_dir / "tool_table.json").write_text(json.dumps(out, indent=1))
    (run_dir / "tool_table.md").write_text(out["markdown"] + "\n")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    args = parser.parse_args(argv)
    out = report(args.config, args.overrides)
    print(out["markdown"])
    gain = out["gain"]
    print(
        f"paired gain in reward {gain['mean']:+.3f} ± {gain['stderr']:.3f}: "
        f"{gain['improved']:.0%} of the problems improved, {gain.get('worsened', 0):.0%} worsened"
    )
    print("\nEpisodes (the calculator's answers in ⟦ ⟧):")
    for ex in out["examples"]:
        print(f"\n--- {ex['prompt']}")
        print(f"after SFT  ({ex['before_reward']:+.2f}): {shown(ex['before'])}")
        print(f"after GRPO ({ex['after_reward']:+.2f}): {shown(ex['after'])}")


if __name__ == "__main__":
    main()
