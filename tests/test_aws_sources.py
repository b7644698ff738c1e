"""ECS and Lambda as sources of "in use" (issue 16): the pollers under the trust rules, and the
real CLI pruning a registry shared by a pod, an ECS service and a Lambda function.

Everything AWS is moto's server (ECR, ECS, Lambda, STS, IAM): moto models task definitions,
services, tasks, functions with image URIs and versions, and assumed roles. What it lacks is
filled in by `sandbox.moto` and said there: a running task's `imageDigest`
(`set_image_digests`), IAM enforcement (`iam_enforced`), throttling (`throttling`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller.awssources import AwsSource, source_key
from controller.ecr import CallStats, new_session
from controller.identifiers import RepositoryId, SourceKey
from controller.images import EcrRegistry
from controller.settings import AwsScope
from controller.trust import View
from sandbox.kubesim import ThreadedKubeSimulator, pod, write_kubeconfig
from sandbox.moto import (
    ACCOUNT,
    CREDENTIALS,
    REGION,
    MotoEcr,
    failing,
    iam_enforced,
    moto_server,
    set_image_digests,
)
from tests.test_awsuse import (
    HOST,
    OTHER_ACCOUNT,
    client,
    reader_role,
    register,
    set_reader_policy,
)
from tests.test_awsuse import lambda_role as function_role

APP = RepositoryId(EcrRegistry(ACCOUNT, REGION), "app")


@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    # moto runs in this process: Lambda resolves an image in moto's ECR to its real digest
    monkeypatch.setenv("MOTO_LAMBDA_STUB_ECR", "false")
    with moto_server() as url:
        monkeypatch.setenv("AWS_ENDPOINT_URL", url)
        yield url


class Registry:
    """moto's ECR with twelve images `v0`..`v11` a day apart (v11 the newest), and a cluster
    whose one pod runs v11: at -max-images=1 everything else is due for deletion."""

    def __init__(self, url: str, kube: ThreadedKubeSimulator, path: Path) -> None:
        self.url, self.kube = url, kube
        self.ecr = MotoEcr(url)
        self.ecr.create("app")
        now = datetime.now(UTC)
        self.digests = [
            self.ecr.push("app", f"s{n}", f"v{n}", pushed_at=now - timedelta(days=20 - n))
            for n in range(12)
        ]
        kube.create("pods", pod("web", "shop", {"c": f"{HOST}/app:v11"}))
        self.kubeconfig = write_kubeconfig(path / "kubeconfig", {"prod": kube}, token="t")

    def image(self, n: int) -> str:
        return f"{HOST}/app:v{n}"

    def run(
        self, *flags: str, credentials: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """The CLI against moto, with the test credentials or an IAM user's (no session token)."""
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ECR_CLEANUP_"))},
            **CREDENTIALS,
            **(credentials or {}),
            "AWS_ENDPOINT_URL": self.url,
        }
        if credentials:
            del env["AWS_SESSION_TOKEN"]
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "controller",
                "-repos=app",
                "--once",
                "-dry-run=false",
                "-max-images=1",
                "--keep-tags=",
                f"-kubeconfig={self.kubeconfig}",
                *flags,
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def left(self) -> set[int]:
        present = self.ecr.digests("app")
        return {n for n, d in enumerate(self.digests) if d in present}


@pytest.fixture
def registry(moto: str, tmp_path: Path) -> Iterator[Registry]:
    with ThreadedKubeSimulator(token="t") as kube:
        yield Registry(moto, kube, tmp_path)


def test_a_registry_shared_by_a_pod_ecs_and_lambda_keeps_all_their_images(
    registry: Registry,
) -> None:
    r = registry
    ecs = client(r.url, "ecs")
    ecs.create_cluster(clusterName="prod")
    register(ecs, "web", r.image(1))  # web:1, outside a keep window of 2
    register(ecs, "web", r.image(2))  # web:2, inside: a rollback target
    register(ecs, "web", r.image(3))  # web:3, the service's deployment
    ecs.create_service(cluster="prod", serviceName="web", taskDefinition="web:3", desiredCount=1)
    register(ecs, "job", r.image(4))
    ecs.run_task(cluster="prod", taskDefinition="job:1", launchType="FARGATE")
    # the running task reports the digest it pulled (moto never sets it): protected by digest
    assert set_image_digests(ACCOUNT, REGION, "prod", {r.image(4): r.digests[4]}) == 1
    lam = client(r.url, "lambda")
    lam.create_function(
        FunctionName="fn",
        Role=function_role(r.url),
        PackageType="Image",
        Code={"ImageUri": r.image(6)},
    )
    assert lam.publish_version(FunctionName="fn")["Version"] == "1"  # version 1: v6's digest
    lam.update_function_code(FunctionName="fn", ImageUri=r.image(7))  # $LATEST: v7

    result = r.run("--protect-ecs", "--protect-lambda", "--ecs-keep-task-definitions=2")
    assert result.returncode == 0, result.stderr[-3000:]
    # the pod's v11; web:3 and web:2 (the newest 2 of web), job:1 (its task and its newest);
    # Lambda's $LATEST v7 and version 1's v6; everything else, web:1's v1 included, is gone
    assert r.left() == {2, 3, 4, 6, 7, 11}

    ecs.delete_service(cluster="prod", service="web", force=True)
    for revision in (1, 2, 3):
        ecs.deregister_task_definition(taskDefinition=f"web:{revision}")
    again = r.run("--protect-ecs", "--protect-lambda", "--ecs-keep-task-definitions=2")
    assert again.returncode == 0, again.stderr[-3000:]
    assert r.left() == {4, 6, 7, 11}  # web's images are released once ECS no longer names them


def test_without_the_flags_ecs_and_lambda_protect_nothing(registry: Registry) -> None:
    ecs = client(registry.url, "ecs")
    ecs.create_cluster(clusterName="prod")
    register(ecs, "web", registry.image(3))
    ecs.create_service(cluster="prod", serviceName="web", taskDefinition="web:1", desiredCount=1)
    result = registry.run()
    assert result.returncode == 0, result.stderr[-3000:]
    assert registry.left() == {11}


def test_a_denied_poll_refuses_to_prune_naming_the_action_and_a_good_one_recovers(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = registry
    ecs = client(r.url, "ecs")
    ecs.create_cluster(clusterName="prod")
    register(ecs, "web", r.image(3))
    ecs.run_task(cluster="prod", taskDefinition="web:1", launchType="FARGATE")
    credentials, role = reader_role(r.url, deny="ecs:DescribeTasks")
    for key, value in credentials.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_SESSION_TOKEN")
    flags = (f"--protect-ecs=;role={role}",)
    with iam_enforced():
        denied = r.run(*flags, credentials=credentials)
    assert denied.returncode == 1
    assert "ecs:DescribeTasks denied" in denied.stderr
    assert "cycle refused" in denied.stderr
    assert r.left() == set(range(12))  # nothing deleted
    set_reader_policy(r.url, deny=None)
    with iam_enforced():
        allowed = r.run(*flags, credentials=credentials)
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    assert r.left() == {3, 11}  # the running task's v3 and the pod's v11


def test_another_account_s_ecs_protects_through_an_assumed_role(registry: Registry) -> None:
    """moto maps assumed-role credentials to the role's account: the service exists only in
    the other account, and its image (in this registry) survives only through the role."""
    from moto.sts.models import sts_backends

    r = registry
    role = f"arn:aws:iam::{OTHER_ACCOUNT}:role/ecr-cleanup-reader"
    granted = client(r.url, "sts").assume_role(RoleArn=role, RoleSessionName="seeding")[
        "Credentials"
    ]
    theirs = client(
        r.url,
        "ecs",
        aws_access_key_id=granted["AccessKeyId"],
        aws_secret_access_key=granted["SecretAccessKey"],
        aws_session_token=granted["SessionToken"],
    )
    theirs.create_cluster(clusterName="theirs")
    register(theirs, "api", r.image(5))
    theirs.create_service(
        cluster="theirs", serviceName="api", taskDefinition="api:1", desiredCount=1
    )

    result = r.run(f"--protect-ecs=us-east-1/*;role={role}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert r.left() == {5, 11}
    sessions = [r.session_name for r in sts_backends[OTHER_ACCOUNT]["aws"].assumed_roles]
    assert sessions.count("kube-ecr-cleanup-controller") == 1
    secrets = {x.secret_access_key for x in sts_backends[OTHER_ACCOUNT]["aws"].assumed_roles}
    assert not any(s in result.stderr for s in secrets)


# -- the poller under the trust rules ---------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def refusal(view: View, clock: Clock, max_staleness: float = 300) -> str | None:
    return view.refusal(clock.now, max_staleness=max_staleness, may_be_empty=lambda _s: True)


async def test_a_failing_poll_keeps_the_last_view_until_max_staleness_then_refuses(
    moto: str,
) -> None:
    ecs = client(moto, "ecs")
    ecs.create_cluster(clusterName="prod")
    register(ecs, "web", f"{HOST}/app:v1")
    ecs.create_service(cluster="prod", serviceName="web", taskDefinition="web:1", desiredCount=1)
    view, clock = View(), Clock()
    source = AwsSource(
        AwsScope("ecs"),
        region=REGION,
        session=new_session,
        view=view,
        interval=120,
        keep_revisions=5,
        stats=CallStats(),
        clock=clock,
    )
    assert source.key == SourceKey(f"aws:self:{REGION}", "ecs", "*")
    assert "initial LIST not complete" in (refusal(view, clock) or "")  # before any poll
    assert await source.poll()
    assert refusal(view, clock) is None
    assert "v1" in view.index.tags_in(APP)  # the service's image is in use

    clock.now += 120
    with failing("list_clusters", 1, "ClientException", "injected"):  # the poll fails
        assert not await source.poll()
    assert refusal(view, clock) is None  # the last view protects, within --max-staleness
    assert view.tracker.lagging() is None  # and delete calls do not wait for a poll
    assert "v1" in view.index.tags_in(APP)
    clock.now += 200  # 320 s since the last good poll
    assert "last good poll 320s ago (max 300s): " in (refusal(view, clock) or "")
    assert await source.poll()  # it recovers
    assert refusal(view, clock) is None
    clock.now += 301  # a poll late or still under way: its view is that old all the same
    assert "last good poll 301s ago (max 300s)" in (refusal(view, clock) or "")


async def test_a_denied_poll_refuses_at_once(moto: str, monkeypatch: pytest.MonkeyPatch) -> None:
    ecs = client(moto, "ecs")
    ecs.create_cluster(clusterName="prod")
    credentials, role = reader_role(moto, deny=None)
    for key, value in credentials.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_SESSION_TOKEN")
    view, clock = View(), Clock()
    source = AwsSource(
        AwsScope("ecs", role=role),
        region=REGION,
        session=new_session,
        view=view,
        interval=120,
        keep_revisions=5,
        stats=CallStats(),
        clock=clock,
    )
    set_reader_policy(moto, deny=None)  # IAM is changed with moto's own, unenforced access
    with iam_enforced():
        assert await source.poll()
    assert refusal(view, clock) is None
    set_reader_policy(moto, deny="ecs:ListClusters")
    with iam_enforced():
        assert not await source.poll()
    why = refusal(view, clock) or ""
    assert "answers 403" in why
    assert "ecs:ListClusters denied" in why
    set_reader_policy(moto, deny=None)
    with iam_enforced():
        assert await source.poll()
    assert refusal(view, clock) is None
    assert source.key == source_key(AwsScope("ecs", role=role), REGION)
    assert source.key.cluster == f"aws:{ACCOUNT}:{REGION}"
