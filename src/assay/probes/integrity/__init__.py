"""Integrity probes."""
