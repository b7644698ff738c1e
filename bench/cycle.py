"""Benchmark: one prune cycle over many repositories against an ECR endpoint with real latency.

Run `python -m bench.cycle` (`--quick` for a smoke-sized run, `--json` for machine-readable
output, `--profile` to cProfile one cycle of ours).

The ECR endpoint is the project's simulator (`python -m sandbox.ecrsim`) in a process of its
own, seeded with `--repositories` × `--images` images (pushed a minute apart, tagged build-N,
the newest also `latest`) and answering every call after `--latency` seconds. Between runs it
rolls back to the seeded state. Each run is a fresh worker process, so its CPU time and peak
RSS are the cycle's own:

* ours: the controller's `Pruner` with the real aioboto3 gateway, every repository selected,
  `--max-images` 900, at each `--concurrency`;
* the Go controller's algorithm (`bench.go_baseline`): repositories one after another,
  DescribeImages pages of 100, at most 100 deletions per repository per cycle; it is run on
  the same data until every repository is under its limit, and its work time is reported
  (without its 30-minute waits between cycles);
* the latency limit, computed: ⌈repositories / concurrency⌉ rounds of the calls one
  repository needs (⌈images/1000⌉ DescribeImages + ⌈deletions/100⌉ BatchDeleteImage) × the
  latency, plus the repository listing.

Figures are min, median and max over `--runs` runs. A ratio compares two figures measured in
this run, on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import logging
import math
import os
import pstats
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from controller.app import DELETION_SAMPLE, tune_garbage_collector
from controller.cli import configure_logging
from controller.ecr import DESCRIBE_PAGE, ID_BATCH, open_ecr
from controller.images import EcrRegistry
from controller.inventory import InUseIndex, References, RepositoryId, SourceKey, TagRef
from controller.policy import Rules
from controller.pruning import PruneOptions, Pruner
from controller.settings import RepositorySelection

ACCOUNT, REGION = "123456789012", "us-east-1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}


@dataclass(frozen=True)
class Config:
    repositories: int = 100
    images: int = 2000
    max_images: int = 900
    latency: float = 0.05
    concurrency: tuple[int, ...] = (8, 32)
    runs: int = 3
    rate: float = 50.0
    # the throttling scenario: one shared limit of this many calls a second, all operations
    go_repositories: int = 10
    # the Go baseline is sequential and needs many cycles: it runs on this many repositories
    # (the first ones of the same data) and its time is scaled linearly to the full count


QUICK = Config(
    rate=200.0,
    repositories=4,
    images=120,
    max_images=50,
    latency=0.005,
    concurrency=(2,),
    runs=1,
    go_repositories=2,
)


def decode(text: str) -> Config:
    fields = json.loads(text)
    fields["concurrency"] = tuple(fields["concurrency"])
    return Config(**fields)


def in_use(repositories: int, images: int) -> InUseIndex:
    """A cluster that runs one old build of every repository (it must survive) by tag."""
    index = InUseIndex()
    registry = EcrRegistry(ACCOUNT, REGION)
    tags = frozenset(
        TagRef(RepositoryId(registry, f"repo-{r:04d}"), f"build-{max(1, images // 10)}")
        for r in range(repositories)
    )
    index.replace(SourceKey("bench", "pods"), {"pod": References(tags=tags)})
    return index


def latency_limit(config: Config, concurrency: int, repositories: int) -> tuple[float, int]:
    """The fastest a cycle can be (seconds), and the fewest calls it can make."""
    deletions = max(0, config.images - config.max_images)
    per_repository = math.ceil(config.images / DESCRIBE_PAGE) + math.ceil(deletions / ID_BATCH)
    listing = 1  # DescribeRepositories of the whole registry, 1000 per page
    rounds = math.ceil(repositories / concurrency)
    calls = listing + repositories * per_repository
    return (listing + rounds * per_repository) * config.latency, calls


# -- the worker: one cycle in a fresh process ---------------------------------------------------


async def ours(
    endpoint: str, config: Config, concurrency: int, repositories: int
) -> dict[str, Any]:
    os.environ.update(CREDENTIALS)
    async with open_ecr(
        region=REGION, registry_id=None, concurrency=concurrency, endpoint_url=endpoint
    ) as ecr:
        pruner = Pruner(
            ecr,
            in_use(repositories, config.images),
            PruneOptions(
                RepositorySelection(("*",)),
                lambda _name: Rules(max_images=config.max_images),
                dry_run=False,
                concurrency=concurrency,
                deletion_records=DELETION_SAMPLE,  # as the service keeps them
            ),
        )
        now = datetime.now(UTC)
        wall, cpu = time.perf_counter(), time.process_time()
        report = await pruner.run_cycle(now=now, gate=lambda: None, clock=lambda: datetime.now(UTC))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "listed": sum(r.images_before for r in report.repositories),
        "deleted": report.deleted,
        "calls": sum(ecr.stats.calls.values()),
        "throttles": sum(ecr.stats.throttles.values()),
        "ok": report.ok,
    }


def run_worker(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--algorithm", choices=("ours", "go"), default="ours")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--repositories", type=int, required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--profile", action="store_true")
    options = parser.parse_args(argv)
    config = decode(options.config)
    # log as the controller does (INFO, text, to stderr): the log lines are part of the cost
    configure_logging(logging.INFO, log_format="text")
    tune_garbage_collector()  # as the controller does at start
    if options.algorithm == "go":
        from bench.go_baseline import converge

        result = asyncio.run(converge(options.endpoint, config, options.repositories))
    elif options.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        result = asyncio.run(
            ours(options.endpoint, config, options.concurrency, options.repositories)
        )
        profiler.disable()
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(40)
        tottime = io.StringIO()
        pstats.Stats(profiler, stream=tottime).sort_stats("tottime").print_stats(30)
        result["profile"] = text.getvalue() + "\n" + tottime.getvalue()
    else:
        result = asyncio.run(
            ours(options.endpoint, config, options.concurrency, options.repositories)
        )
    print(json.dumps(result))
    return 0


# -- the orchestrator ----------------------------------------------------------------------------


class Endpoint:
    """The seeded ECR simulator in its own process."""

    def __init__(self, config: Config) -> None:
        args = [
            sys.executable,
            "-m",
            "sandbox.ecrsim",
            f"--repositories={config.repositories}",
            f"--images={config.images}",
            f"--latency={config.latency}",
        ]
        self.process = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().strip()
        if not self.url.startswith("http://"):
            raise RuntimeError(f"the ECR simulator did not start: {self.url!r}")

    def rollback(self) -> None:
        request = urllib.request.Request(self.url + "/_sim/rollback", data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()

    def rate(self, per_second: float) -> None:
        body = json.dumps({"per_second": per_second}).encode()
        request = urllib.request.Request(self.url + "/_sim/rate", data=body, method="POST")
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()

    def calls(self) -> dict[str, int]:
        with urllib.request.urlopen(self.url + "/_sim/calls", timeout=60) as response:
            calls: dict[str, int] = json.loads(response.read())
        return calls

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=30)


def worker(endpoint: Endpoint, config: Config, *args: str) -> dict[str, Any]:
    endpoint.rollback()
    encoded = json.dumps(asdict(config))
    with tempfile.TemporaryFile("w+") as log:  # the worker's log: kept only for a failure
        output = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.cycle",
                "--worker",
                f"--endpoint={endpoint.url}",
                f"--config={encoded}",
                *args,
            ],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            check=False,
            env={**os.environ, **CREDENTIALS},
        )
        if output.returncode != 0:
            log.seek(0)
            raise RuntimeError(f"worker failed: {log.read()[-3000:]}")
    result: dict[str, Any] = json.loads(output.stdout.splitlines()[-1])
    result["server_calls"] = endpoint.calls()
    return result


def spread(values: Sequence[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def run(config: Config) -> dict[str, Any]:
    endpoint = Endpoint(config)
    try:
        results: dict[str, Any] = {"config": asdict(config), "ours": {}}
        for concurrency in config.concurrency:
            runs = [
                worker(
                    endpoint,
                    config,
                    f"--concurrency={concurrency}",
                    f"--repositories={config.repositories}",
                )
                for _ in range(config.runs)
            ]
            limit, lower_bound = latency_limit(config, concurrency, config.repositories)
            wall = [r["wall_s"] for r in runs]
            results["ours"][str(concurrency)] = {
                "runs": runs,
                "wall_s": spread(wall),
                "limit_s": limit,
                "ratio_to_limit": spread([w / limit for w in wall]),
                "cpu_us_per_image": spread([r["cpu_s"] / r["listed"] * 1e6 for r in runs]),
                "peak_rss_mib": spread([r["peak_rss_mib"] for r in runs]),
                "calls": runs[0]["server_calls"],
                "lower_bound_calls": lower_bound,
                "calls_at_lower_bound": all(
                    sum(r["server_calls"].values()) == lower_bound for r in runs
                ),
            }
        # under throttling: one shared rate limit; the floor is the calls it takes over the rate
        endpoint.rate(config.rate)
        results["throttled"] = {}
        for concurrency in config.concurrency:
            runs = [
                worker(
                    endpoint,
                    config,
                    f"--concurrency={concurrency}",
                    f"--repositories={config.repositories}",
                )
                for _ in range(config.runs)
            ]
            _, lower_bound = latency_limit(config, concurrency, config.repositories)
            floor = lower_bound / config.rate
            results["throttled"][str(concurrency)] = {
                "runs": runs,
                "wall_s": spread([r["wall_s"] for r in runs]),
                "floor_s": floor,
                "ratio_to_floor": spread([r["wall_s"] / floor for r in runs]),
                "throttled_attempts": spread([r["throttles"] for r in runs]),
            }
        endpoint.rate(0)
        go = worker(endpoint, config, "--algorithm=go", f"--repositories={config.go_repositories}")
        scale = config.repositories / config.go_repositories
        go["work_s_scaled"] = go["work_s"] * scale
        go["calls_scaled"] = go["calls"] * scale
        results["go"] = go
        default = results["ours"][str(config.concurrency[0])]
        results["go_ratio"] = go["work_s_scaled"] / default["wall_s"]["median"]
        return results
    finally:
        endpoint.close()


def report(results: dict[str, Any]) -> str:
    config = results["config"]
    lines = [
        f"prune cycle: {config['repositories']} repositories × {config['images']} images, "
        f"max-images {config['max_images']}, {config['latency'] * 1000:.0f} ms per call",
    ]
    for concurrency, figures in results["ours"].items():
        wall = figures["wall_s"]
        lines.append(
            f"  ours, concurrency {concurrency}: {wall['median']:.2f} s "
            f"(min {wall['min']:.2f}, max {wall['max']:.2f}); limit {figures['limit_s']:.2f} s; "
            f"×{figures['ratio_to_limit']['median']:.2f} the limit; "
            f"{figures['cpu_us_per_image']['median']:.1f} µs CPU per image; "
            f"peak RSS {figures['peak_rss_mib']['median']:.0f} MiB; calls at the lower bound: "
            f"{figures['calls_at_lower_bound']}"
        )
    for concurrency, figures in results["throttled"].items():
        wall = figures["wall_s"]
        lines.append(
            f"  throttled to {config['rate']:.0f} calls/s, concurrency {concurrency}: "
            f"{wall['median']:.2f} s (min {wall['min']:.2f}, max {wall['max']:.2f}); floor "
            f"{figures['floor_s']:.2f} s; ×{figures['ratio_to_floor']['median']:.2f} the floor; "
            f"{figures['throttled_attempts']['median']:.0f} throttled attempts"
        )
    go = results["go"]
    lines.append(
        f"  Go algorithm: {go['cycles']} cycles to converge on {go['repositories']} repositories, "
        f"{go['work_s']:.1f} s of work, {go['calls']} calls; scaled to {config['repositories']}: "
        f"{go['work_s_scaled']:.0f} s, ×{results['go_ratio']:.1f} ours"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--worker" in argv:
        argv.remove("--worker")
        return run_worker(argv)
    parser = argparse.ArgumentParser(prog="python -m bench.cycle", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--profile", action="store_true", help="cProfile one cycle of ours")
    parser.add_argument("--repositories", type=int)
    parser.add_argument("--images", type=int)
    parser.add_argument("--runs", type=int)
    parser.add_argument("--concurrency", type=int, nargs="+")
    options = parser.parse_args(argv)
    config = QUICK if options.quick else Config()
    chosen = {
        "repositories": options.repositories,
        "images": options.images,
        "runs": options.runs,
        "concurrency": options.concurrency,
    }
    overrides = {k: v for k, v in chosen.items() if v}
    config = decode(json.dumps({**asdict(config), **overrides}))
    if options.profile:
        endpoint = Endpoint(config)
        try:
            result = worker(
                endpoint,
                config,
                "--profile",
                f"--concurrency={config.concurrency[0]}",
                f"--repositories={config.repositories}",
            )
        finally:
            endpoint.close()
        print(result.pop("profile"))
        print(json.dumps(result, indent=2))
        return 0
    results = run(config)
    print(json.dumps(results, indent=2) if options.json else report(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
