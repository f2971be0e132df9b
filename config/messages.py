"""Turns pydantic validation errors into short messages that say what was expected."""

from __future__ import annotations

import difflib
import json
import types
import typing
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

# pydantic's own wording ("Input should be less than or equal to 120") is written for developers;
# these say the same in the words of a config file. Unknown types fall back to pydantic's text.
_TEMPLATES: dict[str, str] = {
    "missing": "required key is missing",
    "less_than_equal": "must be at most {le}",
    "less_than": "must be less than {lt}",
    "greater_than_equal": "must be at least {ge}",
    "greater_than": "must be more than {gt}",
    "string_too_short": "must be at least {min_length} character(s) long",
    "string_too_long": "must be at most {max_length} characters long",
    "string_pattern_mismatch": "has the wrong format",
    "string_type": "must be text (quote it if YAML read it as a number, date or yes/no)",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "literal_error": "must be one of {expected}",
    "enum": "must be one of {expected}",
    "path_type": "must be a file or folder path",
    "list_type": "must be a list",
}
_MAPPING_TYPES = {"model_type", "model_attributes_type", "dict_type"}
_CUSTOM_TYPES = {"value_error", "assertion_error"}
_MAX_VALUE_CHARS = 60


def field_at(
    model: type[BaseModel], loc: Sequence[int | str]
) -> tuple[FieldInfo | None, type[BaseModel] | None]:
    """The field at ``loc`` and the innermost model reached on the way.

    Elements that are not field names (list indices, pydantic's union tags such as ``'int'``, an
    unknown key) are passed over, so the result is the deepest field the location names.
    """
    info: FieldInfo | None = None
    owner: type[BaseModel] | None = model
    for element in loc:
        if owner is None or not isinstance(element, str) or element not in owner.model_fields:
            continue
        info = owner.model_fields[element]
        owner = _model_in(info.annotation)
    return info, owner


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model class inside ``Camera``, ``Camera | None`` or ``list[Camera]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, list, tuple):
        for argument in typing.get_args(annotation):
            found = _model_in(argument)
            if found is not None:
                return found
    return None


def describe(error: ErrorDetails, model: type[BaseModel]) -> str:
    """A one-line message for one pydantic error: what is wrong and what was expected."""
    kind = error["type"]
    info, owner = field_at(model, error["loc"])
    if kind == "extra_forbidden":
        allowed = list(owner.model_fields) if owner is not None else []
        return _unknown_key(str(error["loc"][-1]) if error["loc"] else "", allowed)
    ctx = error.get("ctx", {})
    if kind in _CUSTOM_TYPES and "error" in ctx:
        # our own validators already say what is expected; skip pydantic's "Value error, " prefix
        return str(ctx["error"])
    if kind in _MAPPING_TYPES and owner is not None:
        message = "must be a mapping with keys: " + ", ".join(owner.model_fields)
    else:
        try:
            message = _TEMPLATES[kind].format(**{k: _number(v) for k, v in ctx.items()})
        except KeyError:
            message = error["msg"][:1].lower() + error["msg"][1:]
    if info is not None and info.description:
        message = f"{message} ({info.description})"
    return message


def _number(value: object) -> object:
    # a float bound such as le=120 would otherwise read "at most 120.0"
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def without_typo_echoes(errors: Sequence[ErrorDetails]) -> list[ErrorDetails]:
    """Drop "missing key" errors explained by a misspelt key next to them.

    "refrences:" gives both "refrences: unknown key" and "references: missing"; the first, with
    its "did you mean", is the whole story.
    """
    unknown = [e["loc"] for e in errors if e["type"] == "extra_forbidden" and e["loc"]]

    def echoed(error: ErrorDetails) -> bool:
        loc = error["loc"]
        return error["type"] == "missing" and any(
            other[:-1] == loc[:-1] and difflib.get_close_matches(str(other[-1]), [str(loc[-1])], cutoff=0.6)
            for other in unknown
        )

    return [e for e in errors if not echoed(e)]


def _unknown_key(key: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    if close:
        return f"unknown key; did you mean '{close[0]}'?"
    return "unknown key; expected one of: " + ", ".join(allowed)


def show_value(error: ErrorDetails) -> str | None:
    """The offending value as a person would write it, or None when showing it would not help."""
    if error["type"] == "missing":
        return None
    return show(error.get("input"))


def show(value: object) -> str | None:
    # a whole mapping (the input of a model-level check) is noise next to a key path and line
    if isinstance(value, dict):
        return None
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | list | tuple):
        text = json.dumps(value, ensure_ascii=False, default=str)
    else:
        text = str(value)
    if len(text) > _MAX_VALUE_CHARS:
        text = text[: _MAX_VALUE_CHARS - 1] + "…"
    return text
