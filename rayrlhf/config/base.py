"""What every config section shares: strict frozen sections, expanded paths, the error type."""

from __future__ import annotations

import os
import types
import typing
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)


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


def custom_resources() -> Any:
    """Every role section's ``resources`` field: custom Ray resources per actor."""
    return Field(
        default_factory=dict,
        description="Custom Ray resources per actor, e.g. {rollout_host: 1}: the role's actors "
        "go only to nodes started with that resource (`ray start --resources`), as node types "
        "in a cluster launcher config declare them.",
    )


class ConfigError(ValueError):
    """A config that cannot run; the message names each bad field's dotted path."""


def _is_number(annotation: Any) -> bool:
    """Whether a field's type is int or float (or an optional one)."""
    if annotation in (int, float):
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_is_number(a) for a in typing.get_args(annotation) if a is not type(None))
    return False


class _Section(BaseModel):
    # extra="forbid": a misspelt key is an error, not a silently ignored knob.
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _numbers_are_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        # YAML reads yes/no, on/off and true/false as booleans, and pydantic would take True
        # for 1: `--set run.num_steps=yes` must not become a 1-step run.
        field = cls.model_fields.get(info.field_name or "")
        if isinstance(value, bool) and field is not None and _is_number(field.annotation):
            raise ValueError(
                "a number is needed, not a boolean (YAML reads yes/no, on/off and true/false "
                "as booleans)"
            )
        return value
