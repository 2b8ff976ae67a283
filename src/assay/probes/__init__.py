"""Audit-level tests, one subpackage per trust axis. Importing a module registers its probes."""
from assay.findings import Evidence, Finding, Metric, Threshold
from assay.probes.base import Probe, all_probes, get_probe, register

__all__ = ["Evidence", "Finding", "Metric", "Probe", "Threshold", "all_probes", "get_probe", "register"]
