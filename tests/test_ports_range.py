"""Ports where the ephemeral range leaves little or no room.

Real sockets; a real program where it starts.
"""

from __future__ import annotations

import logging
import socket

import anyio
import pytest

from gymnasiarch import Supervisor, _platform
from gymnasiarch._ports import ENOUGH, HANDED_OUT, LOWER, candidate_ports, forget, pick_ports
from test_program_ports import get, web


async def test_a_range_of_every_port_lets_the_kernel_pick_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``ip_local_port_range = 1024 65535``: the program still starts, on the kernel's port."""
    monkeypatch.setattr(_platform, "ephemeral_port_range", lambda: (1024, 65535))
    caplog.set_level(logging.WARNING, "gymnasiarch")
    with anyio.fail_after(30):
        async with Supervisor([web()]) as sup:
            port = (await sup.wait_ready("web"))["http"]
            assert get(port) == 200
            sup.stop()
    (warning,) = [r for r in caplog.records if "leaves no port outside it" in r.getMessage()]
    assert warning.levelno == logging.WARNING
    assert f"the kernel picked {port} for 'http'" in warning.getMessage()


def test_a_range_that_leaves_few_ports_above_it_draws_below_it_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """15000-65000 leaves 535 ports above it: those below it from LOWER up are candidates too."""
    monkeypatch.setattr(_platform, "ephemeral_port_range", lambda: (15000, 65000))
    assert candidate_ports() == [range(LOWER, 15000), range(65001, 65536)]
    # Where even that is too few: every port from 1024 up outside the range.
    monkeypatch.setattr(_platform, "ephemeral_port_range", lambda: (10100, 65500))
    assert candidate_ports() == [range(1024, 10100), range(65501, 65536)]
    # Where the usual floor leaves enough, it is kept to.
    monkeypatch.setattr(_platform, "ephemeral_port_range", lambda: (32768, 60999))
    assert candidate_ports() == [range(20000, 32768), range(61000, 65536)]
    assert sum(len(r) for r in candidate_ports()) >= ENOUGH


def test_a_kept_port_handed_to_another_meanwhile_is_not_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A retired child's port, handed to another child whose program is down: not taken back."""
    monkeypatch.setattr(_platform, "ephemeral_port_range", lambda: (1024, 65533))  # 65534, 65535
    first, second = object(), object()
    try:
        kept = pick_ports({"http": 0}, holder=first)["http"]
        forget([kept])  # the first child is retired (terminate_child)
        # The second is handed that very port; its program is not listening yet.
        assert pick_ports({"http": kept}, holder=second) == {"http": kept}
        # The first starts again (restart_child): the port binds, but it is the second's.
        again = pick_ports({"http": kept}, holder=first)["http"]
        assert again != kept
        assert {again, kept} == {65534, 65535}
    finally:
        forget([65534, 65535])
    assert not {65534, 65535} & HANDED_OUT


def test_a_kept_port_of_the_same_holder_is_kept() -> None:
    """The common restart: the port is still the child's own in HANDED_OUT, and free."""
    holder = object()
    port = pick_ports({"http": 0}, holder=holder)["http"]
    moved = port
    try:
        assert pick_ports({"http": port}, holder=holder) == {"http": port}
        with socket.socket() as other:  # still, a listener there moves it
            other.bind(("127.0.0.1", port))
            other.listen()
            moved = pick_ports({"http": port}, holder=holder)["http"]
        assert moved != port
        assert port not in HANDED_OUT  # given up: it may go to another
    finally:
        forget([port, moved])


async def test_a_range_that_leaves_one_port_gives_the_second_child_the_kernels_pick(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``1024 65534`` leaves only 65535: the first child gets it, the next the kernel's port.

    Before, the second child's pick drew 65535 a hundred times and failed
    ("100 ports tried"): the one candidate was taken, never the kernel's pick.
    """
    monkeypatch.setattr(_platform, "ephemeral_port_range", lambda: (1024, 65534))
    caplog.set_level(logging.WARNING, "gymnasiarch")
    with anyio.fail_after(30):
        async with Supervisor([web("one"), web("two")]) as sup:
            one = (await sup.wait_ready("one"))["http"]
            two = (await sup.wait_ready("two"))["http"]
            assert (get(one), get(two)) == (200, 200)
            sup.stop()
    assert one == 65535
    (warning,) = [r for r in caplog.records if "leaves no free port (of 1)" in r.getMessage()]
    assert f"the kernel picked {two} for 'http'" in warning.getMessage()
    assert 1024 <= two <= 65534
