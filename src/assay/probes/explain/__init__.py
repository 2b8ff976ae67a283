"""Explain probes."""
