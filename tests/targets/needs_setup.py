"""A module that imports only after its application's setup (a fresh import elsewhere fails)."""

from __future__ import annotations

from targets import needs_setup_state

if not needs_setup_state.configured:
    raise RuntimeError("configure the application before importing targets.needs_setup")


def run() -> None:
    """Never reached in a child: the module does not import there."""
