"""SFT and reward-model training on one in-process learner rank (DeepSpeed, world size 1)."""

from __future__ import annotations

import json
import random

import pytest
import torch
from preference_rows import good_beats_bad

from rayrlhf import config as cfg_mod
from rayrlhf.models import load_policy, load_tokenizer
from rayrlhf.roles.supervised import SupervisedLearner

WORDS = ["movie", "film", "plot", "the", "a", "is", "was", "story", "actor", "scene"]
PROMPTS = ["the movie", "a film", "the plot", "this story", "the actor", "a scene", "the film"]


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _train(make_config, stage: str, *overrides: str) -> SupervisedLearner:
    if stage == "reward_model":  # PPO would score with the trained model, not the function
        overrides = ("reward.function=null", *overrides)
    learner = SupervisedLearner(make_config(*overrides), stage, 0)
    learner.setup(*learner.rendezvous_address())
    learner.before = learner.evaluate()
    for step in range(learner.total_steps):
        learner.last = learner.train_step(step)
    return learner


def _nll(model, tok, prefix: str, target: str) -> float:
    """-log p(target's first token | prefix) under ``model``."""
    ids = tok(prefix, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logp = model(input_ids=ids).logits[0, -1].log_softmax(-1)
    return float(-logp[tok(target)["input_ids"][0]])


def test_sft_learns_responses_and_never_prompts(make_config, tiny_model, tmp_path):
    """Every prompt is 'bad bad bad ...'; every response 'good'. A loss that leaked onto prompt
    tokens would teach 'bad' after 'bad bad'; the right loss leaves that alone."""
    rows = [{"prompt": " ".join(["bad"] * (3 + i % 4)), "response": " good"} for i in range(64)]
    data = _write(tmp_path / "sft.jsonl", rows)
    learner = _train(
        make_config,
        "sft",
        f"sft.data.path={data}",
        "sft.lr=3e-3",
        "sft.epochs=4",
        "rollout.template=plain",
        "sft.learner.minibatch_size=8",
        "sft.heldout_fraction=0.25",
    )
    assert learner.last["loss/train"] < 0.1 * learner.before["eval/loss"]
    assert learner.evaluate()["eval/loss"] < 0.1 * learner.before["eval/loss"]
    out = tmp_path / "sft_model"
    learner.save(str(out))
    tok = load_tokenizer(str(out))
    before, after = load_policy(str(tiny_model)), load_policy(str(out))
    # The response was learned ...
    assert _nll(after, tok, "bad bad bad bad", "good") < 0.1
    # ... and the prompt was not: p(bad | bad bad) is where it started, not near 1.
    start, end = _nll(before, tok, "bad bad", "bad"), _nll(after, tok, "bad bad", "bad")
    assert end > 0.5 * start and end > 1.0


def test_sft_on_accepted_rows_imitates_only_the_accepted_responses(make_config, tmp_path):
    """(prompt, response, accepted) rows, the article's SFT shape: "good" responses accepted,
    "bad" ones rejected. Only the accepted are imitated; the rejected are counted as filtered."""
    rows = [
        {"prompt": f"the {w}", "response": r, "accepted": r == "good"}
        for w in WORDS
        for r in ("good", "bad", "bad")
    ]
    data = _write(tmp_path / "accepted.jsonl", rows * 2)
    learner = _train(
        make_config,
        "sft",
        f"sft.data.path={data}",
        "sft.feedback=accepted",
        "sft.heldout_fraction=0.0",
        "sft.lr=3e-3",
        "sft.epochs=6",
        "rollout.template=plain",
        "sft.learner.minibatch_size=4",
        "sft.learner.micro_batch_size=4",
    )
    assert learner.task.report.filtered == 40 and len(learner.task.train) == 20
    model, tok = learner.engine.module, learner.task.tokenizer
    good, bad = _nll(model, tok, "the film", "good"), _nll(model, tok, "the film", "bad")
    assert good < 0.2 and bad > 3.0, (good, bad)


def test_reward_model_learns_a_synthetic_preference(make_config, tiny_model, tmp_path):
    train = _write(tmp_path / "train.jsonl", good_beats_bad(256, seed=1, tie_every=8))
    held = _write(tmp_path / "held.jsonl", good_beats_bad(64, seed=2))
    learner = _train(
        make_config,
        "reward_model",
        f"reward_model.model={tiny_model}",
        f"reward_model.data.path={train}",
        f"reward_model.heldout.path={held}",
        "reward_model.lr=3e-3",
        "reward_model.epochs=2",
        "reward_model.learner.minibatch_size=16",
    )
    assert learner.before["eval/accuracy"] < 0.9
    after = learner.evaluate()
    assert after["eval/accuracy"] > 0.9 and after["eval/margin"] > 1.0


@pytest.mark.parametrize("feedback", ["scalar", "binary"])
def test_reward_model_scalar_and_binary_feedback(make_config, tiny_model, tmp_path, feedback):
    rnd = random.Random(3)
    rows = []
    for _ in range(192):
        good = rnd.random() < 0.5
        words = [rnd.choice(WORDS) for _ in range(3)] + ["good" if good else "bad"]
        row = {"prompt": rnd.choice(PROMPTS), "response": " ".join(words)}
        row.update({"score": 7.0 if good else 2.0} if feedback == "scalar" else {"accepted": good})
        rows.append(row)
    data = _write(tmp_path / f"{feedback}.jsonl", rows)
    learner = _train(
        make_config,
        "reward_model",
        f"reward_model.model={tiny_model}",
        f"reward_model.data.path={data}",
        f"reward_model.feedback={feedback}",
        "reward_model.heldout_fraction=0.25",
        "reward_model.lr=3e-3",
        "reward_model.epochs=3",
        "reward_model.learner.minibatch_size=16",
    )
    after = learner.evaluate()
    if feedback == "scalar":  # targets 2 or 7: RMSE in the raters' units
        assert after["eval/rmse"] < 0.5 * learner.before["eval/rmse"] and after["eval/rmse"] < 1.0
    else:
        assert after["eval/accuracy"] > 0.9


def test_too_few_rows_for_a_minibatch(make_config, tmp_path):
    data = _write(tmp_path / "few.jsonl", [{"prompt": "a", "response": " b"}] * 4)
    learner = SupervisedLearner(make_config(f"sft.data.path={data}"), "sft", 0)
    with pytest.raises(ValueError, match="4 training items.*fewer than learner.minibatch_size=8"):
        learner.setup(*learner.rendezvous_address())


def test_stage_config_rules():
    with pytest.raises(cfg_mod.ConfigError, match="plain_template must contain"):
        cfg_mod.load(
            None,
            ["model.policy=p", "data.prompts=d", "sft.data.path=x", "rollout.plain_template=none"],
        )
    with pytest.raises(
        cfg_mod.ConfigError, match="leave reward.model, reward.function and reward.url unset"
    ):
        cfg_mod.load(
            None,
            [
                "model.policy=p",
                "data.prompts=d",
                "reward.function=a:b",
                "reward_model.model=m",
                "reward_model.data.path=x",
            ],
        )


def test_disable_dropout_keeps_train_mode_deterministic():
    from transformers import GPT2Config, GPT2LMHeadModel

    from rayrlhf.models import disable_dropout

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=30)).train()
    ids = torch.arange(10).unsqueeze(0)
    assert not torch.equal(model(ids).logits, model(ids).logits)  # dropout 0.1 is live
    disable_dropout(model)
    assert model.training and torch.equal(model(ids).logits, model(ids).logits)


def test_sft_micro_batches_packed_in_one_row_give_the_padded_loss(make_config, tmp_path):
    """learner.packing lays a micro-batch's examples end to end: the same summed NLL and
    gradients as one padded row each."""
    from rayrlhf.tasks.sft import SFTTask

    rows = [
        {"prompt": " ".join(["bad"] * (1 + i % 5)), "response": " good" * (1 + i % 3)}
        for i in range(8)
    ]
    data = _write(tmp_path / "sft.jsonl", rows)
    out = {}
    for packed in (False, True):
        config = make_config(
            f"sft.data.path={data}",
            "rollout.template=plain",
            "sft.heldout_fraction=0.25",
            f"sft.learner.packing={str(packed).lower()}",
        )
        task = SFTTask(config)
        torch.manual_seed(0)
        model = task.build_model()
        loss, stats = task.loss_sums(model, task.train[:5])
        loss.backward()
        out[packed] = (loss.detach(), stats, [p.grad.clone() for p in model.parameters()])
    torch.testing.assert_close(out[True][0], out[False][0], rtol=1e-5, atol=1e-5)
    assert out[True][1]["tokens"] == out[False][1]["tokens"]
    for a, b in zip(out[True][2], out[False][2], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
