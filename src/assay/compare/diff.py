"""Paired comparison of two audits of the same inputs: what changed, with significance.

Both audits ran the same probes, parameters, seed and data, so every metric of the baseline has a
twin in the candidate measured on the very same rows. A metric whose finding keeps per-sample
outcomes (:mod:`assay.outcomes`) is compared row by row:

- a rate of one binary outcome (accuracy, robust or certified accuracy) by McNemar's exact test on
  the discordant rows, with a paired bootstrap interval for the difference;
- any other metric with a recipe (ECE, a fairness gap, a membership AUC) by the paired bootstrap:
  both models' figures are recomputed on the same resampled rows, so what the rows share cancels.

A metric without outcomes falls back to its two reported intervals (a conservative unpaired z test).
Benjamini-Hochberg controls the false-discovery rate over every tested metric; each ends as
significantly worse, significantly better (or changed, where a metric has no better direction), or
no detectable change, with the minimum detectable effect at the stated power for the rows used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from assay import outcomes as oc
from assay.errors import InputError
from assay.findings import VERDICT_RANK, Finding, Metric, clean_json, rules_for_metric
from assay.report.schema import AuditReport
from assay.stats import (
    PairedDelta,
    benjamini_hochberg,
    mcnemar_mde,
    mcnemar_outcomes,
    normal_mde,
    paired_bootstrap,
    unpaired_delta,
)

if TYPE_CHECKING:
    from assay.compare.report import Comparison

CHANGES = ("worse", "better", "changed", "no detectable change", "not tested")


@dataclass
class MetricDelta:
    """One metric of both audits and the change between them (candidate minus baseline)."""

    probe: str
    metric: str
    labels: dict[str, Any]
    baseline: float
    candidate: float
    delta: float
    low: float | None
    high: float | None
    p: float | None
    q: float | None = None  # Benjamini-Hochberg adjusted p-value
    test: str = ""  # "mcnemar exact", "paired bootstrap", "unpaired (intervals)", or why none
    change: str = "not tested"
    mde: float | None = None  # smallest change detectable at the stated power on these rows
    n: int | None = None  # rows paired
    lost: int | None = None  # McNemar: rows the baseline got right and the candidate not
    gained: int | None = None
    higher_is_better: bool | None = None
    baseline_interval: tuple[float | None, float | None] = (None, None)
    candidate_interval: tuple[float | None, float | None] = (None, None)
    verdict: str = "info"  # the delta policy's verdict on this change
    rules: list[str] = field(default_factory=list)

    @property
    def significant(self) -> bool:
        return self.change in ("worse", "better", "changed")

    @property
    def name(self) -> str:
        return self.metric


@dataclass
class FindingPair:
    """One probe of both audits: its metric deltas, or why it could not be compared."""

    probe: str
    axis: str
    title: str
    params: dict[str, Any]
    baseline_verdict: str
    candidate_verdict: str
    deltas: list[MetricDelta] = field(default_factory=list)
    note: str = ""  # why metrics were not compared (skipped, errored, rows differ)
    verdict: str = "info"
    baseline: Finding | None = None
    candidate: Finding | None = None


@dataclass
class Settings:
    level: float = 0.95  # of the difference intervals
    alpha: float = 0.05  # false-discovery rate over all tested metrics
    power: float = 0.8  # of the minimum detectable effect
    n_boot: int = 2000
    seed: int = 0


def input_mismatches(a: AuditReport, b: AuditReport) -> list[str]:
    """Why two audits cannot be compared pair by pair (empty when they can)."""
    why = []
    fa, fb = a.accounting.get("data_fingerprint"), b.accounting.get("data_fingerprint")
    if fa is None or fb is None:
        why.append("a report records no data fingerprint (written before report schema 1.2); rerun both audits")
    elif fa != fb:
        why.append(f"the data differ (fingerprints {fa[:12]} and {fb[:12]})")
    if a.seed != b.seed:
        why.append(f"the seeds differ ({a.seed} and {b.seed})")
    pa = [(f.probe, _key(f.params)) for f in a.findings]
    pb = [(f.probe, _key(f.params)) for f in b.findings]
    if sorted(pa) != sorted(pb):
        only_a = sorted({p for p, k in pa if (p, k) not in pb})
        only_b = sorted({p for p, k in pb if (p, k) not in pa})
        parts = ([f"only the baseline ran {', '.join(only_a)}"] if only_a else []) + \
                ([f"only the candidate ran {', '.join(only_b)}"] if only_b else [])
        why.append("the probes or their parameters differ" + (f" ({'; '.join(parts)})" if parts else ""))
    return why


def _key(params: dict[str, Any]) -> str:
    import json

    return json.dumps(clean_json(params), sort_keys=True, default=str)


def compare_reports(baseline: AuditReport, candidate: AuditReport, *, policy: dict[str, Any] | None = None,
                    settings: Settings | None = None) -> Comparison:
    """The paired comparison of two finished audits; an :class:`InputError` naming the reasons when
    their inputs differ."""
    from assay.compare.report import Comparison

    s = settings or Settings()
    if not 0 < s.level < 1 or not 0 < s.alpha < 1 or not 0 < s.power < 1:
        raise InputError("level, alpha and power must lie strictly between 0 and 1")
    why = input_mismatches(baseline, candidate)
    if why:
        raise InputError("cannot compare these audits: " + "; ".join(why)
                         + ". Audit both models with the same data, seed, probes and parameters (assay compare does)")
    cands = {(f.probe, _key(f.params)): f for f in candidate.findings}
    pairs = [_pair(fa, cands[(fa.probe, _key(fa.params))], s, i) for i, fa in enumerate(baseline.findings)]
    tested = [d for p in pairs for d in p.deltas if d.p is not None and math.isfinite(d.p)]
    if tested:
        q = benjamini_hochberg(np.array([d.p for d in tested]))
        for d, qi in zip(tested, q):
            d.q = float(qi)
            d.change = _change(d, qi <= s.alpha)
    comp = Comparison(baseline=baseline, candidate=candidate, pairs=pairs, settings=s)
    comp.apply_policy(policy)
    return comp


def _change(d: MetricDelta, significant: bool) -> str:
    if not significant:
        return "no detectable change"
    if d.higher_is_better is None:
        return "changed"
    return "better" if (d.delta > 0) == d.higher_is_better else "worse"


def _pair(fa: Finding, fb: Finding, s: Settings, index: int) -> FindingPair:
    pair = FindingPair(fa.probe, fa.axis, fa.title, fa.params, fa.verdict, fb.verdict, baseline=fa, candidate=fb)
    not_run = [f"{who} {f.verdict}" + (f" ({f.error or f.summary})" if f.error or f.summary else "")
               for who, f in (("baseline", fa), ("candidate", fb)) if f.verdict in ("skipped", "error")]
    if not_run:
        pair.note = "not compared: " + "; ".join(not_run)
        return pair
    sa, sb = fa.accounting.get("sample"), fb.accounting.get("sample")
    same_rows = (sa or {}).get("indices") == (sb or {}).get("indices")
    va, vb = _vectors(fa, "baseline"), _vectors(fb, "candidate")
    if not same_rows:
        pair.note = "the two audits sampled different rows; compared from their intervals only"
    by_name = {m.name: m for m in fb.metrics}
    for j, ma in enumerate(fa.metrics):
        mb = by_name.get(ma.name)
        if mb is None:
            continue
        d = MetricDelta(fa.probe, ma.name, dict(ma.labels), ma.value, mb.value, mb.value - ma.value, None, None, None,
                        higher_is_better=ma.higher_is_better, baseline_interval=(ma.low, ma.high),
                        candidate_interval=(mb.low, mb.high))
        if not (math.isfinite(ma.value) and math.isfinite(mb.value)):
            d.test = "undefined in one model"
        elif same_rows and _paired(d, ma, mb, fa, fb, va, vb, s, seed=s.seed + 7919 * index + j):
            pass
        else:
            _unpaired(d, ma, mb, s)
        pair.deltas.append(d)
    return pair


def _vectors(f: Finding, who: str) -> dict[str, np.ndarray]:
    return oc.decode(f.outcomes, where=f"the {who}'s {f.probe} outcomes") if f.outcomes else {}


def _recipe(f: Finding, m: Metric, vectors: dict[str, np.ndarray]) -> dict | None:
    """The finding's recipe of ``m``, only when it reproduces the reported value (else the outcomes
    would describe a different figure than the one reported, and the test would be wrong)."""
    r = ((f.outcomes or {}).get("metrics") or {}).get(m.name)
    if r is None:
        return None
    try:
        n = oc.rows_of(r, vectors)
        v = float(oc.evaluate(r, vectors, np.ones((1, n)))[0])
    except InputError:
        return None
    return r if abs(v - m.value) <= 1e-6 * max(1.0, abs(m.value)) else None


def _paired(d, ma, mb, fa, fb, va, vb, s: Settings, seed: int) -> bool:
    ra, rb = _recipe(fa, ma, va), _recipe(fb, mb, vb)
    if ra is None or rb is None:
        return False
    n = oc.rows_of(ra, va)
    if oc.rows_of(rb, vb) != n:
        return False
    boot = paired_bootstrap(lambda w: oc.evaluate(rb, vb, w) - oc.evaluate(ra, va, w), n,
                            n_boot=s.n_boot, level=s.level, seed=seed)
    d.n, d.low, d.high = n, _finite(boot.low), _finite(boot.high)
    xa, xb = oc.binary_vector(ra, va), oc.binary_vector(rb, vb)
    if xa is not None and xb is not None:
        t = mcnemar_outcomes(va[xa], vb[xb])
        d.p, d.lost, d.gained, d.test = t["p"], t["lost"], t["gained"], "mcnemar exact"
        d.mde = _finite(mcnemar_mde(n, (t["lost"] + t["gained"]) / n, s.alpha, s.power))  # None: no change detectable
    else:
        d.p, d.test = _finite(boot.p), "paired bootstrap"
        d.mde = _finite(normal_mde(boot.se, s.alpha, s.power)) if boot.n_boot > 1 else None
        if d.p is None:
            d.test = "paired bootstrap (undefined on resamples)"
    return True


def _unpaired(d: MetricDelta, ma: Metric, mb: Metric, s: Settings) -> None:
    u: PairedDelta = unpaired_delta(ma.value, ma.low, ma.high, mb.value, mb.low, mb.high, level=s.level,
                                    a_level=ma.level, b_level=mb.level)
    d.low, d.high, d.p = _finite(u.low), _finite(u.high), _finite(u.p)
    if d.p is None:
        d.test = "no intervals or outcomes: not tested"
        return
    d.test = "unpaired (intervals)"
    d.mde = _finite(normal_mde(u.se, s.alpha, s.power))


def _finite(v) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None


# ------------------------------------------------------------------ the delta policy
def judge(d: MetricDelta, rules: dict[str, Any]) -> str:
    """The verdict of the rules on one change: they judge ``delta`` (and its interval)."""
    m = Metric(d.metric, d.delta, d.low, d.high, labels=d.labels)
    verdict = "pass"
    d.rules = []
    for rule in rules_for_metric(rules, m):
        v = rule.verdict(d.delta, d.low, d.high, significant=d.significant) if d.delta == d.delta else "pass"
        d.rules.append(f"{rule.describe()}: {v}")
        if VERDICT_RANK[v] > VERDICT_RANK[verdict]:
            verdict = v
    return verdict


DEFAULT_RULE = "no metric significantly worse"


def default_verdict(d: MetricDelta) -> str:
    """Without a policy, a change fails when it is significantly worse."""
    return "fail" if d.change == "worse" else "pass"
