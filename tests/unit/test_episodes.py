"""Multi-turn rollouts, token in and token out: episodes of turns and observations in one
rollout row, observation tokens context but never trained on, limits, and the same episode
every time a chunk is generated."""

from __future__ import annotations

import time

import pytest
import torch
from inprocess import setup_learner, step_config

from rayrlhf.envs import EnvStep
from rayrlhf.envs.batch import LocalEnvs, in_parallel
from rayrlhf.envs.python_tool import PythonToolEnv
from rayrlhf.envs.words import WordToolEnv
from rayrlhf.experience import PromptChunk
from rayrlhf.generation.episodes import run_episodes
from rayrlhf.roles.environment import EnvironmentWorker
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
    # Did it use its tool (and every call work)? Logged always, a reward only when weighted.
    called = (r.episode_stats["tool_calls"] > 0) & (r.episode_stats["tool_errors"] == 0)
    assert torch.equal(scores.components["tool_call"], called.float()) and 0 < called.sum() < 6
    weighted = config.reward.model_copy(update={"component_weights": {"tool_call": 0.5}})
    rewards = RewardWorker(weighted).score(r).rewards
    assert torch.allclose(rewards, scores.rewards + 0.5 * called.float())


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

    def reset(self, row, sample_id):
        return row["prompt"]

    def step(self, text, token_ids):
        return EnvStep(observation=" the plot", tool_calls=1)


def _calling() -> LocalEnvs:
    return LocalEnvs(_AlwaysCall, [{"prompt": "the movie"}], ["s-0"])


def test_limits_cut_episodes_and_count_them_truncated():
    tok = build_tokenizer()
    film = tok("a film", add_special_tokens=False)["input_ids"]
    first = [tok("the movie")["input_ids"]]
    # Every turn calls the tool: the third turn is the last one allowed.
    out = run_episodes(_Scripted(film), tok, _calling(), first, 0, [0], (3, 8, 100))
    assert out.stats["turns"].tolist() == [3.0] and out.stats["truncated"].tolist() == [1.0]
    assert out.response_mask[0].tolist() == [1, 1, 0, 0, 1, 1, 0, 0, 1, 1]  # no trailing obs
    # A budget of 5 response tokens: turn (2), observation (2), then a turn cut to 1 token.
    engine = _Scripted(film)
    out = run_episodes(engine, tok, _calling(), first, 0, [0], (3, 8, 5))
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


class _OnWorker:
    """:class:`RemoteEnvs` without Ray: the chunk's episodes on a plain EnvironmentWorker."""

    def __init__(self, worker, chunk_id, rows, sample_ids, timeout_s):
        self.worker, self.key = worker, (chunk_id, "this attempt")
        self.firsts, self.stop = worker.reset(self.key, rows, sample_ids)

    def step(self, indices, texts, ids):
        return self.worker.step(self.key, indices, texts, ids)

    def close(self):
        self.worker.close(self.key)


class _Numbered(WordToolEnv):
    """WordToolEnv whose calls earn 0.25 + the episode's number / 100: each episode its own."""

    def reset(self, row, sample_id):
        self.number = int(sample_id.split("-")[1])
        return super().reset(row, sample_id)

    def step(self, text, token_ids):
        step = super().step(text, token_ids)
        step.reward += self.number / 100 if step.tool_calls else 0.0
        return step


def test_an_environment_worker_gives_the_same_episodes(tiny_model, prompts_file, monkeypatch):
    """The chunk's environments held on an environment worker (four threads), reached through
    the rollout worker's env_worker path: the same episodes, each answered by its own
    environment, and nothing left held after."""
    env = [f"rollout.environment={__name__}:_Numbered", *ENV[1:]]
    config = step_config(tiny_model, prompts_file, *env)
    here = RolloutWorker(config).generate(CHUNK)
    monkeypatch.setattr("rayrlhf.roles.rollout.RemoteEnvs", _OnWorker)
    worker = EnvironmentWorker(config.rollout.environment, threads=4)
    earlier = (CHUNK.sample_ids[0], "a dead worker's attempt")
    worker.reset(earlier, [{"prompt": "stale"}], ["9-9"])
    there = RolloutWorker(config, worker_index=1).generate(CHUNK, env_worker=worker)
    with pytest.raises(KeyError, match="no episodes held"):  # its late calls find nothing
        worker.step(earlier, [0], ["good"], [[1]])
    calls = here.episode_stats["tool_calls"]
    assert (calls > 0).sum() > 1, "too few calls to tell episodes apart"
    assert torch.allclose(here.env_rewards, calls * (0.25 + torch.arange(len(calls)) / 100))
    for name in ("response_ids", "response_mask", "logprobs", "env_rewards"):
        assert torch.equal(getattr(here, name), getattr(there, name)), name
    assert worker.live_chunks() == 0
    on_workers = step_config(tiny_model, prompts_file, *env, "env_workers.num_workers=1")
    with pytest.raises(ValueError, match="runs on environment workers"):
        RolloutWorker(on_workers).generate(CHUNK)  # never silently single-turn


def test_the_python_tool_runs_each_call_in_the_sandbox():
    env = PythonToolEnv()
    assert "<python>" in env.reset({"prompt": "What is 2**10?"}, "0-0")
    ok = env.step("<python>print(2**10)</python>", [])
    assert (ok.observation, ok.tool_calls, ok.tool_errors, ok.done) == (
        "\nOutput: 1024\n",
        1,
        0,
        False,
    )
    bad = env.step("<python>print(1/0)</python>", [])
    assert bad.tool_errors == 1 and "ZeroDivisionError" in bad.observation and not bad.done
    assert env.step("Answer: 1024", []).done


def test_a_turn_steps_its_episodes_in_parallel_and_in_order():
    order = in_parallel([lambda k=k: (time.sleep(0.05 * (4 - k)), k)[1] for k in range(4)], 4)
    assert order == [0, 1, 2, 3]
