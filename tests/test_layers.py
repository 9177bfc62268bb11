"""The layers of ARCHITECTURE.md, kept: which of our modules may import which.

Every ``import`` and ``from ... import`` in a module counts, wherever it is
(a function's lazy import, an ``if TYPE_CHECKING:`` block): a lazy import
is still a dependency, only a later one. ``from gymnasiarch import Name``
counts as an import of the module that defines ``Name`` (``gymnasiarch``'s
lazy table).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import gymnasiarch

PACKAGE = Path(gymnasiarch.__file__).parent

# Modules by their dotted name below the package ("_process.run"); a subpackage's
# __init__ by the subpackage's name ("_process").
SUPERVISOR = {
    "_supervisor",
    "_supervisor.supervisor",
    "_supervisor.options",
    "_supervisor.events",
    "_supervisor.signals",
    "_supervisor.policy",
}
#: The run interface, exit status, remote errors, the launch: what every backend shares.
SEAM = {"_backends", "_backends.base"}
BACKENDS = {"_backends.local", "ray_backend", "_backends.fake"}
#: The child's half of the process layer: runs in every child, before its target.
CHILD_HALF = {"_process.child", "_process.marks", "_process.warm"}
#: The parent's half: starts, hears, stops and reaps; the child's half never imports it.
PARENT_HALF = {
    "_process.run",
    "_process.launcher",
    "_process.forkserver",
    "_process.subreaper",
    "_process.sampler",
    "_process.hung",
}
#: How a child is started on one machine, heard and stopped (both halves, and what they
#: share: the fork server's process, the CPython internals it relies on, captured output).
PROCESS_LAYER = (
    {"_process", "_process.forkserver_main", "_process.cpython", "_process.output"}
    | CHILD_HALF
    | PARENT_HALF
)
#: Small helpers of the supervisor's side that any layer above the leaves may use.
HELPERS = {"_backends.wakeup"}
#: Ray itself, and our code that runs inside Ray's workers.
RAY = {"ray", "_backends.ray_host"}
LOG_PIPELINE = {
    "logserver",
    "_wire",
    "_wire.frames",
    "_wire.serving",
    "_wire.records",
    "_wire.logclient",
    "_wire.levels",
}
#: Import nothing of ours but each other; _platform is the one home of Linux's system calls
#: (pidfd, /proc, prctl, SO_PEERCRED), which the process layer and the log pipeline both use.
LEAVES = {
    "exceptions",
    "dynaloader",
    "seeding",
    "_spec",
    "_runtime_config",
    "_platform",
    "ready",  # readiness conditions: new this batch, a leaf so far
    "_ports",  # ports chosen by the supervisor: picked, and filled in
    "_from_ready",  # FromReady, in a spec's arguments, command and env (checked by _spec)
}
#: The child's bootstrap proper: what runs in the child around its target.
CHILD_BOOTSTRAP = {"spawn", "_context"}
#: Built on the public API; nothing below may import them.
TOP = {
    "cli",
    "__main__",
    "treefile",
    "_cli",
    "_cli.control",
    "_cli.live",
    "testing",
    "logging",
    "demo",
    "demo.sim",
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts) or "__init__"


def _is_module(name: str) -> bool:
    """Whether *name* (``_process.run``, ``_process``) is a module or subpackage of ours."""
    path = PACKAGE / name.replace(".", "/")
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def _ours(dotted: str) -> str | None:
    """Our module's name (``_process.run``) for ``gymnasiarch._process.run``; Ray as ``ray``.

    A name below a module (``gymnasiarch._process.run.ChildProcess``) is its module's.
    """
    if dotted == "ray" or dotted.startswith("ray."):
        return "ray"
    if not dotted.startswith("gymnasiarch."):
        return None
    name = dotted.removeprefix("gymnasiarch.")
    while "." in name and not _is_module(name):
        name = name.rpartition(".")[0]
    return name


def imports_of(module: str) -> set[str]:
    """The modules of ours (and ``ray``) that *module* imports, anywhere in its code."""
    path = PACKAGE / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = PACKAGE / module.replace(".", "/") / "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: we use none, and a rule must not miss one
                raise AssertionError(f"{module}: relative import at line {node.lineno}")
            if node.module == "gymnasiarch":
                # from gymnasiarch import _platform / Supervisor (a lazy name)
                names = [
                    gymnasiarch._LAZY.get(alias.name, f"gymnasiarch.{alias.name}")
                    for alias in node.names
                ]
            elif node.module and node.module.startswith("gymnasiarch."):
                # from gymnasiarch._process import forkserver: the submodule, else the module
                names = [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                names = [node.module or ""]
        else:
            continue
        found.update(m for name in names if (m := _ours(name)) is not None)
    found.discard(module)
    return found


def all_modules() -> list[str]:
    return sorted(_module_name(p) for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _violations(subjects: set[str], forbidden: set[str]) -> dict[str, set[str]]:
    return {m: bad for m in sorted(subjects) if (bad := imports_of(m) & forbidden)}


def test_every_subject_of_a_rule_exists() -> None:
    """A renamed module must not make a rule about it pass by checking nothing."""
    modules = set(all_modules())
    subjects = SUPERVISOR | SEAM | BACKENDS | PROCESS_LAYER | HELPERS | RAY - {"ray"}
    subjects |= LOG_PIPELINE | LEAVES | CHILD_BOOTSTRAP | TOP
    assert subjects - modules == set()


def test_the_supervisor_never_imports_the_process_layer_or_ray() -> None:
    """It speaks to the seam; the local backend is only named as the default."""
    assert _violations(SUPERVISOR, PROCESS_LAYER | RAY | {"ray_backend", "_fake_backend"}) == {}


def test_the_seam_imports_only_leaves_and_the_log_pipeline() -> None:
    """Every layer below the supervisor may import the seam without pulling anything up."""
    allowed = LEAVES | LOG_PIPELINE
    assert {m: imports_of(m) - allowed for m in SEAM if imports_of(m) - allowed} == {}


def test_backends_other_than_the_local_one_never_import_the_process_layer() -> None:
    """The Ray backend's driver side and the fake speak the seam; only Ray's node side hosts."""
    assert _violations(BACKENDS - {"_backends.local"}, PROCESS_LAYER) == {}


def test_nothing_below_the_supervisor_imports_it_or_a_backend() -> None:
    """The process layer, the seam, the log pipeline, leaves, the child side: arrows point down."""
    below = SEAM | PROCESS_LAYER | {"_backends.ray_host"} | LOG_PIPELINE | LEAVES | CHILD_BOOTSTRAP
    assert _violations(below, SUPERVISOR | BACKENDS) == {}


def test_the_log_pipeline_never_imports_the_supervisor_or_the_process_layer() -> None:
    """Records travel the same way whoever runs the child."""
    assert _violations(LOG_PIPELINE, SUPERVISOR | SEAM | BACKENDS | PROCESS_LAYER | RAY) == {}


def test_leaves_import_only_leaves() -> None:
    """exceptions, dynaloader, seeding, specs, runtime config, FromReady: importable alone."""
    assert {m: imports_of(m) - LEAVES for m in LEAVES if imports_of(m) - LEAVES} == {}


def test_the_restart_policy_touches_no_process_and_no_socket() -> None:
    """The policy is pure: the specs and the seam's values, never a process, a backend or a log."""
    policy = {m for m in all_modules() if m.rpartition(".")[2].lstrip("_") == "policy"}
    forbidden = SUPERVISOR | BACKENDS | PROCESS_LAYER | RAY | LOG_PIPELINE | TOP
    assert _violations(policy, forbidden) == {}


def test_the_child_bootstrap_imports_only_the_log_pipeline_and_leaves() -> None:
    """spawn and the child context run in the child: no process layer, seam or supervisor."""
    allowed = LOG_PIPELINE | LEAVES | CHILD_BOOTSTRAP
    violations = {m: imports_of(m) - allowed for m in CHILD_BOOTSTRAP}
    assert {m: bad for m, bad in violations.items() if bad} == {}


def test_the_childs_half_of_the_process_layer_never_imports_the_supervisor_or_a_backend() -> None:
    """The child's half runs in every child: it knows the seam's Launch, never who launched it.

    Nor the parent's half of the process layer (the run, the launcher, the
    fork server's requester, the subreaper): the mark it gives its
    descendants lives in ``_process.marks`` for that reason.
    """
    assert _violations(CHILD_HALF, SUPERVISOR | BACKENDS | RAY | PARENT_HALF) == {}


def test_nothing_below_the_top_imports_it() -> None:
    """The CLI, tree files, control socket and pytest plugin are built on the rest, not in it."""
    below = set(all_modules()) - TOP
    assert _violations(below, TOP) == {}


def test_the_rules_see_a_forbidden_import() -> None:
    """The checker itself: a lazy import and a name from the package both count."""
    # The supervisor's import of LocalBackend, a name through gymnasiarch's
    # table, a lazy import and a submodule imported from its package are found.
    assert "_backends.local" in imports_of("_supervisor.supervisor")
    assert "_supervisor.supervisor" in imports_of("testing")  # from gymnasiarch import Supervisor
    assert "_process.run" in imports_of("_backends.ray_host")  # a lazy import inside a function
    assert "_wire.frames" in imports_of("logserver")  # from gymnasiarch._wire import frames


@pytest.mark.parametrize(
    ("module", "absent"),
    [
        ("gymnasiarch._backends.base", ["gymnasiarch._supervisor", "gymnasiarch._process", "ray"]),
        ("gymnasiarch.logserver", ["gymnasiarch._supervisor", "gymnasiarch._process"]),
        ("gymnasiarch.spawn", ["gymnasiarch._supervisor", "gymnasiarch._process"]),
    ],
)
def test_importing_a_lower_layer_loads_nothing_above_it(module: str, absent: list[str]) -> None:
    """What the static rules say, seen in a fresh interpreter's sys.modules."""
    code = f"import sys, {module}; print(' '.join(sorted(sys.modules)))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    assert [name for name in absent if name in loaded] == []


def test_every_module_has_its_place_in_a_layer() -> None:
    """A new module must be placed in a layer here (and in docs/building.md) to be checked."""
    placed = (
        (SUPERVISOR | SEAM | BACKENDS | PROCESS_LAYER | HELPERS | RAY | LOG_PIPELINE | LEAVES)
        | CHILD_BOOTSTRAP
        | TOP
        | {"__init__"}
    )
    assert sorted(set(all_modules()) - placed) == []
