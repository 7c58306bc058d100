"""Rows → token ids for SFT and reward-model training: templates, length rules, packing, batches.

Pure functions over a tokenizer. A prompt becomes ids in one way everywhere — SFT, rollout and
evaluation (:func:`fit_prompt`): the ``rollout.template`` applied, no special tokens added, an
over-long prompt cut at its start inside the template — so a model fine-tuned here continues the
token sequence PPO will show it.
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


def prompt_ids(
    tokenizer: PreTrainedTokenizerBase, prompt: str, template: str, plain_template: str
) -> list[int]:
    """The templated prompt's ids (no special tokens added: the template has its own)."""
    text = format_prompt(tokenizer, prompt, template, plain_template)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def fit_prompt(
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    template: str,
    plain_template: str,
    max_tokens: int,
) -> list[int]:
    """Prompt ids of at most ``max_tokens``; a longer prompt keeps its end.

    The cut is made in the raw prompt and the template applied after, so a chat template's
    header survives; the response continues the prompt's end, which is what must stay.
    """
    ids = prompt_ids(tokenizer, prompt, template, plain_template)
    if len(ids) <= max_tokens:
        return ids
    raw = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    keep = max(max_tokens - (len(ids) - len(raw)), 1)
    cut = tokenizer.decode(raw[-keep:])
    return prompt_ids(tokenizer, cut, template, plain_template)[-max_tokens:]


def overlong_action(n_tokens: int, max_tokens: int, rule: str, row: int, report: LoadReport) -> str:
    """``keep``, ``truncate`` or ``skip`` for a prompt of ``n_tokens`` (counted), or raise.

    The rule is the stage's ``overlong_prompt``: error (the default: a prompt the model would not
    see whole is a data problem to fix), truncate, or filter.
    """
    if n_tokens <= max_tokens:
        return "keep"
    if rule == "error":
        raise DataError(
            f"row {row}: prompt has {n_tokens} tokens, more than max_prompt_tokens={max_tokens} "
            "(set overlong_prompt to truncate or filter to accept such rows)"
        )
    if rule == "truncate":
        report.truncated += 1
        return "truncate"
    report.filtered += 1
    return "skip"


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
        ids = prompt_ids(tokenizer, row["prompt"], template, plain_template)
        action = overlong_action(len(ids), max_prompt_tokens, overlong_prompt, row["row"], report)
        if action == "skip":
            continue
        if action == "truncate":
            ids = fit_prompt(tokenizer, row["prompt"], template, plain_template, max_prompt_tokens)
        response_ids = tokenizer(row["response"], add_special_tokens=False)["input_ids"]
        # EOS ends the response so the policy learns to stop, as PPO's response mask expects.
        full = (ids + response_ids + [eos])[:max_tokens]
        out.append(SFTExample(full, len(ids), row["row"]))
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


def reward_features(
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    responses: list[str],
    max_tokens: int | None = None,
) -> list[dict[str, list[int]]]:
    """The reward model's input for each (prompt, response) pair, unpadded: one text pair each.

    The one encoding used both to train the reward model and by the reward workers that score
    PPO samples, so the model is asked exactly the question it was trained on. The response is
    cut first when the pair is too long.
    """
    limit = max_tokens or tokenizer.model_max_length
    if limit > 1_000_000:  # tokenizers without a known limit report a huge sentinel
        enc = tokenizer(prompts, responses)
    else:
        enc = tokenizer(prompts, responses, truncation="only_second", max_length=limit)
    return [{key: enc[key][i] for key in enc} for i in range(len(prompts))]


def encode_reward_inputs(
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    responses: list[str],
    max_tokens: int | None = None,
) -> dict[str, torch.Tensor]:
    """:func:`reward_features` of a batch, padded into tensors."""
    return tokenizer.pad(
        reward_features(tokenizer, prompts, responses, max_tokens), return_tensors="pt"
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
        action = overlong_action(len(ids), max_prompt_tokens, rule, row["row"], report)
        if action == "skip":
            continue
        if action == "truncate":
            row = {**row, "prompt": tokenizer.decode(ids[-max_prompt_tokens:])}
        kept.append(row)
    return kept
