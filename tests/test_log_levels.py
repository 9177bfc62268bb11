"""Children send exactly the records the parent's logging configuration would handle.

Real children under a ``Supervisor``: the parent's per-logger levels,
handler levels, ``logging.disable``, disabled loggers and ``propagate``
decide what a child sends, also after a change made while it runs. The
oracle is the stdlib itself: a record the parent would pass to a handler is
one that reaches a handler when this process logs it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gymnasiarch.logging
from gymnasiarch import ChildSpec, Supervisor
from gymnasiarch._wire.levels import OFF, Configured, apply_levels, parent_levels
from gymnasiarch.logserver import LogServer

T = "targets.levels"
DEBUG, INFO, WARNING, ERROR, CRITICAL = (
    logging.DEBUG,
    logging.INFO,
    logging.WARNING,
    logging.ERROR,
    logging.CRITICAL,
)
LEVELS = (DEBUG, 15, INFO, WARNING, ERROR, CRITICAL)


@contextmanager
def restored_logging() -> Iterator[None]:
    """Leave every logger, ``logging.disable`` and ``lastResort`` as they were found."""
    root = logging.getLogger()
    manager = root.manager

    def loggers() -> list[tuple[str, logging.Logger]]:
        found = [(name, logger) for name, logger in list(manager.loggerDict.items())]
        return [("", root), *((n, lg) for n, lg in found if isinstance(lg, logging.Logger))]

    before = {
        name: (logger.level, logger.handlers[:], logger.propagate, logger.disabled)
        for name, logger in loggers()
    }
    disable, last_resort = manager.disable, logging.lastResort
    try:
        yield
    finally:
        for name, logger in loggers():
            level, handlers, propagate, disabled = before.get(name, (0, [], True, False))
            logger.setLevel(level)
            logger.handlers[:] = handlers
            logger.propagate, logger.disabled = propagate, disabled
        logging.disable(disable)
        logging.lastResort = last_resort


@pytest.fixture(autouse=True)
def parent_logging() -> Iterator[None]:
    """Each test may configure the parent's logging at will: it is restored after."""
    with restored_logging():
        yield


class Recorder(logging.Handler):
    """Keeps what it handles; sets an event when a record passes *wanted* (loop thread)."""

    def __init__(self, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.records: list[logging.LogRecord] = []
        self._wanted: Callable[[logging.LogRecord], bool] | None = None
        self._arrived: anyio.Event | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        if self._wanted is not None and self._arrived is not None and self._wanted(record):
            self._arrived.set()  # the log server re-injects in the event loop's thread

    async def first(self, wanted: Callable[[logging.LogRecord], bool]) -> logging.LogRecord:
        """The first record that passes *wanted*, once it has arrived."""
        self._wanted, self._arrived = wanted, anyio.Event()
        if not any(wanted(r) for r in self.records):
            await self._arrived.wait()
        return next(r for r in self.records if wanted(r))

    def from_child(self, child: str) -> list[tuple[str, int]]:
        """``(logger name, level)`` as *child* logged them (the message says), in order."""
        arrived = []
        for record in self.records:
            if getattr(record, "child", None) == child and "|" in record.getMessage():
                name, _, level = record.getMessage().rpartition("|")
                arrived.append((name, int(level)))
        return arrived


def pairs_of(names: list[str], levels: tuple[int, ...] = LEVELS) -> list[tuple[str, int]]:
    return [(name, level) for name in names for level in levels]


def parent_name(child: str, name: str) -> str:
    """The parent's logger for a child's record of *name* (gymnasiarch.* is filed apart)."""
    own = f"gymnasiarch.child.{child}"
    if (name == "gymnasiarch" or name.startswith("gymnasiarch.")) and not (
        name == own or name.startswith(own + ".")
    ):
        return own
    return name


def handled_here(child: str, pairs: list[tuple[str, int]]) -> set[tuple[str, int]]:
    """The pairs (as *child* logs them) this process's configuration passes to a handler.

    The stdlib decides.
    Each is logged here, by its parent name, into handlers that only note
    it; the configuration's handlers are swapped for those for the while.
    """
    reached: set[tuple[str, int]] = set()

    class Note(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            reached.add(record.pair)  # type: ignore[attr-defined]

    root = logging.getLogger()
    swapped: list[tuple[logging.Logger, list[logging.Handler]]] = []
    for logger in [root, *list(root.manager.loggerDict.values())]:
        if isinstance(logger, logging.Logger) and logger.handlers:
            swapped.append((logger, logger.handlers[:]))
            logger.handlers[:] = [Note(handler.level) for handler in logger.handlers]
    last_resort = logging.lastResort
    if last_resort is not None:
        logging.lastResort = Note(last_resort.level)
    try:
        for pair in pairs:
            name, level = pair
            logging.getLogger(parent_name(child, name)).log(level, "oracle", extra={"pair": pair})
    finally:
        logging.lastResort = last_resort
        for logger, handlers in swapped:
            logger.handlers[:] = handlers
    return reached


async def run_child(name: str, target: str, *args: Any) -> Any:
    """Run one child to its end under a supervisor; its result."""
    with anyio.fail_after(30):
        results = await Supervisor(
            [ChildSpec(name, f"{T}:{target}", args=args, restart="temporary")]
        ).run()
    return results[name]


# -- the cases ---------------------------------------------------------------


async def test_a_subsystem_turned_up_under_a_quiet_root_is_heard() -> None:
    """Root at WARNING, ``sim`` at INFO with its own handler: the children's sim.* INFO arrive."""
    logging.getLogger().setLevel(WARNING)
    sim = logging.getLogger("sim")
    sim.setLevel(INFO)
    recorder = Recorder()
    sim.addHandler(recorder)
    pairs = pairs_of(["sim", "sim.env", "sim.agent.a1"], (DEBUG, INFO, WARNING))
    pairs += pairs_of(["other"], (DEBUG, INFO))
    sent = await run_child("kid", "log_pairs", pairs)
    expected = [("sim", INFO), ("sim", WARNING), ("sim.env", INFO), ("sim.env", WARNING)]
    expected += [("sim.agent.a1", INFO), ("sim.agent.a1", WARNING)]
    assert recorder.from_child("kid") == expected
    assert sent == expected  # what the parent drops did not go on the wire


async def test_one_logger_at_debug_under_a_root_at_info() -> None:
    """``sim.env`` at DEBUG, the root at INFO: sim.env's DEBUG arrive, sim's and others' do not."""
    root = logging.getLogger()
    root.setLevel(INFO)
    recorder = Recorder()
    root.addHandler(recorder)
    logging.getLogger("sim.env").setLevel(DEBUG)
    names = ["sim", "sim.env", "sim.env.physics", "other"]
    sent = await run_child("kid", "log_pairs", pairs_of(names, (DEBUG, INFO)))
    expected = [("sim", INFO), ("sim.env", DEBUG), ("sim.env", INFO)]
    expected += [("sim.env.physics", DEBUG), ("sim.env.physics", INFO), ("other", INFO)]
    assert recorder.from_child("kid") == expected
    assert sent == expected


async def test_logging_disable_holds_in_the_children() -> None:
    """``logging.disable(INFO)`` in the parent: the children do not even send INFO."""
    root = logging.getLogger()
    root.setLevel(DEBUG)
    recorder = Recorder()
    root.addHandler(recorder)
    logging.disable(INFO)
    sent = await run_child("kid", "log_pairs", pairs_of(["sim", "other"], (DEBUG, INFO, WARNING)))
    assert recorder.from_child("kid") == [("sim", WARNING), ("other", WARNING)]
    assert sent == [("sim", WARNING), ("other", WARNING)]


async def test_handler_levels_disabled_loggers_and_propagation() -> None:
    """A handler at ERROR on a logger at INFO, a disabled logger, propagate=False, no handler."""
    root = logging.getLogger()
    root.handlers[:] = []  # pytest's own would count as handlers
    root.setLevel(DEBUG)
    recorder = Recorder()
    root.addHandler(recorder)
    strict = logging.getLogger("strict")
    strict.setLevel(INFO)
    strict.propagate = False
    strict.addHandler(Recorder(ERROR))
    logging.getLogger("muted").disabled = True  # its descendants are not
    logging.getLogger("alone").propagate = False  # no handler: lastResort, at WARNING
    logging.lastResort = Recorder(WARNING)
    names = ["strict", "strict.part", "muted", "muted.part", "alone", "alone.part"]
    sent = await run_child("kid", "log_pairs", pairs_of(names, (DEBUG, INFO, WARNING, ERROR)))
    expected = {("strict", ERROR), ("strict.part", ERROR)}
    expected |= {("muted.part", level) for level in (DEBUG, INFO, WARNING, ERROR)}
    expected |= {("alone", WARNING), ("alone", ERROR), ("alone.part", WARNING)}
    expected |= {("alone.part", ERROR)}
    assert set(sent) == expected
    assert handled_here("kid", pairs_of(names, (DEBUG, INFO, WARNING, ERROR))) == expected


async def test_a_level_lowered_at_run_time_reaches_the_running_child() -> None:
    """An operator turns ``sim`` up to DEBUG while a child runs: its DEBUG ticks arrive from then.

    Before the change the child sends none of the ticks the parent drops
    (not one reaches its root's handlers); after it, without a restart,
    the next ticks arrive. The child has sent nothing at all before the
    change: it gets the push all the same.
    """
    await _lower_a_level_while_a_child_runs()


def test_a_level_lowered_at_run_time_reaches_the_running_child_under_trio() -> None:
    """The same under trio: the server's push and the child's reader use anyio only."""
    anyio.run(_lower_a_level_while_a_child_runs, backend="trio")


async def _lower_a_level_while_a_child_runs() -> None:
    logging.getLogger().setLevel(WARNING)
    sim = logging.getLogger("sim")
    sim.setLevel(INFO)
    recorder = Recorder()
    sim.addHandler(recorder)
    sup = Supervisor(
        [
            ChildSpec(
                "live",
                f"{T}:tick_until_debug",
                args=("sim.live", 20_000, 5),
                restart="temporary",
                ready_timeout=10,  # "ready" once it has logged its first tick
            )
        ]
    )
    with sup.events() as events, anyio.fail_after(30):
        async with sup:
            async for event in events:
                if event.kind == "ready":
                    break
            assert recorder.records == []
            gymnasiarch.logging.set_level("sim", DEBUG)
            first = await recorder.first(lambda r: r.levelno == DEBUG)
            results = await sup.wait()
    ticks = [r.getMessage() for r in recorder.records if getattr(r, "child", None) == "live"]
    outcome = results["live"]
    assert outcome["before"] >= 1, outcome  # it did log DEBUG before the change
    assert first.getMessage() == f"tick {outcome['before']}"  # the first tick after it
    assert len(ticks) == 5
    assert outcome["sent"] == [("sim.live", DEBUG)] * 5  # none of those before went out


async def test_every_running_log_server_pushes() -> None:
    """update_child_levels() reaches the children of two supervisors, each with its own server."""
    logging.getLogger().setLevel(WARNING)
    recorder = Recorder()
    logging.getLogger("sim").addHandler(recorder)
    options: dict[str, Any] = {
        "args": ("sim.live", 20_000, 2),
        "restart": "temporary",
        "ready_timeout": 10,
    }
    with anyio.fail_after(30):
        # The second supervisor's server is one of our own, on TCP (as a Ray child's).
        async with LogServer("127.0.0.1", 0) as server:
            one = Supervisor([ChildSpec("one", f"{T}:tick_until_debug", **options)])
            two = Supervisor(
                [ChildSpec("two", f"{T}:tick_until_debug", **options)],
                log_server=server,
                handle_signals=False,
            )
            with one.events() as events_one, two.events() as events_two:
                async with one, two:
                    for events in (events_one, events_two):
                        async for event in events:
                            if event.kind == "ready":
                                break
                    logging.getLogger("sim").setLevel(DEBUG)
                    gymnasiarch.logging.update_child_levels()
                    for events in (events_one, events_two):
                        async for event in events:
                            if event.kind == "exited":
                                break
    children = [getattr(r, "child", None) for r in recorder.records]
    assert children.count("one") == 2
    assert children.count("two") == 2


async def test_without_live_levels_a_child_still_follows_the_levels_of_its_start() -> None:
    """A server made with live_levels=False: the levels hold, the child connects when it logs."""
    logging.getLogger().setLevel(WARNING)
    sim = logging.getLogger("sim")
    sim.setLevel(INFO)
    recorder = Recorder()
    sim.addHandler(recorder)
    pairs = pairs_of(["sim.env", "other"], (DEBUG, INFO))
    with anyio.fail_after(30):
        async with LogServer.unix(live_levels=False) as server:
            spec = ChildSpec("kid", f"{T}:log_pairs", args=(pairs,), restart="temporary")
            results = await Supervisor([spec], log_server=server).run()
    assert recorder.from_child("kid") == [("sim.env", INFO)]
    assert results["kid"] == [("sim.env", INFO)]
    with pytest.raises(TypeError, match="live_levels"):
        LogServer.unix(live_levels="no")


# -- the property: what arrives is what the parent would handle ------------------------

CONFIGURED = ["", "sim", "sim.env", "sim.env.deep", "other", "gymnasiarch.child.prop"]
LOGGED = [
    "sim",
    "sim.env",
    "sim.env.deep",
    "sim.env.deep.unknown",
    "sim.agent",
    "other",
    "brand.new",
    "gymnasiarch.inner",
    "gymnasiarch.child.prop.sub",
]
_LEVEL_SETTINGS = st.sampled_from([logging.NOTSET, DEBUG, INFO, WARNING, ERROR])
_LOGGER_SETTINGS = st.fixed_dictionaries(
    {
        "level": _LEVEL_SETTINGS,
        "handler": st.none() | st.sampled_from([logging.NOTSET, DEBUG, INFO, WARNING, ERROR]),
        "propagate": st.booleans(),
        "disabled": st.sampled_from([False, False, False, True]),
    }
)
CONFIGURATIONS = st.fixed_dictionaries(
    {
        "loggers": st.fixed_dictionaries(dict.fromkeys(CONFIGURED, _LOGGER_SETTINGS)),
        "disable": st.sampled_from([logging.NOTSET, logging.NOTSET, DEBUG, INFO]),
        "last_resort": st.booleans(),
    }
)


def configure(configuration: dict[str, Any]) -> Recorder:
    """Configure this process's logging so; one Recorder gets what any of its handlers gets."""
    recorder = Recorder()
    logging.getLogger().handlers[:] = []  # pytest's
    for name, setting in configuration["loggers"].items():
        logger = logging.getLogger(name or None)
        logger.setLevel(setting["level"])
        logger.handlers[:] = []
        if setting["handler"] is not None:
            handler = _Forward(setting["handler"], recorder)
            logger.addHandler(handler)
        logger.propagate = setting["propagate"]
        logger.disabled = setting["disabled"]
    logging.disable(configuration["disable"])
    logging.lastResort = _Forward(WARNING, recorder) if configuration["last_resort"] else None
    return recorder


class _Forward(logging.Handler):
    """A handler at its own level that hands what it gets to one shared recorder."""

    def __init__(self, level: int, recorder: Recorder) -> None:
        super().__init__(level)
        self.recorder = recorder

    def emit(self, record: logging.LogRecord) -> None:
        if record not in self.recorder.records:  # one record may reach several handlers
            self.recorder.emit(record)


def _exact(child: str) -> bool:
    """False where the snapshot falls back to sending everything above one level."""
    return set(parent_levels(child)["levels"]) != {""}


@settings(max_examples=60, deadline=None)
@given(configuration=CONFIGURATIONS)
def test_snapshot_predicts_the_parent_exactly(configuration: dict[str, Any]) -> None:
    """In process, many configurations: the snapshot's verdict is the stdlib's, or sends more."""
    with restored_logging():
        configure(configuration)
        pairs = pairs_of(LOGGED)
        snapshot = parent_levels("prop")
        levels, off = snapshot["levels"], set(snapshot["off"])

        def inherited(name: str) -> int:
            while name not in levels:
                name = name.rpartition(".")[0]
            return int(levels[name])

        predicted = {
            (name, level)
            for name, level in pairs
            if level > snapshot["disable"] and name not in off and level >= inherited(name)
        }
        handled = handled_here("prop", pairs)
        assert handled <= predicted
        if _exact("prop"):
            assert predicted == handled


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(configuration=CONFIGURATIONS)
def test_a_child_sends_what_the_parent_would_handle(configuration: dict[str, Any]) -> None:
    """A random parent configuration, one child logging fixed pairs: arrived == handled here."""
    with restored_logging():
        recorder = configure(configuration)
        pairs = pairs_of(LOGGED)
        expected = handled_here("prop", pairs)
        exact = _exact("prop")
        sent = anyio.run(run_child, "prop", "log_pairs", pairs)
        # Pairs as the child logged them (the parent files gymnasiarch.* apart).
        assert set(recorder.from_child("prop")) == expected
        assert set(sent) >= expected
        if exact:
            assert set(sent) == expected


# -- the snapshot's parts ------------------------------------------------------------


def test_a_disabled_filing_logger_silences_the_childs_gymnasiarch_loggers() -> None:
    """The parent files a child's gymnasiarch.* records under gymnasiarch.child.<name>."""
    logging.getLogger().setLevel(INFO)
    logging.getLogger("gymnasiarch.child.kid").disabled = True
    levels = parent_levels("kid")
    assert levels["levels"]["gymnasiarch"] == OFF
    assert "gymnasiarch.child.kid" in levels["off"]
    assert "gymnasiarch.child.other" not in levels["levels"]


def test_a_malformed_snapshot_changes_nothing() -> None:
    """One clear error naming the part that is wrong; the levels stay as they were."""
    logging.getLogger("sim").setLevel(INFO)
    with pytest.raises(ValueError, match="'levels'"):
        apply_levels({"disable": 0, "levels": {"sim": "DEBUG"}, "off": []})
    with pytest.raises(ValueError, match="'disable'"):
        apply_levels({"levels": {}, "off": []})
    assert logging.getLogger("sim").level == INFO


def test_applying_twice_takes_back_what_the_first_set() -> None:
    """A name the new snapshot no longer has goes back to NOTSET and enabled."""
    configured = Configured(0, {"": WARNING, "sim": DEBUG, "muted": WARNING}, {"muted"})
    apply_levels(configured.for_child("kid"))
    assert logging.getLogger("sim").level == DEBUG
    assert logging.getLogger("muted").disabled
    apply_levels(Configured(0, {"": INFO}, set()).for_child("kid"))
    assert logging.getLogger("sim").level == logging.NOTSET
    assert not logging.getLogger("muted").disabled
    assert logging.getLogger().level == INFO
