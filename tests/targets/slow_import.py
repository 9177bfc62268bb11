"""A module that takes 1 s to import, as one with heavy dependencies does."""

from __future__ import annotations

import time

time.sleep(1.0)


def hello() -> str:
    return "hello"
