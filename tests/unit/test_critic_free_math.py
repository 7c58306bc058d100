"""Critic-free estimators, loss aggregations, DAPO's clip and dynamic sampling, by hand.

Every expected number is written out with its arithmetic, not recomputed by a second copy of
the formula.
"""

from __future__ import annotations

import pytest
import torch
from hand_computed import close, policy_case

from rayrlhf.algos.advantages import (
    ADVANTAGE_ESTIMATORS,
    AdvantageInputs,
    AdvantageParams,
    discounted_returns,
    group_mean_std,
    group_normalized,
    leave_one_out,
)
from rayrlhf.algos.aggregation import LOSS_AGGREGATIONS, aggregate
from rayrlhf.algos.algorithms import ALGORITHMS, resolve
from rayrlhf.algos.kl import kl_k3
from rayrlhf.algos.losses import policy_loss
from rayrlhf.buffer import ChunkRefs, ExperienceBuffer, LedgerError, SampleState
from rayrlhf.controller.sampler import choose_groups, informative_groups
from rayrlhf.experience import Rollout, Scores, join_chunks

# groups: [1, 2, 3] (mean 2, unbiased std 1), [5, 5] (std 0), [0, 4] (mean 2, std √8)
REWARDS = torch.tensor([1.0, 2.0, 3.0, 5.0, 5.0, 0.0, 4.0])
GROUPS = torch.tensor([0, 0, 0, 1, 1, 2, 2])


def test_group_statistics() -> None:
    mean, std, size = group_mean_std(REWARDS, GROUPS)
    close(mean, [2.0, 5.0, 2.0])
    close(std, [1.0, 0.0, 2.8284271])
    close(size, [3.0, 2.0, 2.0])


def test_grpo_group_normalised_advantage() -> None:
    adv = group_normalized(REWARDS, GROUPS, std_normalize=True, eps=1e-6)
    # (r - mean) / (std + 1e-6): -1/1.000001, 0, +1/1.000001 | 0, 0 | ∓2/2.8284281
    close(adv, [-0.999999, 0.0, 0.999999, 0.0, 0.0, -0.7071065, 0.7071065])


def test_dr_grpo_does_not_divide_by_the_std() -> None:
    adv = group_normalized(REWARDS, GROUPS, std_normalize=False)
    close(adv, [-1.0, 0.0, 1.0, 0.0, 0.0, -2.0, 2.0])


def test_rloo_leave_one_out_baseline() -> None:
    adv = leave_one_out(REWARDS, GROUPS)
    # 1 - (2+3)/2 = -1.5; 2 - (1+3)/2 = 0; 3 - (1+2)/2 = 1.5 | 5 - 5 = 0 (twice) | 0-4, 4-0
    close(adv, [-1.5, 0.0, 1.5, 0.0, 0.0, -4.0, 4.0])
    with pytest.raises(ValueError, match="two samples"):
        leave_one_out(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0, 0, 1]))


def test_reinforce_pp_discounted_returns() -> None:
    rewards = torch.tensor([[1.0, 0.0, 2.0], [0.0, 3.0, 99.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    # row 0: G2 = 2, G1 = 0 + .5*2 = 1, G0 = 1 + .5*1 = 1.5; row 1: G1 = 3, G0 = 1.5, pad 0
    close(discounted_returns(rewards, mask, 0.5), [[1.5, 1.0, 2.0], [1.5, 3.0, 0.0]])
    out = ADVANTAGE_ESTIMATORS["reinforce_pp"](
        AdvantageInputs(rewards, mask, torch.tensor([0, 1])), AdvantageParams(gamma=0.5)
    )
    close(out.advantages, [[1.5, 1.0, 2.0], [1.5, 3.0, 0.0]])


def test_group_estimator_reads_sequence_reward_and_spreads_it_over_tokens() -> None:
    # score on the last token, a KL penalty of -0.5 on the first: sequence rewards 1.5 and 3.5
    rewards = torch.tensor([[-0.5, 2.0], [-0.5, 4.0]])
    mask = torch.tensor([[1, 1], [1, 1]])
    inputs = AdvantageInputs(rewards, mask, torch.tensor([0, 0]))
    out = ADVANTAGE_ESTIMATORS["group"](inputs, AdvantageParams(std_normalize=False))
    close(out.advantages, [[-1.0, -1.0], [1.0, 1.0]])  # 1.5 - 2.5, 3.5 - 2.5 on every token
    out = ADVANTAGE_ESTIMATORS["rloo"](inputs, AdvantageParams())
    close(out.advantages, [[-2.0, -2.0], [2.0, 2.0]])  # 1.5 - 3.5, 3.5 - 1.5
    with pytest.raises(ValueError, match="critic"):
        ADVANTAGE_ESTIMATORS["gae"](inputs, AdvantageParams())


def test_loss_aggregations() -> None:
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, float("nan")]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    close(aggregate(x, mask, "token_mean"), 3.0)  # 15 / 5 tokens
    close(aggregate(x, mask, "seq_mean"), 3.25)  # (6/3 + 9/2) / 2
    close(aggregate(x, mask, "constant", 4.0), 1.875)  # 15 / (2 rows × C=4)
    close(LOSS_AGGREGATIONS["token_mean"].units(mask, 1.0), [3.0, 2.0])
    close(LOSS_AGGREGATIONS["seq_mean"].units(mask, 1.0), [1.0, 1.0])


def test_grpo_and_dr_grpo_policy_loss() -> None:
    logp, old, adv, mask = policy_case()
    # per token (ε 0.2): -1.2, -0.5, 1.5 | 0.8, -2.2
    grpo = policy_loss(logp, old, adv, mask, 0.2, agg="seq_mean")
    close(grpo.loss, -0.3833333)  # (-0.2/3 + -1.4/2) / 2
    dr = policy_loss(logp, old, adv, mask, 0.2, agg="constant", constant=3.0)
    close(dr.loss, -0.2666667)  # -1.6 / (2 rows × 3)


def test_dapo_clip_higher_with_token_mean() -> None:
    logp, old, adv, mask = policy_case()
    out = policy_loss(logp, old, adv, mask, 0.2, clip_high=0.28, agg="token_mean")
    # (1.5,+1): max(-1.5, -1.28) = -1.28 (the upper clip moved from 1.2 to 1.28)
    # (0.5,+1): -0.5   (1.5,-1): 1.5   (0.5,-1): max(0.5, 0.8) = 0.8 (lower clip stays 0.8)
    # (1.1,+2): -2.2   → (-1.28 - 0.5 + 1.5 + 0.8 - 2.2) / 5 = -0.336
    close(out.loss, -0.336)
    close(out.clip_fraction, 0.4)
    out.loss.backward()
    # gradient -A·r/5 where unclipped: (0.5,+1) → -0.1, (1.5,-1) → 0.3, (1.1,+2) → -0.44
    close(logp.grad, [[0.0, -0.1, 0.3], [0.0, -0.44, 0.0]])


def test_k3_in_the_loss_pulls_toward_the_reference() -> None:
    logp = torch.zeros(1, 1, requires_grad=True)
    ref = torch.log(torch.tensor([[0.5]]))
    kl = kl_k3(logp, ref)
    close(kl, [[0.1931472]])  # e^r - 1 - r with r = ln 0.5: 0.5 - 1 + 0.6931472
    kl.sum().backward()
    close(logp.grad, [[0.5]])  # d/dlogp = 1 - e^(ref - logp) = 1 - 0.5: lowers logp toward ref


def test_algorithm_table_and_overrides() -> None:
    assert ALGORITHMS["ppo"].critic and ALGORITHMS["ppo"].kl_in == "reward"
    grpo = resolve("grpo")
    assert not grpo.critic and grpo.kl_in == "loss" and grpo.kl_estimator == "k3"
    assert grpo.loss_agg == "seq_mean" and grpo.min_group_size == 2
    assert resolve("dr_grpo").loss_agg == "constant" and not resolve("dr_grpo").std_normalize
    dapo = resolve("dapo")
    assert dapo.clip_high == 0.28 and dapo.dynamic_sampling and dapo.loss_agg == "token_mean"
    assert resolve("grpo", kl_in="reward", kl_estimator=None).kl_in == "reward"
    assert resolve("ppo", advantage="rloo").min_group_size == 2  # the estimator decides
    with pytest.raises(ValueError, match="unknown algorithm"):
        resolve("a2c")
    with pytest.raises(ValueError, match="KL estimator"):
        resolve("grpo", kl_estimator="k7")


def test_config_checks_group_size_and_builds_no_reference_at_kl_zero(make_config) -> None:
    from rayrlhf.config import ConfigError

    with pytest.raises(ConfigError, match="group_size >= 2"):
        make_config("algorithm.name=grpo")
    cfg = make_config("algorithm.name=grpo", "rollout.group_size=4", "ppo.kl_coef=0")
    assert not cfg.algo.critic and not cfg.uses_reference
    with pytest.raises(ConfigError, match="adaptive"):
        make_config("ppo.kl_coef=0", "ppo.kl_controller=adaptive")
    with pytest.raises(ConfigError, match="group_size"):
        make_config(
            "rollout.group_size=3", "rollout.prompts_per_step=8", "learner.minibatch_size=16"
        )


def _rollout(ids: list[str], group_size: int) -> Rollout:
    b = len(ids)
    return Rollout(
        sample_ids=ids,
        policy_version=0,
        prompt_ids=torch.ones(b, 2, dtype=torch.long),
        prompt_mask=torch.ones(b, 2, dtype=torch.long),
        response_ids=torch.arange(b).unsqueeze(1).repeat(1, 3),
        response_mask=torch.ones(b, 3, dtype=torch.long),
        logprobs=torch.zeros(b, 3),
        prompts=["p"] * b,
        responses=ids,
        group_size=group_size,
    )


def test_join_chunks_numbers_groups_and_keeps_selected_rows() -> None:
    a = _rollout(["0-0.0", "0-0.1", "0-1.0", "0-1.1"], 2)
    b = _rollout(["0-2.0", "0-2.1"], 2)
    scores = [Scores(a.sample_ids, torch.arange(4.0)), Scores(b.sample_ids, torch.tensor([7.0, 8]))]
    batch = join_chunks([a, b], scores, [None, None])
    assert batch.group_index.tolist() == [0, 0, 1, 1, 2, 2] and batch.ref_logprobs is None
    picked = join_chunks([a, b], scores, [None, None], rows=[[2, 3], None])
    assert picked.sample_ids == ["0-1.0", "0-1.1", "0-2.0", "0-2.1"]
    assert picked.group_index.tolist() == [1, 1, 2, 2] and picked.scores.tolist() == [2, 3, 7, 8]


def test_dynamic_sampling_choice() -> None:
    s = Scores(["a", "b", "c", "d"], torch.tensor([1.0, 1.0, 0.0, 1.0]))
    assert informative_groups(s, 2) == [False, True]
    keep, counts = choose_groups([[True, False], [False, True]], 2)
    assert keep == [[0], [1]] and counts == {"surplus": 0, "dropped": 2}
    keep, counts = choose_groups([[True, False], [False, True]], 1)
    assert keep == [[0], []] and counts == {"surplus": 1, "dropped": 2}
    keep, counts = choose_groups([[False, False]], 1)  # too few: a degenerate group fills in
    assert keep == [[0]] and counts == {"surplus": 0, "dropped": 1}


def test_ledger_drops_are_accounted_and_survive_a_checkpoint() -> None:
    buf = ExperienceBuffer()
    ids = ("0-0.0", "0-0.1", "0-1.0", "0-1.1")
    buf.dispatch(ids)
    buf.add(ChunkRefs(ids, "r", "s", None))
    buf.select([[2, 3]])
    shards = buf.shards(1)
    assert shards[0].rows == [[2, 3]]
    assert buf.mark_trained() == 2
    state = buf.state_dict()
    assert state["dropped"] == ["0-0.0", "0-0.1"] and state["trained"] == ["0-1.0", "0-1.1"]
    again = ExperienceBuffer()
    again.load_state(state)
    assert again.ledger["0-0.0"] is SampleState.DROPPED
    with pytest.raises(LedgerError):
        again.dispatch(["0-0.0"])  # a dropped sample is never made again
