"""The JSON bodies of the arena's API (all but the scoring payloads, which each challenge checks), as
Pydantic models: the routes validate with them and the OpenAPI document shows their JSON Schema.

A body reaches a model only after :func:`assay.arena.fastjson.parse_body` has parsed and screened
it (depth, lone surrogates, NUL), so the models check shapes: strict types (no ``"1"`` for ``1``,
no ``1`` for ``true``), lengths and, for the event switches, no unknown fields. :func:`parse` turns
the first problem into one line (an :class:`~assay.errors.InputError`; the API answers 422). The
name, password and flag rules beyond that are the service's, shared with the web forms.
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from assay.arena.settings import MIN_PASSWORD
from assay.errors import InputError

MAX_FLAG = 200  # far above a real flag (38 characters); anything longer is not one
BAD_FLAG = "flag must be a string like assay{...}"


class Body(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True)
    # one line for any problem with the named field, where the generic one would say less
    problems: ClassVar[dict[str, str]] = {}


class Registration(Body):
    model_config = ConfigDict(json_schema_extra={"examples": [{"name": "alice", "password": "correct horse"}]})
    name: str = Field(description="1-32 letters or digits of any script, plus _ . -")
    password: str = Field(min_length=MIN_PASSWORD)


class Login(Body):
    name: str
    password: str


class FlagSubmission(Body):
    model_config = ConfigDict(json_schema_extra={"examples": [{"flag": "assay{...}"}]})
    problems: ClassVar[dict[str, str]] = {"flag": BAD_FLAG}
    flag: str = Field(max_length=MAX_FLAG)


class TeamName(Body):
    model_config = ConfigDict(json_schema_extra={"examples": [{"name": "reds"}]})
    name: str


class JoinCode(Body):
    join_code: str


class EventChange(Body):
    """Operator switches; a field left out or null stays as it is."""

    model_config = ConfigDict(extra="forbid")
    open: bool | None = None
    frozen: bool | None = None
    recompute_values: bool | None = None
    solutions: bool | None = Field(None, description="publish (true) or withdraw the reference solutions")


class FlagCheck(Body):
    """A (player, challenge, flag) triple to check; with ``record``, submitted on the player's behalf."""

    player: str
    challenge: str
    flag: str
    record: bool = False


B = TypeVar("B", bound=Body)
_KINDS = {str: "a string", bool: "true or false", bool | None: "true, false or null"}


def parse(model: type[B], data: Any) -> B:
    """``data`` (parsed JSON) as a ``model``, or an InputError whose message names the problem.

    Example
    -------
    >>> parse(TeamName, {"name": "reds"}).name
    'reds'
    >>> parse(TeamName, {"name": 7})
    Traceback (most recent call last):
    ...
    assay.errors.InputError: field 'name' must be a string
    """
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise InputError(problem(model, e.errors())) from None


def problem(model: type[Body], errors: list[Any]) -> str:
    """One line for a model's validation errors: every unknown field at once, else the first error."""
    unknown = sorted(str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden")
    if unknown:
        return f"unknown field(s) {unknown}; allowed: {list(model.model_fields)}"
    first = errors[0]
    if not first["loc"]:
        return "body must be a JSON object"
    name = str(first["loc"][0])
    if name in model.problems:
        return model.problems[name]
    ctx = first.get("ctx") or {}
    if first["type"] == "string_too_short":
        return f"{name} must have at least {ctx['min_length']} characters"
    if first["type"] == "string_too_long":
        return f"{name} must have at most {ctx['max_length']} characters"
    return f"field {name!r} must be {_KINDS[model.model_fields[name].annotation]}"
