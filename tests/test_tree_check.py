"""Tree file checks: a nested supervisor's backend keys, mistakes in file order, pickling."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gymnasiarch.treefile import TreeFileError, load_tree

NESTED_BACKEND = """\
[[child]]
name = "grp"
backend = "bogus"
address = "ray://x:10001"
backoff = 3

  [[child.child]]
  name = "x"
  target = "os:getpid"
"""

OUT_OF_ORDER = """\
[[child]]
name = "a"
target = "nosuchmod:f"
restart = "sometimes"

[[child]]
name = "b"
target = "os:getpid"
bogus = 1

[supervisor]
strategy = "one_for_none"
typo_key = 3
"""


def _mistakes(path: Path) -> list[TreeFileError]:
    with pytest.raises(TreeFileError) as caught:
        load_tree(path, resolve=True)
    return caught.value.mistakes


def test_a_nested_supervisors_backend_is_one_unknown_key(tmp_path: Path) -> None:
    """Listed once each, under the nested table's key; not as the root's ``supervisor.backend``."""
    path = tmp_path / "tree.toml"
    path.write_text(NESTED_BACKEND)
    found = [(m.key, m.line) for m in _mistakes(path)]
    assert found == [("child[0].backend", 3), ("child[0].address", 4), ("child[0].backoff", 5)]


def test_checking_a_nested_backend_does_not_build_a_ray_backend(tmp_path: Path) -> None:
    """Only the root's backend is built: a nested ``backend = "ray"`` is a mistake, no import."""
    path = tmp_path / "tree.toml"
    path.write_text(NESTED_BACKEND.replace('"bogus"', '"ray"').replace("ray://x:10001", "auto"))
    program = textwrap.dedent(
        f"""
        import sys
        from gymnasiarch.treefile import TreeFileError, load_tree
        try:
            load_tree({str(path)!r})
        except TreeFileError as error:
            print([m.key for m in error.mistakes], "gymnasiarch.ray_backend" in sys.modules)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True
    )
    keys = "['child[0].backend', 'child[0].address', 'child[0].backoff']"
    assert out.stdout.strip() == f"{keys} False"


def test_mistakes_are_in_file_order(tmp_path: Path) -> None:
    """Sorted by line, whatever order the checks found them in; the first is the one raised."""
    path = tmp_path / "tree.toml"
    path.write_text(OUT_OF_ORDER)
    with pytest.raises(TreeFileError) as caught:
        load_tree(path, resolve=True)
    mistakes = caught.value.mistakes
    assert [m.line for m in mistakes] == [3, 4, 9, 13]
    assert mistakes[0] is caught.value


def test_a_tree_file_error_pickles_with_its_mistakes(tmp_path: Path) -> None:
    """It crosses a process boundary (a pool, a Ray task) as it is: message, key, line, mistakes."""
    path = tmp_path / "tree.toml"
    path.write_text(OUT_OF_ORDER)
    with pytest.raises(TreeFileError) as caught:
        load_tree(path, resolve=True)
    error = caught.value
    error.add_note("while checking")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is TreeFileError
    assert (str(copy), copy.path, copy.key, copy.line) == (
        str(error),
        error.path,
        error.key,
        error.line,
    )
    assert copy.mistakes[0] is copy  # the cycle kept
    assert [str(m) for m in copy.mistakes] == [str(m) for m in error.mistakes]
    assert copy.__notes__ == ["while checking"]
