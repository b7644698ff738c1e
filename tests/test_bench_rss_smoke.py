"""The RSS benchmark runs end to end at smoke size and reports every figure.

No memory figure is asserted here: `python -m bench.rss` measures it (values.yaml cites a run).
"""

from __future__ import annotations

import json

from bench import rss

FIGURES = (
    "pods",
    "workloads",
    "repositories",
    "images",
    "first_cycle_s",
    "peak_rss_mib",
    "rss_after_cycle_mib",
    "cpu_s_to_first_cycle",
)


def test_quick_run_reports_every_figure_and_exits_0() -> None:
    lines: list[str] = []
    assert rss.main(["--quick", "--json"], out=lines.append) == 0
    result = json.loads("".join(lines))
    for figure in FIGURES:
        assert result[figure] > 0, figure
    assert result["exit_code"] == 0
    assert result["peak_rss_mib"] >= result["rss_after_cycle_mib"]
    assert result["images"] == rss.QUICK.repositories * rss.QUICK.images_per_repository
    # the chart's args, with only the connection and the listen address replaced
    assert "--dry-run=true" in result["args"]
    assert not any(a.startswith("--in-cluster") for a in result["args"])


def test_the_report_names_the_measurement() -> None:
    text = rss.report(
        {
            "pods": 1,
            "workloads": 1,
            "images": 2,
            "repositories": 1,
            "seeding_s": 0.1,
            "first_cycle_s": 1.0,
            "cpu_s_to_first_cycle": 0.5,
            "peak_rss_mib": 100.0,
            "rss_after_cycle_mib": 99.0,
            "exit_code": 0,
            "python": "3.11",
            "machine": "2 CPUs",
        }
    )
    assert "peak RSS (VmHWM): 100.0 MiB" in text
    assert "SIGTERM: exit 0" in text
