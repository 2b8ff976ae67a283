"""Texts for auditing language models: what the language probes read.

A :class:`LanguageData` holds, each optional:

``documents``     texts known to be in the training data (``language.extraction`` prompts with
                  their prefixes)
``members``       texts in the training data, and ``non_members`` from the same distribution but
                  not trained on (``language.membership``)
``prompts``       prompts for free generation (``language.pii``)
``canaries``      inserted secrets: a prefix, the secret and its format (``language.canary``)

On disk it is JSON Lines, one object per line::

    {"kind": "document", "text": "..."}
    {"kind": "member", "text": "..."}
    {"kind": "non_member", "text": "..."}
    {"kind": "prompt", "text": "..."}
    {"kind": "canary", "prefix": "my PIN is ", "secret": "493817", "format": "[0-9]{6}", "copies": 4}

A canary's ``format`` is a small pattern language: literal characters, character classes such as
``[0-9]``, ``[a-z0-9]`` or ``[A-F0-9]``, and ``{n}`` repeating the previous class or character. The
candidate space is every string the pattern matches; the secret must be one of them.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from assay.data.loaders import read_jsonl
from assay.errors import InputError

KINDS = ("document", "member", "non_member", "prompt", "canary")


class CanaryFormat:
    """The candidate space of a canary: one alphabet per position (see the module doc).

    >>> f = CanaryFormat("[0-9]{2}-[ab]"); f.size, f.matches("07-b"), f.matches("7-b")
    (200, True, False)
    """

    def __init__(self, pattern: str):
        self.pattern = pattern
        self.alphabets = _parse_format(pattern)
        if not self.alphabets:
            raise InputError(f"canary format {pattern!r} is empty; give e.g. [0-9]{{6}}")

    @property
    def size(self) -> int:
        return math.prod(len(a) for a in self.alphabets)

    @property
    def log2_size(self) -> float:
        return float(sum(math.log2(len(a)) for a in self.alphabets))

    def matches(self, s: str) -> bool:
        return len(s) == len(self.alphabets) and all(c in a for c, a in zip(s, self.alphabets))

    def sample(self, n: int, rng: np.random.Generator) -> list[str]:
        cols = [np.asarray(list(a))[rng.integers(0, len(a), n)] for a in self.alphabets]
        return ["".join(chars) for chars in zip(*cols)] if n else []

    def enumerate(self) -> Iterator[str]:
        return ("".join(t) for t in itertools.product(*self.alphabets))


def _parse_format(pattern: str) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            if i + 1 >= len(pattern):
                raise InputError(f"canary format {pattern!r} ends with a lone backslash")
            out.append(pattern[i + 1])
            i += 2
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                raise InputError(f"canary format {pattern!r} has an unclosed '['")
            body, chars = pattern[i + 1 : end], []
            j = 0
            while j < len(body):
                if j + 2 < len(body) and body[j + 1] == "-":
                    lo, hi = body[j], body[j + 2]
                    if ord(lo) > ord(hi):
                        raise InputError(f"canary format {pattern!r}: range {lo}-{hi} is reversed")
                    chars += [chr(k) for k in range(ord(lo), ord(hi) + 1)]
                    j += 3
                else:
                    chars.append(body[j])
                    j += 1
            if not chars:
                raise InputError(f"canary format {pattern!r} has an empty class []")
            out.append("".join(dict.fromkeys(chars)))
            i = end + 1
        elif c == "{":
            end = pattern.find("}", i + 1)
            if end < 0 or not out or not pattern[i + 1 : end].isdigit():
                raise InputError(f"canary format {pattern!r}: '{{n}}' must follow a class or character, e.g. [0-9]{{6}}")
            out += [out[-1]] * (int(pattern[i + 1 : end]) - 1)
            i = end + 1
        else:
            out.append(c)
            i += 1
    return out


@dataclass
class Canary:
    """A secret inserted into the training data after ``prefix``; ``copies`` is how often (if known)."""

    prefix: str
    secret: str
    format: str
    copies: int | None = None
    name: str | None = None

    def __post_init__(self):
        fmt = CanaryFormat(self.format)
        if not fmt.matches(self.secret):
            raise InputError(f"canary secret {self.secret!r} does not match its format {self.format!r}")
        if not self.prefix:
            raise InputError("a canary needs the text before its secret (prefix)")

    @property
    def space(self) -> CanaryFormat:
        return CanaryFormat(self.format)

    def label(self) -> str:
        return self.name or (f"{self.copies}x" if self.copies is not None else self.prefix[-24:])


@dataclass
class LanguageData:
    """Texts for the language probes (see the module doc)."""

    documents: list[str] = field(default_factory=list)
    members: list[str] = field(default_factory=list)
    non_members: list[str] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    canaries: list[Canary] = field(default_factory=list)
    name: str = "texts"
    kind: str = "text"

    def __post_init__(self):
        for what in ("documents", "members", "non_members", "prompts"):
            vals = getattr(self, what)
            if not all(isinstance(t, str) for t in vals):
                raise InputError(f"{what} must be strings")
        if not self.canaries and not any((self.documents, self.members, self.non_members, self.prompts)):
            raise InputError("the text data is empty; give documents, members / non_members, prompts or canaries")

    def __len__(self) -> int:
        return len(self.documents) + len(self.members) + len(self.non_members) + len(self.prompts) + len(self.canaries)

    def has(self, field_name: str) -> bool:
        return {
            "documents": bool(self.documents),
            "members": bool(self.members) and bool(self.non_members),
            "prompts": bool(self.prompts),
            "canaries": bool(self.canaries),
            "texts": bool(self.documents or self.prompts),
        }.get(field_name, False)

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        h.update(json.dumps(self.to_records(), sort_keys=True).encode())
        return h.hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "n": len(self), "documents": len(self.documents),
                "members": len(self.members), "non_members": len(self.non_members), "prompts": len(self.prompts),
                "canaries": len(self.canaries)}

    def to_records(self) -> list[dict[str, Any]]:
        recs: list[dict[str, Any]] = []
        for kind, texts in (("document", self.documents), ("member", self.members),
                            ("non_member", self.non_members), ("prompt", self.prompts)):
            recs += [{"kind": kind, "text": t} for t in texts]
        for c in self.canaries:
            rec = {"kind": "canary", "prefix": c.prefix, "secret": c.secret, "format": c.format}
            if c.copies is not None:
                rec["copies"] = c.copies
            if c.name:
                rec["name"] = c.name
            recs.append(rec)
        return recs

    def write_jsonl(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            for rec in self.to_records():
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        return path


def load_language_data(path: str | os.PathLike, name: str | None = None) -> LanguageData:
    """Read a JSON Lines file (see the module doc); every mistake is a one-line error naming the line."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"text data file {p} does not exist; check the path")
    groups: dict[str, list] = {k: [] for k in KINDS}
    for n, rec in read_jsonl(p):
        kind = str(rec.get("kind", "document")).replace("-", "_")
        if kind not in KINDS:
            raise InputError(f"{p}:{n} has kind {kind!r}; use one of {', '.join(KINDS)}")
        if kind == "canary":
            try:
                groups[kind].append(Canary(str(rec["prefix"]), str(rec["secret"]), str(rec["format"]),
                                           None if rec.get("copies") is None else int(rec["copies"]),
                                           rec.get("name")))
            except KeyError as e:
                raise InputError(f"{p}:{n}: a canary needs prefix, secret and format (missing {e.args[0]!r})") from None
            except InputError as e:
                raise InputError(f"{p}:{n}: {e}") from None
        else:
            text = rec.get("text")
            if not isinstance(text, str) or not text:
                raise InputError(f"{p}:{n} has no \"text\" string")
            groups[kind].append(text)
    return LanguageData(groups["document"], groups["member"], groups["non_member"], groups["prompt"],
                        groups["canary"], name=name or p.stem)


def as_language_data(data: Any) -> LanguageData:
    if isinstance(data, LanguageData):
        return data
    if isinstance(data, (str, os.PathLike)):
        return load_language_data(data)
    if isinstance(data, Sequence) and all(isinstance(t, str) for t in data):
        return LanguageData(documents=list(data))
    raise InputError(f"cannot use a {type(data).__name__} as text data; give a LanguageData or a .jsonl path")
