"""Command line: ``rayrlhf COMMAND ...``; ``rayrlhf COMMAND --help`` lists a command's options.

    rayrlhf pipeline CONFIG [--set key=value ...]  SFT → reward model → PPO/GRPO/... (or DPO,
                                                   ILQL), skipping finished stages
    rayrlhf train CONFIG [--set key=value ...]     one online algorithm: PPO, GRPO, Dr. GRPO,
                                                   DAPO, RLOO or REINFORCE++ (algorithm.name)
    rayrlhf plot RUN_DIR [--out DIR]               PNG curves of a run's stages
    rayrlhf label CONFIG --out DIR                 two responses per prompt, for people to rank
                                                   in Argilla (or prompts to answer: --task
                                                   completion)
    rayrlhf argilla EXPORT --out DIR               Argilla ranking export → pairwise + SFT rows
    rayrlhf scale RUN_NAME --rollout-workers N     resize a live run's rollout workers
    rayrlhf plan [CONFIG] [--model 20b ...]      per-GPU memory plan for a config or model
    rayrlhf serve-reward MODEL_DIR [--port 8000]   a reward model over HTTP (for reward.url)

``train`` connects to the cluster in ``RAY_ADDRESS`` when set, otherwise starts a local Ray
itself; ``scale`` connects to ``RAY_ADDRESS``, else the Ray the run recorded in
``RUN_DIR/ray_address``, else the Ray running on this machine.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rayrlhf.config import ConfigError, load
from rayrlhf.console import plain_when_redirected
from rayrlhf.data.prompts import DataError
from rayrlhf.preflight import check_before_start

ONLINE = "PPO, GRPO, Dr. GRPO, DAPO, RLOO or REINFORCE++"


def version() -> str:
    """The installed package's version; the source tree's ``__version__`` when not installed."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("rayrlhf")
    except PackageNotFoundError:
        import rayrlhf

        return getattr(rayrlhf, "__version__", "unknown")


def _parser() -> argparse.ArgumentParser:
    # Raw description: the command table above keeps its lines (the default reflows it into one
    # paragraph); the plain-text help shows `code` where the docstring has ``code``.
    parser = argparse.ArgumentParser(
        prog="rayrlhf",
        description=__doc__.replace("``", "`"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"rayrlhf {version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        (
            "pipeline",
            "SFT → reward model → an online algorithm, DPO or ILQL; re-running skips finished "
            "stages",
        ),
        ("train", f"run one online algorithm ({ONLINE}; the config's algorithm section chooses)"),
    ):
        cmd = sub.add_parser(name, help=text, description=text)
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


def recorded_address(run_dir: Path) -> Path | None:
    """The ``ray_address`` file a run wrote, newest first: ``train`` writes it in the run
    folder, a pipeline's online stage in its stage folder (``RUN_DIR/ppo``)."""
    found = [p for p in (run_dir / "ray_address", run_dir / "ppo" / "ray_address") if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime, default=None)


def ray_address(args: argparse.Namespace) -> tuple[str, str]:
    """The Ray ``scale`` connects to and where that came from (named if it cannot connect)."""
    import os

    if args.address:
        return args.address, "--address"
    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"], "RAY_ADDRESS"
    recorded = recorded_address(Path(args.output_dir) / args.run_name)
    if recorded is not None:
        return recorded.read_text().strip(), str(recorded)
    return "auto", "this machine"


def _scale(args: argparse.Namespace) -> int:
    import contextlib
    import os

    if (Path.home() / ".ray" / "auth_token").exists():
        # Ray 2.60 heads (and local instances) require the token, and a client sends it only in
        # token mode, which Ray reads when it is imported.
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    import ray

    from rayrlhf.control import NAMESPACE, find_control
    from rayrlhf.local_ray import loopback_node

    run_name, count = args.run_name, args.rollout_workers
    if count < 1:
        print(f"rayrlhf: --rollout-workers must be at least 1, got {count}", file=sys.stderr)
        return 2
    if not ray.is_initialized():
        address, source = ray_address(args)
        try:
            # A run's own local Ray records a 127.0.0.1 address: join it as a loopback node.
            local = address.split(":")[0] in ("127.0.0.1", "localhost")
            with loopback_node() if local else contextlib.nullcontext():
                ray.init(address=address, namespace=NAMESPACE)
        except ConnectionError:  # Ray's word for "nothing there": no traceback, one line
            where = "on this machine" if address == "auto" else f"at {address} (from {source})"
            print(
                f"rayrlhf: no Ray running {where}, so no run {run_name!r} to scale; is it still "
                "running? (--address or RAY_ADDRESS names its cluster)",
                file=sys.stderr,
            )
            return 1
    try:
        control = find_control(run_name)
    except LookupError as err:
        print(f"rayrlhf: {err}", file=sys.stderr)
        return 2
    try:
        ray.get(control.request_rollout_workers.remote(count))
        status = ray.get(control.status.remote())
    except ray.exceptions.RayError as err:  # the run ended between finding it and asking
        first = str(err).strip().splitlines()[:1] or [type(err).__name__]
        print(f"rayrlhf: run {run_name!r} did not take the request: {first[0]}", file=sys.stderr)
        return 1
    print(f"requested {count} rollout workers for run {run_name!r}; status now: {status}")
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
        if args.command == "train" and (config.sft or config.reward_model):
            raise ConfigError(
                f"{args.config} has pipeline stages (sft, reward_model): run it with "
                "`rayrlhf pipeline`, or remove them to run the online stage alone"
            )
        online = args.command == "train" or (config.dpo is None and config.ilql is None)
        for warning in check_before_start(config, online):
            print(f"rayrlhf: {warning}", file=sys.stderr)
    except (ConfigError, DataError) as err:
        print(f"rayrlhf: {err}", file=sys.stderr)
        return 2
    # torch, ray and friends are imported only once the config is known good.
    from rayrlhf.log_setup import quiet_libraries

    quiet_libraries()
    plain_when_redirected()  # before Ray starts forwarding its actors' coloured log lines
    from rayrlhf.checkpoint import CheckpointError
    from rayrlhf.faults import RunFailed, RunStopped, one_line, write_error_log
    from rayrlhf.loops.pipeline import run_dir_of, run_pipeline, run_train
    from rayrlhf.loops.summary import format_summary

    run_dir = run_dir_of(config)
    earlier = False
    try:
        if args.command == "pipeline":
            summaries = run_pipeline(config)
        else:
            summary, earlier = run_train(config, run_dir)
            summaries = {"ppo": summary}
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
    if earlier:  # a finished run is reported, never overwritten
        print(
            f"[rayrlhf] {config.run.name}: finished earlier ({run_dir}/done.json); its files "
            "are kept as they are (run.resume=never starts it over)"
        )
    report = format_summary(summaries, run_dir, pipeline=args.command == "pipeline")
    print(report)
    if earlier:
        return 0
    from rayrlhf.plots import plot_run

    plots = plot_run(run_dir)
    for path in plots:
        print(f"plot: {path}")
    (run_dir / "report.txt").write_text(report + "\n")
    if set(config.run.trackers) & {"mlflow", "wandb"}:
        from rayrlhf.trackers import log_closing_files

        stage = list(summaries)[-1]  # the stage the report is about: the online or third one
        stage_dir = run_dir / stage if args.command == "pipeline" else run_dir
        run = config.run.model_dump(mode="json")
        log_closing_files(run, stage_dir, stage, [run_dir / "report.txt", *plots])
    return 0


if __name__ == "__main__":
    sys.exit(main())
