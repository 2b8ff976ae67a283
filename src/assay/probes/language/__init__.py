"""Language-model probes: what a generative model leaks (extraction, canaries, membership, PII)."""
