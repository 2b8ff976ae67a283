"""Personal data and secrets in text: detectors with checksums, and masking for reports.

Built-in detectors (each a pattern, then a validity check that removes most false positives):

===============  ==========================================================================
``email``        local@domain.tld
``phone``        international (+CC ...) or national numbers with 10-15 digits in total
``credit_card``  13-19 digits of a known card range (Visa, Mastercard, Amex, Discover, ...)
                 that pass the Luhn checksum
``iban``         an IBAN whose length fits its country and whose mod-97 checksum is 1
``national_id``  US Social Security numbers (area, group and serial rules), UK National
                 Insurance numbers, Dutch BSNs (the 11-test)
``secret``       API keys and credentials: AWS access keys, GitHub and Slack tokens, OpenAI-
                 and Stripe-style secret keys, Google API keys, JWTs, private-key blocks
===============  ==========================================================================

Microsoft Presidio's analyzer is an optional second backend (:func:`presidio_detect`), used where
the ``presidio-analyzer`` package is installed.

>>> [(f.kind, mask(f.kind, f.value)) for f in detect("mail bob@example.com, card 4111 1111 1111 1111")]
[('email', 'b**@e******.com'), ('credit_card', '************1111')]
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

KINDS = ("email", "phone", "credit_card", "iban", "national_id", "secret")


@dataclass(frozen=True)
class PiiFinding:
    kind: str
    value: str
    start: int
    end: int
    detail: str = ""  # e.g. which secret pattern or which national-ID scheme


# ------------------------------------------------------------------ checksums
def luhn_check_digit(payload: str) -> str:
    """The Luhn check digit that completes ``payload`` (a string of digits).

    >>> luhn_check_digit("411111111111111")
    '1'
    """
    total = 0
    for i, ch in enumerate(reversed(payload)):  # the check digit will sit to the right: double odd places
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return str((10 - total % 10) % 10)


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum (credit cards, Canadian SINs).

    >>> luhn_ok("4111111111111111"), luhn_ok("4111111111111112")
    (True, False)
    """
    if not digits.isdigit() or len(digits) < 2:
        return False
    return luhn_check_digit(digits[:-1]) == digits[-1]


# IBAN lengths per country (ISO 13616 registry, the common ones)
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24,
    "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21,
    "HU": 28, "IE": 22, "IL": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LI": 21,
    "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30,
    "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24,
    "SE": 24, "SI": 19, "SK": 24, "SM": 27, "TN": 24, "TR": 26, "UA": 29, "VG": 24, "XK": 20,
}


def iban_ok(iban: str) -> bool:
    """Country length and the mod-97 check (ISO 7064) of an IBAN without spaces.

    >>> iban_ok("GB82WEST12345698765432"), iban_ok("GB82WEST12345698765433")
    (True, False)
    """
    s = iban.replace(" ", "").upper()
    if len(s) < 5 or IBAN_LENGTHS.get(s[:2]) != len(s) or not s[2:4].isdigit():
        return False
    moved = s[4:] + s[:4]
    if not moved.isalnum():
        return False
    number = "".join(str(int(c, 36)) for c in moved)
    return int(number) % 97 == 1


def ssn_ok(ssn: str) -> bool:
    """US SSN rules: area not 000, 666 or 9xx; group not 00; serial not 0000."""
    d = re.sub(r"\D", "", ssn)
    if len(d) != 9:
        return False
    area, group, serial = d[:3], d[3:5], d[5:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def bsn_ok(bsn: str) -> bool:
    """The Dutch BSN 11-test: sum of digits weighted 9..2 and -1 is divisible by 11."""
    d = re.sub(r"\D", "", bsn)
    if len(d) != 9 or d == "000000000":
        return False
    total = sum(int(c) * w for c, w in zip(d[:8], range(9, 1, -1))) - int(d[8])
    return total % 11 == 0


# ------------------------------------------------------------------- patterns
_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?"
                    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)*\.[A-Za-z]{2,24}\b")
_CARD = re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
_SSN = re.compile(r"(?<![\d-])\d{3}-\d{2}-\d{4}(?![\d-])")
_NINO = re.compile(r"\b(?!BG|GB|KN|NK|NT|TN|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b")
_BSN_CONTEXT = re.compile(r"\b(?:BSN|burgerservicenummer)\b\W{0,3}(\d{9})\b", re.I)
_PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){2,4}(?![\w])")
_SECRETS = [
    ("aws_access_key", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("github_token", re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,255}\b")),
    ("slack_token", re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,72}\b")),
    ("openai_key", re.compile(r"\bsk-(?:proj-)?[A-Za-z0-9_-]{20,}\b")),
    ("stripe_key", re.compile(r"\b(?:sk|rk)_live_[A-Za-z0-9]{16,}\b")),
    ("google_api_key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b")),
    ("jwt", re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\b")),
    ("private_key", re.compile(r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED )?PRIVATE KEY-----")),
]
_DATE = re.compile(r"^(?:1[89]|2\d)\d{2}[-/.](?:0?[1-9]|1[0-2])[-/.](?:0?[1-9]|[12]\d|3[01])\b")
_CARD_PREFIX = re.compile(r"^(?:4|5[1-5]|2[2-7]|3[47]|6(?:011|5|4[4-9]|22)|35|30[0-5]|36|38)")


def _digits(s: str) -> str:
    return re.sub(r"\D", "", s)


def detect(text: str, kinds: Iterable[str] = KINDS) -> list[PiiFinding]:
    """Every PII item the built-in detectors find in ``text``, in order of position; a span claimed
    by a stricter detector (card, IBAN, national ID, secret) is not reported again as a phone."""
    kinds = set(kinds)
    unknown = kinds - set(KINDS)
    if unknown:
        from assay.errors import InputError

        raise InputError(f"unknown PII kind(s) {sorted(unknown)}; choose from {', '.join(KINDS)}")
    out: list[PiiFinding] = []
    taken: list[tuple[int, int]] = []

    def add(kind: str, m_start: int, m_end: int, value: str, detail: str = "") -> None:
        if any(s < m_end and m_start < e for s, e in taken):
            return
        taken.append((m_start, m_end))
        out.append(PiiFinding(kind, value, m_start, m_end, detail))

    if "secret" in kinds:
        for name, pat in _SECRETS:
            for m in pat.finditer(text):
                add("secret", m.start(), m.end(), m.group(), name)
    if "email" in kinds:
        for m in _EMAIL.finditer(text):
            add("email", m.start(), m.end(), m.group())
    if "iban" in kinds:
        for m in _IBAN.finditer(text):
            if iban_ok(m.group()):
                add("iban", m.start(), m.end(), m.group(), m.group()[:2])
    if "credit_card" in kinds:
        for m in _CARD.finditer(text):
            d = _digits(m.group())
            if 13 <= len(d) <= 19 and _CARD_PREFIX.match(d) and luhn_ok(d):
                add("credit_card", m.start(), m.end(), m.group())
    if "national_id" in kinds:
        for m in _SSN.finditer(text):
            if ssn_ok(m.group()):
                add("national_id", m.start(), m.end(), m.group(), "us_ssn")
        for m in _NINO.finditer(text):
            add("national_id", m.start(), m.end(), m.group(), "uk_nino")
        for m in _BSN_CONTEXT.finditer(text):
            if bsn_ok(m.group(1)):
                add("national_id", m.start(1), m.end(1), m.group(1), "nl_bsn")
    if "phone" in kinds:
        for m in _PHONE.finditer(text):
            d = _digits(m.group())
            grouped = bool(re.search(r"[ .()-]", m.group().strip())) or m.group().startswith("+")
            if 10 <= len(d) <= 15 and grouped and not _DATE.match(m.group().lstrip("+")):
                add("phone", m.start(), m.end(), m.group().strip())
    return sorted(out, key=lambda f: f.start)


def mask(kind: str, value: str) -> str:
    """A report-safe rendering: enough to recognise the type and check a known item, never the item.

    Emails keep the first letter of each part and the top-level domain; numbers keep their last
    two (phones, IDs) or four (cards, IBANs) digits; secrets keep their first four characters.
    """
    if kind == "email" and "@" in value:
        local, domain = value.split("@", 1)
        host, _, tld = domain.rpartition(".")
        return f"{local[:1]}{'*' * max(1, len(local) - 1)}@{host[:1]}{'*' * max(1, len(host) - 1)}.{tld}"
    if kind == "secret":
        return value[:4] + "*" * max(4, len(value) - 4)
    keep = 4 if kind in ("credit_card", "iban") else 2
    compact = re.sub(r"[\s.()-]", "", value)
    return "*" * max(1, len(compact) - keep) + compact[-keep:]


def normalise(kind: str, value: str) -> str:
    """The comparable form of an item (digits only for numbers, lower case for emails)."""
    if kind == "email":
        return value.lower()
    if kind in ("phone", "credit_card", "national_id"):
        return _digits(value)
    return re.sub(r"\s", "", value).upper() if kind == "iban" else value


# ------------------------------------------------------------------ Presidio
_PRESIDIO_KINDS = {
    "EMAIL_ADDRESS": "email", "PHONE_NUMBER": "phone", "CREDIT_CARD": "credit_card", "IBAN_CODE": "iban",
    "US_SSN": "national_id", "UK_NINO": "national_id", "NL_BSN": "national_id", "US_PASSPORT": "national_id",
}


def presidio_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("presidio_analyzer") is not None


_ANALYZER = None


def _presidio_analyzer():
    """Presidio's full analyzer where its default spaCy model is installed; otherwise its pattern
    recognizers alone. (Constructing the full analyzer without the model would try to download it.)"""
    global _ANALYZER
    if _ANALYZER is None:
        import importlib.util

        from presidio_analyzer import AnalyzerEngine, RecognizerRegistry

        if importlib.util.find_spec("en_core_web_lg") is not None:
            _ANALYZER = AnalyzerEngine()
        else:
            registry = RecognizerRegistry()
            registry.load_predefined_recognizers()
            _ANALYZER = ("patterns", [r for r in registry.recognizers if getattr(r, "patterns", None)])
    return _ANALYZER


def presidio_detect(text: str, threshold: float = 0.5) -> list[PiiFinding]:
    """PII found by Presidio's analyzer, mapped onto the built-in kinds (others keep Presidio's name)."""
    if not presidio_available():
        from assay.errors import InputError

        raise InputError("the Presidio backend needs presidio-analyzer; pip install presidio-analyzer")
    engine = _presidio_analyzer()
    if isinstance(engine, tuple):
        results = []
        for rec in engine[1]:
            results += rec.analyze(text, rec.supported_entities, None) or []
    else:
        results = engine.analyze(text=text, language="en")
    out = []
    for r in results:
        if r.score < threshold:
            continue
        kind = _PRESIDIO_KINDS.get(r.entity_type, r.entity_type.lower())
        out.append(PiiFinding(kind, text[r.start:r.end], r.start, r.end, f"presidio:{r.entity_type}"))
    return sorted(out, key=lambda f: f.start)
