"""The run itself: its name and length, checkpoints and resume, restart limits, deadlines."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from rayrlhf.config.base import _Section


class MlflowConfig(_Section):
    """Where ``run.trackers: [mlflow]`` logs (a stage is one MLflow run)."""

    tracking_uri: str = Field(
        "",
        description="MLflow tracking server (http://host:5000) or store URI; empty: the "
        "MLFLOW_TRACKING_URI environment variable, else ./mlruns.",
    )
    experiment: str = Field("rayrlhf", min_length=1, description="MLflow experiment name.")


class WandbConfig(_Section):
    """Where ``run.trackers: [wandb]`` logs (a stage is one W&B run)."""

    project: str = Field("rayrlhf", min_length=1, description="W&B project.")
    entity: str | None = Field(None, description="W&B team or user; None: your default.")
    mode: Literal["offline", "online"] = Field(
        "offline",
        description="offline: files under RUN_DIR/<stage>/wandb (upload later with `wandb "
        "sync`); online: logged as it runs (needs WANDB_API_KEY and network).",
    )


Tracker = Literal["tensorboard", "jsonl", "mlflow", "wandb"]


class RunConfig(_Section):
    """What the run is called, where it writes, and how long it lasts."""

    name: str = Field("ppo", min_length=1, description="Run name; the run directory's name.")
    output_dir: str = Field("runs", description="Folder that holds run directories.")
    seed: int = Field(0, ge=0, description="Seed for prompts order, sampling and init.")
    num_steps: int = Field(10, ge=1, description="PPO steps (generate → score → train → sync).")
    log_samples: int = Field(3, ge=0, description="Sample generations logged per step.")
    progress_bar: bool = Field(True, description="Show a progress bar over steps.")
    checkpoint_every: int = Field(
        0,
        ge=0,
        description="Checkpoint every N steps (0: only when stopped by a signal or an error).",
    )
    keep_checkpoints: int = Field(2, ge=1, description="Committed checkpoints kept (newest).")
    resume: Literal["auto", "must", "never"] = Field(
        "auto",
        description="auto: continue from the newest checkpoint if there is one; must: refuse "
        "to start without one; never: start afresh (the old checkpoints are removed).",
    )
    max_worker_restarts: int = Field(
        10, ge=0, description="Dead rollout/reward/reference actors replaced before giving up."
    )
    max_learner_restarts: int = Field(
        2, ge=0, description="Learner group restarts from the last checkpoint before giving up."
    )
    trackers: list[Tracker] = Field(
        ["tensorboard", "jsonl"],
        description="Where metrics go: jsonl (metrics.jsonl, always written: resume and the "
        "reports read it), tensorboard, mlflow, wandb (the last two: pip install "
        "'rayrlhf[trackers]').",
    )
    mlflow: MlflowConfig = MlflowConfig()
    wandb: WandbConfig = WandbConfig()


class TimeoutsConfig(_Section):
    """Deadlines of the driver's blocking waits: a hang becomes an error naming role and phase."""

    setup_s: float = Field(1800.0, gt=0.0, description="Actors started and models loaded.")
    rollout_s: float = Field(
        1800.0, gt=0.0, description="A step's generation, scoring and reference log-probs."
    )
    train_s: float = Field(1800.0, gt=0.0, description="One learner step (also its collectives).")
    weight_sync_s: float = Field(600.0, gt=0.0, description="Weights reaching rollout workers.")
    checkpoint_s: float = Field(1800.0, gt=0.0, description="Writing or loading a checkpoint.")
