"""Figures a test measured (image size, build time): printed after the run by conftest's summary."""

from __future__ import annotations

FIGURES: list[str] = []


def report(line: str) -> None:
    FIGURES.append(line)
