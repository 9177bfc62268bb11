"""Seeds for the random number generators of a simulation's processes.

:func:`create_seed` and :func:`hash_seed` are bit-compatible with
``palaestrai.util.seeding`` (which took them from OpenAI gym), so an
experiment seeded there draws the same numbers here. :func:`derive_seed` is
ours: it gives every child of a supervisor its own seed from one master seed,
so that a whole simulation reproduces from a single number.

The algorithm, for the record: a string seed is its UTF-8 bytes followed by
their SHA-512 digest; an integer is reduced modulo ``2**(8 * max_bytes)``;
bytes become an integer little-endian (gym read them as native 32-bit words,
which is the same on every machine it was used on). :func:`hash_seed` takes the
first *max_bytes* of the SHA-512 digest of the seed's decimal text.
"""

from __future__ import annotations

import hashlib
import os

__all__ = ["create_seed", "derive_seed", "hash_seed"]

_SHA512_BYTES = 64


def _check_max_bytes(max_bytes: int) -> None:
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int):
        raise TypeError(f"max_bytes must be an int, got {type(max_bytes).__name__}")
    if not 1 <= max_bytes <= _SHA512_BYTES:
        raise ValueError(f"max_bytes must be between 1 and {_SHA512_BYTES}, got {max_bytes}")


def _int_from_bytes(data: bytes) -> int:
    return int.from_bytes(data, "little")


def _as_int_text(text: str) -> int | None:
    """The integer a string spells in decimal (``"42"``, ``" -7 "``), else None."""
    try:
        return int(text, 10)
    except ValueError:
        return None


def create_seed(a: int | str | None = None, max_bytes: int = 8) -> int:
    """Create a strong random seed.

    Otherwise, Python 2 would seed using the system time, which might be
    non-robust especially in the presence of concurrency.

    Args:
        a: ``None`` draws *max_bytes* from the operating system's randomness
            source (:func:`os.urandom`). An ``int`` is reduced modulo
            ``2**(8 * max_bytes)`` (so ``-1`` becomes the largest value). A
            ``str`` that spells a decimal integer counts as that integer;
            any other string is hashed with SHA-512.
        max_bytes: Size of the seed in bytes, 1 to 64.

    Returns:
        An integer in ``range(2**(8 * max_bytes))``.

    Raises:
        TypeError: *a* is neither None, an int nor a str.
    """
    _check_max_bytes(max_bytes)
    if a is None:
        return _int_from_bytes(os.urandom(max_bytes))
    if isinstance(a, str):
        as_int = _as_int_text(a)
        if as_int is None:
            encoded = a.encode("utf8")
            encoded += hashlib.sha512(encoded).digest()
            return _int_from_bytes(encoded[:max_bytes])
        a = as_int
    if isinstance(a, bool) or not isinstance(a, int):
        raise TypeError(
            f"Invalid type for seed: {type(a).__name__} ({a!r}); expected int, str or None"
        )
    return a % (1 << (8 * max_bytes))


def hash_seed(seed: int | None = None, max_bytes: int = 8) -> int:
    """Hash a seed, so that seeds of several generators do not correlate.

    Any given evaluation is likely to have many PRNG's active at once. (Most
    commonly, because the environment is running in multiple processes.)
    There's literature indicating that having linear correlations between
    seeds of multiple PRNG's can correlate the outputs. Thus, for sanity we
    hash the seeds before using them. (This scheme is likely not
    crypto-strength, but it should be good enough to get rid of simple
    correlations.)

    Args:
        seed: ``None`` seeds from an operating system specific randomness
            source (via :func:`create_seed`).
        max_bytes: Maximum number of bytes to use in the hashed seed, 1 to 64.

    Returns:
        An integer in ``range(2**(8 * max_bytes))``.

    Raises:
        TypeError: *seed* is neither None nor an int.
    """
    _check_max_bytes(max_bytes)
    if seed is None:
        seed = create_seed(max_bytes=max_bytes)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(
            f"Invalid type for seed: {type(seed).__name__} ({seed!r}); expected int or None"
        )
    digest = hashlib.sha512(str(seed).encode("utf8")).digest()
    return _int_from_bytes(digest[:max_bytes])


def derive_seed(master_seed: int | str, name: str, max_bytes: int = 8) -> int:
    """Derive a child's seed from the simulation's master seed and the child's name.

    The same master seed and name give the same seed on every run, machine
    and Python version; different names give unrelated seeds (a keyed
    BLAKE2b digest, so ``derive_seed(1, "agent-1")`` and
    ``derive_seed(1, "agent-2")`` share no structure). A supervisor built
    with ``seed=S`` hands each child ``derive_seed(S, child_name)``, also
    after restarts, so a whole simulation reproduces from one number.

    Args:
        master_seed: The simulation's seed; normalised with
            :func:`create_seed` (so ``"42"`` and ``42`` are the same seed).
        name: The child's name.
        max_bytes: Size of the derived seed in bytes, 1 to 64.

    Returns:
        An integer in ``range(2**(8 * max_bytes))``.

    Raises:
        TypeError: *master_seed* is not an int or str, or *name* is not a str.
    """
    _check_max_bytes(max_bytes)
    if master_seed is None:
        raise TypeError("derive_seed() needs a master seed; None would not reproduce")
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    master = create_seed(master_seed, max_bytes=_SHA512_BYTES)
    key = master.to_bytes(_SHA512_BYTES, "little")
    digest = hashlib.blake2b(
        name.encode("utf8"), digest_size=max_bytes, key=key, person=b"gymnasiarch"
    ).digest()
    return _int_from_bytes(digest)
