"""Learner → rollout weight transport: a full state dict through the Ray object store.

The learner's rank 0 returns the gathered weights from a Ray task; Ray keeps the result in the
object store and the driver hands only its reference to every rollout worker, which loads it here.
"""

from __future__ import annotations

import torch
from torch import nn


def load_full_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Copy a full (gathered) state dict into ``model``, failing on any name mismatch.

    Tied weights appear once in a gathered state dict, so only parameters that share storage with
    a loaded one may be missing; anything unexpected or otherwise missing is an error.
    """
    own = dict(model.named_parameters())  # named_parameters() lists a tied weight once
    unexpected = sorted(set(state_dict) - set(model.state_dict()))
    missing = sorted(set(own) - set(state_dict))
    if unexpected or missing:
        raise ValueError(
            f"weight sync mismatch: unexpected {unexpected[:5]}, missing {missing[:5]}"
        )
    with torch.no_grad():
        for name, param in own.items():
            src = state_dict[name]
            if src.shape != param.shape:
                raise ValueError(
                    f"weight sync shape mismatch for {name}: {src.shape} vs {param.shape}"
                )
            param.copy_(src.to(param.device, param.dtype))
