"""Certify probes."""
