"""What the language probes share: target and data checks, rates with intervals, shared generations."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import numpy as np

from assay import outcomes as oc
from assay.data.language import LanguageData
from assay.errors import InputError
from assay.findings import Metric
from assay.stats import clopper_pearson
from assay.targets.llm import LanguageModelTarget

_REFERENCES: dict[str, LanguageModelTarget] = {}


def check_language(probe, target, data, fields: tuple[str, ...]) -> str | None:
    """Why a language probe cannot run here (None if it can)."""
    if not isinstance(target, LanguageModelTarget):
        return f"needs a language-model target (a .gguf file, a causal-LM directory or an OpenAI-compatible URL), got {target.kind}"
    if data is not None and not isinstance(data, LanguageData):
        return "needs text data (a .jsonl file of documents, members / non-members, prompts or canaries; see docs/language.md)"
    if data is not None:
        missing = [f for f in fields if not data.has(f)]
        if missing:
            return f"needs {' and '.join(missing).replace('_', '-')} in the text data; see docs/language.md"
    return None


def rate(name: str, k: int, n: int, description: str, *, level: float = 0.95,
         labels: dict[str, Any] | None = None, keyed: dict[str, Any] | None = None) -> Metric:
    """``k / n`` with its exact (Clopper-Pearson) interval; with ``labels``, a labelled variant of
    ``name`` (``leak_rate[direct]``; ``keyed`` as in :meth:`Metric.labelled`: ``[template=direct]``)."""
    iv = clopper_pearson(k, n, level)
    return Metric.labelled(name, labels or {}, k / n if n else float("nan"), iv.low, iv.high, higher_is_better=False,
                           level=level, method="clopper-pearson", description=f"{description} ({k}/{n})",
                           keyed=keyed)


def rate_rows(rows_out: oc.Outcomes | None, name: str, hits, description: str, *, kind: str = "leaked",
              level: float = 0.95, labels: dict[str, Any] | None = None,
              keyed: dict[str, Any] | None = None) -> Metric:
    """:func:`rate` of a binary outcome per row (a document, a trial, a request), kept in ``rows_out``
    with its recipe, so that two models audited on the same rows are compared row by row (McNemar's
    exact test in ``assay compare``) instead of from their intervals."""
    hits = np.asarray(hits, dtype=bool).reshape(-1)
    m = rate(name, int(hits.sum()), int(hits.size), description, level=level, labels=labels, keyed=keyed)
    if rows_out is not None and hits.size:
        rows_out.recipe(m, oc.mean(rows_out.bits(m.name, kind, hits)))
    return m


def keep_mean(rows_out: oc.Outcomes, m: Metric, values, kind: str) -> Metric:
    """Keep the per-row values behind ``m`` (their mean) for the paired bootstrap of ``assay compare``."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.size:
        rows_out.recipe(m, oc.mean(rows_out.floats(m.name, kind, values)))
    return m


def reference_target(spec: str | None, like: LanguageModelTarget) -> LanguageModelTarget | None:
    """A reference model from a path (a .gguf file or a causal-LM directory), loaded once per process
    on the target's device."""
    if not spec:
        return None
    key = os.path.abspath(os.path.expanduser(spec))
    if key not in _REFERENCES:
        from assay.targets.causal_lm import CausalLMTarget

        if not os.path.exists(key):
            raise InputError(f"reference model {spec} does not exist; give a .gguf file or a causal-LM directory")
        dev = getattr(like, "device", "auto")
        _REFERENCES[key] = (CausalLMTarget.from_gguf(key, device=dev) if key.lower().endswith(".gguf")
                            else CausalLMTarget.from_pretrained(key, device=dev))
    return _REFERENCES[key]


def shared_unit(ctx, key: str, fn) -> dict[str, Any]:
    """Like ``ctx.unit`` but shared by every probe of the audit (same target, data and seed): the
    extraction probe's generations are the PII probe's input, computed once."""
    ns = ctx.namespace.rsplit("/", 1)[0] + "/language-shared"
    hit = ctx.checkpoint.get(ns, key)
    if hit is not None:
        ctx.units_resumed += 1
        return hit
    memo = getattr(ctx.target, "_assay_shared_units", None)
    if memo is None:
        memo = {}
        ctx.target._assay_shared_units = memo
    # the model's fingerprint too: a target fine-tuned in place (the demo) must not get its old answers
    mkey = (ctx.target.fingerprint(), ctx.data.fingerprint(), key)
    if mkey not in memo:
        memo[mkey] = fn()
        ctx.units_run += 1
    ctx.checkpoint.put(ns, key, memo[mkey])
    return memo[mkey]


def prefix_generations(ctx, splits, suffix_tokens: int, chat: bool) -> list[str]:
    """Greedy continuations of the documents' prefixes: ``suffix_tokens`` new tokens each, or twice
    as many for a target without a tokenizer (there the split is in words)."""
    new_tokens = suffix_tokens if getattr(ctx.target, "tokenizer", None) is not None else 2 * suffix_tokens
    key = "prefix-generations-" + hashlib.sha256(json.dumps(
        [[s.prefix for s in splits], suffix_tokens, chat]).encode()).hexdigest()[:16]

    def run():
        gens = ctx.target.generate([s.prefix for s in splits], max_new_tokens=new_tokens, chat=chat)
        return {"texts": [g.text for g in gens]}

    return list(shared_unit(ctx, key, run)["texts"])


def redact(text: str, secrets: list[str]) -> str:
    """``text`` fit for a report: known canary secrets become ``[SECRET]``, detected personal data is
    masked (:func:`assay.metrics.pii.mask`)."""
    from assay.metrics import pii

    for sec in sorted(set(secrets), key=len, reverse=True):
        text = text.replace(sec, "[SECRET]")
    out, pos = [], 0
    for f in pii.detect(text):
        out += [text[pos:f.start], pii.mask(f.kind, f.value)]
        pos = f.end
    out.append(text[pos:])
    return "".join(out)
