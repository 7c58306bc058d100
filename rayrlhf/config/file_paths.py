"""Relative paths in a config file, resolved the way ``include:`` is: against the file's folder.

A shipped config then works from any working directory. The rule, per path field (those typed
:data:`rayrlhf.config.base.PathStr`): a relative path that exists next to the file is taken
from there; otherwise it stays relative to the working directory, as a ``--set`` value is.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

from pydantic import AfterValidator, BaseModel

from rayrlhf.config.base import _expand_path


def _is_path(annotation: Any, metadata: list[Any]) -> bool:
    """Whether a field is a PathStr (or an optional one)."""
    checks = [*metadata, *getattr(annotation, "__metadata__", ())]
    if any(isinstance(m, AfterValidator) and m.func is _expand_path for m in checks):
        return True
    return any(_is_path(a, []) for a in typing.get_args(annotation))


def _section(annotation: Any) -> type[BaseModel] | None:
    """The config section class a field holds (also when optional), or None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((s for a in typing.get_args(annotation) if (s := _section(a))), None)


def resolve_file_paths(tree: dict[str, Any], model: type[BaseModel], folder: Path) -> None:
    """Rewrite, in place, the relative path fields of ``tree`` (a file's mapping for ``model``)
    that exist under ``folder`` as absolute paths."""
    for key, value in tree.items():
        field = model.model_fields.get(key)
        if field is None:
            continue  # an unknown key: validation names it
        section = _section(field.annotation)
        if section is not None and isinstance(value, dict):
            resolve_file_paths(value, section, folder)
        elif isinstance(value, str) and _is_path(field.annotation, field.metadata):
            candidate = folder / Path(value).expanduser()
            if not Path(value).expanduser().is_absolute() and candidate.exists():
                tree[key] = str(candidate.resolve())
