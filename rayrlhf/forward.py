"""The forward passes over the rollout layout, padded or packed.

A rollout batch is ``(B, P+R)``: the first P columns are the left-padded prompt, the last R the
right-padded response (:mod:`rayrlhf.experience`). Two ways to run it through a model:

- **padded**: the batch as it is, with an attention mask; 38% of the demo's token slots are
  padding, computed and thrown away;
- **packed**: the real tokens of every row end to end in one ``(1, N)`` sequence, positions
  restarting at 0 for each row and no attention mask. transformers (4.54+) reads the restarts
  as sequence boundaries and confines attention to each row (a block-diagonal causal mask, or
  the varlen kernel under flash attention), so each row sees exactly what it sees padded.

Either way the output head runs only at the positions that predict response tokens (the
vocabulary projection is the largest single matrix of a small model), and the results come back
in the ``(B, R)`` layout, 0 where the response mask is 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rayrlhf.algos.losses import entropy_from_logits, logprobs_from_logits


def position_ids(attention_mask: Tensor) -> Tensor:
    """(B, T) positions counted over real tokens, so left padding does not shift them."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


@dataclass(frozen=True)
class PackedRows:
    """The real tokens of a ``(B, P+R)`` batch as one sequence, and where the answers go.

    N real tokens in all, M of them response tokens with a token before them in their row.
    """

    input_ids: Tensor  # (1, N) the rows' real tokens, row after row
    position_ids: Tensor  # (1, N) restarting at 0 at each row's first token
    predictors: Tensor  # (M,) index into N of the position predicting each response token
    labels: Tensor  # (M,) the response tokens, in the order of ``select``'s True entries
    select: Tensor  # (B, R) bool: which response slots get an answer (row-major)

    def scatter(self, flat: Tensor) -> Tensor:
        """(M,) per-response-token values → (B, R), 0 elsewhere (differentiable)."""
        return flat.new_zeros(self.select.shape).masked_scatter(self.select, flat)


def pack_rows(input_ids: Tensor, attention_mask: Tensor, prompt_len: int) -> PackedRows:
    """Pack the real tokens (``attention_mask`` 1) of a ``(B, P+R)`` batch into one row."""
    keep = attention_mask.bool()
    flat_index = keep.reshape(-1).long().cumsum(0).reshape(keep.shape) - 1  # (B, T) slot in N
    # Response column j is predicted by column P+j-1, which must itself be a real token.
    select = keep[:, prompt_len:] & keep[:, prompt_len - 1 : -1]
    return PackedRows(
        input_ids=input_ids[keep].unsqueeze(0),
        position_ids=position_ids(attention_mask)[keep].unsqueeze(0),
        predictors=flat_index[:, prompt_len - 1 : -1][select],
        labels=input_ids[:, prompt_len:][select],
        select=select,
    )


def _token_stats(
    logits: Tensor, labels: Tensor, temperature: float, with_entropy: bool, entropy_grad: bool
) -> tuple[Tensor, Tensor | None]:
    """Log-probs of ``labels`` under ``logits / temperature`` (..., V), and their entropy.

    ``entropy_grad=False`` computes the entropy as a metric only: without the autograd graph of
    a second pass over the vocabulary (the entropy bonus is 0 in most runs).
    """
    logits = logits / temperature
    logprobs = logprobs_from_logits(logits, labels)
    if not with_entropy:
        return logprobs, None
    with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
        entropy = entropy_from_logits(logits if entropy_grad else logits.detach())
    return logprobs, entropy


def response_logprobs(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    prompt_len: int,
    temperature: float = 1.0,
    with_entropy: bool = False,
    packed: bool = False,
    entropy_grad: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """(B, R) log-probs of the response tokens at ``temperature``, and optionally (B, R) entropy.

    The temperature matches the sampler's, so these are the log-probs of the distribution the
    rollout sampled from (top-p truncation aside). ``packed`` runs the real tokens only; the
    results equal the padded ones (to float rounding).
    """
    if packed:
        rows = pack_rows(input_ids, attention_mask, prompt_len)
        logits = model(
            input_ids=rows.input_ids,
            position_ids=rows.position_ids,
            use_cache=False,
            logits_to_keep=rows.predictors,
        ).logits[0]
        lp, ent = _token_stats(logits, rows.labels, temperature, with_entropy, entropy_grad)
        return rows.scatter(lp), None if ent is None else rows.scatter(ent)
    response_len = input_ids.shape[1] - prompt_len
    logits = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids(attention_mask),
        use_cache=False,
        logits_to_keep=response_len + 1,  # columns P-1 .. P+R-1; the last predicts nothing
    ).logits[:, :-1]
    mask = attention_mask[:, prompt_len:]
    lp, ent = _token_stats(
        logits, input_ids[:, prompt_len:], temperature, with_entropy, entropy_grad
    )
    return lp * mask, None if ent is None else ent * mask


def response_values(
    model: nn.Module, input_ids: Tensor, attention_mask: Tensor, prompt_len: int, packed: bool
) -> Tensor:
    """(B, R) values of the states before each response token (the logits' columns), from a
    value model mapping ``(ids, attention_mask, position_ids)`` to per-position values."""
    if packed:
        rows = pack_rows(input_ids, attention_mask, prompt_len)
        values = model(rows.input_ids, None, rows.position_ids)[0]
        return rows.scatter(values[rows.predictors])
    values = model(input_ids, attention_mask, position_ids(attention_mask))
    return values[:, prompt_len - 1 : -1] * attention_mask[:, prompt_len:]
