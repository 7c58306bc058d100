"""The real demo's data: movie-review sentences made into SFT, reward-model and PPO files.

Source: Pang & Lee's 4,000 one-sentence movie reviews, 2,000 positive and 2,000 negative
(B. Pang and L. Lee, "Seeing stars", ACL 2005), fetched at set-up by
``python -m rayrlhf.assets pang_lee`` (research release "for personal use": never committed).
The sentences are lowercased and their punctuation is split off by spaces ("splash , jean-claud
van damme ."); :func:`detokenise` rejoins it and capitalises sentence starts and "I", so that
SmolLM2 learns and is prompted with ordinary text. Contractions are already whole in this copy
("it's"); the rules for split ones (" n't", " 's") are kept for other copies of the corpus.

Each sentence of at least 8 words becomes an *opening* (its first 4 words) and a
*continuation* (the rest). A seeded split puts 800 sentences (400 positive, 400 negative) in a
held-out set and the rest in train; sentences that share an opening stay on one side, so no
held-out opening ever appears in a train file. Files written to ``out_dir``:

- ``sft.jsonl`` — {"prompt": opening, "response": " " + continuation}, train sentences of both
  polarities: supervised fine-tuning teaches the review style, not the sentiment. prompt +
  response is the sentence.
- ``rm_train.jsonl`` / ``rm_heldout.jsonl`` — {"prompt", "chosen", "rejected"}: each positive
  sentence paired with a negative one of the same split; chosen / rejected are " " + the
  positive / negative continuation, and the prompt is the opening of one of the two
  (alternately). Sharing the prompt makes the Bradley–Terry reward model judge the
  continuation, which is what the PPO policy writes.
- ``prompts_train.jsonl`` / ``prompts_heldout.jsonl`` — {"prompt": opening}, deduplicated: PPO
  rollouts and held-out evaluation.
- ``manifest.json`` — the counts and the seed; present means done (written last).

``python -m rayrlhf.demo.review_data [--out DIR]`` builds into ``~/.cache/rayrlhf/data/reviews``
by default and prints the counts; a second run with the same seed only reads the manifest.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from rayrlhf.data.tables import write_jsonl

# Bump when the files' content rules change, so an old cache is rebuilt instead of reused.
FORMAT_VERSION = 1
OPENING_WORDS = 4
MIN_WORDS = 8
HELDOUT_PER_LABEL = 400
FILES = (
    "sft.jsonl",
    "rm_train.jsonl",
    "rm_heldout.jsonl",
    "prompts_train.jsonl",
    "prompts_heldout.jsonl",
)

# Tokens glued to the word before them / the word after them when detokenising.
_ATTACH_LEFT = {".", ",", "?", "!", ":", ";", ")", "]", "}", "%", "...", "n't", "'s", "'re"}
_ATTACH_LEFT |= {"'ll", "'ve", "'d", "'m"}
_ATTACH_RIGHT = {"(", "[", "{", "$", "#"}
_QUOTES = ('"', "'")
# "I" and its contractions, which lowercasing turned into "i".
_I_WORD = re.compile(r"\bi(?=$|[\s.,;:!?)\]\"]|'(?:m|ve|ll|d)\b)")
# A sentence start inside the text: ". x" after a word of 2+ letters (not "j. r." initials,
# not the "..." ellipsis, which reads as a pause in these reviews), unless the word is a title.
_SENTENCE_START = re.compile(r"(\S*[^\s.][^\s.])([.?!] )([a-z])")
_TITLES = {"mr", "mrs", "ms", "dr", "st", "jr", "sr", "vs", "etc", "bros", "inc", "co", "no", "vol"}
# The first letter, after any opening brackets or quotes ("[gai] comes ...").
_TEXT_START = re.compile(r"^([\[(\"']*)([a-z])")


def _capitalise_start(m: re.Match[str]) -> str:
    word, stop, letter = m.groups()
    if stop == ". " and word.lower().lstrip("([\"'") in _TITLES:
        return m.group(0)
    return word + stop + letter.upper()


def detokenise(text: str) -> str:
    """Undo the corpus's tokenisation lightly: rejoin punctuation, capitalise starts and "I".

    ``"the rock 's new \" conan \" , it is n't bad . . . i think ."`` →
    ``'The rock\'s new "conan", it isn\'t bad... I think.'``. Proper nouns stay lowercase:
    restoring them needs a truecaser, and the reward model's tokenizer is uncased anyway.
    """
    text = re.sub(r"\.(?: \.){2}", "...", text.strip())  # ". . ." → "..."
    tokens = text.split()
    out: list[str] = []
    glue_next = False  # the previous token wants the next one glued to it
    in_quote = {q: False for q in _QUOTES}
    for i, tok in enumerate(tokens):
        if tok in _QUOTES:
            # A stand-alone quote opens (glued right) unless one is open already or none follows
            # to close it: a few rows lost their opening quote ("solaris \" is a ...").
            closing = in_quote[tok] or tok not in tokens[i + 1 :]
            in_quote[tok] = not closing
            if closing:
                out.append(tok)
            else:
                out.append(tok if glue_next or not out else " " + tok)
            glue_next = not closing
            continue
        if tok in _ATTACH_LEFT and out:
            out.append(tok)
        else:
            out.append(tok if glue_next or not out else " " + tok)
        glue_next = tok in _ATTACH_RIGHT
        if re.match(r"'[a-z\[]", tok) and not tok.endswith("'"):
            in_quote["'"] = True  # "'brazil . '": the quote opened glued to its first word
    joined = "".join(out)
    joined = _I_WORD.sub("I", joined)
    joined = _SENTENCE_START.sub(_capitalise_start, joined)
    return _TEXT_START.sub(lambda m: m.group(1) + m.group(2).upper(), joined)


@dataclass(frozen=True)
class Sentence:
    """One review sentence, detokenised, cut into opening and continuation."""

    positive: bool
    opening: str
    continuation: str


def read_sentences(path: Path) -> tuple[list[Sentence], int]:
    """(sentences, rows skipped as short) from rows ``label,text`` (1 / -1; BOM allowed)."""
    sentences = []
    skipped = 0
    with path.open(encoding="utf-8-sig", newline="") as f:
        for row_no, row in enumerate(csv.reader(f), start=1):
            if len(row) != 2 or row[0] not in ("1", "-1"):
                raise ValueError(f"{path}: row {row_no} is not label,text with label 1 or -1")
            words = detokenise(row[1]).split()
            # Counted after detokenising, so a "," or "." is not a word; under 8 words the
            # continuation would be too short to judge.
            if len(words) < MIN_WORDS:
                skipped += 1
                continue
            opening = " ".join(words[:OPENING_WORDS])
            continuation = " ".join(words[OPENING_WORDS:])
            sentences.append(Sentence(row[0] == "1", opening, continuation))
    return sentences, skipped


def split_heldout(
    sentences: list[Sentence], rng: random.Random, per_label: int = HELDOUT_PER_LABEL
) -> tuple[list[Sentence], list[Sentence]]:
    """(train, held-out): ``per_label`` positive and negative sentences held out.

    Sentences are grouped by opening and whole groups go one way, so a prompt seen in training
    is never a held-out prompt. Groups are taken in seeded order while they fit both quotas.
    """
    groups: dict[str, list[Sentence]] = {}
    for s in sentences:
        groups.setdefault(s.opening, []).append(s)
    keys = sorted(groups)  # a fixed order before shuffling, so the seed alone decides
    rng.shuffle(keys)
    train: list[Sentence] = []
    heldout: list[Sentence] = []
    n_pos = n_neg = 0
    for key in keys:
        group = groups[key]
        pos = sum(s.positive for s in group)
        neg = len(group) - pos
        if n_pos + pos <= per_label and n_neg + neg <= per_label:
            heldout.extend(group)
            n_pos, n_neg = n_pos + pos, n_neg + neg
        else:
            train.extend(group)
    if (n_pos, n_neg) != (per_label, per_label):
        raise ValueError(f"only {n_pos} positive / {n_neg} negative sentences to hold out")
    return train, heldout


def preference_pairs(sentences: list[Sentence], rng: random.Random) -> list[dict[str, str]]:
    """Each positive sentence paired with a negative one (seeded), chosen = the positive."""
    pos = [s for s in sentences if s.positive]
    neg = [s for s in sentences if not s.positive]
    rng.shuffle(pos)
    rng.shuffle(neg)
    first = rng.randrange(2)  # whose opening the first pair uses; then they alternate
    rows = []
    # The larger side's surplus goes unpaired: every sentence is used at most once.
    for i, (p, n) in enumerate(zip(pos, neg, strict=False)):
        prompt = p.opening if (i + first) % 2 == 0 else n.opening
        rows.append(
            {"prompt": prompt, "chosen": " " + p.continuation, "rejected": " " + n.continuation}
        )
    return rows


def unique_prompts(sentences: Iterable[Sentence]) -> list[dict[str, str]]:
    """{"prompt": opening} rows, first occurrence kept."""
    seen = dict.fromkeys(s.opening for s in sentences)
    return [{"prompt": p} for p in seen]


def build(
    out_dir: Path,
    sentences_csv: Path,
    seed: int = 0,
    *,
    heldout_per_label: int = HELDOUT_PER_LABEL,
) -> dict[str, int]:
    """Write the demo's files into ``out_dir``; return the counts (rows per file and more).

    Idempotent: when ``manifest.json`` records this seed, held-out size and format and every
    file is present, its counts are returned without reading the sentences again.
    ``heldout_per_label`` is there for tests on small files; the demo uses 400.
    """
    out_dir = Path(out_dir)
    manifest = out_dir / "manifest.json"
    if manifest.exists() and all((out_dir / name).exists() for name in FILES):
        recorded = json.loads(manifest.read_text())
        wanted = {"format": FORMAT_VERSION, "seed": seed, "heldout_per_label": heldout_per_label}
        if all(recorded.get(k) == v for k, v in wanted.items()):
            return recorded["counts"]
    rng = random.Random(seed)
    sentences, skipped = read_sentences(Path(sentences_csv))
    train, heldout = split_heldout(sentences, rng, heldout_per_label)
    rng.shuffle(train)  # files in seeded order, not grouped by opening
    rng.shuffle(heldout)
    outputs = {
        "sft.jsonl": [{"prompt": s.opening, "response": " " + s.continuation} for s in train],
        "rm_train.jsonl": preference_pairs(train, rng),
        "rm_heldout.jsonl": preference_pairs(heldout, rng),
        "prompts_train.jsonl": unique_prompts(train),
        "prompts_heldout.jsonl": unique_prompts(heldout),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest.unlink(missing_ok=True)  # until the new one is written, the folder reads as unbuilt
    for name, rows in outputs.items():
        write_jsonl(out_dir / name, rows)
    counts = {
        "sentences": len(sentences),
        "skipped_short": skipped,
        "train_sentences": len(train),
        "heldout_sentences": len(heldout),
        **{name.removesuffix(".jsonl"): len(rows) for name, rows in outputs.items()},
    }
    record = {
        "format": FORMAT_VERSION,
        "seed": seed,
        "heldout_per_label": heldout_per_label,
        "source": str(sentences_csv),
        "counts": counts,
    }
    tmp = manifest.with_name(manifest.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, manifest)
    return counts


def default_out() -> Path:
    """``~/.cache/rayrlhf/data/reviews``, the folder the demo configs name."""
    from rayrlhf.assets import cache_dir

    return cache_dir() / "data" / "reviews"


def main(argv: list[str] | None = None) -> int:
    """``python -m rayrlhf.demo.review_data [--out DIR] [--sentences CSV] [--seed N]``."""
    parser = argparse.ArgumentParser(prog="python -m rayrlhf.demo.review_data")
    parser.add_argument(
        "--out", type=Path, default=None, help="default ~/.cache/rayrlhf/data/reviews"
    )
    parser.add_argument(
        "--sentences", type=Path, default=None, help="default: fetched by rayrlhf.assets.pang_lee"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.sentences is None:
        from rayrlhf.assets import pang_lee

        args.sentences = pang_lee()
    counts = build(args.out or default_out(), args.sentences, args.seed)
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
