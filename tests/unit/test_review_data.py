"""The demo's review data: detokenising, the held-out split, pairs, SFT rows, idempotency."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from rayrlhf.demo.review_data import FILES, build, detokenise

# Tokenised like the real corpus: lowercased, punctuation split off by spaces.
POSITIVE = [
    "a gorgeous , witty film that grows on you with every scene .",
    'the rock \'s new " conan " is a splash even greater than anyone expected .',
    "i loved every minute of this clever and warm little comedy .",
    "one of the best , most understated performances of the whole year .",
    "an utterly charming story told with grace , humour and real heart .",
    "the cast is superb and the script is sharp from start to finish .",
    "it 's a delight : funny , moving and beautifully shot throughout .",
    "this is the movie of the year , a triumph in every department .",
]
NEGATIVE = [
    "a dull , plodding mess that never finds a reason to exist .",
    "the plot is n't just thin , it is practically nonexistent here .",
    "i could n't wait for this tedious and joyless film to end .",
    "one of the worst , most grating performances of the whole year .",
    "an utterly charmless story told without wit , pace or any heart .",
    # Same opening as a positive sentence: the pair must land on one side of the split.
    "the cast is superb but the script is lazy from start to finish .",
]
SHORT = "too short to use ."  # 4 words: skipped


def _write_csv(path: Path) -> Path:
    """The corpus's layout: quoted ``label,text`` rows, a BOM first, a trailing space + newline."""
    buf = io.StringIO()
    writer = csv.writer(buf, quoting=csv.QUOTE_ALL, lineterminator="\n")
    rows = [("1", t) for t in POSITIVE] + [("-1", t) for t in NEGATIVE] + [("1", SHORT)]
    for label, text in rows:
        writer.writerow([label, text + " \n"])
    path.write_text("\ufeff" + buf.getvalue(), encoding="utf-8")
    return path


def _read(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def built(tmp_path: Path) -> tuple[Path, dict[str, int], Path]:
    csv_path = _write_csv(tmp_path / "sentences.csv")
    out = tmp_path / "reviews"
    return out, build(out, csv_path, seed=3, heldout_per_label=2), csv_path


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        (
            "the rock 's new \" conan \" , it is n't bad . . . i think .",
            "The rock's new \"conan\", it isn't bad... I think.",
        ),
        (
            "as bundy , burke ( octopus 2 : river of fear ) has menace . ",
            "As bundy, burke (octopus 2: river of fear) has menace.",
        ),
        (
            "the words , 'frankly , my dear , i'm done , ' ring true .",
            "The words, 'frankly, my dear, I'm done,' ring true.",
        ),
        (
            "since 'brazil . ' lucas , take notes . this is how .",
            "Since 'brazil.' lucas, take notes. This is how.",
        ),
        ('solaris " is a shapeless move .', 'Solaris" is a shapeless move.'),
        (
            "when mr . hundert tells us . j . r . r . tolkien's world",
            "When mr. hundert tells us. J. r. r. tolkien's world",
        ),
        (
            "[gai] comes closer than any actress i remember !",
            "[Gai] comes closer than any actress I remember!",
        ),
        (". . . a polished piece of escapism .", "... a polished piece of escapism."),
        ("it's already natural.", "It's already natural."),
    ],
)
def test_detokenise(raw: str, want: str) -> None:
    assert detokenise(raw) == want


def test_counts(built: tuple[Path, dict[str, int], Path]) -> None:
    out, counts, _ = built
    assert counts["sentences"] == len(POSITIVE) + len(NEGATIVE)
    assert counts["skipped_short"] == 1
    assert counts["heldout_sentences"] == 4
    assert counts["train_sentences"] == counts["sentences"] - 4
    assert counts["sft"] == counts["train_sentences"]
    # Train holds 8 - 2 positive and 6 - 2 negative sentences: 4 pairs; held-out 2.
    assert counts["rm_train"] == len(NEGATIVE) - 2
    assert counts["rm_heldout"] == 2
    for name in FILES:
        assert len(_read(out / name)) == counts[name.removesuffix(".jsonl")]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 3 and manifest["counts"] == counts


def test_heldout_openings_never_in_train_files(
    built: tuple[Path, dict[str, int], Path],
) -> None:
    out, _, _ = built
    heldout = {r["prompt"] for r in _read(out / "prompts_heldout.jsonl")}
    assert len(heldout) == len(_read(out / "prompts_heldout.jsonl"))  # deduplicated
    for name in ("sft.jsonl", "rm_train.jsonl", "prompts_train.jsonl"):
        assert not heldout & {r["prompt"] for r in _read(out / name)}, name
    train = {r["prompt"] for r in _read(out / "prompts_train.jsonl")}
    # Two sentences share "The cast is superb": one prompt fewer than sentences.
    assert len(train) + len(heldout) == len(POSITIVE) + len(NEGATIVE) - 1


@pytest.mark.parametrize("seed", range(6))
def test_sentences_sharing_an_opening_stay_together(tmp_path: Path, seed: int) -> None:
    build(tmp_path / "out", _write_csv(tmp_path / "s.csv"), seed, heldout_per_label=2)
    sft = {r["prompt"] + r["response"] for r in _read(tmp_path / "out" / "sft.jsonl")}
    shared = [detokenise(POSITIVE[5]), detokenise(NEGATIVE[5])]
    assert shared[0].split()[:4] == shared[1].split()[:4]
    assert (shared[0] in sft) == (shared[1] in sft)


def _split(text: str) -> tuple[str, str]:
    words = detokenise(text).split()
    return " ".join(words[:4]), " " + " ".join(words[4:])


def test_pairs_choose_the_positive_continuation_and_share_a_prompt(
    built: tuple[Path, dict[str, int], Path],
) -> None:
    out, _, _ = built
    pos = dict(_split(t)[::-1] for t in POSITIVE)  # continuation → opening
    neg = dict(_split(t)[::-1] for t in NEGATIVE)
    used: list[str] = []
    for name in ("rm_train.jsonl", "rm_heldout.jsonl"):
        for row in _read(out / name):
            assert set(row) == {"prompt", "chosen", "rejected"}
            assert row["chosen"] in pos and row["rejected"] in neg
            # The prompt is the opening of one of the pair's two sentences.
            assert row["prompt"] in (pos[row["chosen"]], neg[row["rejected"]])
            used += [row["chosen"], row["rejected"]]
    assert len(used) == len(set(used))  # each sentence in at most one pair


def test_sft_rows_reconstruct_the_sentences(built: tuple[Path, dict[str, int], Path]) -> None:
    out, _, _ = built
    sentences = {detokenise(t) for t in POSITIVE + NEGATIVE}
    rows = _read(out / "sft.jsonl")
    assert rows and all(r["response"].startswith(" ") for r in rows)
    assert {r["prompt"] + r["response"] for r in rows} <= sentences
    assert detokenise(SHORT) not in {r["prompt"] + r["response"] for r in rows}


def test_idempotent_and_deterministic(
    built: tuple[Path, dict[str, int], Path], tmp_path: Path
) -> None:
    out, counts, csv_path = built
    before = {name: (out / name).read_text() for name in FILES}
    csv_path.unlink()  # a second build only reads the manifest
    assert build(out, csv_path, seed=3, heldout_per_label=2) == counts
    assert {name: (out / name).read_text() for name in FILES} == before

    again = build(tmp_path / "again", _write_csv(tmp_path / "s2.csv"), 3, heldout_per_label=2)
    assert again == counts
    assert {n: (tmp_path / "again" / n).read_text() for n in FILES} == before

    (out / "manifest.json").unlink()  # missing manifest: rebuilt
    assert build(out, tmp_path / "s2.csv", seed=3, heldout_per_label=2) == counts
    assert (out / "manifest.json").exists()
    build(out, tmp_path / "s2.csv", seed=4, heldout_per_label=2)  # another seed: rebuilt
    assert json.loads((out / "manifest.json").read_text())["seed"] == 4
