"""Generation engines behind the rollout worker (``rollout.backend``): Hugging Face ``generate``
(:mod:`.hf`) or an in-process vLLM engine (:mod:`.vllm_engine`, installed by
``launch/setup.sh --vllm``).

Both take left-padded prompt ids and return right-padded response ids with the behaviour
log-probs of the sampled tokens at the sampling temperature; the worker applies the EOS rule and
builds the :class:`~rayrlhf.experience.Rollout`. Both load new weights in place from a full
Hugging Face-named state dict or from a stream of them (the broadcast path).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

from collections.abc import Iterable, Mapping
from typing import Protocol

import torch

from rayrlhf.config import Config


class Engine(Protocol):
    """What the rollout worker needs of a generation engine."""

    def generate(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        chunk_seed: int,
        row_seeds: list[int],
        max_new_tokens: int | None = None,
        stop: list[str] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, P) left-padded prompts → (B, R) response ids and (B, R) float32 log-probs.

        ``max_new_tokens`` (default ``rollout.max_new_tokens``) and ``stop``, strings that end a
        row like EOS (a tool call's end; the string is kept): one turn of an episode.
        """
        ...

    def load_weights(
        self, weights: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]]
    ) -> None:
        """Copy full parameters, by Hugging Face name, into the engine's model in place."""
        ...

    def named_shapes(self) -> list[tuple[str, torch.Size]]:
        """The Hugging Face parameters (tied ones once) in module order: the broadcast layout."""
        ...

    def checksum(self) -> float:
        """Sum of every weight the engine generates with (a cheap equality check)."""
        ...

    def sleep(self) -> None:
        """Release memory while the learner trains (a no-op where the engine cannot)."""
        ...

    def wake(self) -> None:
        """Undo :meth:`sleep` before generating."""
        ...


def make_engine(config: Config, tokenizer: PreTrainedTokenizerBase) -> Engine:
    """The engine ``rollout.backend`` names, holding the initial policy."""
    if config.rollout.backend == "vllm":
        from rayrlhf.ilql_model import is_ilql_folder

        if is_ilql_folder(config.model.policy):
            raise ValueError(
                f"{config.model.policy} is an ILQL policy: its decoding reads the Q and V heads, "
                "which vLLM does not run; use rollout.backend: hf"
            )
        from rayrlhf.generation.vllm_engine import VllmEngine  # vLLM only where it is used

        return VllmEngine(config, tokenizer)
    from rayrlhf.generation.hf import HFEngine

    return HFEngine(config, tokenizer)
