"""A module that takes long to import: a child is still in its bootstrap meanwhile.

For test_child_bootstrap's SIGTERM-during-the-bootstrap test alone:
importing it writes to the FIFO named by ``GYMNASIARCH_TEST_SLOW_IMPORT``
(so the test knows, without polling, that the child is importing), then
sleeps 30 s. Never imported by the fork server.
"""

from __future__ import annotations

import os
import time


def _announce_and_linger() -> None:
    fifo = os.environ["GYMNASIARCH_TEST_SLOW_IMPORT"]
    with open(fifo, "wb") as pipe:
        pipe.write(b"importing")
    time.sleep(30)


_announce_and_linger()


def never_reached() -> None:
    """The target: the import is stopped before it runs."""
