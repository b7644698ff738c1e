"""Renders the dashboard's main panels to a PNG for the README, from a real Prometheus.

Not a Grafana screenshot (no Grafana server can run here): the panels' own PromQL, taken from
grafana/dashboard.py, is evaluated by a real Prometheus that scraped two controller replicas
running against the sandbox (moto's ECR and the API-server simulator), and matplotlib draws
the answers. The picture says so in its footer.

    scripts/render-dashboard [docs/dashboard.png]    # about 3 minutes

`render` is also called by tests/test_dashboard_e2e.py on its own run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import matplotlib.dates as mdates
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from grafana.dashboard import Panel, interpolate, panels

OUT = Path(__file__).parent.parent / "docs" / "dashboard.png"

STATS = [
    "Storage reclaimed",
    "Estimated monthly saving",
    "Repositories over their limit",
    "Last successful cycle",
    "Dry-run",
    "Errors",
]
GRAPHS = [
    "Images, % of the limit",
    "Deletions, per repository",
    "Images protected, per reason",
    "Images in use",
    "ECR API calls, per operation",
    "Cycle duration",
]

BACKGROUND, PANEL, TEXT, MUTED, GRID = "#111217", "#181b1f", "#ccccdc", "#8e8e9e", "#2c3235"
COLOURS = ["#73bf69", "#f2cc0c", "#5794f2", "#ff9830", "#f2495c", "#b877d9", "#8ab8ff", "#fade2a"]


class Queries(Protocol):
    """Prometheus' instant and range queries (tests.prometheus.Prometheus has them)."""

    def query(self, promql: str, *, at: float | None = None) -> list[dict[str, Any]]: ...

    def query_range(
        self, promql: str, *, start: float, end: float, step: float
    ) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class Window:
    start: float
    end: float
    step: float
    # seconds between the points of a line
    rate_seconds: int
    # what $__rate_interval stands for; bars are this far apart, as in Grafana, where
    # $__rate_interval is about the graph's step: each event shows in one bar
    job: str

    @property
    def rate_interval(self) -> str:
        return f"{self.rate_seconds}s"

    def expr(self, panel: Panel, index: int) -> str:
        seconds = round(self.end - self.start)
        # a panel with a minimum interval (1 h in Grafana, where cycles are 30 min apart) gets
        # a window 4 times as long here, so that it spans cycles as it does there
        window = self.rate_seconds * (4 if panel.interval else 1)
        return interpolate(
            panel.targets[index].expr,
            job=self.job,
            rate_interval=f"{window}s",
            range_=f"{seconds}s",
        )


def legend(template: str, labels: dict[str, str]) -> str:
    text = template
    for key, value in labels.items():
        text = text.replace("{{" + key + "}}", value)
    while "{{" in text:  # a label the series does not have
        head, _, rest = text.partition("{{")
        text = head + rest.partition("}}")[2]
    return text.strip() or "-"


def _style(ax: Axes, title: str) -> None:
    ax.set_facecolor(PANEL)
    ax.set_title(title, loc="left", color=TEXT, fontsize=11, pad=8)
    ax.tick_params(colors=MUTED, labelsize=8)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.grid(True, color=GRID, linewidth=0.6)
    ax.set_axisbelow(True)


def _format(value: float, unit: str) -> str:
    if unit == "bytes":
        for suffix in ("B", "KiB", "MiB", "GiB", "TiB"):
            if abs(value) < 1024 or suffix == "TiB":
                return f"{value:.1f} {suffix}" if suffix != "B" else f"{value:.0f} B"
            value /= 1024
    if unit == "currencyUSD":
        return f"${value:,.2f}"
    if unit == "s":
        return f"{value:.0f} s" if value < 120 else f"{value / 60:.0f} min"
    return f"{value:,.0f}"


def _stat(ax: Axes, prom: Queries, panel: Panel, window: Window) -> int:
    _style(ax, panel.title)
    ax.grid(False)
    ax.set_xticks([])
    ax.set_yticks([])
    lines: list[tuple[str, str]] = []
    for i, target in enumerate(panel.targets):
        for series in prom.query(window.expr(panel, i), at=window.end):
            value = float(series["value"][1])
            if panel.mappings:
                text = next((t for v, t, _c in panel.mappings if v == value), str(value))
            else:
                text = _format(value, panel.unit)
            lines.append((text, legend(target.legend, series["metric"])))
    for n, (text, label) in enumerate(lines):
        spacing = 0.8 / len(lines)
        y = 0.5 if len(lines) == 1 else 0.9 - spacing * (n + 0.5) + 0.05
        size = 20 if len(lines) == 1 else 15 if len(lines) == 2 else 12
        ax.text(
            0.5,
            y,
            text,
            ha="center",
            va="center",
            color=COLOURS[0],
            fontsize=size,
            parse_math=False,
        )
        if len(lines) > 1 or label not in ("-", "kube-ecr-cleanup-controller"):
            ax.text(
                0.5, y - spacing * 0.42, label, ha="center", va="center", color=MUTED, fontsize=8
            )
    return len(lines)


def _bars(ax: Axes, prom: Queries, panel: Panel, window: Window) -> int:
    _style(ax, panel.title)
    results = prom.query(window.expr(panel, 0), at=window.end)
    rows = sorted(
        ((legend(panel.targets[0].legend, r["metric"]), float(r["value"][1])) for r in results),
        key=lambda row: row[0],
        reverse=True,
    )
    names = [name for name, _ in rows]
    values = [value for _, value in rows]
    colours = [COLOURS[4] if v > 1 else COLOURS[3] if v >= 0.95 else COLOURS[0] for v in values]
    ax.barh(range(len(rows)), values, color=colours, height=0.7, alpha=0.6)
    ax.set_xlim(0, 1.2)
    ax.set_yticks([])
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:.0%}"))
    for y, (name, value) in enumerate(zip(names, values, strict=True)):
        ax.text(0.02, y, name, va="center", color=TEXT, fontsize=9, fontweight="bold")
        ax.text(1.18, y, f"{value:.0%}", ha="right", va="center", color=TEXT, fontsize=9)
    return len(rows)


def _series(ax: Axes, prom: Queries, panel: Panel, window: Window) -> int:
    _style(ax, panel.title)
    drawn = 0
    stack: dict[float, float] = {}
    for i, target in enumerate(panel.targets):
        step = window.rate_seconds if panel.bars else window.step
        results = prom.query_range(
            window.expr(panel, i), start=window.start, end=window.end, step=step
        )
        for series in sorted(results, key=lambda r: legend(target.legend, r["metric"])):
            points = [(float(t), float(v)) for t, v in series["values"]]
            if not points:
                continue
            colour = COLOURS[drawn % len(COLOURS)]
            label = legend(target.legend, series["metric"])
            times = [t / 86400 for t, _ in points]  # matplotlib's dates: days since 1970
            values = [v for _, v in points]
            if panel.bars:
                bottoms = [stack.get(t, 0.0) for t, _ in points]
                width = step / 86400 * 0.8
                ax.bar(times, values, width=width, bottom=bottoms, color=colour, label=label)
                for t, v in points:
                    stack[t] = stack.get(t, 0.0) + v
            elif panel.stacked:
                bottoms = [stack.get(t, 0.0) for t, _ in points]
                tops = [b + v for b, v in zip(bottoms, values, strict=True)]
                ax.fill_between(times, bottoms, tops, color=colour, alpha=0.5, label=label)
                ax.plot(times, tops, color=colour, linewidth=1)
                for t, top in zip((t for t, _ in points), tops, strict=True):
                    stack[t] = top
            else:
                ax.plot(times, values, color=colour, linewidth=1.5, label=label)
            drawn += 1
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_locator(MaxNLocator(5))
    if panel.unit == "reqps":
        ax.set_ylabel("calls/s", color=MUTED, fontsize=8)
    elif panel.unit == "s":
        ax.set_ylabel("seconds", color=MUTED, fontsize=8)
    if drawn:
        ax.legend(
            loc="upper left",
            fontsize=7,
            facecolor=PANEL,
            edgecolor=GRID,
            labelcolor=TEXT,
            ncol=2 if drawn > 4 else 1,
        )
    return drawn


def render(prom: Queries, out: Path, window: Window, *, note: str = "") -> dict[str, int]:
    """Draw the main panels from `prom` over `window` into the PNG `out`; returns, per panel
    title, how many series (or values) it drew."""
    by_title = {panel.title: panel for _row, panel in panels()}
    fig = Figure(figsize=(16, 10.5), dpi=100, facecolor=BACKGROUND)
    grid = fig.add_gridspec(3, 6, height_ratios=[0.55, 1, 1], hspace=0.42, wspace=0.35)
    fig.subplots_adjust(left=0.06, right=0.98, top=0.91, bottom=0.09)
    fig.text(0.06, 0.96, "kube-ecr-cleanup-controller", color=TEXT, fontsize=17, fontweight="bold")
    fig.text(
        0.06,
        0.935,
        "A rendering of the Grafana dashboard's panel queries (grafana/kube-ecr-cleanup-"
        "controller.json) with matplotlib: not a Grafana screenshot.",
        color=MUTED,
        fontsize=10,
    )
    drawn: dict[str, int] = {}
    for column, title in enumerate(STATS):
        drawn[title] = _stat(fig.add_subplot(grid[0, column]), prom, by_title[title], window)
    for n, title in enumerate(GRAPHS):
        ax = fig.add_subplot(grid[1 + n // 3, (n % 3) * 2 : (n % 3) * 2 + 2])
        draw = _bars if by_title[title].kind == "bargauge" else _series
        drawn[title] = draw(ax, prom, by_title[title], window)
    started = datetime.fromtimestamp(window.start, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    fig.text(
        0.06,
        0.018,
        f"Data: a real Prometheus scraping two controller replicas (leader and standby) of "
        f"grafana/picture.py's sandbox run from {started}, "
        f"{round(window.end - window.start)} s long. {note}\n"
        f"$__rate_interval = {window.rate_interval} (x4 for panels with a minimum interval), "
        "$__range = the whole run; cycles every 15 s instead of 30 min, so the windows are "
        "scaled down accordingly.",
        color=MUTED,
        fontsize=8.5,
        parse_math=False,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, facecolor=BACKGROUND)
    return drawn


# -- the sandbox run for the README -----------------------------------------------------------


@contextmanager
def _churn(run: Any, *, every: float) -> Iterator[None]:
    """CI keeps pushing while the controller runs: new builds for the pruner to delete."""
    stop = threading.Event()

    def push() -> None:
        n = 0
        while not stop.wait(every):
            n += 1
            for repo in ("shop/api", "shop/web"):
                run.world.ecr.push(repo, f"{repo}-ci-{n}", f"ci-{n}")

    thread = threading.Thread(target=push, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)


def main(argv: Sequence[str] | None = None) -> int:
    from sandbox.moto import CREDENTIALS
    from sandbox.world import seeded_world
    from tests.observed import JOB, observed_run

    parser = argparse.ArgumentParser(description="Render the README's dashboard picture.")
    parser.add_argument("out", nargs="?", type=Path, default=OUT)
    parser.add_argument("--seconds", type=float, default=150, help="length of the run")
    args = parser.parse_args(argv)
    os.environ.update(CREDENTIALS)
    with (
        tempfile.TemporaryDirectory() as tmp,
        seeded_world(Path(tmp), token="e2e-token", context="e2e", short_pages=True) as world,
        observed_run(world, Path(tmp), interval="15s") as run,
    ):
        start = time.time() - 20
        print(f"running for {args.seconds:.0f} s while CI pushes builds", flush=True)
        with _churn(run, every=4):
            time.sleep(args.seconds)
        end = time.time()
        window = Window(start=start, end=end, step=3, rate_seconds=15, job=JOB)
        drawn = render(run.prom, args.out, window, note="CI pushed 2 builds every 4 s.")
    empty = [title for title, count in drawn.items() if not count]
    print(f"wrote {args.out}" + (f"; panels without data: {', '.join(empty)}" if empty else ""))
    return 1 if empty else 0


if __name__ == "__main__":
    sys.exit(main())
