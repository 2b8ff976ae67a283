"""Orchestration: plans, the runner, checkpoints, executors, and ``assay.audit(...)``.

The package itself is callable, so ``assay.audit(model, data, ...)`` works as the Python API while
``assay.audit.runner`` etc. stay importable (a plain function in ``assay/__init__`` would be shadowed
by this subpackage as soon as it is imported).
"""

import sys
import types


class _CallablePackage(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from assay.audit.api import audit

        return audit(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
