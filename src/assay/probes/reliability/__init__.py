"""Reliability probes."""
