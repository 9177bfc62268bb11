"""The package as a user installs it: its version, its typing marker, its imports."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, packages_distributions, requires, version
from pathlib import Path

import gymnasiarch

LEAF_MODULES = ("gymnasiarch.exceptions", "gymnasiarch.dynaloader", "gymnasiarch.seeding")


def test_version_comes_from_package_metadata() -> None:
    """``__version__`` is the installed distribution's version, not a second copy."""
    assert gymnasiarch.__version__ == version("gymnasiarch")


def test_package_ships_py_typed_marker() -> None:
    """Type checkers see the package as typed (PEP 561)."""
    assert (Path(gymnasiarch.__file__).parent / "py.typed").is_file()


def _declared_top_level_modules() -> set[str]:
    """Top-level module names of our runtime dependencies and of theirs, recursively."""
    by_distribution: dict[str, set[str]] = {}
    for module, distributions in packages_distributions().items():
        for distribution in distributions:
            by_distribution.setdefault(distribution.lower(), set()).add(module)
    seen: set[str] = set()
    todo = ["gymnasiarch"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        try:
            requirements = requires(name) or []
        except PackageNotFoundError:
            continue  # a dependency for other Python versions, not installed here
        seen.add(name)
        for requirement in requirements:
            if "extra ==" in requirement:
                continue
            dep = requirement.split(";")[0].strip()
            for stop in "<>=!~[ (":
                dep = dep.split(stop)[0]
            todo.append(dep.lower().replace("_", "-"))
    modules: set[str] = set()
    for distribution in seen:
        modules |= by_distribution.get(distribution, set())
        modules |= by_distribution.get(distribution.replace("-", "_"), set())
    return modules


def test_leaf_modules_import_only_stdlib_and_declared_dependencies() -> None:
    """Importing the seed's util modules pulls in nothing undeclared (no pandas, no dask)."""
    code = (
        "import json, sys\n"
        f"import {', '.join(LEAF_MODULES)}\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    imported = set(json.loads(out))
    allowed = set(sys.stdlib_module_names) | _declared_top_level_modules() | {"gymnasiarch"}
    # CPython's own private helpers (e.g. "_distutils_hack" from setuptools' .pth)
    # are site machinery, not imports of ours.
    undeclared = {m for m in imported - allowed if not m.startswith("_")}
    assert not undeclared, f"undeclared imports: {sorted(undeclared)}"
