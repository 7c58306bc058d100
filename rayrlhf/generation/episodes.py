"""Multi-turn episodes, token in and token out, on either engine.

Each turn the engine continues every unfinished episode from its exact token ids (the first
observation as prompt, then every sampled turn and observation so far) until EOS, a stop string
of the environment (a tool call's end) or the turn's token limit. The turn's sampled ids and
their log-probs are kept as they are; the environment gets the turn's text and ids and answers
with an observation, whose text is tokenised once and appended. Nothing is ever decoded and
encoded again, so what the learner trains on is exactly what was sampled.

An episode ends when the policy emits EOS, the environment says so, or a limit is reached
(``rollout.max_turns`` turns, ``rollout.max_episode_tokens`` response tokens): the last two count
as truncated. Every turn draws from a generator seeded by the chunk's seed and the turn's
number, so a chunk of episodes re-run anywhere is the same episodes.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from rayrlhf.envs import EnvStep
    from rayrlhf.envs.batch import EnvBatch
    from rayrlhf.generation import Engine

STATS = ("turns", "tool_calls", "tool_errors", "observation_tokens", "truncated")


@dataclass
class Episode:
    """One episode as it grows: response ids, loss mask (1: sampled), log-probs, figures."""

    ids: list[int] = field(default_factory=list)
    sampled: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    reward: float = 0.0
    stats: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STATS, 0.0))
    done: bool = False

    def add(self, ids: list[int], logprobs: list[float] | None) -> None:
        """Append a turn (with its log-probs) or an observation (``None``: not sampled)."""
        self.ids += ids
        self.sampled += [1 if logprobs is not None else 0] * len(ids)
        self.logprobs += logprobs if logprobs is not None else [0.0] * len(ids)


@dataclass
class EpisodeBatch:
    """B finished episodes, right-padded: (B, R) ids, loss mask, attention, log-probs; (B,)
    environment rewards; (B,) figures by name (:data:`STATS`)."""

    response_ids: Tensor
    response_mask: Tensor
    response_attention: Tensor
    logprobs: Tensor
    rewards: Tensor
    stats: dict[str, Tensor]


def turn_length(
    ids: list[int], eos_ids: set[int], stop: list[str], tokenizer: PreTrainedTokenizerBase
) -> tuple[int, bool]:
    """How many of a turn's generated ``ids`` are the turn (through its EOS or the end of its
    first stop string), and whether it ended with EOS."""
    end = next((i + 1 for i, t in enumerate(ids) if t in eos_ids), len(ids))
    text = tokenizer.decode(ids[:end])
    if stop and any(s in text for s in stop):
        # The first prefix whose text holds a stop string: the tokens the stop ends with.
        for k in range(1, end + 1):
            if any(s in tokenizer.decode(ids[:k]) for s in stop):
                return k, False
    return end, end > 0 and ids[end - 1] in eos_ids


def run_episodes(
    engine: Engine,
    tokenizer: PreTrainedTokenizerBase,
    envs: EnvBatch,
    first_ids: list[list[int]],
    chunk_seed: int,
    row_seeds: list[int],
    limits: tuple[int, int, int],
) -> EpisodeBatch:
    """Run one episode per row of ``envs`` (a chunk's environments, in this process or on an
    environment worker); ``first_ids[i]`` is episode i's tokenised first observation;
    ``limits`` = (max_turns, max_new_tokens per turn, max response tokens)."""
    max_turns, per_turn, budget = limits
    eos = tokenizer.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos])
    episodes = [Episode() for _ in first_ids]
    for turn in range(max_turns):
        active = [i for i, e in enumerate(episodes) if not e.done]
        if not active:
            break
        rooms = [budget - len(episodes[i].ids) for i in active]
        histories = [first_ids[i] + episodes[i].ids for i in active]
        enc = tokenizer.pad({"input_ids": histories}, padding=True, return_tensors="pt")
        turn_seed = zlib.crc32(f"{chunk_seed}/turn-{turn}".encode())
        seeds = [zlib.crc32(f"{row_seeds[i]}/turn-{turn}".encode()) for i in active]
        out, logprobs = engine.generate(
            enc["input_ids"], enc["attention_mask"], turn_seed, seeds,
            max_new_tokens=min(per_turn, max(rooms)), stop=envs.stop or None,
        )  # fmt: skip
        asking = []  # the episodes whose turn goes to the environment, with the turn's ids
        for row, (i, room) in enumerate(zip(active, rooms, strict=True)):
            ids = _add_turn(episodes[i], tokenizer, out[row].tolist(), logprobs[row], room,
                            (eos_ids, envs.stop))  # fmt: skip
            if ids is not None:
                asking.append((i, ids))
        if not asking:
            continue
        # One call for the turn's running episodes: an environment worker answers them together.
        texts = [tokenizer.decode(ids, skip_special_tokens=True) for _, ids in asking]
        steps = envs.step([i for i, _ in asking], texts, [ids for _, ids in asking])
        for (i, _), step in zip(asking, steps, strict=True):
            _add_answer(episodes[i], step, tokenizer, turn + 1 == max_turns, budget)
    return _batch(episodes, tokenizer.pad_token_id)


def _add_turn(
    ep: Episode,
    tokenizer: PreTrainedTokenizerBase,
    generated: list[int],
    logprobs: Tensor,
    room: int,
    ends: tuple[set[int], list[str]],
) -> list[int] | None:
    """Append one sampled turn of ``ep``; the turn's ids when the environment answers it, None
    when the episode ends with it (EOS, or its token budget)."""
    n, ended = turn_length(generated, ends[0], ends[1], tokenizer)
    if n > room:  # the episode's token budget ends inside this turn
        n, ended, ep.stats["truncated"] = room, False, 1.0
    ids = generated[:n]
    ep.add(ids, logprobs[:n].tolist())
    ep.stats["turns"] += 1
    if ended or ep.stats["truncated"]:
        ep.done = True
        return None
    return ids


def _add_answer(
    ep: Episode, step: EnvStep, tokenizer: PreTrainedTokenizerBase, last_turn: bool, budget: int
) -> None:
    """Append the environment's answer to ``ep``'s last turn (its observation, never trained
    on), or end the episode."""
    ep.reward += step.reward
    ep.stats["tool_calls"] += step.tool_calls
    ep.stats["tool_errors"] += step.tool_errors
    if step.done:
        ep.done = True
        return
    observation = tokenizer(step.observation, add_special_tokens=False)["input_ids"]
    if last_turn or len(ep.ids) + len(observation) >= budget:
        # Another turn was due but there is no room for it: the episode is cut here.
        ep.done, ep.stats["truncated"] = True, 1.0
        return
    ep.add(observation, None)
    ep.stats["observation_tokens"] += len(observation)


def _batch(episodes: list[Episode], pad_id: int) -> EpisodeBatch:
    width = max(1, max(len(e.ids) for e in episodes))

    def rows(get: Any, fill: float, dtype: torch.dtype) -> Tensor:
        return torch.tensor([get(e) + [fill] * (width - len(e.ids)) for e in episodes], dtype=dtype)

    return EpisodeBatch(
        response_ids=rows(lambda e: e.ids, pad_id, torch.long),
        response_mask=rows(lambda e: e.sampled, 0, torch.long),
        response_attention=rows(lambda e: [1] * len(e.ids), 0, torch.long),
        logprobs=rows(lambda e: e.logprobs, 0.0, torch.float32),
        rewards=torch.tensor([e.reward for e in episodes], dtype=torch.float32),
        stats={k: torch.tensor([e.stats[k] for e in episodes]) for k in STATS},
    )
