"""`python -m bench`: every benchmark, then the targets table.

Runs the watch event path (bench.event_path, three times), the prune cycles (bench.cycle) and
start-up, initial sync and idle (bench.sync); writes everything to bench/results.json, the
targets table to bench/results.md, and that table into the README between its
`<!-- bench:begin -->` and `<!-- bench:end -->` markers (tests/test_readme.py keeps the two
equal). `--quick` runs smoke sizes and writes nothing. Every figure is min / median / max over
the runs; a target is met when the median meets it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import cycle, event_path, sync

HERE = Path(__file__).resolve().parent
README = HERE.parent / "README.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


@dataclass(frozen=True)
class Row:
    figure: str
    target: str
    values: tuple[float, float, float]
    # min, median, max
    unit: str
    met: bool | None
    # None: reported, no target


def spread(values: Sequence[float]) -> tuple[float, float, float]:
    return min(values), statistics.median(values), max(values)


def of(figures: dict[str, float]) -> tuple[float, float, float]:
    return figures["min"], figures["median"], figures["max"]


def rows(results: dict[str, Any]) -> list[Row]:
    c, s, e = results["cycle"], results["sync"], results["event_path"]
    concurrencies = [str(n) for n in c["config"]["concurrency"]]
    default, wide = concurrencies[0], concurrencies[-1]
    found: list[Row] = []
    for concurrency in dict.fromkeys((default, wide)):
        ratio = of(c["headline"][concurrency]["ratio_to_limit"])
        found.append(
            Row(
                f"cycle time / latency limit, concurrency {concurrency}",
                "≤ 1.3",
                ratio,
                "×",
                ratio[1] <= 1.3,
            )
        )
    for concurrency in dict.fromkeys((default, wide)):
        figures = c["headline"][concurrency]
        found.append(
            Row(
                f"… its ECR answers at p90 / latency, concurrency {concurrency}",
                "",
                of(figures["answer_p90_to_latency"]),
                "×",
                None,
            )
        )
        found.append(
            Row(
                f"… the endpoint's loop late at p99, concurrency {concurrency}",
                "",
                of(figures["server_lag_p99_ms"]),
                "ms",
                None,
            )
        )
    cpu = of(c["headline"][default]["cpu_us_per_image"])
    found.append(Row("CPU per image listed", "≤ 10", cpu, "µs", cpu[1] <= 10))
    quiet = of(c["no_latency"]["cpu_us_per_image"])
    found.append(Row("… the same cycle, answered with no latency", "", quiet, "µs", None))
    woken = c["wake"]
    found.append(
        Row(
            f"plain Python work after a {woken['pause_s'] * 1000:.0f} ms wait / back to back",
            "",
            of(woken["ratio"]),
            "×",
            None,
        )
    )
    call = c["per_call"]
    found.append(
        Row("CPU of one ECR call, its fixed part", "", of(call["cpu_us_per_call"]), "µs", None)
    )
    share = tuple(100 * v for v in of(call["share_of_cycle_cpu"]))
    found.append(
        Row(
            f"… × the cycle's calls / its CPU, concurrency {default}",
            "",
            (share[0], share[1], share[2]),
            "%",
            None,
        )
    )
    at_bound = all(c["headline"][k]["calls_at_lower_bound"] for k in c["headline"])
    calls = float(c["headline"][default]["lower_bound_calls"])
    found.append(Row("ECR calls per cycle", "= lower bound", (calls,) * 3, "calls", at_bound))
    t8, t32 = of(c["throttled"][default]["wall_s"]), of(c["throttled"][wide]["wall_s"])
    found.append(
        Row(
            f"throttled: concurrency {wide} / {default}",
            "≤ 1.0",
            (t32[0] / t8[2], t32[1] / t8[1], t32[2] / t8[0]),
            "×",
            t32[1] <= t8[1] * 1.0 + 1e-9,
        )
    )
    for concurrency in dict.fromkeys((default, wide)):
        floor = of(c["throttled"][concurrency]["ratio_to_floor"])
        found.append(
            Row(
                f"throttled, concurrency {concurrency}: time / floor",
                "≤ 1.2",
                floor,
                "×",
                floor[1] <= 1.2,
            )
        )
    mem = c["memory"]
    small, large = (str(n) for n in c["config"]["memory"])
    found.append(
        Row(
            f"peak RSS, {large} / {small} repositories",
            "≤ 1.25",
            (mem["ratio"],) * 3,
            "×",
            mem["ratio"] <= 1.25,
        )
    )
    for n, figures in mem["peak_rss_mib"].items():
        found.append(
            Row(f"peak RSS of a cycle over {n} repositories", "", of(figures), "MiB", None)
        )
    for n, figures in c["scaling"]["wall_s"].items():
        found.append(
            Row(
                f"cycle over {n} repositories of {c['scaling']['images']} images",
                "linear",
                of(figures),
                "s",
                None,
            )
        )
    per = list(c["scaling"]["per_repository_vs_smallest"].values())
    found.append(
        Row(
            "time per repository, largest / smallest",
            "≤ 1.25",
            (per[-1],) * 3,
            "×",
            per[-1] <= 1.25,
        )
    )
    go = c["go"]
    found.append(
        Row(
            f"Go algorithm's work time / ours ({c['config']['repositories']} repositories)",
            "",
            (go["ratio_to_ours"],) * 3,
            "×",
            None,
        )
    )
    found.append(
        Row(
            f"initial sync of {s['sync']['pods']:,} pods",
            "< 3",
            of(s["sync"]["ready_s"]),
            "s",
            s["sync"]["ready_s"]["median"] < 3,
        )
    )
    found.append(
        Row(
            "peak RSS after the initial sync",
            "< 150",
            of(s["sync"]["peak_rss_mib"]),
            "MiB",
            s["sync"]["peak_rss_mib"]["median"] < 150,
        )
    )
    rate = spread([r["ours_events_per_s"] for r in e])
    found.append(
        Row("watch events into the index", "≥ 100,000", rate, "events/s", rate[1] >= 100_000)
    )
    ratio = spread([r["ratio"] for r in e])
    found.append(Row("… / kubernetes_asyncio's model path", "≥ 30", ratio, "×", ratio[1] >= 30))
    per_pod = spread([r["bytes_per_pod"] for r in e])
    found.append(
        Row(
            f"memory per tracked pod ({e[0]['memory_pods']:,} pods)",
            "≤ 200",
            per_pod,
            "bytes",
            per_pod[1] <= 200,
        )
    )
    found.append(Row("--help", "< 0.2", of(s["help_s"]), "s", s["help_s"]["median"] < 0.2))
    first = of(s["sync"]["first_list_s"])
    found.append(Row("exec to the first LIST", "< 1", first, "s", first[1] < 1))
    idle = s["idle"]
    found.append(
        Row(
            f"idle CPU, {idle['pods']:,} pods, {idle['seconds']:.0f} s",
            "",
            (idle["cpu_percent"],) * 3,
            "%",
            None,
        )
    )
    growth = idle["rss_end_mib"] - idle["rss_start_mib"]
    found.append(Row("idle RSS growth", "none", (growth,) * 3, "MiB", growth <= 0.5))
    return found


def number(value: float) -> str:
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(results: dict[str, Any]) -> str:
    machine = results["machine"]
    lines = [
        f"Measured {machine['date']} on {machine['nproc']} CPUs ({machine['cpu']}), "
        f"{machine['python']}, commit {machine['commit']}, by `python -m bench` "
        f"(load average {machine['load_before']:.2f} before, {machine['load_after']:.2f} after).",
        "",
        "| figure | target | min | median | max | unit | |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for row in rows(results):
        verdict = "" if row.met is None else ("met" if row.met else "**missed**")
        lines.append(
            f"| {row.figure} | {row.target} | "
            + " | ".join(number(v) for v in row.values)
            + f" | {row.unit} | {verdict} |"
        )
    return "\n".join(lines) + "\n"


def machine() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
        cwd=HERE,
    ).stdout.strip()
    return {
        "date": time.strftime("%Y-%m-%d"),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "commit": commit or "unknown",
        "load_before": os.getloadavg()[0],
    }


def run(*, quick: bool, runs: int | None) -> dict[str, Any]:
    results: dict[str, Any] = {"machine": machine()}
    ep_config = event_path.QUICK if quick else event_path.Config()
    results["event_path"] = [
        event_path.run(event_path.Config(**{**asdict(ep_config), "seed": seed}))
        for seed in (1, 2, 3)
    ]
    cycle_config = cycle.QUICK if quick else cycle.Config()
    sync_config = sync.QUICK if quick else sync.Config()
    if runs:
        cycle_config = cycle.decode(json.dumps({**asdict(cycle_config), "runs": runs}))
        sync_config = sync.Config(**{**asdict(sync_config), "runs": runs})
    results["cycle"] = cycle.run(cycle_config)
    results["sync"] = sync.run(sync_config)
    results["machine"]["load_after"] = os.getloadavg()[0]
    return results


def splice(readme: str, block: str) -> str:
    head, begin, rest = readme.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not begin or not end:
        raise SystemExit(f"README.md has no {BEGIN} ... {END} block")
    return f"{head}{BEGIN}\n{block}{END}{tail}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke sizes; writes nothing")
    parser.add_argument("--runs", type=int, help="runs per figure (default 3)")
    options = parser.parse_args(argv)
    results = run(quick=options.quick, runs=options.runs)
    text = table(results)
    print(text)
    if not options.quick:
        (HERE / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        (HERE / "results.md").write_text(text)
        README.write_text(splice(README.read_text(), text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
