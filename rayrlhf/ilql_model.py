"""An ILQL policy: a causal LM with trlX's heads, saved and loaded as one folder.

The heads read the LM's last hidden state: two Q heads (one value per vocabulary token) with
target copies that only Polyak averaging moves, and a V head (one value per state). Each is a
small MLP (hidden → 2·hidden → out), as in trlX. The folder is the LM's own Hugging Face folder
plus ``ilql_heads.safetensors`` and ``ilql.json`` (head shapes and the decoding defaults), so
the LM alone still loads anywhere, and :func:`load_ilql` loads policy and heads together.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from transformers import DynamicCache

from rayrlhf.algos.ilql import ilql_logprobs, polyak_update

HEADS_FILE = "ilql_heads.safetensors"
META_FILE = "ilql.json"


def _mlp(hidden: int, out: int, dtype: torch.dtype) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(hidden, 2 * hidden, dtype=dtype),
        nn.ReLU(),
        nn.Linear(2 * hidden, out, dtype=dtype),
    )


class ILQLHeads(nn.Module):
    """Q heads, their target copies (no gradient) and the V head."""

    def __init__(
        self, hidden: int, vocab: int, two_qs: bool = True, dtype: torch.dtype = torch.float32
    ):
        super().__init__()
        self.q = nn.ModuleList(_mlp(hidden, vocab, dtype) for _ in range(2 if two_qs else 1))
        self.target_q = copy.deepcopy(self.q).requires_grad_(False)
        self.v = _mlp(hidden, 1, dtype)

    def forward(self, hidden: Tensor) -> tuple[list[Tensor], list[Tensor], Tensor]:
        """(..., H) hidden states → Q heads, target Q heads (each (..., V)) and V (...)."""
        qs = [q(hidden) for q in self.q]
        target_qs = [q(hidden) for q in self.target_q]
        return qs, target_qs, self.v(hidden).squeeze(-1)

    @torch.no_grad()
    def sync_targets(self, alpha: float) -> None:
        """target ← α·Q + (1 − α)·target, head by head."""
        polyak_update(self.target_q.parameters(), self.q.parameters(), alpha)


class ILQLPolicy(nn.Module):
    """A causal LM (``base``) and its :class:`ILQLHeads`."""

    def __init__(
        self, base: nn.Module, heads: ILQLHeads, beta: float = 1.0, top_k: int = 0
    ) -> None:
        super().__init__()
        self.base, self.heads = base, heads
        self.decoding = {"beta": beta, "top_k": top_k}  # saved with the folder

    def gradient_checkpointing_enable(self) -> None:
        """Checkpoint the LM's layers (the heads are two small layers each)."""
        self.base.gradient_checkpointing_enable()

    def lm(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        position_ids: Tensor | None,
        past: Any = None,
    ) -> Any:
        """The LM's output with its last hidden states (and, given ``past``, the KV cache)."""
        return self.base(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past,
            output_hidden_states=True,
            use_cache=past is not None,
        )

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None,
        position_ids: Tensor | None = None,
        states: Tensor | None = None,
    ) -> tuple[Tensor, list[Tensor], list[Tensor], Tensor]:
        """(B, T) ids → logits (B, S, V), Q and target Q heads (B, S, V) and V (B, S).

        Packed (one row of B examples, ``attention_mask`` None, positions restarting per
        example): ``states`` (B, S) index into that one row.

        S = T, or the positions ``states`` (B, S) picks: the heads, which cost more than the LM
        for a large vocabulary, then run only where ILQL reads them.
        """
        out = self.lm(input_ids, attention_mask, position_ids)
        hidden, logits = out.hidden_states[-1], out.logits
        if states is not None:
            if hidden.shape[0] == 1 < states.shape[0]:  # packed: every example in one row
                hidden = hidden.expand(states.shape[0], -1, -1)
                logits = logits.expand(states.shape[0], -1, -1)
            index = states.unsqueeze(-1)
            hidden = hidden.gather(1, index.expand(-1, -1, hidden.shape[-1]))
            logits = logits.gather(1, index.expand(-1, -1, logits.shape[-1]))
        qs, target_qs, vs = self.heads(hidden)
        return logits, qs, target_qs, vs

    def save_pretrained(self, folder: str | Path, state_dict: dict[str, Tensor] | None = None):
        """The LM's HF folder plus the heads, their shapes and the decoding defaults.

        ``state_dict``: full parameters by this module's names (``base.…``, ``heads.…``), as
        the learner gathers them; default: this module's own.
        """
        from safetensors.torch import save_file

        folder = Path(folder)
        state = state_dict if state_dict is not None else dict(self.named_parameters())
        base = {k.removeprefix("base."): v for k, v in state.items() if k.startswith("base.")}
        heads = {
            k.removeprefix("heads."): v.detach().cpu().contiguous()
            for k, v in state.items()
            if k.startswith("heads.")
        }
        self.base.save_pretrained(str(folder), state_dict=base)
        save_file(heads, str(folder / HEADS_FILE))
        meta = {
            "hidden": self.heads.v[0].in_features,
            "vocab": self.heads.q[0][-1].out_features,
            "two_qs": len(self.heads.q) == 2,
            **self.decoding,
        }
        (folder / META_FILE).write_text(json.dumps(meta, indent=1))
        return folder


def is_ilql_folder(folder: str | Path) -> bool:
    """Whether ``folder`` holds an ILQL policy (the LM plus heads)."""
    return (Path(folder) / META_FILE).is_file()


def load_ilql(folder: str | Path, precision: str = "fp32") -> tuple[ILQLPolicy, dict]:
    """The policy and heads saved by :meth:`ILQLPolicy.save_pretrained`, and the saved
    decoding defaults."""
    from safetensors.torch import load_file

    from rayrlhf.models import DTYPES, load_policy

    folder = Path(folder)
    meta = json.loads((folder / META_FILE).read_text())
    base = load_policy(str(folder), precision)
    heads = ILQLHeads(meta["hidden"], meta["vocab"], meta["two_qs"], DTYPES[precision])
    heads.load_state_dict(load_file(str(folder / HEADS_FILE)))
    return ILQLPolicy(base, heads, meta["beta"], meta["top_k"]), meta


def nucleus(logp: Tensor, top_p: float) -> Tensor:
    """(B, V) log-probs renormalised over the smallest set of tokens holding ``top_p`` of the
    mass (the most likely token always stays)."""
    sorted_logp, order = logp.sort(-1, descending=True)
    before = sorted_logp.exp().cumsum(-1) - sorted_logp.exp()  # mass of the better tokens
    drop = (before >= top_p).scatter(-1, order, before >= top_p)
    return logp.masked_fill(drop, float("-inf")).log_softmax(-1)


@torch.no_grad()
def ilql_sample(
    model: ILQLPolicy,
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    *,
    max_new_tokens: int,
    beta: float,
    top_k: int,
    temperature: float,
    eos_id: int,
    pad_id: int,
    generator: torch.Generator,
    top_p: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """(B, P) left-padded prompts → (B, R) response ids and (B, R) log-probs of the sampled
    tokens under the ILQL-shifted distribution at ``temperature``, with the KV cache.

    Each step samples from log π + β·(min target Q − V) over the ``top_k`` best tokens, divided
    by the temperature, then cut to the smallest set holding ``top_p`` of the mass (nucleus;
    1 keeps all). The log-probs are those of the distribution sampled from. Finished rows
    (after EOS) get ``pad_id`` and log-prob 0.
    """
    mask = prompt_mask.clone()
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    ids, past = prompt_ids, DynamicCache()
    done = torch.zeros(len(prompt_ids), dtype=torch.bool, device=prompt_ids.device)
    tokens, logprobs = [], []
    for _ in range(max_new_tokens):
        out = model.lm(ids, mask, positions, past)
        past = out.past_key_values
        _, target_qs, v = model.heads(out.hidden_states[-1][:, -1])
        logp = ilql_logprobs(out.logits[:, -1], target_qs, v, beta, top_k)
        logp = (logp / temperature).log_softmax(-1)
        if top_p < 1.0:
            logp = nucleus(logp, top_p)
        token = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(-1)
        token = torch.where(done, torch.full_like(token, pad_id), token)
        tokens.append(token)
        logprobs.append(torch.where(done, 0.0, logp.gather(-1, token.unsqueeze(-1)).squeeze(-1)))
        done = done | (token == eos_id)
        if bool(done.all()):
            break
        ids = token.unsqueeze(-1)
        mask = torch.cat([mask, torch.ones_like(ids)], dim=-1)
        positions = positions[:, -1:] + 1
    return torch.stack(tokens, 1), torch.stack(logprobs, 1).float()
