"""Rows → token ids for SFT and reward-model training: templates, length rules, packing, batches.

Pure functions over a tokenizer. The prompt is tokenised exactly as the rollout workers tokenise
PPO prompts (no special tokens added), so a model fine-tuned here continues the same token
sequence PPO will show it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from rayrlhf.data.tables import DataError, LoadReport


@dataclass(frozen=True)
class SFTExample:
    """One (prompt, response) row as ids; the loss covers ids[prompt_len:]."""

    ids: list[int]
    prompt_len: int
    row: int

    @property
    def loss_tokens(self) -> int:
        """Response tokens: what this example adds to a token-mean loss."""
        return len(self.ids) - self.prompt_len


def format_prompt(
    tokenizer: PreTrainedTokenizerBase, prompt: str, template: str, plain_template: str
) -> str:
    """The prompt text the model sees: chat-templated, or ``plain_template`` filled in.

    ``template`` is ``chat``, ``plain`` or ``auto`` (chat when the tokenizer has a template).
    """
    use_chat = template == "chat" or (template == "auto" and bool(tokenizer.chat_template))
    if use_chat:
        if not tokenizer.chat_template:
            raise DataError("sft.template is 'chat' but the tokenizer has no chat template")
        messages = [{"role": "user", "content": prompt}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return plain_template.format(prompt=prompt)


def limit_prompt(
    ids: list[int], max_tokens: int, rule: str, row: int, report: LoadReport
) -> list[int] | None:
    """Apply the over-long prompt rule: error, truncate (keep the end) or filter (None)."""
    if len(ids) <= max_tokens:
        return ids
    if rule == "error":
        raise DataError(
            f"row {row}: prompt has {len(ids)} tokens, more than max_prompt_tokens={max_tokens} "
            "(set overlong_prompt to truncate or filter to accept such rows)"
        )
    if rule == "truncate":
        report.truncated += 1
        return ids[-max_tokens:]  # the end of the prompt is what the response continues
    report.filtered += 1
    return None


def encode_sft(
    tokenizer: PreTrainedTokenizerBase,
    rows: list[dict],
    *,
    template: str,
    plain_template: str,
    max_prompt_tokens: int,
    max_tokens: int,
    overlong_prompt: str,
    report: LoadReport,
) -> list[SFTExample]:
    """Tokenise SFT rows: prompt (templated) + response + EOS, the response cut at max_tokens."""
    eos = tokenizer.eos_token_id
    out = []
    for row in rows:
        text = format_prompt(tokenizer, row["prompt"], template, plain_template)
        prompt_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        prompt_ids = limit_prompt(
            prompt_ids, max_prompt_tokens, overlong_prompt, row["row"], report
        )
        if prompt_ids is None:
            continue
        response_ids = tokenizer(row["response"], add_special_tokens=False)["input_ids"]
        # EOS ends the response so the policy learns to stop, as PPO's response mask expects.
        ids = (prompt_ids + response_ids + [eos])[:max_tokens]
        out.append(SFTExample(ids, len(prompt_ids), row["row"]))
    return out


def pack_examples(examples: list[SFTExample], max_tokens: int) -> list[list[SFTExample]]:
    """Greedy first-fit packing, in order, of examples into sequences of at most max_tokens."""
    packs: list[list[SFTExample]] = []
    room: list[int] = []
    for ex in examples:
        for i, free in enumerate(room):
            if len(ex.ids) <= free:
                packs[i].append(ex)
                room[i] -= len(ex.ids)
                break
        else:
            packs.append([ex])
            room.append(max_tokens - len(ex.ids))
    return packs


def collate_sft(
    packs: list[list[SFTExample]], pad_id: int, packed: bool
) -> dict[str, torch.Tensor]:
    """Batch tensors for a list of packs (a pack of one example when not packing).

    Returns ``input_ids`` (B, T), ``position_ids`` (B, T), ``loss_mask`` (B, T) — True where the
    token is a response token, i.e. predicted by the position before it — and, unpacked,
    ``attention_mask`` (B, T). Packed batches carry no attention mask: positions restart at 0
    for each example, from which transformers builds a block-diagonal causal mask, so packed
    examples never attend to each other. Padding is on the right, a "sequence" of its own.
    """
    width = max(sum(len(e.ids) for e in pack) for pack in packs)
    ids = torch.full((len(packs), width), pad_id, dtype=torch.long)
    pos = torch.zeros((len(packs), width), dtype=torch.long)
    loss = torch.zeros((len(packs), width), dtype=torch.bool)
    attn = torch.zeros((len(packs), width), dtype=torch.long)
    for b, pack in enumerate(packs):
        at = 0
        for ex in pack:
            n = len(ex.ids)
            ids[b, at : at + n] = torch.tensor(ex.ids)
            pos[b, at : at + n] = torch.arange(n)
            loss[b, at + ex.prompt_len : at + n] = True
            attn[b, at : at + n] = 1
            at += n
        pos[b, at:] = torch.arange(width - at)
    batch = {"input_ids": ids, "position_ids": pos, "loss_mask": loss}
    if not packed:
        batch["attention_mask"] = attn
    return batch


def encode_reward_inputs(
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    responses: list[str],
    max_tokens: int | None = None,
) -> dict[str, torch.Tensor]:
    """The reward model's input for (prompt, response) pairs: one text pair per sample.

    The one encoding used both to train the reward model and by the reward workers that score
    PPO samples, so the model is asked exactly the question it was trained on. The response is
    cut first when the pair is too long.
    """
    limit = max_tokens or tokenizer.model_max_length
    if limit > 1_000_000:  # tokenizers without a known limit report a huge sentinel
        return tokenizer(prompts, responses, return_tensors="pt", padding=True)
    return tokenizer(
        prompts,
        responses,
        return_tensors="pt",
        padding=True,
        truncation="only_second",
        max_length=limit,
    )


def limit_reward_prompts(
    tokenizer: PreTrainedTokenizerBase,
    rows: list[dict],
    max_prompt_tokens: int,
    rule: str,
    report: LoadReport,
) -> list[dict]:
    """Apply the over-long prompt rule to reward rows; truncated prompts keep their end."""
    kept = []
    for row in rows:
        ids = tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
        limited = limit_prompt(ids, max_prompt_tokens, rule, row["row"], report)
        if limited is None:
            continue
        if len(limited) < len(ids):
            row = {**row, "prompt": tokenizer.decode(limited)}
        kept.append(row)
    return kept
