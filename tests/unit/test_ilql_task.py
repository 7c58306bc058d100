"""The ILQL task in process (one rank, no Ray): its rows, layout, Polyak hook and learning."""

from __future__ import annotations

import json
import random

import pytest
import torch
from preference_rows import WORDS
from supervised_resume import setup_learner, straight_and_resumed

from rayrlhf.config import ConfigError
from rayrlhf.data.encode import SFTExample
from rayrlhf.ilql_model import ilql_sample, load_ilql
from rayrlhf.models import load_tokenizer
from rayrlhf.tasks.ilql import ILQLTask, action_layout, scored_rows


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _good_or_not(n: int, seed: int, rate: float) -> list[dict]:
    """(prompt, response, score): a share ``rate`` of responses say "good" (+1), the rest
    only other words (−1)."""
    rnd = random.Random(seed)
    rows = []
    for _ in range(n):
        words = [rnd.choice(WORDS) for _ in range(3)]
        good = rnd.random() < rate
        if good:
            words[rnd.randrange(3)] = "good"
        rows.append(
            {
                "prompt": " ".join(rnd.choice(WORDS) for _ in range(2)),
                "response": " ".join(words),
                "score": 1.0 if good else -1.0,
            }
        )
    return rows


@pytest.fixture
def ilql_config(make_config, tmp_path):
    def make(*extra: str):
        train = _write(tmp_path / "train.jsonl", _good_or_not(256, 1, 0.2))
        held = _write(tmp_path / "held.jsonl", _good_or_not(32, 2, 0.2))
        return make_config(
            f"ilql.data.path={train}",
            f"ilql.heldout.path={held}",
            "ilql.lr=1e-3",
            "ilql.alpha=1.0",
            "ilql.steps_for_target_q_sync=2",
            "ilql.max_tokens=16",
            "ilql.max_prompt_tokens=8",
            "ilql.epochs=3",
            "ilql.decode_beta=3.0",
            "ilql.top_k=0",
            "ilql.learner.minibatch_size=16",
            "ilql.learner.micro_batch_size=16",
            "ilql.eval_every=100",
            "rollout.template=plain",
            *extra,
        )

    return make


def test_pairwise_binary_and_scalar_rows_become_scored_responses():
    pair = {"prompt": "p", "chosen": "yes", "rejected": "no", "tie": False, "row": 3}
    tie = {**pair, "tie": True, "row": 4}
    assert [
        (r["response"], r["score"], r["row"]) for r in scored_rows([pair, tie], "pairwise")
    ] == [
        ("yes", 1.0, 3),
        ("no", -1.0, 3),
        ("yes", 0.0, 4),
        ("no", 0.0, 4),
    ]
    binary = [{"prompt": "p", "response": "r", "accepted": a, "row": 1} for a in (True, False)]
    assert [r["score"] for r in scored_rows(binary, "binary")] == [1.0, -1.0]
    assert (
        scored_rows([{"prompt": "p", "response": "r", "score": 2, "row": 1}], "scalar")[0]["score"]
        == 2.0
    )


def test_actions_are_the_response_tokens_and_the_state_after_the_last_is_terminal():
    """Prompt of 3 and response of 2 tokens: states at positions 2, 3 (before each response
    token) and 4 (after the last); a longer neighbour pads the first row's layout."""
    short, long = SFTExample([5, 6, 7, 8, 9], 3, 1), SFTExample([5, 6, 8, 9, 10, 11], 2, 2)
    states, not_done, lengths = action_layout([short, long])
    assert lengths.tolist() == [2, 4]
    assert states.tolist() == [[2, 3, 4, 0, 0], [1, 2, 3, 4, 5]]
    assert not_done.tolist() == [[1, 1, 0, 0, 0], [1, 1, 1, 1, 0]]


def test_argilla_corrections_join_as_positive_rows(make_config, tmp_path):
    records = [
        {
            "prompt": f"the {w}",
            "response-1": "a good film",
            "response-2": "a bad film",
            "response_ranking": [{"value": rank, "status": "submitted"}],
            "correct_response": [{"value": fix, "status": "submitted"}] if fix else [],
        }
        for w, rank, fix in (("film", 1, ""), ("plot", 3, "quite fine"), ("scene", 2, ""))
    ]
    export = _write(tmp_path / "export.jsonl", records)
    config = make_config(
        f"ilql.data.path={export}",
        "ilql.data.format=argilla",
        "ilql.feedback=pairwise",
        "ilql.heldout_fraction=0.0",
        "ilql.normalize_scores=false",
        "ilql.learner.minibatch_size=1",
        "ilql.learner.micro_batch_size=1",
    )
    task = ILQLTask(config)
    tok = load_tokenizer(str(config.model.policy))
    got = sorted(
        (tok.decode(i.example.ids[i.example.prompt_len : -1]), i.score) for i in task.train
    )
    assert task.corrections == 1
    assert ("quite fine", 1.0) in got  # the correction, a positive row
    assert got.count(("a good film", 0.0)) == 1 and got.count(("a bad film", 0.0)) == 1  # tie
    assert ("a good film", 1.0) in got and ("a bad film", -1.0) in got
    assert ("a bad film", 1.0) in got and ("a good film", -1.0) in got  # ranked 2: second better
    with pytest.raises(ConfigError, match="Argilla export is pairwise"):
        make_config(f"ilql.data.path={export}", "ilql.data.format=argilla")


def test_scores_are_standardised_with_the_training_rows_statistics(ilql_config, tmp_path):
    """Held-out rows use the training mean and std (20% "good" at +1, the rest −1), not their
    own; the data's standardised scores have mean 0 and std 1 over the training rows."""
    task = ILQLTask(ilql_config())
    raw = [json.loads(x)["score"] for x in (tmp_path / "train.jsonl").read_text().splitlines()]
    mean, std = torch.tensor(raw).mean().item(), torch.tensor(raw).std().item()
    assert (task.mean, task.std) == pytest.approx((mean, std))
    train = torch.tensor([i.score for i in task.train])
    assert (train.mean().item(), train.std().item()) == pytest.approx((0.0, 1.0), abs=1e-6)
    held_raw = [json.loads(x)["score"] for x in (tmp_path / "held.jsonl").read_text().splitlines()]
    held = sorted(i.score for i in task.heldout)
    assert held == pytest.approx(sorted((r - mean) / std for r in held_raw))


def test_zero3_is_refused_at_start(ilql_config):
    with pytest.raises(ConfigError, match="zero_stage=3"):
        ilql_config("ilql.learner.zero_stage=3")


def _good_rate(policy, tok, prompts: list[str], beta: float) -> float:
    rows = [tok(p)["input_ids"] for p in prompts]
    width = max(map(len, rows))
    ids = torch.tensor([[tok.pad_token_id] * (width - len(r)) + r for r in rows])
    mask = (ids != tok.pad_token_id).long()
    tokens, _ = ilql_sample(
        policy,
        ids,
        mask,
        max_new_tokens=5,
        beta=beta,
        top_k=0,
        temperature=1.0,
        eos_id=tok.eos_token_id,
        pad_id=tok.pad_token_id,
        generator=torch.Generator().manual_seed(0),
    )
    texts = tok.batch_decode(tokens, skip_special_tokens=True)
    return sum("good" in t.split() for t in texts) / len(texts)


def test_ilql_learns_to_say_good_more_often_than_the_data_does(ilql_config, tmp_path):
    """Responses with "good" score +1 (20% of the data), the rest −1. Behaviour cloning alone
    (β = 0) says "good" about as often as the data; the learned Q − V shift (β = 3) says it
    clearly more often. Targets move only at the sync steps; the saved folder decodes alike."""
    config = ilql_config()
    learner = setup_learner(config, "ilql")
    heads = learner.engine.module.heads
    target_before = [p.clone() for p in heads.target_q.parameters()]
    learner.train_step(0)  # step 1 of every 2: no sync yet
    targets = list(heads.target_q.parameters())
    assert all(torch.equal(a, b) for a, b in zip(target_before, targets, strict=True))
    learner.train_step(1)  # α = 1: the targets become the Q heads
    pairs = zip(heads.q.parameters(), heads.target_q.parameters(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    before = learner.evaluate()
    for step in range(2, learner.total_steps):
        learner.train_step(step)
    after = learner.evaluate()
    assert after["eval/loss"] < before["eval/loss"]
    assert learner.save(str(tmp_path / "model"))
    policy, meta = load_ilql(tmp_path / "model")
    assert meta["beta"] == 3.0
    tok = load_tokenizer(str(tmp_path / "model"))
    prompts = [" ".join(random.Random(i).choices(WORDS, k=2)) for i in range(64)]
    cloned, shifted = _good_rate(policy, tok, prompts, 0.0), _good_rate(policy, tok, prompts, 3.0)
    assert shifted > max(2 * cloned, 0.2 + 0.2), (cloned, shifted)


def test_a_resumed_ilql_run_ends_with_the_same_heads_and_targets(ilql_config, tmp_path):
    """The target Q heads live in the checkpoint: 4 steps straight, and 2 + (load, 2) in a
    new learner, end with equal parameters (targets included) and optimizer state."""
    config = ilql_config("ilql.max_steps=4", "ilql.alpha=0.5")  # targets keep their history
    first, second = straight_and_resumed(config, "ilql", tmp_path / "ckpt")
    assert first.state_digest() == second.state_digest()
    targets = [list(x.engine.module.heads.target_q.parameters()) for x in (first, second)]
    assert all(torch.equal(a, b) for a, b in zip(*targets, strict=True))


def test_packed_micro_batches_give_the_padded_loss_and_gradients(ilql_config):
    """learner.packing puts a micro-batch's examples in one row: the same loss terms and
    gradients as one right-padded row each."""
    out = {}
    for packed in (False, True):
        task = ILQLTask(ilql_config(f"ilql.learner.packing={str(packed).lower()}"))
        torch.manual_seed(0)
        model = task.build_model()
        loss, terms = task.loss_sums(model, task.train[:6])
        loss.backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        out[packed] = (loss.detach(), terms, grads)
    torch.testing.assert_close(out[True][0], out[False][0], rtol=1e-5, atol=1e-5)
    assert out[True][1] == pytest.approx(out[False][1], rel=1e-5, abs=1e-6)
    for a, b in zip(out[True][2], out[False][2], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
