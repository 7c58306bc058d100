"""Generation with Hugging Face ``generate``: batched, left-padded, with the KV cache.

A policy folder saved by the ILQL stage (the LM plus its Q and V heads) generates with ILQL
decoding instead (:func:`rayrlhf.ilql_model.ilql_sample`, the β and top-k saved with it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

from collections.abc import Iterable, Mapping

import torch
from transformers import LogitsProcessorList, StoppingCriteriaList

from rayrlhf.config import Config
from rayrlhf.generation.sampling import InverseCdfSampler, StopOnText
from rayrlhf.ilql_model import ilql_sample, is_ilql_folder, load_ilql
from rayrlhf.lora import adapter_tensors, load_adapter_tensors
from rayrlhf.models import load_policy
from rayrlhf.weights.transport import load_full_state_dict


class HFEngine:
    """The policy as a Hugging Face model on ``learner.device``, in ``learner.precision``."""

    def __init__(self, config: Config, tokenizer: PreTrainedTokenizerBase) -> None:
        self.cfg, self.tokenizer = config.rollout, tokenizer
        self.device = torch.device(config.learner.device)
        policy, precision = config.model.policy, config.learner.precision
        self.ilql = is_ilql_folder(policy)
        # LoRA: the base plus adapters, as the learner holds them; only the adapters travel.
        self.lora = config.online_lora is not None
        self.model = (
            load_ilql(policy, precision)[0]
            if self.ilql
            else load_policy(policy, precision, config.online_lora)
        )
        self.model.to(self.device)
        self.model.eval().requires_grad_(False)  # never trained here; weights come from sync

    @torch.no_grad()
    def generate(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        chunk_seed: int,
        row_seeds: list[int],
        max_new_tokens: int | None = None,
        stop: list[str] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, P) left-padded prompts → (B, R) response ids and (B, R) behaviour log-probs.

        One generator seeded by ``chunk_seed`` samples the whole chunk (``row_seeds`` unused):
        a chunk re-run anywhere samples the same responses. The log-probs are under
        softmax(logits / temperature), before any top-p cut. A row that produced a ``stop``
        string is padded from there on, as after EOS.
        """
        tok = self.tokenizer
        if self.ilql:
            if stop or max_new_tokens:
                raise ValueError("an ILQL policy generates single-turn responses only")
            return self._generate_ilql(prompt_ids, prompt_mask, chunk_seed)
        sampler = InverseCdfSampler(
            self.cfg.temperature,
            self.cfg.top_p,
            torch.Generator(self.device).manual_seed(chunk_seed),
        )
        # Greedy over the sampler's one-hot scores: the sampler draws, generate keeps the KV
        # cache, EOS and padding (see rayrlhf.generation.sampling for why not do_sample).
        out = self.model.generate(
            input_ids=prompt_ids.to(self.device),
            attention_mask=prompt_mask.to(self.device),
            do_sample=False,
            logits_processor=LogitsProcessorList([sampler]),
            max_new_tokens=max_new_tokens or self.cfg.max_new_tokens,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
            use_cache=True,
            stopping_criteria=StoppingCriteriaList(
                [StopOnText(tok, stop, prompt_ids.shape[1])] if stop else []
            ),
        )
        response_ids = out[:, prompt_ids.shape[1] :]
        return response_ids.cpu(), sampler.logprobs().cpu()

    def _generate_ilql(
        self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, chunk_seed: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """ILQL decoding: the policy's log-probs shifted by β·(min target Q − V), top-k, then
        the rollout's temperature and top-p."""
        tok = self.tokenizer
        response_ids, logprobs = ilql_sample(
            self.model,
            prompt_ids.to(self.device),
            prompt_mask.to(self.device),
            max_new_tokens=self.cfg.max_new_tokens,
            beta=self.model.decoding["beta"],
            top_k=self.model.decoding["top_k"],
            temperature=self.cfg.temperature,
            eos_id=tok.eos_token_id,
            pad_id=tok.pad_token_id,
            generator=torch.Generator(self.device).manual_seed(chunk_seed),
            top_p=self.cfg.top_p,
        )
        return response_ids.cpu(), logprobs.cpu()

    def load_weights(
        self, weights: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]]
    ) -> None:
        """Copy a full state dict (Hugging Face names) into the model, all names checked; with
        LoRA the adapter tensors into the adapters (the frozen base is never written)."""
        if self.lora:
            load_adapter_tensors(self.model, weights)
        else:
            load_full_state_dict(self.model, weights)

    def named_shapes(self) -> list[tuple[str, torch.Size]]:
        """What a sync sends, in module order: the model's parameters (tied ones once), or
        with LoRA its adapter tensors."""
        params = adapter_tensors(self.model) if self.lora else self.model.named_parameters()
        return [(n, p.shape) for n, p in params]

    @property
    def dtype(self) -> torch.dtype:
        """The dtype weights arrive in."""
        return next(self.model.parameters()).dtype

    def checksum(self) -> float:
        """Sum of all parameters."""
        return float(sum(p.double().sum() for p in self.model.parameters()))

    def sleep(self) -> None:
        """Nothing to release: the model stays resident."""

    def wake(self) -> None:
        """Nothing to restore."""
