"""Implicit Language Q-Learning (Snell et al. 2022), as trlX formulates it: the pure math.

Offline RL over scored responses. States are the prefixes ending at each response position,
actions the response tokens (prompt tokens are never actions). Per action position t the
model gives, from its last hidden state:

- ``qs``: two Q heads, one value per vocabulary token; ``target_qs``: their Polyak-averaged
  copies (``polyak_update`` every few steps), which the V target and decoding read;
- ``vs``: a V head, one value per state; there is one state more than actions (the state after
  the last action), whose value is masked out as terminal.

Shapes: B sequences, A action positions (padded), V vocabulary. ``not_done`` (B, A+1) is 1 at
every real action's state and 0 at the terminal state and at padding, so ``not_done[:, :-1]``
marks the actions that count and ``not_done[:, 1:]`` zeroes V(s′) after the last one.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor


def expectile_loss(diff: Tensor, tau: float) -> Tensor:
    """Asymmetric squared error of ``diff`` = target − V: weight τ above, 1 − τ below."""
    weight = torch.where(diff >= 0, torch.full_like(diff, tau), torch.full_like(diff, 1 - tau))
    return weight * diff.pow(2)


def gather_actions(values: Tensor, actions: Tensor) -> Tensor:
    """(B, A) the entries of (B, A, V) ``values`` at the taken tokens ``actions`` (B, A)."""
    return values.gather(-1, actions.unsqueeze(-1)).squeeze(-1)


def ilql_loss(
    logits: Tensor,
    qs: list[Tensor],
    target_qs: list[Tensor],
    vs: Tensor,
    actions: Tensor,
    rewards: Tensor,
    not_done: Tensor,
    *,
    gamma: float,
    tau: float,
    cql_scale: float,
    awac_scale: float,
    beta: float,
) -> tuple[Tensor, dict[str, Tensor]]:
    """ILQL's loss and its terms, each a mean over the real actions of the batch.

    Args:
        logits: (B, A, V) the policy's logits at the action positions (behaviour cloning).
        qs, target_qs: lists of (B, A, V), the Q heads and their target copies.
        vs: (B, A+1) the V head at every state.
        actions: (B, A) the taken tokens; rewards: (B, A), the score on the last action.
        not_done: (B, A+1) see the module doc.

    Terms: ``q`` — each Q head regressed to r + γ·V(s′) (V(s′) detached, 0 after the last
    action); ``v`` — expectile regression (τ) of V toward min of the target Qs (detached);
    ``cql`` — cross-entropy of each Q head over the vocabulary against the taken token, pushing
    down the values of tokens the data never took; ``awac`` — behaviour cloning of the taken
    tokens weighted by exp(β·(min target Q − V)) (β = 0: plain cloning, as trlX by default).
    ``loss = q + v + cql_scale·cql + awac_scale·awac``.
    """
    mask = not_done[:, :-1].to(vs.dtype)
    count = mask.sum().clamp(min=1.0)
    v, v_next = vs[:, :-1], vs[:, 1:] * not_done[:, 1:].to(vs.dtype)
    q_target = (rewards + gamma * v_next).detach()
    q_taken = [gather_actions(q, actions) for q in qs]
    loss_q = sum(((q - q_target).pow(2) * mask).sum() for q in q_taken) / count
    target_q = torch.stack([gather_actions(q, actions) for q in target_qs]).amin(0).detach()
    loss_v = (expectile_loss(target_q - v, tau) * mask).sum() / count

    def cross_entropy(values: Tensor) -> Tensor:  # (B, A) −log softmax(values)[taken token]
        return -gather_actions(values.float().log_softmax(-1), actions)

    loss_cql = sum((cross_entropy(q) * mask).sum() for q in qs) / count
    awac_weight = torch.exp(beta * (target_q - v.detach()))
    loss_awac = (cross_entropy(logits) * awac_weight * mask).sum() / count
    loss = loss_q + loss_v + cql_scale * loss_cql + awac_scale * loss_awac
    terms = {"q": loss_q, "v": loss_v, "cql": loss_cql, "awac": loss_awac}
    return loss, {k: t.detach() for k, t in terms.items()}


@torch.no_grad()
def polyak_update(targets: Iterable[Tensor], sources: Iterable[Tensor], alpha: float) -> None:
    """target ← α·source + (1 − α)·target for each pair (α = 1 copies)."""
    for target, source in zip(targets, sources, strict=True):
        target.mul_(1.0 - alpha).add_(source, alpha=alpha)


def ilql_logprobs(
    logits: Tensor, target_qs: list[Tensor], v: Tensor, beta: float, top_k: int = 0
) -> Tensor:
    """(B, V) log-probs of the next token under ILQL decoding, before the temperature.

    log π(a) + β·(min target Q(a) − V), renormalised over the ``top_k`` best tokens (all when 0).
    ``logits`` (B, V); ``target_qs`` list of (B, V); ``v`` (B,). At β = 0 this is the policy's
    own distribution (top-k filtered). Sampling at temperature T divides these by T.
    """
    shifted = logits.float().log_softmax(-1)
    if beta:
        advantage = torch.stack(target_qs).amin(0).float() - v.float().unsqueeze(-1)
        shifted = shifted + beta * advantage
    if top_k and top_k < shifted.shape[-1]:
        kth = shifted.topk(top_k, dim=-1).values[..., -1:]
        shifted = shifted.masked_fill(shifted < kth, float("-inf"))
    return F.log_softmax(shifted, -1)


def last_action_rewards(scores: Tensor, lengths: Tensor, width: int) -> Tensor:
    """(B, width) rewards: each response's score (B,) on its last action (``lengths`` (B,)
    actions each, at least 1), 0 elsewhere; ILQL's only reward is the whole response's."""
    rewards = torch.zeros(len(scores), width, dtype=scores.dtype)
    rewards[torch.arange(len(scores)), lengths - 1] = scores
    return rewards


def score_statistics(scores: Tensor) -> tuple[float, float]:
    """(mean, std) of the training scores (N,), to standardise every row's score with, held-out
    rows included; the std is 1 where it is 0 or undefined (one row), which only centres them."""
    std = float(scores.std()) if len(scores) > 1 else 0.0
    return float(scores.mean()), std if std > 0 else 1.0
