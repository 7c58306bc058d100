"""Token sampling for Hugging Face ``generate``, and the sampled tokens' log-probs, one step at a
time.

Why not ``generate(do_sample=True, output_logits=True)``: ``torch.multinomial`` draws one
exponential variate per vocabulary entry (``aten::exponential_``, single-threaded on CPU), which
was 30 ms of each decode step of the review demo (32 rows × SmolLM2's 49,152 tokens), a fifth of
its generation time; and ``output_logits`` keeps every step's (B, V) logits until the end
(B · R · V floats, 300 MB there) only for one log-prob per row and step. Here one uniform per
row picks the token by inverse CDF, and the log-prob is taken the moment the token is drawn.
``generate`` runs greedy over the scores this processor returns (0 at the drawn token, -inf
elsewhere), so it keeps the KV cache, EOS and padding logic as they are.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import LogitsProcessor, StoppingCriteria


class InverseCdfSampler(LogitsProcessor):
    """Draws each row's next token from softmax(scores / T) (optionally cut to the top-p
    nucleus) and records its log-prob under softmax(scores / T), the uncut distribution the
    learner recomputes.

    Args:
        temperature: T > 0.
        top_p: nucleus mass in (0, 1]; 1 samples the whole vocabulary.
        generator: the seeded generator all draws come from (on the scores' device).
    """

    def __init__(self, temperature: float, top_p: float, generator: torch.Generator) -> None:
        self.temperature, self.top_p, self.generator = temperature, top_p, generator
        self.steps: list[torch.Tensor] = []  # (B,) log-probs, one per decode step

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """(B, S) ids so far and (B, V) next-token scores → (B, V): 0 at the drawn token,
        -inf elsewhere."""
        scaled = scores.float() / self.temperature
        logz = torch.logsumexp(scaled, dim=-1, keepdim=True)
        probs = torch.exp(scaled - logz)  # (B, V)
        if self.top_p < 1.0:
            probs = nucleus(probs, self.top_p)
        token = draw(probs, self.generator)  # (B, 1)
        self.steps.append((scaled.gather(-1, token) - logz).squeeze(-1))
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(-1, token, 0.0)

    def logprobs(self) -> torch.Tensor:
        """(B, R) log-probs of the drawn tokens, R = the decode steps run."""
        return torch.stack(self.steps, dim=1)


def nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """(B, V) probabilities → the same with everything outside the smallest set of most likely
    tokens whose mass reaches ``top_p`` set to 0 (the most likely token always stays)."""
    sorted_p, order = probs.sort(dim=-1, descending=True)
    before = sorted_p.cumsum(dim=-1) - sorted_p  # mass of the tokens ranked above each one
    sorted_p = sorted_p.masked_fill(before >= top_p, 0.0)
    return torch.zeros_like(probs).scatter_(-1, order, sorted_p)


def draw(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(B, V) non-negative weights (any scale) → (B, 1) token ids, one uniform per row.

    ``searchsorted(..., right=True)`` returns the first index whose cumulative weight exceeds
    the uniform point, so a zero-weight token is never chosen.
    """
    cdf = probs.double().cumsum(dim=-1)  # float64: the top of a 49k-entry sum stays exact
    u = torch.rand(probs.shape[0], 1, generator=generator, device=probs.device, dtype=cdf.dtype)
    token = torch.searchsorted(cdf, u * cdf[:, -1:], right=True)
    return token.clamp_max(probs.shape[-1] - 1)


class StopOnText(StoppingCriteria):
    """Ends each row of ``generate`` whose new text holds one of ``stop`` (a tool call's end).

    Why not ``generate(stop_strings=...)``: Hugging Face's version precomputes token-string
    overlaps from the vocabulary and fails on word-level tokenizers; this one decodes each
    row's last ``window`` new tokens per step (a few short strings, a few dozen tokens).
    """

    def __init__(self, tokenizer: Any, stop: list[str], prompt_len: int, window: int = 16) -> None:
        self.tokenizer, self.stop, self.prompt_len, self.window = (
            tokenizer,
            stop,
            prompt_len,
            window,
        )

    def __call__(
        self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any
    ) -> torch.Tensor:
        """(B, S) ids so far → (B,) bool: this row is done."""
        tails = input_ids[:, max(self.prompt_len, input_ids.shape[1] - self.window) :]
        texts = self.tokenizer.batch_decode(tails)
        done = [any(s in t for s in self.stop) for t in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)
