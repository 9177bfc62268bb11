"""A module that ends the process importing it, unless its application set itself up."""

from __future__ import annotations

import os

from targets import needs_setup_state

if not needs_setup_state.configured:
    os._exit(3)  # as a native crash would: no exception to catch


def run() -> None:
    """Never reached in a child: the child ends importing the module."""
