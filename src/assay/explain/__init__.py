"""Explainability algorithms: attributions and the checks that say whether to trust them."""
