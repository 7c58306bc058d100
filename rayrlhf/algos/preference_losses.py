"""Direct preference optimisation: the policy learns from (chosen, rejected) pairs, no reward model.

With ``h = [log π(y_c|x) − log π_ref(y_c|x)] − [log π(y_r|x) − log π_ref(y_r|x)]`` (sequence
log-probs summed over response tokens), per pair:

- ``sigmoid`` (DPO, Rafailov et al. 2023): ``−(1−ε)·log σ(βh) − ε·log σ(−βh)``; ε = 0 is DPO,
  ε > 0 conservative DPO (labels flipped with probability ε).
- ``ipo`` (Azar et al. 2023): ``(h − 1/(2β))²``, a margin regressed to, not pushed without end.

A tie (the raters saw no difference) has target ½ in ``sigmoid`` — the loss ``−½·log σ(βh) −
½·log σ(−βh)`` is least at h = 0, pulling the two log-ratios together, as the reward model's
Bradley–Terry loss does with ties — and target margin 0 in ``ipo`` (``h²``).

The implicit rewards ``β·(log π − log π_ref)`` of the two responses give the metrics: accuracy
(chosen above rejected, over untied pairs) and margin.
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor

PreferenceLoss = Literal["sigmoid", "ipo"]


def log_ratio_margin(
    policy_chosen: Tensor, policy_rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor
) -> Tensor:
    """(B,) ``h``: the chosen response's log-ratio to the reference minus the rejected one's.

    Every argument is (B,) summed response log-probs."""
    return (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)


def dpo_loss(
    margin: Tensor,
    tie: Tensor,
    beta: float,
    kind: PreferenceLoss = "sigmoid",
    label_smoothing: float = 0.0,
) -> Tensor:
    """(B,) per-pair loss for margins ``h`` (B,) and tie flags (B,) bool (see the module doc)."""
    tie = tie.to(margin.dtype)
    if kind == "ipo":
        target = (1.0 - tie) / (2.0 * beta)  # ties: margin 0
        return (margin - target) ** 2
    if kind != "sigmoid":
        raise ValueError(f"unknown preference loss {kind!r} (expected sigmoid or ipo)")
    eps = label_smoothing + tie * (0.5 - label_smoothing)  # ties: target ½
    return -(1.0 - eps) * F.logsigmoid(beta * margin) - eps * F.logsigmoid(-beta * margin)


def implicit_rewards(policy: Tensor, ref: Tensor, beta: float) -> Tensor:
    """(B,) ``β·(log π − log π_ref)`` of a response: DPO's reward, implicit in the policy."""
    return beta * (policy - ref)
