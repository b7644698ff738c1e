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


def test_metric_table_matches_the_registry() -> None:
    import time

    from prometheus_client import CollectorRegistry

    from controller.ecr import CallStats
    from controller.inventory import InUseIndex
    from controller.metrics import Metrics
    from controller.trust import SourceTracker

    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.watch_sources(SourceTracker(), InUseIndex(), time.monotonic, refusal=lambda: None)
    metrics.watch_ecr(CallStats())
    metrics.watch_aws_sources(CallStats())
    registered = {
        family.name + ("_total" if family.type == "counter" else "")
        for family in registry.collect()
    }
    documented = set(re.findall(r"^\| `(ecr_cleanup_[a-z_]+)`", README.read_text(), re.MULTILINE))
    assert documented == registered


def test_benchmark_table_is_the_last_recorded_run() -> None:
    """The README's benchmark figures are bench/results.md, which `python -m bench` wrote from
    the run recorded in bench/results.json: the three cannot drift apart."""
    import json

    from bench.__main__ import BEGIN, END, table

    text = README.read_text()
    block = text.split(BEGIN, 1)[1].split(END, 1)[0]
    recorded = (README.parent / "bench" / "results.md").read_text()
    assert block == "\n" + recorded
    results = json.loads((README.parent / "bench" / "results.json").read_text())
    assert table(results) == recorded
