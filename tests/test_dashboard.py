"""The Grafana dashboard, statically: the committed JSON is the generator's output, and it keeps
the conventions (datasource variable everywhere, the variables, units, windows, selectors)."""

from __future__ import annotations

import json
import re
from typing import Any

from grafana import dashboard

ROW_TITLES = ["Overview", "Repositories", "Safety", "ECR API", "Controller"]
SELECTOR = 'cluster=~"$cluster", namespace=~"$namespace", job=~"$job"'


def committed() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(dashboard.PATH.read_text())
    return data


def panels() -> list[dict[str, Any]]:
    return [p for p in committed()["panels"] if p["type"] != "row"]


def test_the_committed_json_is_the_generators_output() -> None:
    assert dashboard.PATH.read_text() == dashboard.render()
    assert dashboard.main(["--check"]) == 0


def test_identity_for_import() -> None:
    data = committed()
    assert data["uid"] == "kube-ecr-cleanup-controller"
    assert len(data["uid"]) <= 40
    assert data["id"] is None
    assert "kube-ecr-cleanup-controller" in data["tags"]
    assert data["schemaVersion"] == 39


def test_rows_in_order() -> None:
    rows = [p["title"] for p in committed()["panels"] if p["type"] == "row"]
    assert rows == ROW_TITLES


def test_variables() -> None:
    variables = {v["name"]: v for v in committed()["templating"]["list"]}
    assert list(variables) == [
        "datasource",
        "cluster",
        "namespace",
        "job",
        "repository",
        "price_per_gb_month",
    ]
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("cluster", "namespace", "job", "repository"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert variables[name]["includeAll"] is True
    # an absent cluster label must match: `.*` matches the empty value
    assert variables["cluster"]["allValue"] == ".*"
    # "All" jobs are the controller's jobs, never `.*` (the process_* panels would show others)
    assert "allValue" not in variables["job"]
    price = variables["price_per_gb_month"]
    assert price["type"] == "textbox"
    assert price["query"] == price["current"]["value"] == "0.10"


def test_every_panel_and_query_uses_the_datasource_variable() -> None:
    for panel in panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]


def test_every_panel_has_a_unit_and_a_description() -> None:
    for panel in panels():
        assert panel["fieldConfig"]["defaults"]["unit"], panel["title"]
        assert panel["description"], panel["title"]


def test_windows_are_grafanas_never_hard_coded() -> None:
    for panel in panels():
        for target in panel["targets"]:
            expr = target["expr"]
            windows = set(re.findall(r"\[([^\]]+)\]", expr)) | set(
                re.findall(r"offset (\S+?)\)", expr)
            )
            assert windows <= {"$__rate_interval", "$__range"}, (panel["title"], windows)
            for window in re.findall(r"\brate\([^\[]*\[([^\]]+)\]", expr):
                assert window == "$__rate_interval", (panel["title"], expr)


def test_every_metric_is_selected_by_the_dashboard_variables() -> None:
    for panel in panels():
        for target in panel["targets"]:
            expr = target["expr"]
            selectors = re.findall(r"\b((?:ecr_cleanup|process)_[a-z_]+)(\{[^}]*\})?", expr)
            assert selectors, (panel["title"], expr)
            for name, selector in selectors:
                assert selector.startswith("{" + SELECTOR), (panel["title"], name, expr)


def test_the_layout_fits_and_ids_are_unique() -> None:
    all_panels = committed()["panels"]
    assert len({p["id"] for p in all_panels}) == len(all_panels)
    cells: set[tuple[int, int]] = set()
    for panel in all_panels:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps at {(x, y)}"
                cells.add((x, y))
