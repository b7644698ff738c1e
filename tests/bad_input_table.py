"""Writes docs/bad-input.md from the cases of tests/test_bad_input.py: `python -m tests.bad_input_table`."""

from __future__ import annotations

from tests.test_bad_input import DOC, table


def main() -> None:
    DOC.write_text(table())
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
