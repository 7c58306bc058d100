"""What a dead actor, a lost object, a hang or a stop signal means, and what happens next.

- A lost **worker** (its process killed, its node gone, out of memory) or a lost **object** is
  a fault: the work is dispatched again, on a replacement actor when the actor died.
- An error raised **by the work itself** (a reward function returning NaN, a non-finite loss, a
  stale policy version) is fatal: running it again would fail again. The run stops with one
  clear line, a checkpoint where one can still be written, and the traceback in a log file.
- A **hang** is a fault too: every blocking wait has a deadline (``timeouts``), after which the
  role and the phase are named and the actor is treated as dead.
- **SIGINT / SIGTERM** (Ctrl-C, a preemption notice) ask the loop to stop at the next step
  boundary, after writing a checkpoint.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import ray
from ray import exceptions as rex

# The actor's process or node is gone: replace the actor and run its work again.
WORKER_LOST = (rex.RayActorError, rex.WorkerCrashedError, rex.NodeDiedError)
# A result vanished from the object store (its node died, its owner died): make it again.
OBJECT_LOST = (rex.ObjectLostError, rex.ObjectFetchTimedOutError)


class PhaseTimeout(TimeoutError):
    """A wait passed its deadline; names the role, the actor and the phase."""


class EnvironmentLost(RuntimeError):
    """An environment worker died or hung under a rollout worker's chunk: replace it, redo the
    chunk (the rollout worker itself is fine)."""


class LearnerLost(RuntimeError):
    """A learner rank died or hung: the group restarts from the last checkpoint."""


class RunFailed(RuntimeError):
    """The run stopped on an error it cannot get past; the message is the one line to print."""


class RunStopped(Exception):
    """The run stopped at a step boundary on SIGINT or SIGTERM, after writing a checkpoint."""

    def __init__(self, message: str, signal_name: str) -> None:
        super().__init__(message)
        self.signal_name = signal_name

    @property
    def exit_code(self) -> int:
        """The shell's convention: 128 + the signal number."""
        return 128 + int(getattr(signal, self.signal_name))


def root_cause(err: BaseException) -> BaseException:
    """The exception under Ray's task-error wrapper (what the work itself raised)."""
    cause = getattr(err, "cause", None)
    return cause if isinstance(cause, BaseException) else err


def failed_to_start(err: BaseException) -> bool:
    """True when an actor died because building it from its config raised (its ``__init__``):
    an error of the work, which a replacement built from the same config would raise again."""
    return any(
        isinstance(e, rex.RayActorError) and e.actor_init_failed for e in (err, root_cause(err))
    )


def is_lost(err: BaseException) -> bool:
    """True when ``err`` means a lost worker or object (retry), False for errors of the work."""
    if failed_to_start(err):
        return False
    return isinstance(err, WORKER_LOST + OBJECT_LOST + (PhaseTimeout,)) or isinstance(
        root_cause(err), WORKER_LOST + OBJECT_LOST + (EnvironmentLost,)
    )


def one_line(err: BaseException) -> str:
    """A one-line description of the cause of ``err`` (its last line, type included)."""
    cause = root_cause(err)
    text = str(cause).strip().splitlines()
    last = text[-1] if text else ""
    if len(last) > 240:  # Ray's actor-death explanations run to a paragraph
        last = last[:240] + "…"
    return f"{type(cause).__name__}: {last}" if last else type(cause).__name__


@dataclass
class FaultCounts:
    """What the run survived so far (reported as ``faults/*`` metrics)."""

    worker_restarts: int = 0
    redispatched_chunks: int = 0
    learner_restarts: int = 0
    last_cause: str = ""

    def metrics(self) -> dict[str, float]:
        """The ``faults/*`` metrics of a step row."""
        return {
            "faults/worker_restarts": float(self.worker_restarts),
            "faults/redispatched_chunks": float(self.redispatched_chunks),
            "faults/learner_restarts": float(self.learner_restarts),
        }


def wait_all(refs: list[Any], timeout_s: float, what: list[str]) -> list[Any]:
    """``ray.get`` of small results, failing fast: the first error is raised as soon as it is
    in, not after the others (a dead learner rank leaves the live ones blocked in a collective).

    ``what[i]`` names the role, actor and phase of ``refs[i]`` for the timeout message.
    """
    deadline = time.monotonic() + timeout_s
    index = {ref: i for i, ref in enumerate(refs)}
    results: list[Any] = [None] * len(refs)
    waiting = list(refs)
    while waiting:
        ready, waiting = ray.wait(
            waiting, num_returns=1, timeout=max(deadline - time.monotonic(), 0.0)
        )
        if not ready:
            names = ", ".join(what[index[r]] for r in waiting)
            raise PhaseTimeout(f"{names}: no result after {timeout_s:.0f}s")
        for ref in ready:
            results[index[ref]] = ray.get(ref)
    return results


class StopRequest:
    """SIGINT / SIGTERM set a flag that the loop reads at step boundaries.

    A second SIGINT interrupts at once (KeyboardInterrupt), as a user pressing Ctrl-C twice
    expects. Installed only in the main thread (Python allows handlers nowhere else).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_name = name
        print(
            f"\n[rayrlhf] {name}: stopping after this step with a checkpoint "
            "(Ctrl-C again stops at once, without one)",
            file=sys.stderr,
            flush=True,
        )

    @property
    def requested(self) -> bool:
        """Whether a stop signal arrived."""
        return self.signal_name is not None


def write_error_log(run_dir: Path, err: BaseException) -> Path:
    """Append the full traceback of ``err`` (and Ray's remote one) to ``RUN_DIR/error.log``."""
    path = Path(run_dir) / "error.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(f"==== {time.strftime('%Y-%m-%d %H:%M:%S')} ====\n")
        f.write("".join(traceback.format_exception(type(err), err, err.__traceback__)))
        f.write("\n")
    return path


def on_dispatch(trainer: Any, actions: dict[int, Callable[[Any], None]]) -> None:
    """Fault injection for tests and benchmarks: run ``actions[n](flight)`` right after the
    n-th chunk dispatch of an online ``trainer`` (counting from 1); ``flight.actors`` are the
    actors doing that chunk, rollout first."""
    dispatch, count = trainer.runner._dispatch, [0]

    def patched(*args: Any) -> Any:
        flight = dispatch(*args)
        count[0] += 1
        if count[0] in actions:
            actions[count[0]](flight)
        return flight

    trainer.runner._dispatch = patched
