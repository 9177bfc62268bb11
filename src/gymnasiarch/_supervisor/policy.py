"""The restart policy: OTP's rules as pure functions of what the supervisor knows.

The supervisor (the shell) hands over plain values (its children as
:class:`Member` rows, the restart intensity so far, the time, the backoff
delay) and gets back a :class:`Decision`, which it carries out: it stops and
starts runs, publishes events, sleeps, raises. Nothing here reads a clock,
draws a random number, touches a process or awaits anything, so every rule is
a table-driven test without a fork (``tests/test_policy.py``), as OTP keeps
``add_restart/1`` and ``split_child/2`` apart from the processes they govern.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from gymnasiarch._spec import STRATEGIES, Backoff, RestartType, Rng, Strategy, check_choice


@dataclass(frozen=True)
class Member:
    """What the policy knows of one child of a supervisor.

    Attributes:
        name: Its name, unique among its siblings.
        restart: ``"permanent"``, ``"transient"`` or ``"temporary"``.
        significant: Whether its end for good ends the tree.
        running: Whether it has a run now (the child that just exited has not).
        count_normal_exits: Whether its restart after a normal end counts
            toward the restart intensity (False: a one-shot server, whose
            normal end is its work done, not a failure).
    """

    name: str
    restart: RestartType = "permanent"
    significant: bool = False
    running: bool = True
    count_normal_exits: bool = True


@dataclass(frozen=True)
class Intensity:
    """OTP's restart intensity: at most *max_restarts* restarts within *max_seconds*.

    An immutable value: :meth:`admit` asks, :meth:`record` gives the value
    with one more restart in it. *times* holds the restarts still inside the
    window, oldest first (times of a monotonic clock, in seconds).
    """

    max_restarts: int
    max_seconds: float
    times: tuple[float, ...] = ()

    def admit(self, now: float) -> bool:
        """Whether one more restart at *now* stays within the limit."""
        return len(self._recent(now)) < self.max_restarts

    def record(self, now: float) -> Intensity:
        """This intensity with a restart at *now*, and without the ones that left the window."""
        return replace(self, times=(*self._recent(now), now))

    def _recent(self, now: float) -> tuple[float, ...]:
        # A restart exactly max_seconds ago still counts, as it did in OTP's
        # (and our earlier deque's) "older than the window" test.
        return tuple(t for t in self.times if now - t <= self.max_seconds)


@dataclass(frozen=True)
class Forget:
    """The child is not restarted (its restart type says so); its siblings go on."""


@dataclass(frozen=True)
class StopTree:
    """A significant child ended normally and is not restarted: the tree shuts down, no error."""


@dataclass(frozen=True)
class GiveUp:
    """The supervisor gives up on the child: it stops the tree and raises.

    Attributes:
        reason: Why, for the error message and the ``gave_up`` event.
    """

    reason: str


@dataclass(frozen=True)
class Restart:
    """Restart the child, and the siblings its strategy takes along.

    Attributes:
        stop: The running siblings to stop first, in the order to stop them
            (reverse start order).
        retire: Those of *stop* that are not started again (temporary ones).
        start: The children to start, in start order: the exited child and
            the stopped siblings that are not retired.
        delay: Seconds to wait between stopping and starting (the backoff).
        intensity: The restart intensity with this restart recorded: the
            supervisor keeps it for its next decision.
    """

    stop: tuple[str, ...]
    retire: tuple[str, ...]
    start: tuple[str, ...]
    delay: float
    intensity: Intensity


#: What :func:`decide` can answer: a closed set, matched case by case.
Decision = Forget | StopTree | GiveUp | Restart


def restarts(restart: RestartType, *, normal: bool) -> bool:
    """Whether a child of this restart type is restarted after a normal or an abnormal end."""
    return restart == "permanent" or (restart == "transient" and not normal)


def restart_group(strategy: Strategy, members: Sequence[Member], exited: str) -> tuple[str, ...]:
    """The names the *strategy* restarts when *exited* must be restarted, in start order.

    ``one_for_one`` takes the child alone; ``one_for_all`` all running
    siblings; ``rest_for_one`` the running siblings started after it.
    Siblings that are not running stay as they are: unlike OTP, which starts
    them again, a sibling that ended for good (or was stopped with
    ``terminate_child``) stays ended.

    Raises:
        ValueError: *exited* is none of *members*, or *strategy* is unknown.
    """
    check_choice("strategy", strategy, STRATEGIES)
    _find(members, exited)
    names = [m.name for m in members]
    if strategy == "one_for_one":
        return (exited,)
    group = members if strategy == "one_for_all" else members[names.index(exited) :]
    return tuple(m.name for m in group if m.name == exited or m.running)


def decide(
    members: Sequence[Member],
    exited: str,
    *,
    normal: bool,
    strategy: Strategy,
    intensity: Intensity,
    now: float,
    delay: float = 0.0,
) -> Decision:
    """What to do now that the child *exited* ended (not on request) and was judged.

    Args:
        members: The supervisor's children in start order, *exited* among
            them (not running).
        exited: The name of the child that ended.
        normal: Whether it ended normally (returned, or exit code 0).
        strategy: The supervisor's restart strategy.
        intensity: The restart intensity so far.
        now: The time of the decision, on the clock of *intensity*'s times.
        delay: The backoff delay a restart waits (see :func:`backoff_step`).

    Raises:
        ValueError: *exited* is none of *members*.
    """
    child = _find(members, exited)
    if not restarts(child.restart, normal=normal):
        if not child.significant:
            return Forget()
        return StopTree() if normal else GiveUp("a significant child ended abnormally")
    counted = not normal or child.count_normal_exits
    if counted and not intensity.admit(now):
        return GiveUp(
            f"more than {intensity.max_restarts} restarts within {intensity.max_seconds:g} s"
        )
    group = restart_group(strategy, members, exited)
    kinds = {m.name: m.restart for m in members}
    siblings = [name for name in group if name != exited]
    # Temporary siblings are never restarted, even when a sibling's restart
    # stops them (OTP): they are stopped for good.
    return Restart(
        stop=tuple(reversed(siblings)),
        retire=tuple(name for name in siblings if kinds[name] == "temporary"),
        start=tuple(name for name in group if name == exited or kinds[name] != "temporary"),
        delay=delay,
        intensity=intensity.record(now) if counted else intensity,
    )


def backoff_step(
    backoff: Backoff | None, in_row: int, ran_for: float, *, rng: Rng
) -> tuple[int, float]:
    """The child's count of restarts in a row after this one, and the delay before it.

    Args:
        backoff: The supervisor's backoff; ``None`` restarts at once.
        in_row: The child's restarts in a row so far.
        ran_for: Seconds its last run lasted: one of at least
            ``backoff.reset_after`` starts the count again at 1.
        rng: Where the jitter comes from (``random``, or a seeded
            ``random.Random`` in a test).
    """
    if backoff is None:
        return in_row, 0.0
    attempt = 1 if ran_for >= backoff.reset_after else in_row + 1
    return attempt, backoff.delay(attempt, rng=rng)


def _find(members: Sequence[Member], name: str) -> Member:
    for member in members:
        if member.name == name:
            return member
    raise ValueError(f"exited: {name!r} is not one of the members {[m.name for m in members]}")
