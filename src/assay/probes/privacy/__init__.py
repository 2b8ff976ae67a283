"""Privacy probes."""
