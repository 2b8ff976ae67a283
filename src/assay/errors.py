"""User-facing errors.

Every error a user can cause is an :class:`AssayError` whose message is one line that names the
problem and the fix. The CLI prints that line and exits non-zero, never a traceback.
"""

from __future__ import annotations


class AssayError(Exception):
    """Base class for errors caused by input, configuration or the environment (not by a bug)."""

    exit_code = 2


class InputError(AssayError, ValueError):
    """Bad user input: a missing file, a wrong shape, out-of-range values, an unknown name."""


class TargetError(AssayError):
    """The model under test could not be loaded or queried (unreachable URL, bad response)."""


class NotApplicable(AssayError):
    """A probe cannot answer its question for this model or data (two classes for a test that
    compares classes, too few members). The audit reports the probe as skipped with this reason."""


class BudgetExceeded(AssayError):
    """A query would exceed the target's hard query budget. Nothing was sent."""

    exit_code = 3


class UnsafeModelFile(AssayError):
    """A model file would need unpickling, which can run arbitrary code."""


class PolicyFailed(AssayError):
    """The audit ran, but at least one finding failed the policy (exit code for CI gates)."""

    exit_code = 1
