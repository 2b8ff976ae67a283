"""The Runner: runs a plan of probes against one target and data set, and keeps what they found.

It validates the data against the target first, shares one cache of clean predictions across
probes, checkpoints after every unit of work and every finished probe (an audit killed at any
point resumes without redoing finished work), records accounting, applies the policy, and hands
independent work to the executor the probes ask for.
"""

from __future__ import annotations

import hashlib
import json
import time
import traceback
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from assay.data.dataset import Dataset, validate
from assay.engine.checkpoint import Checkpoint
from assay.engine.context import CleanCache, ProbeContext, seeded
from assay.engine.plan import Plan, Policy, rules_for, unmatched_rules
from assay.engine.progress import make_progress
from assay.errors import AssayError, BudgetExceeded, InputError, NotApplicable
from assay.findings import Finding, Threshold, outside_interval
from assay.parallel import Executor, make_executor
from assay.targets.base import Target
from assay.version import __version__, versions

CHECKPOINT_DIRNAME = ".assay-checkpoint"


class BudgetLedger:
    """The spent query budget, kept in the checkpoint so that an audit killed and resumed continues
    from what was really spent (and a probe interrupted mid-way keeps the share it had)."""

    def __init__(self, checkpoint: Checkpoint, name: str, target: Target):
        self.checkpoint, self.name, self.target = checkpoint, name, target
        self.state: dict[str, Any] = checkpoint.get_json(name) or {"used": 0, "spent": {}, "share": None}

    def write(self, used: int | None = None) -> None:
        """Record what the target's budgets have spent (queries, and tokens for language models)."""
        self.state["spent"] = self.target.spent()
        self.state["used"] = int(self.state["spent"]["queries"])
        self.checkpoint.put_json(self.name, self.state)

    def set_share(self, share: dict[str, Any] | None, used: int) -> None:
        self.state["share"] = share
        self.write(used)


def water_fill(wants: dict[str, int], available: int) -> dict[str, int]:
    """Split ``available`` queries over probes that each want ``wants[p]``: a probe that wants less
    than an equal share gets what it wants, the rest is shared equally by the others.

    >>> water_fill({"a": 10, "b": 1000, "c": 1000}, 610)
    {'a': 10, 'b': 300, 'c': 300}
    """
    out = {k: 0 for k in wants}
    left = max(0, int(available))
    todo = sorted((w, k) for k, w in wants.items() if w > 0)
    while todo:
        share = left // len(todo)
        w, k = todo[0]
        if w <= share:
            out[k], left = w, left - w
            todo.pop(0)
            continue
        for _, k in todo:
            out[k] = share
        break
    return out


class Runner:
    def __init__(
        self,
        target: Target,
        data: Dataset,
        plan: Plan,
        *,
        out_dir: str | Path | None = None,
        seed: int = 0,
        policy: dict[str, dict[str, Threshold]] | None = None,
        policy_source: str | None = None,
        executor: str | Executor = "local",
        resume: bool = True,
        progress: bool | str | Callable[[str, int, int], None] = False,
        log: Callable[[str], None] | None = None,
        debug: bool = False,
        budget_split: dict[str, int] | None = None,
        workdir: str | Path | None = None,
    ):
        self.target, self.data, self.plan = target, data, plan
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.seed = seed
        self.policy = policy if policy is not None else Policy()
        self.policy_source = policy_source or "default"
        self.executor = make_executor(executor)
        # an executor handed in (e.g. shared by the two audits of a comparison) belongs to the caller
        self._owns_executor = not isinstance(executor, Executor)
        # reusable artefacts (reference models): beside the report, or where the caller shares them
        self.workdir = Path(workdir) if workdir is not None else (
            self.out_dir / ".assay-cache" if self.out_dir is not None else None)
        self.resume = resume
        self.log = log or (lambda m: None)
        self.debug = debug
        self.budget_split = dict(budget_split or {})
        self._progress = make_progress(progress, queries=lambda: self.target.queries)
        ckpt_root = None
        if self.out_dir is not None:
            if self.out_dir.exists() and not self.out_dir.is_dir():
                raise InputError(f"--out {self.out_dir} is a file; give a directory for the report (it is created "
                                 "if missing)")
            ckpt_root = self.out_dir / CHECKPOINT_DIRNAME
            if not resume and ckpt_root.exists():
                import shutil

                shutil.rmtree(ckpt_root)
        self.checkpoint = Checkpoint(ckpt_root)

    def fingerprint(self) -> str:
        """The audit's identity: the model's bytes and code, the data's bytes, the seed and the assay
        version (a probe's parameters key its own entries). Nothing is reused across a change in any."""
        h = hashlib.sha256()
        for part in (self.target.fingerprint(), self.data.fingerprint(), str(self.seed), __version__):
            h.update(part.encode() + b"|")
        return h.hexdigest()[:16]

    def _check_policy_names(self, f: Finding) -> None:
        """A policy rule naming no metric of its probe (a typo) makes the finding an error: a CI gate
        must not pass because its rule silently matched nothing."""
        if f.verdict in ("error", "skipped"):
            return
        unmatched = unmatched_rules(self.policy.get(f.probe, {}), f.metrics)
        if unmatched:
            f.error = (f"policy rule(s) {', '.join(unmatched)} for {f.probe} match no metric it reports; "
                       f"its metrics: {', '.join(sorted({m.base_name for m in f.metrics}))}")
            f.summary = f"Error: {f.error}"
            f.verdict = "error"

    def _rows_for(self, probe) -> tuple[torch.Tensor | None, str | None]:
        """The rows a probe sees, or why it cannot run. With a membership column, only probes that
        study membership see the training members: every other figure (accuracy, robustness,
        calibration, fairness) describes the model on data it was not trained on."""
        if getattr(self.data, "member", None) is None or "members" in probe.needs or not isinstance(self.data, Dataset):
            return None, None
        rows = (~self.data.member).nonzero().flatten()
        if len(rows) == 0:
            return None, "every row is marked a training member; give held-out rows too (member = 0)"
        return rows, None

    def run(self):
        from assay.report.schema import AuditReport

        tensor_data = isinstance(self.data, Dataset)  # language audits read texts (assay.data.language)
        if tensor_data:
            validate(self.data, self.target)
        started = time.time()
        ns = self.fingerprint()
        target = self.target
        ledger = BudgetLedger(self.checkpoint, f"{ns}.budget.json", target)
        if self.resume:
            target.restore_spent(ledger.state.get("spent") or {"queries": ledger.state["used"]})  # earlier runs
        if self.checkpoint.root is not None:
            target.attach_store(self.checkpoint.root / "answers")
        if target.remote and self.checkpoint.root is not None:
            for budget in target.budgets().values():
                budget.on_charge = ledger.write  # written before each request goes out
        spent_before = target.budget.used
        clean = CleanCache(target, self.data, self.checkpoint, ns + "/clean", self.seed)
        probes = [planned.probe for planned in self.plan.probes]  # built once, when the plan was validated
        keys = [f"{p.name}-" + hashlib.sha256(json.dumps(pp.params, sort_keys=True, default=str).encode()).hexdigest()[:10]
                for pp, p in zip(self.plan.probes, probes)]
        unknown = sorted(set(self.budget_split) - {p.name for p in probes})
        if unknown:
            raise InputError(f"--budget-split names probe(s) {unknown} that this audit does not run; "
                             f"it runs {', '.join(p.name for p in probes)}")
        try:
            # The clean forward pass, shared by every probe, runs first: an unreachable model, a budget
            # too small for it, or a broken model fails the audit here, before any probe starts.
            if tensor_data and any(p.requires or p.requires_any for p in probes):
                clean.labels()
            findings = self._run_probes(probes, keys, ns, clean, ledger)
        finally:
            for budget in target.budgets().values():
                budget.on_charge = None
            ledger.write()
            close = getattr(self._progress, "close", None)
            if close is not None:
                close()
            if self._owns_executor:
                self.executor.close()
        gate = self._gate(findings)
        report = AuditReport(
            schema_version=AuditReport.__dataclass_fields__["schema_version"].default,
            assay_version=__version__,
            run_id=uuid.uuid4().hex[:12],
            created_at=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            seed=self.seed,
            suite=self.plan.name,
            target=target.describe(),
            data=self.data.describe(),
            findings=findings,
            accounting={
                "wall_time_s": round(time.time() - started, 3),
                "queries": target.queries,
                "queries_this_run": target.queries - spent_before,
                "queries_earlier_runs": spent_before,
                "versions": versions(),
                "resumed_units": sum(f.accounting.get("units_resumed", 0) for f in findings),
                "resumed_findings": sum(1 for f in findings if f.accounting.get("resumed")),
                "audit_fingerprint": ns,
                # what the audit's inputs were, so two reports can be compared pair by pair (assay compare)
                "data_fingerprint": self.data.fingerprint(),
                "target_fingerprint": target.fingerprint(),
                "executor": self.executor.name,
                **({"budget_split": self._split_record} if self._split_record else {}),
            },
            policy={
                "source": self.policy_source,
                "rules": {k: {m: ([vars(r) for r in t] if isinstance(t, list) else vars(t)) for m, t in v.items()}
                          for k, v in self.policy.items()},
                "optional": sorted(getattr(self.policy, "optional", ())),
                "gate": gate,
            },
        )
        report.compute_summary()
        if not gate["passed"] and report.verdict not in ("error",):
            report.verdict = "fail"
        return report

    # ----------------------------------------------------------------- probes
    def _run_probes(self, probes, keys, ns, clean, ledger) -> list[Finding]:
        target, n_total = self.target, len(probes)
        findings: dict[int, Finding] = {}
        facts: dict[str, Any] = {}
        self._split_record: dict[str, dict[str, Any]] = {}
        # probes that tell others about the model (gradient masking) run first; the report keeps
        # the plan's order
        order = sorted(range(n_total), key=lambda i: probes[i].order)
        pending: dict[int, str | None] = {}
        for i in order:
            done = self.checkpoint.get_json(f"{ns}-{keys[i]}.finding.json")
            if done is not None:
                f = Finding.from_dict(done)
                f.accounting["resumed"] = True
                facts.update(f.accounting.get("facts") or {})
                findings[i] = f
                continue
            why = probes[i].check(target, self.data)
            if why is None:
                why = self._rows_for(probes[i])[1]
            pending[i] = why
        for i in order:
            probe, key = probes[i], keys[i]
            rules = rules_for(probe, self.policy)
            tag = f"[{i + 1}/{n_total}] {probe.name}"
            if i in findings:
                f = findings[i]
                f.apply_policy(rules)
                self._check_policy_names(f)
                self._record_split(probe.name, f)
                self.log(f"{tag}: resumed from checkpoint")
                continue
            why = pending[i]
            if why is not None:
                findings[i] = probe.finding(verdict="skipped", summary=f"Skipped: {why}.")
                self.log(f"{tag}: skipped ({why})")
                continue
            allowance = self._allowance(i, probes, pending, ledger, key)
            self.log(f"{tag}: running" + (f" (query share {allowance:,})" if allowance is not None else ""))
            if hasattr(self._progress, "phase"):
                self._progress.phase(probe.name)
            rows, _ = self._rows_for(probe)
            ctx = ProbeContext(
                target, self.data, seed=self.seed, probe_name=key, namespace=ns,
                checkpoint=self.checkpoint, clean=clean, executor=self.executor,
                workdir=self.workdir,
                progress=self._progress, log=self.log, rows=rows, facts=facts, display_name=probe.name,
            )
            q0, t0 = target.queries, time.time()
            try:
                with target.budget.share(allowance, probe.name), seeded(self.seed, key):
                    f = probe.run(ctx)
            except NotApplicable as e:
                f = probe.finding(verdict="skipped", summary=f"Skipped: {e}.")
            except BudgetExceeded as e:
                f = probe.finding(error=str(e), summary=f"Stopped: {e}")
            except AssayError as e:
                f = probe.finding(error=str(e), summary=f"Error: {e}")
            except Exception as e:  # a bug in a probe must not lose the other findings
                if self.debug:
                    raise
                f = probe.finding(error=f"{type(e).__name__}: {e}", summary="Internal error in probe.")
                f.accounting["traceback"] = traceback.format_exc(limit=8)
            finally:
                ledger.set_share(None, target.budget.used)
            f.accounting.update(
                queries=target.queries - q0 + ctx.resumed_queries,
                wall_time_s=round(time.time() - t0, 3),
                seed=self.seed,
                units_run=ctx.units_run,
                units_resumed=ctx.units_resumed,
            )
            if allowance is not None:
                f.accounting["query_share"] = allowance
            if rows is not None:
                f.accounting["rows"] = f"{len(rows)} non-member rows of {len(self.data)} (training members excluded)"
            if ctx.sampling is not None:
                f.accounting["sample"] = ctx.sampling
            if ctx.new_facts:
                f.accounting["facts"] = dict(ctx.new_facts)
            f.warnings += _intervals_missing_their_estimate(f)
            f.apply_policy(rules)
            findings[i] = f
            if f.error is None:
                self.checkpoint.put_json(f"{ns}-{key}.finding.json", f.to_dict())
            self._check_policy_names(f)  # after the checkpoint: fixing the policy must not rerun the probe
            self._record_split(probe.name, f)
            self.log(f"    -> {f.verdict}: {f.summary}")
        return [findings[i] for i in range(n_total)]

    def _allowance(self, i: int, probes, pending, ledger: BudgetLedger, key: str) -> int | None:
        """This probe's share of what is left of the target's budget (None: no budget).

        The budget left is water-filled over the probes still to run, by their own cost estimates;
        ``budget_split`` fixes a probe's share. A probe interrupted mid-way gets back the share it had,
        counted from where it started, so a resumed audit spends exactly what an uninterrupted one would."""
        budget = self.target.budget
        if budget.limit is None:
            return None
        share = ledger.state.get("share")
        if share and share.get("probe") == key:
            budget_start, allowance = int(share["start"]), int(share["allowance"])
            # resume: keep the same window, shifted to what the budget object counts now
            allowance = max(0, budget_start + allowance - budget.used)
            ledger.set_share({"probe": key, "start": budget.used, "allowance": allowance}, budget.used)
            return allowance
        left = budget.limit - budget.used
        later = [j for j in sorted(pending, key=lambda j: probes[j].order) if pending[j] is None]
        later = later[later.index(i):]
        fixed = {probes[j].name: int(self.budget_split[probes[j].name]) for j in later if probes[j].name in self.budget_split}
        free = left - sum(fixed.values())
        wants = {}
        for j in later:
            if probes[j].name in fixed:
                continue
            try:
                q = probes[j].cost(self.target, self.data).get("queries", 0)
            except Exception:  # noqa: BLE001 - a cost estimate must never stop the audit
                q = left
            wants[probes[j].name + f"#{j}"] = int(q) if isinstance(q, (int, float)) else left
        filled = water_fill(wants, free)
        name = probes[i].name
        allowance = min(fixed[name], left) if name in fixed else filled.get(f"{name}#{i}", 0)
        ledger.set_share({"probe": key, "start": budget.used, "allowance": allowance}, budget.used)
        return allowance

    def _record_split(self, name: str, f: Finding) -> None:
        if self.target.budget.limit is None:
            return
        self._split_record[name] = {"share": f.accounting.get("query_share"), "used": f.accounting.get("queries", 0),
                                    "fixed": name in self.budget_split}

    def _gate(self, findings: list[Finding]) -> dict[str, Any]:
        """Whether the policy's checks all ran: a rule on a probe that was skipped or errored fails
        the gate unless the policy marks that probe optional; an audit where every probe was skipped
        checked nothing and cannot pass."""
        unmet = []
        optional = getattr(self.policy, "optional", set())
        for f in findings:
            if f.verdict in ("skipped", "error") and self.policy.get(f.probe) and f.probe not in optional:
                unmet.append({"probe": f.probe, "why": f"its policy rules were not checked: {f.summary}"})
        if findings and all(f.verdict == "skipped" for f in findings):
            unmet.append({"probe": "*", "why": "every probe was skipped; nothing was checked"})
        return {"passed": not unmet, "unmet": unmet}


def _intervals_missing_their_estimate(f: Finding) -> list[str]:
    """An interval that does not hold its own point estimate must not pass silently: one warning
    per such metric the probe has not already explained in a warning of its own."""
    said = " ".join(f.warnings)
    return [f"{m.name} = {m.value:.4g} lies outside its own {m.level:.0%} interval [{m.low:.4g}, {m.high:.4g}] "
            f"({m.method or 'no method given'}); do not rely on that interval"
            for m in outside_interval(f.metrics) if m.name not in said]
