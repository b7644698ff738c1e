"""The README stays true: its flag table lists exactly the CLI's flags and environment variables."""

from __future__ import annotations

import re
from pathlib import Path

from controller.cli import FLAGS

README = Path(__file__).parent.parent / "README.md"


def table_rows() -> dict[str, str]:
    rows = {}
    for line in README.read_text().splitlines():
        match = re.match(r"\| `(-{1,2}[a-z_-]+)` \| `([A-Z_]+)` \|", line)
        if match:
            rows[match.group(1)] = match.group(2)
    return rows


def test_flag_table_matches_the_cli() -> None:
    assert table_rows() == {flag.option: flag.env for flag in FLAGS}


def test_the_two_commands_exist() -> None:
    text = README.read_text()
    assert "scripts/sandbox" in text
    assert "scripts/test" in text
    assert "scripts/test" in (README.parent / ".ci" / "run").read_text()
