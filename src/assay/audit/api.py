"""``assay.audit(...)``: the Python API, mirroring ``assay audit``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from assay.audit.plan import apply_params, load_policy, load_suite, plan_from_names
from assay.audit.runner import Runner
from assay.data.dataset import Dataset
from assay.errors import InputError
from assay.targets.base import Target


def as_target(model: Any, data: Dataset | None = None, **target_options: Any) -> Target:
    """A Target from a Target, an nn.Module, a scikit-learn estimator, a model file or a URL."""
    if isinstance(model, Target):
        return model
    input_shape = target_options.pop("input_shape", None)
    if input_shape is None and data is not None and hasattr(data, "x"):  # text data has no input tensor
        input_shape = tuple(data.x.shape[1:])
    try:
        import torch

        if isinstance(model, torch.nn.Module):
            from assay.targets.torch import TorchTarget

            if input_shape is None:
                raise InputError("give input_shape for a torch model (or data to infer it from)")
            opts = {k: v for k, v in target_options.items()
                    if k in ("num_classes", "bounds", "mean", "std", "device", "query_budget", "batch_size", "name")}
            return TorchTarget(model, input_shape=input_shape, **opts)
    except ImportError:  # pragma: no cover
        pass
    if hasattr(model, "predict") and not isinstance(model, (str, Path)):
        from assay.targets.sklearn import SklearnTarget

        return SklearnTarget(model, input_shape=input_shape, **target_options)
    if isinstance(model, (str, Path)):
        from assay.targets.loading import load_target

        return load_target(str(model), input_shape=input_shape, **target_options)
    raise InputError(f"cannot audit a {type(model).__name__}; give a Target, nn.Module, sklearn estimator or model path")


def as_dataset(data: Any, **loader_options: Any) -> Dataset:
    from assay.data.language import LanguageData, load_language_data

    if isinstance(data, (Dataset, LanguageData)):
        return data
    if isinstance(data, (str, Path)) and str(data).lower().endswith(".jsonl"):
        return load_language_data(data)  # texts for the language probes
    if isinstance(data, tuple) and len(data) in (2, 3):
        return Dataset(data[0], data[1], groups=data[2] if len(data) == 3 else {})
    if isinstance(data, (str, Path)):
        from assay.data.loaders import load_dataset

        return load_dataset(str(data), **loader_options)
    raise InputError(f"cannot use a {type(data).__name__} as data; give a Dataset, (x, y) or a data file path")


def audit(
    model: Any,
    data: Any,
    *,
    suite: str | None = "standard",
    probes: list[str] | None = None,
    params: dict[str, dict[str, Any]] | None = None,
    policy: str | Path | None = None,
    out: str | Path | None = None,
    seed: int = 0,
    executor: str = "local",
    resume: bool = True,
    progress: bool = False,
    log=None,
    **target_options: Any,
):
    """Audit ``model`` on ``data`` and return the :class:`assay.report.schema.AuditReport`.

    ``probes`` (names or axes) overrides ``suite``; ``params`` maps probe name to parameters.
    With ``out``, writes report.json, report.html and junit.xml there and checkpoints, so a rerun
    after an interruption resumes.

    Example
    -------
    >>> import assay
    >>> from assay.data.demo import train_demo_model
    >>> model, s = train_demo_model(seed=0)                         # doctest: +SKIP
    >>> report = assay.audit(model, (s.x_test, s.y_test), probes=["robustness.corruption"])  # doctest: +SKIP
    >>> report.verdict                                               # doctest: +SKIP
    'pass'
    """
    dataset = as_dataset(data)
    target = as_target(model, dataset, **target_options)
    if probes:
        plan = plan_from_names(list(probes), params)
    else:
        plan = apply_params(load_suite(suite or "standard"), params)
    runner = Runner(
        target, dataset, plan, out_dir=out, seed=seed, policy=load_policy(policy),
        policy_source=str(policy) if policy else None, executor=executor, resume=resume,
        progress=progress, log=log,
    )
    report = runner.run()
    if out is not None:
        from assay.report import render_all

        render_all(report, Path(out))
    return report
