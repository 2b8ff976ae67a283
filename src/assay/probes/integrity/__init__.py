"""Integrity probes: backdoors and poisoning."""
