"""The supervisor's decisions carried out against a scripted backend: no process, no fork.

:class:`~gymnasiarch._backends.fake.FakeBackend` plays each run from a
script and logs what the supervisor asked for, so these tests pin down
the order of stops and starts exactly, in milliseconds. What only real
processes can show (signals, output, orphans, zombies) is tested end to
end in ``test_supervisor.py`` and its neighbours.
"""

from __future__ import annotations

import anyio
import pytest

from gymnasiarch import ChildSpec, ExitStatus, Supervisor
from gymnasiarch._backends.fake import FakeBackend, Script
from gymnasiarch.exceptions import InitializationFailedError, PrematureTaskDeathError


def _spec(name: str, **options: object) -> ChildSpec:
    # The fake backend never imports a target: any dotted path will do.
    return ChildSpec(name, f"fake.targets:{name}", **options)  # type: ignore[arg-type]


def _after(log: list[tuple[str, str]], entry: tuple[str, str]) -> list[tuple[str, str]]:
    """What was logged after the first *entry*."""
    return log[log.index(entry) + 1 :]


async def test_a_crashed_child_is_restarted_and_its_sibling_left_running() -> None:
    """one_for_one: the crashed child gets a new run; its sibling is neither stopped nor started."""
    backend = FakeBackend()
    sup = Supervisor([_spec("worker"), _spec("other")], backend=backend, handle_signals=False)
    with anyio.fail_after(5):
        async with sup:
            first = await backend.wait_started("worker")
            await backend.wait_started("other")
            first.end(ExitStatus(3, None))  # a crash, from outside the script
            await backend.wait_started("worker", 2)
            assert _after(backend.log, ("exited", "worker")) == [("start", "worker")]
            assert [(c.name, c.restarts) for c in sup.which_children()] == [
                ("worker", 1),
                ("other", 0),
            ]
            assert first.status == ExitStatus(3, None)
            sup.stop()
    assert backend.log.count(("start", "other")) == 1


async def test_one_for_all_stops_the_others_in_reverse_start_order_then_starts_all() -> None:
    """one_for_all: a crash stops the others, last started first, then starts all in order."""
    backend = FakeBackend({"c": [Script.crash(), Script()]})
    sup = Supervisor(
        [_spec("a"), _spec("b"), _spec("c")],
        strategy="one_for_all",
        backend=backend,
        handle_signals=False,
    )
    with anyio.fail_after(5):
        async with sup:
            await backend.wait_started("c", 2)
            after_crash = _after(backend.log, ("exited", "c"))
            assert [e for e in after_crash if e[0] in ("terminate", "kill", "start")] == [
                ("terminate", "b"),
                ("terminate", "a"),
                ("start", "a"),
                ("start", "b"),
                ("start", "c"),
            ]
            sup.stop()
    # The final shutdown goes in reverse start order too.
    last_start = len(backend.log) - backend.log[::-1].index(("start", "c"))
    assert [e for e in backend.log[last_start:] if e[0] == "terminate"] == [
        ("terminate", "c"),
        ("terminate", "b"),
        ("terminate", "a"),
    ]


async def test_crashes_past_the_restart_intensity_give_up_with_premature_task_death() -> None:
    """max_restarts=2: the third crash within max_seconds ends the tree with the child's error."""
    backend = FakeBackend({"worker": [Script.raises(ValueError("bad input"))]})
    sup = Supervisor(
        [_spec("worker"), _spec("bystander")],
        max_restarts=2,
        max_seconds=60,
        backend=backend,
        handle_signals=False,
    )
    with anyio.fail_after(5), pytest.raises(PrematureTaskDeathError) as caught:
        await sup.run()
    assert caught.value.child == "worker"
    assert isinstance(caught.value.__cause__, ValueError)
    assert backend.log.count(("start", "worker")) == 3  # the first run and two restarts
    assert ("terminate", "bystander") in backend.log  # the tree was shut down in order
    assert backend.calls("prepare", "aclose") == [("prepare", ""), ("aclose", "")]


async def test_a_run_that_never_becomes_ready_fails_the_start_and_is_stopped() -> None:
    """No ready() within ready_timeout: InitializationFailedError; later siblings never start.

    The run is stopped as any stop does it (terminate, then its grace), not killed at once.
    """
    backend = FakeBackend({"slow": [Script(ready=False)]})
    sup = Supervisor(
        [_spec("first"), _spec("slow", ready_timeout=0.05), _spec("later")],
        backend=backend,
        handle_signals=False,
    )
    with anyio.fail_after(5), pytest.raises(InitializationFailedError, match="ready_timeout"):
        await sup.run()
    assert backend.log.index(("terminate", "slow")) < backend.log.index(("exited", "slow"))
    assert ("kill", "slow") not in backend.log  # it went on its stop signal
    assert ("start", "later") not in backend.log
    assert ("terminate", "first") in backend.log  # what had started is stopped


async def test_a_run_that_ignores_terminate_is_killed_after_its_shutdown_grace() -> None:
    """Stopping the tree: terminate, the child's shutdown grace, then kill; the tree still ends."""
    backend = FakeBackend({"stubborn": [Script(stubborn=True)]})
    sup = Supervisor(
        [_spec("stubborn", shutdown=0.05), _spec("polite")], backend=backend, handle_signals=False
    )
    with anyio.fail_after(5):
        async with sup:
            await backend.wait_started("polite")
            sup.stop()
    assert backend.calls("terminate", "kill", "exited") == [
        ("terminate", "polite"),
        ("exited", "polite"),
        ("terminate", "stubborn"),
        ("kill", "stubborn"),
        ("exited", "stubborn"),
    ]
