"""Held-out evaluation of a policy: mean reward, KL to the reference, example generations;
of a training run's policy, or of a saved one. The rollout, reward and reference workers do the
work, as in a training step.

The same ``eval-i`` sample ids (hence the same sampling seeds) every call, so two policies
evaluated on the same prompts are a paired comparison. One small task per evaluation turns
the workers' results into per-sample numbers: the driver never fetches tensors.
"""

from __future__ import annotations

import math
from typing import Any

import ray
import torch

from rayrlhf import cluster
from rayrlhf.config import Config, from_dict, to_dict
from rayrlhf.controller.chunks import ChunkRunner
from rayrlhf.experience import PromptChunk, ReferenceLogprobs, Rollout, Scores
from rayrlhf.faults import FaultCounts
from rayrlhf.ilql_model import is_ilql_folder
from rayrlhf.models import DTYPES, load_policy
from rayrlhf.roles.reference import ReferenceWorker
from rayrlhf.roles.reward import RewardWorker
from rayrlhf.roles.rollout import RolloutWorker
from rayrlhf.weights.transport import FlatWeights, flatten_params


def eval_chunks(
    prompts: list[str], chunk_size: int, rows: list[dict[str, Any]] | None = None
) -> list[PromptChunk]:
    """Chunks with fixed ids ``eval-i``: sampling is seeded by id, so the evaluation before and
    after training draws with the same random numbers (a paired comparison, less noise).
    ``rows``: each prompt's row (its reference answer), for verifying rewards."""
    return [
        PromptChunk(
            sample_ids=[f"eval-{i}" for i in range(c, min(c + chunk_size, len(prompts)))],
            prompts=prompts[c : c + chunk_size],
            rows=None if rows is None else rows[c : c + chunk_size],
        )
        for c in range(0, len(prompts), chunk_size)
    ]


def summarize_chunks(*results: Any) -> list[dict[str, Any]]:
    """:func:`summarize_chunk` over (rollout, scores, reference) triples laid end to end.

    One task for a whole evaluation: a task per chunk would have Ray start a worker process
    for each chunk at once (they reserve no CPU), each importing torch, for a few numbers.
    """
    triples = [results[i : i + 3] for i in range(0, len(results), 3)]
    return [sample for triple in triples for sample in summarize_chunk(*triple)]


def summarize_chunk(
    rollout: Rollout, scores: Scores, reference: ReferenceLogprobs | None
) -> list[dict[str, Any]]:
    """Per sample: prompt, response, reward, KL to the reference (nats, summed over tokens;
    NaN when no reference runs, because the KL coefficient is 0)."""
    mask = rollout.response_mask
    if reference is None:
        kl = torch.full((len(rollout),), float("nan"))
    else:
        kl = ((rollout.logprobs - reference.logprobs) * mask).sum(-1)
    return [
        {
            "sample_id": sid,
            "prompt": prompt,
            "response": response,
            "reward": float(reward),
            "kl": float(k),
            "length": float(n),
            # The reward's named parts (a verifier's correct, format), unweighted.
            **{f"reward/{name}": float(v[i]) for name, v in scores.components.items()},
        }
        for i, (sid, prompt, response, reward, k, n) in enumerate(
            zip(
                rollout.sample_ids,
                rollout.prompts,
                rollout.responses,
                scores.rewards.tolist(),
                kl.tolist(),
                mask.sum(-1).tolist(),
                strict=True,
            )
        )
    ]


def mean_std_stderr(values: list[float]) -> tuple[float, float, float]:
    """Mean, sample standard deviation, and standard error of the mean."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / max(n - 1, 1))
    return mean, std, std / math.sqrt(n)


def distinct_n(texts: list[str], n: int = 2) -> float:
    """Distinct-n of a set of texts: distinct word n-grams over all n-grams (lower-cased,
    split on white space); 1 when no n-gram repeats, falling as the texts share phrases."""
    grams = [
        tuple(words[i : i + n])
        for words in (t.lower().split() for t in texts)
        for i in range(len(words) - n + 1)
    ]
    return len(set(grams)) / len(grams) if grams else 0.0


def aggregate(samples: list[dict[str, Any]]) -> dict[str, float]:
    """Means over samples: ``reward/mean``, ``reward/std``, ``kl/mean`` (absent without a
    reference), ``response/length``; and ``response/distinct_2`` over all their responses."""
    n = len(samples)
    mean, std, stderr = mean_std_stderr([s["reward"] for s in samples])
    out = {
        "reward/mean": mean,
        "reward/std": std,
        "reward/stderr": stderr,
        "response/length": sum(s["length"] for s in samples) / n,
        "response/distinct_2": distinct_n([s["response"] for s in samples], 2),
        "samples": float(n),
    }
    if not any(math.isnan(s["kl"]) for s in samples):
        out["kl/mean"] = sum(s["kl"] for s in samples) / n
    for key in (k for k in samples[0] if k.startswith("reward/")):
        # A component's mean and standard error: a verifier's `correct` is the accuracy.
        mean, _, stderr = mean_std_stderr([s[key] for s in samples])
        out[key], out[f"{key}_stderr"] = mean, stderr
    return out


def evaluate_chunks(
    runner: ChunkRunner,
    prompts: list[str],
    chunk_size: int,
    timeout_s: float,
    version: int | None = None,
    weights: Any = None,
    rows: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Mean reward, KL to the reference, lengths and every sample (``samples_text``) of
    ``prompts`` generated by ``runner``'s rollout workers (with ``version`` when given);
    ``rows``: the prompts' rows, for verifying rewards."""
    chunks = eval_chunks(prompts, chunk_size, rows)
    summarize = cluster.zero_cpu_task(summarize_chunks)
    triples = [(r.rollout, r.scores, r.reference) for r in runner.run(chunks, version, weights)]
    samples = ray.get(summarize.remote(*[x for t in triples for x in t]), timeout=timeout_s)
    return {**aggregate(samples), "samples_text": samples}


def saved_policy_weights(path: str, precision: str) -> FlatWeights:
    """A saved policy's parameters as the learner sends them (module order, rollout dtype)."""
    model = load_policy(path, precision)
    shapes = [p.shape for p in model.parameters()]
    return flatten_params(model.named_parameters(), shapes, DTYPES[precision])


def _with_policy(config: Config, policy: str) -> Config:
    """``config`` whose rollout workers hold ``policy``, tokenising as ``config`` does."""
    tree = to_dict(config)
    tree["model"]["policy"], tree["model"]["tokenizer"] = policy, config.tokenizer_path
    return from_dict(tree)


def evaluate_policies(
    config: Config,
    others: list[str],
    prompts: list[str],
    rows: list[dict[str, Any]] | None = None,
) -> list[dict]:
    """Held-out metrics of ``config.model.policy`` and then of each policy saved in
    ``others`` (HF folders), scored by ``config``'s reward, KL taken to ``config.model.policy``.

    One set of reward and reference workers serves every evaluation, and one set of rollout
    workers every plain policy: they start with ``config.model.policy``, and each further
    policy reaches them as a new policy version (its weights in the object store, loaded
    between chunks), so every policy is sampled by the same engines with the same seeds. An
    ILQL policy (LM plus heads) decodes differently: it gets rollout workers of its own, with
    the same sampling seeds. The workers stop at the end.
    """
    cluster.ensure_ray(config)
    device = "cuda" if config.reward.num_gpus > 0 else "cpu"

    def rollout_group(c: Config) -> cluster.RoleGroup:
        return cluster.role_group(c, RolloutWorker, "rollout", lambda i: (c, i))

    groups = {
        "rollout": rollout_group(config),
        "reward": cluster.role_group(
            config, RewardWorker, "reward", lambda i: (config.reward, device)
        ),
        "reference": cluster.role_group(config, ReferenceWorker, "reference", lambda i: (config,)),
        **cluster.env_groups(config),
    }
    c = config
    read = cluster.zero_cpu_task(saved_policy_weights)

    def evaluate(version: int | None = None, weights: Any = None) -> dict[str, Any]:
        runner = ChunkRunner(
            groups,
            FaultCounts(),
            c.run.max_worker_restarts,
            c.timeouts.rollout_s,
            lambda role, actor: None,  # chunks name their version: a replacement loads it
        )
        return evaluate_chunks(
            runner, prompts, c.rollout.chunk_size, c.timeouts.rollout_s, version, weights, rows
        )

    try:
        results, plain = [evaluate()], not is_ilql_folder(c.model.policy)
        for version, path in enumerate(others, start=1):
            ilql = is_ilql_folder(path)
            if ilql or not plain:  # another kind of engine than the workers hold
                groups["rollout"].shutdown()
                groups["rollout"] = rollout_group(_with_policy(c, path) if ilql else c)
                plain = not ilql
            if ilql:
                results.append(evaluate())
            else:
                results.append(evaluate(version, read.remote(path, c.learner.precision)))
        return results
    finally:
        for group in groups.values():
            group.shutdown()
