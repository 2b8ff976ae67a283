"""Audit metrics shared by probes: group (fairness) metrics, slices, calibration, selective
prediction and out-of-distribution detection, each with vectorised resampling intervals."""
