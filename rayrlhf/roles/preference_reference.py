"""PreferenceReference: a reference worker of a DPO stage, scoring its share of the pairs once.

Worker ``index`` of ``count`` reads and encodes the stage's rows itself (as the learner ranks
do: the driver never carries the data), runs the frozen starting policy over pairs ``index``,
``index + count``, ... of both splits and writes them as one part file; the learner ranks read
every part. A part is written whole (temporary name, then renamed), so a rerun after a failure
computes only the parts that are missing.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from rayrlhf.config import Config
from rayrlhf.models import load_policy


def part_path(folder: str | Path, index: int, count: int) -> Path:
    """Where worker ``index`` of ``count`` writes its part."""
    return Path(folder) / f"part-{index:03d}-of-{count:03d}.pt"


class PreferenceReference:
    """Holds the starting policy, frozen; :meth:`logprobs` is its one unit of work."""

    def __init__(self, config: Config) -> None:
        assert config.dpo is not None
        self.config = config
        lc = config.dpo.learner
        self.device = torch.device(lc.device)
        self.model = load_policy(config.model.policy, lc.precision).to(self.device)
        self.model.eval().requires_grad_(False)

    @torch.no_grad()
    def logprobs(self, folder: str, index: int, count: int) -> dict[str, float]:
        """Write part ``index`` of ``count`` into ``folder``; returns its pair count and seconds."""
        from rayrlhf.tasks.dpo import DPOTask

        start = time.perf_counter()
        task = DPOTask(self.config, with_reference=False)
        micro = self.config.dpo.learner.micro_batch_size
        part = task.reference_share(self.model, index, count, micro)
        path = part_path(folder, index, count)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(part, tmp)
        tmp.replace(path)
        pairs = float(sum(len(part[name]) for name in ("train", "heldout")))
        return {"pairs": pairs, "seconds": time.perf_counter() - start}
