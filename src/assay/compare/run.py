"""``assay.compare(baseline, candidate, data)``: audit two models alike and compare them."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from assay.compare.diff import Settings, compare_reports
from assay.compare.report import Comparison
from assay.engine.api import as_dataset, as_target
from assay.engine.plan import apply_params, load_policy, load_suite, plan_from_names
from assay.engine.runner import Runner
from assay.errors import InputError
from assay.parallel import Executor, make_executor


def compare(
    baseline: Any,
    candidate: Any,
    data: Any,
    *,
    suite: str | None = None,
    probes: list[str] | None = None,
    params: dict[str, dict[str, Any]] | None = None,
    policy: str | Path | None = None,
    out: str | Path | None = None,
    seed: int = 0,
    executor: str = "local",
    names: tuple[str, str] = ("baseline", "candidate"),
    level: float = 0.95,
    alpha: float = 0.05,
    power: float = 0.8,
    n_boot: int = 2000,
    resume: bool = True,
    log=None,
    data_options: dict[str, Any] | None = None,
    **target_options: Any,
) -> Comparison:
    """Audit ``baseline`` and ``candidate`` on the same ``data`` with the same probes, parameters and
    seed, and compare them metric by metric with paired statistics.

    The two audits share what does not depend on the model: the sampled rows, the noise draws
    (units are seeded by probe and unit, not by model), one executor, and the membership reference
    models (cached in a work directory both audits read). ``policy`` is a delta policy TOML (rules on
    candidate minus baseline, docs/compare.md); without one, the gate fails on any metric that is
    significantly worse. With ``out``, writes ``baseline/`` and ``candidate/`` audit reports and
    comparison.json, comparison.html and junit.xml there.

    Example
    -------
    >>> import copy
    >>> from assay.compare import compare
    >>> from assay.data.demo import train_demo_model
    >>> model, s = train_demo_model(seed=0)                                          # doctest: +SKIP
    >>> c = compare(model, copy.deepcopy(model), (s.x_test, s.y_test),
    ...                   probes=["robustness.corruption"])                         # doctest: +SKIP
    >>> c.gate["passed"], [d.change for d in c.significant()]                       # doctest: +SKIP
    (True, [])
    """
    out_all = compare_each(baseline, {names[1]: candidate}, data, suite=suite, probes=probes, params=params,
                           policy=policy, out=out, seed=seed, executor=executor, baseline_name=names[0],
                           level=level, alpha=alpha, power=power, n_boot=n_boot, resume=resume, log=log,
                           data_options=data_options, nested=False, **target_options)
    return out_all[names[1]]


def compare_each(
    baseline: Any,
    candidates: dict[str, Any],
    data: Any,
    *,
    suite: str | None = None,
    probes: list[str] | None = None,
    params: dict[str, dict[str, Any]] | None = None,
    policy: str | Path | None = None,
    out: str | Path | None = None,
    seed: int = 0,
    executor: str = "local",
    baseline_name: str = "baseline",
    level: float = 0.95,
    alpha: float = 0.05,
    power: float = 0.8,
    n_boot: int = 2000,
    resume: bool = True,
    log=None,
    data_options: dict[str, Any] | None = None,
    nested: bool = True,
    **target_options: Any,
) -> dict[str, Comparison]:
    """:func:`compare` of one baseline with several candidates (``{name: model}``): the baseline is
    audited once. With ``out``, each model's audit goes to ``out/<name>/`` and each comparison to
    ``out/<baseline>-vs-<name>/`` (with ``nested=False``, one comparison's files go to ``out``)."""
    if baseline_name in candidates or not candidates:
        raise InputError(f"give at least one candidate, each named other than the baseline ({baseline_name!r})")
    rules = load_policy(policy, comparison=True) if policy is not None else None
    from assay.data.dataset import align_text_labels
    from assay.targets.loading import is_language_model

    dataset = as_dataset(data, language=is_language_model(baseline), **(data_options or {}))
    models = {baseline_name: baseline, **candidates}
    targets = {name: as_target(m, dataset, **target_options) for name, m in models.items()}
    dataset = align_text_labels(dataset, targets[baseline_name])
    default = "language" if is_language_model(baseline) else "standard"
    plan = plan_from_names(list(probes), params) if probes else apply_params(load_suite(suite or default), params)
    _share_reference_recipe(targets[baseline_name], [targets[n] for n in candidates])
    pool = make_executor(executor)
    scratch = None
    if out is None:
        scratch = tempfile.TemporaryDirectory(prefix="assay-compare-")
        shared = Path(scratch.name)
    else:
        shared = Path(out) / ".assay-cache"
    reports = {}
    try:
        for name, target in targets.items():
            runner = Runner(target, dataset, plan, out_dir=(Path(out) / name) if out is not None else None, seed=seed,
                            executor=pool, resume=resume, workdir=shared,
                            log=(lambda m, name=name: log(f"{name}: {m}")) if log else None)
            reports[name] = runner.run()
    finally:
        if not isinstance(executor, Executor):  # one handed in belongs to the caller
            pool.close()
        if scratch is not None:
            scratch.cleanup()
    settings = Settings(level=level, alpha=alpha, power=power, n_boot=n_boot, seed=seed)
    results = {}
    for name in candidates:
        comparison = compare_reports(reports[baseline_name], reports[name], policy=rules, settings=settings)
        comparison.names = (baseline_name, name)
        if policy is not None:
            comparison.policy_source = str(policy)
        results[name] = comparison
    if out is not None:
        from assay.report import render_all

        for name, report in reports.items():
            render_all(report, Path(out) / name)
        for name, comparison in results.items():
            comparison.write_all(Path(out) / f"{baseline_name}-vs-{name}" if nested else Path(out))
    return results


def _share_reference_recipe(baseline, candidates) -> None:
    """Membership attacks train reference models by the audited model's recipe; a candidate is judged
    by its baseline's (a dynamically quantized copy could not be retrained at all), so with the
    recipe-keyed cache both audits read the same reference models."""
    for t in candidates:
        t.reference_source = baseline


__all__ = ["Comparison", "compare", "compare_each"]
