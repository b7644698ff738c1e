"""Benchmark: the memory (peak RSS) and CPU of the controller running the Helm chart's default args.

Run `python -m bench.rss` (defaults: 5,000 pods in 300 workloads, 40 repositories of 150
images; `--quick` for a smoke-sized run, `--json` for machine-readable output). Needs helm
(scripts/install-helm).

It seeds moto's ECR and the API-server simulator (realistic pods of about 4.5 KB from
bench.event_path's cluster generator, a Deployment and a ReplicaSet per workload, images in
the repositories those pods use), renders the chart with its default values and `repos: ["*"]`
(`helm template`), and starts the real controller process (`python -m controller`) with exactly
the rendered args, the in-cluster connection replaced by a kubeconfig for the simulator. When
the first cycle's report is out (every source listed and watched, every repository described
and planned: a dry run computes the same plan a deleting run does), it reads the process's
peak resident set size (`VmHWM` in /proc/PID/status, the kernel's high-water mark), its RSS
then, and its CPU time, sends SIGTERM and checks the exit status. The figures size the chart's
`resources` (values.yaml says which run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml

from bench.event_path import Cluster
from sandbox.kubesim import ThreadedKubeSimulator, workload, write_kubeconfig
from sandbox.moto import CREDENTIALS, MotoEcr, moto_server
from sandbox.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "kube-ecr-cleanup-controller"
HELM = ROOT / ".cache" / "tools" / "bin" / "helm"


@dataclass(frozen=True)
class Config:
    pods: int = 5_000
    workloads: int = 300
    repositories: int = 40
    # repositories with images (those of the first workloads)
    images_per_repository: int = 150
    seed: int = 1


QUICK = Config(pods=200, workloads=20, repositories=4, images_per_repository=20)


def chart_args() -> list[str]:
    """The container args of the chart's Deployment, default values plus every repository."""
    helm = str(HELM) if HELM.is_file() else "helm"
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as values:
        yaml.safe_dump({"repos": ["*"], "image": {"repository": "bench"}}, values)
        values.flush()
        rendered = subprocess.run(
            [helm, "template", "bench", str(CHART), "--namespace", "bench", "-f", values.name],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    for document in yaml.safe_load_all(rendered):
        if document and document["kind"] == "Deployment":
            (container,) = document["spec"]["template"]["spec"]["containers"]
            return [str(a) for a in container["args"]]
    raise RuntimeError("the chart rendered no Deployment")


def seed(config: Config, ecr: MotoEcr, kube: ThreadedKubeSimulator) -> dict[str, int]:
    cluster = Cluster(config.workloads, random.Random(config.seed))
    for line in cluster.populate(config.pods):
        kube.create("pods", orjson.loads(line)["object"])
    for w in cluster.workloads:
        template = [c.image for c in w.containers]
        kube.create("deployments", workload("Deployment", w.name, w.namespace, template))
        kube.create(
            "replicasets",
            workload("ReplicaSet", f"{w.name}-{w.template_hash}", w.namespace, template),
        )
    images = 0
    for w in cluster.workloads[: config.repositories]:
        repository = f"{w.team}/{w.name}"
        ecr.create(repository)
        for n in range(config.images_per_repository):
            ecr.push(repository, f"{repository}-{n}", f"build-{n}")
            images += 1
    return {
        "pods": config.pods,
        "workloads": config.workloads,
        "repositories": config.repositories,
        "images": images,
    }


def proc_status(pid: int) -> dict[str, int]:
    """VmHWM and VmRSS of a process, in KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            fields[key] = int(value.split()[0])
    return fields


def cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(stat[11]) + int(stat[12])) / ticks  # utime + stime


def run(config: Config) -> dict[str, Any]:
    args = chart_args()
    with moto_server() as endpoint, ThreadedKubeSimulator() as kube:
        started = time.monotonic()
        world = seed(config, MotoEcr(endpoint), kube)
        seeding = time.monotonic() - started
        with tempfile.TemporaryDirectory(prefix="bench-rss-") as directory:
            kubeconfig = write_kubeconfig(Path(directory) / "kubeconfig", {"sim": kube})
            port = free_port()
            argv = [
                f"--kubeconfig={kubeconfig}" if a == "--in-cluster=true" else a
                for a in args
                if not a.startswith("--metrics-address")
            ] + [f"--metrics-address=127.0.0.1:{port}"]
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                **CREDENTIALS,
                "AWS_ENDPOINT_URL_ECR": endpoint,
                "PYTHONUNBUFFERED": "1",
                "PYTHONDONTWRITEBYTECODE": "1",
            }
            process = subprocess.Popen(
                [sys.executable, "-m", "controller", *argv],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            reported = threading.Event()

            def drain() -> None:
                assert process.stdout is not None
                for line in process.stdout:
                    if line.startswith("total: "):
                        reported.set()

            reader = threading.Thread(target=drain, daemon=True)
            reader.start()
            launched = time.monotonic()
            try:
                if not reported.wait(timeout=300):
                    raise RuntimeError("no cycle report within 300 s")
                first_cycle = time.monotonic() - launched
                time.sleep(1.0)  # the watches keep running: let the heap settle
                status = proc_status(process.pid)
                cpu = cpu_seconds(process.pid)
            finally:
                process.send_signal(signal.SIGTERM)
                code = process.wait(timeout=60)
                reader.join(timeout=10)
                assert process.stdout is not None
                process.stdout.close()
    return {
        **world,
        "seeding_s": round(seeding, 1),
        "first_cycle_s": round(first_cycle, 2),
        "peak_rss_mib": round(status["VmHWM"] / 1024, 1),
        "rss_after_cycle_mib": round(status["VmRSS"] / 1024, 1),
        "cpu_s_to_first_cycle": round(cpu, 2),
        "exit_code": code,
        "args": argv,
        "config": asdict(config),
        "python": platform.python_version(),
        "machine": f"{os.cpu_count()} CPUs, {platform.machine()}",
    }


def report(r: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"controller with the chart's default args, {r['pods']} pods in {r['workloads']} "
            f"workloads (+ a Deployment and a ReplicaSet each), {r['images']} images in "
            f"{r['repositories']} repositories (seeded in {r['seeding_s']} s)",
            f"first cycle reported after {r['first_cycle_s']} s, "
            f"{r['cpu_s_to_first_cycle']} CPU seconds",
            f"peak RSS (VmHWM): {r['peak_rss_mib']} MiB; RSS after the cycle: "
            f"{r['rss_after_cycle_mib']} MiB",
            f"SIGTERM: exit {r['exit_code']}; Python {r['python']}, {r['machine']}",
        ]
    )


def main(argv: Sequence[str] | None = None, out: Callable[[str], object] = print) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rss", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smoke-sized run")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--pods", type=int, default=Config.pods)
    parser.add_argument("--workloads", type=int, default=Config.workloads)
    parser.add_argument("--repositories", type=int, default=Config.repositories)
    parser.add_argument("--images-per-repository", type=int, default=Config.images_per_repository)
    options = parser.parse_args(argv)
    config = (
        QUICK
        if options.quick
        else Config(
            pods=options.pods,
            workloads=options.workloads,
            repositories=options.repositories,
            images_per_repository=options.images_per_repository,
        )
    )
    result = run(config)
    out(json.dumps(result, indent=2) if options.json else report(result))
    return 0 if result["exit_code"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
