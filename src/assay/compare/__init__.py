"""Trust regression: compare two models (or two finished audits) with paired statistics.

``assay.compare(baseline, candidate, data)`` audits both models with the same probes, seed and
inputs and returns a :class:`Comparison`; :func:`compare_reports` compares two finished audits.
See docs/compare.md.
"""

from assay.compare.diff import MetricDelta, Settings, compare_reports, input_mismatches
from assay.compare.report import Comparison
from assay.compare.run import compare, compare_each

__all__ = ["Comparison", "MetricDelta", "Settings", "compare", "compare_each", "compare_reports", "input_mismatches"]
