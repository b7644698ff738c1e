"""Soak: two real controller replicas under continuous churn for a few minutes; the invariant and memory.

Run `python -m bench.soak --minutes 4` (`--quick` for a smoke-sized run of about 25 s; `--json`
prints the JSON report; `--out DIR` also writes `soak.json` and `soak.md` there). It is not part
of `python -m bench`: a soak lasts minutes by design.

What runs, all real processes and real HTTP:
- the ECR simulator (`sandbox.ecrsim`, in this process, threaded: its request log carries the
  parameters and the monotonic receive time of every call) and the API-server simulator
  (`sandbox.kubesim`, bearer token, Leases);
- two controller subprocesses in service mode (`--dry-run=false`, leader election on one
  Lease, a short interval), called replica a and replica b;
- continuous pod churn: pods created and deleted around a steady population, using images by
  tag with the kubelet's `imageID`, by tag only while Pending, by digest only while Pending, and
  rollbacks to the oldest images still stored (the very images the next cycle wants to delete);
- image pushes (CI), so every cycle has something to delete;
- leader failovers: when replica b leads it gets SIGTERM or SIGKILL (alternately) and is
  restarted; when replica a leads it is frozen (SIGSTOP) past the Lease duration and then
  resumed (SIGCONT), as a long GC pause or a stalled node would, so that replica a lives the
  whole run and its memory series covers all of it;
- dropped watches (`drop_watches`), every third time after a compaction (`compact`), so the
  replicas' watches reconnect and re-list after a 410.

The invariant, checked every few seconds during the run and once more at the end, against the
simulator's request log: no digest named in any BatchDeleteImage request is referenced by a pod
that was live at the moment the request reached the simulator and had been live for at least
`grace_s` before it (the controller cannot know of a pod before its watch event arrives; pods
younger than that at the delete moment are reported apart as `race_window`, not hidden). A
digest in a request counts as deleted whether or not ECR deleted it. It also checks that no two
replicas ever had delete calls in flight at the same time.

Memory: VmRSS of every replica process every `rss_every_s`; per process the mean of the first
and of the last quarter of its samples (after `warmup_s`), the least-squares slope over the
run and over its last quarter, start, end and max. Replica a's series covers the whole run;
replica b's restarts are reported one by one.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sandbox.ecrsim import ThreadedEcrSimulator
from sandbox.kubesim import ThreadedKubeSimulator, pod, write_kubeconfig
from sandbox.moto import ACCOUNT, CREDENTIALS, REGION
from sandbox.ports import free_port

HOST = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"
LEASE = "kube-ecr-cleanup-controller"
NAMESPACE = "soak"


@dataclass(frozen=True)
class Config:
    minutes: float = 4.0
    repositories: int = 3
    max_images: int = 10
    initial_images: int = 25
    # per repository, before the replicas start
    pods: int = 24
    # steady pod population
    churn_every_s: float = 0.25
    # one pod created or deleted this often
    push_every_s: float = 1.0
    failover_every_s: float = 30.0
    drop_every_s: float = 9.0
    compact_every: int = 3
    # every Nth watch drop follows a compaction (the reconnect gets a 410 and re-lists)
    interval: str = "2s"
    lease_duration: float = 3.0
    restart_after_s: float = 2.0
    grace_s: float = 2.0
    rss_every_s: float = 2.0
    warmup_s: float = 20.0
    check_every_s: float = 5.0
    seed: int = 1


QUICK = Config(
    minutes=0.4,
    failover_every_s=8.0,
    drop_every_s=4.0,
    compact_every=2,
    warmup_s=4.0,
    rss_every_s=1.0,
    check_every_s=2.0,
)


@dataclass
class PodLife:
    name: str
    kind: str
    # deploy, rollback, pending-tag, pending-digest
    repository: str
    digest: str
    created: float
    # time.monotonic() after the create returned: certainly live from then
    deleted: float | None = None
    # time.monotonic() before the delete was sent: certainly live until then


@dataclass
class Incarnation:
    replica: str
    number: int
    key: str
    # its AWS access key id: how the simulator's request log tells callers apart
    port: int
    process: subprocess.Popen[bytes]
    started: float
    stdout: Path
    stderr: Path
    rss: list[tuple[float, int]] = field(default_factory=list)
    # (seconds since the soak started, VmRSS KiB)
    ended: float | None = None
    how: str | None = None
    # sigterm, sigkill, end (None while running, or an unexpected exit)
    exit_code: int | None = None


class Soak:
    def __init__(self, config: Config, directory: Path) -> None:
        self.config = config
        self.directory = directory
        self.random = random.Random(config.seed)
        self.ecr = ThreadedEcrSimulator()
        self.kube = ThreadedKubeSimulator(token="soak-token")
        self.repositories = [f"soak-{n}" for n in range(config.repositories)]
        self.pods: dict[str, PodLife] = {}
        self.live: list[str] = []
        self.by_digest: dict[str, list[PodLife]] = {}
        self.incarnations: list[Incarnation] = []
        self.current: dict[str, Incarnation] = {}
        self.frozen: str | None = None
        self.counts: dict[str, int] = dict.fromkeys(
            (
                "pods_created",
                "pods_deleted",
                "rollbacks",
                "pushes",
                "watch_drops",
                "compactions",
                "failovers_sigterm",
                "failovers_sigkill",
                "failovers_freeze",
                "leader_changes",
            ),
            0,
        )
        self.holders: list[tuple[float, str]] = []
        self.checked = 0
        self.deletions = 0
        self.deleted_by: dict[str, int] = {}
        self.violations: list[dict[str, Any]] = []
        self.race_window: list[dict[str, Any]] = []
        self.pod_seq = 0
        self.image_seq = 0
        self.drop_seq = 0
        self.failover_seq = 0
        self.t0 = 0.0
        self.kubeconfig = directory / "kubeconfig"

    # ------------------------------------------------------------------ world

    def seed_world(self) -> None:
        now = datetime.now(UTC)
        for repository in self.repositories:
            self.ecr.create_repository(repository)
            for n in range(self.config.initial_images):
                self.push(
                    repository, pushed_at=now - timedelta(hours=self.config.initial_images - n)
                )
        while len(self.live) < self.config.pods:
            self.create_pod("deploy")

    def push(self, repository: str, *, pushed_at: datetime | None = None) -> None:
        self.image_seq += 1
        self.ecr.add_image(
            repository,
            tags=(f"build-{self.image_seq}",),
            pushed_at=pushed_at or datetime.now(UTC),
            config_seed=f"soak-{self.image_seq}",
        )
        self.counts["pushes"] += 1

    def stored(self, repository: str) -> list[tuple[str, str]]:
        """(digest, tag) of a repository's images, newest first."""
        images = sorted(self.ecr.images(repository), key=lambda i: i.pushed_at, reverse=True)
        return [(i.digest, i.tags[0]) for i in images if i.tags]

    def create_pod(self, kind: str) -> None:
        repository = self.random.choice(self.repositories)
        images = self.stored(repository)
        if not images:
            return
        keep = self.config.max_images
        if kind == "deploy":
            digest, tag = self.random.choice(images[: max(1, keep // 2)])
        elif kind == "rollback":
            doomed = images[keep:] or images[-1:]
            digest, tag = self.random.choice(doomed[-3:])  # the oldest: next in line for deletion
        else:  # pending: anything past the newest few
            digest, tag = self.random.choice(images[keep // 2 :] or images)
        self.pod_seq += 1
        name = f"{kind}-{self.pod_seq}"
        by_tag, by_digest = f"{HOST}/{repository}:{tag}", f"{HOST}/{repository}@{digest}"
        if kind == "pending-tag":
            obj = pod(name, NAMESPACE, {"app": by_tag}, image_ids={"app": ""}, phase="Pending")
        elif kind == "pending-digest":
            obj = pod(name, NAMESPACE, {"app": by_digest}, phase="Pending")
        else:
            obj = pod(name, NAMESPACE, {"app": by_tag}, image_ids={"app": by_digest})
        self.kube.create("pods", obj)
        life = PodLife(name, kind, repository, digest, time.monotonic())
        self.pods[name] = life
        self.live.append(name)
        self.by_digest.setdefault(digest, []).append(life)
        self.counts["pods_created"] += 1
        self.counts["rollbacks"] += kind == "rollback"

    def delete_pod(self) -> None:
        name = self.live.pop(self.random.randrange(len(self.live)))
        self.pods[name].deleted = time.monotonic()
        self.kube.delete("pods", NAMESPACE, name)
        self.counts["pods_deleted"] += 1

    def churn(self) -> None:
        target = self.config.pods
        if len(self.live) > target + 4 or (
            len(self.live) > target - 4 and self.random.random() < 0.5
        ):
            self.delete_pod()
            return
        roll = self.random.random()
        kind = (
            "deploy"
            if roll < 0.55
            else "rollback"
            if roll < 0.85
            else "pending-tag"
            if roll < 0.93
            else "pending-digest"
        )
        self.create_pod(kind)

    def drop_watches(self) -> None:
        self.drop_seq += 1
        if self.drop_seq % self.config.compact_every == 0:
            self.kube.compact()
            self.counts["compactions"] += 1
        self.kube.drop_watches()
        self.counts["watch_drops"] += 1

    # ------------------------------------------------------------------ replicas

    def start(self, replica: str) -> None:
        number = sum(i.replica == replica for i in self.incarnations) + 1
        key = f"AKIDSOAK{replica.upper()}{number:04d}"
        port = free_port()
        stem = self.directory / f"replica-{replica}-{number}"
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            **CREDENTIALS,
            "AWS_ACCESS_KEY_ID": key,
            "AWS_ENDPOINT_URL_ECR": self.ecr.endpoint_url,
            "HOSTNAME": f"soak-{replica}",
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        args = [
            f"--kubeconfig={self.kubeconfig}",
            "--repos=soak-*",
            f"--max-images={self.config.max_images}",
            "--dry-run=false",
            f"--interval={self.config.interval}",
            "--interval-jitter=0",
            f"--lease-duration={self.config.lease_duration:g}s",
            "--lease-namespace=default",
            f"--metrics-address=127.0.0.1:{port}",
        ]
        out, err = stem.with_suffix(".stdout"), stem.with_suffix(".stderr")
        with out.open("wb") as stdout, err.open("wb") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-m", "controller", *args],
                env=env,
                stdout=stdout,
                stderr=stderr,
                cwd=Path(__file__).resolve().parent.parent,
            )
        incarnation = Incarnation(replica, number, key, port, process, self.elapsed(), out, err)
        self.incarnations.append(incarnation)
        self.current[replica] = incarnation

    def stop(self, replica: str, how: str) -> None:
        incarnation = self.current[replica]
        process = incarnation.process
        process.send_signal(signal.SIGTERM if how in ("sigterm", "end") else signal.SIGKILL)
        try:
            incarnation.exit_code = process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            process.kill()
            incarnation.exit_code = process.wait(timeout=10)
            how = f"{how} (timed out, killed)"
        incarnation.ended, incarnation.how = self.elapsed(), how

    def holder(self) -> str | None:
        lease = self.kube.get("leases", "default", LEASE)
        identity = ((lease or {}).get("spec") or {}).get("holderIdentity") or ""
        for replica in ("a", "b"):
            if identity.startswith(f"soak-{replica}_"):
                return replica
        return None

    def failover(self, schedule: Callable[[float, Callable[[], None]], None]) -> None:
        leader = self.holder()
        if leader is None or self.frozen is not None:
            schedule(1.0, lambda: self.failover(schedule))  # no settled leader yet
            return
        self.failover_seq += 1
        if leader == "a":
            os.kill(self.current["a"].process.pid, signal.SIGSTOP)
            self.frozen = "a"
            self.counts["failovers_freeze"] += 1
            schedule(self.config.lease_duration * 1.5 + 1.0, self.thaw)
        else:
            how = (
                "sigterm"
                if self.counts["failovers_sigterm"] <= self.counts["failovers_sigkill"]
                else "sigkill"
            )
            self.stop("b", how)
            self.counts[f"failovers_{how}"] += 1
            schedule(self.config.restart_after_s, lambda: self.start("b"))
        schedule(self.config.failover_every_s, lambda: self.failover(schedule))

    def thaw(self) -> None:
        if self.frozen is not None:
            os.kill(self.current[self.frozen].process.pid, signal.SIGCONT)
            self.frozen = None

    def sample(self) -> None:
        now = self.elapsed()
        holder = self.holder()
        if holder is not None and (not self.holders or self.holders[-1][1] != holder):
            self.holders.append((now, holder))
        for incarnation in self.current.values():
            if incarnation.ended is None and incarnation.process.poll() is None:
                kib = vm_rss(incarnation.process.pid)
                if kib:
                    incarnation.rss.append((now, kib))

    # ------------------------------------------------------------------ invariant

    def check(self) -> None:
        requests = self.ecr.requests
        grace = self.config.grace_s
        for request in requests[self.checked :]:
            if request.operation != "BatchDeleteImage":
                continue
            at = request.received_at
            for image_id in request.params.get("imageIds") or ():
                digest = image_id.get("imageDigest")
                self.deletions += 1
                self.deleted_by[request.caller] = self.deleted_by.get(request.caller, 0) + 1
                for life in self.by_digest.get(digest, ()):
                    live = life.created <= at and (life.deleted is None or life.deleted >= at)
                    if not live:
                        continue
                    entry = {
                        "digest": digest,
                        "repository": request.params.get("repositoryName"),
                        "pod": life.name,
                        "pod_kind": life.kind,
                        "pod_age_s": round(at - life.created, 3),
                        "caller": request.caller,
                        "at_s": round(at - self.t0, 3),
                    }
                    (self.violations if at - life.created >= grace else self.race_window).append(
                        entry
                    )
        self.checked = len(requests)

    def concurrent_deleters(self) -> int:
        """Pairs of delete calls from different processes in flight at once at the simulator."""
        calls = sorted(
            (r.received_at, r.answered_at, r.caller)
            for r in self.ecr.requests
            if r.operation == "BatchDeleteImage"
        )
        overlapping = 0
        for n, (start, _end, caller) in enumerate(calls):
            for other_start, other_end, other in calls[:n]:
                if other != caller and other_start <= start <= other_end:
                    overlapping += 1
        return overlapping

    # ------------------------------------------------------------------ the run

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def run(self) -> dict[str, Any]:
        config = self.config
        self.ecr.start()
        self.kube.start()
        try:
            self.seed_world()
            self.kubeconfig = write_kubeconfig(
                self.directory / "kubeconfig", {"soak": self.kube}, token="soak-token"
            )
            self.t0 = time.monotonic()
            self.start("a")
            wait_for(lambda: self.holder() == "a", 60, "replica a leading")
            self.start("b")
            queue: list[tuple[float, int, Callable[[], None]]] = []
            seq = 0

            def schedule(after: float, action: Callable[[], None]) -> None:
                nonlocal seq
                seq += 1
                heapq.heappush(queue, (time.monotonic() + after, seq, action))

            def every(period: float, action: Callable[[], None]) -> Callable[[], None]:
                def tick() -> None:
                    action()
                    schedule(period, tick)

                return tick

            schedule(0, every(config.churn_every_s, self.churn))
            schedule(
                0,
                every(
                    config.push_every_s, lambda: self.push(self.random.choice(self.repositories))
                ),
            )
            schedule(config.drop_every_s, every(config.drop_every_s, self.drop_watches))
            schedule(0, every(config.rss_every_s, self.sample))
            schedule(config.check_every_s, every(config.check_every_s, self.check))
            schedule(config.failover_every_s, lambda: self.failover(schedule))
            end = self.t0 + config.minutes * 60
            while time.monotonic() < end:
                when, _seq, action = heapq.heappop(queue)
                time.sleep(max(0.0, min(when, end) - time.monotonic()))
                if when <= end:
                    action()
                for replica, incarnation in self.current.items():
                    if incarnation.ended is None and incarnation.process.poll() is not None:
                        raise RuntimeError(
                            f"replica {replica} exited by itself ({incarnation.process.returncode}); "
                            f"see {incarnation.stderr}"
                        )
            self.thaw()
            metrics = {r: scrape(i.port) for r, i in self.current.items() if i.ended is None}
            duration = self.elapsed()
            for replica in list(self.current):
                if self.current[replica].ended is None:
                    self.stop(replica, "end")
            self.check()
            return self.report(duration, metrics)
        finally:
            for incarnation in self.incarnations:
                if incarnation.process.poll() is None:
                    os.kill(incarnation.process.pid, signal.SIGCONT)
                    incarnation.process.kill()
                    incarnation.process.wait(timeout=10)
            self.kube.stop()
            self.ecr.stop()

    def report(self, duration: float, metrics: dict[str, str]) -> dict[str, Any]:
        config = self.config
        processes: list[dict[str, Any]] = []
        for i in self.incarnations:
            stdout = i.stdout.read_text(errors="replace")
            stderr = i.stderr.read_text(errors="replace")
            processes.append(
                {
                    "replica": i.replica,
                    "incarnation": i.number,
                    "started_s": round(i.started, 1),
                    "ended_s": None if i.ended is None else round(i.ended, 1),
                    "stopped_by": i.how,
                    "exit_code": i.exit_code,
                    "cycles": sum(line.startswith("total: ") for line in stdout.splitlines()),
                    "became_leader": stderr.count("became leader of Lease"),
                    "tracebacks": stderr.count("Traceback (most recent call last)"),
                    "deletions_requested": self.deleted_by.get(i.key, 0),
                    "rss": rss_summary(i.rss, warmup_s=config.warmup_s),
                    "rss_series": [[round(t, 1), round(kib / 1024, 1)] for t, kib in i.rss],
                }
            )
        unexpected = [
            p
            for p in processes
            if not (
                (p["stopped_by"] in ("sigterm", "end") and p["exit_code"] == 0)
                or (p["stopped_by"] == "sigkill" and p["exit_code"] == -signal.SIGKILL)
            )
        ]
        counts = dict(self.counts)
        counts["leader_changes"] = max(0, len(self.holders) - 1)
        counts["failovers"] = sum(v for k, v in counts.items() if k.startswith("failovers_"))
        concurrent = self.concurrent_deleters()
        a = next(p for p in processes if p["replica"] == "a")
        return {
            "duration_s": round(duration, 1),
            "config": asdict(config),
            "counts": counts,
            "cycles": sum(p["cycles"] for p in processes),
            "deletions": self.deletions,
            "delete_calls": sum(1 for r in self.ecr.requests if r.operation == "BatchDeleteImage"),
            "ecr_calls": len(self.ecr.requests),
            "images_left": {r: len(self.ecr.digests(r)) for r in self.repositories},
            "violations": self.violations,
            "race_window": self.race_window,
            "concurrent_deleters": concurrent,
            "unexpected_exits": [f"{p['replica']}{p['incarnation']}" for p in unexpected],
            "tracebacks": sum(p["tracebacks"] for p in processes),
            "leaders": [[round(t, 1), r] for t, r in self.holders],
            "relists": {
                r: metric_sum(text, "ecr_cleanup_watch_relists_total")
                for r, text in metrics.items()
            },
            "watch_restarts": {
                r: metric_sum(text, "ecr_cleanup_watch_restarts_total")
                for r, text in metrics.items()
            },
            "processes": processes,
            "rss_flat": a["rss"]["flat"],
            "invariant_held": not self.violations and concurrent == 0,
            "python": platform.python_version(),
            "machine": f"{os.cpu_count()} CPUs, {platform.machine()}",
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }


# ---------------------------------------------------------------------- helpers


def rss_summary(samples: Sequence[tuple[float, int]], *, warmup_s: float) -> dict[str, Any]:
    """First and last quarter means, least-squares slope, start, end and max, in MiB."""
    if not samples:
        return {"samples": 0, "flat": None}
    start = samples[0][0]
    steady = [(t, kib / 1024) for t, kib in samples if t - start >= warmup_s] or [
        (t, kib / 1024) for t, kib in samples
    ]
    quarter = max(1, len(steady) // 4)
    first = sum(v for _t, v in steady[:quarter]) / quarter
    last = sum(v for _t, v in steady[-quarter:]) / quarter
    slope = _slope(steady)
    tail_slope = _slope(steady[-quarter:])
    span = steady[-1][0] - steady[0][0]
    return {
        "samples": len(samples),
        # start and end: the first and last samples after the warm-up
        "start_mib": round(steady[0][1], 1),
        "end_mib": round(steady[-1][1], 1),
        "max_mib": round(max(kib for _t, kib in samples) / 1024, 1),
        "first_quarter_mib": round(first, 1),
        "last_quarter_mib": round(last, 1),
        "slope_mib_per_min": round(slope, 2),
        "last_quarter_slope_mib_per_min": round(tail_slope, 2) + 0.0,  # never -0.0
        # a warm-up that levels off (caches filling, the allocator's pools) shows as a whole-run
        # slope with a flat last quarter; a leak keeps its slope to the end
        "steady_span_s": round(span, 1),
        # flat: the last quarter within 5% (at least 4 MiB) of the first
        "flat": last - first <= max(4.0, 0.05 * first),
    }


def _slope(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MiB) points, in MiB per minute."""
    n = len(points)
    if n < 2:
        return 0.0
    mean_t = sum(t for t, _v in points) / n
    mean_v = sum(v for _t, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _v in points)
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / var * 60 if var > 0 else 0.0


def vm_rss(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            return str(response.read().decode())
    except OSError:
        return ""


def metric_sum(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def wait_for(predicate: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {what} within {within} s")
        time.sleep(0.1)


def markdown(r: dict[str, Any]) -> str:
    c = r["counts"]
    lines = [
        f"Soak of {r['duration_s'] / 60:.1f} min, two replicas (Python {r['python']}, {r['machine']}), "
        f"finished {r['finished_at']}:",
        "",
        f"- churn: {c['pods_created']:,} pods created ({c['rollbacks']:,} rollbacks to the oldest "
        f"images), {c['pods_deleted']:,} deleted; {c['pushes']:,} images pushed",
        f"- {c['failovers']} failovers ({c['failovers_sigterm']} SIGTERM, {c['failovers_sigkill']} "
        f"SIGKILL, {c['failovers_freeze']} frozen past the Lease), {c['leader_changes']} leader "
        f"changes; {c['watch_drops']} watch drops ({c['compactions']} after a compaction)",
        f"- {r['cycles']} cycles, {r['deletions']:,} images deleted in {r['delete_calls']} calls; "
        f"violations: {len(r['violations'])}; delete calls in flight from two replicas at once: "
        f"{r['concurrent_deleters']}; pods younger than the grace at a delete of their image: "
        f"{len(r['race_window'])}",
        "",
        "| process | lived | RSS start | first ¼ | last ¼ | end | max | slope | last ¼ slope |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in r["processes"]:
        m = p["rss"]
        if not m["samples"]:
            continue
        lived = (p["ended_s"] or r["duration_s"]) - p["started_s"]
        lines.append(
            f"| {p['replica']}{p['incarnation']} | {lived:.0f} s | {m['start_mib']} MiB | "
            f"{m['first_quarter_mib']} | {m['last_quarter_mib']} | {m['end_mib']} | "
            f"{m['max_mib']} | {m['slope_mib_per_min']:+.2f} MiB/min | "
            f"{m['last_quarter_slope_mib_per_min']:+.2f} MiB/min |"
        )
    return "\n".join(lines) + "\n"


def run(config: Config, directory: Path | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="soak-") as scratch:
        return Soak(config, directory or Path(scratch)).run()


def main(argv: Sequence[str] | None = None, out: Callable[[str], object] = print) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--minutes", type=float, default=Config.minutes)
    parser.add_argument("--quick", action="store_true", help="a smoke-sized run (about 25 s)")
    parser.add_argument("--json", action="store_true", help="print the JSON report")
    parser.add_argument("--out", type=Path, help="write soak.json, soak.md and the logs there")
    options = parser.parse_args(argv)
    config = QUICK if options.quick else Config(minutes=options.minutes)
    if options.out is not None:
        options.out.mkdir(parents=True, exist_ok=True)
        result = run(config, options.out)
        (options.out / "soak.json").write_text(json.dumps(result, indent=2) + "\n")
        (options.out / "soak.md").write_text(markdown(result))
    else:
        result = run(config)
    out(json.dumps(result, indent=2) if options.json else markdown(result))
    return 0 if result["invariant_held"] and not result["unexpected_exits"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
