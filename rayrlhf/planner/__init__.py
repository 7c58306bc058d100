"""Per-GPU memory planner for PPO on a cluster: ``rayrlhf plan`` (``main``).

``shapes`` counts parameters on the meta device, ``memory`` holds the formulas (bytes),
``plan`` places the roles and adds up each GPU, ``report`` prints tables, verdict and JSON.
"""

from rayrlhf.planner.report import main

__all__ = ["main"]
