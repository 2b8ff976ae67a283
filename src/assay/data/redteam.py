"""Prompt sets of the toxicity and bias probes: the ones shipped in ``assay/data/prompts`` (written
for this project; see its NOTICE file) or the user's own files.

Toxicity prompts (JSON Lines, CSV, Parquet or ``.txt``; a ``text`` column, optional ``mode`` =
``continuation`` or ``chat`` and ``category``)::

    {"mode": "continuation", "category": "insult", "text": "He slammed the door and shouted"}

Bias templates (one JSON object): ``groups`` (axis -> group terms, filling the ``{group}`` slot),
``likelihood`` (``prefix`` with the slot, a ``negative`` and a ``positive`` continuation),
``generation`` (prefixes to continue) and ``refusal`` (chat requests) lists. Sentence pairs for
the CrowS-Pairs-style test (JSON Lines or CSV: ``stereotype``, ``anti_stereotype``, optional
``category``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from assay.errors import InputError

PROMPTS_DIR = Path(__file__).parent / "prompts"
MODES = ("continuation", "chat")
SLOT = "{group}"


@dataclass(frozen=True)
class PromptRow:
    text: str
    mode: str = "continuation"
    category: str = "user"


@dataclass
class BiasTemplates:
    groups: dict[str, list[str]]
    likelihood: list[dict[str, str]] = field(default_factory=list)
    generation: list[str] = field(default_factory=list)
    refusal: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SentencePair:
    stereotype: str
    anti_stereotype: str
    category: str = "user"


def _table(path: str | Path):
    from assay.data.loaders import _read_text_file

    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"prompt file {p} does not exist; give a .jsonl, .csv, .parquet or .txt file")
    return p, _read_text_file(p)


def toxicity_prompts(path: str | Path | None = None) -> list[PromptRow]:
    """The shipped provocative prompts, or those in the user's file at ``path``."""
    p, df = _table(path or PROMPTS_DIR / "toxicity.jsonl")
    if "text" not in df.columns:
        raise InputError(f"{p} has no 'text' column; columns: {', '.join(map(str, df.columns))}")
    rows = []
    for i, r in enumerate(df.to_dict("records"), 1):
        text, mode = r.get("text"), str(r.get("mode") or "continuation")
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"{p} row {i}: 'text' is empty or not text")
        if mode not in MODES:
            raise InputError(f"{p} row {i}: mode {mode!r} is not one of {', '.join(MODES)}")
        rows.append(PromptRow(text, mode, str(r.get("category") or "user")))
    if not rows:
        raise InputError(f"{p} holds no prompts")
    return rows


def bias_templates(path: str | Path | None = None) -> BiasTemplates:
    """The shipped demographic-slot templates, or the user's JSON file (same shape; see module doc)."""
    p = Path(path).expanduser() if path else PROMPTS_DIR / "bias_templates.json"
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except OSError:
        raise InputError(f"bias template file {p} cannot be read; check the path") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{p} is not JSON ({e.msg} at line {e.lineno}); see docs/language.md") from None
    groups = raw.get("groups") if isinstance(raw, dict) else None
    if not isinstance(groups, dict) or not all(isinstance(v, list) and len(v) >= 2 and all(isinstance(g, str) for g in v)
                                               for v in groups.values()) or not groups:
        raise InputError(f"{p}: 'groups' must map each axis to a list of at least two group terms")
    t = BiasTemplates({str(k): list(v) for k, v in groups.items()}, list(raw.get("likelihood") or []),
                      list(raw.get("generation") or []), list(raw.get("refusal") or []))
    for i, row in enumerate(t.likelihood, 1):
        if not (isinstance(row, dict) and all(isinstance(row.get(k), str) for k in ("prefix", "negative", "positive"))):
            raise InputError(f"{p}: likelihood template {i} needs string 'prefix', 'negative' and 'positive'")
        if SLOT not in row["prefix"]:
            raise InputError(f"{p}: likelihood template {i} has no {SLOT} slot in its prefix")
    for kind in ("generation", "refusal"):
        for i, s in enumerate(getattr(t, kind), 1):
            if not isinstance(s, str) or SLOT not in s:
                raise InputError(f"{p}: {kind} template {i} must be a string with a {SLOT} slot")
    return t


def bias_pairs(path: str | Path | None = None) -> list[SentencePair]:
    """The shipped stereotype / anti-stereotype sentence pairs, or the user's file."""
    p, df = _table(path or PROMPTS_DIR / "bias_pairs.jsonl")
    missing = {"stereotype", "anti_stereotype"} - set(df.columns)
    if missing:
        raise InputError(f"{p} lacks column(s) {', '.join(sorted(missing))}")
    out = []
    for i, r in enumerate(df.to_dict("records"), 1):
        s, a = r.get("stereotype"), r.get("anti_stereotype")
        if not (isinstance(s, str) and isinstance(a, str) and s.strip() and a.strip()) or s == a:
            raise InputError(f"{p} row {i}: needs two different non-empty sentences")
        out.append(SentencePair(s, a, str(r.get("category") or "user")))
    return out
