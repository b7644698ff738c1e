"""The fault matrix (issue 12, section 2): the real controller process, in service mode, against the
ECR simulator and the API-server simulator, one fault at a time.

Every case checks the same four things:

1. no protected image is deleted: every BatchDeleteImage the ECR simulator received is compared
   with what the pods that existed when it arrived use (by digest, or by a tag of the
   repository), and at the end every image a pod uses is still there;
2. one process and no crash loop: the process is alive (or exited 0 when told to stop), it
   started once, logged no traceback and /healthz answers 200;
3. the fault shows in a named /metrics series (scraped over HTTP) and in a log line;
4. once the fault clears, the controller converges: every repository at its limit (protected
   images count, and stay), /readyz 200, the view trusted, a cycle without errors.

`CASES` is the matrix; docs/faults.md carries it as a table, and a test fails when the two differ
(regenerate with `python -m tests.test_faults`).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sandbox.ecrsim import ThreadedEcrSimulator
from sandbox.kubesim import ThreadedKubeSimulator, pod, write_kubeconfig
from sandbox.moto import CREDENTIALS
from sandbox.ports import free_port
from tests.test_e2e_service import Process

HOST = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
TOKEN = "faults-token"
LIMIT = 10
LEASE = ("default", "kube-ecr-cleanup-controller")
PODS = {"source_cluster": "sim", "kind": "pods", "source_namespace": ""}
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
DOC = Path(__file__).parent.parent / "docs" / "faults.md"


# ------------------------------------------------------------------------------- the matrix


@dataclass(frozen=True)
class Case:
    fault: str
    injected: str
    behaviour: str
    signal: str
    recovery: str


CASES: dict[str, Case] = {}


def case(test_id: str, **fields: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register a test as the matrix row `test_id` (a test name, with its parameter if any)."""

    def register(fn: Callable[..., None]) -> Callable[..., None]:
        CASES[test_id] = Case(**fields)
        return fn

    return register


# ------------------------------------------------------------------------------- the rig


class Service(Process):
    """A controller subprocess whose stderr lines carry the monotonic time they arrived."""

    def __init__(self, popen: subprocess.Popen[str]) -> None:
        self.timed: list[tuple[float, str]] = []
        super().__init__(popen)

    def _drain(self, stream: Any, sink: list[str]) -> None:  # type: ignore[override]
        for line in stream:
            if sink is self.stderr:
                self.timed.append((time.monotonic(), line))
            sink.append(line)

    def first(self, needle: str) -> float:
        return next(at for at, line in self.timed if needle in line)


@dataclass
class PodRecord:
    name: str
    refs: tuple[str, ...]
    # image references as the pod names them: `repo@sha256:...` or `repo:tag`
    created_at: float
    deleted_at: float = float("inf")


@dataclass
class Rig:
    ecr: ThreadedEcrSimulator
    kube: ThreadedKubeSimulator | None
    tmp: Path
    port: int = field(default_factory=free_port)
    tags: dict[tuple[str, str], str] = field(default_factory=dict)
    # (repository, tag) -> digest, as pushed (tags never move in these tests)
    pods: list[PodRecord] = field(default_factory=list)
    processes: list[Service] = field(default_factory=list)
    pushed: int = 0

    # -- seeding

    def push(self, repo: str, count: int, *, hours_ago: float = 0.0) -> list[str]:
        """`count` images, newest first, one minute apart, the newest `hours_ago` old."""
        now = datetime.now(UTC) - timedelta(hours=hours_ago)
        digests = []
        for n in range(count):
            self.pushed += 1
            tag = f"b{self.pushed}"
            digest = self.ecr.add_image(
                repo,
                tags=(tag,),
                pushed_at=now - timedelta(minutes=n),
                config_seed=f"{repo}-{self.pushed}",
            )
            self.tags[(repo, tag)] = digest
            digests.append(digest)
        return digests

    def repository(self, repo: str, count: int) -> list[str]:
        self.ecr.create_repository(repo)
        return self.push(repo, count, hours_ago=24)

    def tag_of(self, repo: str, digest: str) -> str:
        return next(t for (r, t), d in self.tags.items() if r == repo and d == digest)

    def run_pod(self, name: str, repo: str, digest: str, *, by: str = "tag+imageID") -> None:
        """A running pod (by tag, with its imageID) or a pending one (`by="tag"`: not pulled)."""
        assert self.kube is not None
        image = f"{HOST}/{repo}:{self.tag_of(repo, digest)}"
        if by == "tag":
            obj = pod(name, "shop", {"c": image}, phase="Pending")
            refs: tuple[str, ...] = (f"{repo}:{self.tag_of(repo, digest)}",)
        else:
            obj = pod(name, "shop", {"c": image}, image_ids={"c": f"{HOST}/{repo}@{digest}"})
            refs = (f"{repo}:{self.tag_of(repo, digest)}", f"{repo}@{digest}")
        self.kube.create("pods", obj)
        self.pods.append(PodRecord(name, refs, time.monotonic()))

    def delete_pod(self, name: str) -> None:
        assert self.kube is not None
        self.kube.delete("pods", "shop", name)
        record = next(p for p in self.pods if p.name == name and p.deleted_at == float("inf"))
        record.deleted_at = time.monotonic()

    # -- the controller

    def args(self, repos: str, *extra: str) -> list[str]:
        return [
            f"--kubeconfig={self.tmp / 'kubeconfig'}",
            f"--repos={repos}",
            f"--max-images={LIMIT}",
            "--dry-run=false",
            "--interval=1s",
            "--interval-jitter=0",
            f"--metrics-address=127.0.0.1:{self.port}",
            "--lease-namespace=default",
            "--lease-duration=3s",
            *extra,
        ]

    def start(self, repos: str, *extra: str) -> Service:
        if self.kube is not None:
            write_kubeconfig(self.tmp / "kubeconfig", {"sim": self.kube}, token=TOKEN)
        env = {
            **os.environ,
            **CREDENTIALS,
            "AWS_ENDPOINT_URL_ECR": self.ecr.endpoint_url,
            "PYTHONUNBUFFERED": "1",
        }
        service = Service(
            subprocess.Popen(
                [sys.executable, "-m", "controller", *self.args(repos, *extra)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
        self.processes.append(service)
        return service

    # -- observing

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return 0, ""

    def metric(self, name: str, **labels: str) -> float | None:
        """The sum of the samples `name` whose labels include `labels` (None: no such sample)."""
        status, text = self.get("/metrics")
        if status != 200:
            return None
        found = None
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and labels.items() <= sample.labels.items():
                    found = (found or 0.0) + sample.value
        return found

    def wait_metric(
        self,
        service: Service,
        name: str,
        check: Callable[[float], bool],
        **labels: str,
    ) -> float:
        seen: list[float | None] = []

        def ok() -> bool:
            value = self.metric(name, **labels)
            seen[:] = [value]
            return value is not None and check(value)

        service.wait_until(ok, 30, f"{name}{labels} as expected (last: {seen})")
        value = seen[0]
        assert value is not None
        return value

    def deletes(
        self, after: float = 0.0, *, carried_out: bool = False
    ) -> list[tuple[float, str, set[str]]]:
        """The BatchDeleteImage calls that arrived after `after` (all of them, or only those
        ECR carried out, answered 200), with when each arrived."""
        return [
            (
                r.received_at,
                r.params["repositoryName"],
                {i["imageDigest"] for i in r.params["imageIds"]},
            )
            for r in self.ecr.requests
            if r.operation == "BatchDeleteImage"
            and r.received_at > after
            and (r.status == 200 or not carried_out)
        ]

    # -- the four checks

    def protected(self, repo: str, at: float) -> set[str]:
        """What the pods existing at monotonic time `at` protect in `repo`: digests they name or
        run (in any repository: a digest protects everywhere) and the images their tags of
        `repo` point to."""
        found = set()
        for record in self.pods:
            if not record.created_at <= at <= record.deleted_at:
                continue
            for ref in record.refs:
                if "@" in ref:
                    found.add(ref.split("@", 1)[1])
                else:
                    name, tag = ref.rsplit(":", 1)
                    if name == repo and (repo, tag) in self.tags:
                        found.add(self.tags[(repo, tag)])
        return found

    def check_nothing_protected_deleted(self) -> None:
        # The calls ECR carried out: one it refused (throttled, 5xx, expired token) deleted
        # nothing. Counting refused ones too flagged, under load, a throttled retry sent in the
        # milliseconds between a pod's creation and its watch event, which no controller can
        # see into (the retried-delete case: its faults clear only once the pod is seen).
        for at, repo, digests in self.deletes(carried_out=True):
            hit = digests & self.protected(repo, at)
            assert not hit, f"BatchDeleteImage on {repo} named protected images {hit}"
        now = time.monotonic()
        for repo in self.ecr.repositories():
            missing = self.protected(repo, now) & {
                d for (r, _), d in self.tags.items() if r == repo
            } - self.ecr.digests(repo)
            assert not missing, f"protected images gone from {repo}: {missing}"

    def converged(self, *repos: str) -> bool:
        now = time.monotonic()
        for repo in repos:
            present = self.ecr.digests(repo)
            kept = self.protected(repo, now) & {d for (r, _), d in self.tags.items() if r == repo}
            if not kept <= present or len(present) != max(LIMIT, len(kept)):
                return False
        return True

    def check_converges(self, service: Service, *repos: str, within: float = 30) -> None:
        ok_before = self.metric("ecr_cleanup_cycles_total", result="ok") or 0
        service.wait_until(lambda: self.converged(*repos), within, f"{repos} at their limit")
        self.wait_metric(service, "ecr_cleanup_cycles_total", lambda v: v > ok_before, result="ok")
        assert self.get("/readyz") == (200, "ok")
        assert self.metric("ecr_cleanup_view_trusted") == 1
        assert self.metric("ecr_cleanup_leader") == 1

    def check_one_process(self, service: Service) -> None:
        assert service.popen.poll() is None, service.log()
        assert service.count("serving /metrics, /healthz and /readyz") == 1
        assert not any("Traceback" in line for line in service.stderr), service.log()
        assert self.get("/healthz") == (200, "ok")

    def finish(self, service: Service) -> None:
        """The checks every case ends with: safety, one process, and a clean stop."""
        self.check_nothing_protected_deleted()
        self.check_one_process(service)
        assert service.terminate() == 0
        assert service.count("controller.app stopped") == 1


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    with ThreadedEcrSimulator() as ecr, ThreadedKubeSimulator(token=TOKEN) as kube:
        made = Rig(ecr, kube, tmp_path)
        try:
            yield made
        finally:
            for process in made.processes:
                process.close()


def seeded(rig: Rig, repos: tuple[str, ...] = ("app",), images: int = 40) -> dict[str, list[str]]:
    """Repositories of `images` images (over the limit) and a pod that runs the newest of each and
    one old one of the first (an old image in use: never deleted)."""
    made = {repo: rig.repository(repo, images) for repo in repos}
    first = repos[0]
    rig.run_pod("web", first, made[first][0])
    rig.run_pod("old", first, made[first][-3])
    for repo in repos[1:]:
        rig.run_pod(f"web-{repo.replace('/', '-')}", repo, made[repo][0])
    return made


def first_delete(rig: Rig, service: Service, repo: str = "app") -> set[str]:
    """Wait until the first BatchDeleteImage on `repo` is on the wire; the digests it names.

    The simulator records a request once answered (after its latency), so the controller's own
    line, logged right before the call, says when it starts."""
    needle = f" image(s) from {repo}: "

    def line() -> str | None:
        return next((x for x in service.stderr if "deleting " in x and needle in x), None)

    service.wait_until(lambda: line() is not None, 60, f"a delete call on {repo}")
    time.sleep(0.1)  # from the log line to the wire
    return set(DIGEST.findall(line() or ""))


# ------------------------------------------------------------------------------- the API server


@case(
    "test_api_server_unreachable_at_start",
    fault="API server unreachable at start",
    injected="the kubeconfig names a port nothing listens on; the API-server simulator starts "
    "there after 2 s",
    behaviour="watchers and leader election retry with back-off; not ready; no cycle, no ECR "
    "delete call",
    signal='`ecr_cleanup_watch_synced{kind="pods"}` 0, `ecr_cleanup_view_trusted` 0, /readyz '
    "503 `not synced`; log `...; retrying in`",
    recovery="first LIST as soon as the server answers, Lease taken, repository pruned to its limit",
)
def test_api_server_unreachable_at_start(tmp_path: Path) -> None:
    port = free_port()
    with ThreadedEcrSimulator() as ecr:
        kube = ThreadedKubeSimulator(token=TOKEN, port=port)  # seeded before it serves
        rig = Rig(ecr, kube, tmp_path)
        try:
            seeded(rig)
            rig.kube = None  # the kubeconfig written by hand: nothing listens yet
            write_kubeconfig(
                tmp_path / "kubeconfig", {"sim": f"http://127.0.0.1:{port}"}, token=TOKEN
            )
            service = rig.start("app")
            rig.wait_metric(service, "ecr_cleanup_watch_synced", lambda v: v == 0, **PODS)
            service.wait_until(lambda: service.count("retrying in") >= 2, 30, "retries")
            status, body = rig.get("/readyz")
            assert status == 503
            assert "not synced" in body
            assert rig.metric("ecr_cleanup_view_trusted") == 0
            time.sleep(2)
            assert rig.deletes() == []
            assert len(ecr.digests("app")) == 40
            with kube:
                rig.kube = kube
                rig.check_converges(service, "app", within=40)
                rig.finish(service)
        finally:
            for process in rig.processes:
                process.close()


DENIALS = ("401-token-revoked", "403-on-replicasets")
for _denial in DENIALS:
    case(
        f"test_the_api_server_denies[{_denial}]",
        fault="401" if _denial.startswith("401") else "403 on one resource",
        injected=(
            "the server's bearer token changes (the controller's is revoked), watches dropped"
            if _denial.startswith("401")
            else "RBAC denies get/list/watch on replicasets, their watch dropped"
        ),
        behaviour="the source is denied: the view is not trusted and nothing is deleted anywhere"
        + (
            "; the leader cannot renew the Lease and steps down"
            if _denial.startswith("401")
            else " (the pods source itself is fine)"
        ),
        signal=(
            '`ecr_cleanup_watch_denied{kind="pods"}` 1'
            if _denial.startswith("401")
            else '`ecr_cleanup_watch_denied{kind="replicasets"}` 1 (pods 0)'
        )
        + ', `ecr_cleanup_view_trusted` 0, `ecr_cleanup_cycles_skipped_total{reason="untrusted-view"}`'
        f" rising; log `HTTP {_denial[:3]}`",
        recovery="token/permission restored: the watch reconnects, the view is trusted again, the "
        "images pushed meanwhile are pruned",
    )(lambda: None)


@pytest.mark.parametrize("denial", DENIALS)
def test_the_api_server_denies(rig: Rig, denial: str) -> None:
    seeded(rig)
    service = rig.start("app")
    rig.check_converges(service, "app")
    assert rig.kube is not None
    if denial.startswith("401"):
        rig.kube.sim.token = "rotated"
        rig.kube.drop_watches()
        denied = PODS
    else:
        rig.kube.deny("replicasets")
        rig.kube.drop_watches("replicasets")
        denied = {**PODS, "kind": "replicasets"}
    rig.wait_metric(service, "ecr_cleanup_watch_denied", lambda v: v == 1, **denied)
    if not denial.startswith("401"):
        assert rig.metric("ecr_cleanup_watch_denied", **PODS) == 0
    fault_at = time.monotonic()
    skipped = rig.metric("ecr_cleanup_cycles_skipped_total", reason="untrusted-view") or 0
    rig.push("app", 5)
    rig.wait_metric(
        service,
        "ecr_cleanup_cycles_skipped_total",
        lambda v: v >= skipped + 2,
        reason="untrusted-view",
    )
    assert rig.metric("ecr_cleanup_view_trusted") == 0
    assert rig.deletes(after=fault_at) == []
    assert len(rig.ecr.digests("app")) == LIMIT + 5
    assert service.count(f"HTTP {denial[:3]}") >= 1
    if denial.startswith("401"):
        rig.kube.sim.token = TOKEN
    else:
        rig.kube.allow("replicasets")
    rig.check_converges(service, "app", within=40)
    rig.finish(service)


@case(
    "test_watch_dropped_mid_stream_repeatedly",
    fault="watch dropped mid-stream, repeatedly",
    injected="the pods watch's TCP connection aborted 5 times; a rollback pod created while "
    "each stream is down",
    behaviour="resumes from the last resourceVersion (no re-list); the events of the gap are "
    "replayed; no delete call goes out while the stream is down (it waits for the view to "
    "catch up, up to 30 s)",
    signal='`ecr_cleanup_watch_restarts_total{kind="pods"}` +5, '
    '`ecr_cleanup_watch_relists_total{kind="pods"}` 0; log `...; retrying in`',
    recovery='`ecr_cleanup_watched_objects{kind="pods"}` equals the cluster; the 5 rollback '
    "images kept, the rest pruned",
)
def test_watch_dropped_mid_stream_repeatedly(rig: Rig) -> None:
    made = seeded(rig)["app"]
    service = rig.start("app")
    rig.check_converges(service, "app")
    assert rig.kube is not None
    kube = rig.kube
    restarts = rig.metric("ecr_cleanup_watch_restarts_total", **PODS) or 0
    for n in range(5):
        service.wait_until(lambda: kube.watch_count("pods") >= 1, 30, "the watch open")
        kube.drop_watches("pods")
        service.wait_until(lambda: kube.watch_count("pods") == 0, 10, "the watch gone")
        rig.run_pod(f"rollback-{n}", "app", made[8 - n])
    rig.wait_metric(
        service, "ecr_cleanup_watched_objects", lambda v: v == len(kube.list("pods")), kind="pods"
    )
    rig.wait_metric(
        service, "ecr_cleanup_watch_restarts_total", lambda v: v >= restarts + 5, **PODS
    )
    assert rig.metric("ecr_cleanup_watch_relists_total", **PODS) == 0
    assert service.count("retrying in") >= 5
    rig.push("app", 5)
    rig.check_converges(service, "app")
    assert {made[8 - n] for n in range(5)} <= rig.ecr.digests("app")
    rig.finish(service)


EXPIRIES = ("error-event-mid-stream", "http-410-on-resume")
for _expiry in EXPIRIES:
    case(
        f"test_410_gone_relists[{_expiry}]",
        fault="410 mid-stream",
        injected=(
            "etcd compaction, then an ERROR event with code 410 written into the open pods stream"
            if _expiry.startswith("error")
            else "compaction and a dropped stream: the resumed watch is answered HTTP 410"
        )
        + "; a rollback pod created and a pod deleted in the gap",
        behaviour="LISTs again and replaces the source's objects in one step (the deleted pod "
        "goes, the rollback pod comes); no delete call goes out until the re-list has landed",
        signal='`ecr_cleanup_watch_relists_total{kind="pods"}` +1; log `...; listing again in`',
        recovery="the view equals the cluster; the rollback image kept, the rest pruned",
    )(lambda: None)


@pytest.mark.parametrize("expiry", EXPIRIES)
def test_410_gone_relists(rig: Rig, expiry: str) -> None:
    made = seeded(rig)["app"]
    rig.run_pod("gone-soon", "app", made[5])
    service = rig.start("app")
    rig.check_converges(service, "app")
    assert rig.kube is not None
    kube = rig.kube
    service.wait_until(lambda: kube.watch_count("pods") >= 1, 30, "the watch open")
    kube.compact()
    if expiry.startswith("error"):
        kube.inject_raw_event(
            "pods",
            b'{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},'
            b'"status":"Failure","message":"too old resource version: 1 (2)",'
            b'"reason":"Expired","code":410}}',
        )
    else:
        kube.set_watch_expiry_mode("http")
        kube.drop_watches("pods")
    rig.run_pod("rollback", "app", made[8])
    rig.delete_pod("gone-soon")
    rig.wait_metric(service, "ecr_cleanup_watch_relists_total", lambda v: v >= 1, **PODS)
    rig.wait_metric(
        service, "ecr_cleanup_watched_objects", lambda v: v == len(kube.list("pods")), kind="pods"
    )
    assert service.count("listing again in") >= 1
    rig.push("app", 5)
    rig.check_converges(service, "app")
    assert made[8] in rig.ecr.digests("app")
    rig.finish(service)


GARBAGE = (
    b"this is not json",
    b'{"type":"ADDED","object":{"metadata":{"name":"truncat',
    b"[1, 2, 3]",
    b'{"type":"ADDED","object":"a string"}',
    b'{"type":"MODIFIED","object":{"kind":"Pod","metadata":{"name":"no-uid"}}}',
    b"\xff\xfe\x00 binary",
)


@case(
    "test_garbage_and_truncated_watch_lines",
    fault="garbage or truncated JSON lines in a watch",
    injected="6 bad lines written into the open pods stream (not JSON, truncated JSON, a list, "
    "an object that is a string, no uid, binary), then a real rollback pod",
    behaviour="each bad line is logged and skipped; the stream stays open and the next real "
    "event is applied",
    signal='`ecr_cleanup_watch_malformed_total{kind="pods"}` +6, '
    '`ecr_cleanup_watch_events_total{kind="pods"}` +7 with '
    '`ecr_cleanup_watch_restarts_total{kind="pods"}` unchanged; log `skipping a watch line '
    "that is not JSON`, `skipping a malformed watch event`",
    recovery="nothing to recover: the view stays trusted; the rollback image kept, the rest pruned",
)
def test_garbage_and_truncated_watch_lines(rig: Rig) -> None:
    made = seeded(rig)["app"]
    service = rig.start("app")
    rig.check_converges(service, "app")
    assert rig.kube is not None
    kube = rig.kube
    service.wait_until(lambda: kube.watch_count("pods") >= 1, 30, "the watch open")
    restarts = rig.metric("ecr_cleanup_watch_restarts_total", **PODS)
    events = rig.metric("ecr_cleanup_watch_events_total", **PODS) or 0
    malformed = rig.metric("ecr_cleanup_watch_malformed_total", **PODS) or 0
    for line in GARBAGE:
        assert kube.inject_raw_event("pods", line) == 1
    rig.run_pod("rollback", "app", made[8])
    rig.wait_metric(
        service, "ecr_cleanup_watched_objects", lambda v: v == len(kube.list("pods")), kind="pods"
    )
    assert (rig.metric("ecr_cleanup_watch_events_total", **PODS) or 0) >= events + 7
    assert rig.metric("ecr_cleanup_watch_malformed_total", **PODS) == malformed + len(GARBAGE)
    assert rig.metric("ecr_cleanup_watch_restarts_total", **PODS) == restarts
    assert rig.metric("ecr_cleanup_view_trusted") == 1
    assert service.count("skipping a watch line that is not JSON") >= 3
    assert service.count("skipping a malformed watch event") >= 2
    assert service.count("without metadata.uid") >= 1
    rig.push("app", 5)
    rig.check_converges(service, "app")
    assert made[8] in rig.ecr.digests("app")
    rig.finish(service)


# ------------------------------------------------------------------------------- ECR


@case(
    "test_ecr_throttling_storm",
    fault="ECR throttling storm",
    injected="the ECR simulator throttles 50% of all calls (seeded), half ThrottlingException "
    "(400), half TooManyRequestsException (429), from the start",
    behaviour="reads retried by the SDK (standard mode), deletes retried by the pruner with the gate "
    "and veto checked before each attempt; fewer calls in flight; a cycle may fail and the next "
    "one goes on",
    signal='`ecr_cleanup_ecr_api_throttles_total{operation="DescribeImages"}` and '
    '`{operation="BatchDeleteImage"}` > 0; log `ECR throttles: at most N call(s) in flight`',
    recovery="both repositories reach their limit during the storm; after it, new pushes are "
    "pruned with no error",
)
def test_ecr_throttling_storm(rig: Rig) -> None:
    repos = ("app", "shop/api")
    seeded(rig, repos, images=120)
    rig.ecr.throttle_randomly(0.5, seed=12)
    service = rig.start(",".join(repos))
    # the pruner's own back-off (rand(0, 1) x 2^n s per throttled attempt) sets the pace
    service.wait_until(lambda: rig.converged(*repos), 90, "convergence in the storm")
    for operation in ("DescribeImages", "BatchDeleteImage"):
        rig.wait_metric(
            service, "ecr_cleanup_ecr_api_throttles_total", lambda v: v > 0, operation=operation
        )
    assert service.count("ECR throttles: at most") >= 1
    rig.ecr.clear_faults()
    for repo in repos:
        rig.push(repo, 5)
    rig.check_converges(service, *repos)
    rig.finish(service)


@case(
    "test_ecr_5xx_on_one_repository",
    fault="ECR 5xx on one repository",
    injected="every call naming repository `broken` answers HTTP 500 ServerException",
    behaviour="`app` is pruned in the same cycle; `broken` is retried within the 30 s call "
    "budget, then reported failed; nothing deleted from it",
    signal='`ecr_cleanup_errors_total{repository="broken",operation="DescribeImages"}` 1 '
    '(code ServerException or CallBudgetExceeded), `ecr_cleanup_cycles_total{result="failed"}`; '
    "log `repository broken failed: DescribeImages: ...`",
    recovery="the next cycle after the repository answers prunes it to its limit",
)
def test_ecr_5xx_on_one_repository(rig: Rig) -> None:
    seeded(rig, ("app", "broken"))
    rig.ecr.break_repository("broken")
    service = rig.start("app,broken")
    service.wait_until(lambda: rig.converged("app"), 30, "app pruned")
    rig.wait_metric(
        service,
        "ecr_cleanup_errors_total",
        lambda v: v >= 1,
        repository="broken",
        operation="DescribeImages",
    )
    assert (rig.metric("ecr_cleanup_cycles_total", result="failed") or 0) >= 1
    assert service.count("repository broken failed: DescribeImages:") >= 1
    assert len(rig.ecr.digests("broken")) == 40
    rig.ecr.clear_faults()
    rig.check_converges(service, "app", "broken", within=60)
    rig.finish(service)


FAILURE_CODES = ("KmsError", "ImageReferencedByManifestList", "ImageNotFound")


@case(
    "test_partial_batch_delete_failures",
    fault="partial BatchDeleteImage failures",
    injected="BatchDeleteImage reports one image each as KmsError, ImageReferencedByManifestList "
    "and ImageNotFound (the images stay) and deletes the rest of the batch",
    behaviour="the others are deleted; the two refusals are logged and counted and tried again "
    "next cycle; ImageNotFound counts as already gone",
    signal='`ecr_cleanup_image_delete_failures_total{repository="app",code="KmsError"}` and '
    '`{code="ImageReferencedByManifestList"}` rising; log `could not delete app@sha256:... '
    "KmsError` (ImageNotFound: neither metric nor log)",
    recovery="when ECR deletes them again, the next cycle brings the repository to its limit",
)
def test_partial_batch_delete_failures(rig: Rig) -> None:
    made = seeded(rig)["app"]
    victims = dict(zip(FAILURE_CODES, (made[39], made[38], made[36]), strict=True))
    for code, digest in victims.items():
        rig.ecr.fail_images("app", [digest], code)
    service = rig.start("app")
    for code in FAILURE_CODES[:2]:
        rig.wait_metric(
            service,
            "ecr_cleanup_image_delete_failures_total",
            lambda v: v >= 2,  # one per cycle: tried again
            repository="app",
            code=code,
        )
    assert rig.metric("ecr_cleanup_image_delete_failures_total", code="ImageNotFound") is None
    assert set(victims.values()) <= rig.ecr.digests("app")
    assert len(rig.ecr.digests("app")) == LIMIT + 3
    assert service.count(f"could not delete app@{victims['KmsError']}: KmsError") >= 1
    rig.ecr.clear_faults()
    rig.check_converges(service, "app")
    rig.finish(service)


@case(
    "test_repository_deleted_mid_cycle",
    fault="a repository deleted mid-cycle",
    injected="`doomed` (250 images, deletes take 0.5 s) deleted while its first BatchDeleteImage "
    "is in flight",
    behaviour="that call fails RepositoryNotFoundException, the repository's prune ends; later "
    "cycles report it missing and prune the others",
    signal='`ecr_cleanup_errors_total{repository="doomed",code="RepositoryNotFoundException"}` 1, '
    '`ecr_cleanup_cycles_total{result="failed"}` rising; log `repositories not found: doomed`',
    recovery="the repository created again (with 30 images): pruned to its limit, cycles ok",
)
def test_repository_deleted_mid_cycle(rig: Rig) -> None:
    seeded(rig, ("app", "doomed"), images=40)
    rig.push("doomed", 210, hours_ago=48)
    rig.ecr.set_latency("BatchDeleteImage", 0.5)
    service = rig.start("app,doomed")
    first_delete(rig, service, "doomed")
    rig.ecr.delete_repository("doomed")
    rig.tags = {k: v for k, v in rig.tags.items() if k[0] != "doomed"}
    rig.wait_metric(
        service,
        "ecr_cleanup_errors_total",
        lambda v: v >= 1,
        repository="doomed",
        code="RepositoryNotFoundException",
    )
    service.wait_until(
        lambda: service.count("repositories not found: doomed") >= 2, 30, "missing reported"
    )
    failed = rig.metric("ecr_cleanup_cycles_total", result="failed") or 0
    assert failed >= 2
    service.wait_until(lambda: rig.converged("app"), 30, "app pruned")
    rig.ecr.set_latency("BatchDeleteImage", 0)
    rig.repository("doomed", 30)
    rig.check_converges(service, "app", "doomed")
    rig.finish(service)


@case(
    "test_credentials_expire_mid_cycle",
    fault="credentials expiring mid-cycle",
    injected="while the first BatchDeleteImage of 400 images is in flight, the ECR simulator "
    "answers ExpiredTokenException to the controller's access key",
    behaviour="not retried by the SDK; the repository fails, later cycles fail at "
    "DescribeRepositories; nothing is deleted while the token is refused",
    signal='`ecr_cleanup_errors_total{repository="app",code="ExpiredTokenException"}` 1, '
    '`ecr_cleanup_cycles_total{result="failed"}` rising; log `ExpiredTokenException`',
    recovery="the token accepted again (as after the provider's refresh): pruned to the limit",
)
def test_credentials_expire_mid_cycle(rig: Rig) -> None:
    seeded(rig, images=400)
    rig.ecr.set_latency("BatchDeleteImage", 0.5)
    service = rig.start("app")
    first_delete(rig, service)
    rig.ecr.expire_credentials(CREDENTIALS["AWS_ACCESS_KEY_ID"])
    rig.wait_metric(
        service,
        "ecr_cleanup_errors_total",
        lambda v: v >= 1,
        repository="app",
        code="ExpiredTokenException",
    )
    left = rig.ecr.digests("app")
    failed = rig.metric("ecr_cleanup_cycles_total", result="failed") or 0
    rig.wait_metric(service, "ecr_cleanup_cycles_total", lambda v: v >= failed + 2, result="failed")
    assert rig.ecr.digests("app") == left
    assert len(left) > LIMIT
    assert service.count("ExpiredTokenException") >= 2
    rig.ecr.set_latency("BatchDeleteImage", 0)
    rig.ecr.clear_faults()
    rig.check_converges(service, "app")
    rig.finish(service)


# ------------------------------------------------------------------------------- the process


@case(
    "test_sigterm_during_a_delete_batch",
    fault="SIGTERM during a delete batch",
    injected="SIGTERM while the first BatchDeleteImage (1.5 s) of 400 images is in flight",
    behaviour="the call in flight finishes, no other starts, the partial report is printed, the "
    "Lease released; exit 0",
    signal="no series (the process exits): stdout `STOPPED: shutting down`, log "
    "`received SIGTERM` and `cycle stopped by shutdown`",
    recovery="a new process (the Deployment's restart) prunes the rest to the limit",
)
def test_sigterm_during_a_delete_batch(rig: Rig) -> None:
    seeded(rig, images=400)
    rig.ecr.set_latency("BatchDeleteImage", 1.5)
    service = rig.start("app")
    first_delete(rig, service)
    time.sleep(0.2)
    started = time.monotonic()
    assert service.terminate() == 0
    assert time.monotonic() - started < 20
    assert len(rig.deletes()) == 1
    assert len(rig.ecr.digests("app")) == 300
    assert service.count("received SIGTERM") == 1
    assert service.count("cycle stopped by shutdown") == 1
    assert any(line.startswith("STOPPED: shutting down") for line in service.stdout)
    assert not any("Traceback" in line for line in service.stderr)
    rig.ecr.set_latency("BatchDeleteImage", 0)
    again = rig.start("app")
    rig.check_converges(again, "app")
    rig.finish(again)


@case(
    "test_lease_taken_by_another_holder_mid_cycle",
    fault="the Lease taken by another holder mid-cycle",
    injected="while the first of 6 delete calls (0.5 s each) is in flight, the Lease is "
    "rewritten to holder `intruder` (3 s), who never renews",
    behaviour="the next renewal finds it: the replica stops leading and sends no further delete "
    "call; it takes the Lease back once it expired",
    signal="`ecr_cleanup_leader` 0; log `stopped leading Lease default/kube-ecr-cleanup-"
    "controller: not leader: held by intruder`, `stopping deletions`",
    recovery="`became leader` again, the rest pruned to the limit",
)
def test_lease_taken_by_another_holder_mid_cycle(rig: Rig) -> None:
    seeded(rig, images=600)
    rig.ecr.set_latency("BatchDeleteImage", 0.5)
    service = rig.start("app")
    first_delete(rig, service)
    assert rig.kube is not None
    for _ in range(20):  # the leader renews every 0.4 s: retry a write race
        lease = rig.kube.get("leases", *LEASE)
        assert lease is not None
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        spec = lease["spec"]
        spec.update(
            holderIdentity="intruder",
            leaseDurationSeconds=3,
            acquireTime=stamp,
            renewTime=stamp,
            leaseTransitions=spec.get("leaseTransitions", 0) + 1,
        )
        try:
            rig.kube.update("leases", lease)
            break
        except Exception:  # noqa: BLE001 - a 409 from the simulator: the leader renewed first
            continue
    service.wait_until(lambda: service.count("stopped leading Lease") >= 1, 30, "stepping down")
    rig.wait_metric(service, "ecr_cleanup_leader", lambda v: v == 0)
    service.wait_until(lambda: service.count("became leader") >= 2, 30, "the Lease taken back")
    lost, regained = (
        service.first("stopped leading Lease"),
        [at for at, line in service.timed if "became leader" in line][1],
    )
    assert "held by intruder" in next(
        line for _, line in service.timed if "stopped leading" in line
    )
    assert [d for d in rig.deletes(after=lost) if d[0] < regained] == []
    assert service.count("stopping deletions") + service.count("first cycle waits") >= 1
    rig.ecr.set_latency("BatchDeleteImage", 0)
    rig.check_converges(service, "app")
    rig.finish(service)


ROLLBACKS = ("while-a-delete-is-in-flight", "while-the-delete-is-retried")
for _rollback in ROLLBACKS:
    case(
        f"test_rollback_pod_mid_cycle[{_rollback}]",
        fault="a pod with an old image appearing mid-cycle (a rollback)"
        + (", while the delete call is retried" if "retried" in _rollback else ""),
        injected=(
            "a running pod (tag and imageID) of an image of a later batch, created while batch "
            "1 of 4 is in flight (0.5 s)"
            if "flight" in _rollback
            else "BatchDeleteImage throttled until the controller has seen a pending pod (by "
            "tag) of an image in the batch being retried"
        ),
        behaviour="the batch is checked again against the live view before each call"
        + (" and each retry" if "retried" in _rollback else "")
        + ": the image is dropped from it and kept",
        signal='`ecr_cleanup_images_vetoed_total{repository="app"}` 1'
        + (
            ', `ecr_cleanup_ecr_api_throttles_total{operation="BatchDeleteImage"}` > 0'
            if "retried" in _rollback
            else ""
        )
        + "; log `1 image(s) became in use after planning and were kept`",
        recovery="the rest deleted in the same cycle; the repository at its limit, the rollback "
        "image counted in it",
    )(lambda: None)


@pytest.mark.parametrize("when", ROLLBACKS)
def test_rollback_pod_mid_cycle(rig: Rig, when: str) -> None:
    made = seeded(rig, images=400 if "flight" in when else 150)["app"]
    if "flight" in when:
        rig.ecr.set_latency("BatchDeleteImage", 0.5)
    else:
        rig.ecr.throttle("BatchDeleteImage", times=1000)
    service = rig.start("app")
    batch = first_delete(rig, service)
    protected = rig.protected("app", time.monotonic())
    if "flight" in when:
        victim = next(d for d in reversed(made[LIMIT:]) if d not in batch | protected)
        rig.run_pod("rollback", "app", victim)
    else:
        victim = next(d for d in made if d in batch and d not in protected)
        rig.run_pod("rollback", "app", victim, by="tag")
        rig.wait_metric(service, "ecr_cleanup_watched_objects", lambda v: v == 3, kind="pods")
        rig.ecr.clear_faults()
    rig.wait_metric(service, "ecr_cleanup_images_vetoed_total", lambda v: v == 1, repository="app")
    if "retried" in when:
        assert (
            rig.metric("ecr_cleanup_ecr_api_throttles_total", operation="BatchDeleteImage") or 0
        ) >= 1
        assert service.count("checking the batch again and retrying") >= 1
    assert service.count("1 image(s) became in use after planning and were kept") == 1
    assert victim in rig.ecr.digests("app")
    rig.ecr.set_latency("BatchDeleteImage", 0)
    rig.check_converges(service, "app")
    assert victim in rig.ecr.digests("app")
    rig.finish(service)


# ------------------------------------------------------------------------------- the document

BEGIN, END = (
    "<!-- matrix:begin (generated by python -m tests.test_faults) -->",
    "<!-- matrix:end -->",
)


def render() -> str:
    rows = [
        "| # | fault | how it is injected | what the controller does | metric and log that show "
        "it | recovery | test |",
        "|---|---|---|---|---|---|---|",
    ]
    for number, (test_id, c) in enumerate(CASES.items(), 1):
        cells = (c.fault, c.injected, c.behaviour, c.signal, c.recovery, f"`{test_id}`")
        rows.append(f"| {number} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def test_the_matrix_in_the_docs_is_the_case_list() -> None:
    # every registered case is a test of this module (with its parameter), and the reverse
    tests: set[str] = set()
    for name, fn in globals().items():
        if not name.startswith("test_") or name == "test_the_matrix_in_the_docs_is_the_case_list":
            continue
        marks = [m for m in getattr(fn, "pytestmark", []) if m.name == "parametrize"]
        if marks:
            tests.update(f"{name}[{value}]" for mark in marks for value in mark.args[1])
        else:
            tests.add(name)
    assert tests == set(CASES)
    text = DOC.read_text()
    assert BEGIN in text
    assert END in text
    generated = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert generated == render(), "docs/faults.md is stale: run python -m tests.test_faults"


def main() -> None:
    """Rewrite the table in docs/faults.md from `CASES`."""
    text = DOC.read_text()
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    DOC.write_text(f"{head}{BEGIN}\n{render()}\n{END}{tail}")


if __name__ == "__main__":
    main()
