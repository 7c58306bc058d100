"""Pure memory formulas, in bytes. No torch, no I/O: every figure here can be checked by hand.

Model states (mixed precision bf16 + fp32 master weights + Adam; ZeRO paper, Rajbhandari et al.
2020, Ψ parameters, N data-parallel ranks, K = 12)::

    bf16 weights 2Ψ, bf16 gradients 2Ψ, optimizer states KΨ = 12Ψ (fp32 master 4 + m 4 + v 4)

    stage 0   2Ψ + 2Ψ + 12Ψ          stage 2   2Ψ + (2 + 12)Ψ/N
    stage 1   2Ψ + 2Ψ + 12Ψ/N        stage 3   (2 + 2 + 12)Ψ/N + live layer

plus what DeepSpeed adds on top of the paper's 16 bytes:

- ``grad32``: the fp32 copy of the gradient partition the optimizer steps on (4 bytes/param of the
  rank's partition; stage 3 builds it one ``sub_group_size`` group at a time).
- ``live``: ZeRO-3 gathers a layer's full bf16 weights and gradients to run it: 4 × the largest
  layer, as in DeepSpeed's estimator.

Offload: ``optimizer`` moves the 12 bytes and the fp32 gradients to CPU (the GPU then also keeps
no gradient partition at stage 2/3: reduced buckets are copied straight to pinned CPU memory);
``optimizer+params`` (stage 3) also keeps the bf16 weights partition on CPU.

Activations (Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer
Models", eq. 2 with tensor parallelism t = 1), per transformer layer, 16-bit activations::

    no checkpointing      s·b·h·(34 + 5·a·s/h)   bytes   (s seq, b micro-batch, h hidden, a heads)
    full checkpointing    2·s·b·h               bytes   (each layer's bf16 input) plus one layer's
                                                         full activations while it is recomputed

Attention kernels that never materialise the s×s scores (SDPA / flash attention) drop the
5·a·s/h term (``flash=True``). The LM head adds s·b·V·10 bytes: bf16 logits, the fp32
log-softmax rayrlhf takes over them, and its fp32 gradient.
"""

from __future__ import annotations

GIB = 1024**3
BF16 = 2
FP32 = 4
ADAM_K = 12  # fp32 master weights + Adam m + v, bytes per parameter
OFFLOADS = ("none", "optimizer", "optimizer+params")
# Per-GPU-process constant: CUDA context, NCCL and cuBLAS workspaces (~1-2 GiB on H100/A100).
CONTEXT_BYTES = 2 * GIB
# The caching allocator never packs perfectly: charge this fraction of everything else.
FRAGMENTATION = 0.10
# DeepSpeed's defaults (zero/config.py): elements per bucket / sub-group.
REDUCE_BUCKET = 500_000_000
ALLGATHER_BUCKET = 500_000_000
SUB_GROUP_SIZE = 1_000_000_000


def model_state_bytes(
    params: int,
    largest_layer: int,
    n_ranks: int,
    stage: int,
    offload: str = "none",
    sub_group_size: int = SUB_GROUP_SIZE,
) -> dict[str, int]:
    """Per-GPU model states of one trained model: weights16, grads16, optim, grad32, live.

    ``params`` and ``largest_layer`` in parameters; ``n_ranks`` data-parallel learner GPUs.
    Raises ValueError for a combination DeepSpeed does not run (offload at stage 0, params
    offload below stage 3).
    """
    if offload not in OFFLOADS:
        raise ValueError(f"offload must be one of {OFFLOADS}, got {offload!r}")
    if stage == 0 and offload != "none":
        raise ValueError("ZeRO stage 0 has no offload")
    if offload == "optimizer+params" and stage != 3:
        raise ValueError("parameter offload needs ZeRO stage 3")
    opt_off = offload != "none"
    shard = params // n_ranks if stage >= 1 else params  # the rank's optimizer partition
    out = {"weights16": BF16 * params, "grads16": BF16 * params, "live": 0}
    out["optim"] = 0 if opt_off else ADAM_K * shard
    out["grad32"] = 0 if opt_off else FP32 * shard
    if stage >= 2:
        out["grads16"] = 0 if opt_off else BF16 * (params // n_ranks)
    if stage == 3:
        out["weights16"] = 0 if offload == "optimizer+params" else BF16 * (params // n_ranks)
        out["grad32"] = 0 if opt_off else FP32 * min(shard, sub_group_size)
        out["live"] = 2 * BF16 * largest_layer
    return out


def offload_cpu_bytes(params: int, offload: str, ranks_on_node: int, n_ranks: int) -> int:
    """CPU bytes on one node for the offloaded states of the ranks it hosts.

    Optimizer offload: 12 (K) + 4 (fp32 gradients DeepSpeed's CPU Adam reads) bytes per parameter;
    parameter offload adds the 2-byte bf16 weights. Each rank keeps its 1/n_ranks partition.
    """
    per_param = {"none": 0, "optimizer": ADAM_K + FP32, "optimizer+params": ADAM_K + FP32 + BF16}
    return per_param[offload] * params * ranks_on_node // n_ranks


def load_cpu_bytes(
    params: int, largest_layer: int, ranks_on_node: int, bytes_per_param: int, zero_init: bool
) -> int:
    """CPU bytes on one node while learner ranks build the model before ZeRO partitions it.

    Without ``deepspeed.zero.Init`` every rank holds the whole model (rayrlhf's learner loads it in
    fp32: 4 bytes/param); with it, at most one layer at a time.
    """
    held = largest_layer if zero_init else params
    return ranks_on_node * bytes_per_param * held


def deepspeed_buffer_bytes(stage: int) -> int:
    """DeepSpeed's default communication buckets on a learner GPU (bf16 elements)."""
    if stage in (1, 2):
        return BF16 * (REDUCE_BUCKET + ALLGATHER_BUCKET)
    if stage == 3:
        return BF16 * REDUCE_BUCKET
    return 0


def layer_activation_bytes(seq: int, batch: int, hidden: int, heads: int, flash: bool) -> int:
    """One layer's saved activations for backward, Korthikanti eq. 2 (t = 1)."""
    per_token = 34 * hidden + (0 if flash else 5 * heads * seq)
    return seq * batch * per_token


def activation_bytes(
    seq: int,
    batch: int,
    hidden: int,
    heads: int,
    layers: int,
    vocab: int,
    checkpointing: bool,
    flash: bool = False,
) -> int:
    """Training activations of one micro-batch on one GPU; ``vocab`` 0 for a scalar head."""
    layer = layer_activation_bytes(seq, batch, hidden, heads, flash)
    body = layers * 2 * seq * batch * hidden + layer if checkpointing else layers * layer
    return body + seq * batch * vocab * (BF16 + 2 * FP32)


def kv_cache_bytes(
    layers: int, kv_heads: int, head_dim: int, batch: int, tokens: int, dtype_bytes: int = BF16
) -> int:
    """Generation KV cache: K and V for every layer, head, sequence and token."""
    return 2 * layers * kv_heads * head_dim * dtype_bytes * batch * tokens


def inference_bytes(
    seq: int, batch: int, hidden: int, heads: int, vocab: int, flash: bool = False
) -> int:
    """Transient forward memory without gradients: one layer's activations + the logits.

    Conservative: a no-grad forward frees each layer's tensors as it goes; the LM head's bf16
    logits and their fp32 log-softmax (6 bytes) coexist. ``vocab`` 0 for a scalar head.
    """
    layer = layer_activation_bytes(seq, batch, hidden, heads, flash)
    return layer + seq * batch * vocab * (BF16 + FP32)


def with_overhead(used: int, processes: int = 1) -> tuple[int, int]:
    """(overhead, total): a CUDA context per process plus fragmentation on the rest."""
    overhead = processes * CONTEXT_BYTES + int(FRAGMENTATION * used)
    return overhead, used + overhead
