"""assay: red-team and audit the trustworthiness of machine-learning models."""

__version__ = "0.1.0"


def audit(*args, **kwargs):
    """Run an audit; see :func:`assay.audit.api.audit`."""
    from assay.audit.api import audit as _audit

    return _audit(*args, **kwargs)
