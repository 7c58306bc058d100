"""Reward validation: one finite number per sample, or an error naming the scorer and sample."""

from __future__ import annotations

import math

import pytest
import torch

from rayrlhf.rewards.rules import target_word_frequency
from rayrlhf.roles.reward import RewardError, import_function, validate_scores

IDS = ["s0", "s1"]


def test_valid_scores_become_float_tensor():
    out = validate_scores([1, 0.5], IDS, "fn")
    assert out.dtype == torch.float32 and out.tolist() == [1.0, 0.5]
    assert validate_scores(torch.tensor([1.0, 2.0]), IDS, "fn").tolist() == [1.0, 2.0]


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ([1.0], "returned 1 scores for 2 samples"),
        (3.0, "returned float"),
        ("ab", "returned str"),
        ([1.0, "x"], "non-number 'x' for sample 's1'"),
        ([1.0, True], "non-number True"),
        ([math.nan, 1.0], "non-finite score nan for sample 's0'"),
        ([1.0, math.inf], "non-finite score inf"),
        (torch.ones(2, 1), r"tensor of shape \(2, 1\)"),
    ],
)
def test_bad_scores_raise_naming_the_problem(raw, match):
    with pytest.raises(RewardError, match=match):
        validate_scores(raw, IDS, "reward function m:f")


def test_import_function_errors():
    with pytest.raises(RewardError, match="cannot import 'no_such_mod'"):
        import_function("no_such_mod:f")
    with pytest.raises(RewardError, match="has no callable 'nope'"):
        import_function("rayrlhf.rewards.rules:nope")
    assert import_function("rayrlhf.rewards.rules:target_word_frequency") is target_word_frequency


def test_target_word_frequency():
    assert target_word_frequency(["", "", ""], ["good bad", "", "good good"]) == [0.5, 0.0, 1.0]
