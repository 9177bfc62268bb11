"""Developer tasks: ``nox -s tests``, ``lint``, ``typecheck``, ``docs``, ``bench``.

CI runs ``tests lint typecheck docs`` from a fresh clone; every session
installs what it needs from ``pyproject.toml``, nothing by hand.
"""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["tests", "lint", "typecheck", "docs"]
nox.options.default_venv_backend = "venv"
# Reusing environments makes a developer's second run fast; CI starts from a
# fresh clone, so it installs everything anyway.
nox.options.reuse_existing_virtualenvs = True

# By default every session uses the interpreter that runs nox, so the README's
# command works on any machine with one Python >= 3.11.
PYTHON = os.environ.get("GYMNASIARCH_NOX_PYTHON") or None
LINT_TARGETS = ["src", "tests", "noxfile.py", "docs/conf.py", "benchmarks", "examples"]


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run the test suite (extra arguments go to pytest).

    Ray is installed for the Ray backend's tests where it can be; where it
    cannot (no wheel for this Python or platform), those tests are skipped
    and say why.
    """
    session.install("-e", ".[test]")
    try:
        session.install("-e", ".[test,ray]")
    except nox.command.CommandFailed:
        session.warn("Ray cannot be installed here: the Ray backend's tests will be skipped")
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """Check style and formatting with ruff."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", *LINT_TARGETS)
    session.run("ruff", "format", "--check", *LINT_TARGETS)


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """Type-check the library and this file with mypy --strict."""
    session.install("-e", ".[test]", "mypy>=1.10", "nox")
    session.run("mypy", "--strict")


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """Build the HTML docs; any warning is an error.

    Intersphinx links are off unless GYMNASIARCH_DOCS_ONLINE=1: CI machines
    have no network, and a failed inventory fetch is a warning.
    """
    session.install("-e", ".[docs]")
    # Nitpicky mode needs the inventories of Python and anyio to resolve links.
    nitpicky = ["-n"] if os.environ.get("GYMNASIARCH_DOCS_ONLINE") == "1" else []
    session.run(
        "sphinx-build", "-W", "--keep-going", *nitpicky, "-b", "html", "docs", "docs/_build/html"
    )


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Run the benchmarks side by side with their baselines; prints ratios."""
    # msgpack only for the wire-format figure, measured against our JSON.
    session.install("-e", ".[test]", "msgpack")
    try:  # the Ray backend's figures, where Ray can be installed
        session.install("-e", ".[test,ray]")
    except nox.command.CommandFailed:
        session.warn("Ray cannot be installed here: the Ray figures are left out")
    if not any(name.startswith("bench_") for name in os.listdir("benchmarks")):
        session.skip("no benchmarks yet")
    session.run("python", "-m", "benchmarks", *session.posargs)
