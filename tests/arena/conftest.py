"""Arena fixtures. The helpers live in arena_helpers.py, a plain module, so that test modules (and
the worker processes some tests spawn) import them by a name that cannot collide with tests/conftest.py."""

from arena_helpers import arena_app, challenge_dir, postgres_server  # noqa: F401  (fixtures)
