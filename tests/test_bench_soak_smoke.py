"""The soak runs end to end at smoke size: two real replicas, churn, failovers, dropped watches.

No memory figure is asserted here (25 s is too short for a trend): `python -m bench.soak
--minutes 4` measures it (README, "Soak"). What is asserted is what must hold in any run: the
invariant, clean exits, and a report with every figure.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench import soak


def test_a_quick_soak_keeps_the_invariant_and_reports_every_figure(tmp_path: Path) -> None:
    lines: list[str] = []
    assert soak.main(["--quick", "--json", "--out", str(tmp_path)], out=lines.append) == 0
    result = json.loads("".join(lines))
    assert json.loads((tmp_path / "soak.json").read_text()) == result

    # the invariant held, checked against the simulator's request log
    assert result["violations"] == []
    assert result["concurrent_deleters"] == 0
    assert result["invariant_held"] is True
    assert result["unexpected_exits"] == []
    assert result["tracebacks"] == 0

    # and it was exercised: churn, rollbacks, pushes, deletions, failovers, dropped watches
    counts = result["counts"]
    assert counts["pods_created"] >= 40
    assert counts["pods_deleted"] >= 20
    assert counts["rollbacks"] >= 3
    assert counts["pushes"] > soak.QUICK.repositories * soak.QUICK.initial_images
    assert counts["failovers"] >= 2
    assert counts["leader_changes"] >= 2
    assert counts["watch_drops"] >= 3
    assert counts["compactions"] >= 1
    assert result["deletions"] > 0
    assert result["cycles"] >= 3
    assert result["relists"]["a"] >= 1  # the compactions made replica a re-list
    assert result["deletions"] == sum(p["deletions_requested"] for p in result["processes"])

    # both replicas led at some point, and every process it stopped exited as it should
    assert {leader for _at, leader in result["leaders"]} == {"a", "b"}
    replicas = {p["replica"] for p in result["processes"]}
    assert replicas == {"a", "b"}
    a = [p for p in result["processes"] if p["replica"] == "a"]
    assert len(a) == 1  # replica a is frozen, never restarted: its series spans the run
    assert a[0]["stopped_by"] == "end"
    assert a[0]["exit_code"] == 0
    for process in result["processes"]:
        rss = process["rss"]
        if rss["samples"]:
            assert 0 < rss["start_mib"] <= rss["max_mib"]
            assert 0 < rss["end_mib"] <= rss["max_mib"]
            assert rss["first_quarter_mib"] > 0
            assert rss["last_quarter_mib"] > 0
            assert isinstance(rss["slope_mib_per_min"], float)
            assert isinstance(rss["last_quarter_slope_mib_per_min"], float)
            assert isinstance(rss["flat"], bool)
    assert a[0]["rss"]["samples"] >= 10

    text = (tmp_path / "soak.md").read_text()
    assert "violations: 0" in text
    assert "| a1 |" in text
