"""assay: red-team and audit the trustworthiness of machine-learning models.

``assay.audit(model, data, ...)`` runs an audit (see :func:`assay.engine.api.audit`).
"""

from assay.version import __version__


def audit(model, data, **kwargs):
    """Audit ``model`` on ``data``; the Python API of ``assay audit`` (see :func:`assay.engine.api.audit`
    for the arguments). Returns the :class:`~assay.report.schema.AuditReport`."""
    from assay.engine.api import audit as run

    return run(model, data, **kwargs)


__all__ = ["__version__", "audit"]
