"""rayrlhf's train phase next to a plain PyTorch loop doing the same math on the same batch.

    .venv/bin/python benchmarks/learner_floor.py [--model PATH] [--algorithm ppo|grpo]
        [--steps 6] [--packing both|on|off] [--set learner.zero_stage=0 ...]

The demo's learner shapes: SmolLM2-135M (``~/.cache/rayrlhf/models/smollm2-135m-instruct``;
``--model tiny`` for a tiny random Llama), 16 rows whose prompt lengths are the demo's own
openings' and whose response lengths are drawn once (seeded) from 6-24 tokens, fp32, two
threads, one minibatch of 16 in micro-batches of 8. rayrlhf runs its real learner rank
in-process (DeepSpeed engine, no Ray); the plain loop is torch only: the same models, the same
losses (clipped policy gradient, clipped value loss), forward and backward per micro-batch, one
fused AdamW step per model, the output head only where response tokens are predicted.
Alternating steps, medians of the steps after the first; one JSON line with the ratios. The
process re-executes itself once with glibc's malloc kept from returning memory to the kernel,
as rayrlhf's actors run (``rayrlhf.actor_env``). Never fails on a time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from rayrlhf.actor_env import ACTOR_ENV
from rayrlhf.algos.losses import policy_loss, value_loss
from rayrlhf.config import load
from rayrlhf.experience import ReferenceLogprobs, Rollout, Scores
from rayrlhf.forward import response_logprobs, response_values
from rayrlhf.models import disable_dropout, load_policy, load_tokenizer, load_value_model
from rayrlhf.roles.learner import Learner

SMOLLM2 = Path.home() / ".cache/rayrlhf/models/smollm2-135m-instruct"
PROMPTS = Path.home() / ".cache/rayrlhf/data/reviews/prompts_train.jsonl"


def demo_batch(model: str, rows: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A rollout-shaped batch: (B, P) left-padded prompts, (B, R) right-padded responses."""
    tok = load_tokenizer(model)
    if PROMPTS.exists():
        texts = [json.loads(line)["prompt"] for line in PROMPTS.read_text().splitlines()[:rows]]
    else:
        texts = [" ".join(["word"] * (3 + i % 6)) for i in range(rows)]
    enc = tok(texts, padding=True, return_tensors="pt", add_special_tokens=False)
    gen = torch.Generator().manual_seed(seed)
    vocab = min(len(tok), 30000)
    lengths = torch.randint(6, 25, (rows,), generator=gen)
    width = int(lengths.max())
    response = torch.randint(10, vocab, (rows, width), generator=gen)
    mask = (torch.arange(width)[None] < lengths[:, None]).long()
    return {
        "prompt_ids": enc["input_ids"],
        "prompt_mask": enc["attention_mask"],
        "response_ids": response * mask,
        "response_mask": mask,
        "scores": torch.randn(rows, generator=gen),
        "ref": -3.0 - torch.rand(rows, width, generator=gen) * mask,
    }


def rayrlhf_inputs(b: dict, version: int, group: int) -> tuple[list, list, list]:
    ids = [f"s{i}" for i in range(len(b["scores"]))]
    rollout = Rollout(
        ids,
        version,
        b["prompt_ids"],
        b["prompt_mask"],
        b["response_ids"],
        b["response_mask"],
        torch.zeros(b["response_mask"].shape),
        ["p"] * len(ids),
        ["r"] * len(ids),
        group_size=group,
    )
    return [rollout], [Scores(ids, b["scores"])], [ReferenceLogprobs(ids, b["ref"] * 1.0)]


class PlainLoop:
    """The same update in plain PyTorch: no DeepSpeed, no Ray, fused AdamW."""

    def __init__(self, model: str, critic: bool, lr: float, micro: int, packed: bool) -> None:
        self.policy = disable_dropout(load_policy(model)).train()
        self.value = disable_dropout(load_value_model(model)).train() if critic else None
        self.models = [m for m in (self.policy, self.value) if m is not None]
        self.opts = [torch.optim.AdamW(m.parameters(), lr=lr, fused=True) for m in self.models]
        self.micro, self.packed = micro, packed

    def step(self, b: dict) -> float:
        start = time.perf_counter()
        ids = torch.cat([b["prompt_ids"], b["response_ids"]], 1)
        am = torch.cat([b["prompt_mask"], b["response_mask"]], 1)
        p, mask = b["prompt_ids"].shape[1], b["response_mask"]
        adv = (b["scores"][:, None] * mask).float()
        tokens = mask.sum()
        for i in range(0, len(ids), self.micro):
            s = slice(i, i + self.micro)
            lp, _ = response_logprobs(self.policy, ids[s], am[s], p, packed=self.packed)
            pg = policy_loss(
                logprobs=lp,
                old_logprobs=lp.detach(),
                advantages=adv[s],
                response_mask=mask[s],
                clip_range=0.2,
                clip_high=None,
                agg="token_mean",
                constant=1.0,
            )
            loss = pg.loss
            if self.value is None:  # GRPO: its k3 KL to the reference in the loss
                log_ratio = b["ref"][s] - lp
                k3 = (log_ratio.exp() - log_ratio - 1) * mask[s]
                loss = loss + 0.05 * k3.sum() / mask[s].sum()
            (loss * mask[s].sum() / tokens).backward()
            if self.value is not None:
                v = response_values(self.value, ids[s], am[s], p, packed=self.packed)
                vl = value_loss(
                    values=v,
                    old_values=v.detach(),
                    returns=adv[s],
                    response_mask=mask[s],
                    clip_range=0.2,
                )
                (0.5 * vl.loss * mask[s].sum() / tokens).backward()
        for model, opt in zip(self.models, self.opts, strict=True):
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
        return time.perf_counter() - start


def padding_fraction(b: dict, packed: bool) -> float:
    am = torch.cat([b["prompt_mask"], b["response_mask"]], 1)
    if packed:
        return 0.0
    return 1.0 - float(am.sum()) / am.numel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(SMOLLM2))
    parser.add_argument("--algorithm", default="ppo", choices=["ppo", "grpo"])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--packing", default="both", choices=["both", "on", "off"])
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    if os.environ.get("GLIBC_TUNABLES") != ACTOR_ENV["GLIBC_TUNABLES"]:  # as the actors run
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **ACTOR_ENV})
    torch.set_num_threads(2)
    tmp = tempfile.TemporaryDirectory()
    model = args.model
    if model == "tiny" or not Path(model).exists():
        from rayrlhf.tiny_models import save_tiny_llama

        model = str(save_tiny_llama(Path(tmp.name) / "tiny"))
    batch = demo_batch(model, 16)
    prompts = Path(tmp.name) / "prompts.jsonl"
    prompts.write_text('{"prompt": "a"}\n' * 16)
    group = 4 if args.algorithm == "grpo" else 1  # GRPO: 4 prompts × 4, as review_grpo.yaml
    modes = {"both": [False, True], "on": [True], "off": [False]}[args.packing]
    out: dict = {"model": Path(args.model).name, "algorithm": args.algorithm, "steps": args.steps}
    for packed in modes:
        cfg = load(
            None,
            [
                f"model.policy={model}",
                f"data.prompts={prompts}",
                f"algorithm.name={args.algorithm}",
                "reward.function=rayrlhf.rewards.rules:target_word_frequency",
                f"rollout.prompts_per_step={16 // group}",
                f"rollout.group_size={group}",
                f"rollout.chunk_size={16 // group}",
                "learner.minibatch_size=16",
                "learner.micro_batch_size=8",
                "learner.policy_lr=1e-5",
                "learner.value_lr=1e-5",
                "online.kl_coef=0.05",
                f"learner.packing={str(packed).lower()}",
                *args.overrides,
            ],
        )
        learner = Learner(cfg, 0)
        learner.setup(*learner.rendezvous_address())
        plain = PlainLoop(model, cfg.algo.critic, 1e-5, 8, packed)
        ours, floor, cpu, faults = [], [], {"rayrlhf": [], "plain": []}, []
        for _ in range(args.steps):
            c0, f0 = time.process_time(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            m = learner.train_step(*rayrlhf_inputs(batch, learner.policy_version, group))
            c1, f1 = time.process_time(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            ours.append(m["time/train"])
            floor.append(plain.step(batch))
            cpu["rayrlhf"].append(c1 - c0)
            cpu["plain"].append(time.process_time() - c1)
            faults.append(f1 - f0)
        tag = "packed" if packed else "padded"
        med_ours, med_floor = statistics.median(ours[1:]), statistics.median(floor[1:])
        out[tag] = {
            "rayrlhf_train_s": round(med_ours, 3),
            "plain_train_s": round(med_floor, 3),
            "ratio": round(med_ours / med_floor, 3),
            "padding_fraction": round(padding_fraction(batch, packed), 3),
            # CPU seconds of the whole step (values phase included) and of the plain step:
            # less disturbed than wall time by other load on the machine.
            "rayrlhf_step_cpu_s": round(statistics.median(cpu["rayrlhf"][1:]), 3),
            "plain_cpu_s": round(statistics.median(cpu["plain"][1:]), 3),
            "rayrlhf_minor_faults": int(statistics.median(faults[1:])),
            "rayrlhf_tflops": m.get("perf/train_tflops"),
            "rayrlhf_mfu": m.get("perf/mfu"),
        }
        del learner, plain  # the next mode's learner joins the same one-rank group
    tmp.cleanup()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
