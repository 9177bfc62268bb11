"""docs/reliability.md names the tests that prove its promises: they must exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parent.parent
PAGE = ROOT / "docs" / "reliability.md"
CITED = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def test_every_test_the_reliability_page_names_exists() -> None:
    """Each `tests/FILE.py::test_name` in a table of the page is a test in that file."""
    cited = CITED.findall(PAGE.read_text())
    assert len(cited) >= 30  # the page is the table of faults, not an empty shell
    missing = []
    for path, name in cited:
        source = ROOT / path
        text = source.read_text() if source.exists() else ""
        if not re.search(rf"^(async )?def {name}\(", text, re.MULTILINE):
            missing.append(f"{path}::{name}")
    assert missing == [], f"docs/reliability.md names tests that do not exist: {missing}"


def test_every_row_of_the_page_cites_a_test() -> None:
    rows = [
        line
        for line in PAGE.read_text().splitlines()
        if line.startswith("| ") and not line.startswith(("| fault", "| ---"))
    ]
    assert rows
    assert [row for row in rows if not CITED.search(row)] == []
