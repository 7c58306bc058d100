"""KL estimators, KL-shaped token rewards and KL coefficient controllers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor


def kl_k1(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """Naive estimator log p - log q; unbiased but high variance, can be < 0.

    Args:
        logprobs: (B, T) log-probs of sampled tokens under the policy.
        ref_logprobs: (B, T) log-probs of the same tokens under the reference.

    Returns:
        (B, T) per-token KL estimate.
    """
    return logprobs - ref_logprobs


def kl_k2(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """Squared estimator 0.5 * (log p - log q)^2; biased, low variance, >= 0.

    Args:
        logprobs: (B, T) policy log-probs.
        ref_logprobs: (B, T) reference log-probs.

    Returns:
        (B, T) per-token KL estimate.
    """
    return 0.5 * (logprobs - ref_logprobs) ** 2


def kl_k3(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """Schulman's k3: exp(r) - 1 - r with r = log q - log p; unbiased and >= 0.

    Args:
        logprobs: (B, T) policy log-probs.
        ref_logprobs: (B, T) reference log-probs.

    Returns:
        (B, T) per-token KL estimate.
    """
    log_ratio = ref_logprobs - logprobs
    # expm1 is exact near 0, where exp(r) - 1 would cancel catastrophically.
    return torch.expm1(log_ratio) - log_ratio


KL_ESTIMATORS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "k1": kl_k1,
    "k2": kl_k2,
    "k3": kl_k3,
}


def token_rewards(scores: Tensor, kl: Tensor, response_mask: Tensor, kl_coef: float) -> Tensor:
    """Build per-token rewards: a KL penalty everywhere plus the score at the end.

    Args:
        scores: (B,) sequence-level reward-model scores.
        kl: (B, T) per-token KL estimates.
        response_mask: (B, T) bool or 0/1, right-padded (0s between an episode's turns
            too). The mask (not the token id) decides where the response ends, so an EOS equal
            to pad still counts.
        kl_coef: Penalty coefficient beta.

    Returns:
        (B, T) rewards, zero where ``response_mask`` is 0.

    Raises:
        ValueError: If any row of ``response_mask`` is empty.
    """
    lengths = response_mask.to(torch.long).sum(dim=-1)
    if bool((lengths == 0).any()):
        empty = torch.nonzero(lengths == 0).flatten().tolist()
        raise ValueError(f"response_mask has empty rows {empty}; cannot place the score")
    rewards = torch.where(response_mask.bool(), -kl_coef * kl, torch.zeros_like(kl))
    # The last token the policy generated: the mask's last 1 (observation tokens between turns
    # may leave 0s before it, so not the count of 1s).
    width = response_mask.shape[-1]
    last_idx = (width - 1 - response_mask.to(torch.long).flip(-1).argmax(-1)).unsqueeze(-1)
    # scatter_add (out of place) so the score adds to, not replaces, the KL term.
    return rewards.scatter_add(-1, last_idx, scores.to(rewards.dtype).unsqueeze(-1))


class FixedKLController:
    """Constant KL coefficient."""

    def __init__(self, init_kl_coef: float) -> None:
        """Args: init_kl_coef: the coefficient, used for the whole run."""
        if init_kl_coef < 0:
            raise ValueError(f"init_kl_coef must be >= 0, got {init_kl_coef}")
        self.value = float(init_kl_coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        """No-op; present so both controllers share one interface."""

    def state_dict(self) -> dict[str, Any]:
        """Return the checkpointable state."""
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore state produced by :meth:`state_dict`."""
        self.value = float(state["value"])


class AdaptiveKLController:
    """Adaptive KL coefficient from Ziegler et al. 2019 ("Fine-Tuning LMs from
    Human Preferences"): proportional control of beta toward a target KL."""

    def __init__(self, init_kl_coef: float, target: float, horizon: float) -> None:
        """Args: init_kl_coef: starting beta; target: desired KL; horizon: steps
        over which a +-20% error changes beta by a factor of ~e^(+-0.2)."""
        for name, val in (("init_kl_coef", init_kl_coef), ("target", target), ("horizon", horizon)):
            if not val > 0:
                raise ValueError(f"{name} must be > 0, got {val}")
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        """Move beta up when KL exceeds the target, down when below.

        Args:
            current_kl: Measured mean KL of the latest batch.
            n_steps: Number of samples (or steps) the measurement covers.
        """
        # Clipping bounds the per-update change so one noisy KL can't explode beta.
        proportional_error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + proportional_error * n_steps / self.horizon

    def state_dict(self) -> dict[str, Any]:
        """Return the checkpointable state."""
        return {"value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore state produced by :meth:`state_dict`."""
        self.value = float(state["value"])
        self.target = float(state.get("target", self.target))
        self.horizon = float(state.get("horizon", self.horizon))


KL_CONTROLLERS: dict[str, type] = {
    "fixed": FixedKLController,
    "adaptive": AdaptiveKLController,
}
