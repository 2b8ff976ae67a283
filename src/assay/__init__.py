"""assay: red-team and audit the trustworthiness of machine-learning models.

``assay.audit(model, data, ...)`` runs an audit (see :func:`assay.audit.api.audit`).
"""

__version__ = "0.1.0"

from assay import audit  # noqa: E402  (a callable package: assay.audit(...) is the Python API)

__all__ = ["__version__", "audit"]
