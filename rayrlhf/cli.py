"""Command line.

    rayrlhf pipeline CONFIG [--set key=value ...]  SFT → reward model → PPO/GRPO/..., skipping done
                                                   stages
    rayrlhf train CONFIG [--set key=value ...]     run the online algorithm only (algorithm.name)
    rayrlhf plot RUN_DIR                           PNG curves of a run's stages
    rayrlhf label CONFIG --out DIR                 two responses per prompt, for people to rank
                                                   in Argilla (or prompts to answer: --task
                                                   completion)
    rayrlhf argilla EXPORT --out DIR               Argilla ranking export → pairwise + SFT rows
    rayrlhf scale RUN_NAME --rollout-workers N     resize a live run's rollout workers
    rayrlhf plan [--model 20b-preset ...]          per-GPU memory plan for a model and cluster
    rayrlhf serve-reward MODEL_DIR [--port 8000]   a reward model over HTTP (for reward.url)

``train`` connects to the cluster in ``RAY_ADDRESS`` when set, otherwise starts a local Ray
itself; ``scale`` connects to ``RAY_ADDRESS`` or, when unset, the Ray running on this machine.
"""

from __future__ import annotations

import argparse
import sys

from rayrlhf.config import ConfigError, check_local_paths, load
from rayrlhf.data.prompts import DataError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rayrlhf", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("pipeline", "SFT → reward model → PPO; re-running skips finished stages"),
        ("train", "run PPO only (rollout, reward, reference, learner actors)"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("config", help="YAML config file")
        cmd.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="dotted override, e.g. --set rollout.num_workers=4 (repeatable)",
        )
    scale = sub.add_parser("scale", help="resize a live run's rollout workers between steps")
    scale.add_argument("run_name", help="the run's run.name")
    scale.add_argument("--rollout-workers", type=int, required=True, metavar="N")
    scale.add_argument(
        "--address",
        default=None,
        help="Ray address; default: RAY_ADDRESS, else RUN_DIR/ray_address, else this machine's",
    )
    scale.add_argument("--output-dir", default="runs", help="the run's run.output_dir")
    for name, text in (
        ("plan", "per-GPU memory plan"),
        ("plot", "PNG curves of a run directory"),
        ("label", "write a labelling dataset for Argilla"),
        ("argilla", "convert an Argilla ranking export"),
        ("serve-reward", "serve a reward model over HTTP"),
    ):
        sub.add_parser(name, help=f"{text} (see `rayrlhf {name} --help`)", add_help=False)
    return parser


def _scale(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    if (Path.home() / ".ray" / "auth_token").exists():
        # Ray 2.60 heads (and local instances) require the token, and a client sends it only in
        # token mode, which Ray reads when it is imported.
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    import ray

    from rayrlhf.cluster import NAMESPACE, find_control

    run_name, count = args.run_name, args.rollout_workers
    if count < 1:
        print(f"rayrlhf: --rollout-workers must be at least 1, got {count}", file=sys.stderr)
        return 2
    if not ray.is_initialized():
        recorded = Path(args.output_dir) / run_name / "ray_address"
        address = args.address or os.environ.get("RAY_ADDRESS")
        if address is None and recorded.exists():
            address = recorded.read_text().strip()
        ray.init(address=address or "auto", namespace=NAMESPACE)
    try:
        control = find_control(run_name)
    except LookupError as err:
        print(f"rayrlhf: {err}", file=sys.stderr)
        return 2
    ray.get(control.request_rollout_workers.remote(count))
    print(
        f"requested {count} rollout workers for run {run_name!r}; status now: "
        f"{ray.get(control.status.remote())}"
    )
    return 0


# Commands with their own argument parsers, imported only when used.
DELEGATED = {
    "plan": "rayrlhf.planner",
    "plot": "rayrlhf.plots",
    "label": "rayrlhf.loops.label",
    "argilla": "rayrlhf.data.argilla",
    "serve-reward": "rayrlhf.rewards.server",
}


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code (2 for bad config or data)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] and argv[0] in DELEGATED:
        import importlib

        if argv[0] in ("label", "serve-reward"):  # they load models
            from rayrlhf.log_setup import quiet_libraries

            quiet_libraries()

        return importlib.import_module(DELEGATED[argv[0]]).main(argv[1:])
    args = _parser().parse_args(argv)
    if args.command == "scale":
        return _scale(args)
    try:
        config = load(args.config, args.overrides)
        check_local_paths(config)
        if args.command == "train" and (config.sft or config.reward_model):
            raise ConfigError(
                f"{args.config} has pipeline stages (sft, reward_model): run it with "
                "`rayrlhf pipeline`, or remove them to run PPO alone"
            )
    except ConfigError as err:
        print(f"rayrlhf: {err}", file=sys.stderr)
        return 2
    # torch, ray and friends are imported only once the config is known good.
    from rayrlhf.log_setup import quiet_libraries

    quiet_libraries()
    from rayrlhf.checkpoint import CheckpointError
    from rayrlhf.faults import RunFailed, RunStopped, one_line, write_error_log
    from rayrlhf.loops.pipeline import run_dir_of, run_online_stage, run_pipeline
    from rayrlhf.loops.summary import format_summary

    run_dir = run_dir_of(config)
    try:
        if args.command == "pipeline":
            summaries = run_pipeline(config)
        else:
            summaries = {"ppo": run_online_stage(config, run_dir)}
    except (ConfigError, DataError, CheckpointError) as err:
        # Raised in an actor, Ray re-raises it as a subclass of the original: print the cause.
        print(f"rayrlhf: {getattr(err, 'cause', None) or err}", file=sys.stderr)
        return 2
    except RunStopped as stop:
        print(f"rayrlhf: {stop}", file=sys.stderr)
        return stop.exit_code
    except RunFailed as err:
        # One line; the whole traceback is in the run directory's error.log.
        print(f"rayrlhf: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C twice, or before the first step began
        print("rayrlhf: interrupted; the newest checkpoint (if any) stands", file=sys.stderr)
        return 128 + 2
    except Exception as err:  # e.g. actors that failed to start: one line, the rest in a file
        log = write_error_log(run_dir, err)
        print(f"rayrlhf: {one_line(err)}; traceback in {log}", file=sys.stderr)
        return 1
    print(format_summary(summaries, run_dir))
    from rayrlhf.plots import plot_run

    for path in plot_run(run_dir):
        print(f"plot: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
