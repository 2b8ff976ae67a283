"""Integrity: detecting backdoors (Neural Cleanse trigger reverse-engineering)."""
