"""Multi-turn rollouts, token in and token out: episodes of turns and observations in one
rollout row, observation tokens context but never trained on, limits, and the same episode
every time a chunk is generated."""

from __future__ import annotations

import pytest
import torch
from inprocess import setup_learner, step_config

from rayrlhf.envs import EnvStep
from rayrlhf.envs.words import WordToolEnv
from rayrlhf.experience import PromptChunk
from rayrlhf.generation.episodes import run_episodes
from rayrlhf.roles.reward import RewardWorker
from rayrlhf.roles.rollout import RolloutWorker
from rayrlhf.tiny_models import build_tokenizer

ENV = [
    "rollout.environment=rayrlhf.envs.words:WordToolEnv",
    "rollout.max_turns=3",
    "rollout.max_new_tokens=8",
]
CHUNK = PromptChunk([f"0-{i}" for i in range(6)], ["the movie was"] * 6)


@pytest.fixture(scope="module")
def episode(tiny_model, prompts_file):
    """A chunk of six WordToolEnv episodes from the tiny model (two of them make a tool call)."""
    config = step_config(tiny_model, prompts_file, *ENV)
    return config, RolloutWorker(config).generate(CHUNK)


def _observation_ids() -> list[int]:
    return build_tokenizer()(WordToolEnv.OBSERVATION, add_special_tokens=False)["input_ids"]


def _observed(rollout) -> torch.Tensor:
    """(B, R) bool: where the observations are, found from the token ids alone (not from any
    mask the code under test made): the tokens right after a turn's closing word."""
    tok = build_tokenizer()
    closing = {tok.convert_tokens_to_ids(w) for w in WordToolEnv.stop}
    n, out = len(_observation_ids()), torch.zeros_like(rollout.response_ids, dtype=torch.bool)
    for i, row in enumerate(rollout.response_ids.tolist()):
        real = int(rollout.response_attention_mask[i].sum())
        for j in range(real):
            if row[j] in closing and j + n < real:
                out[i, j + 1 : j + 1 + n] = True
    return out


def test_an_episode_is_its_turns_and_observations_as_sampled_and_tokenised_once(episode):
    config, r = episode
    obs = _observation_ids()
    multi = [i for i in range(len(r)) if r.episode_stats["turns"][i] > 1]
    assert multi and _observed(r).any(), "no episode called the tool: the test checks nothing"
    for i in range(len(r)):
        mask, att = r.response_mask[i], r.response_attention[i]
        observed = _observed(r)[i]
        assert (att[observed] == 1).all() and (mask[observed] == 0).all()
        assert torch.equal(observed, (att == 1) & (mask == 0))
        calls = int(r.episode_stats["tool_calls"][i])
        assert int(observed.sum()) == calls * len(obs) == r.episode_stats["observation_tokens"][i]
        assert r.response_ids[i][observed].tolist() == obs * calls  # the observation's own ids
        assert (r.logprobs[i][observed] == 0).all()  # no behaviour log-prob: nothing sampled
        assert r.env_rewards[i] == pytest.approx(0.25 * calls)
        assert r.episode_stats["turns"][i] == calls + 1 or r.episode_stats["truncated"][i] == 1
    # Token in, token out: the learner's teacher-forced log-probs over prompt + every turn and
    # observation are the sampler's, at each generated token.
    model = RolloutWorker(config).engine.model
    ids, am = r.input_ids, r.attention_mask
    with torch.no_grad():
        logits = model(ids, attention_mask=am, position_ids=(am.cumsum(-1) - 1).clamp(min=0))
    p = r.prompt_ids.shape[1]
    lp = torch.log_softmax(logits.logits[:, p - 1 : -1].float(), -1)
    lp = lp.gather(-1, r.response_ids.unsqueeze(-1)).squeeze(-1)
    assert ((lp - r.logprobs) * r.response_mask).abs().max() < 1e-5


def test_the_same_chunk_is_the_same_episodes_on_another_worker(episode):
    config, first = episode
    again = RolloutWorker(config, worker_index=1).generate(CHUNK)
    assert torch.equal(first.response_ids, again.response_ids)
    assert torch.equal(first.response_mask, again.response_mask)
    assert first.responses == again.responses


def test_the_reward_holds_the_environments_part(episode):
    config, r = episode
    scores = RewardWorker(config.reward).score(r)
    assert torch.equal(scores.components["env"], r.env_rewards)
    assert torch.allclose(scores.rewards, scores.components["score"] + r.env_rewards)


class _Scripted:
    """An engine that samples the same turn every time: ``turn`` ids, log-prob -1 each."""

    def __init__(self, turn: list[int]) -> None:
        self.turn, self.calls = turn, []

    def generate(self, prompt_ids, prompt_mask, chunk_seed, row_seeds, max_new_tokens, stop):
        self.calls.append(max_new_tokens)
        ids = torch.tensor([self.turn[:max_new_tokens]] * len(prompt_ids))
        return ids, -torch.ones(ids.shape)


class _AlwaysCall:
    stop = ["film"]

    def step(self, text, token_ids):
        return EnvStep(observation=" the plot", tool_calls=1)


def test_limits_cut_episodes_and_count_them_truncated():
    tok = build_tokenizer()
    film = tok("a film", add_special_tokens=False)["input_ids"]
    first = [tok("the movie")["input_ids"]]
    # Every turn calls the tool: the third turn is the last one allowed.
    out = run_episodes(_Scripted(film), tok, [_AlwaysCall()], first, 0, [0], (3, 8, 100))
    assert out.stats["turns"].tolist() == [3.0] and out.stats["truncated"].tolist() == [1.0]
    assert out.response_mask[0].tolist() == [1, 1, 0, 0, 1, 1, 0, 0, 1, 1]  # no trailing obs
    # A budget of 5 response tokens: turn (2), observation (2), then a turn cut to 1 token.
    engine = _Scripted(film)
    out = run_episodes(engine, tok, [_AlwaysCall()], first, 0, [0], (3, 8, 5))
    assert out.response_mask[0].tolist() == [1, 1, 0, 0, 1]
    assert out.stats["truncated"].tolist() == [1.0] and engine.calls == [5, 1]


def test_the_loss_never_trains_on_observation_tokens(episode, tiny_model, prompts_file):
    """The gradient of a learner step's losses reaches the logits that predict sampled tokens
    and never those that predict an observation's: a mask that let them in fails here."""
    config = step_config(
        tiny_model, prompts_file, *ENV, "learner.packing=false", "learner.minibatch_size=6",
        "learner.micro_batch_size=6", "rollout.prompts_per_step=6", "rollout.chunk_size=6",
        "online.entropy_coef=0.01",
    )  # fmt: skip
    _, rollout = episode
    learner = setup_learner(config)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def keep(module, args, kwargs, output):
        if output.logits.requires_grad:
            output.logits.retain_grad()
            seen.append((kwargs["input_ids"], output.logits))

    learner.policy.module.register_forward_hook(keep, with_kwargs=True)
    scores = RewardWorker(config.reward).score(rollout)
    learner.train_step([rollout], [scores], [None])
    assert seen
    full, observed = rollout.input_ids, _observed(rollout)
    assert observed.any()
    for ids, logits in seen:
        for row in range(len(ids)):
            i = next(k for k in range(len(full)) if torch.equal(full[k], ids[row]))
            grad = logits.grad[row, :-1].abs().sum(-1)  # column j predicts response token j
            assert (grad[observed[i]] == 0).all(), f"row {i} trains on observation tokens"
            assert (grad[rollout.response_mask[i] == 1] > 0).any()
