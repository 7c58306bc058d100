"""How much arithmetic a learner step does, and how fast the device could do it.

The FLOP count follows the model's own modules, so it holds for any architecture transformers
builds: every 2-D weight that multiplies a token's activations (``nn.Linear``, GPT-2's
``Conv1D``) costs ``2·in·out`` per token in a forward pass, attention costs ``4·d`` per token
per earlier position per layer (scores and the weighted sum), and the output head ``2·d·V`` only
where it runs (the positions that predict response tokens). A backward pass costs twice its
forward. Only real tokens count: padding is work the device did for nothing, which is what the
padding fraction reports. MFU is achieved FLOP/s over the device's peak (``learner.peak_tflops``,
or a short matrix-product probe at start).
"""

from __future__ import annotations

import time

import torch
from torch import nn


def _numel(p: torch.Tensor) -> int:
    return int(getattr(p, "ds_numel", p.numel()))  # ZeRO-3 keeps the full size aside


def matmul_params(model: nn.Module) -> tuple[int, int]:
    """(weights multiplied per token in the body, in the output head) of ``model``'s 2-D
    projections; embeddings are lookups and cost nothing."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    body = head_n = 0
    for module in model.modules():
        # The module's own weight only: peft's LoRA wrapper exposes its base layer's weight as
        # an attribute too, and the base layer is counted where it sits.
        weight = module._parameters.get("weight")
        if weight is None or type(module).__name__ not in ("Linear", "Conv1D"):
            continue
        if module is head:
            head_n = _numel(weight)
        else:
            body += _numel(weight)
    return body, head_n


def forward_flops(
    body_params: int,
    layers: int,
    hidden: int,
    row_tokens: torch.Tensor,
    head_tokens: int,
    head_params: int,
) -> float:
    """FLOPs of one forward pass over rows of ``row_tokens`` (B,) real tokens each, with the
    output head at ``head_tokens`` positions in all."""
    n = row_tokens.double()
    body = 2.0 * body_params * float(n.sum())
    attention = 2.0 * layers * hidden * float((n * (n + 1)).sum())  # Σ_c 4·d·c, causal
    return body + attention + 2.0 * head_params * head_tokens


class FlopCounter:
    """FLOPs of a learner's passes over a batch, from its policy and value modules."""

    def __init__(self, policy: nn.Module, value: nn.Module | None) -> None:
        config = policy.config
        self.layers, self.hidden = config.num_hidden_layers, config.hidden_size
        self.policy_body, self.head = matmul_params(policy)
        self.value_body = matmul_params(value)[0] if value is not None else 0
        models = [m for m in (policy, value) if m is not None]
        total = sum(_numel(p) for m in models for p in m.parameters())
        trained = sum(_numel(p) for m in models for p in m.parameters() if p.requires_grad)
        self.trainable = trained / max(total, 1)  # < 1 with LoRA: frozen weights get no grads

    def train_flops(self, row_tokens: torch.Tensor, response_tokens: int, epochs: int) -> float:
        """FLOPs of ``epochs`` forward-and-backward passes of the policy (and value model).

        A backward pass costs two forwards: the inputs' gradients and the weights'. With LoRA
        the frozen weights' gradients are not computed: 1 + the trainable share.
        """
        fwd = forward_flops(
            self.policy_body, self.layers, self.hidden, row_tokens, response_tokens, self.head
        )
        if self.value_body:
            fwd += forward_flops(self.value_body, self.layers, self.hidden, row_tokens, 0, 0)
        return epochs * fwd * (2.0 + self.trainable)


def probe_peak_tflops(device: torch.device, dtype: torch.dtype, seconds: float = 0.5) -> float:
    """The device's matrix-product TFLOP/s, measured: the best of square products for about
    ``seconds`` (a large product is the most a device does; a model's mix of shapes less)."""
    n = 4096 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best, end = 0.0, time.perf_counter() + seconds
    while True:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = max(best, 2.0 * n**3 / (time.perf_counter() - start) / 1e12)
        if time.perf_counter() > end:
            return best
