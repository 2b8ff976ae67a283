"""privacy.extraction: can a faithful copy of the model be stolen with a limited number of queries?"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from assay.attacks.extraction import extract, transfer_attack
from assay.errors import InputError, NotApplicable
from assay.findings import Evidence, Metric, Threshold
from assay.probes.base import Probe, register
from assay.stats import clopper_pearson
from assay.targets.base import LABELS, SCORES


@register
class ExtractionProbe(Probe):
    name = "privacy.extraction"
    axis = "privacy"
    title = "Model extraction (surrogate stolen through queries)"
    description = (
        "Trains a surrogate on the target's answers to at most query_budget queries (pool or synthetic inputs, "
        "active selection near the surrogate's decision boundary), then reports its fidelity and accuracy on "
        "held-out data and how often PGD examples crafted on it transfer to the target."
    )
    requires_any = (frozenset({SCORES}), frozenset({LABELS}))
    needs = frozenset()
    default_policy = {"fidelity": Threshold(fail_above=0.95, warn_above=0.8)}

    @dataclass
    class Params:
        query_budget: int = 500  # attacker's queries, extraction and transfer check together
        rounds: int = 4
        strategy: Literal["active", "random"] = "active"
        source: Literal["pool", "uniform", "gaussian", "mixup"] = "pool"
        output: Literal["auto", "scores", "labels"] = "auto"  # what the attacker trains on
        surrogate: Literal["auto", "linear", "mlp", "cnn"] = "auto"
        hidden: int = 64
        epochs: int = 40
        holdout_fraction: float = 0.3
        max_holdout: int = 500
        transfer_norm: Literal["linf", "l2"] = "linf"
        eps_linf: float | None = None  # the transfer check's budget; None: the middle of the evasion grid
        eps_l2: float | None = None
        transfer_samples: int = 100  # 0 skips the transfer check
        transfer_steps: int = 20

    def cost(self, target, data):
        return {"queries": self.params.query_budget + (len(data) if data is not None else 0),
                "note": "the attacker's budget plus the shared clean predictions on the data"}

    def run(self, ctx):
        p = self.params
        target, data = ctx.target, ctx.data
        output = p.output
        if output == "auto":
            output = "scores" if SCORES in target.capabilities else "labels"
        if output not in ("scores", "labels"):
            raise InputError(f"unknown output {p.output!r} for privacy.extraction; use auto, scores or labels")
        if output == "scores" and SCORES not in target.capabilities:
            raise InputError("this target returns labels only; use output=labels")
        if not 0 < p.holdout_fraction < 1:
            raise InputError(f"holdout_fraction must be in (0, 1), got {p.holdout_fraction}")
        n = len(data)
        n_hold = min(int(round(p.holdout_fraction * n)), p.max_holdout)
        if n_hold < 1 or n - n_hold < 1:
            raise NotApplicable(f"{n} samples cannot be split into a query pool and a held-out set; give more data")
        # the evaluation's ground truth: the target's labels on the data (shared, computed once per audit);
        # fetched before the attacker's budget is set so that the budget arithmetic below is exact
        target_labels = ctx.clean_labels()
        perm = torch.randperm(n, generator=ctx.generator(salt=11))
        hold, pool_idx = perm[:n_hold], perm[n_hold:]
        x_hold, t_hold = data.x[hold], target_labels[hold]
        y_hold = data.y[hold] if data.y is not None else None

        budget = int(p.query_budget)
        left = target.budget.remaining
        if left is not None:
            budget = min(budget, left)
        transfer_x = transfer_y = None
        reserve = 0
        if p.transfer_samples > 0:
            truth = y_hold if y_hold is not None else t_hold
            ok = (t_hold == truth).nonzero().flatten()[: p.transfer_samples]
            transfer_x, transfer_y = x_hold[ok], truth[ok]
            reserve = 2 * len(ok)
        extraction_budget = budget - reserve
        if extraction_budget < 2 * (p.rounds + 1):
            # the target's budget (its share of it) is what ran short: the probe cannot run here; else
            # the probe's own query_budget parameter is too small, a mistake to fix
            raise (NotApplicable if budget < int(p.query_budget) else InputError)(
                f"query budget {budget} leaves {extraction_budget} queries for extraction after {reserve} for the "
                f"transfer check, too few for {p.rounds + 1} rounds; raise query_budget, lower rounds or transfer_samples")

        def fidelity(surrogate) -> float:
            with torch.no_grad():
                return float((surrogate(x_hold).argmax(dim=1) == t_hold).float().mean())

        query_fn = target.scores if output == "scores" else target.labels
        res = extract(query_fn, data.x[pool_idx], target.num_classes, query_budget=extraction_budget,
                      output=target.output if output == "scores" else "labels", rounds=p.rounds,
                      strategy=p.strategy, source=p.source, arch=p.surrogate, hidden=p.hidden, epochs=p.epochs,
                      bounds=target.bounds, evaluate=fidelity, seed=ctx.seed)
        surrogate = res.surrogate
        with torch.no_grad():
            s_hold = surrogate(x_hold).argmax(dim=1)
        k_fid = int((s_hold == t_hold).sum())
        fid_iv = clopper_pearson(k_fid, n_hold)
        metrics = [Metric("fidelity", k_fid / n_hold, fid_iv.low, fid_iv.high, higher_is_better=False,
                          method=fid_iv.method,
                          description=f"surrogate agrees with the target on {n_hold} held-out inputs after "
                                      f"{res.queries} queries")]
        if y_hold is not None:
            k_acc = int((s_hold == y_hold).sum())
            acc_iv = clopper_pearson(k_acc, n_hold)
            k_tacc = int((t_hold == y_hold).sum())
            tacc_iv = clopper_pearson(k_tacc, n_hold)
            metrics += [
                Metric("surrogate_accuracy", k_acc / n_hold, acc_iv.low, acc_iv.high, higher_is_better=False,
                       method=acc_iv.method, description="the stolen surrogate's accuracy on held-out labels"),
                Metric("target_accuracy", k_tacc / n_hold, tacc_iv.low, tacc_iv.high, method=tacc_iv.method,
                       description="the target's own accuracy on the same held-out inputs, for reference"),
            ]
        warnings: list[str] = []
        if res.info["budget_exhausted"]:
            warnings.append("the target's query budget ran out during extraction: fidelity is a lower bound")
        transfer_rows = []
        used = res.queries
        if transfer_x is not None and len(transfer_x):
            given = p.eps_linf if p.transfer_norm == "linf" else p.eps_l2
            eps = given if given is not None else _default_transfer_eps(data, target, p.transfer_norm)
            tr = transfer_attack(surrogate, target.labels, transfer_x, transfer_y, eps=eps,
                                 norm=p.transfer_norm, steps=p.transfer_steps, bounds=target.bounds, seed=ctx.seed)
            used += tr.queries
            m = len(transfer_x)
            qual = f"[{p.transfer_norm},eps={eps:.4g}]"
            for name, hits, what in (("transfer_success", tr.fooled, "PGD examples crafted on the surrogate"),
                                     ("noise_success", tr.noise_fooled, "random noise of the same norm (baseline)")):
                iv = clopper_pearson(int(hits.sum()), m)
                metrics.append(Metric(f"{name}{qual}", float(hits.float().mean()), iv.low, iv.high,
                                      higher_is_better=False, method=iv.method,
                                      description=f"{what} that fool the target, on {m} points it gets right"))
                transfer_rows.append([name, f"{int(hits.sum())}/{m}", f"{float(hits.float().mean()):.3f}"])
        metrics.append(Metric("queries_used", float(used), unit="queries"))
        curve = {"xlabel": "queries", "ylabel": "fidelity (agreement with the target)", "logx": False, "logy": False,
                 "series": [{"name": f"{p.strategy} {p.source} ({output})",
                             "x": [h["queries"] for h in res.history], "y": [h["fidelity"] for h in res.history]}]}
        table = {"columns": ["round", "queries", "fidelity"],
                 "rows": [[h["round"], h["queries"], f"{h['fidelity']:.3f}"] for h in res.history]}
        evidence = [Evidence("curve", "Fidelity vs queries", curve), Evidence("table", "Extraction rounds", table)]
        if transfer_rows:
            evidence.append(Evidence("table", "Transfer check", {"columns": ["attack", "fooled", "rate"],
                                                                  "rows": transfer_rows}))
        summary = (f"A surrogate ({p.surrogate}) trained on {output} from {res.queries} {p.strategy}ly selected "
                   f"{p.source} queries agrees with the target on {k_fid / n_hold:.1%} of {n_hold} held-out inputs")
        if transfer_rows:
            summary += (f"; its PGD examples fool the target {transfer_rows[0][2]} of the time vs "
                        f"{transfer_rows[1][2]} for noise of the same norm")
        return self.finding(metrics=metrics, warnings=warnings, evidence=evidence, summary=summary + ".",
                            accounting={"pool": len(pool_idx), "holdout": n_hold, "output": output,
                                        "extraction_queries": res.queries})


def _default_transfer_eps(data, target, norm: str) -> float:
    """The middle of robustness.evasion's data-scaled grid, in input units (the transfer attack runs on
    the inputs themselves: for tabular data, the standardized epsilon times the median feature spread)."""
    from assay.probes.robustness._space import threat_space

    space = threat_space(data, target.bounds)
    eps = space.grid(norm)[1]
    if space.kind == "standardized":
        spread = space.std[space.std > 0]
        eps *= float(spread.median()) if len(spread) else 1.0
    return eps
