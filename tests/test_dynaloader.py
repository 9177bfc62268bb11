"""dynaloader against real packages written to disk by the tests."""

from __future__ import annotations

import itertools
import pickle
import re
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gymnasiarch.dynaloader import ErrorDuringImport, load_with_params, locate, safeimport
from gymnasiarch.exceptions import InitializationFailedError

_counter = itertools.count()

WriteModule = Callable[[str, str], None]


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, WriteModule]]:
    """A fresh, uniquely named package on sys.path, and a writer for its modules.

    The package's modules are removed from ``sys.modules`` afterwards, so no
    test sees another's.
    """
    name = f"dynaloader_pkg_{next(_counter)}"
    root = tmp_path / name
    root.mkdir()
    (root / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(module: str, source: str) -> None:
        path = root.joinpath(*module.split(".")).with_suffix(".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in path.relative_to(root).parents:
            init = root / parent / "__init__.py"
            if not init.exists():
                init.write_text("")
        path.write_text(textwrap.dedent(source))

    yield name, write
    for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[module]


def test_safeimport_returns_the_module_at_the_end_of_the_path(package) -> None:
    """Unlike __import__, a dotted path gives the leaf module, not the package."""
    name, write = package
    write("sub.leaf", "VALUE = 7\n")
    module = safeimport(f"{name}.sub.leaf")
    assert module is not None
    assert module.__name__ == f"{name}.sub.leaf"
    assert module.VALUE == 7


def test_safeimport_returns_none_for_a_missing_module(package) -> None:
    """A module that does not exist is None, as documented (the original raised)."""
    name, _ = package
    assert safeimport("no_such_top_level_module_anywhere") is None
    assert safeimport(f"{name}.missing") is None
    assert safeimport(f"{name}.missing.deeper") is None


def test_safeimport_wraps_an_exception_raised_at_import(package) -> None:
    """A found module that raises while executing becomes ErrorDuringImport."""
    name, write = package
    write("explodes", "raise RuntimeError('kaboom at import')\n")
    with pytest.raises(ErrorDuringImport) as info:
        safeimport(f"{name}.explodes")
    error = info.value
    assert error.exc is RuntimeError
    assert isinstance(error.__cause__, RuntimeError)
    assert error.filename.endswith("explodes.py")
    assert "kaboom at import" in str(error)
    assert "kaboom at import" in error.traceback_text


def test_safeimport_wraps_a_syntax_error_with_its_file(package) -> None:
    """A syntax error names the file that has it."""
    name, write = package
    write("broken", "def oops(:\n")
    with pytest.raises(ErrorDuringImport) as info:
        safeimport(f"{name}.broken")
    assert info.value.exc is SyntaxError
    assert info.value.filename.endswith("broken.py")


def test_safeimport_wraps_a_missing_dependency_of_a_found_module(package) -> None:
    """A module that imports something missing is an error, not 'not found'."""
    name, write = package
    write("needy", "import a_dependency_that_is_not_installed\n")
    with pytest.raises(ErrorDuringImport) as info:
        safeimport(f"{name}.needy")
    assert info.value.exc is ModuleNotFoundError
    assert "a_dependency_that_is_not_installed" in str(info.value)
    assert info.value.filename.endswith("needy.py")


def test_safeimport_forceload_rereads_the_file_and_submodules(package) -> None:
    """forceload=1 drops the module and its submodules and imports them from disk."""
    name, write = package
    write("mod.__init__", "VALUE = 'old'\n")
    write("mod.child", "VALUE = 'old child'\n")
    first = safeimport(f"{name}.mod.child")
    assert first is not None
    assert first.VALUE == "old child"
    # A different length, so the byte-code cache cannot mistake the new source for the old.
    write("mod.__init__", "VALUE = 'brand new'\n")
    write("mod.child", "VALUE = 'brand new child'\n")
    assert safeimport(f"{name}.mod").VALUE == "old"  # type: ignore[union-attr]
    cache: dict[str, object] = {}
    reloaded = safeimport(f"{name}.mod", forceload=1, cache=cache)  # type: ignore[arg-type]
    assert reloaded is not None
    assert reloaded.VALUE == "brand new"
    assert f"{name}.mod.child" not in sys.modules
    assert set(cache) == {f"{name}.mod", f"{name}.mod.child"}
    child = safeimport(f"{name}.mod.child")
    assert child is not None
    assert child.VALUE == "brand new child"
    assert child is not first


def test_safeimport_forceload_leaves_builtin_modules_alone() -> None:
    """A built-in module cannot be reloaded from disk, so it is not dropped."""
    before = sys.modules["sys"]
    assert safeimport("sys", forceload=1) is before


def test_safeimport_rejects_an_empty_path() -> None:
    """An empty path is a clear TypeError, not an import of ''."""
    with pytest.raises(TypeError, match="non-empty module path"):
        safeimport("")


def test_locate_resolves_dotted_paths_to_attributes(package) -> None:
    """locate imports the longest module prefix and follows the attributes."""
    name, write = package
    write("shapes", "class Square:\n    class Inner:\n        SIDES = 4\n")
    assert locate(f"{name}.shapes.Square.Inner").SIDES == 4
    assert locate(f"{name}.shapes:Square.Inner").SIDES == 4
    assert locate("len") is len
    assert locate("json.decoder.JSONDecoder").__name__ == "JSONDecoder"


def test_locate_returns_none_for_what_is_not_there(package) -> None:
    """A missing module or attribute is None, the original's contract."""
    name, write = package
    write("shapes", "class Square:\n    pass\n")
    assert locate(f"{name}.shapes.Circle") is None
    assert locate(f"{name}.shapes.Square.corners") is None
    assert locate(f"{name}.nowhere:thing") is None
    assert locate("no_such_builtin_name_at_all") is None


def test_locate_raises_for_a_module_that_fails_to_import(package) -> None:
    """locate does not hide a broken module behind None."""
    name, write = package
    write("explodes", "1 / 0\n")
    with pytest.raises(ErrorDuringImport, match="ZeroDivisionError"):
        locate(f"{name}.explodes.thing")


@pytest.mark.parametrize("separator", [":", "."])
def test_load_with_params_accepts_both_path_forms(package, separator: str) -> None:
    """'pkg.mod:Attr' and 'pkg.mod.Attr' both construct the class with params."""
    name, write = package
    write(
        "agents",
        """
        class Agent:
            def __init__(self, speed, name="anon"):
                self.speed, self.name = speed, name
        """,
    )
    agent = load_with_params(f"{name}.agents{separator}Agent", {"speed": 3, "name": "bond"})
    assert (agent.speed, agent.name) == (3, "bond")


def test_load_with_params_none_params_means_no_arguments(package) -> None:
    """params=None calls the class without arguments."""
    name, write = package
    write("things", "class Thing:\n    pass\n")
    assert type(load_with_params(f"{name}.things:Thing", None)).__name__ == "Thing"


def test_load_with_params_names_the_path_for_a_missing_module() -> None:
    """No such module: one ErrorDuringImport naming the path."""
    with pytest.raises(ErrorDuringImport, match=re.escape("no_such_pkg_xyz.mod:Thing")) as info:
        load_with_params("no_such_pkg_xyz.mod:Thing", {})
    assert "no module named 'no_such_pkg_xyz.mod'" in str(info.value)


def test_load_with_params_names_the_path_for_a_missing_attribute(package) -> None:
    """No such attribute: one ErrorDuringImport naming module and attribute."""
    name, write = package
    write("things", "class Thing:\n    pass\n")
    with pytest.raises(ErrorDuringImport, match="has no attribute 'Nothing'"):
        load_with_params(f"{name}.things:Nothing", {})


@pytest.mark.parametrize("path", ["justaname", "pkg.mod:", ":Attr", "pkg..mod"])
def test_load_with_params_rejects_malformed_paths_clearly(path: str) -> None:
    """A path without a module part is an ErrorDuringImport, never an unpacking ValueError."""
    with pytest.raises(ErrorDuringImport) as info:
        load_with_params(path, {})
    assert path in str(info.value)


def test_load_with_params_wraps_an_unexpected_keyword(package) -> None:
    """A params key the constructor does not take: InitializationFailedError naming both."""
    name, write = package
    write("agents", "class Agent:\n    def __init__(self, speed):\n        self.speed = speed\n")
    with pytest.raises(InitializationFailedError) as info:
        load_with_params(f"{name}.agents:Agent", {"sped": 3})
    assert f"{name}.agents:Agent" in str(info.value)
    assert "sped" in str(info.value)
    assert isinstance(info.value.__cause__, TypeError)


def test_load_with_params_wraps_a_constructor_that_raises(package) -> None:
    """A constructor that raises: InitializationFailedError with the original as cause."""
    name, write = package
    write(
        "agents",
        "class Agent:\n    def __init__(self):\n        raise ValueError('no brain')\n",
    )
    with pytest.raises(InitializationFailedError, match="no brain") as info:
        load_with_params(f"{name}.agents:Agent", {})
    assert isinstance(info.value.__cause__, ValueError)


def test_load_with_params_refuses_what_cannot_be_called(package) -> None:
    """A module-level constant is not a class: a clear error, not 'int is not callable'."""
    name, write = package
    write("consts", "LIMIT = 5\n")
    with pytest.raises(InitializationFailedError, match="is a int, not something to call"):
        load_with_params(f"{name}.consts:LIMIT", {})


def test_load_with_params_rejects_params_that_are_not_a_mapping() -> None:
    """params must be keyword arguments; a list gets a TypeError naming the path."""
    with pytest.raises(TypeError, match="collections:OrderedDict"):
        load_with_params("collections:OrderedDict", [1, 2])  # type: ignore[arg-type]


def test_errors_from_loading_cross_process_boundaries(package) -> None:
    """ErrorDuringImport from a real failed import pickles with its traceback text."""
    name, write = package
    write("explodes", "raise KeyError('lost key')\n")
    with pytest.raises(ErrorDuringImport) as info:
        load_with_params(f"{name}.explodes:Thing", {})
    copy = pickle.loads(pickle.dumps(info.value))
    assert str(copy) == str(info.value)
    assert "lost key" in copy.traceback_text
