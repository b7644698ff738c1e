"""Benchmark: prune cycles over many repositories against an ECR endpoint with real latency.

Run `python -m bench.cycle` (`--quick` for a smoke-sized run, `--json` for machine-readable
output, `--profile` to cProfile one cycle of ours).

The ECR endpoint is the project's simulator (`python -m sandbox.ecrsim`) in a process of its
own, seeded with repositories of images (pushed a minute apart, tagged build-N, the newest also
`latest`) and answering every call `latency` seconds after it arrived (`--answer-on-arrival`:
a call is carried out on arrival, so the simulator's own work, one call at a time on its core,
hides in the latency rather than adding to each call queued behind it: ECR serves calls in
parallel); between runs it rolls back to the seeded state. Each run is a fresh worker process running one cycle of the controller's
`Pruner` with the real aioboto3 gateway, logging as the controller does, so its CPU time and
peak RSS are the cycle's own. The scenarios:

* headline: `repositories` × `images` images, max-images `max_images`, at each concurrency:
  wall time against the latency limit, CPU per image listed, calls against the lower bound;
  how long the answers took (p90, from the request built to the answer read: a wait for this
  process's loop is in it) against the latency, and how late the simulator's own loop ran
  (`sandbox.ecrsim.LoopLag`, p99): where a call's time beyond the latency goes;
* throttled: the same, under one shared limit of `rate` calls a second (all operations, a
  burst of `rate` at once), its floor being the lower bound of calls less the burst, over the
  rate (the bucket is full when a run starts), or the latency limit if that is longer;
* memory: peak RSS of a cycle over the first `memory[0]` and over `memory[1]` repositories, at
  the default concurrency;
* scaling: wall time over 10, 100, 1,000 repositories of `scaling_images` images, at the
  default concurrency;
* no latency: the headline cycle at the default concurrency against an endpoint that answers
  at once (the same calls and images): what the CPU per image is when the process never waits;
* per call: the CPU of one ECR call with next to nothing in it (DescribeImages of a
  one-image repository, `per_call` calls one after another, no latency): the gateway's direct
  path (botocore's request building and signing, aiobotocore's HTTP session, the aiohttp
  exchange) and its own lines, the part of a cycle's CPU that the number of calls (at its
  lower bound) fixes;
* waking: the CPU of the same piece of plain Python work (`piece`, about what the process does
  with one answer) done `wake_pieces` times back to back and `wake_pieces` times each after a
  sleep of `latency`: what this machine charges for waking, whatever the code;
* the Go controller's algorithm (`bench.go_baseline`, sequential, pages of 100, at most 100
  deletions per repository per cycle) on the first `go_repositories` repositories, until they
  are all under the limit; its work time is scaled linearly to `repositories` (it is
  sequential) and compared with ours.

The latency limit is computed: ⌈repositories / concurrency⌉ rounds of the calls one repository
needs (⌈images/1000⌉ DescribeImages + ⌈deletions/100⌉ BatchDeleteImage) × the latency, plus the
repository listing. Figures are min, median and max over `runs` runs.
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
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from controller.app import DELETION_SAMPLE, tune_garbage_collector
from controller.ecr import DESCRIBE_PAGE, ID_BATCH, AdaptiveLimit, open_ecr
from controller.identifiers import RepositoryId, SourceKey, TagRef
from controller.images import EcrRegistry
from controller.inventory import InUseIndex, References
from controller.logs import configure_logging
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
    memory: tuple[int, int] = (10, 300)
    scaling: tuple[int, ...] = (10, 100, 1000)
    scaling_images: int = 200
    scaling_max_images: int = 90
    go_repositories: int = 10
    per_call: int = 300
    wake_pieces: int = 200


QUICK = Config(
    repositories=4,
    images=120,
    max_images=50,
    latency=0.005,
    concurrency=(2,),
    runs=1,
    rate=200.0,
    memory=(2, 6),
    scaling=(2, 4),
    scaling_images=30,
    scaling_max_images=20,
    go_repositories=2,
    per_call=20,
    wake_pieces=5,
)


def decode(text: str) -> Config:
    fields = json.loads(text)
    for key in ("concurrency", "memory", "scaling"):
        fields[key] = tuple(fields[key])
    return Config(**fields)


def names(repositories: int) -> list[str]:
    return [f"repo-{r:04d}" for r in range(repositories)]


def in_use(repositories: int, images: int) -> InUseIndex:
    """A cluster that runs one old build of every repository (it must survive) by tag."""
    index = InUseIndex()
    registry = EcrRegistry(ACCOUNT, REGION)
    tags = frozenset(
        TagRef(RepositoryId(registry, name), f"build-{max(1, images // 10)}")
        for name in names(repositories)
    )
    index.replace(SourceKey("bench", "pods"), {"pod": References(tags=tags)})
    return index


@dataclass(frozen=True)
class Shape:
    """One cycle's work: `repositories` of a registry of `total`, `images` each."""

    repositories: int
    total: int
    images: int
    max_images: int

    def selection(self) -> tuple[str, ...]:
        """Every repository ("*", one listing call) or the first ones by name."""
        return ("*",) if self.repositories == self.total else tuple(names(self.repositories))

    def lower_bound(self, concurrency: int, latency: float) -> tuple[float, int]:
        """The fastest a cycle can be (seconds), and the fewest calls it can make."""
        deletions = max(0, self.images - self.max_images)  # the image in use counts, stays
        per_repository = math.ceil(self.images / DESCRIBE_PAGE) + math.ceil(deletions / ID_BATCH)
        listing = 1 if self.repositories == self.total else math.ceil(self.repositories / ID_BATCH)
        rounds = math.ceil(self.repositories / concurrency)
        calls = listing + self.repositories * per_repository
        return (listing + rounds * per_repository) * latency, calls


# -- the worker: one cycle in a fresh process -----------------------------------------------------


class TimedLimit(AdaptiveLimit):
    """The gateway's adaptive limit, keeping how long each answered attempt took: from the
    request built to the answer read, so the time an answer waited for this process's loop is
    in it, as it is in the cycle's."""

    def __init__(self, maximum: int) -> None:
        super().__init__(maximum)
        self.seconds: list[float] = []

    def succeeded(self, seconds: float) -> None:
        self.seconds.append(seconds)
        super().succeeded(seconds)


def percentiles_ms(seconds: Sequence[float]) -> dict[str, float]:
    ordered = sorted(seconds) or [0.0]
    n = len(ordered)
    return {f"p{q}_ms": ordered[min(n - 1, q * n // 100)] * 1000 for q in (50, 90)}


async def ours(endpoint: str, shape: Shape, concurrency: int) -> dict[str, Any]:
    os.environ.update(CREDENTIALS)
    async with open_ecr(
        region=REGION, registry_id=None, concurrency=concurrency, endpoint_url=endpoint
    ) as ecr:
        timed = ecr.limit = TimedLimit(concurrency)
        pruner = Pruner(
            ecr,
            in_use(shape.repositories, shape.images),
            PruneOptions(
                RepositorySelection(shape.selection()),
                lambda _name: Rules(max_images=shape.max_images),
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
        "peak_rss_mib": peak_rss_mib(),
        "listed": sum(r.images_before for r in report.repositories),
        "deleted": report.deleted,
        "calls": sum(ecr.stats.calls.values()),
        "throttles": sum(ecr.stats.throttles.values()),
        "throttles_by_operation": dict(ecr.stats.throttles),
        "answer_ms": percentiles_ms(timed.seconds),
        "ok": report.ok,
    }


async def fixed_call(endpoint: str, calls: int) -> dict[str, Any]:
    """The CPU of one DescribeImages of a one-image repository, `calls` of them one at a time
    after a tenth as many to warm the connection and the caches."""
    os.environ.update(CREDENTIALS)
    async with open_ecr(
        region=REGION, registry_id=None, concurrency=1, endpoint_url=endpoint
    ) as ecr:
        (repository,) = (await ecr.repositories(names(1))).repositories
        for _ in range(max(1, calls // 10)):
            await ecr.images(repository)
        cpu = time.process_time()
        for _ in range(calls):
            await ecr.images(repository)
        cpu = time.process_time() - cpu
    return {"calls": calls, "cpu_us_per_call": cpu / calls * 1e6}


def peak_rss_mib() -> float:
    """This process's peak RSS: the kernel's high-water mark of its own memory (VmHWM).

    Not `getrusage().ru_maxrss`: Linux carries that across fork and exec, so a worker started
    by a large orchestrator (`python -m bench` after the event path: 350 MiB) reports the
    orchestrator's peak as its own."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def piece() -> int:
    """Plain Python work of about a millisecond on this machine (dicts, tuples, a sort: what an
    answer's handling is made of), none of it the controller's."""
    table = {f"key-{n}": (n, n * 7 % 1000, f"v{n}") for n in range(2000)}
    return len(sorted(table.values(), key=lambda row: row[1]))


def waking(pieces: int, pause: float) -> dict[str, Any]:
    """The process's CPU for `piece`, `pieces` times back to back and `pieces` times each after
    sleeping `pause` seconds (the sleep's own CPU counted, as a cycle's CPU counts its waits).
    In alternating rounds, so that a drift of the machine's speed falls on both alike; a round
    back to back starts with uncounted pieces, as this machine stays slow for some milliseconds
    after a wait (the first ten pieces after a round of waits cost more than the next ones)."""
    cpu = {"back_to_back": 0.0, "after_a_wait": 0.0}
    rounds = max(1, pieces // WAKE_ROUND)
    for done in range(rounds):
        count = pieces // rounds + (1 if done < pieces % rounds else 0)
        for _ in range(WAKE_WARMING):
            piece()
        for kind, wait in (("back_to_back", 0.0), ("after_a_wait", pause)):
            started = time.process_time()
            for _ in range(count):
                if wait:
                    time.sleep(wait)
                piece()
            cpu[kind] += time.process_time() - started
    return {f"{kind}_us": seconds / pieces * 1e6 for kind, seconds in cpu.items()}


WAKE_ROUND = 40
WAKE_WARMING = 20


def run_worker(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint")  # every algorithm's but "wake"
    parser.add_argument("--algorithm", choices=("ours", "go", "per-call", "wake"), default="ours")
    parser.add_argument("--pause", type=float, default=0.05)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--shape", default="null")  # "ours" and "go"
    parser.add_argument("--profile", action="store_true")
    options = parser.parse_args(argv)
    fields = json.loads(options.shape)
    shape = Shape(**fields) if fields else None
    # as the controller does: log at INFO to stderr (the lines are part of the cost), and the
    # garbage collector tuned at start
    configure_logging(logging.INFO, log_format="text")
    tune_garbage_collector()
    if options.algorithm == "wake":
        result = waking(options.calls, options.pause)
    elif options.algorithm == "per-call":
        result = asyncio.run(fixed_call(options.endpoint, options.calls))
    elif shape is None:
        parser.error(f"--shape is needed by --algorithm={options.algorithm}")
    elif options.algorithm == "go":
        from bench.go_baseline import converge

        result = asyncio.run(converge(options.endpoint, shape))
    elif options.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        result = asyncio.run(ours(options.endpoint, shape, options.concurrency))
        profiler.disable()
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(40)
        result["profile"] = text.getvalue()
    else:
        result = asyncio.run(ours(options.endpoint, shape, options.concurrency))
    print(json.dumps(result))
    return 0


# -- the orchestrator ---------------------------------------------------------------------------


class Endpoint:
    """A seeded ECR simulator in its own process."""

    def __init__(self, repositories: int, images: int, latency: float) -> None:
        self.repositories, self.images = repositories, images
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sandbox.ecrsim",
                f"--repositories={repositories}",
                f"--images={images}",
                f"--latency={latency}",
                "--answer-on-arrival",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().strip()
        if not self.url.startswith("http://"):
            raise RuntimeError(f"the ECR simulator did not start: {self.url!r}")

    def _post(self, path: str, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method="POST")
        with urllib.request.urlopen(request, timeout=120) as response:
            response.read()

    def rollback(self) -> None:
        self._post("/_sim/rollback", {})

    def rate(self, per_second: float) -> None:
        self._post("/_sim/rate", {"per_second": per_second})

    def calls(self) -> dict[str, int]:
        with urllib.request.urlopen(self.url + "/_sim/calls", timeout=60) as response:
            calls: dict[str, int] = json.loads(response.read())
        return calls

    def lag(self) -> dict[str, float]:
        """How late the simulator's loop ran since the last rollback (`sandbox.ecrsim.LoopLag`)."""
        with urllib.request.urlopen(self.url + "/_sim/lag", timeout=60) as response:
            lag: dict[str, float] = json.loads(response.read())
        return lag

    def shape(self, repositories: int, max_images: int) -> Shape:
        return Shape(repositories, self.repositories, self.images, max_images)

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=60)
        if self.process.stdout is not None:
            self.process.stdout.close()


def worker(endpoint: Endpoint, shape: Shape, *args: str) -> dict[str, Any]:
    """One run in a fresh process, from the seeded state."""
    endpoint.rollback()
    result = spawn(f"--endpoint={endpoint.url}", f"--shape={json.dumps(asdict(shape))}", *args)
    result["server_calls"] = endpoint.calls()
    result["server_lag_ms"] = endpoint.lag()
    return result


def spawn(*args: str) -> dict[str, Any]:
    """A worker process run with `args`: what it printed last, decoded."""
    with tempfile.TemporaryFile("w+") as log:  # the worker's log: kept only for a failure
        output = subprocess.run(
            [sys.executable, "-m", "bench.cycle", "--worker", *args],
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
    return result


def spread(values: Sequence[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def runs(endpoint: Endpoint, shape: Shape, concurrency: int, count: int) -> list[dict[str, Any]]:
    return [worker(endpoint, shape, f"--concurrency={concurrency}") for _ in range(count)]


def headline(endpoint: Endpoint, config: Config) -> dict[str, Any]:
    shape = endpoint.shape(config.repositories, config.max_images)
    results = {}
    for concurrency in config.concurrency:
        done = runs(endpoint, shape, concurrency, config.runs)
        limit, lower_bound = shape.lower_bound(concurrency, config.latency)
        wall = [r["wall_s"] for r in done]
        results[str(concurrency)] = {
            "runs": done,
            "wall_s": spread(wall),
            "limit_s": limit,
            "ratio_to_limit": spread([w / limit for w in wall]),
            "cpu_us_per_image": spread([r["cpu_s"] / r["listed"] * 1e6 for r in done]),
            "peak_rss_mib": spread([r["peak_rss_mib"] for r in done]),
            # how long answers took against the latency, and how late the endpoint's own loop
            # ran: at a high concurrency the wait is in ours or in the simulator's
            "answer_p90_to_latency": spread(
                [r["answer_ms"]["p90_ms"] / (config.latency * 1000) for r in done]
            ),
            "server_lag_p99_ms": spread([r["server_lag_ms"]["p99_ms"] for r in done]),
            "calls": done[0]["server_calls"],
            "lower_bound_calls": lower_bound,
            "calls_at_lower_bound": all(
                sum(r["server_calls"].values()) == lower_bound for r in done
            ),
        }
    return results


def throttled(endpoint: Endpoint, config: Config) -> dict[str, Any]:
    shape = endpoint.shape(config.repositories, config.max_images)
    endpoint.rate(config.rate)
    try:
        results = {}
        for concurrency in config.concurrency:
            done = runs(endpoint, shape, concurrency, config.runs)
            limit, lower_bound = shape.lower_bound(concurrency, config.latency)
            # the calls beyond the burst (which comes free) over the rate, and never below the
            # latency limit (the smoke sizes make fewer calls than the burst)
            floor = max((lower_bound - config.rate) / config.rate, limit)
            results[str(concurrency)] = {
                "runs": done,
                "wall_s": spread([r["wall_s"] for r in done]),
                "floor_s": floor,
                "ratio_to_floor": spread([r["wall_s"] / floor for r in done]),
                "throttled_attempts": spread([r["throttles"] for r in done]),
            }
        return results
    finally:
        endpoint.rate(0)


def memory(endpoint: Endpoint, config: Config) -> dict[str, Any]:
    concurrency = config.concurrency[0]
    peaks = {}
    for repositories in config.memory:
        done = runs(
            endpoint, endpoint.shape(repositories, config.max_images), concurrency, config.runs
        )
        peaks[str(repositories)] = spread([r["peak_rss_mib"] for r in done])
    small, large = (peaks[str(n)]["median"] for n in config.memory)
    return {"concurrency": concurrency, "peak_rss_mib": peaks, "ratio": large / small}


def scaling(config: Config) -> dict[str, Any]:
    concurrency = config.concurrency[0]
    endpoint = Endpoint(max(config.scaling), config.scaling_images, config.latency)
    try:
        walls = {}
        for repositories in config.scaling:
            shape = endpoint.shape(repositories, config.scaling_max_images)
            done = runs(endpoint, shape, concurrency, config.runs)
            walls[str(repositories)] = spread([r["wall_s"] for r in done])
    finally:
        endpoint.close()
    first = config.scaling[0]
    per_repository = {
        n: walls[n]["median"] / int(n) / (walls[str(first)]["median"] / first) for n in walls
    }
    return {
        "concurrency": concurrency,
        "images": config.scaling_images,
        "wall_s": walls,
        "per_repository_vs_smallest": per_repository,
    }


def go(endpoint: Endpoint, config: Config, ours_wall: float) -> dict[str, Any]:
    result = worker(
        endpoint, endpoint.shape(config.go_repositories, config.max_images), "--algorithm=go"
    )
    scale = config.repositories / config.go_repositories
    result["work_s_scaled"] = result["work_s"] * scale
    result["calls_scaled"] = result["calls"] * scale
    result["ratio_to_ours"] = result["work_s_scaled"] / ours_wall
    return result


def per_call(config: Config, headline: dict[str, Any]) -> dict[str, Any]:
    """The fixed CPU of a call, and that times the cycle's calls as a share of its CPU (at the
    default concurrency)."""
    endpoint = Endpoint(1, 1, 0.0)
    try:
        shape = endpoint.shape(1, 1)
        done = [
            worker(endpoint, shape, "--algorithm=per-call", f"--calls={config.per_call}")
            for _ in range(config.runs)
        ]
    finally:
        endpoint.close()
    per = spread([r["cpu_us_per_call"] for r in done])
    cycle = headline[str(config.concurrency[0])]
    cycle_us = [r["cpu_s"] * 1e6 for r in cycle["runs"]]
    calls = cycle["lower_bound_calls"]
    return {
        "runs": done,
        "cpu_us_per_call": per,
        "share_of_cycle_cpu": spread([calls * per["median"] / us for us in cycle_us]),
    }


def no_latency(config: Config) -> dict[str, Any]:
    """The headline cycle at the default concurrency against an endpoint that answers at once:
    the same calls and images, with no wait between them. Its CPU against the headline's is
    what waiting costs this machine (at 50 ms a call the process sleeps between answers;
    why waking costs CPU is not measured here: no hardware counters on this machine)."""
    endpoint = Endpoint(config.repositories, config.images, 0.0)
    try:
        shape = endpoint.shape(config.repositories, config.max_images)
        done = runs(endpoint, shape, config.concurrency[0], config.runs)
    finally:
        endpoint.close()
    return {
        "concurrency": config.concurrency[0],
        "runs": done,
        "wall_s": spread([r["wall_s"] for r in done]),
        "cpu_us_per_image": spread([r["cpu_s"] / r["listed"] * 1e6 for r in done]),
    }


def wake(config: Config) -> dict[str, Any]:
    """What this machine charges for waking (`waking`), in fresh processes, at the headline's
    latency (no endpoint: none of it is a call)."""
    args = ("--algorithm=wake", f"--calls={config.wake_pieces}", f"--pause={config.latency}")
    done = [spawn(*args) for _ in range(config.runs)]
    return {
        "runs": done,
        "pause_s": config.latency,
        "back_to_back_us": spread([r["back_to_back_us"] for r in done]),
        "after_a_wait_us": spread([r["after_a_wait_us"] for r in done]),
        "ratio": spread([r["after_a_wait_us"] / r["back_to_back_us"] for r in done]),
    }


def run(config: Config) -> dict[str, Any]:
    results: dict[str, Any] = {"config": asdict(config)}
    endpoint = Endpoint(max(config.repositories, *config.memory), config.images, config.latency)
    try:
        results["headline"] = headline(endpoint, config)
        results["per_call"] = per_call(config, results["headline"])  # close in time to it
        results["no_latency"] = no_latency(config)
        results["wake"] = wake(config)
        results["throttled"] = throttled(endpoint, config)
        results["memory"] = memory(endpoint, config)
        ours_wall = results["headline"][str(config.concurrency[0])]["wall_s"]["median"]
        results["go"] = go(endpoint, config, ours_wall)
    finally:
        endpoint.close()
    results["scaling"] = scaling(config)
    return results


def report(results: dict[str, Any]) -> str:
    config = results["config"]
    lines = [
        f"prune cycle: {config['repositories']} repositories × {config['images']} images, "
        f"max-images {config['max_images']}, {config['latency'] * 1000:.0f} ms per call",
    ]
    for concurrency, figures in results["headline"].items():
        wall = figures["wall_s"]
        lines.append(
            f"  concurrency {concurrency}: {wall['median']:.2f} s (min {wall['min']:.2f}, max "
            f"{wall['max']:.2f}); limit {figures['limit_s']:.2f} s; "
            f"×{figures['ratio_to_limit']['median']:.2f} the limit; "
            f"{figures['cpu_us_per_image']['median']:.1f} µs CPU per image; peak RSS "
            f"{figures['peak_rss_mib']['median']:.0f} MiB; calls at the lower bound: "
            f"{figures['calls_at_lower_bound']}; answers p90 "
            f"×{figures['answer_p90_to_latency']['median']:.2f} the latency; the endpoint's "
            f"loop late by {figures['server_lag_p99_ms']['median']:.1f} ms at p99"
        )
    for concurrency, figures in results["throttled"].items():
        wall = figures["wall_s"]
        lines.append(
            f"  throttled to {config['rate']:.0f} calls/s, concurrency {concurrency}: "
            f"{wall['median']:.2f} s (min {wall['min']:.2f}, max {wall['max']:.2f}); floor "
            f"{figures['floor_s']:.2f} s; ×{figures['ratio_to_floor']['median']:.2f} the floor; "
            f"{figures['throttled_attempts']['median']:.0f} throttled attempts"
        )
    quiet = results["no_latency"]
    lines.append(
        f"  no latency, concurrency {quiet['concurrency']}: {quiet['wall_s']['median']:.2f} s; "
        f"{quiet['cpu_us_per_image']['median']:.1f} µs CPU per image"
    )
    woken = results["wake"]
    lines.append(
        f"  plain Python work after a {woken['pause_s'] * 1000:.0f} ms wait: "
        f"{woken['after_a_wait_us']['median']:.0f} µs against {woken['back_to_back_us']['median']:.0f}"
        f" µs back to back, ×{woken['ratio']['median']:.2f}"
    )
    call = results["per_call"]
    lines.append(
        f"  one call's fixed CPU: {call['cpu_us_per_call']['median']:.0f} µs; times the cycle's "
        f"calls: {call['share_of_cycle_cpu']['median'] * 100:.0f}% of its CPU"
    )
    mem = results["memory"]
    small, large = (str(n) for n in config["memory"])
    lines.append(
        f"  memory at concurrency {mem['concurrency']}: peak RSS "
        f"{mem['peak_rss_mib'][small]['median']:.0f} MiB over {small} repositories, "
        f"{mem['peak_rss_mib'][large]['median']:.0f} MiB over {large}: ×{mem['ratio']:.2f}"
    )
    scale = results["scaling"]
    lines.append(
        f"  scaling ({scale['images']} images each, concurrency {scale['concurrency']}): "
        + ", ".join(f"{n} repositories {w['median']:.2f} s" for n, w in scale["wall_s"].items())
        + "; per repository vs the smallest: "
        + ", ".join(f"×{v:.2f}" for v in scale["per_repository_vs_smallest"].values())
    )
    g = results["go"]
    lines.append(
        f"  Go algorithm: {g['cycles']} cycles to converge on {g['repositories']} repositories, "
        f"{g['work_s']:.1f} s of work, {g['calls']} calls; scaled to {config['repositories']}: "
        f"{g['work_s_scaled']:.0f} s, ×{g['ratio_to_ours']:.1f} ours"
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
    parser.add_argument("--runs", type=int)
    options = parser.parse_args(argv)
    config = QUICK if options.quick else Config()
    if options.runs:
        config = decode(json.dumps({**asdict(config), "runs": options.runs}))
    if options.profile:
        endpoint = Endpoint(config.repositories, config.images, config.latency)
        try:
            shape = endpoint.shape(config.repositories, config.max_images)
            result = worker(endpoint, shape, "--profile", f"--concurrency={config.concurrency[0]}")
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
