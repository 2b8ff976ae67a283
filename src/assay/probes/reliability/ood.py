"""``reliability.ood``: can the model's outputs flag inputs unlike its training data?"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from assay import outcomes as oc
from assay.errors import InputError
from assay.findings import Evidence, Metric, Threshold
from assay.metrics.ood import DetectionTerms, ash_logits, energy_score, msp_score, shifted_copy
from assay.outcomes import Outcomes
from assay.probes.base import Probe, register
from assay.targets.base import GRADIENTS


@register
class OutOfDistribution(Probe):
    name = "reliability.ood"
    axis = "reliability"
    title = "Out-of-distribution detection"
    description = (
        "AUROC and FPR at 95% TPR of MSP, energy and ASH-S energy scores separating the test set from "
        "an OOD set (data.x_ood, else a documented shift of the test set), with bootstrap intervals."
    )
    requires = frozenset({"scores"})
    needs = frozenset()
    accepts_text = True
    default_policy = {"auroc": Threshold(warn_below=0.8), "fpr_at_95tpr": Threshold(warn_above=0.5)}

    @dataclass
    class Params:
        detectors: list[Literal["msp", "energy", "ash"]] | None = None  # None: every one the model allows
        shift: Literal["permute", "noise", "uniform"] = "permute"  # used only when the dataset has no x_ood
        temperature: float = 1.0
        ash_percentile: float = 90.0
        tpr: float = 0.95
        n_boot: int = 1000
        level: float = 0.95
        bins: int = 30

    def cost(self, target, data):
        n_ood = len(data.x_ood) if data is not None and data.x_ood is not None else len(data) if data is not None else 0
        ash = target is None or GRADIENTS in target.capabilities
        return {"queries": n_ood * (2 if ash else 1) + (len(data) if ash and data is not None else 0),
                "note": "OOD scores, plus one ASH pass over ID and OOD for torch models"}

    @staticmethod
    def _ash_unavailable(t) -> str | None:
        """Why ASH cannot run: it reshapes the input of the model's last nn.Linear layer, which only
        a Python torch model exposes (TorchScript, ONNX and remote models do not)."""
        if t.output != "logits" or GRADIENTS not in t.capabilities:
            return "it needs a white-box torch model returning logits"
        if any(isinstance(m, torch.jit.ScriptModule) for m in t.module.modules()):
            return "it needs the model's last linear layer, which a TorchScript model does not expose"
        if not any(isinstance(m, torch.nn.Linear) for m in t.module.modules()):
            return "the model has no nn.Linear classifier head"
        return None

    def run(self, ctx):
        p = self.params
        t, data = ctx.target, ctx.data
        if data.kind == "text":
            x_ood, source = _text_ood(data, p.shift, ctx.seed)
        elif data.x_ood is not None:
            x_ood = data.x_ood
            if tuple(x_ood.shape[1:]) != tuple(t.input_shape):
                raise InputError(f"OOD inputs have shape {tuple(x_ood.shape[1:])} but the model takes {t.input_shape}; give OOD data of the same shape")
            source = "dataset x_ood"
        else:
            x_ood = shifted_copy(data.x, p.shift, seed=ctx.seed, bounds=t.bounds)
            source = f"built-in shift '{p.shift}' of the test inputs"
        wanted = list(dict.fromkeys(p.detectors or ["msp", "energy", "ash"]))
        warnings: list[str] = []
        id_logits = ctx.clean_scores()
        ood_logits = t.scores(x_ood)
        scores = {}
        if "msp" in wanted:
            scores["msp"] = (msp_score(id_logits), msp_score(ood_logits)) if t.output == "logits" else (
                id_logits.max(1).values, ood_logits.max(1).values)
        if "energy" in wanted:
            if t.output == "logits":
                scores["energy"] = (energy_score(id_logits, p.temperature), energy_score(ood_logits, p.temperature))
            elif p.detectors:
                warnings.append("energy needs logits; this model returns probabilities, so it was not run")
        if "ash" in wanted:
            why = self._ash_unavailable(t)
            if why is None:
                mod = t.module
                scores["ash"] = (energy_score(ash_logits(mod, data.x, p.ash_percentile), p.temperature),
                                 energy_score(ash_logits(mod, x_ood, p.ash_percentile), p.temperature))
            elif p.detectors or GRADIENTS in t.capabilities:  # said when asked for, or when the model looks able
                warnings.append(f"ASH not run: {why}; the other detectors ran (choose them with "
                                "--param reliability.ood.detectors=msp,energy)")
        if not scores:
            raise InputError(f"none of the detectors {wanted} can run on this model; use detectors=msp")
        metrics, evidence = [], []
        # per input (the test inputs, then the OOD inputs: the same for every model at one seed), so two
        # models' AUROCs are compared input by input (paired bootstrap)
        rows_out = Outcomes()
        in_dist = rows_out.bits("in_distribution", "selected", np.r_[np.ones(len(id_logits), bool), np.zeros(len(x_ood), bool)])
        for name, (a, b) in scores.items():
            a, b = a.numpy(), b.numpy()
            terms = DetectionTerms(a, b)
            pt, ci = terms.point(p.tpr), terms.bootstrap(p.tpr, p.n_boot, p.level, ctx.seed)
            metrics += [
                Metric.labelled("auroc", {"detector": name}, pt["auroc"], *ci["auroc"], higher_is_better=True, level=p.level,
                       method="bootstrap (ID and OOD resampled separately)", description=f"ID vs OOD separability of the {name} score"),
                Metric.labelled(*(("fpr_at_95tpr", {"detector": name}) if p.tpr == 0.95
                                  else ("fpr_at_tpr", {"detector": name, "tpr": p.tpr})),
                                pt["fpr_at_tpr"], *ci["fpr_at_tpr"], higher_is_better=False,
                                level=p.level, method="bootstrap",
                       description=f"OOD inputs accepted when {p.tpr:.0%} of ID inputs are", keyed={"tpr": "g"}),
            ]
            rows_out.recipe(metrics[-2], oc.auc(rows_out.floats(f"score[{name}]", "score", np.r_[a, b]), in_dist))
            edges = np.histogram_bin_edges(np.concatenate([a, b]), bins=p.bins)
            evidence.append(Evidence("histogram", f"{name} score: in-distribution vs OOD", {
                "xlabel": f"{name} score (higher = more in-distribution)",
                "series": [{"name": "in-distribution", "edges": edges.tolist(), "counts": np.histogram(a, edges)[0].tolist()},
                           {"name": "OOD", "edges": edges.tolist(), "counts": np.histogram(b, edges)[0].tolist()}],
            }))
        best = max((m for m in metrics if m.base_name == "auroc"), key=lambda m: m.value)
        summary = f"best detector {best.name} = {best.value:.3f} [{best.low:.3f}, {best.high:.3f}] on {len(x_ood)} OOD inputs ({source})"
        return self.finding(metrics=metrics, evidence=evidence, summary=summary, warnings=warnings,
                            accounting={"queries": t.queries, "ood_source": source, "n_ood": len(x_ood)},
                            outcomes=rows_out.to_dict())


def _text_ood(data, shift: str, seed: int):
    """A text model's OOD set: the dataset's own (--ood), else a text analogue of ``shift``
    (:func:`assay.data.text.shifted_texts`: words permuted, letters noised, or random-word text)."""
    from assay.data.text import shifted_texts

    if data.x_ood is not None:
        return data.x_ood, "dataset x_ood"
    return shifted_texts(data.x, shift, seed=seed), f"built-in text shift '{shift}' of the test texts"
