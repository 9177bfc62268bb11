"""A module that takes 0.3 s to import, as one with heavy dependencies does."""

from __future__ import annotations

import time

time.sleep(0.3)


def hello() -> str:
    return "hello"
