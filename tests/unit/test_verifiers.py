"""Verifiable rewards: answers found and checked (math-verify, numbers, exact text, a
reasoning-gym task's scorer), prompt rows carrying reference answers to the reward worker, named
components weighted and logged, and the checks before Ray starts."""

from __future__ import annotations

import json

import pytest
import torch

from rayrlhf.config import ConfigError, ReasoningGymConfig, load
from rayrlhf.data.prompts import PromptSource, prompt_table
from rayrlhf.data.reasoning_tasks import heldout_rows, task_rows
from rayrlhf.experience import Rollout, join_chunks
from rayrlhf.preflight import check_verified_prompts
from rayrlhf.rewards.verifiers import (
    exact_answer,
    final_answer,
    math_answer,
    numeric_answer,
    reasoning_gym_answer,
)
from rayrlhf.roles.reward import RewardError, RewardWorker


def test_the_final_answer_is_the_last_box_or_answer_line_else_the_last_number():
    assert final_answer(r"first \boxed{1} then \boxed{\frac{1}{2}} done") == (r"\frac{1}{2}", True)
    assert final_answer("so 3 + 4 = 7\nAnswer: 7.") == ("7", True)
    assert final_answer("it is 12, or maybe 13") == ("13", False)
    assert final_answer(r"\boxed{unclosed") == (None, False)
    assert final_answer("no numbers here") == (None, False)


def test_math_answer_checks_equivalence_not_spelling():
    rows = [{"answer": "0.5"}, {"answer": r"\frac{1}{3}"}, {"answer": "42"}, {"answer": "42"}]
    responses = [r"so \boxed{\frac{2}{4}}", "Answer: 1/3", r"\boxed{41}", "I get 42"]
    out = math_answer([""] * 4, responses, rows)
    assert out == {"correct": [1.0, 1.0, 0.0, 1.0], "format": [1.0, 1.0, 1.0, 0.0]}


def test_numeric_and_exact_answers():
    rows = [{"answer": "1,234"}, {"answer": "2.5"}, {"answer": "Paris"}]
    responses = ["Answer: 1234", "Answer: 2.50000001", "Answer: paris."]
    assert numeric_answer([], responses, rows)["correct"] == [1.0, 1.0, 0.0]
    assert exact_answer([], responses, rows)["correct"] == [0.0, 0.0, 1.0]


def test_a_verifier_without_reference_answers_says_what_to_set():
    with pytest.raises(ValueError, match="data.answer_key"):
        math_answer(["p"], ["Answer: 1"], None)


def test_reasoning_gym_rows_are_deterministic_and_scored_by_the_tasks_own_scorer():
    spec = ReasoningGymConfig(task="basic_arithmetic", size=6, seed=3)
    rows = task_rows(spec)
    assert rows == task_rows(spec)  # generated here, the same every time
    assert [r["prompt"] for r in rows] != [r["prompt"] for r in task_rows(spec.model_copy(
        update={"seed": 4}))]  # fmt: skip
    assert rows[0]["prompt"].endswith(spec.instruction)
    right = [f"Answer: {r['answer']}" for r in rows]
    wrong = [f"Answer: {r['answer']}1" for r in rows]
    extras = [{k: v for k, v in r.items() if k != "prompt"} for r in rows]
    assert reasoning_gym_answer([], right, extras)["correct"] == [1.0] * 6
    # The task's scorer, not ours: basic_arithmetic gives a near miss partial credit.
    assert all(0.0 <= c < 1.0 for c in reasoning_gym_answer([], wrong, extras)["correct"])


def test_heldout_rows_drop_questions_the_training_task_holds():
    train = ReasoningGymConfig(task="basic_arithmetic", size=50, seed=1)
    held, dropped = heldout_rows(train.model_copy(update={"size": 50}), train)  # the same set
    assert held == [] and dropped == 50
    other, dropped = heldout_rows(train.model_copy(update={"seed": 2}), train)
    assert len(other) + dropped == 50
    assert not {r["prompt"] for r in other} & {r["prompt"] for r in task_rows(train)}


def _config(tiny_model, prompts_file, *extra):
    return load(
        None,
        [f"model.policy={tiny_model}", f"data.prompts={prompts_file}", "rollout.max_new_tokens=4",
         "reward.function=rayrlhf.rewards.rules:brevity",
         *extra],
    )  # fmt: skip


def test_answer_rows_travel_with_their_prompts(tiny_model, tmp_path):
    path = tmp_path / "qa.jsonl"
    lines = [
        {"q": "1+1?", "a": 2},
        {"q": "2+2?", "a": "4"},
        {"q": "no answer"},
        {"q": "3+3?", "a": 6},
    ]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    config = _config(
        tiny_model, path, "data.prompt_key=q", "data.answer_key=a", "data.max_bad_fraction=0.5"
    )
    prompts, rows, report = prompt_table(config.data)
    assert prompts == ["1+1?", "2+2?", "3+3?"] and report.skipped == 1  # skipped and counted
    assert rows == [{"answer": "2"}, {"answer": "4"}, {"answer": "6"}]
    chunks = PromptSource(prompts, 0, rows).step_chunks(0, 3, 2, group_size=2)
    for chunk in chunks:
        assert chunk.rows is not None
        for prompt, row in zip(chunk.prompts, chunk.rows, strict=True):
            assert row == rows[prompts.index(prompt)]  # dealt in the same order


def _rollout(ids: list[str], responses: list[str], rows: list[dict]) -> Rollout:
    n = len(ids)
    return Rollout(
        sample_ids=ids, policy_version=0, prompt_ids=torch.ones(n, 2, dtype=torch.long),
        prompt_mask=torch.ones(n, 2, dtype=torch.long),
        response_ids=torch.ones(n, 3, dtype=torch.long),
        response_mask=torch.ones(n, 3, dtype=torch.long), logprobs=torch.zeros(n, 3),
        prompts=["q"] * n, responses=responses, rows=rows,
    )  # fmt: skip


def test_the_reward_is_the_weighted_sum_of_named_components_each_kept(tiny_model, prompts_file):
    config = _config(
        tiny_model,
        prompts_file,
        "reward.function=rayrlhf.rewards.verifiers:math_answer",
        "reward.component_weights={format: 0.1}",
    )
    worker = RewardWorker(config.reward)
    a = worker.score(_rollout(["0-0", "0-1"], [r"\boxed{2}", "3"], [{"answer": "2"}] * 2))
    b = worker.score(_rollout(["0-2"], ["Answer: 2"], [{"answer": "2"}]))
    assert a.rewards.tolist() == pytest.approx([1.1, 0.0])
    assert a.components["correct"].tolist() == [1.0, 0.0]
    ro = [_rollout(["0-0", "0-1"], ["", ""], [{}] * 2), _rollout(["0-2"], [""], [{}])]
    batch = join_chunks(ro, [a, b], [None, None])
    assert batch.reward_components["format"].tolist() == [1.0, 0.0, 1.0]
    worker.score_fn = lambda p, r, rows: {"mean": [0.0] * len(r)}  # would shadow reward/mean
    with pytest.raises(RewardError, match="identifiers other than"):
        worker.score(_rollout(["0-0"], ["x"], [{"answer": "1"}]))


def test_checks_before_ray_starts(tiny_model, prompts_file):
    verifier = "reward.function=rayrlhf.rewards.verifiers:math_answer"
    with pytest.raises(ConfigError, match="verifies answers: set data.answer_key"):
        check_verified_prompts(_config(tiny_model, prompts_file, verifier))
    gym = ["data.prompts=null", "data.reasoning_gym={task: basic_arithmetic, size: 8, seed: 1}"]
    same = "eval.reasoning_gym={task: basic_arithmetic, size: 8, seed: 1}"
    with pytest.raises(ConfigError, match="eval.reasoning_gym.seed: 1 is data.reasoning_gym's"):
        check_verified_prompts(_config(tiny_model, prompts_file, verifier, *gym, same))
    check_verified_prompts(_config(tiny_model, prompts_file, verifier, *gym))  # all set: passes
    with pytest.raises(ValueError, match="exactly one of data.prompts or data.reasoning_gym"):
        _config(tiny_model, prompts_file, gym[1])


def test_a_learner_step_logs_each_component(tiny_model, prompts_file):
    """Rows from a reasoning-gym task through an in-process rollout worker, the task's scorer,
    and one learner step: reward/correct and reward/format are metrics of the step."""
    from inprocess import setup_learner, step_config

    from rayrlhf.roles.rollout import RolloutWorker

    config = step_config(
        tiny_model,
        prompts_file,
        "data.prompts=null",
        "data.reasoning_gym={task: basic_arithmetic, size: 8, seed: 1}",
        "reward.function=rayrlhf.rewards.verifiers:reasoning_gym_answer",
        "reward.component_weights={format: 0.5}",
        "algorithm.name=grpo",
        "rollout.group_size=2",
        "rollout.prompts_per_step=2",
        "rollout.chunk_size=2",
    )
    prompts, rows, _ = prompt_table(config.data)
    (chunk,) = PromptSource(prompts, 0, rows).step_chunks(0, 2, 2, group_size=2)
    rollout = RolloutWorker(config).generate(chunk)
    assert rollout.rows == chunk.rows
    scores = RewardWorker(config.reward).score(rollout)
    expected = scores.components["correct"] + 0.5 * scores.components["format"]
    assert torch.equal(scores.rewards, expected)
    metrics = setup_learner(config).train_step([rollout], [scores], [None])
    assert metrics["reward/correct"] == pytest.approx(float(scores.components["correct"].mean()))
    assert metrics["reward/format"] == pytest.approx(float(scores.components["format"].mean()))


def test_an_environment_that_cannot_work_is_refused_before_ray(tiny_model, prompts_file):
    from rayrlhf.preflight import check_before_start

    bad = _config(tiny_model, prompts_file, "rollout.environment=rayrlhf.envs.nope:Env")
    with pytest.raises(ConfigError, match="rollout.environment 'rayrlhf.envs.nope:Env'"):
        check_before_start(bad, online=True)
    with pytest.raises(ConfigError, match="env_workers.num_workers > 0 needs rollout.environment"):
        _config(tiny_model, prompts_file, "env_workers.num_workers=2")
    env = ("rollout.environment=rayrlhf.envs.words:WordToolEnv", "env_workers.num_workers=1")
    with pytest.raises(ConfigError, match=r"call_timeout_s \(600\) must be below timeouts"):
        _config(tiny_model, prompts_file, *env, "timeouts.rollout_s=600")
