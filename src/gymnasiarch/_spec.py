"""Value objects that describe a supervision tree: child specs and backoff.

They validate at construction and are immutable afterwards, so a bad spec
fails where it is written, before any process starts.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import random
import re
import shlex
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, get_args

from gymnasiarch import ready as _ready
from gymnasiarch._from_ready import FromReady, references
from gymnasiarch.exceptions import FieldTypeError, FieldValueError

#: What a program child may wait for before it counts as ready.
ReadyKind = _ready.ReadyKind

RestartType = Literal["permanent", "transient", "temporary"]
Strategy = Literal["one_for_one", "one_for_all", "rest_for_one"]
StartOrder = Literal["sequential", "parallel"]
OutputMode = Literal["capture", "inherit", "json"]
AsyncBackend = Literal["asyncio", "trio"]
StartMethod = Literal["forkserver", "spawn"]

RESTART_TYPES: tuple[str, ...] = get_args(RestartType)
STRATEGIES: tuple[str, ...] = get_args(Strategy)
START_ORDERS: tuple[str, ...] = get_args(StartOrder)
OUTPUT_MODES: tuple[str, ...] = get_args(OutputMode)
ASYNC_BACKENDS: tuple[str, ...] = get_args(AsyncBackend)
START_METHODS: tuple[str, ...] = get_args(StartMethod)


class Rng(Protocol):
    """Where a backoff's jitter comes from: the :mod:`random` module or a ``random.Random``."""

    def uniform(self, a: float, b: float, /) -> float:
        """A number between *a* and *b*."""
        ...


# Each check below raises a FieldValueError or a FieldTypeError (a ValueError
# or a TypeError too) that names the field, and whose field it is when given
# (*owner*: "child 'env'"): a tree file's loader maps the field to its key.


def check_choice(field: str, value: object, choices: Sequence[str], owner: str = "") -> None:
    """Raise a FieldValueError naming *field* unless *value* is one of *choices*."""
    if value not in choices:
        raise FieldValueError(field, f"expected one of {', '.join(choices)}, got {value!r}", owner)


def check_seconds(
    field: str, value: object, *, allow_none: bool, positive: bool = False, owner: str = ""
) -> None:
    """Raise unless *value* is a number of seconds >= 0 (> 0 if *positive*), or None if allowed.

    The message says the bound that is checked: one check, so that -5 and 0
    are not told two different rules.
    """
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FieldTypeError(field, f"expected a number of seconds, got {value!r}", owner)
    if math.isnan(value) or value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise FieldValueError(field, f"expected a number of seconds {bound}, got {value!r}", owner)


def check_bool(field: str, value: object, owner: str = "") -> None:
    """Raise a FieldTypeError unless *value* is True or False."""
    if not isinstance(value, bool):
        raise FieldTypeError(field, f"must be True or False, got {value!r}", owner)


def check_name(field: str, name: object, owner: str = "") -> None:
    """A child's or a supervisor's name: non-empty, printable, no '/', no space at either end.

    It appears in process titles and logs, and it is one step of a child's
    path in the tree (``agents/agent-1``: ``child_info``, ``wait_ready``,
    ``gymnasiarch restart``): a '/' in it would make that path name another
    child, and a space at an end would not show in ``gymnasiarch status``.
    """
    if not isinstance(name, str) or not name:
        raise FieldTypeError(field, f"expected a non-empty string, got {name!r}", owner)
    if not name.isprintable():
        raise FieldValueError(
            field, f"must be printable (no control characters), got {name!r}", owner
        )
    if "/" in name:
        raise FieldValueError(
            field,
            f"may not contain '/' ('/' separates the names of a path, as in "
            f"'agents/agent-1'), got {name!r}",
            owner,
        )
    if name != name.strip():
        raise FieldValueError(
            field,
            f"may not begin or end with a space (unseen in `gymnasiarch status`, "
            f"yet every path to it would need it), got {name!r}",
            owner,
        )


def check_dotted_path(field: str, path: str, owner: str = "") -> None:
    """A target given as text must look like 'package.module:name' or 'package.module.name'."""
    module, colon, attr = path.partition(":")
    parts = (module.split(".") + attr.split(".")) if colon else path.split(".")
    if (colon and not attr) or len(parts) < 2 or not all(p.isidentifier() for p in parts):
        raise FieldValueError(
            field, f"expected a dotted path like 'package.module:function', got {path!r}", owner
        )


def check_async_backend(field: str, backend: object, owner: str = "") -> None:
    """Raise a FieldValueError unless *backend* is an anyio backend that is installed.

    Checked where the spec is written rather than in the child, where a
    missing trio would only show as a crash (restarted, and again).
    """
    check_choice(field, backend, ASYNC_BACKENDS, owner)
    if backend == "trio" and importlib.util.find_spec("trio") is None:
        raise FieldValueError(field, "'trio' needs the trio package, which is not installed", owner)


_NUMBER = (int, float)
#: What a child's placement may say, and the type of each value.
PLACEMENT_KEYS: dict[str, tuple[type, ...]] = {
    "num_cpus": _NUMBER,
    "num_gpus": _NUMBER,
    "memory": _NUMBER,
    "resources": (Mapping,),
    "accelerator_type": (str,),
    "runtime_env": (Mapping,),
    "scheduling_strategy": (object,),  # "DEFAULT", "SPREAD" or a Ray strategy object
    "node_affinity": (Mapping,),
}


def check_placement(owner: str, placement: object) -> dict[str, Any]:
    """A copy of *placement* once its keys and values are ones a cluster understands.

    Raises:
        FieldTypeError: Not a mapping, or a value of the wrong type.
        FieldValueError: An unknown key, or a negative amount.
    """

    def wrong(kind: type[FieldTypeError | FieldValueError], message: str) -> Exception:
        return kind("placement", message, owner)

    if not isinstance(placement, Mapping):
        raise wrong(FieldTypeError, f"must be a mapping, got {placement!r}")
    checked = dict(placement)
    for key, value in checked.items():
        kinds = PLACEMENT_KEYS.get(key)
        if kinds is None:
            known = ", ".join(PLACEMENT_KEYS)
            raise wrong(FieldValueError, f"unknown key {key!r} (known: {known})")
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise wrong(FieldTypeError, f"{key} has the wrong type: {value!r}")
        if kinds is _NUMBER and float(value) < 0:  # type: ignore[arg-type]
            raise wrong(FieldValueError, f"{key} must be >= 0, got {value!r}")
    for name, amount in checked.get("resources", {}).items():
        if not isinstance(name, str) or isinstance(amount, bool) or not isinstance(amount, _NUMBER):
            raise wrong(
                FieldTypeError, f"resources must map names to amounts, got {name!r}: {amount!r}"
            )
    reserved = {"CPU", "GPU", "memory"} & set(checked.get("resources", {}))
    if reserved:
        name = sorted(reserved)[0]
        raise wrong(
            FieldValueError, f"resources may not name {name!r}; use num_cpus, num_gpus or memory"
        )
    strategy = checked.get("scheduling_strategy")
    if isinstance(strategy, str) and strategy not in ("DEFAULT", "SPREAD"):
        raise wrong(
            FieldValueError,
            'scheduling_strategy must be "DEFAULT", "SPREAD" '
            f"or a Ray strategy object, got {strategy!r}",
        )
    if strategy is not None and "node_affinity" in checked:
        raise wrong(FieldValueError, "give scheduling_strategy or node_affinity, not both")
    affinity = checked.get("node_affinity")
    if affinity is not None and (
        not isinstance(affinity.get("node_id"), str)
        or not isinstance(affinity.get("soft", False), bool)
        or not set(affinity) <= {"node_id", "soft"}
    ):
        raise wrong(
            FieldTypeError,
            'node_affinity must be {"node_id": "<node id>", "soft": true|false}, '
            f"got {affinity!r}",
        )
    return checked


def check_command(field: str, command: object, owner: str = "") -> tuple[str | FromReady, ...]:
    """A program's argv as a tuple, once it is a non-empty list of strings.

    Never a shell string: ``"redis-server --port 6390"`` would be one
    program name with spaces in it, and splitting it here would be a shell
    without a shell's quoting. ``["sh", "-c", "..."]`` is the explicit way.
    An argument (not the program) may be a :class:`FromReady`: an earlier
    sibling's ready value, filled in at each start.
    """
    if isinstance(command, str | bytes):
        text = command.decode(errors="replace") if isinstance(command, bytes) else command
        try:
            hint = repr(shlex.split(text))
        except ValueError:
            hint = repr(["sh", "-c", text])
        raise FieldTypeError(
            field, f"pass the program and its arguments as a list ({hint}), not a string", owner
        )
    if not isinstance(command, Sequence) or not command:
        raise FieldTypeError(field, f"expected a non-empty list of strings, got {command!r}", owner)
    if isinstance(command[0], FromReady):
        raise FieldTypeError(
            field,
            f"the program must be named as a string, got {command[0]!r}: only its "
            "arguments may be a sibling's ready value",
            owner,
        )
    if not isinstance(command[0], str) or not all(
        isinstance(part, str | FromReady) for part in command
    ):
        raise FieldTypeError(field, f"expected a list of strings, got {command!r}", owner)
    if not command[0] or any(isinstance(part, str) and "\0" in part for part in command):
        raise FieldValueError(
            field, f"the program must be named and no part may hold a NUL: {command!r}", owner
        )
    return tuple(command)


def ready_references(spec: ChildSpec) -> list[FromReady]:
    """Every FromReady of *spec*: in its args and kwargs, its command and its env values."""
    return [
        *references(spec.args),
        *references(spec.kwargs or {}),
        *references(spec.command or ()),
        *references(spec.env or {}),
    ]


def check_env(field: str, env: object, owner: str = "") -> dict[str, str | FromReady | None]:
    """A copy of *env*: names to values (a :class:`FromReady` too), or to None (removed)."""
    if not isinstance(env, Mapping):
        raise FieldTypeError(field, f"expected a mapping of names to strings, got {env!r}", owner)
    for key, value in env.items():
        if not isinstance(key, str) or not key or "=" in key or "\0" in key:
            raise FieldValueError(field, f"not an environment variable name: {key!r}", owner)
        if isinstance(value, FromReady):
            continue
        if value is not None and (not isinstance(value, str) or "\0" in value):
            raise FieldTypeError(
                field, f"{key} must be a string (or None to remove it), got {value!r}", owner
            )
    return dict(env)


def check_stop_signal(field: str, value: object, owner: str = "") -> signal.Signals:
    """A signal from a name (``"SIGINT"``, ``"INT"``), a number or a :class:`signal.Signals`."""
    if isinstance(value, str):
        name = value.upper() if value.upper().startswith("SIG") else f"SIG{value.upper()}"
        try:
            return signal.Signals[name]
        except KeyError:
            raise FieldValueError(field, f"no such signal: {value!r}", owner) from None
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return signal.Signals(value)
        except ValueError:
            raise FieldValueError(field, f"no such signal: {value!r}", owner) from None
    raise FieldTypeError(field, f"expected a signal name like 'SIGINT', got {value!r}", owner)


# Level names other logging libraries use, as the nearest stdlib level:
# loguru's TRACE (5) and SUCCESS (25, good news rather than a warning), syslog's
# NOTICE, ALERT and EMERG, zap's and logrus's PANIC.
_LEVEL_ALIASES = {
    "TRACE": logging.DEBUG,
    "VERBOSE": logging.DEBUG,
    "SUCCESS": logging.INFO,
    "NOTICE": logging.INFO,
    "ERR": logging.ERROR,
    "CRIT": logging.CRITICAL,
    "ALERT": logging.CRITICAL,
    "EMERG": logging.CRITICAL,
    "EMERGENCY": logging.CRITICAL,
    "PANIC": logging.CRITICAL,
    "DPANIC": logging.CRITICAL,
}


def level_number(value: object) -> int | None:
    """The stdlib level number of *value*, or None if it names no level.

    A name in any case (``"info"``, ``"WARN"``, a name given to
    :func:`logging.addLevelName`; loguru's ``"TRACE"`` and ``"SUCCESS"`` as
    DEBUG and INFO), or a number ``>= 0`` (also as a string of digits), taken
    as a stdlib level: ``20`` is INFO.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        return value if value >= 0 else None
    if not isinstance(value, str):
        return None
    name = value.strip().upper()
    if name.isdigit():
        return int(name)
    number = logging.getLevelNamesMapping().get(name)
    return number if number is not None else _LEVEL_ALIASES.get(name)


def check_level(field: str, value: object, owner: str = "") -> int:
    """A level's number from a name (``"INFO"``, ``"info"``) or a number (``logging.INFO``)."""
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise FieldTypeError(
            field, f"expected a level name like 'INFO' or a number, got {value!r}", owner
        )
    number = level_number(value)
    if number is None:
        raise FieldValueError(
            field,
            f"no such level: {value!r} (expected DEBUG, INFO, WARNING, ERROR, CRITICAL "
            "or a number >= 0)",
            owner,
        )
    return number


#: Where ``output="json"`` looks for a record's fields in each line's object,
#: where ``json_keys`` does not say: key paths, the first one found wins. No
#: ``extra`` path: the object's other top-level fields are the extras.
DEFAULT_JSON_KEYS: Mapping[str, tuple[str, ...]] = {
    "level": ("level", "levelname", "severity"),
    "message": ("message", "msg", "event"),
    "time": ("time", "timestamp", "ts"),
    "extra": (),
}


def check_json_keys(field: str, value: object, owner: str = "") -> dict[str, tuple[str, ...]]:
    """*json_keys* as key paths per record field: a path, a list of them, or None for none.

    Each error is a :class:`~gymnasiarch.exceptions.FieldError` naming the
    field (``json_keys.level``): a key other than level, message, time and
    extra, or a path that is not a non-empty dotted string.
    """
    if not isinstance(value, Mapping):
        raise FieldTypeError(
            field, f'expected a mapping like {{"level": "record.level.name"}}, got {value!r}', owner
        )
    checked: dict[str, tuple[str, ...]] = {}
    for key, given in value.items():
        where = f"{field}.{key}"
        if key not in DEFAULT_JSON_KEYS:
            known = ", ".join(DEFAULT_JSON_KEYS)
            raise FieldValueError(where, f"unknown key {key!r} (known: {known})", owner)
        paths = [] if given is None else [given] if isinstance(given, str) else given
        if not isinstance(paths, Sequence) or isinstance(paths, bytes):
            raise FieldTypeError(
                where, f"expected a key path like 'record.message', got {given!r}", owner
            )
        for path in paths:
            if not isinstance(path, str):
                raise FieldTypeError(
                    where, f"expected a key path like 'record.message', got {path!r}", owner
                )
            if "" in path.split("."):
                raise FieldValueError(where, f"not a key path: {path!r}", owner)
        if key == "extra" and len(paths) > 1:
            raise FieldValueError(where, f"expected one key path, got {given!r}", owner)
        checked[key] = tuple(paths)
    return checked


def json_key_paths(json_keys: Mapping[str, Any] | None) -> dict[str, tuple[str, ...]]:
    """Every field's key paths: a spec's checked *json_keys* over :data:`DEFAULT_JSON_KEYS`."""
    return {**DEFAULT_JSON_KEYS, **{key: tuple(paths) for key, paths in (json_keys or {}).items()}}


_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([kmgtp]?)(i?)(b?)", re.IGNORECASE)
_SIZE_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}


def parse_size(text: str) -> int:
    """A number of bytes from a size such as ``"512MiB"``, ``"2GiB"``, ``"1.5G"`` or ``"100MB"``.

    ``KiB``/``Ki``, ``MiB``/``Mi``, ``GiB``/``Gi``... are powers of 1024;
    ``KB``, ``MB``, ``GB``... powers of 1000; a bare ``K``, ``M``, ``G``,
    ``T``, ``P`` is a power of 1024, as systemd's ``MemoryMax=`` and
    ``docker --memory`` read it. Letters may be in either case; ``B`` or
    no unit is bytes. Fractions are rounded down to whole bytes.

    Raises:
        ValueError: *text* is not such a size.
    """
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"expected a size like '512MiB', '2GiB' or '1.5G', got {text!r}")
    number, prefix, binary, byte = match.groups()
    if binary and not prefix:
        raise ValueError(f"expected a size like '512MiB', '2GiB' or '1.5G', got {text!r}")
    base = 1000 if (byte and prefix and not binary) else 1024
    size = float(number) * base ** _SIZE_POWERS[prefix.lower()]
    if not math.isfinite(size):  # "1000...000PiB": int() of it would raise OverflowError
        raise ValueError(f"expected a size of fewer bytes than a float holds, got {text!r}")
    return int(size)


def format_size(size: float) -> str:
    """A number of bytes for people: ``"512 MiB"``, ``"1.5 GiB"``, ``"812 B"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            whole = unit == "B" or size == int(size)
            return f"{size:.0f} {unit}" if whole else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} PiB"  # pragma: no cover - the loop returns


def check_size(field: str, value: object, owner: str = "") -> int:
    """A positive number of bytes from an int or a size text (see :func:`parse_size`)."""
    if isinstance(value, str):
        try:
            size = parse_size(value)
        except ValueError as error:
            raise FieldValueError(field, str(error), owner) from None
    elif isinstance(value, int) and not isinstance(value, bool):
        size = value
    else:
        raise FieldTypeError(
            field, f"expected a size (bytes as an int, or a text like '2GiB'), got {value!r}", owner
        )
    if size <= 0:
        raise FieldValueError(field, f"expected a size above 0 bytes, got {value!r}", owner)
    return size


#: The shortest ``watchdog``, in seconds. Why: a child beats from its own
#: code, and a deadline shorter than a start's own steps (fork, the log
#: connection, an event loop's first turn: milliseconds on a busy machine)
#: finds a healthy child hung inside gymnasiarch's start-up.
WATCHDOG_MIN = 0.01
#: The keys of ``ChildSpec.limits``: what each sets in the child (see docs/supervising.md).
LIMIT_KEYS = ("memory", "open_files", "cpu_seconds", "core_dumps")
#: The largest ``memory``, ``open_files`` or ``cpu_seconds``: 2**62 (4 EiB,
#: 146 billion years). Why: ``setrlimit`` takes a C long (2**63 - 1 and above
#: raise ``OverflowError`` in the child), and the CPU hard limit is a few
#: seconds above the soft one.
LIMIT_MAX = 2**62
#: The fewest ``open_files`` a child may have. Why: a child's own start opens
#: descriptors before its target runs, and a lower limit makes every start
#: fail. Measured (the lowest limit a child started with): 8 for a sync
#: target that logs (7 and below lose the log connection), 10 for an async
#: one on asyncio, 13 on trio, 4 for ``sh``, 5 for a ``python`` program.
OPEN_FILES_MIN = 16


def _shown_number(value: object) -> str:
    """*value* for an error message; a huge int by its size (``repr`` refuses past 4300 digits)."""
    if isinstance(value, int) and value.bit_length() > 128:
        return f"an int of about 2**{value.bit_length() - 1}"
    return repr(value)


def check_limits(limits: object, owner: str = "") -> dict[str, int | bool]:
    """A copy of a child's *limits* with sizes in bytes and seconds whole (rounded up).

    Raises:
        FieldTypeError: Not a mapping, or a value of the wrong type.
        FieldValueError: An unknown key, or a value out of range (above
            :data:`LIMIT_MAX`; ``open_files`` below :data:`OPEN_FILES_MIN`);
            the field is named ``limits.<key>``.
    """
    if not isinstance(limits, Mapping):
        raise FieldTypeError("limits", f"expected a mapping, got {limits!r}", owner)
    checked: dict[str, int | bool] = {}
    for key, value in limits.items():
        field = f"limits.{key}"
        if key == "memory":
            checked[key] = check_size(field, value, owner)
        elif key == "core_dumps":
            check_bool(field, value, owner)
            checked[key] = bool(value)
        elif key in ("open_files", "cpu_seconds"):
            whole = key == "open_files"
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or (whole and not isinstance(value, int))
            ):
                what = "a whole number" if whole else "a number of seconds"
                raise FieldTypeError(field, f"expected {what}, got {value!r}", owner)
            # Compared as they are: float() of a huge int raises OverflowError.
            if (isinstance(value, float) and not math.isfinite(value)) or value <= 0:
                raise FieldValueError(field, f"expected a number above 0, got {value!r}", owner)
            checked[key] = math.ceil(value)  # RLIMIT_CPU counts whole seconds
            if whole and value < OPEN_FILES_MIN:
                raise FieldValueError(
                    field,
                    f"expected at least {OPEN_FILES_MIN} (the descriptors a child's own "
                    f"start needs), got {value!r}",
                    owner,
                )
        else:
            raise FieldValueError(
                field, f"unknown limit {key!r} (known: {', '.join(LIMIT_KEYS)})", owner
            )
        if not isinstance(checked[key], bool) and checked[key] > LIMIT_MAX:
            raise FieldValueError(
                field,
                f"expected at most 2**62 ({LIMIT_MAX}, as setrlimit takes), "
                f"got {_shown_number(value)}",
                owner,
            )
    return checked


@dataclass(frozen=True)
class ChildSpec:
    """What to run in one supervised child process, and how to treat its end.

    Args:
        name: Unique among its siblings; shown in the process title
            (``gymnasiarch[name]``), logs, events and errors. It is one step
            of the child's path in the tree (``agents/agent-1``), so it has
            no ``/`` and no space at either end (nor a control character).
        target: The function to run in the child: a callable (sync or
            ``async def``; it must be importable by reference, i.e. defined at
            module level) or a dotted path ``"package.module:function"``,
            resolved with :mod:`gymnasiarch.dynaloader`.
        args: Positional arguments for *target*.
        kwargs: Keyword arguments for *target*.
        restart: ``"permanent"`` children are always restarted,
            ``"transient"`` ones only after an abnormal end (a non-zero exit
            code, a signal, an exception), ``"temporary"`` ones never.
        shutdown: Seconds between SIGTERM and SIGKILL when the child is
            stopped; ``0`` kills at once, ``None`` waits forever.
        significant: When a significant child ends for good (it is not
            restarted), the whole supervisor shuts down; if it ended
            abnormally, the caller gets the error. Only transient and
            temporary children may be significant (as in OTP).
        ready_timeout: If set, the supervisor waits up to this many seconds
            for the child to call ``child_context().ready()`` before it counts
            the child as started (``math.inf`` waits forever). If ``None``,
            the child counts as ready when its target starts.
        output: ``"capture"`` turns each line the child writes to stdout or
            stderr into a record of the logger ``gymnasiarch.child.<name>``
            (stdout at INFO, stderr at WARNING) and keeps the last lines of
            stderr for the error report; ``"inherit"`` lets the child write
            to the supervisor's own stdout and stderr; ``"json"`` captures
            too, and a line that is a JSON object becomes a record with the
            level, message, time and extra fields found in it (see
            *json_keys*); any other line stays a plain one.
        placement: Where the child may run, for a backend that places
            children on a cluster (:class:`~gymnasiarch.ray_backend.RayBackend`):
            ``num_cpus``, ``num_gpus``, ``memory`` (bytes), ``resources``
            (custom resources, name to amount), ``accelerator_type``,
            ``runtime_env``, ``scheduling_strategy`` and ``node_affinity``
            (``{"node_id": "...", "soft": False}``). The local backend
            ignores it, so one tree runs on a laptop and on a cluster alike.
        async_backend: The event loop an ``async def`` target runs on:
            ``"asyncio"`` or ``"trio"`` (anyio's backends). ``None`` (the
            default) means the supervisor's own: a supervisor running under
            trio runs its children's coroutines under trio too. A sync
            target ignores it. ``"trio"`` needs trio installed.
        command: Instead of *target*, an external program to run: its argv
            as a list (``["redis-server", "--port", "6390"]``; never a shell
            string). It is exec'd in the child process after the caretaking
            that protects it (its own process group, the parent-death
            guard, signals back to their defaults). A program that cannot
            be exec'd is an
            :class:`~gymnasiarch.exceptions.InitializationFailedError`
            naming it, at the start or at a restart, never a crash loop.
            Give exactly one of *target* and *command*.
        env: For a *command*: variables to add to or override in the
            supervisor's environment; ``None`` as a value removes one.
            An argument of *command* (not the program itself) and a value
            of *env* may be a :class:`~gymnasiarch.FromReady`: an earlier
            sibling's ready value (a string or a number; ``key=`` picks one
            from a dict), filled in as text at each start.
        cwd: For a *command*: the directory to run it in (must exist).
        ready: For a *command*: when it counts as ready. ``None``: once it
            was exec'd. :class:`gymnasiarch.ready.Port`: once a process of
            its group listens on the port; :class:`gymnasiarch.ready.Path`:
            once the path exists. Bounded by *ready_timeout* (30 s where
            that is not given).
        stop_signal: For a *command*: the signal that asks it to stop,
            before the *shutdown* grace and SIGKILL (``"SIGINT"``,
            ``signal.SIGQUIT``...). Default SIGTERM.
        count_normal_exits: Whether restarting this child after a normal
            end (exit code 0, a returned target) counts toward the
            supervisor's restart intensity (``max_restarts`` within
            ``max_seconds``). ``False`` suits a one-shot server, which
            serves one client and exits 0: its ends are its work done, and a
            scenario that ends for several of them at once must not exhaust
            the budget. Its failures still count. Not in OTP, where every
            restart counts. Only a permanent child restarts after a normal
            end, so it applies to permanent children only.
        ports: For a *command*: names of TCP ports the supervisor picks for
            it (``["api"]``): a free port each, outside the kernel's
            ephemeral range, picked at the child's first start and kept
            across its restarts (replaced, with a WARNING, if another
            process took it while the child was down). ``{api}`` in
            *command*, in the values of *env* and in *ready*
            (``ready.Port("{api}")``, a ``Path`` or a ``Line``) is replaced
            by the port, and ``{{name}}`` by the text ``{name}``; other text
            in braces (JSON) is left as it is. Each ``{name}`` there must be
            one of the ports, and each port must be used there; no port may
            be named ``host``. The ports show in the child's
            :class:`~gymnasiarch.ChildInfo` and are its ready value
            (``{"api": 40123}``; under the Ray backend with the node's
            address, ``{"host": "10.0.0.5", "api": 40123}``;
            ``FromReady("sim", key="api")`` passes one to a sibling).
        limits: Resource limits the kernel enforces in the child, set
            (``setrlimit``) before its target runs or its program is
            exec'd, and inherited by its subprocesses: ``memory`` (a size:
            bytes, or ``"512MiB"``, ``"2GiB"``; ``RLIMIT_DATA``, see
            docs/supervising.md), ``open_files`` (``RLIMIT_NOFILE``),
            ``cpu_seconds`` (``RLIMIT_CPU``: SIGXCPU once used up, SIGKILL
            5 s of CPU later; whole seconds: a fraction is rounded up,
            ``0.5`` is 1) and
            ``core_dumps`` (``False``: ``RLIMIT_CORE`` 0). A Python child
            over its memory gets :class:`MemoryError`.
        max_memory: A ceiling on the resident memory (RSS) of the child's
            process group, as a size: sampled by the supervisor (every
            second); a child found over it is stopped (its stop signal, its
            *shutdown* grace, or 5 s where that is None, SIGKILL; its state
            ``stopping`` meanwhile) and its end is abnormal, a
            :class:`~gymnasiarch.exceptions.ChildOverLimitError`. The RSS
            of the group's processes is summed, so pages they share (with
            each other, and with the fork server a Python child was forked
            from) count once per process: an upper bound.
        stdout_level: The level of a plain line of captured stdout: a name
            in any case (``"INFO"``, ``"debug"``) or a number
            (``logging.INFO``, the default).
        stderr_level: The same for stderr (default WARNING). Many programs
            log everything to stderr: ``stderr_level="INFO"``. Neither
            level may be changed with ``output="inherit"``, which reads no lines.
        json_keys: With ``output="json"``: where a line's object holds the
            record's ``level``, ``message`` and ``time`` (each a key path,
            dotted for nested objects, or a list of paths tried in turn, or
            None for none), and ``extra``, the path of an object whose fields
            become the record's extras (by default the object's other
            top-level fields). For loguru's ``serialize=True``:
            ``{"level": "record.level.name", "message": "record.message",
            "time": "record.time.timestamp", "extra": "record.extra"}``.
            Keys not given keep their defaults (``level``/``levelname``/
            ``severity``, ``message``/``msg``/``event``, ``time``/
            ``timestamp``/``ts``); see "Output" in docs/programs.md.
        watchdog: Seconds (> 0) within which the child must show it is
            alive, again and again, once it is ready (or, without a
            *ready_timeout*, once its target runs): a plain ``def`` target
            calls ``child_context().heartbeat()``, an ``async def`` one
            beats by itself while its event loop turns, a program sends
            sd_notify ``WATCHDOG=1`` (it needs ``ready=Notify()``; it finds
            ``WATCHDOG_USEC`` in its environment; ``WATCHDOG=trigger`` has
            it found hung at once). Beats never more than *watchdog* apart
            keep it alive; a Python child that stops beating is found hung
            within 1.25 times *watchdog* of its last beat (its beats are
            spaced a quarter of it apart), a program within *watchdog*.
            Once its target has returned or raised, a child is no longer
            watched. A child that misses its
            deadline is hung: its threads' stacks are dumped to its stderr,
            its process group is killed, and its end is a
            :class:`~gymnasiarch.exceptions.ChildHungError`, restarted like
            a crash. ``None`` (the default): no watchdog, no cost.
    """

    name: str
    target: Callable[..., Any] | str | None = None
    args: Sequence[Any] = ()
    kwargs: Mapping[str, Any] | None = field(default=None, hash=False)
    restart: RestartType = "permanent"
    shutdown: float | None = 5.0
    significant: bool = False
    ready_timeout: float | None = None
    output: OutputMode = "capture"
    placement: Mapping[str, Any] | None = field(default=None, hash=False)
    async_backend: AsyncBackend | None = None
    command: Sequence[str | FromReady] | None = None
    env: Mapping[str, str | FromReady | None] | None = field(default=None, hash=False)
    cwd: str | os.PathLike[str] | None = None
    ready: ReadyKind | None = None
    stop_signal: signal.Signals | str | int = signal.SIGTERM
    count_normal_exits: bool = True
    ports: Sequence[str] = ()
    limits: Mapping[str, Any] | None = field(default=None, hash=False)
    max_memory: int | str | None = None
    stdout_level: int | str = logging.INFO
    stderr_level: int | str = logging.WARNING
    json_keys: Mapping[str, str | Sequence[str] | None] | None = field(default=None, hash=False)
    watchdog: float | None = None

    def __post_init__(self) -> None:
        check_name("name", self.name, "ChildSpec")
        where = f"child {self.name!r}"  # each error below is a FieldError naming its field
        self._check_program(where)
        self._check_ports(where)
        if isinstance(self.target, str):
            check_dotted_path("target", self.target, where)
        elif self.target is not None and not callable(self.target):
            raise FieldTypeError(
                "target", f"expected a callable or a dotted path, got {self.target!r}", where
            )
        if isinstance(self.args, str | bytes) or not isinstance(self.args, Sequence):
            raise FieldTypeError("args", f"expected a sequence, got {self.args!r}", where)
        object.__setattr__(self, "args", tuple(self.args))
        if self.kwargs is not None:
            if not isinstance(self.kwargs, Mapping) or not all(
                isinstance(k, str) for k in self.kwargs
            ):
                raise FieldTypeError(
                    "kwargs", f"expected a mapping of strings to values, got {self.kwargs!r}", where
                )
            object.__setattr__(self, "kwargs", dict(self.kwargs))
        check_choice("restart", self.restart, RESTART_TYPES, where)
        check_seconds("shutdown", self.shutdown, allow_none=True, owner=where)
        check_bool("significant", self.significant, where)
        check_bool("count_normal_exits", self.count_normal_exits, where)
        if not self.count_normal_exits and self.restart != "permanent":
            raise FieldValueError(
                "count_normal_exits",
                "only a permanent child is restarted after a normal end",
                where,
            )
        if self.significant and self.restart == "permanent":
            raise FieldValueError(
                "significant",
                "a significant child must be transient or temporary "
                "(a permanent child is always restarted, so it never ends)",
                where,
            )
        # 0 would fail every start: nothing is ready before it has started.
        check_seconds(
            "ready_timeout", self.ready_timeout, allow_none=True, positive=True, owner=where
        )
        self._check_output(where)
        if self.placement is not None:
            object.__setattr__(self, "placement", check_placement(where, self.placement))
        if self.async_backend is not None:
            check_async_backend("async_backend", self.async_backend, where)
        self._check_watchdog(where)
        if self.limits is not None:
            object.__setattr__(self, "limits", check_limits(self.limits, where))
        if self.max_memory is not None:
            object.__setattr__(self, "max_memory", check_size("max_memory", self.max_memory, where))

    def _check_watchdog(self, where: str) -> None:
        """*watchdog*: seconds, at least WATCHDOG_MIN; a program needs a way to beat (sd_notify)."""
        value = self.watchdog
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise FieldTypeError("watchdog", f"expected a number of seconds, got {value!r}", where)
        # One message for -1, nan, 0 and 1e-9 alike; no "or None": a tree
        # file has no None (it leaves the key out), and the default says it.
        if not WATCHDOG_MIN <= value < math.inf:
            raise FieldValueError(
                "watchdog",
                f"expected a number of seconds > 0 (at least {WATCHDOG_MIN:g}), got {value!r}",
                where,
            )
        if self.command is not None and not isinstance(self.ready, _ready.Notify):
            raise FieldValueError(
                "watchdog",
                "a program beats with sd_notify WATCHDOG=1: it needs ready=Notify()",
                where,
            )

    def _check_output(self, where: str) -> None:
        """Check *output* and what reads it: the levels of plain lines, *json_keys*."""
        check_choice("output", self.output, OUTPUT_MODES, where)
        defaults = {"stdout_level": logging.INFO, "stderr_level": logging.WARNING}
        for name, default in defaults.items():
            level = check_level(name, getattr(self, name), where)
            object.__setattr__(self, name, level)
            # Inherited output is never read as lines: a level there would do nothing.
            if self.output == "inherit" and level != default:
                raise FieldValueError(
                    name, 'applies only to output="capture" or "json", not "inherit"', where
                )
        if self.json_keys is not None:
            if self.output != "json":
                raise FieldValueError("json_keys", 'applies only to output="json"', where)
            keys = check_json_keys("json_keys", self.json_keys, where)
            object.__setattr__(self, "json_keys", keys)

    def _check_program(self, where: str) -> None:
        """Check the fields of a program child (*command* and what only it may have)."""
        if (self.target is None) == (self.command is None):
            both = "both" if self.target is not None else "neither"
            raise FieldValueError(
                "target", f"give exactly one of target and command, got {both}", where
            )
        if self.command is None:
            for name in ("env", "cwd", "ready"):
                if getattr(self, name) is not None:
                    raise FieldValueError(name, "applies only to a child with a command", where)
            if self.stop_signal != signal.SIGTERM:
                raise FieldValueError(
                    "stop_signal", "applies only to a child with a command", where
                )
            return
        object.__setattr__(self, "command", check_command("command", self.command, where))
        if self.env is not None:
            object.__setattr__(self, "env", check_env("env", self.env, where))
        if self.cwd is not None:
            if not isinstance(self.cwd, str | os.PathLike):
                raise FieldTypeError("cwd", f"expected a path, got {self.cwd!r}", where)
            object.__setattr__(self, "cwd", os.fspath(self.cwd))
        if self.ready is not None and not isinstance(self.ready, _ready.ReadyKind):
            raise FieldTypeError(
                "ready",
                "expected None or a kind from gymnasiarch.ready (Notify(), Port(...), "
                f"Path(...), Line(...)), got {self.ready!r}",
                where,
            )
        if isinstance(self.ready, _ready.Line) and self.output == "inherit":
            raise FieldValueError(
                "ready",
                'ready=Line(...) reads the output: it needs output="capture" (or "json")',
                where,
            )
        object.__setattr__(
            self, "stop_signal", check_stop_signal("stop_signal", self.stop_signal, where)
        )

    def _check_ports(self, where: str) -> None:
        """Check *ports* (names, for a program only) and the placeholders that name them.

        A child with ports: each ``{name}`` in its command, env values and
        ready kind is one of them, and each of them is used in one of those
        (a port used nowhere would be published as the child's address while
        the program listens elsewhere). Without ports only a ``ready.Port``'s
        placeholder is checked: nothing else is filled in.
        """
        ports = self.ports
        if isinstance(ports, str | bytes) or not isinstance(ports, Sequence):
            raise FieldTypeError("ports", f"expected a list of names, got {ports!r}", where)
        seen: set[str] = set()
        for name in ports:
            if not isinstance(name, str):
                raise FieldTypeError("ports", f"expected names (strings), got {name!r}", where)
            if _PORT_NAME.fullmatch(name) is None:
                raise FieldValueError(
                    "ports",
                    f"a port's name must be an identifier like 'api' (it is written "
                    f"'{{api}}' where the port goes), got {name!r}",
                    where,
                )
            if name in seen:
                raise FieldValueError("ports", f"duplicate port name {name!r}", where)
            if name == "host":
                raise FieldValueError(
                    "ports",
                    "a port cannot be named 'host': on a Ray cluster the ready value "
                    "{'host': node address, <name>: port, ...} has that key already",
                    where,
                )
            seen.add(name)
        if ports and self.command is None:
            raise FieldValueError(
                "ports",
                "applies only to a child with a command (a Python child binds port 0 "
                "itself and announces it with child_context().ready(value))",
                where,
            )
        object.__setattr__(self, "ports", tuple(ports))
        declared = ", ".join(repr(n) for n in ports) or "none"
        wanted = self.ready.placeholder if isinstance(self.ready, _ready.Port) else None
        if wanted is not None and wanted not in seen:
            raise FieldValueError(
                "ready",
                f"{self.ready!r}: {{{wanted}}} is not one of the child's ports "
                f"(declared: {declared}); add {wanted!r} to ports",
                where,
            )
        if ports:
            self._check_placeholders(where)

    def _check_placeholders(self, where: str) -> None:
        """Each ``{name}`` filled in is one of the ports, and each port is one filled in."""
        seen = set(self.ports)
        declared = ", ".join(repr(n) for n in self.ports)
        used: set[str] = set()
        for field_name, text in self._filled_texts():
            for match in _ready.PLACEHOLDER_OR_ESCAPE.finditer(text):
                name = match.group(2)
                if name is None:
                    continue  # {{name}}: the text {name}
                if name not in seen:
                    raise FieldValueError(
                        field_name,
                        f"{{{name}}} is not one of the child's ports (declared: {declared}); "
                        f"add {name!r} to ports, or write {{{{{name}}}}} for the text {{{name}}}",
                        where,
                    )
                used.add(name)
        for name in self.ports:
            if name not in used:
                raise FieldValueError(
                    "ports",
                    f"{name!r} is used in none of command, env, ready: write {{{name}}} "
                    "where the program is to be given its port, or drop the name",
                    where,
                )

    def _filled_texts(self) -> list[tuple[str, str]]:
        """The texts ports are filled into, each with its field: ``command[2]``, ``env.X``."""
        # A FromReady's value is filled in as it is (see Supervisor._program_text).
        texts = [
            (f"command[{i}]", part)
            for i, part in enumerate(self.command or ())
            if isinstance(part, str)
        ]
        texts += [(f"env.{k}", v) for k, v in (self.env or {}).items() if isinstance(v, str)]
        if isinstance(self.ready, _ready.Port) and self.ready.placeholder is not None:
            texts.append(("ready", str(self.ready.port)))
        elif isinstance(self.ready, _ready.Path):
            texts.append(("ready", str(self.ready)))
        elif isinstance(self.ready, _ready.Line):
            texts.append(("ready", self.ready.regex))
        return texts


#: What a port of ``ChildSpec.ports`` may be called: what a ``{name}`` placeholder holds.
_PORT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Backoff:
    """How long to wait before restarting a child that keeps failing.

    The n-th restart in a row waits ``min(cap, base * factor**(n-1))``
    seconds, varied by up to ``jitter`` (a fraction) either way so that
    siblings do not restart in lockstep. A child that ran for at least
    ``reset_after`` seconds before it ended starts again from ``base``.
    """

    base: float = 0.1
    factor: float = 2.0
    cap: float = 10.0
    jitter: float = 0.1
    reset_after: float = 10.0

    def __post_init__(self) -> None:
        for name in ("base", "cap", "reset_after"):
            check_seconds(name, getattr(self, name), allow_none=False, owner="Backoff")
        # Not seconds, and with bounds of their own: one message each, for -1
        # as for 0.5 (a factor) or 2 (a jitter), NaN included.
        for name in ("factor", "jitter"):
            value: Any = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise FieldTypeError(name, f"expected a number, got {value!r}", "Backoff")
        if not self.factor >= 1 or self.factor == math.inf:
            raise FieldValueError(
                "factor", f"expected a finite number >= 1, got {self.factor!r}", "Backoff"
            )
        if self.base == math.inf:  # cap may be: no cap
            raise FieldValueError(
                "base", f"expected a finite number of seconds >= 0, got {self.base!r}", "Backoff"
            )
        if not 0 <= self.jitter <= 1:
            raise FieldValueError(
                "jitter", f"expected a fraction from 0 to 1, got {self.jitter!r}", "Backoff"
            )

    def delay(self, attempt: int, *, rng: Rng = random) -> float:
        """Seconds to wait before restart number *attempt* (1 = the first in a row).

        The jitter is drawn from *rng*: pass a seeded ``random.Random`` for
        delays that are the same on every run.
        """
        try:
            growth = float(self.factor) ** max(0, attempt - 1)  # float: ints would not overflow
            raw = float(min(self.cap, self.base * growth))
        except OverflowError:  # a long run of failures: the cap, whatever it is
            raw = self.cap
        if raw == math.inf:  # no cap: jitter would make it NaN
            return raw
        spread = raw * self.jitter
        return max(0.0, raw + rng.uniform(-spread, spread))
