"""What every config section shares: strict frozen sections, expanded paths, the error type."""

from __future__ import annotations

import os
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict


def _expand_path(value: str | None) -> str | None:
    """Expand ``~`` and ``$VARS``; make a path that exists here absolute.

    Actors may start in another working directory (or, under ``ray job submit``, another copy of
    it), so a relative path that resolves on the driver is pinned before the config is shipped.
    """
    if value is None:
        return None
    expanded = os.path.expandvars(os.path.expanduser(value))
    return os.path.abspath(expanded) if os.path.exists(expanded) else expanded


PathStr = Annotated[str, AfterValidator(_expand_path)]


Placement = Literal["pack", "spread"]


class ConfigError(ValueError):
    """A config that cannot run; the message names each bad field's dotted path."""


class _Section(BaseModel):
    # extra="forbid": a misspelt key is an error, not a silently ignored knob.
    model_config = ConfigDict(extra="forbid", frozen=True)
