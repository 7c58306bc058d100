"""Rollout layout: the EOS mask, chunk joining, the ledger."""

from __future__ import annotations

import pytest
import torch

from rayrlhf.buffer import ChunkRefs, ExperienceBuffer, LedgerError, SampleState, fetch
from rayrlhf.experience import (
    ReferenceLogprobs,
    Rollout,
    Scores,
    join_chunks,
    response_mask_from_ids,
)


def test_eos_kept_in_mask_when_pad_equals_eos():
    # pad == eos == 0: generate pads finished rows with 0 after the EOS.
    ids = torch.tensor([[5, 6, 0, 0, 0], [5, 6, 7, 8, 9], [0, 0, 0, 0, 0]])
    mask = response_mask_from_ids(ids, 0)
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]


def test_eos_mask_with_several_eos_ids():
    ids = torch.tensor([[5, 3, 0, 4]])
    assert response_mask_from_ids(ids, [3, 4]).tolist() == [[1, 1, 0, 0]]


def _rollout(ids: list[str], p: int, r: int, version: int = 0) -> Rollout:
    b = len(ids)
    return Rollout(
        sample_ids=ids,
        policy_version=version,
        prompt_ids=torch.full((b, p), 7),
        prompt_mask=torch.ones(b, p, dtype=torch.long),
        response_ids=torch.full((b, r), 8),
        response_mask=torch.ones(b, r, dtype=torch.long),
        logprobs=torch.full((b, r), -1.0),
        prompts=["p"] * b,
        responses=["r"] * b,
        generate_seconds=1.0,
    )


def test_join_chunks_pads_prompts_left_and_responses_right():
    a, b = _rollout(["a0"], p=2, r=3), _rollout(["b0", "b1"], p=4, r=1)
    scores = [Scores(["a0"], torch.tensor([1.0])), Scores(["b0", "b1"], torch.tensor([2.0, 3.0]))]
    refs = [ReferenceLogprobs(r.sample_ids, torch.full_like(r.logprobs, -2.0)) for r in (a, b)]
    batch = join_chunks([a, b], scores, refs)
    assert batch.prompt_len == 4
    assert batch.input_ids.shape == (3, 7)
    assert batch.attention_mask[0].tolist() == [0, 0, 1, 1, 1, 1, 1]  # left pad, full response
    assert batch.attention_mask[1].tolist() == [1, 1, 1, 1, 1, 0, 0]  # full prompt, right pad
    assert batch.response_mask.tolist() == [[1, 1, 1], [1, 0, 0], [1, 0, 0]]
    assert batch.ref_logprobs[1].tolist() == [-2.0, 0.0, 0.0]
    assert batch.scores.tolist() == [1.0, 2.0, 3.0]
    assert batch.sample_ids == ["a0", "b0", "b1"]
    assert batch.phase_seconds == (2.0, 0.0, 0.0)


def test_join_chunks_rejects_misaligned_ids():
    a = _rollout(["a0"], 2, 2)
    with pytest.raises(ValueError, match="sample ids disagree"):
        join_chunks(
            [a],
            [Scores(["zz"], torch.tensor([1.0]))],
            [ReferenceLogprobs(["a0"], torch.zeros(1, 2))],
        )


def test_ledger_counts_each_sample_once():
    buf = ExperienceBuffer()
    for i in range(4):
        buf.add(ChunkRefs((f"s{i}",), f"r{i}", f"sc{i}", f"ref{i}"))
    shards = buf.shards(2)
    assert [s.rollouts for s in shards] == [["r0", "r2"], ["r1", "r3"]]
    assert buf.mark_trained() == 4
    assert buf.count(SampleState.TRAINED) == 4
    with pytest.raises(LedgerError, match="arrived twice"):
        buf.add(ChunkRefs(("s1",), "x", "x", "x"))
    with pytest.raises(LedgerError, match="dispatched again in state trained"):
        buf.dispatch(["s1"])
    buf.add(ChunkRefs(("s9",), "x", "x", "x"))
    with pytest.raises(ValueError, match="do not split over 2 ranks"):
        buf.shards(2)


def test_a_redispatched_chunk_arrives_once_and_is_trained_once():
    buf = ExperienceBuffer()
    buf.dispatch(["a", "b"])
    buf.dispatch(["a", "b"])  # its worker died: the same ids go out again
    buf.add(ChunkRefs(("a", "b"), "r", "s", "f"))
    with pytest.raises(LedgerError, match="arrived twice"):
        buf.add(ChunkRefs(("a", "b"), "r2", "s2", "f2"))
    assert len(buf.pending) == 1 and buf.mark_trained() == 2
    with pytest.raises(LedgerError, match="trained twice"):
        buf.pending = [ChunkRefs(("a",), "r", "s", "f")]
        buf.mark_trained()


def test_ledger_round_trips_and_abandon_forgets_the_unfinished_step():
    buf = ExperienceBuffer()
    buf.add(ChunkRefs(("0-0", "0-1"), "r", "s", "f"))
    buf.mark_trained()
    state = buf.state_dict()
    buf.dispatch(["1-0"])
    buf.add(ChunkRefs(("1-1",), "r", "s", "f"))
    with pytest.raises(LedgerError, match="between steps"):
        buf.state_dict()
    buf.abandon()
    assert buf.state_dict() == state
    assert state == {"trained": ["0-0", "0-1"], "dropped": [], "dispatched": [], "trained_total": 2}
    other = ExperienceBuffer()
    other.load_state(state)
    assert other.ledger == buf.ledger and other.trained_total == 2


def test_fetch_passes_plain_objects_through():
    assert fetch([1, "a"]) == [1, "a"]


def test_ledger_keeps_steps_in_flight_through_a_checkpoint_and_an_abandon():
    """Asynchronous training checkpoints with later steps dispatched: they stay dispatched (a
    resume dispatches them again), while the unfinished step's arrived samples are forgotten."""
    buf = ExperienceBuffer()
    buf.add(ChunkRefs(("0-0",), "r", "s", "f"))
    buf.mark_trained()
    buf.dispatch(["1-0", "2-0"])  # steps 1 and 2 generating ahead
    state = buf.state_dict()
    assert state["dispatched"] == ["1-0", "2-0"]
    buf.add(ChunkRefs(("1-0",), "r", "s", "f"))  # step 1 arrives; the run fails before training
    with pytest.raises(LedgerError, match="between steps"):
        buf.state_dict()
    buf.abandon(keep={"2-0"})
    assert buf.state_dict()["dispatched"] == ["2-0"]
    again = ExperienceBuffer()
    again.load_state(state)
    again.dispatch(["1-0", "2-0"])  # the resume dispatches them again: allowed
    again.add(ChunkRefs(("1-0",), "r", "s", "f"))
    assert again.mark_trained() == 1
    with pytest.raises(LedgerError, match="dispatched again"):
        again.dispatch(["1-0"])
