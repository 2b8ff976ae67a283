"""Verifiable guarantees: certification by randomized smoothing, auditing a differential-privacy claim."""
