"""End to end: every dashboard query and every alert rule against a real Prometheus scraping two
real controller replicas (leader and standby) that prune the seeded world.

Each query must parse, and each returns at least one series in this healthy run (the zero
series the controller initialises); the key panels show what ECR and the cluster actually hold;
no alert fires or is pending; every metric the dashboard and the rules name is exposed.
"""

from __future__ import annotations

import re
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from grafana import dashboard, picture
from sandbox.scenario import MAX_IMAGES, SELECTED
from tests.observed import JOB, RULES, Run, observed_run
from tests.worlds import World, world

__all__ = ["world"]  # the fixture

RATE_INTERVAL = "1m"  # what Grafana makes of $__rate_interval at 1 s scrapes, well above 4 scrapes
HOURLY = "1h"  # panels with a 1 h minimum interval: $__rate_interval is at least that
RANGE = "10m"  # the dashboard's time range: the whole run


def query(run: Run, panel: dashboard.Panel, index: int) -> list[dict[str, Any]]:
    expr = dashboard.interpolate(
        panel.targets[index].expr,
        job=JOB,
        rate_interval=HOURLY if panel.interval == "1h" else RATE_INTERVAL,
        range_=RANGE,
    )
    return run.prom.query(expr)


def panel(title: str) -> dashboard.Panel:
    return next(p for _row, p in dashboard.panels() if p.title == title)


def values(run: Run, title: str, index: int = 0, *, by: str = "") -> dict[str, float]:
    result = query(run, panel(title), index)
    return {r["metric"].get(by, ""): float(r["value"][1]) for r in result}


def exposition(port: int) -> set[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def repository_series(port: int) -> set[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        s.name
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if "repository" in s.labels
    }


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


METRIC = re.compile(r"\b(ecr_cleanup_[a-z_]+|process_[a-z_]+|up)\b")


def test_every_panel_and_alert_is_right_for_a_leader_and_a_standby(
    world: World, tmp_path: Path
) -> None:
    before = world.state()
    started = time.time()
    with observed_run(world, tmp_path) as run:
        after = world.state()
        deleted = sum(len(before[r]) - len(after[r]) for r in before)
        assert deleted > 0
        leading = {
            port: run.prom.value(f'ecr_cleanup_leader{{job="{JOB}", instance="127.0.0.1:{port}"}}')
            for port in run.ports
        }
        [leader_port] = [port for port, value in leading.items() if value == 1]
        [standby_port] = [port for port, value in leading.items() if value == 0]

        # every query of every panel parses and answers at least one series
        for row, each in dashboard.panels():
            for index, target in enumerate(each.targets):
                assert query(run, each, index), f"{row} / {each.title} / {target.legend}: empty"

        # the panels show the truth
        repositories = [r for r in after if r in world.scenario.digests and r != "legacy/monolith"]
        assert values(run, "Images deleted per hour") == {"": deleted}  # the first cycle too
        assert values(run, "Images, % of the limit", by="repository") == {
            r: len(after[r]) / MAX_IMAGES for r in repositories
        }
        over = sum(len(after[r]) > MAX_IMAGES for r in repositories)
        assert values(run, "Repositories over their limit") == {"": over}
        assert values(run, "Dry-run", by="job") == {JOB: 0}
        assert values(run, "Interval", by="job") == {JOB: 2}
        age = values(run, "Last successful cycle", by="job")[JOB]
        assert 0 <= age < 30
        assert values(run, "Leader", by="instance") == {
            f"127.0.0.1:{leader_port}": 1,
            f"127.0.0.1:{standby_port}": 0,
        }
        assert set(values(run, "View trusted", by="instance").values()) == {1}
        for index in range(3):
            assert values(run, "Errors", index) == {"": 0}, panel("Errors").targets[index]
        assert values(run, "Storage reclaimed")[""] > 0
        monthly = values(run, "Estimated monthly saving")[""]
        reclaimed = values(run, "Storage reclaimed")[""]
        assert abs(monthly - reclaimed / 2**30 * 0.10) < 1e-9
        assert len(values(run, "Build", by="instance")) == 2
        assert set(SELECTED) - {"shop/*"} <= set(repositories)

        # the rules: loaded, evaluated without error, nothing pending or firing
        deadline = time.monotonic() + 30
        while any(r["health"] != "ok" for r in run.prom.rules()):
            assert time.monotonic() < deadline, [
                (r["name"], r["health"], r.get("lastError")) for r in run.prom.rules()
            ]
            time.sleep(0.2)
        assert len(run.prom.rules()) == len(alert_rules())
        assert run.prom.alerts() == []
        for rule in alert_rules():
            assert run.prom.query(rule["expr"]) == [], rule["alert"]
        # ... while a rule on each replica's own success would page for the standby
        naive = run.prom.query(
            f'time() - ecr_cleanup_last_success_timestamp_seconds{{job="{JOB}"}} '
            f'> 3 * ecr_cleanup_interval_seconds{{job="{JOB}"}}'
        )
        assert [r["metric"]["instance"] for r in naive] == [f"127.0.0.1:{standby_port}"]

        # every metric the dashboard and the rules name is exposed
        named = {
            name
            for _row, each in dashboard.panels()
            for target in each.targets
            for name in METRIC.findall(target.expr)
        } | {name for rule in alert_rules() for name in METRIC.findall(rule["expr"])}
        named.discard("up")  # Prometheus' own, per target
        leader_names = exposition(leader_port)
        assert named <= leader_names, named - leader_names
        # the standby exports everything but the repositories' series (it never ran a cycle)
        standby_names = exposition(standby_port)
        per_repository = repository_series(leader_port)
        assert repository_series(standby_port) == set()
        assert named - per_repository <= standby_names, named - per_repository - standby_names

        # the README's picture, drawn from this run: every panel it shows has data. Its bars
        # are 5 s apart and its slowest rate window is 20 s: a run shorter than those (three
        # fast cycles take about 6 s) leaves a graph with no point where the counters exist,
        # so the picture waits until every deletion counter has 20 scrapes (1 s apart)
        run.wait(
            f'min(count_over_time(ecr_cleanup_images_deleted_total{{job="{JOB}"}}[1h]))',
            20,
            90,
            "20 scrapes of every deletion counter",
        )
        out = tmp_path / "dashboard.png"
        window = picture.Window(start=started, end=time.time(), step=1, rate_seconds=5, job=JOB)
        drawn = picture.render(run.prom, out, window)
        assert set(drawn) == set(picture.STATS) | set(picture.GRAPHS)
        assert all(drawn.values()), drawn
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
