"""Command line: ``rayrlhf train CONFIG [--set key=value ...]``.

Connects to the cluster in ``RAY_ADDRESS`` when set, otherwise starts a local Ray itself.
"""

from __future__ import annotations

import argparse
import sys

from rayrlhf.config import ConfigError, check_local_paths, load
from rayrlhf.data.prompts import DataError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rayrlhf", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="run PPO (rollout, reward, reference, learner actors)")
    train.add_argument("config", help="YAML config file")
    train.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dotted override, e.g. --set rollout.num_workers=4 (repeatable)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code (2 for bad config or data)."""
    args = _parser().parse_args(argv)
    try:
        config = load(args.config, args.overrides)
        check_local_paths(config)
    except ConfigError as err:
        print(f"rayrlhf: {err}", file=sys.stderr)
        return 2
    from rayrlhf.loops.ppo import PPOTrainer  # imports torch, ray: after the config is known good

    try:
        trainer = PPOTrainer(config)
    except DataError as err:
        print(f"rayrlhf: {err}", file=sys.stderr)
        return 2
    history = trainer.run()
    last = history[-1]
    print(
        f"done: {len(history)} steps, reward/mean {history[0]['reward/mean']:.4f} → "
        f"{last['reward/mean']:.4f}, kl/mean {last['kl/mean']:.4f}; run dir {trainer.run_dir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
