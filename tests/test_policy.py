"""The restart policy, rule by rule, without a process: OTP's rules as tables."""

from __future__ import annotations

import random

import pytest

from gymnasiarch import Backoff
from gymnasiarch._supervisor.policy import (
    Decision,
    Forget,
    GiveUp,
    Intensity,
    Member,
    Restart,
    StopTree,
    backoff_step,
    decide,
    restart_group,
    restarts,
)

FRESH = Intensity(max_restarts=3, max_seconds=5.0)


def alone(restart: str, *, significant: bool = False, normal: bool) -> Decision:
    """The decision for a child without siblings that just ended."""
    members = [Member("a", restart, significant, running=False)]  # type: ignore[arg-type]
    return decide(members, "a", normal=normal, strategy="one_for_one", intensity=FRESH, now=0.0)


@pytest.mark.parametrize(
    ("restart", "normal", "restarted"),
    [
        ("permanent", True, True),
        ("permanent", False, True),
        ("transient", True, False),
        ("transient", False, True),
        ("temporary", True, False),
        ("temporary", False, False),
    ],
)
def test_restart_types_by_how_the_child_ended(restart: str, normal: bool, restarted: bool) -> None:
    assert restarts(restart, normal=normal) is restarted  # type: ignore[arg-type]
    decision = alone(restart, normal=normal)
    if restarted:
        assert decision == Restart((), (), ("a",), 0.0, FRESH.record(0.0))
    else:
        assert decision == Forget()


@pytest.mark.parametrize(
    ("restart", "normal", "expected"),
    [
        ("transient", True, StopTree()),
        ("transient", False, Restart((), (), ("a",), 0.0, FRESH.record(0.0))),
        ("temporary", True, StopTree()),
        ("temporary", False, GiveUp("a significant child ended abnormally")),
    ],
)
def test_significant_children(restart: str, normal: bool, expected: Decision) -> None:
    """Ended for good: normally stops the tree, abnormally gives up; restarted: as any."""
    assert alone(restart, significant=True, normal=normal) == expected


# Four children in start order; "c" has just exited. "b" is not running
# (it ended for good, or was terminated), "d" is temporary.
TREE = [
    Member("a"),
    Member("b", "transient", running=False),
    Member("c", running=False),
    Member("d", "temporary"),
    Member("e"),
]


@pytest.mark.parametrize(
    ("strategy", "group", "stop", "retire", "start"),
    [
        ("one_for_one", ("c",), (), (), ("c",)),
        ("one_for_all", ("a", "c", "d", "e"), ("e", "d", "a"), ("d",), ("a", "c", "e")),
        ("rest_for_one", ("c", "d", "e"), ("e", "d"), ("d",), ("c", "e")),
    ],
)
def test_strategies_with_running_and_stopped_siblings(
    strategy: str,
    group: tuple[str, ...],
    stop: tuple[str, ...],
    retire: tuple[str, ...],
    start: tuple[str, ...],
) -> None:
    """Stopped siblings stay stopped, temporary ones are stopped for good (retired)."""
    assert restart_group(strategy, TREE, "c") == group  # type: ignore[arg-type]
    decision = decide(
        TREE,
        "c",
        normal=False,
        strategy=strategy,  # type: ignore[arg-type]
        intensity=FRESH,
        now=1.0,
        delay=0.25,
    )
    assert decision == Restart(stop, retire, start, 0.25, FRESH.record(1.0))


def test_rest_for_one_of_the_last_child_and_one_for_all_of_the_first() -> None:
    members = [Member("a", running=False), Member("b"), Member("c")]
    assert restart_group("rest_for_one", members, "a") == ("a", "b", "c")
    members = [Member("a"), Member("b"), Member("c", running=False)]
    assert restart_group("rest_for_one", members, "c") == ("c",)
    assert restart_group("one_for_all", members, "c") == ("a", "b", "c")


def test_a_child_that_is_not_a_member_or_a_bad_strategy_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match=r"exited: 'x' is not one of the members \['a'\]"):
        decide([Member("a")], "x", normal=False, strategy="one_for_one", intensity=FRESH, now=0)
    with pytest.raises(ValueError, match="strategy: expected one of"):
        restart_group("all_for_one", [Member("a")], "a")  # type: ignore[arg-type]


def restart_at(intensity: Intensity, now: float) -> Decision:
    return decide(
        [Member("a", running=False)],
        "a",
        normal=False,
        strategy="one_for_one",
        intensity=intensity,
        now=now,
    )


@pytest.mark.parametrize(
    ("times", "now", "admitted"),
    [
        ((), 0.0, True),
        ((0.0, 1.0), 2.0, True),  # the third of three
        ((0.0, 1.0, 2.0), 3.0, False),  # one past the limit
        ((0.0, 1.0, 2.0), 5.0, False),  # the first is exactly max_seconds old: it counts
        ((0.0, 1.0, 2.0), 5.001, True),  # ... and just after, it has left the window
        ((0.0, 1.0, 2.0), 100.0, True),
    ],
)
def test_intensity_at_the_limit_and_one_past_it(
    times: tuple[float, ...], now: float, admitted: bool
) -> None:
    intensity = Intensity(3, 5.0, times)
    assert intensity.admit(now) is admitted
    decision = restart_at(intensity, now)
    if admitted:
        assert isinstance(decision, Restart)
        assert decision.intensity.times[-1] == now
    else:
        assert decision == GiveUp("more than 3 restarts within 5 s")


def test_the_window_slides_and_forgets_old_restarts() -> None:
    """Restarts every 2 s stay within 3 in 5 s for ever; every 1 s, the fourth breaks it."""
    intensity = FRESH
    for now in range(0, 40, 2):
        decision = restart_at(intensity, float(now))
        assert isinstance(decision, Restart), now
        intensity = decision.intensity
        assert len(intensity.times) <= 3  # old ones leave: the value stays small
    verdicts = []
    intensity = FRESH
    for now in range(4):
        verdicts.append(intensity.admit(float(now)))
        intensity = intensity.record(float(now))
    assert verdicts == [True, True, True, False]
    assert FRESH.times == ()  # a value: recording made new ones


def test_no_restarts_allowed_gives_up_at_the_first() -> None:
    assert restart_at(Intensity(0, 5.0), 0.0) == GiveUp("more than 0 restarts within 5 s")


def test_backoff_with_a_fixed_rng_is_the_same_every_time() -> None:
    backoff = Backoff(base=1.0, factor=2.0, cap=5.0, jitter=0.5, reset_after=10.0)
    first = [backoff.delay(n, rng=random.Random(0)) for n in (1, 2, 3, 4)]
    assert first == [backoff.delay(n, rng=random.Random(0)) for n in (1, 2, 3, 4)]
    for n, delay in zip((1, 2, 3, 4), first, strict=True):
        raw = min(5.0, 2.0 ** (n - 1))
        assert raw * 0.5 <= delay <= raw * 1.5
    plain = Backoff(base=0.1, factor=3.0, cap=0.5, jitter=0.0)
    assert [plain.delay(n, rng=random.Random(0)) for n in (1, 2, 3, 4)] == pytest.approx(
        [0.1, 0.3, 0.5, 0.5]
    )


@pytest.mark.parametrize(
    ("in_row", "ran_for", "attempt", "delay"),
    [
        (0, 0.0, 1, 0.1),
        (1, 0.5, 2, 0.2),
        (3, 9.99, 4, 0.8),
        (3, 10.0, 1, 0.1),  # ran for reset_after: counting starts again
    ],
)
def test_backoff_step_counts_restarts_in_a_row(
    in_row: int, ran_for: float, attempt: int, delay: float
) -> None:
    backoff = Backoff(base=0.1, factor=2.0, cap=10.0, jitter=0.0, reset_after=10.0)
    got_attempt, got_delay = backoff_step(backoff, in_row, ran_for, rng=random.Random(0))
    assert got_attempt == attempt
    assert got_delay == pytest.approx(delay)
    assert backoff_step(None, in_row, ran_for, rng=random.Random(0)) == (in_row, 0.0)


def test_the_delay_travels_with_the_restart_and_decisions_are_values() -> None:
    decision = decide(
        [Member("a", running=False)],
        "a",
        normal=True,
        strategy="one_for_one",
        intensity=FRESH,
        now=0.0,
        delay=1.5,
    )
    assert isinstance(decision, Restart)
    assert decision.delay == 1.5
    with pytest.raises(AttributeError):
        decision.delay = 0.0  # type: ignore[misc]


@pytest.mark.parametrize(("normal", "counted"), [(True, False), (False, True)])
def test_a_one_shot_childs_normal_ends_do_not_count(normal: bool, counted: bool) -> None:
    """count_normal_exits=False: a normal end is restarted even at the limit, uncounted."""
    full = Intensity(3, 5.0, (1.0, 2.0, 3.0))  # one more restart now would break it
    member = Member("server", "permanent", running=False, count_normal_exits=False)
    decision = decide(
        [member], "server", normal=normal, strategy="one_for_one", intensity=full, now=4.0
    )
    if counted:  # a crash counts as ever, and breaks the limit
        assert decision == GiveUp("more than 3 restarts within 5 s")
    else:
        assert isinstance(decision, Restart)
        assert decision.intensity == full  # its times are as they were
