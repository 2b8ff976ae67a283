"""Audit-level tests, one subpackage per trust axis. Importing a module registers its probes."""
from assay.probes.base import Evidence, Finding, Metric, Probe, Threshold, all_probes, get_probe, register

__all__ = ["Evidence", "Finding", "Metric", "Probe", "Threshold", "all_probes", "get_probe", "register"]
