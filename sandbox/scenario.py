"""A realistic seeded world for the sandbox and the end-to-end tests: a registry fed by CI, a cluster using some of it.

Five ECR repositories (one multi-arch, one pull-through cache, one not selected), about
1,100 images pushed over weeks, and a cluster whose pods and workloads use images by tag,
by digest, through init and ephemeral containers, through a tag that has moved since the
pod started, through a CronJob between runs, a Deployment scaled to zero and an old
ReplicaSet kept for rollback. `expected_in_use` says, independently of the controller's own
extraction, which digests and tags the cluster holds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from controller.identifiers import RepositoryId, TagRef
from controller.images import Digest, EcrRegistry
from controller.inventory import InUseSnapshot
from sandbox.kubesim import pod, workload
from sandbox.moto import ACCOUNT, REGION, MotoEcr

HOST = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"
REGISTRY = EcrRegistry(ACCOUNT, REGION)
NOW = datetime.now(UTC).replace(microsecond=0)

SELECTED = ("shop/*", "batch/reports", "docker-hub/library/nginx")
UNSELECTED = "legacy/monolith"
MAX_IMAGES = 100
KEEP_FILTERS = "^release-"
KEEP_YOUNGER_THAN = "2d"


class Cluster(Protocol):
    def create(self, resource: str, obj: Mapping[str, Any]) -> Any: ...


@dataclass
class Scenario:
    digests: dict[str, dict[str, str]] = field(default_factory=dict)
    # repository → tag or build name → digest
    in_use_digests: set[str] = field(default_factory=set)
    in_use_tags: set[tuple[str, str]] = field(default_factory=set)
    # (repository, tag) named by a spec
    children: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # index digest → the digests of its platform manifests

    def ref(self, repo: str, tag: str) -> str:
        return f"{HOST}/{repo}:{tag}"

    def image_id(self, repo: str, name: str) -> str:
        return f"{HOST}/{repo}@{self.digests[repo][name]}"

    def expected_in_use(self) -> InUseSnapshot:
        return InUseSnapshot(
            frozenset(Digest(d) for d in self.in_use_digests),
            frozenset(TagRef(RepositoryId(REGISTRY, r), t) for r, t in self.in_use_tags),
        )

    def must_survive(self, repo: str) -> set[str]:
        """Digests of `repo` the cluster holds directly (digest or current tag)."""
        found = {d for d in self.digests[repo].values() if d in self.in_use_digests}
        return found | {
            self.digests[repo][t]
            for r, t in self.in_use_tags
            if r == repo and t in self.digests[repo]
        }

    def violations(
        self, before: Mapping[str, set[str]], after: Mapping[str, set[str]]
    ) -> list[str]:
        """What a run must never do, given every repository's digests before and after it:
        delete an image the cluster holds (by digest or by a tag that points to it), delete a
        child of an index the cluster holds, or change the repository that is not selected."""
        problems = []
        for repo in self.digests:
            held = self.must_survive(repo)
            if missing := held - after[repo]:
                problems.append(f"in-use images deleted from {repo}: {sorted(missing)}")
            children = {c for index in held & self.children.keys() for c in self.children[index]}
            if orphaned := children - after[repo]:
                problems.append(
                    f"children of an in-use index deleted from {repo}: {sorted(orphaned)}"
                )
        if after[UNSELECTED] != before[UNSELECTED]:
            problems.append(f"{UNSELECTED} was not selected ({', '.join(SELECTED)}) but changed")
        return problems


def _builds(
    ecr: MotoEcr,
    scenario: Scenario,
    repo: str,
    count: int,
    *,
    every: timedelta,
    extra_tags: Mapping[int, tuple[str, ...]] = {},
) -> None:
    ecr.create(repo)
    names = scenario.digests.setdefault(repo, {})
    for n in range(1, count + 1):
        tags = (f"build-{n}", *extra_tags.get(n, ()))
        digest = ecr.push(repo, f"{repo}-{n}", *tags, pushed_at=NOW - (count - n) * every)
        for tag in tags:
            names[tag] = digest


def seed(
    ecr: MotoEcr, cluster: Cluster, *, progress: Callable[[str], None] = lambda _m: None
) -> Scenario:
    s = Scenario()
    api, web, reports, nginx = "shop/api", "shop/web", "batch/reports", "docker-hub/library/nginx"

    progress("pushing shop/api: 400 CI builds, every 2 hours")
    _builds(
        ecr,
        s,
        api,
        400,
        every=timedelta(hours=2),
        extra_tags={
            400: ("latest",),
            100: ("release-1.0",),
            200: ("release-1.1",),
            300: ("release-1.2",),
            60: ("migrate-12",),
            390: ("stable",),  # moved here from build-250 after the canary pod started
        },
    )
    progress("pushing shop/web: 200 builds and 20 multi-arch indexes")
    _builds(ecr, s, web, 200, every=timedelta(hours=3), extra_tags={45: ("debug-5",)})
    for n in range(1, 21):
        pushed = NOW - timedelta(hours=3 * 200 + 10 * n)
        kids = [
            ecr.push(web, f"web-multi-{n}-{arch}", pushed_at=pushed - timedelta(minutes=1))
            for arch in ("amd64", "arm64")
        ]
        index = ecr.push_index(web, kids, f"multi-{n}", pushed_at=pushed)
        s.digests[web][f"multi-{n}"] = index
        s.children[index] = tuple(kids)
        s.digests[web][f"multi-{n}-amd64"], s.digests[web][f"multi-{n}-arm64"] = kids
    progress("pushing batch/reports: 120 nightly builds")
    _builds(ecr, s, reports, 120, every=timedelta(days=1))
    progress("pulling through docker-hub/library/nginx: 40 versions")
    _builds(
        ecr,
        s,
        nginx,
        40,
        every=timedelta(days=3),
        extra_tags={n: (f"1.{n}",) for n in range(1, 41)},
    )
    progress("pushing legacy/monolith (not selected: must stay untouched): 150 builds")
    _builds(ecr, s, UNSELECTED, 150, every=timedelta(hours=6))

    progress("creating pods and workloads")
    # a Deployment's three running pods, by tag, with their resolved digests
    cluster.create(
        "deployments", workload("Deployment", "api", "shop", [s.ref(api, "build-398")], replicas=3)
    )
    for i in range(3):
        cluster.create(
            "pods",
            pod(
                f"api-{i}",
                "shop",
                {"api": s.ref(api, "build-398")},
                image_ids={"api": s.image_id(api, "build-398")},
            ),
        )
    # the previous ReplicaSet, scaled to zero and kept for `kubectl rollout undo`
    cluster.create(
        "replicasets",
        workload("ReplicaSet", "api-5d8f", "shop", [s.ref(api, "build-340")], replicas=0),
    )
    # a canary started on `stable` when it pointed at build-250; the tag has moved since
    cluster.create(
        "pods",
        pod(
            "api-canary",
            "shop",
            {"api": s.ref(api, "stable")},
            image_ids={"api": s.image_id(api, "build-250")},
        ),
    )
    # an init container running an old migration image
    cluster.create(
        "pods",
        pod(
            "api-migrate",
            "shop",
            {"api": s.ref(api, "build-398")},
            init_images={"migrate": s.ref(api, "migrate-12")},
            image_ids={
                "api": s.image_id(api, "build-398"),
                "migrate": s.image_id(api, "migrate-12"),
            },
        ),
    )
    # by digest, plus an ephemeral debug container attached with `kubectl debug`
    web_30 = f"{HOST}/{web}@{s.digests[web]['build-30']}"
    cluster.create(
        "pods",
        pod(
            "web-0",
            "shop",
            {"web": web_30},
            ephemeral_images={"debugger": s.ref(web, "debug-5")},
            image_ids={"web": web_30, "debugger": s.image_id(web, "debug-5")},
        ),
    )
    # a multi-arch image: containerd reports the index digest
    cluster.create(
        "pods",
        pod(
            "web-multi",
            "shop",
            {"web": s.ref(web, "multi-3")},
            image_ids={"web": s.image_id(web, "multi-3")},
        ),
    )
    # a nightly CronJob between runs, and a Deployment scaled to zero: no pod runs them now
    cluster.create(
        "cronjobs", workload("CronJob", "reports", "batch", [s.ref(reports, "build-15")])
    )
    cluster.create(
        "deployments",
        workload("Deployment", "reports-ui", "batch", [s.ref(reports, "build-40")], replicas=0),
    )
    # through the pull-through cache
    cluster.create(
        "pods",
        pod(
            "proxy",
            "edge",
            {"nginx": s.ref(nginx, "1.3")},
            image_ids={"nginx": s.image_id(nginx, "1.3")},
        ),
    )
    # a large worker fleet on the current build: hundreds of pods make the LIST page
    cluster.create(
        "deployments",
        workload("Deployment", "worker", "jobs", [s.ref(api, "build-398")], replicas=600),
    )
    for i in range(600):
        cluster.create(
            "pods",
            pod(
                f"worker-{i:03d}",
                "jobs",
                {"worker": s.ref(api, "build-398")},
                image_ids={"worker": s.image_id(api, "build-398")},
            ),
        )
    # a pod from Docker Hub: not an ECR image, nothing to protect in ECR
    cluster.create("pods", pod("redis", "edge", {"redis": "redis:7"}))

    s.in_use_digests = {
        s.digests[api]["build-398"],
        s.digests[api]["build-250"],
        s.digests[api]["migrate-12"],
        s.digests[web]["build-30"],
        s.digests[web]["debug-5"],
        s.digests[web]["multi-3"],
        s.digests[nginx]["1.3"],
    }
    s.in_use_tags = {
        (api, "build-398"),
        (api, "build-340"),
        (api, "stable"),
        (api, "migrate-12"),
        (web, "debug-5"),
        (web, "multi-3"),
        (reports, "build-15"),
        (reports, "build-40"),
        (nginx, "1.3"),
    }
    return s


def controller_args(kubeconfig: str, *, go_style: bool) -> list[str]:
    """The scenario's flags, either as an unchanged Go controller Deployment would pass them,
    or in this controller's long form."""
    if go_style:
        return [
            "-logtostderr",
            "-v=1",
            f"-kubeconfig={kubeconfig}",
            f"-repos={','.join(SELECTED)}",
            f"-max-images={MAX_IMAGES}",
            f"-keep-filters={KEEP_FILTERS}",
            f"-region={REGION}",
            "-interval=30",
            "-dry-run=false",
            "-keep-younger-than",
            KEEP_YOUNGER_THAN,
            "-once",
        ]
    return [
        "--kubeconfig",
        kubeconfig,
        "--repos",
        ",".join(SELECTED),
        "--max-images",
        str(MAX_IMAGES),
        "--keep-filters",
        KEEP_FILTERS,
        "--keep-younger-than",
        KEEP_YOUNGER_THAN,
        "--region",
        REGION,
        "--once",
    ]
