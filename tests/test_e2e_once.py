"""End to end: the real CLI (`--once`, a subprocess) against the API-server simulator and moto.

Three selected repositories (plus a pull-through cache one) are pruned; they must end exactly
as the policy says for the cluster the scenario built, every image in use must survive, and
the repository that was not selected must be untouched. One run passes the Go controller's
single-dash flags unchanged.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from controller.ecr import open_ecr, with_children_of
from controller.policy import Rules, plan
from controller.settings import compile_regex, parse_duration
from sandbox.moto import REGION
from sandbox.scenario import (
    KEEP_FILTERS,
    KEEP_YOUNGER_THAN,
    MAX_IMAGES,
    UNSELECTED,
    controller_args,
)
from tests.worlds import World, world

__all__ = ["world"]  # the fixture

SELECTED_REPOS = ("shop/api", "shop/web", "batch/reports", "docker-hub/library/nginx")


async def expected_survivors(world: World) -> dict[str, set[str]]:
    """What the policy keeps, given the repositories as they are now and the scenario's in-use set."""
    rules = Rules(
        max_images=MAX_IMAGES,
        keep_filters=(compile_regex(KEEP_FILTERS),),
        keep_younger_than=parse_duration(KEEP_YOUNGER_THAN),
    )
    survivors: dict[str, set[str]] = {}
    async with open_ecr(
        region=REGION, registry_id=None, concurrency=4, endpoint_url=world.endpoint
    ) as ecr:
        for repository in (await ecr.repositories(list(SELECTED_REPOS))).repositories:
            images = await with_children_of(ecr, repository, await ecr.images(repository))
            the_plan = plan(
                images,
                repository=repository.id,
                in_use=world.scenario.expected_in_use(),
                rules=rules,
                now=datetime.now(UTC),
            )
            survivors[repository.name] = {d.image.digest for d in the_plan.kept}
    return survivors


def check_safety(world: World, after: dict[str, set[str]], before: dict[str, set[str]]) -> None:
    s = world.scenario
    # every image in use (and every child of an index in use) survives, UNSELECTED is untouched:
    # the sandbox's own post-run check
    assert not s.violations(before, after)
    web = after["shop/web"]
    # the index a pod runs keeps both of its platform children
    assert {s.digests["shop/web"]["multi-3-amd64"], s.digests["shop/web"]["multi-3-arm64"]} <= web
    assert s.digests["shop/api"]["latest"] in after["shop/api"]
    assert {s.digests["shop/api"][f"release-1.{k}"] for k in range(3)} <= after["shop/api"]
    assert after[UNSELECTED] == before[UNSELECTED]


async def test_go_flags_unchanged_prune_exactly_as_the_policy_says(world: World) -> None:
    before = world.state()
    expected = await expected_survivors(world)
    result = world.run(controller_args(world.kubeconfig, go_style=True))
    assert result.returncode == 0, result.stderr[-3000:]
    after = world.state()
    for repo in SELECTED_REPOS:
        assert after[repo] == expected[repo], repo
    check_safety(world, after, before)
    # the report, and every deletion named in the log (one line per delete call)
    assert "shop/api" in result.stdout
    assert "REFUSED" not in result.stdout
    deleting = [line for line in result.stderr.splitlines() if " deleting " in line]
    assert sum(line.count("shop/api@sha256:") for line in deleting) == len(
        before["shop/api"]
    ) - len(after["shop/api"])
    # the simulator really served paged LISTs with continue tokens
    lists = [r for r in world.kube.requests if r.method == "GET" and "continue" in r.query]
    assert lists


async def test_dry_run_reports_the_plan_then_the_real_run_deletes_exactly_it(world: World) -> None:
    before = world.state()
    dry = world.run([*controller_args(world.kubeconfig, go_style=False), "--output", "json"])
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert world.state() == before  # dry-run is the default: nothing deleted
    assert "DRY-RUN" in dry.stderr.upper()
    report = json.loads(dry.stdout)
    assert report["dry_run"] is True
    would = {r["name"]: {d["digest"] for d in r["deleted"]} for r in report["repositories"]}

    real = world.run(
        [*controller_args(world.kubeconfig, go_style=False), "--dry-run=false", "--output", "json"]
    )
    assert real.returncode == 0, real.stderr[-3000:]
    after = world.state()
    for repo in SELECTED_REPOS:
        assert before[repo] - after[repo] == would[repo], repo
    check_safety(world, after, before)
    real_report = json.loads(real.stdout)
    assert real_report["ok"] is True
    assert {r["name"]: r["images_after"] for r in real_report["repositories"]} == {
        repo: len(after[repo]) for repo in SELECTED_REPOS
    }


async def test_an_untrusted_view_deletes_nothing(world: World) -> None:
    before = world.state()
    world.kube.sim.deny("replicasets")
    result = world.run([*controller_args(world.kubeconfig, go_style=False), "--dry-run=false"])
    assert result.returncode == 1
    assert world.state() == before
    assert "REFUSED" in result.stdout
    assert "replicasets" in result.stdout


async def test_no_pods_in_scope_refuses_unless_allowed(world: World) -> None:
    before = world.state()
    args = [
        *controller_args(world.kubeconfig, go_style=False),
        "--dry-run=false",
        "--namespaces",
        "empty-ns",
    ]
    refused = world.run(args)
    assert refused.returncode == 1
    assert "REFUSED: no pods in namespace empty-ns of cluster e2e" in refused.stdout
    assert world.state() == before
