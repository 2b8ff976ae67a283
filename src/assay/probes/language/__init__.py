"""Language probes."""
