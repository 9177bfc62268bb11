"""Supervision trees described in TOML files: load, check, and build a Supervisor.

A tree file has one ``[supervisor]`` table and one ``[[child]]`` table per
child, in start order. A child with ``[[child.child]]`` tables of its own is
a nested supervisor::

    [supervisor]
    strategy = "one_for_one"
    max_restarts = 3
    max_seconds = 5.0
    seed = 1234

    [supervisor.runtime_config]
    broker_uri = "ipc:///tmp/broker"

    [[child]]
    name = "env"
    target = "mysim.env:run"
    params = { steps = 100 }
    restart = "permanent"

Every mistake is reported with its key path and line:
``child[2].restart (line 14): expected one of permanent, transient,
temporary, got 'sometimes'``; the error raised names the first and carries
them all (:attr:`TreeFileError.mistakes`): each key of each table is
checked whatever else is wrong, by the same checks as in Python.
:func:`load_tree` checks structure and types; ``resolve=True`` also imports
every target (and looks for every program), so an import error shows up when
the file is checked, not when the child first starts.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import difflib
import functools
import os
import re
import shutil
import sys
import tomllib
import types
import typing
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

from gymnasiarch import ready as ready_kinds
from gymnasiarch._from_ready import FromReady, substitute
from gymnasiarch._spec import Backoff, ChildSpec, ready_references
from gymnasiarch._supervisor.options import SupervisorOptions
from gymnasiarch._supervisor.supervisor import Supervisor
from gymnasiarch.dynaloader import resolve as resolve_target
from gymnasiarch.exceptions import FieldError, GymnasiarchError

__all__ = ["TreeFileError", "load_tree"]

_T = TypeVar("_T")


def _names(cls: type) -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(cls))


# The keys a file may use are the fields of the values they build; the values
# are checked by those values themselves (each error names its field). A few
# keys differ: a file says "params" for ChildSpec's kwargs, "child" for a
# supervisor's children, and names its backend ("local" or "ray") instead of
# giving one. The command line owns the signals.
_RENAMED = {"kwargs": "params", "children": "child"}
_NOT_IN_FILES = frozenset({"handle_signals", "backend"})
# Where the children run is the whole tree's choice, made at its top; how a
# parent treats a supervisor is said only where it is nested.
_TOP_ONLY = frozenset({"runtime_config", "start_method", "backend", "address"})
_NESTED_ONLY = frozenset({"restart", "significant", "shutdown"})
_OPTION_KEYS = _names(SupervisorOptions) - _NOT_IN_FILES
_SUPERVISOR_KEYS = (_OPTION_KEYS - _NESTED_ONLY) | {"backend", "address"}
_NESTED_KEYS = (_OPTION_KEYS - _TOP_ONLY) | {"child"}
_CHILD_KEYS = frozenset(_RENAMED.get(name, name) for name in _names(ChildSpec))
_BACKOFF_KEYS = _names(Backoff)
_FROM_FILE = {spelled: name for name, spelled in _RENAMED.items()}
# Tried in place of a wrong field besides the values of its type (see
# _Loader._caused_by_others): a ready kind and a program that need nothing else.
_STAND_IN_TARGET = "placeholder.module:target"  # for checks of other fields: never imported
_LINE_KEY = {"regex": "line"}  # ready.Line's field, as a file spells it
_ALSO_TRIED: dict[str, tuple[Any, ...]] = {
    "ready": (ready_kinds.Notify(),),
    "command": (("program",),),
}


def _field_head(field: str) -> str:
    """The argument *field* is in: ``command`` of ``command[2]`` or ``env`` of ``env.X``."""
    return re.split(r"[.\[]", field, maxsplit=1)[0]


def _values_of(hint: Any) -> tuple[Any, ...]:
    """Every value of a type of few values (a Literal, bool, or a union of them), else none."""
    if hint is bool:
        return (False, True)
    if typing.get_origin(hint) is Literal:
        return typing.get_args(hint)
    if typing.get_origin(hint) in (Union, types.UnionType):
        return tuple(value for arg in typing.get_args(hint) for value in _values_of(arg))
    return ()


@functools.cache
def _choices(cls: type) -> dict[str, tuple[Any, ...]]:
    """The fields of *cls* of few values, and those values (read from its annotations)."""
    # A name imported only for type checkers (SupervisorOptions' Backend) is
    # no type of few values: stand anything in for it.
    stand_ins: dict[str, Any] = {}
    for _ in range(len(dataclasses.fields(cls)) + 1):
        try:
            hints = typing.get_type_hints(cls, localns=stand_ins)
        except NameError as error:
            if error.name is None or error.name in stand_ins:
                return {}
            stand_ins[error.name] = object
        else:
            return {name: values for name, hint in hints.items() if (values := _values_of(hint))}
    return {}


#: The key of a table that stands for a sibling's ready value: ``{ from_ready = "env" }``.
_FROM_READY_KEY = "from_ready"
#: What a value is once its mistakes are listed (None may be a value).
_WRONG = object()


class TreeFileError(GymnasiarchError):
    """A tree file that cannot be used; the message names the key path and line.

    Attributes:
        path: The file.
        key: The key path (``child[2].restart``), or ``None`` for the file.
        line: The 1-based line, where known.
        mistakes: Every mistake :func:`load_tree` found in the file, in file
            order (one of no known line last), this one first
            (``gymnasiarch check`` prints one line each). It pickles with them.
    """

    def __init__(self, message: str, *, path: str, key: str | None = None, line: int | None = None):
        where = path
        if key is not None:
            where += f": {key}"
        if line is not None:
            where += f" (line {line})"
        super().__init__(f"{where}: {message}")
        self.path = path
        self.key = key
        self.line = line
        self.mistakes: list[TreeFileError] = [self]
        self._message = message

    def __reduce__(self) -> tuple[Any, ...]:
        # Its keyword-only arguments are not in args, which the default passes
        # alone; mistakes (itself among them: pickle keeps the cycle) as state.
        return (
            _rebuild_tree_file_error,
            (self._message, self.path, self.key, self.line),
            {"mistakes": self.mistakes, **self._own_state()},
        )

    def _own_state(self) -> dict[str, Any]:
        """What else is set on it (``__notes__``, say), for its copy."""
        skip = {"path", "key", "line", "mistakes", "_message"}
        return {k: v for k, v in self.__dict__.items() if k not in skip}


def _rebuild_tree_file_error(
    message: str, path: str, key: str | None, line: int | None
) -> TreeFileError:
    return TreeFileError(message, path=path, key=key, line=line)


class _ReportedError(Exception):
    """The mistakes of this part are already listed: stop building it, go on with the next."""


@dataclass
class _Lines:
    """Where each key path starts in the source (tomllib keeps no positions)."""

    found: dict[str, int]

    @classmethod
    def of(cls, text: str) -> _Lines:
        found: dict[str, int] = {}
        counters: dict[str, int] = {}
        table = ""
        header = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-\s\"]+?)\s*\]\]?\s*(#.*)?$")
        assignment = re.compile(r"^\s*([A-Za-z0-9_\-\"]+)\s*=")
        for number, line in enumerate(text.splitlines(), start=1):
            if match := header.match(line):
                parts = [p.strip().strip('"') for p in match.group(2).split(".")]
                table = cls._table_path(parts, match.group(1) == "[[", counters, found)
                found.setdefault(table, number)
            elif match := assignment.match(line):
                key = match.group(1).strip('"')
                found.setdefault(f"{table}.{key}" if table else key, number)
        return cls(found)

    @staticmethod
    def _table_path(
        parts: list[str], is_array: bool, counters: dict[str, int], found: dict[str, int]
    ) -> str:
        # Array-of-tables headers like [[child.child]] index into the latest
        # element of each enclosing array: child[1].child[0].
        path = ""
        for depth, part in enumerate(parts):
            prefix = f"{path}.{part}" if path else part
            last = depth == len(parts) - 1
            if last and is_array:
                index = counters.get(prefix, -1) + 1
                counters[prefix] = index
                # A new element: forget the counters of arrays inside the old one.
                for key in [k for k in counters if k.startswith(f"{prefix}[")]:
                    del counters[key]
                path = f"{prefix}[{index}]"
            elif prefix in counters:
                path = f"{prefix}[{counters[prefix]}]"
            else:
                path = prefix
        return path

    def line(self, key: str) -> int | None:
        """The line of *key*, or of the closest enclosing table."""
        while key:
            if key in self.found:
                return self.found[key]
            # An item of a list (child[0].command[2]) is on the line of its list.
            head, dot, last = key.rpartition(".")
            key = f"{head}{dot}{last.partition('[')[0]}" if "[" in last else head
        return None


class _Loader:
    def __init__(self, path: str, lines: _Lines, resolve: bool, folder: str) -> None:
        self.path = path
        self.lines = lines
        self.resolve = resolve
        self.folder = folder
        # Every mistake found, so that one check shows them all: each field of
        # a part is checked whatever else of it is wrong (see checked()); a
        # part with a mistake is not built, its siblings still are (and checked).
        self.mistakes: list[TreeFileError] = []
        self.where_of: dict[int, str] = {}  # a built ChildSpec's id: its table's key path

    @contextlib.contextmanager
    def collecting(self) -> Iterator[None]:
        """A mistake raised inside is listed, and the loader goes on after the block."""
        try:
            yield
        except TreeFileError as error:
            self.mistakes.append(error)
        except _ReportedError:
            pass

    def error(self, key: str, message: str) -> TreeFileError:
        return TreeFileError(message, path=self.path, key=key, line=self.lines.line(key))

    def check_keys(
        self, where: str, table: Mapping[str, Any], allowed: Collection[str]
    ) -> set[str]:
        """List each key of *table* that is not one of *allowed*.

        Returns:
            Those keys: their values are not checked again (one mistake, one line).
        """
        wrong: set[str] = set()
        for key in table:
            key_path = f"{where}.{key}" if where else key
            if key not in allowed:
                known = ", ".join(sorted(allowed))
                self.mistakes.append(
                    self.error(key_path, f"unknown key {key!r} (known keys: {known})")
                )
                wrong.add(key)
        # TOML's inf and nan are judged by the fields' own checks, as in
        # Python: `shutdown = inf` waits for ever, as math.inf does there.
        return wrong

    def supervisor(
        self,
        where: str,
        table: Mapping[str, Any],
        children: list[Any],
        before: int,
        wrong_keys: Collection[str] = (),
    ) -> Supervisor:
        """The supervisor of *table*, its options checked whatever its children's mistakes.

        *before* is how many mistakes were listed before its keys; *wrong_keys*
        are those of its keys already listed (unknown ones, say).

        Raises:
            _ReportedError: It or one of its children has a mistake (each one is listed).
        """
        # The root's options are under [supervisor], its children at the top.
        at = where or "supervisor"
        prefix = f"{where}." if where else ""
        options: dict[str, Any] = {
            k: v
            for k, v in table.items()
            if k not in ("child", "backoff", "backend", "address") and k not in wrong_keys
        }
        wrong = set(wrong_keys)
        backend: Any = None
        if not where:  # the root's: a nested one's backend is an unknown key, listed already
            with self.collecting():
                backend = self.backend(table.get("backend", "local"), table.get("address"))
        if "backoff" in table and "backoff" not in wrong_keys:
            backoff = self.backoff(f"{at}.backoff", table["backoff"])
            if backoff is None:
                wrong.add("backoff")
            else:
                options["backoff"] = backoff
        self.checked(at, SupervisorOptions, options, wrong=wrong, key=lambda f: f"{at}.{f}")
        if not isinstance(children, list) or not children:
            self.mistakes.append(self.error(f"{prefix}child", "expected [[child]] tables"))
            raise _ReportedError
        specs: list[tuple[int, ChildSpec | Supervisor]] = []
        for index, child in enumerate(children):
            with self.collecting():
                specs.append((index, self.child(f"{prefix}child[{index}]", child)))
        # A child with a mistake has a name all the same (unless it is the mistake).
        names = [(i, c.get("name")) for i, c in enumerate(children) if isinstance(c, dict)]
        self.check_names(prefix, names)
        if len(self.mistakes) > before:
            self.sources_beside_mistakes(prefix, children, dict(specs), options)
            raise _ReportedError
        if backend is not None:
            options["backend"] = backend
        # What only the whole supervisor can check (its children's names, each
        # unique; their from_ready sources). A child whose from_ready is wrong
        # is listed and tried again without it, so that every one is listed.
        children = [spec for _, spec in specs]
        while True:
            try:
                built = self.build(
                    at,
                    Supervisor,
                    children,
                    key=lambda f: prefix + f if f.startswith("child[") else f"{at}.{f}",
                    **options,
                )
            except TreeFileError as error:
                place = _referring_child(error, prefix, children)
                if place is None and len(self.mistakes) > before:
                    # A try again without a child's from_ready: its nested
                    # groups were adopted by the try before (said already).
                    raise _ReportedError from None
                if place is None:
                    raise
                self.mistakes.append(error)
                children[place] = _without_references(children[place])
                continue
            # Built, even with mistakes listed: the root's sources that no
            # child has are found on it (see load_tree), then all are told.
            return built

    def sources_beside_mistakes(
        self,
        prefix: str,
        tables: list[Any],
        good: dict[int, ChildSpec | Supervisor],
        options: Mapping[str, Any],
    ) -> None:
        """List the from_ready mistakes of the children that are right, beside the others'.

        A child with a mistake stands in, in its place, as a child of its
        name that is ready in time: a from_ready that names it is judged by
        its order alone; one that names a child inside it is not judged. Where even that
        cannot be built (a name that is wrong too), nothing more is said.
        """
        broken = {
            str(table.get("name"))
            for place, table in enumerate(tables)
            if place not in good and isinstance(table, dict)
        }
        stand_ins: list[ChildSpec | Supervisor] = []
        names: set[str] = set()
        try:
            for place, table in enumerate(tables):
                spec = good.get(place)
                name = table.get("name") if isinstance(table, dict) else None
                if str(name) in names:  # a duplicate (listed already): a stand-in of its own
                    spec = ChildSpec(f"duplicate {place}", _STAND_IN_TARGET, ready_timeout=1)
                    good.pop(place, None)
                elif spec is None:
                    spec = ChildSpec(str(name), _STAND_IN_TARGET, ready_timeout=1)
                elif isinstance(spec, ChildSpec) and any(
                    _below(ref.source, broken) for ref in ready_references(spec)
                ):
                    spec = _without_references(spec)
                names.add(str(name))
                stand_ins.append(spec)
        except (ValueError, TypeError):
            return
        parallel = options.get("start_order") == "parallel"
        for attempt in range(len(tables)):  # at most one mistake a child
            try:
                Supervisor(stand_ins, start_order="parallel" if parallel else "sequential")
            except FieldError as error:
                wrong = _place(error.field)
                spec = None if wrong is None else stand_ins[wrong]
                nested = isinstance(spec, Supervisor)
                # Nothing (more) to say: about a stand-in; not about a from_ready (a
                # duplicate name, listed already); about a nested group adopted by
                # the try before.
                if (
                    wrong not in good
                    or (isinstance(spec, ChildSpec) and not ready_references(spec))
                    or (nested and attempt)
                ):
                    return
                self.mistakes.append(self.field_error("", error, lambda f: prefix + f))
                if not isinstance(spec, ChildSpec):
                    return  # a nested group's, which cannot be tried again without it
                stand_ins[wrong] = _without_references(spec)
            except (ValueError, TypeError):
                return
            else:
                return

    def check_names(self, prefix: str, names: list[tuple[int, object]]) -> None:
        """List each child (of *names*: its place and name) whose name an earlier one has.

        The Supervisor's own check judges, which stops at the first: it is
        given stand-ins of the same names (a nested supervisor is adopted by
        the one it is given to, once), and asked again without each one found.
        A name that is itself wrong (or missing) is listed already: left out.
        """
        left: list[tuple[int, ChildSpec]] = []
        for index, name in names:
            with contextlib.suppress(FieldError):
                left.append((index, ChildSpec(name, target=_STAND_IN_TARGET)))  # type: ignore[arg-type]
        while left:
            try:
                Supervisor([stand_in for _, stand_in in left])
            except FieldError as error:
                place = _place(error.field)
                if place is None:  # no one child's: the final build tells it
                    return
                index, _ = left.pop(place)
                self.mistakes.append(self.error(f"{prefix}child[{index}]", error.message))
            else:
                return

    def backoff(self, where: str, table: object) -> Backoff | None:
        """A ``backoff = {...}`` table as a Backoff, or None once its mistakes are listed."""
        if not isinstance(table, dict):
            self.mistakes.append(self.error(where, f"expected a table, got {table!r}"))
            return None
        wrong = self.check_keys(where, table, _BACKOFF_KEYS)
        given = {k: v for k, v in table.items() if k not in wrong}
        built, wrong = self.checked(where, Backoff, given, wrong=wrong)
        return None if wrong else built

    def backend(self, kind: object, address: object) -> Any:
        """The ``[supervisor]`` table's ``backend`` (and ``address``), built."""
        if kind not in ("local", "ray"):
            raise self.error("supervisor.backend", f'expected "local" or "ray", got {kind!r}')
        if address is not None and not isinstance(address, str):
            raise self.error("supervisor.address", f"expected a string, got {address!r}")
        if kind == "local":
            if address is not None:
                raise self.error("supervisor.address", 'an address needs backend = "ray"')
            return None
        from gymnasiarch.ray_backend import RayBackend  # noqa: PLC0415 - Ray is optional

        # The targets may live next to the file: ship its folder to the workers.
        runtime_env = {"working_dir": self.folder}
        return self.build(
            "supervisor", RayBackend, address, init_options={"runtime_env": runtime_env}
        )

    def child(self, where: str, table: Any) -> ChildSpec | Supervisor:
        """The child of *table*: each of its keys checked, its target or program looked for.

        Raises:
            TreeFileError: It is no table.
            _ReportedError: It has mistakes (each one is listed).
        """
        if not isinstance(table, dict):
            raise self.error(where, "expected a table ([[child]])")
        before = len(self.mistakes)
        wrong: set[str] = set()
        if "name" not in table:
            self.mistakes.append(self.error(where, "missing key 'name'"))
            wrong.add("name")
        if "child" in table:  # a nested supervisor, its children checked all the same
            wrong |= self.check_keys(where, table, _NESTED_KEYS)
            return self.supervisor(where, table, table["child"], before, wrong)
        wrong |= {_FROM_FILE.get(k, k) for k in self.check_keys(where, table, _CHILD_KEYS)}
        # A placeholder of its kind stands in for a wrong name, target or
        # command, so that the other fields are checked (it is never looked for).
        fallback: dict[str, Any] = {"name": "child"}
        if "command" in table:
            fallback["command"] = ("program",)
        else:
            fallback["target"] = _STAND_IN_TARGET
            if "target" not in table:
                self.mistakes.append(
                    self.error(
                        where,
                        "missing key 'target' (a dotted path like 'pkg.mod:function') "
                        "or 'command' (a program and its arguments, as a list)",
                    )
                )
                wrong |= {"target", "command"}  # a program's fields are not told off for it
        given: dict[str, Any] = {_FROM_FILE.get(str(k), str(k)): v for k, v in table.items()}
        given = {k: v for k, v in given.items() if k not in wrong}
        self.take_from_ready(where, given, wrong)
        if "ready" in given:
            ready = self.ready(f"{where}.ready", given["ready"])
            if ready is None:
                wrong.add("ready")
                del given["ready"]
            else:
                given["ready"] = ready
        spec, wrong = self.checked(
            where, ChildSpec, given, wrong=wrong, fallback=fallback, also=_ALSO_TRIED
        )
        # Its target or program is looked for whatever else is wrong: one check
        # shows both (unless it is itself what is wrong).
        if self.resolve:
            with self.collecting():
                self.look_for(where, table, given, wrong)
        if spec is None or wrong or len(self.mistakes) > before:
            raise _ReportedError
        self.where_of[id(spec)] = where
        return spec

    def look_for(
        self, where: str, table: Mapping[str, Any], given: Mapping[str, Any], wrong: set[str]
    ) -> None:
        """``gymnasiarch check``: the child's program is found, or its target imports."""
        if "command" in table:
            cwd = given.get("cwd") if "cwd" not in wrong else None
            if cwd is not None and not os.path.isdir(cwd):
                # As `run` finds it: from the directory it is started in.
                self.mistakes.append(
                    self.error(f"{where}.cwd", f"{os.fspath(cwd)!r} is not a directory")
                )
                cwd = None
            if "command" not in wrong:
                env = given.get("env") if "env" not in wrong else None
                self.find_program(where, given["command"], env, cwd)
        elif "target" not in wrong:
            try:
                resolve_target(table["target"])
            except Exception as error:  # any import failure is reported
                raise self.error(f"{where}.target", str(error)) from None

    def take_from_ready(self, where: str, given: dict[str, Any], wrong: set[str]) -> None:
        """A child's fields where a from_ready table may be, with each as a FromReady.

        A field with a wrong one is taken out of *given* and added to *wrong*.
        """
        for name in ("args", "kwargs", "command", "env"):
            if name in given:
                value = self.from_ready_values(f"{where}.{_RENAMED.get(name, name)}", given[name])
                if value is _WRONG:
                    wrong.add(name)
                    del given[name]
                else:
                    given[name] = value

    def from_ready_values(self, where: str, value: Any) -> Any:
        """*value* with each ``{ from_ready = "env", key = "port" }`` table as a FromReady.

        Looked for in lists and tables at any depth (an argument may be a
        list of addresses). :data:`_WRONG` once its mistakes are listed.
        """
        if isinstance(value, dict) and _FROM_READY_KEY not in value:
            # A misspelt one would pass as a plain table: the child would get a
            # dict. Only a table of that shape: a name, and perhaps a key.
            names = [k for k, v in value.items() if k != "key" and isinstance(v, str)]
            if (
                len(names) == 1
                and len(value) <= 2
                and difflib.get_close_matches(names[0], [_FROM_READY_KEY], n=1, cutoff=0.8)
            ):
                self.mistakes.append(
                    self.error(where, f"unknown key {names[0]!r}: did you mean 'from_ready'?")
                )
                return _WRONG
        if isinstance(value, dict) and _FROM_READY_KEY in value:
            extra = sorted(set(value) - {_FROM_READY_KEY, "key"})
            source, key = value[_FROM_READY_KEY], value.get("key")
            if extra:
                message = (
                    f"a from_ready table takes 'from_ready' and 'key', got also "
                    f"{', '.join(map(repr, extra))}"
                )
            elif not isinstance(source, str) or not source.strip("/"):
                message = f"from_ready must name a child ('env', 'world/env'), got {source!r}"
            elif key is not None and (isinstance(key, bool) or not isinstance(key, str | int)):
                message = f"key must be a string or an integer, got {key!r}"
            else:
                return FromReady(source, key=key)
            self.mistakes.append(self.error(where, message))
            return _WRONG
        if isinstance(value, list | dict):
            if isinstance(value, dict):
                found = {k: self.from_ready_values(f"{where}.{k}", v) for k, v in value.items()}
            else:
                found = {i: self.from_ready_values(f"{where}[{i}]", v) for i, v in enumerate(value)}
            if any(v is _WRONG for v in found.values()):
                return _WRONG
            return found if isinstance(value, dict) else list(found.values())
        return value

    def ready(self, where: str, table: object) -> ready_kinds.ReadyKind | None:
        """A ``ready = {...}`` table as the ready kind it names: notify, port, path or line.

        None once its mistakes are listed.
        """
        kinds = {"notify", "port", "path", "line"}
        if not isinstance(table, dict) or len(kinds & set(table)) != 1:
            self.mistakes.append(
                self.error(
                    where,
                    'expected one of {notify = true}, {port = 6390}, {path = "..."}, '
                    f'{{line = "regex"}}, got {table!r}',
                )
            )
            return None
        if "notify" in table:
            wrong = self.check_keys(where, table, {"notify"})
            if "notify" not in wrong and table["notify"] is not True:
                self.mistakes.append(
                    self.error(f"{where}.notify", f"expected true, got {table['notify']!r}")
                )
                return None
            return None if wrong else ready_kinds.Notify()
        factory: type[ready_kinds.Port | ready_kinds.Path | ready_kinds.Line]
        if "port" in table:
            factory, allowed = ready_kinds.Port, {"port", "host"}
        elif "path" in table:
            factory, allowed = ready_kinds.Path, {"path"}
        else:
            factory, allowed = ready_kinds.Line, {"line"}
        wrong = self.check_keys(where, table, allowed)
        # Line's field is its regex, which a file calls line.
        given = {"regex" if k == "line" else k: v for k, v in table.items() if k not in wrong}
        kind: ready_kinds.ReadyKind | None
        kind, wrong = self.checked(
            where, factory, given, wrong=wrong, key=lambda f: f"{where}.{_LINE_KEY.get(f, f)}"
        )
        return None if wrong else kind

    def find_program(
        self, where: str, command: Any, env: Mapping[str, Any] | None, cwd: Any
    ) -> None:
        """``gymnasiarch check``: the program of a *command* (checked) can be found and run."""
        program = command[0]
        env = env or {}
        search = env["PATH"] if isinstance(env.get("PATH"), str) else os.environ.get("PATH")
        if os.sep in program:
            where_it_is = os.path.join(os.fspath(cwd or "."), program)
            found = where_it_is if os.access(where_it_is, os.X_OK) else None
        else:
            found = shutil.which(program, path=search)
        if found is None:
            raise self.error(f"{where}.command", f"program {program!r} not found or not executable")

    def checked(
        self,
        where: str,
        factory: Callable[..., _T],
        given: Mapping[str, Any],
        *,
        wrong: Collection[str] = (),
        fallback: Mapping[str, Any] | None = None,
        key: Callable[[str], str] | None = None,
        also: Mapping[str, tuple[Any, ...]] | None = None,
    ) -> tuple[_T | None, set[str]]:
        """Call *factory* with *given*, listing every field of it that is wrong.

        The factory's own checks judge (each error a FieldError naming its
        field); they stop at the first, so each field found wrong is left out
        (at its default, or its *fallback*) and the factory called again,
        until it builds. *wrong* are fields already listed (and left out).

        A field found wrong only because another one is (``significant``
        next to ``restart = "sometimes"``) is not listed: the root cause is
        (see :meth:`_caused_by_others`).

        Returns:
            What the factory built with the fields that are right (None if it
            cannot be built without the others), and every wrong field.
        """
        fallback = fallback or {}
        left_out = set(wrong)
        failed: dict[str, FieldError] = {}  # in the order found
        built: _T | None = None
        other: Exception | None = None  # about no one field
        while True:
            arguments = self._arguments(given, left_out, fallback)
            try:
                built = factory(**arguments)
                break
            except FieldError as error:
                head = _field_head(error.field)
                if head not in arguments or head in left_out:
                    # A default's or a fallback's: it only follows from a field left out.
                    other = error if not left_out else None
                    break
                failed[head] = error
                left_out.add(head)
            except (ValueError, TypeError) as error:
                other = error if not left_out else None
                break
        if other is not None:  # nothing else said what it was
            self.mistakes.append(self.error(where, str(other)))
        roots = [
            head
            for number, head in enumerate(failed)
            if not self._caused_by_others(
                factory=factory,
                given=given,
                head=head,
                wrong=left_out,
                earlier=list(failed)[:number],
                fallback=fallback,
                also=also or {},
            )
        ]
        if failed and not roots and not set(wrong):
            roots = [next(iter(failed))]  # the others' alternatives do not all fit at once
        for head in roots:
            self.mistakes.append(self.field_error(where, failed[head], key))
        return (built if not left_out else None), left_out

    def _caused_by_others(
        self,
        *,
        factory: Callable[..., Any],
        given: Mapping[str, Any],
        head: str,
        wrong: set[str],
        earlier: list[str],
        fallback: Mapping[str, Any],
        also: Mapping[str, tuple[Any, ...]],
    ) -> bool:
        """Whether *head* is wrong only because another field is.

        It is when its given value passes once some other wrong field is
        given a right one. Only fields of few values are tried in place of a
        wrong one: each value of a Literal type (``restart``, ``output``),
        True and False, and the values in *also*. It is too when a field
        found wrong before it (*earlier*) is right once *head* is left out:
        the two disagree (``command = ["sleep", "{apy}"]`` and ``ports =
        ["api"]``), which the first one found says. A check across fields
        that none of this satisfies is listed as it is found.
        """
        right = {k: v for k, v in given.items() if k not in wrong}
        choices = _choices(factory) if isinstance(factory, type) else {}
        for other in sorted(wrong - {head}):
            for value in (*choices.get(other, ()), *also.get(other, ())):
                tried = {**right, head: given[head], other: value}
                if self._passes(factory, tried, head, wrong, fallback):
                    return True
        return any(
            self._passes(factory, {**right, other: given[other]}, other, wrong, fallback)
            for other in earlier
        )

    def _passes(
        self,
        factory: Callable[..., Any],
        given: dict[str, Any],
        head: str,
        wrong: set[str],
        fallback: Mapping[str, Any],
    ) -> bool:
        """Whether *factory* finds *head* in *given* right (others left out as they are found)."""
        left_out = set(wrong) - set(given)
        fallback = dict(fallback)
        while True:
            arguments = self._arguments(given, left_out, fallback)
            try:
                factory(**arguments)
            except FieldError as error:
                other = _field_head(error.field)
                if other == head or other not in arguments:
                    return False
                if other in left_out:  # its placeholder stands in the way of the value tried
                    del fallback[other]
                left_out.add(other)
            except (ValueError, TypeError):
                return False
            else:
                return True

    @staticmethod
    def _arguments(
        given: Mapping[str, Any], left_out: Collection[str], fallback: Mapping[str, Any]
    ) -> dict[str, Any]:
        """*given* but *left_out*, each of those that has a *fallback* at it."""
        arguments = {k: v for k, v in given.items() if k not in left_out}
        arguments.update({k: v for k, v in fallback.items() if k in left_out})
        return arguments

    def field_error(
        self, where: str, error: FieldError, key: Callable[[str], str] | None = None
    ) -> TreeFileError:
        """*error* at its key: *where* and the field as a file spells it, or *key* of that."""
        head, bracket, rest = error.field.partition("[")
        field = _RENAMED.get(head, head) + bracket + rest
        path = key(field) if key is not None else f"{where}.{field}"
        return self.error(path, error.message)

    def build(
        self,
        where: str,
        factory: Callable[..., _T],
        *args: Any,
        key: Callable[[str], str] | None = None,
        **kwargs: Any,
    ) -> _T:
        """Call *factory*; its errors become errors at *where*, or at the key they name.

        A :class:`~gymnasiarch.exceptions.FieldError` names the field that was
        wrong (``restart``, ``children[2]``); its key is *where* and the field
        as a file spells it, or what *key* makes of it.
        """
        try:
            return factory(*args, **kwargs)
        except FieldError as error:
            raise self.field_error(where, error, key) from None
        except (ValueError, TypeError) as error:  # about no one field
            raise self.error(where, str(error)) from None


def _below(source: str, names: set[str]) -> bool:
    """Whether *source* is a path to a child inside one of the children *names*."""
    head, *rest = source.strip("/").split("/")
    return bool(rest) and head in names


def _place(field: str) -> int | None:
    """The place a field such as ``children[2]`` names, None for any other field."""
    head, bracket, rest = field.partition("[")
    if head != "children" or not bracket or not rest.endswith("]") or not rest[:-1].isdigit():
        return None
    return int(rest[:-1])


def _referring_child(
    error: TreeFileError, prefix: str, children: list[ChildSpec | Supervisor]
) -> int | None:
    """The place of the child whose from_ready *error* is about, if it is about one."""
    head = f"{prefix}child["
    if error.key is None or not error.key.startswith(head) or not error.key.endswith("]"):
        return None
    place = error.key[len(head) : -1]
    if not place.isdigit() or int(place) >= len(children):
        return None
    child = children[int(place)]
    if not isinstance(child, ChildSpec) or not ready_references(child):
        return None
    return int(place)


def _without_references(spec: ChildSpec) -> ChildSpec:
    """*spec* with each FromReady as a stand-in text (its other fields checked already)."""

    def stand_in(ref: FromReady) -> Any:
        # substitute() applies the key to what it gets: any key fits this.
        return "from_ready" if ref.key is None else collections.defaultdict(lambda: "from_ready")

    return dataclasses.replace(
        spec,
        args=substitute(tuple(spec.args), stand_in),
        kwargs=substitute(dict(spec.kwargs or {}), stand_in),
        command=None if spec.command is None else substitute(tuple(spec.command), stand_in),
        env=None if spec.env is None else substitute(dict(spec.env), stand_in),
    )


def load_tree(path: str | Path, *, resolve: bool = False, add_to_path: bool = True) -> Supervisor:
    """Read a tree file and build its (not yet started) supervisor.

    The file's directory is put on ``sys.path``, so targets may live next
    to it.

    Args:
        path: The TOML file.
        resolve: Also import every target now (what ``gymnasiarch check``
            does); otherwise the supervisor imports them when it starts.
        add_to_path: Put the file's directory on ``sys.path`` (first).

    Raises:
        TreeFileError: The file is missing, not TOML, or describes no valid
            tree; the message names the key path and line of the first
            mistake, its ``mistakes`` lists every one found.
    """
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise TreeFileError(f"cannot read it: {error.strerror or error}", path=name) from None
    except UnicodeDecodeError:
        raise TreeFileError("is not UTF-8 text", path=name) from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise TreeFileError(f"is not valid TOML: {error}", path=name) from None
    folder = str(Path(path).resolve().parent)
    loader = _Loader(name, _Lines.of(text), resolve, folder)
    for key in sorted(set(document) - {"supervisor", "child"}):
        loader.mistakes.append(
            loader.error(
                key, f"unknown top-level key {key!r} (expected [supervisor] and [[child]])"
            )
        )
    settings = document.get("supervisor", {})
    if not isinstance(settings, dict):
        raise loader.error("supervisor", "expected a table ([supervisor])")
    wrong = loader.check_keys("supervisor", settings, _SUPERVISOR_KEYS)
    children = document.get("child", [])
    if add_to_path and folder not in sys.path:
        sys.path.insert(0, folder)
    built: Supervisor | None = None
    with loader.collecting():
        built = loader.supervisor("", settings, children, 0, wrong)
    if built is not None:
        # A from_ready naming no child that starts before it: found only
        # once the whole tree is built (it may be a nested group's sibling).
        for spec, ref in built._pending_refs:
            loader.mistakes.append(
                loader.error(
                    loader.where_of.get(id(spec), "child"),
                    f"from_ready {ref.source!r}: no child of that name starts before "
                    f"{spec.name!r} (looked for among its earlier siblings, then among "
                    "the children started before each enclosing group)",
                )
            )
    if built is None or loader.mistakes:
        # In file order (found order is the order of the checks); a mistake
        # of no known line (the file's own) last. sorted() is stable.
        mistakes = sorted(loader.mistakes, key=lambda m: (m.line is None, m.line or 0))
        first = mistakes[0]
        first.mistakes = mistakes
        raise first
    return built
