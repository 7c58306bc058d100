"""Learner → rollout weight transport, two ways.

- ``object_store``: learner rank 0 returns the gathered state dict from a Ray task; Ray keeps it
  in the object store and every rollout worker fetches it by reference
  (:func:`load_full_state_dict`).
- ``broadcast``: learner rank 0 and the R rollout workers form their own torch.distributed group
  (gloo on CPU, nccl on GPU; separate from the learners' group) and rank 0 broadcasts the weights
  in flat buckets of ``bucket_mb``. Both sides cut buckets by the same rule over the same
  parameter order, so only the bucket payloads travel.
"""

from __future__ import annotations

import datetime
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

GROUP_TIMEOUT = datetime.timedelta(minutes=10)


@dataclass
class FlatWeights:
    """Full parameters in one contiguous byte buffer, plus where each tensor lies in it.

    Ray keeps a numpy buffer in shared memory and hands it to every worker on the node without a
    copy; a dict of torch tensors is pickled and rebuilt tensor by tensor in every worker.
    """

    buffer: np.ndarray  # (total_bytes,) uint8
    index: list[tuple[str, torch.Size, int]]  # (name, shape, byte offset), in module order
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        """Size of the payload in bytes."""
        return int(self.buffer.nbytes)


def flatten_params(
    params: Iterable[tuple[str, torch.Tensor]], shapes: list[torch.Size], dtype: torch.dtype
) -> FlatWeights:
    """Copy full parameters (a generator may gather each as it goes) into one flat buffer."""
    itemsize = dtype.itemsize
    buffer = np.empty(sum(s.numel() for s in shapes) * itemsize, dtype=np.uint8)
    index, offset = [], 0
    for (name, tensor), shape in zip(params, shapes, strict=True):
        nbytes = shape.numel() * itemsize
        view = torch.from_numpy(buffer[offset : offset + nbytes]).view(dtype)
        view.copy_(tensor.detach().reshape(-1).to("cpu", dtype))
        index.append((name, shape, offset))
        offset += nbytes
    return FlatWeights(buffer, index, dtype)


def unflatten_params(flat: FlatWeights) -> dict[str, torch.Tensor]:
    """Read-only tensor views into ``flat.buffer`` by name (no copy)."""
    itemsize = flat.dtype.itemsize
    with warnings.catch_warnings():
        # The buffer Ray hands over is read-only; these views are only ever read from.
        warnings.simplefilter("ignore", UserWarning)
        base = torch.from_numpy(flat.buffer)
    return {
        name: base[off : off + shape.numel() * itemsize].view(flat.dtype).view(shape)
        for name, shape, off in flat.index
    }


def save_flat(flat: FlatWeights, path: str) -> int:
    """Write ``flat`` to ``path`` (a checkpoint's copy of a policy version); returns its bytes."""
    payload = {"buffer": torch.from_numpy(flat.buffer), "index": flat.index, "dtype": flat.dtype}
    torch.save(payload, path)
    return flat.nbytes


def load_flat(path: str) -> FlatWeights:
    """Read what :func:`save_flat` wrote."""
    # Our own file inside a checkpoint whose hashes were verified: not an untrusted pickle.
    payload = torch.load(path, weights_only=False)
    return FlatWeights(payload["buffer"].numpy(), payload["index"], payload["dtype"])


def load_full_state_dict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]]
) -> None:
    """Copy a full (gathered) state dict into ``model``, failing on any name mismatch.

    ``state_dict`` may be a stream of (name, tensor) pairs (the broadcast path): each is copied
    as it arrives. Tied weights appear once in a gathered state dict, so only parameters that
    share storage with a loaded one may be missing; anything unexpected or otherwise missing is
    an error.
    """
    # named_parameters() lists a tied weight once; state_dict() names its aliases too.
    copy_named(dict(model.named_parameters()), set(model.state_dict()), state_dict, "weight sync")


def copy_named(
    own: Mapping[str, torch.Tensor],
    known: set[str],
    weights: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]],
    what: str,
) -> None:
    """Copy ``weights`` into the tensors ``own`` by name; ``known`` names may also arrive (tied
    aliases: skipped). Every name of ``own`` must arrive, and no name outside ``known``; a
    mapping is checked before anything is copied (all or nothing). ``what`` names the errors."""
    if isinstance(weights, Mapping):
        _check_names(set(weights) - known, set(own) - set(weights), what)
    pairs = weights.items() if isinstance(weights, Mapping) else weights
    seen: set[str] = set()
    unexpected: list[str] = []
    with torch.no_grad():
        for name, src in pairs:
            if name not in known:
                unexpected.append(name)
                continue
            seen.add(name)
            param = own.get(name)
            if param is None:  # a tied alias of a parameter listed under another name
                continue
            if src.shape != param.shape:
                raise ValueError(f"{what} shape mismatch for {name}: {src.shape} vs {param.shape}")
            param.copy_(src.to(param.device, param.dtype))
    _check_names(set(unexpected), set(own) - seen, what)


def _check_names(unexpected: set[str], missing: set[str], what: str) -> None:
    if unexpected or missing:
        raise ValueError(
            f"{what} mismatch: unexpected {sorted(unexpected)[:5]}, missing {sorted(missing)[:5]}"
        )


class BroadcastGroup:
    """A process group of learner rank 0 (group rank 0) and the rollout workers (ranks 1..R)."""

    def __init__(self, backend: str, host: str, port: int, rank: int, world_size: int) -> None:
        store = dist.TCPStore(host, port, world_size, rank == 0, timeout=GROUP_TIMEOUT)
        if backend == "gloo":
            self.pg = dist.ProcessGroupGloo(store, rank, world_size, GROUP_TIMEOUT)
        else:
            self.pg = dist.ProcessGroupNCCL(store, rank, world_size)

    def broadcast(self, tensor: torch.Tensor) -> None:
        """Broadcast ``tensor`` in place from group rank 0."""
        opts = dist.BroadcastOptions()
        opts.rootRank = 0
        self.pg.broadcast([tensor], opts).wait()


def _buckets(
    params: Iterable[tuple[str, torch.Tensor]], itemsize: int, bucket_bytes: int
) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """Group ``params`` in order; a bucket closes once it holds ``bucket_bytes`` or more."""
    bucket: list[tuple[str, torch.Tensor]] = []
    size = 0
    for name, tensor in params:
        bucket.append((name, tensor))
        size += tensor.numel() * itemsize
        if size >= bucket_bytes:
            yield bucket
            bucket, size = [], 0
    if bucket:
        yield bucket


def _signature(shapes: list[torch.Size], device: torch.device) -> torch.Tensor:
    # Parameter count and total elements: a cheap check that both sides hold the same model.
    return torch.tensor([len(shapes), sum(s.numel() for s in shapes)], dtype=torch.long).to(device)


def broadcast_params(
    group: BroadcastGroup,
    params: Iterable[tuple[str, torch.Tensor]],
    shapes: list[torch.Size],
    dtype: torch.dtype,
    bucket_bytes: int,
    device: torch.device,
) -> int:
    """Send full parameters (in module order) from group rank 0; returns the bytes sent.

    ``params`` may be a generator that gathers each ZeRO-3 shard as it goes: a parameter is copied
    into the bucket before the generator moves on.
    """
    group.broadcast(_signature(shapes, device))
    itemsize = dtype.itemsize
    # Copy each parameter as it is yielded: a ZeRO-3 gather is released when the generator moves
    # on, and its memory may be reused.
    copied = (
        (n, t.detach().reshape(-1).to(device=device, dtype=dtype, copy=True)) for n, t in params
    )
    sent = 0
    for chunk in _buckets(copied, itemsize, bucket_bytes):
        flat = torch.cat([t for _, t in chunk])
        group.broadcast(flat)
        sent += flat.numel() * itemsize
    return sent


def receive_params(
    group: BroadcastGroup,
    named_shapes: list[tuple[str, torch.Size]],
    dtype: torch.dtype,
    bucket_bytes: int,
    device: torch.device,
) -> Iterator[tuple[str, torch.Tensor]]:
    """Receive broadcast parameters as (name, tensor) pairs, a bucket at a time, in the sender's
    order and bucket rule; ``named_shapes`` is the receiving model's layout (module order).

    Each tensor is a view into its bucket: consume (copy) it before asking for the next bucket.
    The stream must be read to its end, or the sender blocks.
    """
    signature = _signature([shape for _, shape in named_shapes], device)
    theirs = torch.zeros_like(signature)
    group.broadcast(theirs)
    if not torch.equal(theirs, signature):
        raise ValueError(
            f"weight sync mismatch: learner sends {theirs.tolist()} (params, elements), "
            f"this rollout model has {signature.tolist()}"
        )
    shapes = dict(named_shapes)
    # Meta tensors carry the sizes the bucket rule reads, and no memory.
    layout = ((name, torch.empty(shape, device="meta")) for name, shape in named_shapes)
    for chunk in _buckets(layout, dtype.itemsize, bucket_bytes):
        flat = torch.empty(sum(t.numel() for _, t in chunk), dtype=dtype, device=device)
        group.broadcast(flat)
        offset = 0
        for name, t in chunk:
            yield name, flat[offset : offset + t.numel()].view(shapes[name])
            offset += t.numel()
