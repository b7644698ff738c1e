"""Generates grafana/kube-ecr-cleanup-controller.json, the controller's Grafana dashboard.

Plain data in, Grafana's dashboard JSON (schemaVersion 39: Grafana 10.4 and 11 import it, and
older 10.x migrate it) out; tests/test_dashboard.py keeps the committed file equal to this
output, and tests/test_dashboard_e2e.py evaluates every query against a real Prometheus that
scrapes two real replicas.

    python -m grafana.dashboard           # rewrite the JSON
    python -m grafana.dashboard --check   # exit 1 if the committed JSON is stale

Conventions (as in kubernetes-mixin): one datasource variable that every panel and query uses;
`cluster` (an optional label: `.*` matches its absence), `namespace`, `job` and `repository`
variables; counters through `$__rate_interval` (time series) or `$__range` (totals); a unit
on every panel. Replicas: `max without (instance, pod)` takes the leader's gauges (a standby
exports none) and the newest success; counters are summed over the replicas.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PATH = Path(__file__).parent / "kube-ecr-cleanup-controller.json"
UID = "kube-ecr-cleanup-controller"
TITLE = "kube-ecr-cleanup-controller"
TAGS = ["kube-ecr-cleanup-controller", "ecr", "kubernetes"]
SCHEMA_VERSION = 39
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
GIB = 1024**3  # ECR bills storage per GB-month of 2^30 bytes
DEFAULT_PRICE = "0.10"  # USD per GB-month, ECR's price for private repositories

TARGET = 'cluster=~"$cluster", namespace=~"$namespace", job=~"$job"'
REPOSITORY = TARGET + ', repository=~"$repository"'
REPLICAS = "without (instance, pod)"


def m(name: str, selector: str = TARGET, extra: str = "") -> str:
    """A metric with the dashboard's selector (and `extra` matchers)."""
    return f"{name}{{{selector}{', ' + extra if extra else ''}}}"


def counted(name: str, window: str, selector: str = REPOSITORY) -> str:
    """The increase of a counter over `window`, counting a series that appeared within it whole.

    A repository's first cycle after a start, or an error code seen for the first time, makes
    a series whose first sample is already above 0: increase() alone would miss it."""
    series = m(name, selector)
    return f"((increase({series}[{window}]) and {series} offset {window}) or {series})"


def leader(name: str, selector: str = REPOSITORY) -> str:
    """A gauge only the leader exports (or the job-wide value every replica agrees on)."""
    return f"max {REPLICAS} ({m(name, selector)})"


@dataclass(frozen=True)
class Target:
    expr: str
    legend: str = ""
    instant: bool = False


@dataclass(frozen=True)
class Panel:
    title: str
    kind: str  # timeseries, stat, bargauge
    unit: str
    targets: Sequence[Target]
    description: str
    width: int = 8
    height: int = 8
    interval: str | None = None  # the panel's minimum interval (Grafana's "Min interval")
    bars: bool = False
    stacked: bool = False
    mappings: Sequence[tuple[float, str, str]] = ()  # value, text, colour
    thresholds: Sequence[tuple[float | None, str]] = ((None, "green"),)
    extra: dict[str, Any] = field(default_factory=dict)


PRICE = "$price_per_gb_month"
DELETED = "ecr_cleanup_images_deleted_total"
RECLAIMED = "ecr_cleanup_reclaimed_bytes_total"
ERRORS = "ecr_cleanup_errors_total"
FAILURES = "ecr_cleanup_image_delete_failures_total"
VETOED = "ecr_cleanup_images_vetoed_total"
ARCHIVED = "ecr_cleanup_images_archived_total"
EXPIRED = "ecr_cleanup_archived_images_deleted_total"
RESTORES = "ecr_cleanup_restores_requested_total"
FAILED = 'result="failed"'
REFUSED = 'result="refused"'

OVERVIEW = [
    Panel(
        "Images deleted per hour",
        "timeseries",
        "short",
        [Target(f"sum({counted(DELETED, '$__rate_interval')})", "deleted")],
        "Images deleted from ECR per hour, all selected repositories (a dry run deletes none).",
        interval="1h",
        bars=True,
    ),
    Panel(
        "Storage reclaimed",
        "stat",
        "bytes",
        [Target(f"sum({counted(RECLAIMED, '$__range')})", "reclaimed", instant=True)],
        "Summed ECR sizes of the images deleted in the dashboard's time range. ECR stores a "
        "layer shared by several images once, so this is an upper bound.",
        width=4,
        height=5,
    ),
    Panel(
        "Estimated monthly saving",
        "stat",
        "currencyUSD",
        [
            Target(
                f"sum({counted(RECLAIMED, '$__range')}) / {GIB} * {PRICE}",
                "deleted in range",
                instant=True,
            ),
            Target(
                f"sum({leader('ecr_cleanup_dry_run_would_reclaim_bytes')}) / {GIB} * {PRICE}",
                "dry run: would save",
                instant=True,
            ),
        ],
        "Storage deleted in the time range, and what a dry run would delete now, at the "
        "price_per_gb_month variable (USD per GB-month; 0.10 is ECR's list price for private "
        "repositories). An upper bound: shared layers are billed once.",
        width=4,
        height=5,
    ),
    Panel(
        "Repositories over their limit",
        "stat",
        "short",
        [
            Target(
                f"sum({leader('ecr_cleanup_repository_images')} > bool "
                f"{leader('ecr_cleanup_repository_max_images')})",
                "over limit",
                instant=True,
            )
        ],
        "Repositories holding more images than their max-images after the last cycle: their "
        "protected images exceed the limit, deletions failed or were held back, or dry-run.",
        width=4,
        height=5,
        thresholds=((None, "green"), (1, "orange")),
    ),
    Panel(
        "Last successful cycle",
        "stat",
        "s",
        [
            Target(
                f"time() - max {REPLICAS} ({m('ecr_cleanup_last_success_timestamp_seconds')} > 0)",
                "{{job}}",
                instant=True,
            )
        ],
        "Time since the newest cycle without errors ended, over the replicas (a standby never "
        "runs one). EcrCleanupNoSuccessfulCycle fires after 3 intervals.",
        width=4,
        height=5,
    ),
    Panel(
        "Dry-run",
        "stat",
        "bool_on_off",
        [Target(leader("ecr_cleanup_dry_run", TARGET), "{{job}}", instant=True)],
        "On: the controller only reports what it would delete. Off: it deletes.",
        width=4,
        height=5,
        mappings=((0, "off: deleting", "green"), (1, "on: deleting nothing", "orange")),
    ),
    Panel(
        "Errors",
        "stat",
        "short",
        [
            Target(f"sum({counted(ERRORS, '$__range')})", "repository errors", instant=True),
            Target(f"sum({counted(FAILURES, '$__range')})", "delete failures", instant=True),
            Target(
                f"sum(increase({m('ecr_cleanup_cycles_total', TARGET, FAILED)}[$__range]))",
                "failed cycles",
                instant=True,
            ),
        ],
        "In the time range: failed repository prunes, images ECR refused to delete, and "
        "cycles that ended with any error.",
        width=8,
        height=5,
        thresholds=((None, "green"), (1, "red")),
    ),
]

REPOSITORIES = [
    Panel(
        "Images, % of the limit",
        "bargauge",
        "percentunit",
        [
            Target(
                f"{leader('ecr_cleanup_repository_images')} / "
                f"{leader('ecr_cleanup_repository_max_images')}",
                "{{repository}}",
                instant=True,
            )
        ],
        "Images in each repository as the last cycle left it, as a share of its effective "
        "max-images (after --config overrides). Above 100%: see EcrCleanupRepositoryOverLimit.",
        width=12,
        thresholds=((None, "green"), (0.95, "orange"), (1.0001, "red")),
        extra={"min": 0, "max": 1.2},
    ),
    Panel(
        "Images protected, per reason",
        "timeseries",
        "short",
        [
            Target(
                f"sum by (reason) ({leader('ecr_cleanup_protected_images')})",
                "{{reason}}",
            )
        ],
        "Images the last cycle could not delete whatever the count: in use, kept by tag, "
        "regex, age or recent pull, index children.",
        width=12,
        stacked=True,
    ),
    Panel(
        "Deletions, per repository",
        "timeseries",
        "short",
        [
            Target(
                f"sum by (repository) ({counted(DELETED, '$__rate_interval')})",
                "{{repository}}",
            ),
            Target(
                f"sum by (repository) ({leader('ecr_cleanup_dry_run_would_delete_images')})",
                "{{repository}} (dry run: would delete now)",
            ),
        ],
        "Images deleted per interval of the graph, and, in dry-run, what the last cycle would "
        "have deleted.",
        width=12,
        bars=True,
    ),
    Panel(
        "Delete failures",
        "timeseries",
        "short",
        [
            Target(
                f"sum by (repository, code) ({counted(FAILURES, '$__rate_interval')})",
                "{{repository}} {{code}}",
            )
        ],
        "Images ECR refused to delete (BatchDeleteImage failures), per repository and failure "
        "code; each repository has a zero line.",
        width=12,
        bars=True,
    ),
    Panel(
        "Archive",
        "timeseries",
        "short",
        [
            Target(
                f"sum by (repository) ({counted(ARCHIVED, '$__rate_interval')})",
                "{{repository}} archived",
            ),
            Target(
                f"sum by (repository) ({counted(EXPIRED, '$__rate_interval')})",
                "{{repository}} deleted from the archive",
            ),
            Target(
                f"sum by (repository) ({counted(RESTORES, '$__rate_interval')})",
                "{{repository}} restore requested",
            ),
        ],
        "With --disposal=archive: images moved to ECR's archive storage class instead of "
        "deleted, archived images deleted after --delete-archived-after, and archived images "
        "asked back because they came into use; per repository. All zero in delete mode.",
        width=12,
        bars=True,
    ),
]

SAFETY = [
    Panel(
        "View trusted",
        "stat",
        "bool_yes_no",
        [Target(m("ecr_cleanup_view_trusted"), "{{instance}}", instant=True)],
        "Per replica: whether its view of the images in use can be trusted for deleting (every "
        "source synced, none denied or stale, pods in scope). The leader deletes only when yes.",
        width=6,
        mappings=((0, "untrusted", "red"), (1, "trusted", "green")),
    ),
    Panel(
        "Images in use",
        "timeseries",
        "short",
        [
            Target(leader("ecr_cleanup_images_in_use", TARGET), "digests in use"),
            Target(
                f"max by (kind) ({m('ecr_cleanup_watched_objects')})",
                "{{kind}} watched",
            ),
        ],
        "Distinct image digests the watched objects reference (never deleted), and the objects "
        "watched per kind.",
        width=9,
    ),
    Panel(
        "Cycles skipped or refused, per reason",
        "timeseries",
        "short",
        [
            Target(
                f"sum by (reason) (increase({m('ecr_cleanup_cycles_skipped_total')}"
                "[$__rate_interval]))",
                "skipped: {{reason}}",
            ),
            Target(
                f"sum(increase({m('ecr_cleanup_cycles_total', TARGET, REFUSED)}"
                "[$__rate_interval]))",
                "refused: untrusted view",
            ),
        ],
        "Scheduled cycles that did not run: the view was not trusted, or the replica is a "
        "standby (one not-leader skip per interval is normal on a standby).",
        width=9,
        bars=True,
    ),
    Panel(
        "Source staleness",
        "timeseries",
        "s",
        [
            Target(
                "max by (source_cluster, kind, source_namespace) "
                f"({m('ecr_cleanup_watch_staleness_seconds')})",
                "{{source_cluster}} {{kind}} {{source_namespace}}",
            )
        ],
        "Per watched source (cluster, kind, namespace), seconds since its view was last known "
        "current: 0 while connected. Above --max-staleness the view is not trusted.",
        width=8,
    ),
    Panel(
        "Sources denied (401/403) or not served (404)",
        "timeseries",
        "bool_yes_no",
        [
            Target(
                "max by (source_cluster, kind, source_namespace) "
                f"({m('ecr_cleanup_watch_denied')})",
                "denied: {{source_cluster}} {{kind}} {{source_namespace}}",
            ),
            Target(
                "max by (source_cluster, kind, source_namespace) "
                f"({m('ecr_cleanup_watch_not_served')})",
                "not served: {{source_cluster}} {{kind}} {{source_namespace}}",
            ),
        ],
        "1 while a source's API server answers 401 or 403 (check the RBAC of that cluster, or "
        "the IAM policy of an ECS or Lambda source), or 404 (a --protect-resources CRD that "
        "cluster does not serve: install it or remove the entry). Either stops pruning.",
        width=8,
    ),
    Panel(
        "Watch re-lists and restarts",
        "timeseries",
        "short",
        [
            Target(
                f"sum by (kind) (increase({m('ecr_cleanup_watch_relists_total')}"
                "[$__rate_interval]))",
                "re-lists: {{kind}}",
            ),
            Target(
                f"sum by (kind) (increase({m('ecr_cleanup_watch_restarts_total')}"
                "[$__rate_interval]))",
                "restarts: {{kind}}",
            ),
        ],
        "LISTs after the first (410 Gone, a lost view) and watch streams reopened, over the "
        "replicas. Reopening every few minutes is normal (server-side timeouts).",
        width=8,
    ),
    Panel(
        "Vetoed deletions",
        "timeseries",
        "short",
        [
            Target(
                f"sum by (repository) ({counted(VETOED, '$__rate_interval')})",
                "{{repository}}",
            )
        ],
        "Images planned for deletion but kept because they came into use before the delete "
        "call (checked right before every call).",
        width=24,
        height=6,
        bars=True,
    ),
]

ECR_API = [
    Panel(
        "ECR API calls, per operation",
        "timeseries",
        "reqps",
        [
            Target(
                f"sum by (operation) (rate({m('ecr_cleanup_ecr_api_calls_total')}"
                "[$__rate_interval]))",
                "{{operation}}",
            )
        ],
        "ECR API calls made (retries not counted).",
    ),
    Panel(
        "ECR API throttles, per operation",
        "timeseries",
        "reqps",
        [
            Target(
                f"sum by (operation) (rate({m('ecr_cleanup_ecr_api_throttles_total')}"
                "[$__rate_interval]))",
                "{{operation}}",
            )
        ],
        "ECR attempts answered with throttling (HTTP 429 or a throttling code); the SDK retries "
        "them.",
    ),
    Panel(
        "ECR API errors, per operation and code",
        "timeseries",
        "short",
        [
            Target(
                f"sum by (operation, code) ({counted(ERRORS, '$__rate_interval')})",
                "{{operation}} {{code}}",
            )
        ],
        "Repository prunes that failed, per failing operation and error code, per interval of "
        "the graph (the line without a code is the zero line).",
        bars=True,
    ),
    Panel(
        "ECS, Lambda and STS calls, per operation",
        "timeseries",
        "reqps",
        [
            Target(
                f"sum by (operation) (rate({m('ecr_cleanup_aws_source_api_calls_total')}"
                "[$__rate_interval]))",
                "{{operation}}",
            ),
            Target(
                f"sum by (operation) (rate({m('ecr_cleanup_aws_source_api_throttles_total')}"
                "[$__rate_interval]))",
                "throttled {{operation}}",
            ),
        ],
        "The calls of the --protect-ecs and --protect-lambda sources (zero without them), and "
        "their throttled attempts.",
    ),
]

CONTROLLER = [
    Panel(
        "Cycle duration",
        "timeseries",
        "s",
        [
            Target(
                f"histogram_quantile({q}, sum by (le) "
                f"(rate({m('ecr_cleanup_cycle_duration_seconds_bucket')}[$__rate_interval])))",
                f"p{round(q * 100)}",
            )
            for q in (0.5, 0.95)
        ],
        "Median and 95th percentile of the cycles' wall-clock durations (over windows of at "
        "least an hour: cycles run every interval).",
        interval="1h",
    ),
    Panel(
        "Cycles, per result",
        "timeseries",
        "short",
        [
            Target(
                f"sum by (result) (increase({m('ecr_cleanup_cycles_total')}[$__rate_interval]))",
                "{{result}}",
            )
        ],
        "Cycles run, by result: ok, failed, refused, stopped (by shutdown).",
        bars=True,
    ),
    Panel(
        "Leader",
        "stat",
        "bool_yes_no",
        [Target(m("ecr_cleanup_leader"), "{{instance}}", instant=True)],
        "Per replica: whether it holds the Lease (only the leader prunes).",
        width=4,
        mappings=((0, "standby", "blue"), (1, "leader", "green")),
    ),
    Panel(
        "Interval",
        "stat",
        "s",
        [Target(leader("ecr_cleanup_interval_seconds", TARGET), "{{job}}", instant=True)],
        "The configured -interval between cycles.",
        width=4,
    ),
    Panel(
        "Build",
        "stat",
        "none",
        [
            Target(
                f"max by (instance, version, python) ({m('ecr_cleanup_build_info')})",
                "{{instance}}: {{version}} (Python {{python}})",
                instant=True,
            )
        ],
        "The controller's version and Python version, per replica.",
        width=8,
        extra={"textMode": "name"},
    ),
    Panel(
        "Memory (resident)",
        "timeseries",
        "bytes",
        [Target(m("process_resident_memory_bytes"), "{{instance}}")],
        "Resident memory per replica.",
        width=12,
    ),
    Panel(
        "CPU",
        "timeseries",
        "percentunit",
        [Target(f"rate({m('process_cpu_seconds_total')}[$__rate_interval])", "{{instance}}")],
        "CPU per replica (100% = one core).",
        width=12,
    ),
]

ROWS: list[tuple[str, list[Panel]]] = [
    ("Overview", OVERVIEW),
    ("Repositories", REPOSITORIES),
    ("Safety", SAFETY),
    ("ECR API", ECR_API),
    ("Controller", CONTROLLER),
]


def panels() -> list[tuple[str, Panel]]:
    """Every panel with its row's title, in order."""
    return [(row, panel) for row, row_panels in ROWS for panel in row_panels]


def interpolate(
    expr: str,
    *,
    job: str,
    rate_interval: str,
    range_: str,
    cluster: str = ".*",
    namespace: str = ".*",
    repository: str = ".*",
    price: str = DEFAULT_PRICE,
) -> str:
    """What Grafana sends for `expr` with these variable values (for evaluating the panels'
    queries outside Grafana: the end-to-end test and the README's picture)."""
    values = {
        "$__rate_interval": rate_interval,
        "$__range": range_,
        "$price_per_gb_month": price,
        "$cluster": cluster,
        "$namespace": namespace,
        "$job": job,
        "$repository": repository,
    }
    for name, value in values.items():  # longest first: $__rate_interval before $__range
        expr = expr.replace(name, value)
    assert "$" not in expr, expr
    return expr


# -- JSON -------------------------------------------------------------------------------------


def _thresholds(panel: Panel) -> dict[str, Any]:
    return {
        "mode": "absolute",
        "steps": [{"color": colour, "value": value} for value, colour in panel.thresholds],
    }


def _mappings(panel: Panel) -> list[dict[str, Any]]:
    if not panel.mappings:
        return []
    return [
        {
            "type": "value",
            "options": {
                str(int(value)): {"text": text, "color": colour, "index": i}
                for i, (value, text, colour) in enumerate(panel.mappings)
            },
        }
    ]


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "unit": panel.unit,
        "thresholds": _thresholds(panel),
        "mappings": _mappings(panel),
        "color": {"mode": "thresholds" if panel.kind != "timeseries" else "palette-classic"},
    }
    for key in ("min", "max"):
        if key in panel.extra:
            defaults[key] = panel.extra[key]
    options: dict[str, Any]
    if panel.kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "bars" if panel.bars else "line",
            "fillOpacity": 60 if panel.bars else (30 if panel.stacked else 10),
            "lineWidth": 1,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"mode": "normal" if panel.stacked or panel.bars else "none"},
        }
        options = {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    elif panel.kind == "stat":
        options = {
            "colorMode": "value",
            "graphMode": "none",
            "justifyMode": "auto",
            "orientation": "auto",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "textMode": panel.extra.get("textMode", "auto"),
        }
    elif panel.kind == "bargauge":
        options = {
            "displayMode": "gradient",
            "orientation": "horizontal",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "showUnfilled": True,
        }
    else:
        raise ValueError(f"{panel.title}: unknown panel kind {panel.kind}")
    result: dict[str, Any] = {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": dict(DATASOURCE),
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options,
        "targets": [
            {
                "datasource": dict(DATASOURCE),
                "expr": target.expr,
                "legendFormat": target.legend or "__auto",
                "instant": target.instant,
                "range": not target.instant,
                "refId": chr(ord("A") + i),
            }
            for i, target in enumerate(panel.targets)
        ],
    }
    if panel.interval:
        result["interval"] = panel.interval
    return result


def _variables() -> list[dict[str, Any]]:
    def query(name: str, label: str, definition: str, *, all_value: str | None) -> dict[str, Any]:
        variable: dict[str, Any] = {
            "name": name,
            "label": label,
            "type": "query",
            "datasource": dict(DATASOURCE),
            "definition": definition,
            "query": definition,
            "refresh": 2,
            "regex": "",
            "sort": 1,
            "includeAll": True,
            "multi": True,
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "options": [],
            "hide": 0,
        }
        if all_value is not None:
            variable["allValue"] = all_value
        return variable

    return [
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "regex": "",
            "current": {},
            "options": [],
            "hide": 0,
            "refresh": 1,
        },
        # optional label (one Prometheus per cluster has none): `.*` also matches its absence
        query(
            "cluster", "Cluster", "label_values(ecr_cleanup_build_info, cluster)", all_value=".*"
        ),
        query(
            "namespace",
            "Namespace",
            'label_values(ecr_cleanup_build_info{cluster=~"$cluster"}, namespace)',
            all_value=".*",
        ),
        # no allValue: "All" is the list of the controller's jobs, so that the process_* panels
        # never show another job's processes
        query(
            "job",
            "Job",
            'label_values(ecr_cleanup_build_info{cluster=~"$cluster", namespace=~"$namespace"}, '
            "job)",
            all_value=None,
        ),
        query(
            "repository",
            "Repository",
            f"label_values(ecr_cleanup_repository_max_images{{{TARGET}}}, repository)",
            all_value=".*",
        ),
        {
            "name": "price_per_gb_month",
            "label": "Price per GB-month (USD)",
            "type": "textbox",
            "query": DEFAULT_PRICE,
            "current": {"selected": False, "text": DEFAULT_PRICE, "value": DEFAULT_PRICE},
            "options": [{"selected": True, "text": DEFAULT_PRICE, "value": DEFAULT_PRICE}],
            "hide": 0,
        },
    ]


def dashboard() -> dict[str, Any]:
    out: list[dict[str, Any]] = []
    y = 0
    next_id = 1
    for row_title, row_panels in ROWS:
        out.append(
            {
                "id": next_id,
                "type": "row",
                "title": row_title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        next_id += 1
        y += 1
        x, line_height = 0, 0
        for panel in row_panels:
            if x + panel.width > 24:
                x, y, line_height = 0, y + line_height, 0
            out.append(_panel_json(panel, next_id, x, y))
            next_id += 1
            x += panel.width
            line_height = max(line_height, panel.height)
        y += line_height
    return {
        "id": None,
        "uid": UID,
        "title": TITLE,
        "description": "Pruning, safety and health of kube-ecr-cleanup-controller.",
        "tags": TAGS,
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": "now-24h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "refresh": "1m",
        "links": [],
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "templating": {"list": _variables()},
        "panels": out,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if the JSON file is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if PATH.read_text() != text:
            print(f"{PATH} is stale: run python -m grafana.dashboard", file=sys.stderr)
            return 1
        return 0
    PATH.write_text(text)
    print(f"wrote {PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
