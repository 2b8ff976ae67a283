"""The Runner: runs a plan of probes against one target and data set, and keeps what they found.

It validates the data against the target first, shares one cache of clean predictions across
probes, checkpoints after every unit of work and every finished probe (an audit killed at any
point resumes without redoing finished work), records accounting, applies the policy, and hands
independent work to the executor the probes ask for.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
import time
import traceback
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from assay import __version__
from assay.audit.checkpoint import Checkpoint
from assay.audit.context import CleanCache, ProbeContext
from assay.audit.executors import Executor, make_executor
from assay.audit.plan import Plan, rules_for
from assay.data.dataset import Dataset, validate
from assay.errors import AssayError, BudgetExceeded
from assay.probes.base import Finding, Threshold, outside_interval
from assay.targets.base import Target

CHECKPOINT_DIRNAME = ".assay-checkpoint"


def versions() -> dict[str, str]:
    import numpy
    import torch

    return {
        "assay": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
    }


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
        progress: bool | Callable[[str, int, int], None] = False,
        log: Callable[[str], None] | None = None,
        debug: bool = False,
    ):
        self.target, self.data, self.plan = target, data, plan
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.seed = seed
        self.policy = policy or {}
        self.policy_source = policy_source or "default"
        self.executor = make_executor(executor)
        self.resume = resume
        self.log = log or (lambda m: None)
        self.debug = debug
        self._progress = _make_progress(progress)
        ckpt_root = None
        if self.out_dir is not None:
            ckpt_root = self.out_dir / CHECKPOINT_DIRNAME
            if not resume and ckpt_root.exists():
                import shutil

                shutil.rmtree(ckpt_root)
        self.checkpoint = Checkpoint(ckpt_root)

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        h.update(self.target.fingerprint().encode())
        h.update(self.data.fingerprint().encode())
        h.update(str(self.seed).encode())
        return h.hexdigest()[:16]

    def _check_policy_names(self, f: Finding) -> None:
        """A policy rule naming no metric of its probe (a typo) makes the finding an error: a CI gate
        must not pass because its rule silently matched nothing."""
        if f.verdict in ("error", "skipped"):
            return
        names = {m.name for m in f.metrics} | {m.base_name for m in f.metrics}
        unmatched = sorted(k for k in self.policy.get(f.probe, {}) if k not in names)
        if unmatched:
            f.error = (f"policy rule(s) {', '.join(unmatched)} for {f.probe} match no metric it reports; "
                       f"its metrics: {', '.join(sorted({m.base_name for m in f.metrics}))}")
            f.summary = f"Error: {f.error}"
            f.verdict = "error"

    def run(self):
        from assay.report.schema import AuditReport

        tensor_data = isinstance(self.data, Dataset)  # language audits read texts (assay.data.language)
        if tensor_data:
            validate(self.data, self.target)
        started = time.time()
        ns = self.fingerprint()
        clean = CleanCache(self.target, self.data, self.checkpoint, ns + "/clean")
        # The clean forward pass, shared by every probe, runs first: an unreachable model, a budget
        # too small for it, or a broken model fails the audit here, before any probe starts.
        probes = [planned.build() for planned in self.plan.probes]
        if tensor_data and any(p.requires or p.requires_any for p in probes):
            clean.labels()
        findings: list[Finding] = []
        resumed_units = resumed_findings = 0
        for i, (planned, probe) in enumerate(zip(self.plan.probes, probes)):
            key = f"{probe.name}-" + hashlib.sha256(
                json.dumps(planned.params, sort_keys=True, default=str).encode()
            ).hexdigest()[:10]
            rules = rules_for(probe, self.policy)
            done = self.checkpoint.get_json(f"{ns}-{key}.finding.json")
            if done is not None:
                f = Finding.from_dict(done)
                f.accounting["resumed"] = True
                resumed_findings += 1
                f.apply_policy(rules)
                self._check_policy_names(f)
                findings.append(f)
                self.log(f"[{i + 1}/{len(self.plan.probes)}] {probe.name}: resumed from checkpoint")
                continue
            why = probe.check(self.target, self.data)
            if why is not None:
                f = probe.finding(verdict="skipped", summary=f"Skipped: {why}.")
                findings.append(f)
                self.log(f"[{i + 1}/{len(self.plan.probes)}] {probe.name}: skipped ({why})")
                continue
            self.log(f"[{i + 1}/{len(self.plan.probes)}] {probe.name}: running")
            ctx = ProbeContext(
                self.target, self.data, seed=self.seed, probe_name=key, namespace=ns,
                checkpoint=self.checkpoint, clean=clean, executor=self.executor,
                workdir=(self.out_dir / ".assay-cache") if self.out_dir is not None else None,
                progress=self._progress, log=self.log,
            )
            q0, t0 = self.target.queries, time.time()
            try:
                f = probe.run(ctx)
            except BudgetExceeded as e:
                f = probe.finding(error=str(e), summary=f"Stopped: {e}")
            except AssayError as e:
                f = probe.finding(error=str(e), summary=f"Error: {e}")
            except Exception as e:  # a bug in a probe must not lose the other findings
                if self.debug:
                    raise
                f = probe.finding(error=f"{type(e).__name__}: {e}", summary="Internal error in probe.")
                f.accounting["traceback"] = traceback.format_exc(limit=8)
            f.accounting.update(
                queries=self.target.queries - q0,
                wall_time_s=round(time.time() - t0, 3),
                seed=self.seed,
                units_run=ctx.units_run,
                units_resumed=ctx.units_resumed,
            )
            resumed_units += ctx.units_resumed
            f.warnings += _intervals_missing_their_estimate(f)
            f.apply_policy(rules)
            findings.append(f)
            if f.error is None:
                self.checkpoint.put_json(f"{ns}-{key}.finding.json", f.to_dict())
            self._check_policy_names(f)  # after the checkpoint: fixing the policy must not rerun the probe
            self.log(f"    -> {f.verdict}: {f.summary}")
        self.executor.close()
        report = AuditReport(
            schema_version=AuditReport.__dataclass_fields__["schema_version"].default,
            assay_version=__version__,
            run_id=uuid.uuid4().hex[:12],
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
            seed=self.seed,
            suite=self.plan.name,
            target=self.target.describe(),
            data=self.data.describe(),
            findings=findings,
            accounting={
                "wall_time_s": round(time.time() - started, 3),
                "queries": self.target.queries,
                "versions": versions(),
                "resumed_units": resumed_units,
                "resumed_findings": resumed_findings,
                "audit_fingerprint": ns,
                "executor": self.executor.name,
            },
            policy={
                "source": self.policy_source,
                "rules": {k: {m: vars(t) for m, t in v.items()} for k, v in self.policy.items()},
            },
        )
        report.compute_summary()
        return report


def _make_progress(progress):
    if callable(progress):
        return progress
    if not progress:
        return None
    from tqdm import tqdm

    bars: dict[str, Any] = {}

    def update(desc: str, done: int, total: int) -> None:
        bar = bars.get(desc)
        if bar is None:
            bar = bars[desc] = tqdm(total=total, desc=desc, file=sys.stderr, leave=False,
                                    dynamic_ncols=True)
        bar.total = total
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()
            bars.pop(desc, None)

    return update


def _intervals_missing_their_estimate(f: Finding) -> list[str]:
    """An interval that does not hold its own point estimate must not pass silently: one warning
    per such metric the probe has not already explained in a warning of its own."""
    said = " ".join(f.warnings)
    return [f"{m.name} = {m.value:.4g} lies outside its own {m.level:.0%} interval [{m.low:.4g}, {m.high:.4g}] "
            f"({m.method or 'no method given'}); do not rely on that interval"
            for m in outside_interval(f.metrics) if m.name not in said]
