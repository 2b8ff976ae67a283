"""Fairness probes."""
