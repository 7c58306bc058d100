"""A reward model without a trained head is refused; a trained one is marked and loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from preference_rows import good_beats_bad
from transformers import AutoModelForSequenceClassification

from rayrlhf.models import REWARD_MODEL_MARKER, RewardModelError, load_reward_model
from rayrlhf.rewards.model_scorer import ModelScorer
from rayrlhf.tiny_models import save_tiny, save_tiny_reward_model


def test_a_policy_folder_is_refused_naming_the_folder_and_the_mix_up(tmp_path: Path) -> None:
    """A causal LM loads as a classifier with a random head: refused, not scored at random."""
    policy = save_tiny(tmp_path / "sft" / "model")
    for load in (lambda: load_reward_model(str(policy)), lambda: ModelScorer(str(policy), 2)):
        with pytest.raises(RewardModelError) as err:
            load()
        message = str(err.value)
        assert str(policy) in message and "\n" not in message
        assert "not a trained reward model" in message and "score.weight" in message
        assert "reward_model/model" in message and "sft/model" in message
    assert isinstance(err.value, ValueError)  # the CLI and serve-reward turn those into a line


def test_the_pipeline_sibling_is_suggested(tmp_path: Path) -> None:
    policy = save_tiny(tmp_path / "run" / "sft" / "model")
    reward = save_tiny_reward_model(tmp_path / "run" / "reward_model" / "model")
    with pytest.raises(RewardModelError, match=f"did you mean {reward}"):
        load_reward_model(str(policy))


def test_a_reward_model_with_its_head_loads(tmp_path: Path) -> None:
    path = save_tiny_reward_model(tmp_path / "rm")  # a head, no marker: e.g. one from the Hub
    model, _ = load_reward_model(str(path))
    assert model.config.num_labels == 1
    scorer = ModelScorer(str(path), batch_size=2)
    assert scorer(["the movie"], ["good"]) == ModelScorer(str(path), 2)(["the movie"], ["good"])


def test_starting_a_reward_model_from_a_policy_still_takes_a_fresh_head(tmp_path: Path) -> None:
    """Training (num_labels given) is where a new head is meant: no refusal there."""
    model, _ = load_reward_model(str(save_tiny(tmp_path / "base")), num_labels=1)
    assert model.config.num_labels == 1


def test_the_reward_model_task_marks_its_folder(make_config, tiny_model, tmp_path: Path) -> None:
    """What a reward-model run saves: weights (the learner), then the task's extras; the folder
    then loads as a trained reward model, and with plain transformers."""
    from rayrlhf.tasks.reward_model import RewardModelTask

    rows = good_beats_bad(8, seed=0)
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = make_config(
        "reward.function=null",
        f"reward_model.model={tiny_model}",
        f"reward_model.data.path={data}",
        "reward_model.heldout_fraction=0",
    )
    task = RewardModelTask(config)
    out = tmp_path / "reward_model" / "model"
    task.build_model().save_pretrained(out)
    task.save_extras(str(out))
    marker = json.loads((out / REWARD_MODEL_MARKER).read_text())
    assert marker["kind"] == "reward_model" and marker["feedback"] == "pairwise"
    assert marker["base_model"] == str(tiny_model) and marker["num_labels"] == 1
    assert "rayrlhf" in marker["trained_by"]
    model, _ = load_reward_model(str(out))
    assert model.config.num_labels == 1
    assert AutoModelForSequenceClassification.from_pretrained(out).config.num_labels == 1
