"""The event-path benchmark runs end to end at smoke size and reports every figure.

No timing is asserted here: speed and memory are measured by `python -m bench.event_path`.
"""

from __future__ import annotations

import json

import pytest

from bench import event_path

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
