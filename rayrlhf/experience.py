"""Typed data that moves between roles: prompt chunks, rollouts, scores, reference log-probs.

Layout of one rollout row (P = padded prompt length, R = padded response length)::

    [pad pad p1 p2 p3 | r1 r2 r3 EOS pad pad]
     prompt_mask 0 0 1 1 1   response_mask 1 1 1 1 0 0

A multi-turn episode's response is its turns with the environment's observations between them,
token ids as sampled and as tokenised once: ``response_mask`` (the loss mask) is 1 on generated
tokens only, ``response_attention`` 1 on observations too::

    [p1 p2 | t1 t2 </call> o1 o2 o3 t3 t4 EOS pad]
     response_mask        1 1 1 0 0 0 1 1 1 0
     response_attention   1 1 1 1 1 1 1 1 1 0

Prompts are left-padded so that generation continues at the same column for every row; responses
are right-padded. ``response_mask`` marks the generated tokens up to and including the EOS that
ended the response: the EOS is an action the policy took, so it is trained on even when the
tokenizer's pad token is the same id as EOS (the mask, never the token id, decides).

Every row carries a stable ``sample_id`` and the ``policy_version`` that generated it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class PromptChunk:
    """A unit of rollout work: one row per sample, with stable sample ids.

    With ``group_size`` G > 1 each prompt appears G times in a row (its group): the samples of a
    prompt are always generated together, by one worker, in one chunk.
    """

    sample_ids: list[str]
    prompts: list[str]
    group_size: int = 1
    # One dict per sample of what else its prompt row holds (a reference ``answer``, a
    # reasoning task's entry), for rewards that verify; None when the prompts are text alone.
    rows: list[dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        if len(self.sample_ids) != len(self.prompts):
            raise ValueError("PromptChunk needs one sample_id per prompt")
        if self.rows is not None and len(self.rows) != len(self.prompts):
            raise ValueError("PromptChunk needs one row per prompt")
        if self.group_size < 1 or len(self.prompts) % self.group_size:
            raise ValueError(
                f"PromptChunk of {len(self.prompts)} rows does not hold whole groups of "
                f"{self.group_size}"
            )


@dataclass
class Rollout:
    """Generated responses for one chunk of prompts, with behaviour log-probs.

    Shapes: B rows, P prompt columns, R response columns.
    """

    sample_ids: list[str]
    policy_version: int  # the weights version every row of this chunk was generated with
    prompt_ids: Tensor  # (B, P) long, left-padded
    prompt_mask: Tensor  # (B, P) long, 1 on real prompt tokens
    response_ids: Tensor  # (B, R) long, right-padded
    response_mask: Tensor  # (B, R) long, 1 on generated tokens incl. the final EOS
    logprobs: Tensor  # (B, R) float, behaviour log-probs at the sampling temperature; 0 off-mask
    prompts: list[str]  # the prompt texts as given
    responses: list[str]  # decoded responses (special tokens skipped)
    generate_seconds: float = 0.0  # worker time spent in generate, for the phase timings
    group_size: int = 1  # consecutive rows share a prompt, G at a time
    rows: list[dict[str, Any]] | None = None  # the chunk's prompt rows (PromptChunk.rows)
    # Multi-turn episodes: (B, R) 1 on every real response token, the environment's observation
    # tokens too (which response_mask, the loss mask, leaves 0); None: response_mask.
    response_attention: Tensor | None = None
    # Per-episode figures of multi-turn rollouts, (B,) float each: turns, tool calls, ...
    episode_stats: dict[str, Tensor] = field(default_factory=dict)
    env_rewards: Tensor | None = None  # (B,) the environment's reward contributions, summed

    @property
    def input_ids(self) -> Tensor:
        """(B, P+R) prompt followed by response."""
        return torch.cat([self.prompt_ids, self.response_ids], dim=1)

    @property
    def response_attention_mask(self) -> Tensor:
        """(B, R) 1 on every real response token, observations included."""
        return self.response_mask if self.response_attention is None else self.response_attention

    @property
    def attention_mask(self) -> Tensor:
        """(B, P+R) 1 on real prompt and response tokens (observations included)."""
        return torch.cat([self.prompt_mask, self.response_attention_mask], dim=1)

    def __len__(self) -> int:
        return len(self.sample_ids)


@dataclass
class Scores:
    """One finite reward per row of a rollout chunk."""

    sample_ids: list[str]
    rewards: Tensor  # (B,) float32
    seconds: float = 0.0
    # Named parts of the reward, unweighted, (B,) float32 each (a verifier's ``correct`` and
    # ``format``); the reward is their weighted sum. Empty for a single-number scorer.
    components: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class ReferenceLogprobs:
    """The frozen reference policy's log-probs of a chunk's response tokens."""

    sample_ids: list[str]
    logprobs: Tensor  # (B, R) float32, 0 off-mask
    seconds: float = 0.0


def pad_to(x: Tensor, length: int, value: float | int, left: bool = False) -> Tensor:
    """Pad the last dimension of ``x`` (…, T) to ``length`` on the left or right."""
    extra = length - x.shape[-1]
    if extra < 0:
        raise ValueError(f"cannot pad length {x.shape[-1]} down to {length}")
    return F.pad(x, (extra, 0) if left else (0, extra), value=value)


@dataclass
class RolloutBatch:
    """Several chunks joined into one padded batch (a learner rank's shard).

    Shapes: B rows, P = max prompt length, R = max response length over the chunks.
    """

    sample_ids: list[str]
    policy_versions: Tensor  # (B,) long
    input_ids: Tensor  # (B, P+R) long
    attention_mask: Tensor  # (B, P+R) long
    response_mask: Tensor  # (B, R) long
    logprobs: Tensor  # (B, R) behaviour log-probs
    ref_logprobs: Tensor | None  # (B, R); None when no reference runs (KL coefficient 0)
    scores: Tensor  # (B,)
    prompt_len: int  # P
    group_index: Tensor  # (B,) long: rows with the same number are one prompt's group
    prompts: list[str] = field(default_factory=list)
    responses: list[str] = field(default_factory=list)
    # Worker busy time summed over the chunks: generate, score, reference.
    phase_seconds: tuple[float, float, float] = (0.0, 0.0, 0.0)
    reward_components: dict[str, Tensor] = field(default_factory=dict)  # name → (B,)
    episode_stats: dict[str, Tensor] = field(default_factory=dict)  # name → (B,), multi-turn

    def __len__(self) -> int:
        return len(self.sample_ids)


def _rows(x: Tensor, rows: list[int] | None) -> Tensor:
    return x if rows is None else x[rows]


def _pick(xs: list, rows: list[int] | None) -> list:
    return list(xs) if rows is None else [xs[i] for i in rows]


def join_chunks(
    rollouts: list[Rollout],
    scores: list[Scores],
    refs: list[ReferenceLogprobs | None],
    rows: list[list[int] | None] | None = None,
) -> RolloutBatch:
    """Join matching chunks into one batch, checking that the sample ids line up.

    ``refs`` may be all ``None`` (no reference workers). ``rows[k]`` keeps only those rows of
    chunk k (None: all); dynamic sampling uses it to drop groups, always whole ones.
    """
    if not rollouts or not (len(rollouts) == len(scores) == len(refs)):
        raise ValueError("join_chunks needs the same non-zero number of rollouts, scores, refs")
    rows = rows or [None] * len(rollouts)
    with_ref = refs[0] is not None
    for ro, sc, rf in zip(rollouts, scores, refs, strict=True):
        if (
            ro.sample_ids != sc.sample_ids
            or (rf is None) == with_ref
            or (rf is not None and rf.sample_ids != ro.sample_ids)
        ):
            raise ValueError(f"chunk sample ids disagree, first rollout id {ro.sample_ids[0]!r}")
    p = max(r.prompt_ids.shape[1] for r in rollouts)
    n = max(r.response_ids.shape[1] for r in rollouts)
    pad_id = 0  # any id: padded positions are masked out everywhere

    def cat(get: Callable[[Any], Tensor], width: int, value: float, left: bool = False) -> Tensor:
        parts = [_rows(pad_to(get(k), width, value, left), rows[k]) for k in range(len(rollouts))]
        return torch.cat(parts)

    prompt_ids = cat(lambda k: rollouts[k].prompt_ids, p, pad_id, left=True)
    prompt_mask = cat(lambda k: rollouts[k].prompt_mask, p, 0, left=True)
    response_ids = cat(lambda k: rollouts[k].response_ids, n, pad_id)
    response_mask = cat(lambda k: rollouts[k].response_mask, n, 0)
    response_attention = cat(lambda k: rollouts[k].response_attention_mask, n, 0)
    group_index, offset = [], 0
    for r, keep in zip(rollouts, rows, strict=True):
        g = _rows(torch.arange(len(r)) // r.group_size, keep)
        group_index.append(g + offset)
        offset += len(r) // r.group_size
    sample_ids = [s for r, k in zip(rollouts, rows, strict=True) for s in _pick(r.sample_ids, k)]
    return RolloutBatch(
        sample_ids=sample_ids,
        policy_versions=torch.tensor(
            [
                r.policy_version
                for r, k in zip(rollouts, rows, strict=True)
                for _ in _pick(r.sample_ids, k)
            ],
            dtype=torch.long,
        ),
        input_ids=torch.cat([prompt_ids, response_ids], dim=1),
        attention_mask=torch.cat([prompt_mask, response_attention], dim=1),
        response_mask=response_mask,
        logprobs=cat(lambda k: rollouts[k].logprobs, n, 0.0),
        ref_logprobs=cat(lambda k: refs[k].logprobs, n, 0.0) if with_ref else None,
        scores=torch.cat([_rows(s.rewards, k) for s, k in zip(scores, rows, strict=True)]).float(),
        prompt_len=p,
        group_index=torch.cat(group_index),
        prompts=[t for r, k in zip(rollouts, rows, strict=True) for t in _pick(r.prompts, k)],
        responses=[t for r, k in zip(rollouts, rows, strict=True) for t in _pick(r.responses, k)],
        phase_seconds=(
            sum(r.generate_seconds for r in rollouts),
            sum(s.seconds for s in scores),
            sum(r.seconds for r in refs if r is not None),
        ),
        episode_stats={
            name: torch.cat(
                [_rows(r.episode_stats[name], k) for r, k in zip(rollouts, rows, strict=True)]
            )
            for name in rollouts[0].episode_stats
        },
        reward_components={
            name: torch.cat(
                [_rows(s.components[name], k) for s, k in zip(scores, rows, strict=True)]
            )
            for name in scores[0].components
        },
    )


def response_mask_from_ids(response_ids: Tensor, eos_token_id: int | list[int]) -> Tensor:
    """(B, R) mask of generated tokens up to and including the first EOS of each row.

    Rows without an EOS (cut at max_new_tokens) are all ones. Computed from the EOS position, not
    from ``!= pad``, so a pad id equal to the EOS id cannot hide the EOS.
    """
    eos_ids = torch.tensor(eos_token_id if isinstance(eos_token_id, list) else [eos_token_id])
    is_eos = torch.isin(response_ids, eos_ids)
    # Count EOS seen strictly before each column: the first EOS column still has count 0.
    before = torch.cumsum(is_eos.long(), dim=1) - is_eos.long()
    return (before == 0).long()
