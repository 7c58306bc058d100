"""The Japanese example's parts: asari as a reward function, and the openings of the corpus."""

from __future__ import annotations

import pytest

from rayrlhf.demo.japanese_data import opening, read_sentences

pytest.importorskip("asari", reason="asari: bash launch/setup.sh installs it")


def test_asari_scores_a_positive_sentence_high_and_a_negative_one_low():
    """The reward is 2·P(positive) − 1 of opening + continuation; the locale asari's ONNX
    string normaliser needs is built on the fly where the machine lacks it."""
    from rayrlhf.rewards.japanese import _locale_loads, asari_positive

    good, bad = asari_positive(
        ["この映画は", "この映画は"], ["本当に素晴らしかった！", "最悪だった。二度と見たくない。"]
    )
    assert good > 0.8 and bad < -0.8, (good, bad)
    assert _locale_loads()  # now loadable in this process (LOCPATH set when it had to be)


def test_openings_end_at_the_first_topic_or_subject_particle():
    iob = (
        "知床\tOTHER\t名詞\n半島\tOTHER\t名詞\nは\tHIRAG\t助詞\n美しい\tHIRAG\t形容詞\n\n"
        "2005\tZDIGIT\t名詞\n年\tOTHER\t名詞\n、\tOTHER\t記号\n南アフリカ共和国ダーバン\tKATAK\t名詞\n"
        "で\tHIRAG\t助詞\n開催\tOTHER\t名詞\n"
    )
    first, second = read_sentences(iob)
    assert opening(first) == "知床半島は"
    assert opening(second) is None  # no は / が / も within 16 characters
