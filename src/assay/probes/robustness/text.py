"""robustness.text: how much accuracy survives character and word edits to a text classifier's input?"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from assay import outcomes as oc
from assay.attacks.text import EDITS, greedy_text_attack
from assay.errors import InputError
from assay.findings import Evidence, Metric, Threshold
from assay.outcomes import Outcomes
from assay.probes.base import Probe, register
from assay.stats import clopper_pearson
from assay.targets.base import SCORES


@register
class TextRobustnessProbe(Probe):
    name = "robustness.text"
    axis = "robustness"
    title = "Text robustness (character and word edits, query access only)"
    description = (
        "DeepWordBug-style greedy attack (leave-one-out word ranking, then character edits of the most "
        "important words) and a word-level variant, under a per-sample query allowance and a hard budget."
    )
    requires = frozenset({SCORES})
    needs = frozenset({"labels"})
    accepts_text = True
    default_policy = {"robust_accuracy": Threshold(fail_below=0.3, warn_below=0.6)}

    @dataclass
    class Params:
        attacks: list[Literal["char", "word"]] = field(default_factory=lambda: ["char", "word"])
        max_samples: int = 100
        queries_per_sample: int = 500  # per attack, ranking and search included
        query_budget: int | None = None  # total for this probe; default: what the target has left
        max_edit_distance: int = 30  # summed Levenshtein distance of the edits (DeepWordBug's 30)
        max_word_fraction: float = 0.25  # at most this share of a text's words may change (at least one)
        candidates_per_word: int = 4
        synonyms: str | None = None  # word edits: a JSON file {"word": ["synonym", ...]} of vetted swaps
        n_examples: int = 6
        level: float = 0.95

    def check(self, target, data):
        if data is not None and data.kind != "text":
            return "robustness.text edits text; this data is numeric (robustness.evasion and robustness.blackbox cover it)"
        return super().check(target, data)

    def cost(self, target, data):
        p = self.params
        n = min(len(data), p.max_samples) if data is not None else p.max_samples
        return {"queries": n * p.queries_per_sample * len(p.attacks), "note": "upper bound; broken texts stop early"}

    def _validated(self):
        p = self.params
        bad = [a for a in p.attacks if a not in EDITS]
        if bad or not p.attacks:
            raise InputError(f"attacks={p.attacks}; choose from {', '.join(EDITS)}")
        if p.max_samples < 1 or p.queries_per_sample < 1 or p.max_edit_distance < 1 or p.candidates_per_word < 1:
            raise InputError("max_samples, queries_per_sample, max_edit_distance and candidates_per_word must be >= 1")
        if not 0 < p.max_word_fraction <= 1:
            raise InputError(f"max_word_fraction={p.max_word_fraction}; give a share of the words in (0, 1]")
        if p.query_budget is not None and p.query_budget < 0:
            raise InputError(f"query_budget={p.query_budget}; give a number of queries >= 0")
        return p

    def _synonyms(self) -> dict[str, list[str]] | None:
        import json
        from pathlib import Path

        path = self.params.synonyms
        if path is None:
            return None
        try:
            table = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(f"synonyms file {path} not found; check robustness.text.synonyms") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InputError(f"synonyms file {path} is not valid JSON ({e}); give {{\"word\": [\"synonym\", ...]}}") from None
        if not isinstance(table, dict) or not all(isinstance(v, list) and all(isinstance(w, str) for w in v)
                                                  for v in table.values()):
            raise InputError(f"synonyms file {path} must map each word to a list of strings, e.g. {{\"good\": [\"fine\"]}}")
        return table

    def run(self, ctx):
        p = self._validated()
        target, data = ctx.target, ctx.data
        idx = ctx.sample(p.max_samples, salt=31)  # seeded, class-stratified, recorded in the report
        n = len(idx)
        texts = [data.x[i] for i in idx.tolist()]
        y = data.y[idx]
        clean = ctx.clean_scores()[idx]
        clean_wrong = clean.argmax(1) != y
        charged_before = target.queries
        used = 0
        warnings: list[str] = []
        results = {}
        synonyms = self._synonyms()
        for a in p.attacks:
            room = [b for b in (p.query_budget if p.query_budget is None else p.query_budget - used,
                                target.budget.remaining) if b is not None]
            left = min(room) if room else None
            key = (f"text-{a}-n{n}-q{p.queries_per_sample}-d{p.max_edit_distance}-w{p.max_word_fraction:g}"
                   f"-c{p.candidates_per_word}")
            out = ctx.unit(key, lambda a=a, left=left: greedy_text_attack(
                target.scores, texts, y, edits=a, max_queries=p.queries_per_sample,
                max_edit_distance=p.max_edit_distance, max_words=p.max_word_fraction,
                candidates_per_word=p.candidates_per_word, synonyms=synonyms, output=target.output, clean_scores=clean,
                query_budget=left, seed=ctx.seed,
                progress=lambda d, t, a=a: ctx.progress(f"{a} edits (texts done)", d, t)).to_dict())
            results[a] = out
            used += int(out["queries"].sum())
            if out.get("budget_exhausted"):
                warnings.append(f"{a} edits: the query budget ran out before every text was attacked with its full "
                                "allowance: robust accuracy is an upper bound; raise the budget for a tighter number")

        attacked = ~clean_wrong
        n_att = int(attacked.sum())
        metrics: list[Metric] = []
        broken_any = clean_wrong.clone()
        rows = []
        rows_out = Outcomes()  # per text, so two models attacked alike are compared text by text (McNemar)
        for a, out in results.items():
            success = out["success"].bool() | clean_wrong
            broken_any |= success
            k_rob = int((~success).sum())
            iv = clopper_pearson(k_rob, n, p.level)
            metrics.append(Metric.labelled("robust_accuracy", {"family": a}, k_rob / n, iv.low, iv.high, higher_is_better=True,
                                  level=p.level, method=iv.method,
                                  description=f"accuracy left after greedy {a} edits ({p.queries_per_sample} queries per text)"))
            rows_out.recipe(metrics[-1], oc.mean(rows_out.bits(f"robust[{a}]", "robust", ~success)))
            k_succ = int((success & attacked).sum())
            if n_att:
                iv = clopper_pearson(k_succ, n_att, p.level)
                metrics.append(Metric.labelled("attack_success_rate", {"family": a}, k_succ / n_att, iv.low, iv.high,
                                      higher_is_better=False, level=p.level, method=iv.method,
                                      description=f"share of correctly classified texts whose label {a} edits flipped"))
            q = out["queries"][attacked].float()
            metrics.append(Metric.labelled("queries_per_sample", {"family": a}, float(q.mean()) if n_att else 0.0, unit="queries",
                                  description="mean texts scored per attacked text (ranking and search; the clean "
                                              "prediction comes from the audit's shared cache)"))
            won = success & attacked
            if won.any():
                metrics.append(Metric.labelled("words_changed", {"family": a}, float(out["words_changed"][won].float().mean()), unit="words",
                                      description="mean words edited in the texts whose label flipped"))
                metrics.append(Metric.labelled("queries_per_success", {"family": a}, float(out["queries"][won].float().mean()), unit="queries",
                                      description="mean texts scored per successful attack"))
            for i in won.nonzero().flatten()[: p.n_examples].tolist():
                rows.append([a, texts[i], out["texts_adv"][i], self._name(target, int(y[i])),
                             self._name(target, int(out["pred_adv"][i])), int(out["words_changed"][i]),
                             int(out["queries"][i])])
        k = int((~broken_any).sum())
        iv = clopper_pearson(k, n, p.level)
        metrics.insert(0, Metric("robust_accuracy", k / n, iv.low, iv.high, higher_is_better=True, level=p.level,
                                 method=iv.method, description="texts no attack broke (worst case over the attacks)"))
        rows_out.recipe(metrics[0], oc.mean(rows_out.bits("robust", "robust", ~broken_any)))
        metrics.append(Metric("queries_used", float(used), unit="queries"))
        evidence = [Evidence("bars", "Robust accuracy by edit family", {
            "ylabel": "accuracy", "categories": ["clean", *results],
            "series": [{"name": "accuracy", "values": [float(attacked.float().mean())] +
                        [m.value for m in metrics if m.name.startswith("robust_accuracy[")],
                        "low": [clopper_pearson(n_att, n, p.level).low] +
                        [m.low for m in metrics if m.name.startswith("robust_accuracy[")],
                        "high": [clopper_pearson(n_att, n, p.level).high] +
                        [m.high for m in metrics if m.name.startswith("robust_accuracy[")]}]})]
        if rows:
            evidence.append(Evidence("table", "Adversarial texts (the edits flipped the label)", {
                "columns": ["edits", "original", "perturbed", "true", "predicted", "words changed", "queries"],
                "rows": rows}))
        per = ", ".join(f"{a} edits {m.value:.1%}" for a in results for m in metrics if m.name == f"robust_accuracy[{a}]")
        charged = target.queries - charged_before
        return self.finding(
            metrics=metrics, warnings=warnings, evidence=evidence,
            summary=(f"robust accuracy {k / n:.1%} [{iv.low:.1%}, {iv.high:.1%}] on {n} texts (clean "
                     f"{n_att / n:.1%}; {per}); {used} queries"),
            accounting={"samples": n, "sample_rows": idx.tolist(), "queries_charged": charged, "attacks": list(results)},
            outcomes=rows_out.to_dict(),
        )

    @staticmethod
    def _name(target, label: int) -> str:
        names = getattr(target, "class_names", None)
        return f"{label} ({names[label]})" if names and 0 <= label < len(names) else str(label)
