"""A sequence-classification reward model as a scorer: (prompts, responses) → floats."""

from __future__ import annotations

import torch

from rayrlhf.data.encode import encode_reward_inputs
from rayrlhf.models import load_reward_model


class ModelScorer:
    """Scores pairs with the reward model at ``path``, ``batch_size`` pairs per forward.

    The same code scores in a reward worker and behind ``rayrlhf serve-reward``, so a remote
    reward model gives the rewards the in-process one gives. A folder without a trained score
    head (a policy's, say) is refused with :class:`~rayrlhf.models.RewardModelError` rather
    than scored by a random head.
    """

    def __init__(self, path: str, batch_size: int, device: str = "cpu") -> None:
        self.batch_size, self.device = batch_size, torch.device(device)
        self.model, self.tokenizer = load_reward_model(path)
        self.model.to(self.device)

    @torch.no_grad()
    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        out: list[float] = []
        for i in range(0, len(prompts), self.batch_size):
            enc = encode_reward_inputs(
                self.tokenizer,
                prompts[i : i + self.batch_size],
                responses[i : i + self.batch_size],
            ).to(self.device)
            logits = self.model(**enc).logits.float()
            # Two labels (reject/accept): the log-odds of accept is the score.
            score = logits[:, 0] if logits.shape[1] == 1 else logits[:, 1] - logits[:, 0]
            out.extend(score.cpu().tolist())
        return out
