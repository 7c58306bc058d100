"""LoRA adapters through peft: the only module that imports peft.

A model with adapters is a peft model around the Hugging Face one: the base weights are frozen,
and every adapted linear layer ``W`` gains two small trainable matrices, ``A`` (r, in) and
``B`` (out, r), so that it computes ``x·Wᵀ + s·x·Aᵀ·Bᵀ`` with ``s = alpha / r``. ``B`` starts at
zero: at step 0 the model is exactly its base.

What travels (weight sync) and what a checkpoint holds are the ``A`` and ``B`` tensors only,
named as peft names the parameters (``...c_attn.lora_A.default.weight``), so the learner's and
a rollout worker's copies line up by name. The frozen base is never written to: merged weights
(for vLLM, or for a plain HF folder) are computed into new tensors from the untouched base,
never merged and unmerged in place (in bf16 that is not an exact inverse, and the base would
drift a little with every sync).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from rayrlhf.config import LoraConfig
from rayrlhf.weights.transport import copy_named

if TYPE_CHECKING:
    import peft
    from peft.tuners.lora import LoraLayer


def _peft() -> Any:
    """peft, imported when adapters are used: it imports transformers' DeepSpeed integration,
    and so DeepSpeed, before the learner has chosen DeepSpeed's accelerator, and a run without
    adapters needs none of it."""
    import peft

    return peft


def _lora_layer() -> type:
    from peft.tuners.lora import LoraLayer

    return LoraLayer


ADAPTER = "default"  # peft's name for a model's one adapter: the only one we use


def add_adapters(model: nn.Module, cfg: LoraConfig, causal_lm: bool = True) -> nn.Module:
    """``model`` (a transformers model) wrapped with fresh LoRA adapters of ``cfg``.

    The base is frozen, the adapters trainable (``A`` random, ``B`` zero). ``causal_lm``: the
    policy (peft's causal-LM task type, so ``generate`` works); False for a bare backbone (the
    value model's, whose scalar head stays outside and trains in full).
    """
    from transformers.pytorch_utils import Conv1D

    peft = _peft()
    config = peft.LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=cfg.target_modules,
        # GPT-2's Conv1D stores its weight as (in, out): the delta is transposed to match.
        fan_in_fan_out=any(isinstance(m, Conv1D) for m in model.modules()),
        bias="none",
        task_type=peft.TaskType.CAUSAL_LM if causal_lm else None,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # peft's notes on Conv1D and task types
        # Adapters in the base's dtype: a bf16 rollout computes them as the bf16 learner does.
        return peft.get_peft_model(model, config, autocast_adapter_dtype=False)


def is_adapter_name(name: str) -> bool:
    """Whether parameter ``name`` is a LoRA ``A`` or ``B`` matrix."""
    return ".lora_A." in name or ".lora_B." in name


def has_adapters(model: nn.Module) -> bool:
    """Whether ``model`` (or a DeepSpeed engine's module) carries LoRA adapters."""
    if not any(".lora_A." in name for name, _ in model.named_parameters()):
        return False  # no adapter parameter: peft need not be imported to know
    return any(isinstance(m, _lora_layer()) for m in model.modules())


def adapter_tensors(model: nn.Module) -> list[tuple[str, Tensor]]:
    """``(name, parameter)`` of every LoRA ``A`` (r, in) and ``B`` (out, r), in module order.

    Local tensors: under ZeRO-3 a learner gathers them with
    :func:`rayrlhf.engine.iter_full_params` and ``only=is_adapter_name`` instead.
    """
    return [(n, p) for n, p in model.named_parameters() if is_adapter_name(n)]


def load_adapter_tensors(
    model: nn.Module, weights: Mapping[str, Tensor] | Iterable[tuple[str, Tensor]]
) -> None:
    """Copy adapter tensors (names as :func:`adapter_tensors` gives them) into ``model``.

    Every adapter must be given, and nothing else: a base weight arriving here is an error,
    never a write into the frozen base. A mapping is checked before anything is copied.
    """
    own = dict(adapter_tensors(model))
    copy_named(own, set(own), weights, "adapter sync")


def _peft_model(model: nn.Module) -> tuple[str, peft.PeftModel]:
    """The peft model inside ``model`` and its name prefix ('' when it is ``model``)."""
    for name, module in model.named_modules():
        if isinstance(module, _peft().PeftModel):
            return (f"{name}." if name else ""), module
    raise ValueError(f"{type(model).__name__} carries no LoRA adapters")


@contextmanager
def adapters_disabled(model: nn.Module) -> Iterator[None]:
    """Inside, ``model`` computes as its frozen base (the adapters are skipped, not zeroed).

    ``model`` may be a DeepSpeed engine, its ``module``, or a module holding a peft model (the
    value model). The learner computes reference log-probs this way (``reference.mode:
    learner``): the base *is* the initial policy, so no reference copy is needed. The
    adapters' ``requires_grad`` flags are restored on exit (peft's toggle would set them).
    """
    peft_models = [m for m in model.modules() if isinstance(m, _peft().PeftModel)]
    if not peft_models:
        raise ValueError(f"{type(model).__name__} carries no LoRA adapters to disable")
    flags = [(p, p.requires_grad) for n, p in model.named_parameters() if is_adapter_name(n)]
    try:
        with ExitStack() as stack:
            for m in peft_models:
                stack.enter_context(m.disable_adapter())
            yield
    finally:
        for param, flag in flags:
            param.requires_grad_(flag)


def merged_state_dict(
    model: nn.Module, tensors: Mapping[str, Tensor] | None = None
) -> dict[str, Tensor]:
    """The plain Hugging Face state dict of ``model`` with its adapters merged in.

    ``tensors`` holds ``model``'s parameters by name (e.g. gathered full ones on a ZeRO-3
    learner; default: the model's own). Each adapted weight ``W`` becomes a *new* tensor
    ``W + s·B·A`` (computed in float32, rounded once to ``W``'s dtype); every other tensor is
    passed through as it is. Nothing in ``model`` or ``tensors`` is written to.
    """
    prefix, pm = _peft_model(model)
    tensors = dict(model.named_parameters()) if tensors is None else tensors
    layers = {
        f"{prefix}{name}": m for name, m in pm.named_modules() if isinstance(m, _lora_layer())
    }
    plain = f"{prefix}base_model.model."
    out: dict[str, Tensor] = {}
    for name, tensor in tensors.items():
        if is_adapter_name(name):
            continue
        owner = name.rsplit(".", 2)[0] if name.endswith(".base_layer.weight") else None
        if owner in layers:
            tensor = _merged(layers[owner], tensor, tensors, owner)
        out[name.removeprefix(plain).replace(".base_layer.", ".")] = tensor
    return out


def _merged(layer: LoraLayer, weight: Tensor, tensors: Mapping[str, Tensor], owner: str) -> Tensor:
    """``weight + s·B·A`` of one adapted linear layer, as a new tensor in ``weight``'s dtype."""
    if ADAPTER not in layer.lora_A:
        raise ValueError(f"{owner}: only linear LoRA layers can be merged")
    a = tensors[f"{owner}.lora_A.{ADAPTER}.weight"].float()  # (r, in)
    b = tensors[f"{owner}.lora_B.{ADAPTER}.weight"].float()  # (out, r)
    delta = (b @ a) * layer.scaling[ADAPTER]  # (out, in)
    if layer.fan_in_fan_out:
        delta = delta.T
    return (weight.float() + delta.to(weight.device)).to(weight.dtype)


def adapter_folder(path: str | Path) -> Path:
    """Where the adapter folder of a model saved at ``path`` goes: beside it, ``<name>_adapter``."""
    path = Path(path)
    return path.parent / f"{path.name}_adapter"


def save_lora_model(model: nn.Module, path: str | Path, tensors: Mapping[str, Tensor]) -> None:
    """Write ``model`` twice: merged, as a plain HF folder at ``path`` (loads anywhere, with
    ``AutoModelForCausalLM``), and as peft's adapter folder at :func:`adapter_folder` (loads
    with ``PeftModel.from_pretrained`` on the base it names). ``tensors``: the full parameters.
    """
    prefix, pm = _peft_model(model)
    own = {name.removeprefix(prefix): t for name, t in tensors.items()}
    pm.get_base_model().save_pretrained(str(path), state_dict=merged_state_dict(model, tensors))
    adapters = {name: t for name, t in own.items() if is_adapter_name(name)}
    pm.save_pretrained(str(adapter_folder(path)), state_dict=adapters)
