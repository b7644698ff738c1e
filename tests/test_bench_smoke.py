"""The benchmarks run end to end at smoke size and report every figure.

No timing is asserted here: speed and memory are measured by `python -m bench`.
"""

from __future__ import annotations

import json
import math

import pytest

import bench.__main__ as suite
from bench import cycle, event_path

FIGURES = (
    "events",
    "avg_event_bytes",
    "live_pods",
    "distinct_digests",
    "distinct_ecr_tags",
    "ours_events_per_s",
    "ours_events_per_s_best",
    "ours_mb_per_s",
    "model_events_per_s",
    "model_mb_per_s",
    "model_lean_events_per_s",
    "ratio",
    "ratio_lean",
    "memory_pods",
    "memory_bytes",
    "bytes_per_pod",
)


def test_quick_run_reports_every_figure(capsys: pytest.CaptureFixture[str]) -> None:
    assert event_path.main(["--quick", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    for key in FIGURES:
        assert isinstance(result[key], int | float), key
        assert result[key] > 0, key
    assert result["events"] == event_path.QUICK.events
    assert set(result["mix"]) == set(event_path.MIX)
    assert sum(result["mix"].values()) == result["events"]
    assert result["memory_pods"] == event_path.QUICK.memory_pods
    assert set(result["targets_met"]) == set(event_path.TARGETS)
    assert result["machine"]["python"]
    text = event_path.report(result)
    assert "events/s" in text
    assert "bytes per tracked pod" in text


def test_the_whole_suite_runs_at_smoke_size_and_fills_every_row() -> None:
    results = suite.run(quick=True, runs=None)
    rows = suite.rows(results)
    figures = [row.figure for row in rows]
    for needle in (
        "cycle time / latency limit",
        "CPU per image listed",
        "its ECR answers at p90 / latency",
        "the endpoint's loop late at p99",
        "the same cycle, answered with no latency",
        "CPU of one ECR call, its fixed part",
        "ECR calls per cycle",
        "throttled",
        "peak RSS, 6 / 2 repositories",
        "time per repository, largest / smallest",
        "Go algorithm's work time / ours",
        "initial sync of 300 pods",
        "watch events into the index",
        "exec to the first LIST",
        "idle RSS growth",
    ):
        assert any(needle in f for f in figures), needle
    for row in rows:
        assert all(math.isfinite(v) for v in row.values), row
        assert row.values[0] <= row.values[1] <= row.values[2], row
    # the cycles ran for real: every repository pruned to its limit, at the lower bound of calls
    headline = results["cycle"]["headline"]["2"]
    assert headline["calls_at_lower_bound"]
    assert all(run["ok"] for run in headline["runs"])
    assert all(run["deleted"] == 4 * (120 - 50) for run in headline["runs"])
    # an answer takes at least the endpoint's latency; the endpoint's loop was sampled
    assert all(run["answer_ms"]["p90_ms"] >= 1000 * cycle.QUICK.latency for run in headline["runs"])
    assert all(run["server_lag_ms"]["samples"] > 0 for run in headline["runs"])
    assert results["cycle"]["go"]["cycles"] >= 1
    quiet = results["cycle"]["no_latency"]
    assert all(run["ok"] and run["deleted"] == 4 * (120 - 50) for run in quiet["runs"])
    woken = results["cycle"]["wake"]
    assert len(woken["runs"]) == cycle.QUICK.runs
    assert all(r["back_to_back_us"] > 0 and r["after_a_wait_us"] > 0 for r in woken["runs"])
    assert woken["pause_s"] == cycle.QUICK.latency
    per_call = results["cycle"]["per_call"]
    assert [run["calls"] for run in per_call["runs"]] == [cycle.QUICK.per_call]
    assert all(run["cpu_us_per_call"] > 0 for run in per_call["runs"])
    assert per_call["share_of_cycle_cpu"]["median"] > 0
    table = suite.table(results)
    assert table.count("\n| ") == len(rows) + 1  # the header and one line per row
