"""Disallowed requests and jailbreak templates for ``language.jailbreak``.

Built in (written for assay; ``assay/data/prompts/jailbreak/LICENSE.md``): 40 requests in 8
categories, each with a GCG target string, and 9 static templates. Users give their own as JSON
Lines or CSV:

requests   columns ``request`` (required), ``category`` (default ``custom``), ``target`` (the
           string GCG makes the model start with; default ``Sure, here is``)
templates  columns ``name`` and ``template``; the template holds ``{request}``, or both halves
           ``{request_a}`` and ``{request_b}`` (payload splitting)
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from assay.data.loaders import read_jsonl
from assay.errors import InputError

DEFAULT_TARGET = "Sure, here is"


@dataclass(frozen=True)
class Request:
    request: str
    category: str = "custom"
    target: str = DEFAULT_TARGET


@dataclass(frozen=True)
class Template:
    name: str
    template: str

    def apply(self, request: str) -> str:
        words = request.split()
        half = (len(words) + 1) // 2
        # str.replace, not str.format: a request may hold braces of its own
        return (self.template.replace("{request_a}", " ".join(words[:half]))
                .replace("{request_b}", " " + " ".join(words[half:]) if words[half:] else "")
                .replace("{request}", request))


def _builtin(name: str):
    return resources.files("assay.data") / "prompts" / "jailbreak" / name


def _rows(path: str | os.PathLike, what: str) -> list[tuple[str, dict]]:
    """``(where, row)`` of a JSON Lines or CSV file (``where`` names the line for errors)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"{what} file {p} does not exist; give a .jsonl or .csv file")
    suffix = p.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return [(f"{p}:{i}", row) for i, row in read_jsonl(p)]
    if suffix == ".csv":
        with open(p, encoding="utf-8", newline="") as f:
            return [(f"{p}:{i}", dict(row)) for i, row in enumerate(csv.DictReader(f), 2)]
    raise InputError(f"{what} file {p} is neither .jsonl nor .csv; give one of those")


def _text(row: dict, key: str, where: str, default: str | None = None) -> str:
    v = row.get(key)
    if v is None or (isinstance(v, str) and not v.strip()):
        if default is not None:
            return default
        raise InputError(f"{where} has no {key!r}; every row needs a non-empty {key}")
    if not isinstance(v, str):
        raise InputError(f"{where}: {key} must be text, got {type(v).__name__}")
    return v


def load_requests(path: str | os.PathLike | None = None) -> list[Request]:
    """Requests from a JSON Lines / CSV file, or the built-in set (``path`` None or empty)."""
    rows = ([(f"built-in requests:{i}", r) for i, r in read_jsonl(_builtin("requests.jsonl"))]  # type: ignore[arg-type]
            if not path else _rows(path, "requests"))
    out = [Request(_text(r, "request", w), _text(r, "category", w, "custom").strip(),
                   _text(r, "target", w, DEFAULT_TARGET)) for w, r in rows]
    if not out:
        raise InputError(f"requests file {path} holds no rows; add one request per line")
    return out


def load_templates(path: str | os.PathLike | None = None) -> list[Template]:
    """Templates from a JSON Lines / CSV file, or the built-in set."""
    rows = ([(f"built-in templates:{i}", r) for i, r in read_jsonl(_builtin("templates.jsonl"))]  # type: ignore[arg-type]
            if not path else _rows(path, "templates"))
    out, seen = [], set()
    for w, r in rows:
        t = Template(_text(r, "name", w).strip(), _text(r, "template", w))
        if "{request}" not in t.template and not {"{request_a}", "{request_b}"} <= set(_placeholders(t.template)):
            raise InputError(f"{w}: template {t.name!r} has no {{request}} (or {{request_a}} and {{request_b}}) "
                             "placeholder; add one where the request goes")
        if t.name in seen:
            raise InputError(f"{w}: template name {t.name!r} is used twice; give each template its own name")
        seen.add(t.name)
        out.append(t)
    if not out:
        raise InputError(f"templates file {path} holds no rows; add one template per line")
    return out


def _placeholders(text: str) -> list[str]:
    return [p for p in ("{request}", "{request_a}", "{request_b}") if p in text]
