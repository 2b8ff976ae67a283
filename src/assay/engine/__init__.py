"""The audit engine: plans (suites, policies), the runner, its checkpoints and progress, and the
Python API that :func:`assay.audit` calls."""
