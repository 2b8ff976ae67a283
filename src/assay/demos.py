"""The demos' orchestration: train or fine-tune the demo models, audit them and write the reports.

``assay demo`` (the digits CNN) runs through the CLI's audit command; ``assay demo llm`` runs
:func:`run_llm_demo`. The demo data and models themselves are in :mod:`assay.data`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from assay.data.demo_llm import COPIES, DEMO_PARAMS, fine_tune, make_corpus, smollm2_gguf


def leakage_curves(findings: dict[str, dict], planted: list[dict], copies=COPIES) -> dict:
    """Exposure and greedy-extraction rate per copy count, for each audited model (curve evidence)."""
    series_e, series_x = [], []
    for model_name, by_probe in findings.items():
        canary = by_probe["language.canary"]
        e = [canary.metric(f"exposure[{k}x]") for k in copies]
        series_e.append({"name": model_name, "x": list(copies), "y": [m.value for m in e],
                         "low": [m.low for m in e], "high": [m.high for m in e]})
        table = next(ev for ev in canary.evidence if ev.kind == "table")
        hit = {row[0]: row[8] == "yes" for row in table.data["rows"]}
        series_x.append({"name": model_name, "x": list(copies), "y": [float(hit[f"{k}x"]) for k in copies]})
    return {
        "exposure": {"xlabel": "copies in the fine-tuning data", "ylabel": "canary exposure (bits)", "logx": True,
                     "series": series_e + [{"name": "maximum (log2 10^6)", "x": list(copies),
                                            "y": [float(np.log2(1e6))] * len(copies), "style": "dashed"}]},
        "extraction": {"xlabel": "copies in the fine-tuning data", "ylabel": "secret extracted by greedy decoding",
                       "logx": True, "series": series_x},
    }


def run_llm_demo(out: str | Path, *, seed: int = 0, target=None, epochs: int = 3, train_blocks: int = 4,
                 lr: float = 1e-3, params: dict | None = None, log: Callable[[str], None] = print,
                 quiet_progress: bool = True) -> dict:
    """The whole demo (see the module doc); returns the two reports and the leakage curves.

    ``target`` replaces SmolLM2 (tests use a tiny model); it is fine-tuned in place, so the base
    model is audited first."""
    from assay.engine.plan import load_suite
    from assay.engine.runner import Runner
    from assay.report import render_all
    from assay.report.charts import curve_svg

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if target is None:
        from assay.targets.causal_lm import CausalLMTarget

        path = smollm2_gguf()
        log(f"Loading {path.name} (dequantized once, then cached) ...")
        target = CausalLMTarget.from_gguf(path, device="cpu")
    corpus = make_corpus(seed)
    corpus.data.write_jsonl(out / "texts.jsonl")
    log(f"Corpus: {len(corpus.train)} training texts ({len(corpus.data.members)} chats, "
        f"{len(corpus.planted)} planted items at {', '.join(map(str, COPIES))} copies)")
    params = {k: dict(v) for k, v in (params or DEMO_PARAMS).items()}

    def audit(name: str) -> dict:
        plan = load_suite("language")
        for pp in plan.probes:
            pp.params.update(params.get(pp.name, {}))
        log(f"Auditing the {name} model ...")
        report = Runner(target, corpus.data, plan, out_dir=out / name, seed=seed, resume=False,
                        log=lambda m: log("  " + m)).run()
        render_all(report, out / name)
        return report

    base = audit("base")
    log(f"Fine-tuning the last {train_blocks} blocks for {epochs} epochs ...")
    info = fine_tune(target, corpus.train, epochs=epochs, train_blocks=train_blocks, lr=lr, seed=seed, log=log)
    tuned = audit("fine-tuned")
    by = {"fine-tuned": {f.probe: f for f in tuned.findings}, "base": {f.probe: f for f in base.findings}}
    curves = leakage_curves(by, corpus.planted)
    svg = "".join(str(curve_svg(curves[k], t)) for k, t in (("exposure", "Canary exposure against copies"),
                                                             ("extraction", "Greedy extraction against copies")))
    (out / "leakage.html").write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>assay demo llm: leakage against copies</title>"
        "</head><body style='font-family:sans-serif'><h1>Leakage grows with repetition</h1>" + svg + "</body></html>",
        encoding="utf-8")
    # the two audits ran the same probes, data and seed: what fine-tuning changed, paired row by row
    from assay.compare import compare_reports

    comparison = compare_reports(base, tuned)
    comparison.names = ("base", "fine-tuned")
    comparison.write_all(out / "compare")
    summary = _summary(by, info, time.time() - t0) + "\n" + _changes(comparison)
    (out / "summary.txt").write_text(summary + "\n", encoding="utf-8")
    log(summary)
    log(f"Reports: {out / 'fine-tuned' / 'report.html'}, {out / 'base' / 'report.html'}; plot: {out / 'leakage.html'}; "
        f"what fine-tuning changed: {out / 'compare' / 'comparison.html'}")
    return {"base": base, "fine-tuned": tuned, "curves": curves, "training": info, "comparison": comparison,
            "seconds": time.time() - t0}


def _changes(comparison) -> str:
    """The significant changes from base to fine-tuned, one line per probe."""
    by: dict[str, list[str]] = {}
    for d in comparison.significant():
        by.setdefault(d.probe, []).append(f"{d.metric} {d.baseline:.3g} -> {d.candidate:.3g} ({d.change}, q={d.q:.2g})")
    tested = sum(d.p is not None for d in comparison.deltas)
    lines = [f"Compared base -> fine-tuned on {tested} metrics (paired where the rows are the same, "
             f"Benjamini-Hochberg at {comparison.settings.alpha:g}): "
             + (f"{len(comparison.significant())} changed significantly" if by else "no detectable change")]
    lines += [f"  {probe}: " + "; ".join(items) for probe, items in by.items()]
    return "\n".join(lines)


def _summary(by: dict, info: dict, seconds: float) -> str:
    lines = [f"Fine-tuning: {info['steps']} steps, {info['trainable_parameters']:,} trainable parameters, "
             f"final loss {info['final_loss']:.3f}, {info['seconds']:.0f} s",
             f"{'model':<12} {'copies':>6} {'exposure (bits)':>16} {'extracted':>10}"]
    for name, f in by.items():
        canary = f["language.canary"]
        table = next(ev for ev in canary.evidence if ev.kind == "table")
        for row in table.data["rows"]:
            lines.append(f"{name:<12} {row[1]:>6} {row[2]:>16.1f} {row[8]:>10}")
    for name, f in by.items():
        ex, mem, pii = f["language.extraction"], f["language.membership"], f["language.pii"]
        lines.append(f"{name}: verbatim extraction {ex.metric('verbatim_rate').value:.0%} of documents, "
                     f"membership AUC {mem.metric('max_auc').value:.2f}, planted PII leaked: "
                     f"{int(pii.metric('leaked_items').value)} items; verdicts "
                     + ", ".join(f"{k.split('.')[1]} {v.verdict}" for k, v in f.items()))
        if "language.injection" in f:
            inj = f["language.injection"]
            lines.append(f"{name}: prompt injection: {inj.summary}")
        jb = f.get("language.jailbreak")
        if jb is not None and jb.error is None:
            lines.append(f"{name}: jailbreak: {jb.summary}")
    lines.append(f"Demo time: {seconds:.0f} s")
    return "\n".join(lines)


# ------------------------------------------------------------------ assay demo compare
COMPARE_PROBES = ["robustness.evasion", "robustness.corruption", "reliability.calibration", "fairness.groups",
                  "certify.smoothing", "privacy.membership"]
# sized for 2 CPU cores: the digits' 17 grey levels make eps 0.1-0.2 the budgets where robustness moves
COMPARE_PARAMS = {
    "robustness.evasion": {"eps_linf": [0.1, 0.2], "attack": "apgd-ce", "steps": 20, "curve": False,
                           "max_samples": 300},
    "robustness.corruption": {"severities": [3], "max_samples": 400},
    "reliability.calibration": {"n_boot": 500},
    "fairness.groups": {"n_boot": 500},
    "certify.smoothing": {"n": 200, "max_samples": 100, "attack": False, "radii": [0.0, 0.25, 0.5]},
    "privacy.membership": {"attacks": ["baseline", "rmia"], "n_reference": 4},
}


def compression_candidates(model, splits, seed: int = 0) -> dict:
    """Three real changes of the demo CNN: its dynamic int8 quantization (linear layers), a copy with
    50% of every layer's weights pruned by magnitude, and a copy fine-tuned on a shifted subset (300
    training digits at half contrast)."""
    import copy

    import torch
    from torch import nn
    from torch.nn.utils import prune

    from assay.train.classifier import train_classifier

    int8 = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model).eval(), {nn.Linear}, dtype=torch.qint8)
    pruned = copy.deepcopy(model)
    for m in pruned.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            prune.l1_unstructured(m, "weight", amount=0.5)
            prune.remove(m, "weight")  # the zeros become the weights: a plain module again
    tuned = copy.deepcopy(model)
    x = splits.x_train[:300] * 0.5 + 0.25  # the shift: low-contrast scans
    with torch.random.fork_rng():
        train_classifier(tuned, x, splits.y_train[:300], epochs=5, lr=1e-3, seed=seed)
    return {"int8": int8.eval(), "pruned50": pruned.eval(), "finetuned-shift": tuned.eval()}


def run_compare_demo(out: str | Path, *, seed: int = 0, log: Callable[[str], None] = print,
                     params: dict | None = None) -> dict:
    """Train the demo CNN, make its three candidates, audit all four on the demo data (400 training
    members and the held-out digits, with the stroke attribute) and compare each with the baseline."""
    import torch

    from assay.compare import compare_each
    from assay.data.dataset import Dataset
    from assay.data.demo import train_demo_model
    from assay.data.demo_fairness import demo_sensitive_attribute

    t0 = time.time()
    model, s = train_demo_model(seed)
    candidates = compression_candidates(model, s, seed)
    log(f"trained the demo CNN and its candidates in {time.time() - t0:.0f} s")
    x = torch.cat([s.x_train[:400], s.x_test])
    y = torch.cat([s.y_train[:400], s.y_test])
    member = torch.cat([torch.ones(400, dtype=torch.bool), torch.zeros(len(s.x_test), dtype=torch.bool)])
    data = Dataset(x, y, groups={"stroke": demo_sensitive_attribute(x, y, seed=seed)}, member=member)
    results = compare_each(model, candidates, data, probes=COMPARE_PROBES, params=params or COMPARE_PARAMS,
                           out=out, seed=seed, baseline_name="fp32", log=None)
    log(f"audited 4 models and compared 3 pairs in {time.time() - t0:.0f} s")
    return results
