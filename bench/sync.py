"""Benchmark: start-up, the initial sync of a large cluster, and the idle footprint of the service.

Run `python -m bench.sync` (`--quick` for a smoke-sized run, `--json` for machine-readable
output).

The cluster is the project's API-server simulator in this process, seeded with realistic pods
of about 4.7 KB (bench.event_path's generator: labels, annotations, owner references,
managedFields, 1-3 containers, probes, volumes, statuses with imageIDs). The controller is the
real process (`python -m controller`, service mode, dry-run, leader election off) in a
process of its own, so its CPU time and memory are its own:

* start-up: `--help` from exec to exit; from exec to the first LIST request at the simulator;
* initial sync (`--pods`, LIST pages of 500): from exec to `/readyz` answering 200 (every
  source listed), with the process's CPU time and peak RSS (VmHWM) at that moment;
* idle (`--idle-pods`, `--idle-seconds`): once synced and past its first cycle, with nothing
  changing, the CPU the process uses and its RSS at the start and at the end.

Figures are min, median and max over `--runs` runs (each a fresh process).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from bench.event_path import Cluster
from sandbox.ecrsim import ThreadedEcrSimulator
from sandbox.kubesim import ThreadedKubeSimulator, write_kubeconfig
from sandbox.ports import free_port

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}


@dataclass(frozen=True)
class Config:
    pods: int = 50_000
    workloads: int = 1_000
    idle_pods: int = 5_000
    idle_seconds: float = 60.0
    runs: int = 3
    seed: int = 7


QUICK = Config(pods=300, workloads=20, idle_pods=100, idle_seconds=2.0, runs=1)


def proc(pid: int) -> tuple[float, float, float]:
    """CPU seconds (user + system), RSS and peak RSS (MiB) of a running process."""
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return cpu, fields["VmRSS"], fields["VmHWM"]


def seeded(kube: ThreadedKubeSimulator, pods: int, workloads: int, seed: int) -> float:
    """Seed `pods` pods; returns their average JSON size in bytes."""
    cluster = Cluster(workloads, random.Random(seed))
    total = 0
    for line in cluster.populate(pods):
        obj = orjson.loads(line)["object"]
        total += len(orjson.dumps(obj))
        kube.create("pods", obj)
    return total / pods


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class Controller:
    """The controller as a service process against the simulators."""

    def __init__(self, kubeconfig: Path, ecr: str, log: IO[str]) -> None:
        self.port = free_port()
        self.log = log
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "controller",
                f"--kubeconfig={kubeconfig}",
                "--repos=app",
                "--interval=1h",
                "--leader-elect=false",
                f"--metrics-address=127.0.0.1:{self.port}",
            ],
            env={**os.environ, **CREDENTIALS, "AWS_ENDPOINT_URL_ECR": ecr},
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )

    def wait_ready(self, within: float = 120) -> float:
        url = f"http://127.0.0.1:{self.port}/readyz"
        while not ready(url):
            if self.process.poll() is not None or time.monotonic() - self.started > within:
                self.log.seek(0)
                raise RuntimeError(f"the controller did not get ready:\n{self.log.read()[-3000:]}")
            time.sleep(0.01)
        return time.monotonic() - self.started

    def wait_log(self, needle: str, within: float = 120) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            self.log.seek(0)
            if needle in self.log.read():
                return
            time.sleep(0.05)
        raise RuntimeError(f"no {needle!r} in the controller's log within {within}s")

    def stop(self) -> int:
        self.process.terminate()
        return self.process.wait(timeout=60)


def spread(values: Sequence[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def help_seconds() -> float:
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "controller", "--help"], capture_output=True, check=True)
    return time.monotonic() - started


def sync_runs(config: Config, tmp: Path, ecr: str) -> dict[str, Any]:
    with ThreadedKubeSimulator(token="bench") as kube:
        size = seeded(kube, config.pods, config.workloads, config.seed)
        kubeconfig = write_kubeconfig(tmp / "sync", {"bench": kube}, token="bench")
        runs = []
        for _ in range(config.runs):
            kube.clear_requests()
            with tempfile.TemporaryFile("w+") as log:
                controller = Controller(kubeconfig, ecr, log)
                seconds = controller.wait_ready()
                cpu, rss, peak = proc(controller.process.pid)
                assert controller.stop() == 0
            first = min(r.received_at for r in kube.requests if r.method == "GET")
            runs.append(
                {
                    "ready_s": seconds,
                    "first_list_s": first - controller.started,
                    "cpu_s": cpu,
                    "rss_mib": rss,
                    "peak_rss_mib": peak,
                    "list_pages": sum(
                        1 for r in kube.requests if r.path == "/api/v1/pods" and not r.is_watch
                    ),
                }
            )
    return {
        "pods": config.pods,
        "avg_pod_bytes": size,
        "runs": runs,
        "ready_s": spread([r["ready_s"] for r in runs]),
        "first_list_s": spread([r["first_list_s"] for r in runs]),
        "cpu_s": spread([r["cpu_s"] for r in runs]),
        "peak_rss_mib": spread([r["peak_rss_mib"] for r in runs]),
    }


def idle_run(config: Config, tmp: Path, ecr: str) -> dict[str, Any]:
    with ThreadedKubeSimulator(token="bench") as kube:
        seeded(kube, config.idle_pods, max(1, config.idle_pods // 50), config.seed)
        kubeconfig = write_kubeconfig(tmp / "idle", {"bench": kube}, token="bench")
        with tempfile.TemporaryFile("w+") as log:
            controller = Controller(kubeconfig, ecr, log)
            controller.wait_ready()
            controller.wait_log("repository app:")  # the first cycle is over
            time.sleep(1.0)
            cpu0, rss0, _ = proc(controller.process.pid)
            samples = [rss0]
            started = time.monotonic()
            while (elapsed := time.monotonic() - started) < config.idle_seconds:
                time.sleep(min(5.0, config.idle_seconds - elapsed))
                samples.append(proc(controller.process.pid)[1])
            cpu1, rss1, _ = proc(controller.process.pid)
            seconds = time.monotonic() - started
            assert controller.stop() == 0
    return {
        "pods": config.idle_pods,
        "seconds": seconds,
        "cpu_percent": (cpu1 - cpu0) / seconds * 100,
        "rss_start_mib": rss0,
        "rss_end_mib": rss1,
        "rss_samples_mib": samples,
    }


def run(config: Config) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, ThreadedEcrSimulator() as ecr:
        ecr.create_repository("app")
        return {
            "config": asdict(config),
            "help_s": spread([help_seconds() for _ in range(max(3, config.runs))]),
            "sync": sync_runs(config, Path(tmp), ecr.endpoint_url),
            "idle": idle_run(config, Path(tmp), ecr.endpoint_url),
        }


def report(r: dict[str, Any]) -> str:
    sync, idle = r["sync"], r["idle"]
    return "\n".join(
        [
            f"--help: {r['help_s']['median']:.2f} s (min {r['help_s']['min']:.2f})",
            f"initial sync of {sync['pods']:,} pods ({sync['avg_pod_bytes']:.0f} bytes each): "
            f"ready in {sync['ready_s']['median']:.2f} s (min {sync['ready_s']['min']:.2f}, max "
            f"{sync['ready_s']['max']:.2f}); first LIST {sync['first_list_s']['median']:.2f} s "
            f"after exec; {sync['cpu_s']['median']:.2f} s CPU; peak RSS "
            f"{sync['peak_rss_mib']['median']:.0f} MiB",
            f"idle with {idle['pods']:,} pods for {idle['seconds']:.0f} s: "
            f"{idle['cpu_percent']:.2f}% CPU; RSS {idle['rss_start_mib']:.1f} -> "
            f"{idle['rss_end_mib']:.1f} MiB",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sync", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--runs", type=int)
    options = parser.parse_args(argv)
    config = QUICK if options.quick else Config()
    if options.runs:
        config = Config(**{**asdict(config), "runs": options.runs})
    results = run(config)
    print(json.dumps(results, indent=2) if options.json else report(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
