"""YAML and dotted overrides in, a validated frozen tree out; local paths checked at start."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from rayrlhf.config.base import ConfigError
from rayrlhf.config.file_paths import resolve_file_paths
from rayrlhf.config.tree import Config


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split ``"a.b.c=value"`` into its key path and a YAML-parsed value."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key.path=value")
    key, raw = item.split("=", 1)
    path = key.strip().split(".")
    if not all(path):
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        return path, yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {_yaml_place(item, err)}") from None


def _yaml_place(where: str | Path, err: yaml.YAMLError) -> str:
    """``WHERE, line L, column C: what YAML found`` (1-based, as editors count)."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    if mark is None:
        return f"{where}: YAML error: {problem}"
    text = f"{where}, line {mark.line + 1}, column {mark.column + 1}: YAML error: {problem}"
    context, start = getattr(err, "context", None), getattr(err, "context_mark", None)
    if context and start is not None:  # where the unclosed thing began
        text += f" ({context} at line {start.line + 1}, column {start.column + 1})"
    return text


def apply_overrides(tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``tree`` with each ``key.path=value`` set (sections made as needed)."""
    out: dict[str, Any] = _deep_copy(tree)
    for item in overrides:
        path, value = parse_override(item)
        node = out
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is a value, not a section")
            node = child
        node[path[-1]] = value
    return out


def _deep_copy(tree: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in tree.items()}


def from_dict(tree: dict[str, Any]) -> Config:
    """Validate a plain tree into a frozen :class:`Config`, or raise :class:`ConfigError`."""
    try:
        return Config.model_validate(tree)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            where = ".".join(str(p) for p in e["loc"]) or "(top level)"
            if where.startswith("online.") and "ppo" in tree:  # the section's old name
                where += f" (given as ppo.{where.removeprefix('online.')})"
            got = (
                f" (got {e['input']!r})"
                if "input" in e and not isinstance(e["input"], dict)
                else ""
            )
            lines.append(f"  {where}: {e['msg']}{got}")
        raise ConfigError("invalid config:\n" + "\n".join(lines)) from None


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``over`` laid on it: mappings merge key by key, anything else replaces."""
    out = _deep_copy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def read_tree(path: str | Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The mapping in YAML file ``path``. A top-level ``include: OTHER.yaml`` (relative to the
    file) is read first and this file's keys laid over it, so a variant names what differs."""
    path = Path(path)
    if path.resolve() in seen:
        raise ConfigError(f"config {path} includes itself (through {seen[-1]})")
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"cannot read config {path}: {err.strerror}") from None
    try:
        loaded = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config {_yaml_place(path, err)}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"config {path} must hold a mapping at top level")
    include = loaded.pop("include", None)
    resolve_file_paths(loaded, Config, path.parent)
    if include is None:
        return loaded
    if not isinstance(include, str):
        raise ConfigError(f"config {path}: include must name one YAML file, got {include!r}")
    base = read_tree(path.parent / include, (*seen, path.resolve()))
    return _merge(base, loaded)


def load(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Load a YAML file (or nothing), apply dotted overrides, validate and freeze."""
    tree = read_tree(path) if path is not None else {}
    return from_dict(apply_overrides(tree, overrides or []))


def to_dict(config: Config) -> dict[str, Any]:
    """The config as plain data, for the run directory's ``config.yaml``."""
    return config.model_dump(mode="json")


def check_local_paths(config: Config) -> None:
    """Fail at start, naming the field, when a model or data path does not exist here.

    Called by the driver before any actor starts, so a typo costs seconds, not a cluster
    start-up and a traceback from inside an actor.
    """
    fields: dict[str, str | None] = {
        "model.policy": config.model.policy,
        "model.value": config.model.value,
        "model.tokenizer": config.model.tokenizer,
        "reward.model": config.reward.model,
        "data.prompts": config.data.prompts,
        "eval.prompts.path": config.eval.prompts and config.eval.prompts.path,
    }
    # Every stage's tables, the third (DPO, ILQL) too: found now, not after SFT and the reward
    # model have trained.
    for name in ("sft", "reward_model", "dpo", "ilql"):
        stage = getattr(config, name)
        if stage is not None:
            fields[f"{name}.data.path"] = stage.data.path
            fields[f"{name}.heldout.path"] = stage.heldout and stage.heldout.path
    if config.reward_model is not None:
        fields["reward_model.model"] = config.reward_model.model
    bad = [
        f"  {k}: no such file or folder {v!r}"
        for k, v in fields.items()
        if v and not os.path.exists(v)
    ]
    if bad:
        raise ConfigError("invalid config:\n" + "\n".join(bad))
