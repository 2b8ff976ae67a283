"""Robustness probes."""
