"""Asynchronous training's pieces against hand-computed values: decoupled PPO's truncated
behaviour weights, the weighted policy loss, the staleness histogram, and the weight files and
broadcast stream that carry policy versions."""

from __future__ import annotations

import math

import pytest
import torch
from hand_computed import close, policy_case

from rayrlhf.algos.losses import policy_loss
from rayrlhf.algos.off_policy import behaviour_weights, staleness_counts
from rayrlhf.tiny_models import build_model
from rayrlhf.weights.transport import (
    broadcast_params,
    flatten_params,
    load_flat,
    load_full_state_dict,
    receive_params,
    save_flat,
    unflatten_params,
)


def test_behaviour_weights_are_the_truncated_ratio_of_proximal_to_behaviour():
    prox = torch.tensor([[-1.0, -2.0, -0.5, -1.0]])
    behaviour = torch.tensor([[-1.5, -0.5, -3.5, -9.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    w = behaviour_weights(prox, behaviour, mask, cap=5.0)
    # e^0.5, e^-1.5, e^3 = 20.1 → 5 (truncated), off the mask 0 (e^8 would overflow nothing)
    close(w, [[math.exp(0.5), math.exp(-1.5), 5.0, 0.0]])
    assert not w.requires_grad


def test_policy_loss_weights_each_tokens_clipped_term():
    """policy_case's clipped terms (-1.2, -0.5, 1.5 | 0.8, -2.2) times w = (2, 1, 0.5 | 1, 3);
    the pad's weight must not count."""
    logp, old, adv, mask = policy_case()
    w = torch.tensor([[2.0, 1.0, 0.5], [1.0, 3.0, 7.0]])
    out = policy_loss(logp, old, adv, mask, clip_range=0.2, behaviour_weights=w)
    close(out.loss, (-2.4 - 0.5 + 0.75 + 0.8 - 6.6) / 5)
    plain = policy_loss(logp, old, adv, mask, clip_range=0.2)
    close(plain.loss, (-1.2 - 0.5 + 1.5 + 0.8 - 2.2) / 5)
    out.loss.backward()
    # Where the unclipped term wins, d/dlogp = -A·r·w/5: (0.5,+1) → -0.1, (1.5,-1) → 0.15,
    # (1.1,+2) → -1.32; where the clipped one wins, 0.
    close(logp.grad, [[0.0, -0.1, 0.15], [0.0, -1.32, 0.0]])


def test_staleness_counts_and_what_is_refused():
    assert staleness_counts(torch.tensor([3, 2, 2, 3, 1]), 3, 2) == [2, 2, 1]
    assert staleness_counts(torch.tensor([4, 4]), 4, 0) == [2]
    with pytest.raises(ValueError, match="accepted are 2..3"):
        staleness_counts(torch.tensor([3, 1]), 3, 1)  # two versions old with max_staleness 1
    with pytest.raises(ValueError, match=r"versions \[4\] at learner version 3"):
        staleness_counts(torch.tensor([4]), 3, 1)  # from a version the learner never had


def test_a_policy_version_survives_its_checkpoint_file(tmp_path):
    model = build_model(36)
    named = list(model.named_parameters())
    flat = flatten_params(named, [p.shape for _, p in named], torch.float32)
    assert save_flat(flat, str(tmp_path / "v3.pt")) == flat.nbytes
    back = unflatten_params(load_flat(str(tmp_path / "v3.pt")))
    assert list(back) == [n for n, _ in named]
    assert all(torch.equal(back[n], p) for n, p in named)


class _Wire:
    """A broadcast group of two that records what rank 0 sends and replays it to rank 1."""

    def __init__(self) -> None:
        self.sent: list[torch.Tensor] = []

    def broadcast(self, tensor: torch.Tensor) -> None:
        self.sent.append(tensor.clone())


class _Receiver:
    def __init__(self, wire: _Wire) -> None:
        self.queue = list(wire.sent)

    def broadcast(self, tensor: torch.Tensor) -> None:
        tensor.copy_(self.queue.pop(0))


@pytest.mark.parametrize("bucket_bytes", [1, 3000, 10**9])
def test_the_received_stream_rebuilds_the_senders_weights(bucket_bytes):
    """receive_params yields (name, tensor) per bucket by the sender's rule: a one-parameter,
    a mid-size and a single bucket all rebuild the sender's model exactly."""
    sender, receiver = build_model(36, seed=1), build_model(36, seed=2)
    wire = _Wire()
    named = list(sender.named_parameters())
    shapes = [p.shape for _, p in named]
    cpu = torch.device("cpu")
    broadcast_params(wire, iter(named), shapes, torch.float32, bucket_bytes, cpu)
    layout = [(n, p.shape) for n, p in receiver.named_parameters()]
    stream = receive_params(_Receiver(wire), layout, torch.float32, bucket_bytes, cpu)
    load_full_state_dict(receiver, stream)
    assert all(
        torch.equal(a, b) for a, b in zip(sender.parameters(), receiver.parameters(), strict=True)
    )
