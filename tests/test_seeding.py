"""Seeding: bit-compatibility with palaestrAI/gym, and properties of derive_seed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gymnasiarch.seeding import create_seed, derive_seed, hash_seed

max_bytes_values = st.integers(min_value=1, max_value=64)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((42,), 42),
        ((-1,), 18446744073709551615),
        ((2**64 + 5,), 5),
        (("42",), 42),
        (("hello",), 15164072323195889000),
        (("hello", 4), 1819043176),
    ],
)
def test_create_seed_matches_palaestrai(args: tuple[object, ...], expected: int) -> None:
    """create_seed gives palaestrAI's (and gym's) values bit for bit."""
    assert create_seed(*args) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "expected"),
    [((0,), 1331072711323073585), ((42,), 7611020616111278649), ((42, 4), 3917269561)],
)
def test_hash_seed_matches_palaestrai(args: tuple[int, ...], expected: int) -> None:
    """hash_seed gives palaestrAI's (and gym's) values bit for bit."""
    assert hash_seed(*args) == expected


@pytest.mark.parametrize("function", [create_seed, hash_seed])
def test_no_argument_draws_fresh_randomness(function) -> None:  # type: ignore[no-untyped-def]
    """Without a seed, values come from the OS and differ between calls."""
    values = {function() for _ in range(8)}
    assert len(values) == 8
    assert all(0 <= v < 2**64 for v in values)


@pytest.mark.parametrize("bad", [1.5, b"42", [1], True])
def test_create_seed_rejects_wrong_types(bad: object) -> None:
    """A float, bytes, list or bool is a TypeError that names the type."""
    with pytest.raises(TypeError, match=type(bad).__name__):
        create_seed(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [1.5, "42", [1]])
def test_hash_seed_rejects_wrong_types(bad: object) -> None:
    """hash_seed takes an int or None; anything else is a TypeError."""
    with pytest.raises(TypeError, match="Invalid type for seed"):
        hash_seed(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0, 65, -3])
def test_max_bytes_out_of_range_is_a_value_error(bad: int) -> None:
    """max_bytes must be 1..64 (a SHA-512 digest has 64 bytes)."""
    with pytest.raises(ValueError, match="max_bytes"):
        create_seed(1, max_bytes=bad)
    with pytest.raises(ValueError, match="max_bytes"):
        hash_seed(1, max_bytes=bad)


@given(a=st.one_of(st.integers(), st.text()), max_bytes=max_bytes_values)
def test_create_seed_is_deterministic_and_in_range(a: int | str, max_bytes: int) -> None:
    """The same input gives the same seed, always below 2**(8*max_bytes)."""
    seed = create_seed(a, max_bytes)
    assert seed == create_seed(a, max_bytes)
    assert 0 <= seed < 2 ** (8 * max_bytes)


@given(a=st.integers(min_value=0, max_value=2**64 - 1))
def test_create_seed_keeps_integers_that_fit(a: int) -> None:
    """An integer that fits in max_bytes comes back unchanged, also when spelled as text."""
    assert create_seed(a) == a
    assert create_seed(str(a)) == a


@given(seed=st.integers(), max_bytes=max_bytes_values)
def test_hash_seed_is_deterministic_and_in_range(seed: int, max_bytes: int) -> None:
    """hash_seed is a pure function of its input, bounded by max_bytes."""
    value = hash_seed(seed, max_bytes)
    assert value == hash_seed(seed, max_bytes)
    assert 0 <= value < 2 ** (8 * max_bytes)


@given(master=st.integers(), name=st.text(), max_bytes=max_bytes_values)
def test_derive_seed_is_deterministic_and_in_range(master: int, name: str, max_bytes: int) -> None:
    """derive_seed reproduces from master seed and name, bounded by max_bytes."""
    value = derive_seed(master, name, max_bytes)
    assert value == derive_seed(master, name, max_bytes)
    assert 0 <= value < 2 ** (8 * max_bytes)


def test_derive_seed_is_stable_across_versions() -> None:
    """A pinned value: a change here would break every user's reproducibility."""
    assert derive_seed(1234, "env") == 14641772159370743933
    assert derive_seed("1234", "env") == derive_seed(1234, "env")


def test_derive_seed_separates_children_and_masters() -> None:
    """Different names or masters give different seeds (no collisions among 10,000)."""
    by_name = {derive_seed(7, f"agent-{i}") for i in range(5000)}
    by_master = {derive_seed(i, "agent") for i in range(5000)}
    assert len(by_name) == 5000
    assert len(by_master) == 5000


def test_derive_seed_is_well_mixed() -> None:
    """Neighbouring names differ in about half of the 64 bits (no simple correlations)."""
    flips = [
        bin(derive_seed(99, f"agent-{i}") ^ derive_seed(99, f"agent-{i + 1}")).count("1")
        for i in range(2000)
    ]
    mean = sum(flips) / len(flips)
    assert 30 < mean < 34


@pytest.mark.parametrize(("master", "name"), [(None, "x"), (1.5, "x"), (1, 2)])
def test_derive_seed_rejects_wrong_types(master: object, name: object) -> None:
    """derive_seed needs an int or str master seed and a str name."""
    with pytest.raises(TypeError):
        derive_seed(master, name)  # type: ignore[arg-type]
