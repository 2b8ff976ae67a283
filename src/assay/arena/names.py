"""Player and team names: what is allowed, and when two names are "the same" for uniqueness.

A name is stored in Unicode NFKC form (fullwidth ``ａｄｍｉｎ`` becomes ``admin``) and may hold
letters and digits of any script plus ``_ . -``. Two names collide when their :func:`skeleton`
is equal: NFKC, Latin look-alikes of other scripts mapped to Latin (checked before case folding,
where the capital's shape is still known: Greek ``Ν`` looks like N, its lower case ``ν`` like v),
case folded, accents dropped, the easily confused ``0``/``o`` and ``1``/``l``/``i``/``|`` merged,
``rn``/``m`` and ``vv``/``w`` merged, and the separators ``_ . -`` removed. So ``Admin``,
``ADMIN``, ``admin.``, ``adm1n``, ``аdmin`` (Cyrillic а) and ``ＡＤＭＩＮ`` are all ``admin``.

The map is small and deliberate (the common Latin look-alikes, not Unicode's full confusables
table): it is a uniqueness key, so merging too much only refuses a rare name, while every
look-alike left out is an impersonation that works.
"""

from __future__ import annotations

import unicodedata

SEPARATORS = "_.-"
MAX_LEN = 32

# Cyrillic and Greek letters that render like Latin ones, capitals and small letters separately.
_LOOKALIKES = {
    # Cyrillic capitals / small letters
    "А": "A", "В": "B", "Е": "E", "Ё": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P", "С": "C",
    "Т": "T", "У": "Y", "Х": "X", "Ѕ": "S", "І": "I", "Ї": "I", "Ј": "J", "Ԁ": "D", "Ԛ": "Q", "Ԝ": "W",
    "Ү": "Y", "Һ": "H", "Ӏ": "I",
    "а": "a", "е": "e", "ё": "e", "о": "o", "р": "p", "с": "c", "у": "y", "х": "x", "ѕ": "s", "і": "i",
    "ї": "i", "ј": "j", "ԁ": "d", "һ": "h", "ӏ": "l", "ԛ": "q", "ԝ": "w", "ү": "y", "к": "k", "м": "m",
    "т": "t", "в": "b", "н": "h", "ь": "b",
    # Greek capitals / small letters
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N", "Ο": "O",
    "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X", "Ϲ": "C", "Ϳ": "J",
    "α": "a", "β": "b", "γ": "y", "ε": "e", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t",
    "υ": "u", "χ": "x", "ϲ": "c", "ϳ": "j", "μ": "u", "η": "n",
    # Latin letters that look like other Latin letters
    "ı": "i", "ǀ": "l", "ɩ": "i", "ɑ": "a", "ɡ": "g", "ʏ": "y",
}
# After case folding: characters that are easy to mistake for one another share one letter.
_MERGE = str.maketrans({"0": "o", "1": "i", "l": "i", "|": "i", "!": "i"})
_PAIRS = (("rn", "m"), ("vv", "w"))
# Letters (category Lo, so str.isalnum() accepts them) that render as nothing: "admin" + one of
# these would look exactly like "admin" and have another skeleton.
_INVISIBLE = frozenset("\u115f\u1160\u3164\uffa0")


def normalize(name: str) -> str:
    """The stored form of a name: Unicode NFKC (compatibility characters folded, accents composed)."""
    return unicodedata.normalize("NFKC", name)


def skeleton(name: str) -> str:
    """The uniqueness key of ``name`` (see the module docstring).

    Example
    -------
    >>> {skeleton(n) for n in ("admin", "Admin", "ADMIN", "admin.", "adm1n", "\\u0430dmin")}
    {'admin'}
    """
    s = normalize(name)
    s = "".join(_LOOKALIKES.get(c, c) for c in s).casefold()
    s = "".join(c for c in unicodedata.normalize("NFD", s) if not unicodedata.combining(c))
    s = s.translate(_MERGE)
    s = "".join(c for c in s if c not in SEPARATORS)
    for pair, letter in _PAIRS:
        s = s.replace(pair, letter)
    return s


def problem(name: object, what: str = "name") -> str | None:
    """Why ``name`` (already NFKC-normalized) cannot be a player or team name, or None if it can."""
    rule = f"{what} must be 1-{MAX_LEN} letters or digits (any script) and '_', '.', '-'"
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_LEN:
        return rule
    if not all((c.isalnum() and c not in _INVISIBLE) or c in SEPARATORS for c in name):
        return rule
    if not skeleton(name):
        return f"{what} needs at least one letter or digit"
    return None
