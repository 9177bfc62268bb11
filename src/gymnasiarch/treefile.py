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
them all (:attr:`TreeFileError.mistakes`). :func:`load_tree` checks structure and types;
``resolve=True`` also imports every target, so an import error shows up when
the file is checked, not when the child first starts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
import shutil
import sys
import tomllib
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from gymnasiarch import ready as ready_kinds
from gymnasiarch._spec import Backoff, ChildSpec
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
        # Every mistake found, so that one check shows them all; a part with a
        # mistake is not built, its siblings still are (and checked).
        self.mistakes: list[TreeFileError] = []

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

    def check_keys(self, where: str, table: Mapping[str, Any], allowed: Collection[str]) -> None:
        """Every key of *table* is one of *allowed*; values are checked where they are used.

        Raises:
            _ReportedError: Some were not (each one is listed).
        """
        before = len(self.mistakes)
        for key, value in table.items():
            key_path = f"{where}.{key}" if where else key
            if key not in allowed:
                known = ", ".join(sorted(allowed))
                self.mistakes.append(
                    self.error(key_path, f"unknown key {key!r} (known keys: {known})")
                )
            # Python's values allow math.inf (wait for ever); a file says so by leaving it out.
            elif isinstance(value, float) and not math.isfinite(value):
                self.mistakes.append(
                    self.error(key_path, f"expected a finite number, got {value!r}")
                )
        if len(self.mistakes) > before:
            raise _ReportedError

    def supervisor(
        self, where: str, table: Mapping[str, Any], children: list[Any], before: int
    ) -> Supervisor:
        """The supervisor of *table*; *before* is how many mistakes were listed before its keys.

        Raises:
            _ReportedError: It or one of its children has a mistake (each one is listed).
        """
        options: dict[str, Any] = {k: v for k, v in table.items() if k not in ("child", "backoff")}
        if not where:  # the root's: a nested one's backend is an unknown key, listed already
            with self.collecting():
                kind, address = options.pop("backend", "local"), options.pop("address", None)
                backend = self.backend(kind, address)
                if backend is not None:
                    options["backend"] = backend
        if "backoff" in table:
            backoff_key = f"{where}.backoff" if where else "supervisor.backoff"
            with self.collecting():
                if not isinstance(table["backoff"], dict):
                    raise self.error(backoff_key, f"expected a table, got {table['backoff']!r}")
                self.check_keys(backoff_key, table["backoff"], _BACKOFF_KEYS)
                options["backoff"] = self.build(backoff_key, Backoff, **table["backoff"])
        if not isinstance(children, list) or not children:
            self.mistakes.append(
                self.error(f"{where}.child" if where else "child", "expected [[child]] tables")
            )
            raise _ReportedError
        prefix = f"{where}." if where else ""
        specs: list[ChildSpec | Supervisor] = []
        for index, child in enumerate(children):
            with self.collecting():
                specs.append(self.child(f"{prefix}child[{index}]", child))
        if len(self.mistakes) > before:
            raise _ReportedError
        # The root's options are under [supervisor], its children at the top.
        at = where or "supervisor"
        return self.build(
            at,
            Supervisor,
            specs,
            key=lambda field: prefix + field if field.startswith("child[") else f"{at}.{field}",
            **options,
        )

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
        if not isinstance(table, dict):
            raise self.error(where, "expected a table ([[child]])")
        if "name" not in table:
            raise self.error(where, "missing key 'name'")
        if "child" in table:  # a nested supervisor
            before = len(self.mistakes)
            with self.collecting():  # its children are checked all the same
                self.check_keys(where, table, _NESTED_KEYS)
            return self.supervisor(where, table, table["child"], before)
        self.check_keys(where, table, _CHILD_KEYS)
        if "target" not in table and "command" not in table:
            raise self.error(
                where,
                "missing key 'target' (a dotted path like 'pkg.mod:function') "
                "or 'command' (a program and its arguments, as a list)",
            )
        options = {k: v for k, v in table.items() if k not in ("args", "params")}
        spec: ChildSpec | None = None
        with self.collecting():
            if "ready" in table:
                options["ready"] = self.ready(f"{where}.ready", table["ready"])
            spec = self.build(
                where,
                ChildSpec,
                args=table.get("args", ()),
                kwargs=table.get("params"),
                **options,
            )
        # Its target or program is looked for even when a field was wrong: one
        # check shows both.
        with self.collecting():
            if self.resolve and "command" in table:
                if spec is not None:  # where to look (cwd, PATH) is the spec's
                    self.find_program(where, spec)
            elif self.resolve:
                try:
                    resolve_target(table["target"])
                except Exception as error:  # any import failure is reported
                    raise self.error(f"{where}.target", str(error)) from None
        if spec is None:
            raise _ReportedError
        return spec

    def ready(self, where: str, table: object) -> ready_kinds.ReadyKind:
        """A ``ready = {...}`` table as the ready kind it names: notify, port, path or line."""
        kinds = {"notify", "port", "path", "line"}
        if not isinstance(table, dict) or len(kinds & set(table)) != 1:
            raise self.error(
                where,
                'expected one of {notify = true}, {port = 6390}, {path = "..."}, '
                f'{{line = "regex"}}, got {table!r}',
            )
        if "notify" in table:
            self.check_keys(where, table, {"notify"})
            if table["notify"] is not True:
                raise self.error(f"{where}.notify", f"expected true, got {table['notify']!r}")
            return ready_kinds.Notify()
        if "port" in table:
            self.check_keys(where, table, {"port", "host"})
            return self.build(where, ready_kinds.Port, **table)
        if "path" in table:
            self.check_keys(where, table, {"path"})
            return self.build(where, ready_kinds.Path, **table)
        self.check_keys(where, table, {"line"})
        return self.build(where, ready_kinds.Line, table["line"], key=lambda _: f"{where}.line")

    def find_program(self, where: str, spec: ChildSpec) -> None:
        """``gymnasiarch check``: the program of *spec* can be found and run."""
        assert spec.command is not None
        program = spec.command[0]
        env = spec.env or {}
        search = env["PATH"] if "PATH" in env else os.environ.get("PATH")
        if os.sep in program:
            where_it_is = os.path.join(os.fspath(spec.cwd or "."), program)
            found = where_it_is if os.access(where_it_is, os.X_OK) else None
        else:
            found = shutil.which(program, path=search)
        if found is None:
            raise self.error(f"{where}.command", f"program {program!r} not found or not executable")

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
            head, bracket, rest = error.field.partition("[")
            field = _RENAMED.get(head, head) + bracket + rest
            path = key(field) if key is not None else f"{where}.{field}"
            raise self.error(path, error.message) from None
        except (ValueError, TypeError) as error:  # about no one field
            raise self.error(where, str(error)) from None


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
    unknown = set(document) - {"supervisor", "child"}
    if unknown:
        key = sorted(unknown)[0]
        raise loader.error(
            key, f"unknown top-level key {key!r} (expected [supervisor] and [[child]])"
        )
    settings = document.get("supervisor", {})
    if not isinstance(settings, dict):
        raise loader.error("supervisor", "expected a table ([supervisor])")
    with loader.collecting():  # the children are checked all the same
        loader.check_keys("supervisor", settings, _SUPERVISOR_KEYS)
    children = document.get("child", [])
    if add_to_path and folder not in sys.path:
        sys.path.insert(0, folder)
    built: Supervisor | None = None
    with loader.collecting():
        built = loader.supervisor("", settings, children, 0)
    if built is None or loader.mistakes:
        # In file order (found order is the order of the checks); a mistake
        # of no known line (the file's own) last. sorted() is stable.
        mistakes = sorted(loader.mistakes, key=lambda m: (m.line is None, m.line or 0))
        first = mistakes[0]
        first.mistakes = mistakes
        raise first
    return built
