"""Per-GPU memory planner for PPO on a cluster: ``rayrlhf plan`` (``main``).

``shapes`` counts parameters (and linear layers) on the meta device, ``memory`` holds the
formulas (bytes), ``lora`` LoRA's adapters, frozen base and weight-sync bytes, ``placement``
splits the GPUs between the roles, ``learner`` adds up a learner rank, ``plan`` every GPU and
the search, ``report`` / ``lora_report`` / ``shared_report`` print tables, verdict and JSON,
``from_config`` reads a run's config, ``command`` is the command line.
"""

from rayrlhf.planner.command import main

__all__ = ["main"]
