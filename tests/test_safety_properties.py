"""Safety properties at scale (issue 12 §1): the real pruner never deletes a protected image.

Each generated scenario is a registry (repositories of images with tags, shared digests, image
indexes over children, push and pull dates, per-repository rules), pods in several clusters
that name images by tag (including tags that have since moved to another digest), by digest
and through `imageID`, and events that arrive while the cycle runs: a rollback pod appearing,
a pod deleted, a throttled BatchDeleteImage. The real `Pruner` runs one cycle through the real
ECR gateway (aioboto3) against the ECR simulator served over HTTP; the in-use view is the real
`InUseIndex`, fed by the real pod extraction, one source per cluster.

The simulator checks every BatchDeleteImage request on arrival, before it is carried out,
against an oracle of its own (not the policy's code): an image is protected at that moment if
a pod holds its digest (spec `@digest` or status imageID, in any repository or registry), if
a pod's spec names one of its tags in this registry and the tag points to it now, if a keep
rule matches it, or if an image linked to it by index edges is protected. Properties:

* no BatchDeleteImage request ever names an image protected at the moment it arrives;
* when no pod event arrives (throttles included), the images deleted are exactly the pure
  `policy.plan`'s deletions, and no per-image failure is reported.

Profiles (tests/profiles.py): `HYPOTHESIS_PROFILE=ci` (CI) runs 300 scenarios, the default
`local` 75; `HYPOTHESIS_PROFILE=thorough` runs 10,000 (docs/safety-properties.md has the command and the
result of a run).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.ecr import AioEcr, DeleteOutcome, Listing, Repository, RetryPolicy, open_ecr
from controller.identifiers import RepositoryId, SourceKey
from controller.images import Digest, EcrRegistry
from controller.inventory import InUseIndex, extract_pod
from controller.policy import Image, Rules, plan
from controller.pruning import CycleReport, PruneOptions, Pruner
from controller.settings import RepositorySelection
from sandbox.ecrsim import EcrSimulator, ImageView
from tests.figures import FIGURES
from tests.profiles import examples

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
ACCOUNT, REGION = "123456789012", "us-east-1"
REGISTRY = EcrRegistry(ACCOUNT, REGION)
# hosts of this registry: a tag named through any of them protects
OURS = (
    f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com",
    f"{ACCOUNT}.dkr.ecr-fips.{REGION}.amazonaws.com",
    f"{ACCOUNT}.dkr-ecr.{REGION}.on.aws",
)
# hosts of other registries: the same repository and tag there protect nothing here
THEIRS = (
    f"210987654321.dkr.ecr.{REGION}.amazonaws.com",
    f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com",
    "ghcr.io/mirror",
)
CLUSTERS = ("prod", "staging", "dev")
REPOS = ("app", "team/api", "cache/docker-hub/library/nginx")
TAGS = ("latest", "v1", "v2", "v3", "release-1", "release-2", "build-7", "sha256-ab.sig")
FILTERS = (r"^release-", r"\.sig$", r"v[0-9]")
FAST_RETRY = RetryPolicy(attempts=17, base=0.001, max_backoff=0.002, jitter=lambda: 1.0)
# more attempts than throttles can use up (3 + 4 x 3): a throttled call goes through

THOROUGH = os.environ.get("HYPOTHESIS_PROFILE") == "thorough"


# ---------------------------------------------------------------------------------------------
# The generated scenario


@dataclass(frozen=True)
class ImageSpec:
    seed: str
    # the config seed: equal seeds are equal digests (a digest shared by repositories)
    tags: tuple[str, ...]
    age_hours: int
    pulled_hours_ago: int | None
    children: tuple[int, ...] = ()
    # non-empty: an index over these earlier single images of the repository (by position)


@dataclass(frozen=True)
class RepoSpec:
    name: str
    images: tuple[ImageSpec, ...]
    # in push order: a later image pushed with a tag takes it from the earlier one
    rules: Rules
    bulk: int
    # extra untagged images older than the rest: more than one delete call per wave


@dataclass(frozen=True)
class PodPick:
    cluster: str
    form: str
    # tag | moved-tag | digest | image-id | foreign-tag | in-flight (an image of the last delete
    # call: the adversary's choice, as a rollback to exactly the image being deleted)
    repo: int
    image: int
    tag: int
    host: int
    slot: str
    # containers | initContainers | ephemeralContainers


@dataclass(frozen=True)
class EventSpec:
    after: str
    # the operation whose nth answer triggers the event
    nth: int
    action: str
    # rollback | delete | throttle
    pod: PodPick | None = None
    # the rollback pod, or (by cluster and position) the pod to delete
    times: int = 1
    status: int = 400


@dataclass(frozen=True)
class Scenario:
    repos: tuple[RepoSpec, ...]
    pods: tuple[PodPick, ...]
    events: tuple[EventSpec, ...]
    concurrency: int
    throttled: int = 0
    # the first delete calls answered ThrottlingException: events land in their back-off

    @property
    def pod_events(self) -> bool:
        return any(e.action != "throttle" for e in self.events)


hours = st.integers(0, 40)


@st.composite
def image_specs(draw: st.DrawFn, repo: str) -> tuple[ImageSpec, ...]:
    specs: list[ImageSpec] = []
    seeds: set[str] = set()
    singles: list[int] = []
    for position in range(draw(st.integers(0, 14))):
        shared = draw(st.integers(0, 5))
        seed = f"shared-{shared}" if shared < 2 else f"{repo}-{position}"
        if seed in seeds:
            continue
        seeds.add(seed)
        children: tuple[int, ...] = ()
        if len(singles) >= 1 and draw(st.integers(0, 3)) == 0:
            children = tuple(
                draw(st.lists(st.sampled_from(singles), min_size=1, max_size=3, unique=True))
            )
            seed = f"{repo}-index-{children}"  # an index's digest is that of its child list
            if seed in seeds:
                continue
            seeds.add(seed)
        tags = tuple(draw(st.lists(st.sampled_from(TAGS), max_size=2, unique=True)))
        pulled = draw(st.none() | hours)
        specs.append(ImageSpec(seed, tags, draw(hours), pulled, children))
        if not children:
            singles.append(len(specs) - 1)
    return tuple(specs)


def window() -> st.SearchStrategy[timedelta | None]:
    return st.none() | st.integers(1, 30).map(lambda h: timedelta(hours=h))


rules_strategy = st.builds(
    Rules,
    max_images=st.integers(0, 12),
    keep_tags=st.frozensets(st.sampled_from(TAGS), max_size=2),
    keep_filters=st.lists(st.sampled_from(FILTERS), max_size=2, unique=True).map(
        lambda fs: tuple(re.compile(f) for f in fs)
    ),
    keep_younger_than=window(),
    keep_pulled_within=window(),
    max_deletions_per_cycle=st.none() | st.integers(1, 12),
)

pod_picks = st.builds(
    PodPick,
    cluster=st.sampled_from(CLUSTERS),
    form=st.sampled_from(("tag", "moved-tag", "digest", "image-id", "foreign-tag", "in-flight")),
    repo=st.integers(0, 5),
    image=st.integers(0, 200),
    tag=st.integers(0, len(TAGS) - 1),
    host=st.integers(0, 5),
    slot=st.sampled_from(("containers", "initContainers", "ephemeralContainers")),
)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    names = draw(st.lists(st.sampled_from(REPOS), min_size=1, max_size=3, unique=True))
    repos = tuple(
        RepoSpec(
            name,
            draw(image_specs(name)),
            draw(rules_strategy),
            draw(st.integers(0, 9).map(lambda n: 130 if n == 9 else 0)),
        )
        for name in names
    )
    pods = tuple(draw(st.lists(pod_picks, max_size=8)))
    events = tuple(
        draw(
            st.lists(
                st.builds(
                    EventSpec,
                    # most often after a delete call: between the plan and the next call, or
                    # during the back-off of a throttled one
                    after=st.sampled_from(
                        ("BatchDeleteImage", "DescribeImages", "BatchGetImage", "BatchDeleteImage")
                    ),
                    nth=st.integers(1, 3),
                    action=st.sampled_from(("rollback", "delete", "throttle")),
                    pod=pod_picks,
                    times=st.integers(1, 3),
                    status=st.sampled_from((400, 429)),
                ),
                max_size=4,
            )
        )
    )
    throttled = draw(st.integers(0, 5).map(lambda n: max(0, n - 2)))
    return Scenario(repos, pods, events, draw(st.integers(1, 4)), throttled)


# ---------------------------------------------------------------------------------------------
# The world: the simulator with its oracle, and the pods


@dataclass(frozen=True)
class PodTruth:
    """What a pod protects, in the oracle's own terms (no parsing by the controller's code)."""

    digests: frozenset[str]
    tags: frozenset[tuple[str, str]]
    # (repository, tag) named in this registry


@dataclass
class World:
    sim: ObservedEcr
    index: InUseIndex
    rules: dict[str, Rules]
    history: dict[str, dict[str, list[str]]]
    # per repository, per tag: the digests it was pushed with, oldest first
    pods: dict[tuple[str, str], PodTruth] = field(default_factory=dict)
    # (cluster, uid) -> what it protects
    serial: int = 0

    def add_pod(self, pick: PodPick) -> None:
        built = self.build_pod(pick)
        if built is None:
            return
        raw, truth = built
        self.serial += 1
        uid = f"uid-{self.serial}"
        raw["metadata"]["uid"] = uid
        self.pods[(pick.cluster, uid)] = truth
        self.index.upsert(SourceKey(pick.cluster, "pods"), uid, extract_pod(raw).references)

    def delete_pod(self, pick: PodPick) -> None:
        mine = sorted(k for k in self.pods if k[0] == pick.cluster)
        if mine:
            key = mine[pick.image % len(mine)]
            del self.pods[key]
            self.index.delete(SourceKey(pick.cluster, "pods"), key[1])

    def build_pod(self, pick: PodPick) -> tuple[dict[str, Any], PodTruth] | None:
        names = list(self.rules)
        repo = names[pick.repo % len(names)]
        views = self.sim.images(repo)
        if not views:
            return None
        view = views[pick.image % len(views)]
        other = names[(pick.repo + 1) % len(names)]
        ours = OURS[pick.host % len(OURS)]
        theirs = THEIRS[pick.host % len(THEIRS)]
        tag = TAGS[pick.tag % len(TAGS)]
        digests: set[str] = set()
        tags: set[tuple[str, str]] = set()
        image_id = ""
        if pick.form == "tag":  # pending, or running what the tag points to now
            spec = f"{ours}/{repo}:{tag}"
            tags.add((repo, tag))
            current = self.history[repo].get(tag)
            if current and pick.image % 2:
                image_id = f"{ours}/{repo}@{current[-1]}"
        elif pick.form == "moved-tag":  # started when the tag pointed to an older image
            moved = [t for t, ds in self.history[repo].items() if len(set(ds)) > 1]
            if moved:
                tag = moved[pick.tag % len(moved)]
            spec = f"{ours}/{repo}:{tag}"
            tags.add((repo, tag))
            pushed = self.history[repo].get(tag)
            if pushed:
                image_id = f"docker-pullable://{ours}/{repo}@{pushed[0]}"
        elif pick.form == "in-flight" and self.sim.last_batch:
            repo, batch = self.sim.last_batch
            spec = f"{ours}/{repo}@{batch[pick.image % len(batch)]}"
        elif pick.form in ("digest", "in-flight"):  # any host: a digest protects wherever named
            host = ours if pick.host % 2 else theirs
            spec = f"{host}/{repo}@{view.digest}"
        elif pick.form == "image-id":  # the runtime reports a digest under another repository
            spec = f"{theirs}/{other}:{tag}"
            image_id = f"{ours}/{other}@{view.digest}"
        else:  # foreign-tag: the same repository and tag in another registry
            spec = f"{theirs}/{repo}:{tag}"
        for text in (spec, image_id):
            if "@" in text:
                digests.add(text.rpartition("@")[2])
        statuses = {
            "containers": "containerStatuses",
            "initContainers": "initContainerStatuses",
            "ephemeralContainers": "ephemeralContainerStatuses",
        }
        raw: dict[str, Any] = {
            "metadata": {"name": f"pod-{self.serial}", "namespace": "shop"},
            "spec": {pick.slot: [{"name": "c", "image": spec}]},
            "status": {statuses[pick.slot]: [{"name": "c", "image": spec, "imageID": image_id}]},
        }
        return raw, PodTruth(frozenset(digests), frozenset(tags))

    # -- the oracle ---------------------------------------------------------------------------

    def protected_now(self, repo: str) -> set[str]:
        """The images of `repo` that must not be deleted at this moment."""
        rules = self.rules[repo]
        views = {v.digest: v for v in self.sim.images(repo)}
        held = set().union(*(p.digests for p in self.pods.values()))
        named = {tag for truth in self.pods.values() for r, tag in truth.tags if r == repo}
        direct = {d for d, v in views.items() if d in held or _kept_by_rule(v, named, rules)}
        # index edges link images: a protected member protects its whole group
        links: dict[str, set[str]] = {d: set() for d in views}
        for digest, view in views.items():
            for child in view.children:
                if child in links:
                    links[digest].add(child)
                    links[child].add(digest)
        protected, stack = set(direct), list(direct)
        while stack:
            for linked in links[stack.pop()] - protected:
                protected.add(linked)
                stack.append(linked)
        return protected


def _kept_by_rule(view: ImageView, named: set[str], rules: Rules) -> bool:
    if any(t in named or t in rules.keep_tags for t in view.tags):
        return True
    if any(p.search(t) for p in rules.keep_filters for t in view.tags):
        return True
    if rules.keep_younger_than is not None and NOW - view.pushed_at < rules.keep_younger_than:
        return True
    return (
        rules.keep_pulled_within is not None
        and view.last_pulled_at is not None
        and NOW - view.last_pulled_at < rules.keep_pulled_within
    )


@dataclass(frozen=True)
class Violation:
    repository: str
    digests: tuple[str, ...]
    call: int


class WitnessedEcr:
    """The real gateway, with a witness at its door: each delete call is checked against the
    oracle the moment the pruner makes it (before any await: nothing can come in between)."""

    def __init__(self, ecr: AioEcr, sim: ObservedEcr) -> None:
        self._ecr = ecr
        self._sim = sim

    async def repositories(self, names: Sequence[str] | None) -> Listing:
        return await self._ecr.repositories(names)

    async def images(self, repository: Repository, *, archived: bool = False) -> list[Image]:
        return await self._ecr.images(repository, archived=archived)

    async def index_children(
        self, repository: Repository, digests: Sequence[Digest]
    ) -> dict[Digest, tuple[Digest, ...]]:
        return await self._ecr.index_children(repository, digests)

    async def delete(self, repository: Repository, digests: Sequence[Digest]) -> DeleteOutcome:
        sim, world = self._sim, self._sim.world
        if world is not None:
            sim.calls_made += 1
            protected = world.protected_now(repository.name)
            hit = tuple(d for d in digests if d in protected)
            if hit:
                sim.violations.append(Violation(repository.name, hit, sim.calls_made))
        return await self._ecr.delete(repository, digests)

    async def archive(self, repository: Repository, digest: Digest) -> DeleteOutcome:
        raise AssertionError("these scenarios delete; archiving is tested in test_archive")

    async def restore(self, repository: Repository, digest: Digest) -> str:
        raise AssertionError("these scenarios delete; restoring is tested in test_archive")


class ObservedEcr(EcrSimulator):
    """The simulator: fires the scenario's events after answers, and counts the delete requests
    that arrive naming an image protected since the call was made (the network's window)."""

    world: World | None = None
    events: tuple[EventSpec, ...] = ()
    violations: list[Violation]
    calls_made: int = 0
    in_flight: int = 0
    # requests that named an image which became protected while the request was on its way
    last_batch: tuple[str, list[str]] | None = None
    # the repository and digests of the last BatchDeleteImage request

    def handle(
        self, target: str | None, body: bytes, *, caller: str = "", received_at: float | None = None
    ) -> tuple[int, bytes]:
        operation = (target or "").rpartition(".")[2]
        world = self.world
        if operation == "BatchDeleteImage" and world is not None:
            params = orjson.loads(body)
            repo = params["repositoryName"]
            self.last_batch = (repo, [i["imageDigest"] for i in params["imageIds"]])
            protected = world.protected_now(repo)
            self.in_flight += any(d in protected for d in self.last_batch[1])
        answer = super().handle(target, body, caller=caller, received_at=received_at)
        if world is not None:
            count = self.calls[operation]
            for event in self.events:
                if event.after == operation and event.nth == count:
                    self._fire(world, event)
        return answer

    def _fire(self, world: World, event: EventSpec) -> None:
        assert event.pod is not None
        if event.action == "rollback":
            world.add_pod(event.pod)
        elif event.action == "delete":
            world.delete_pod(event.pod)
        else:
            self.throttle("BatchDeleteImage", times=event.times, status=event.status)


# ---------------------------------------------------------------------------------------------
# Running one scenario


@dataclass
class Harness:
    portal: BlockingPortal
    sim: ObservedEcr
    ecr: WitnessedEcr


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    """One simulator and one aioboto3 gateway for the module, on a loop in a thread."""
    with pytest.MonkeyPatch.context() as mp, start_blocking_portal("asyncio") as portal:
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        sim = ObservedEcr(account=ACCOUNT, region=REGION)
        sim.violations = []
        with portal.wrap_async_context_manager(sim):
            sim.checkpoint()  # empty: every scenario's rollback() drops its repositories
            gateway = open_ecr(
                region=REGION, registry_id=None, concurrency=4, endpoint_url=sim.endpoint_url
            )
            with portal.wrap_async_context_manager(gateway) as ecr:
                yield Harness(portal, sim, WitnessedEcr(ecr, sim))


def seed(sim: ObservedEcr, scenario: Scenario) -> World:
    history: dict[str, dict[str, list[str]]] = {}
    for repo in scenario.repos:
        sim.create_repository(repo.name)
        tags = history[repo.name] = {}
        for n in range(repo.bulk):
            sim.add_image(
                repo.name, pushed_at=NOW - timedelta(hours=41 + n), config_seed=f"bulk-{n}"
            )
        digests: list[str] = []
        for spec in repo.images:
            pushed_at = NOW - timedelta(hours=spec.age_hours)
            if spec.children:
                digest = sim.add_index(
                    repo.name,
                    [digests[c] for c in spec.children],
                    tags=spec.tags,
                    pushed_at=pushed_at,
                )
            else:
                digest = sim.add_image(
                    repo.name, tags=spec.tags, pushed_at=pushed_at, config_seed=spec.seed
                )
            if spec.pulled_hours_ago is not None:
                sim.set_last_pulled(repo.name, digest, NOW - timedelta(hours=spec.pulled_hours_ago))
            digests.append(digest)
            for tag in spec.tags:
                tags.setdefault(tag, []).append(digest)
    index = InUseIndex()
    for cluster in CLUSTERS:
        index.replace(SourceKey(cluster, "pods"), {})
    world = World(sim, index, {r.name: r.rules for r in scenario.repos}, history)
    for pick in scenario.pods:
        world.add_pod(pick)
    return world


def pure_plans(world: World) -> dict[str, set[str]]:
    """What `policy.plan` deletes per repository, from the simulator's images and the view now."""
    planned: dict[str, set[str]] = {}
    for name, rules in world.rules.items():
        images = [
            Image(
                digest=Digest(v.digest),
                pushed_at=v.pushed_at,
                tags=v.tags,
                size_bytes=v.size,
                last_pulled_at=v.last_pulled_at,
                children=tuple(Digest(c) for c in v.children),
                media_type=v.media_type,
            )
            for v in world.sim.images(name)
        ]
        the_plan = plan(
            images,
            repository=RepositoryId(REGISTRY, name),
            in_use=world.index,
            rules=rules,
            now=NOW,
        )
        planned[name] = {d.image.digest for d in the_plan.deletions}
    return planned


def run_cycle(harness: Harness, world: World, scenario: Scenario) -> CycleReport:
    rules: Mapping[str, Rules] = world.rules
    pruner = Pruner(
        harness.ecr,
        world.index,
        PruneOptions(
            RepositorySelection(("*",)),
            rules.__getitem__,
            dry_run=False,
            concurrency=scenario.concurrency,
            delete_retry=FAST_RETRY,
        ),
    )
    gate: Callable[[], str | None] = lambda: None  # noqa: E731 - every source synced
    return harness.portal.call(lambda: pruner.run_cycle(now=NOW, gate=gate, clock=lambda: NOW))


@dataclass
class Outcome:
    report: CycleReport
    before: dict[str, set[str]]
    planned: dict[str, set[str]]
    # the pure plan's deletions, from the state and the view before the cycle
    deleted: dict[str, set[str]]
    violations: list[Violation]


def run_scenario(harness: Harness, scenario: Scenario) -> Outcome:
    sim = harness.sim
    sim.rollback()
    sim.clear_faults()
    sim.world, sim.events, sim.violations, sim.calls_made = None, (), [], 0
    sim.in_flight = 0
    sim.last_batch = None
    world = seed(sim, scenario)
    before = {name: sim.digests(name) for name in world.rules}
    planned = pure_plans(world)
    sim.reset_calls()
    if scenario.throttled:
        sim.throttle("BatchDeleteImage", times=scenario.throttled)
    sim.world, sim.events = world, scenario.events
    try:
        report = run_cycle(harness, world, scenario)
    finally:
        sim.world = None
    deleted = {name: before[name] - sim.digests(name) for name in world.rules}
    return Outcome(report, before, planned, deleted, sim.violations)


STATS = {
    "scenarios": 0,
    "with_events": 0,
    "deleted": 0,
    "vetoed": 0,
    "in_flight": 0,
    "seconds": 0.0,
}


@pytest.fixture(scope="module")
def stats() -> Iterator[dict[str, float]]:
    yield STATS
    if STATS["scenarios"]:
        FIGURES.append(
            "safety properties: {scenarios} scenarios ({with_events} with pod events), "
            "{deleted} images deleted, {vetoed} vetoed at delete time, {in_flight} delete "
            "requests overtaken in flight by a rollback, "
            "{seconds:.1f} s".format(**STATS)
        )


@pytest.mark.timeout(0 if THOROUGH else 120)
@settings(
    max_examples=settings().max_examples if THOROUGH else examples(300),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(scenario=scenarios())
def test_the_real_pruner_never_deletes_a_protected_image(
    harness: Harness, stats: dict[str, float], scenario: Scenario
) -> None:
    started = time.monotonic()
    outcome = run_scenario(harness, scenario)
    report = outcome.report
    assert outcome.violations == [], "a delete call named an image protected at that moment"
    assert report.refused is None
    assert report.stopped is None
    for repo in report.repositories:
        assert repo.failed == [], repo.failed  # waves in order: no index refused its child
        assert repo.errors == [], repo.errors  # every throttled call went through on a retry
    if not scenario.pod_events:
        assert outcome.deleted == outcome.planned, "no event: the pruner deletes the plan"
        assert all(r.vetoed == 0 for r in report.repositories)
    stats["scenarios"] += 1
    stats["with_events"] += bool(scenario.pod_events)
    stats["deleted"] += sum(len(d) for d in outcome.deleted.values())
    stats["vetoed"] += sum(r.vetoed for r in report.repositories)
    stats["in_flight"] += harness.sim.in_flight
    stats["seconds"] += time.monotonic() - started


def test_a_rollback_between_listing_and_deleting_is_vetoed(harness: Harness) -> None:
    """A fixed scenario through the same machinery, so the property is not vacuous. Twenty
    images, keep 2. The first delete call is throttled; during its back-off a pod starts that
    runs the oldest image by digest (the plan deletes it): the retry must leave it out."""
    images = tuple(ImageSpec(f"app-{n}", (f"b{n}",), 20 - n, None) for n in range(20))
    rollback = PodPick("prod", "digest", 0, 0, 0, 0, "containers")
    scenario = Scenario(
        (RepoSpec("app", images, Rules(max_images=2, keep_tags=frozenset()), 0),),
        (),
        (
            EventSpec("DescribeImages", 1, "throttle", rollback, times=2),
            EventSpec("BatchDeleteImage", 1, "rollback", rollback),
        ),
        2,
    )
    outcome = run_scenario(harness, scenario)
    (repo,) = outcome.report.repositories
    kept = outcome.before["app"] - outcome.planned["app"]
    assert len(outcome.planned["app"]) == 18
    assert repo.vetoed == 1
    assert len(outcome.deleted["app"]) == 17
    assert outcome.deleted["app"] < outcome.planned["app"]
    assert len(kept) == 2
    assert harness.sim.calls["BatchDeleteImage"] == 3  # two throttled attempts, then the call
    assert outcome.violations == []
