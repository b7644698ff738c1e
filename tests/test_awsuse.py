"""What ECS and Lambda use (controller/awsuse.py): the pure decisions (controller/awsrefs.py),
table- and property-tested, and the polls against moto's ECS, Lambda, STS and IAM over HTTP, through aioboto3.

What moto 5.2.5 does and does not model, and what this module does about it:
- ECS listings (ListClusters, ListServices, ListTasks, ListTaskDefinitions) ignore maxResults
  and nextToken, and ListTaskDefinitions ignores `sort` (oldest first): `sandbox.moto.paged`
  pages them as AWS does; `revisions_to_keep` never relies on the order.
- DescribeTasks' containers never carry `imageDigest`, and model only the task definition's
  first container: `sandbox.moto.set_image_digests` sets the digest a pull would report.
- A task's lastStatus moves to DEACTIVATING on each DescribeTasks; its desiredStatus stays
  RUNNING, which is what ListTasks filters on.
- Lambda ListFunctions and ListVersionsByFunction ignore MaxItems and Marker (`paged` again).
- Lambda GetFunction returns Code.ImageUri and Code.ResolvedImageUri; the latter carries the
  image's real digest only with MOTO_LAMBDA_STUB_ECR=false and the image pushed to moto's ECR
  in the same account and region (otherwise sha256 of the URI string). For a published version
  moto's ImageUri is wrong (a shallow copy: it shows $LATEST's current URI) while its
  ResolvedImageUri is right; the poll reads only ResolvedImageUri of versions. A digest
  ImageUri (`repo@sha256:…`) gives a malformed ResolvedImageUri in moto, so tags are used here.
- IAM is enforced only when asked (`sandbox.moto.iam_enforced`), then for ECS and STS: a denied
  ECS call is HTTP 403 with code "403" (AWS: AccessDeniedException). moto's Lambda fails its own
  signature check under enforcement, so Lambda denial is not tested against moto.
- Assumed-role credentials are mapped by moto to the role's account: calls made with them read
  and write that account's ECS and Lambda, which is how the tests see the role was used.
- moto never throttles: throttled calls are tested against the ECR simulator (`test_ecr_semantics`)
  and, for ECS, by `test_throttles_are_retried_and_counted_as_for_ecr` below.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.awsrefs import (
    parse_revision,
    revisions_to_keep,
    service_task_definitions,
    task_images,
    usage_references,
)
from controller.awsuse import (
    SESSION_NAME,
    Account,
    AwsDenied,
    AwsSourceError,
    UsageCache,
    UsageCounts,
    is_denied,
    poll_ecs,
    poll_lambda,
)
from controller.ecr import CallStats, new_session
from controller.identifiers import RepositoryId, TagRef
from controller.images import Digest, EcrRegistry
from sandbox.moto import (
    ACCOUNT,
    CREDENTIALS,
    REGION,
    MotoEcr,
    iam_enforced,
    moto_server,
    paged,
    set_image_digests,
    throttling,
)
from tests.profiles import examples

HOST = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"
REGISTRY = EcrRegistry(ACCOUNT, REGION)
APP = RepositoryId(REGISTRY, "app")
ELSEWHERE = "210987654321.dkr.ecr.eu-west-1.amazonaws.com/app:current"
OTHER_ACCOUNT = "111111111111"
D1 = "sha256:" + "1" * 64


def td(family: str, revision: int, account: str = ACCOUNT) -> str:
    return f"arn:aws:ecs:{REGION}:{account}:task-definition/{family}:{revision}"


# -- decisions -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arn", "expected"),
    [
        (td("web", 3), ("web", 3)),
        (td("team_a-api", 120), ("team_a-api", 120)),
        ("arn:aws-cn:ecs:cn-north-1:123456789012:task-definition/web:1", ("web", 1)),
        ("web:3", None),  # a family:revision, not an ARN
        (td("web", 3).replace(":3", ""), None),
        (td("web", 3).replace(":3", ":x"), None),
        (td("web", 3).replace(":3", ":²"), None),  # a digit to str.isdigit, not to int()
        ("arn:aws:ecs:us-east-1:123456789012:task-definition/:3", None),
        ("", None),
    ],
)
def test_parse_revision(arn: str, expected: tuple[str, int] | None) -> None:
    revision = parse_revision(arn)
    assert (None if revision is None else (revision.family, revision.number)) == expected


@pytest.mark.parametrize(
    ("arns", "newest", "kept"),
    [
        ([], 5, set()),
        ([td("web", n) for n in (1, 2, 3)], 5, {td("web", n) for n in (1, 2, 3)}),
        ([td("web", n) for n in (3, 1, 10, 2)], 2, {td("web", 10), td("web", 3)}),
        (
            [td("web", 1), td("web", 2), td("job", 7), td("job", 9), td("job", 8)],
            1,
            {td("web", 2), td("job", 9)},
        ),
        ([td("web", 1)], 0, set()),
    ],
)
def test_revisions_to_keep(arns: list[str], newest: int, kept: set[str]) -> None:
    assert revisions_to_keep(arns, newest=newest) == (frozenset(kept), ())


def test_a_revision_that_cannot_be_ranked_is_kept_and_reported() -> None:
    odd = "arn:aws:ecs:us-east-1:123456789012:task-definition/web"
    assert revisions_to_keep([td("web", 1), td("web", 2), odd], newest=1) == (
        frozenset({td("web", 2), odd}),
        (odd,),
    )


@settings(max_examples=examples(100))
@given(
    st.dictionaries(
        st.sampled_from(["web", "job", "api", "team-a_worker"]),
        st.sets(st.integers(1, 400), min_size=1, max_size=30),
    ),
    st.integers(0, 8),
    st.randoms(use_true_random=False),
)
def test_kept_revisions_are_each_familys_newest(
    families: dict[str, set[int]], newest: int, rng: Any
) -> None:
    arns = [td(family, n) for family, numbers in families.items() for n in numbers]
    rng.shuffle(arns)
    kept, unranked = revisions_to_keep(arns, newest=newest)
    assert unranked == ()
    assert kept <= set(arns)
    for family, numbers in families.items():
        mine = {r.number for a in kept if (r := parse_revision(a)) and r.family == family}
        assert mine == set(sorted(numbers, reverse=True)[:newest])


@pytest.mark.parametrize(
    ("service", "expected"),
    [
        ({}, set()),
        ({"taskDefinition": td("web", 3)}, {td("web", 3)}),
        (
            {
                "taskDefinition": td("web", 3),
                "deployments": [
                    {"status": "PRIMARY", "taskDefinition": td("web", 3)},
                    {"status": "ACTIVE", "taskDefinition": td("web", 2)},  # being replaced
                    {"status": "INACTIVE", "taskDefinition": td("web", 1)},  # history
                ],
            },
            {td("web", 3), td("web", 2)},
        ),
        (  # CODE_DEPLOY / EXTERNAL: the task sets say what runs
            {"taskSets": [{"taskDefinition": td("web", 5)}, {"taskDefinition": td("web", 4)}]},
            {td("web", 5), td("web", 4)},
        ),
        ({"deployments": "nope", "taskSets": [None, {"taskDefinition": 3}]}, set()),
        ({"status": "INACTIVE", "taskDefinition": td("web", 3)}, set()),  # deleted
        ({"status": "DRAINING", "taskDefinition": td("web", 3)}, {td("web", 3)}),
    ],
)
def test_service_task_definitions(service: dict[str, Any], expected: set[str]) -> None:
    assert service_task_definitions(service) == expected


def test_task_images_are_every_containers_image_and_digest() -> None:
    task = {
        "containers": [
            {"image": f"{HOST}/app:v1", "imageDigest": D1},
            {"image": "nginx:1.27"},  # not pulled yet: no digest
            "garbage",
        ]
    }
    assert task_images(task) == ([f"{HOST}/app:v1", "nginx:1.27"], [D1, None])
    assert task_images({"containers": None}) == ([], [])


@pytest.mark.parametrize(
    ("images", "digests", "tags", "found_digests", "malformed"),
    [
        ([f"{HOST}/app:v1"], [], {TagRef(APP, "v1")}, set(), ()),
        ([f"{HOST}/app"], [], {TagRef(APP, "latest")}, set(), ()),  # as a pod's `image: app`
        ([f"{HOST}/app@{D1}"], [], set(), {D1}, ()),
        ([f"{HOST}/app:v1@{D1}"], [], {TagRef(APP, "v1")}, {D1}, ()),
        (["nginx:1.27", "ghcr.io/org/app:v1"], [], set(), set(), ()),  # not ECR: no tag
        (
            [ELSEWHERE],
            [],
            {TagRef(RepositoryId(EcrRegistry("210987654321", "eu-west-1"), "app"), "current")},
            set(),
            (),
        ),
        ([None], [D1, None], set(), {D1}, ()),  # ECS imageDigest, bare; None: not pulled yet
        ([f"{HOST}/App:v1"], ["sha256:short"], set(), set(), (f"{HOST}/App:v1", "sha256:short")),
        ([7], [], set(), set(), ("7",)),
    ],
)
def test_usage_references(
    images: list[object],
    digests: list[object],
    tags: set[TagRef],
    found_digests: set[str],
    malformed: tuple[str, ...],
) -> None:
    found = usage_references(images, digests)
    assert found.references.tags == tags
    assert found.references.digests == found_digests
    assert found.malformed == malformed


_IMAGES = st.sampled_from(
    [
        f"{HOST}/app:v1",
        f"{HOST}/app:v2",
        f"{HOST}/team/api@{D1}",
        "nginx:1.27",
        ELSEWHERE,
        "not a reference",
        None,
    ]
)


@settings(max_examples=examples(100))
@given(st.lists(_IMAGES, max_size=12), st.lists(st.sampled_from([D1, "sha256:x", None])))
def test_references_are_the_union_of_each_strings(
    images: list[object], digests: list[object]
) -> None:
    together = usage_references(images, digests)
    alone = [usage_references([i]) for i in images] + [usage_references([], [d]) for d in digests]
    assert together.references.digests == frozenset().union(*(a.references.digests for a in alone))
    assert together.references.tags == frozenset().union(*(a.references.tags for a in alone))
    assert sorted(together.malformed) == sorted(m for a in alone for m in a.malformed)


@pytest.mark.parametrize(
    ("code", "status", "denied"),
    [
        ("AccessDeniedException", 400, True),  # ECS, Lambda
        ("AccessDenied", 403, True),  # STS, IAM
        ("403", 403, True),  # moto
        ("UnrecognizedClientException", 403, True),  # bad credentials: still not readable
        ("ThrottlingException", 400, False),
        ("ClientException", 400, False),
        ("ServerException", 500, False),
    ],
)
def test_is_denied(code: str, status: int, denied: bool) -> None:
    assert is_denied(code, status) is denied


# -- against moto ----------------------------------------------------------------------------


@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    # Lambda resolves an image in moto's ECR, to its real digest, as AWS does
    monkeypatch.setenv("MOTO_LAMBDA_STUB_ECR", "false")
    with moto_server() as url:
        # botocore's own setting: every client (ECS, Lambda, STS) of the controller's session
        monkeypatch.setenv("AWS_ENDPOINT_URL", url)
        yield url


def client(url: str, service: str, **credentials: Any) -> Any:
    return boto3.client(service, endpoint_url=url, region_name=REGION, **credentials)


def ecs_seed(url: str, **credentials: Any) -> Any:
    return client(url, "ecs", **credentials)


def register(ecs: Any, family: str, *images: str) -> str:
    definitions = [{"name": f"c{n}", "image": i, "memory": 128} for n, i in enumerate(images)]
    answer = ecs.register_task_definition(family=family, containerDefinitions=definitions)
    return str(answer["taskDefinition"]["taskDefinitionArn"])


def lambda_role(url: str, **credentials: Any) -> str:
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "*"}
        ],
    }
    return str(
        client(url, "iam", **credentials).create_role(
            RoleName="fn", AssumeRolePolicyDocument=json.dumps(trust)
        )["Role"]["Arn"]
    )


async def test_ecs_and_lambda_protect_exactly_what_they_use(moto: str) -> None:
    ecr = MotoEcr(moto)
    ecr.create("app")
    digest = {
        s: Digest(ecr.push("app", s, s)) for s in ("old", "prev", "current", "job", "l1", "l2")
    }
    ecs = ecs_seed(moto)
    for name in ("prod-eu", "dev"):
        ecs.create_cluster(clusterName=name)
    register(ecs, "web", f"{HOST}/app:old")  # web:1, outside a keep window of 2
    register(ecs, "web", f"{HOST}/app:prev")  # web:2, the rollback
    register(ecs, "web", f"{HOST}/app:current", "nginx:1.27", ELSEWHERE)  # web:3
    ecs.deregister_task_definition(taskDefinition=register(ecs, "web", f"{HOST}/app:gone"))
    register(ecs, "job", f"{HOST}/app:job")
    ecs.create_service(cluster="prod-eu", serviceName="web", taskDefinition="web:3", desiredCount=2)
    ecs.run_task(cluster="prod-eu", taskDefinition="job:1", launchType="FARGATE")
    ecs.run_task(cluster="dev", taskDefinition="web:1", launchType="FARGATE")  # not "prod*"
    assert set_image_digests(ACCOUNT, REGION, "prod-eu", {f"{HOST}/app:job": digest["job"]}) == 1

    lam = client(moto, "lambda")
    role = lambda_role(moto)
    lam.create_function(
        FunctionName="fn", Role=role, PackageType="Image", Code={"ImageUri": f"{HOST}/app:l1"}
    )
    assert lam.publish_version(FunctionName="fn")["Version"] == "1"
    lam.update_function_code(FunctionName="fn", ImageUri=f"{HOST}/app:l2")
    lam.create_function(
        FunctionName="zip",
        Role=role,
        Runtime="python3.12",
        Handler="index.handler",
        Code={"ZipFile": b"PK\x05\x06" + b"\x00" * 18},
    )

    session = new_session()
    stats = CallStats()
    ecs_use = await poll_ecs(session, region=REGION, clusters="prod*", revisions=2, stats=stats)
    lambda_use = await poll_lambda(session, region=REGION, stats=stats)

    assert ecs_use.references.digests == {digest["job"]}  # the running task, as pulled
    assert ecs_use.references.tags == {
        TagRef(APP, "current"),  # the service's PRIMARY deployment
        TagRef(APP, "prev"),  # the newest 2 ACTIVE of web: 3 and 2
        TagRef(APP, "job"),  # the task's definition, and job's newest
        TagRef(RepositoryId(EcrRegistry("210987654321", "eu-west-1"), "app"), "current"),
    }  # nothing of nginx (Docker Hub); app:old only in a task of "dev"; app:gone deregistered
    assert ecs_use.counts == UsageCounts(clusters=1, services=1, tasks=1, task_definitions=3)
    assert ecs_use.malformed == ()

    assert lambda_use.references.digests == {digest["l2"], digest["l1"]}  # $LATEST, version 1
    assert lambda_use.references.tags == {TagRef(APP, "l2")}  # $LATEST's ImageUri
    assert lambda_use.counts == UsageCounts(functions=1, versions=1)
    assert stats.calls["GetFunction"] == 2
    assert stats.calls["DescribeServices"] == stats.calls["DescribeTasks"] == 1


async def test_every_listing_is_paged_to_its_end(moto: str) -> None:
    ecs = ecs_seed(moto)
    for n in range(5):
        ecs.create_cluster(clusterName=f"c{n}")
    for n in range(3):
        register(ecs, f"fam{n}", *(f"{HOST}/app:f{n}",))
        register(ecs, f"fam{n}", *(f"{HOST}/app:f{n}-2",))
    for n in range(11):  # two DescribeServices calls
        ecs.create_service(
            cluster="c0", serviceName=f"s{n}", taskDefinition="fam0:1", desiredCount=1
        )
    for _ in range(5):
        ecs.run_task(cluster="c1", taskDefinition="fam1:1", launchType="FARGATE")
    ecr = MotoEcr(moto)
    ecr.create("app")
    pushed = {
        f"fn{n}-{v}": Digest(ecr.push("app", f"fn{n}-{v}", f"fn{n}-{v}"))
        for n in range(3)
        for v in range(3)
    }
    lam = client(moto, "lambda")
    role = lambda_role(moto)
    for n in range(5):
        lam.create_function(
            FunctionName=f"fn{n}",
            Role=role,
            PackageType="Image",
            Code={"ImageUri": f"{HOST}/app:fn{n % 3}-0"},
        )
    for v in (1, 2):
        lam.update_function_code(FunctionName="fn0", ImageUri=f"{HOST}/app:fn0-{v}")
        lam.publish_version(FunctionName="fn0")

    session = new_session()
    stats = CallStats()
    with paged(2):
        ecs_use = await poll_ecs(session, region=REGION, revisions=1, stats=stats)
        lambda_use = await poll_lambda(session, region=REGION, stats=stats)

    assert ecs_use.counts == UsageCounts(clusters=5, services=11, tasks=5, task_definitions=5)
    # fam0:1 and fam1:1 run; the newest of each family: fam0:2, fam1:2, fam2:2
    assert {t.tag for t in ecs_use.references.tags} == {"f0", "f1", "f0-2", "f1-2", "f2-2"}
    assert stats.calls["ListClusters"] == 3  # 2 + 2 + 1
    assert stats.calls["ListServices"] == 6 + 4  # c0: 11 services in 6 pages; c1-c4: empty pages
    assert stats.calls["DescribeServices"] == 2
    assert stats.calls["ListTasks"] == 3 + 4
    assert stats.calls["ListTaskDefinitions"] == 3  # 6 ACTIVE revisions

    assert lambda_use.counts == UsageCounts(functions=5, versions=2)
    assert stats.calls["ListFunctions"] == 3
    assert stats.calls["ListVersionsByFunction"] == 2 + 4  # fn0: $LATEST, 1, 2; others: $LATEST
    # $LATEST: fn0 at fn0-2, fn1 and fn4 at fn1-0, fn2 at fn2-0, fn3 at fn0-0; fn0's versions
    latest = {"fn0-2", "fn1-0", "fn2-0", "fn0-0"}
    assert {t.tag for t in lambda_use.references.tags} == latest
    assert lambda_use.references.digests == {pushed[t] for t in (*latest, "fn0-1")}


async def test_immutable_revisions_and_versions_are_described_once(moto: str) -> None:
    ecs = ecs_seed(moto)
    ecs.create_cluster(clusterName="prod")
    register(ecs, "web", f"{HOST}/app:v1")
    session = new_session()
    stats = CallStats()
    cache = UsageCache()
    first = await poll_ecs(session, region=REGION, stats=stats, cache=cache)
    register(ecs, "web", f"{HOST}/app:v2")
    second = await poll_ecs(session, region=REGION, stats=stats, cache=cache)
    assert {t.tag for t in first.references.tags} == {"v1"}
    assert {t.tag for t in second.references.tags} == {"v1", "v2"}
    assert stats.calls["DescribeTaskDefinition"] == 2  # web:1 once, web:2 once
    assert set(cache.images) == {td("web", 1), td("web", 2)}

    ecr = MotoEcr(moto)
    ecr.create("app")
    digest = {t: Digest(ecr.push("app", t, t)) for t in ("v1", "v2")}
    lam = client(moto, "lambda")
    lam.create_function(
        FunctionName="fn",
        Role=lambda_role(moto),
        PackageType="Image",
        Code={"ImageUri": f"{HOST}/app:v1"},
    )
    lam.publish_version(FunctionName="fn")
    lam.update_function_code(FunctionName="fn", ImageUri=f"{HOST}/app:v2")
    functions = UsageCache()
    polls = [await poll_lambda(session, region=REGION, stats=stats, cache=functions) for _ in "ab"]
    assert polls[0] == polls[1]
    assert polls[1].references.digests == {digest["v1"], digest["v2"]}
    assert stats.calls["GetFunction"] == 2 + 1  # $LATEST each poll, version 1 once


@pytest.mark.usefixtures("no_back_off")
async def test_throttles_are_retried_and_counted_as_for_ecr(
    moto: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ECS client has the reading config (`ecr.reading_config`: adaptive retries), each
    throttle counted as for ECR. The adaptive mode's client-side rate limit is what it is for;
    here it would only add waits."""
    from aiobotocore.retries.adaptive import AsyncClientRateLimiter

    async def send_now(_self: Any, **_: Any) -> None:
        return None

    monkeypatch.setattr(AsyncClientRateLimiter, "on_sending_request", send_now)
    ecs = ecs_seed(moto)
    ecs.create_cluster(clusterName="prod")
    register(ecs, "web", f"{HOST}/app:v1")
    ecs.run_task(cluster="prod", taskDefinition="web:1", launchType="FARGATE")
    stats = CallStats()
    with throttling("describe_tasks", 3) as answered:
        usage = await poll_ecs(new_session(), region=REGION, stats=stats)
    assert usage.counts.tasks == 1
    assert answered == [4]  # three throttled attempts, then the answer
    assert stats.calls["DescribeTasks"] == 1  # one call to the poll
    assert stats.throttles["DescribeTasks"] == 3

    with throttling("list_clusters", 99), pytest.raises(AwsSourceError) as failed:
        await poll_ecs(new_session(), region=REGION)
    assert (failed.value.code, failed.value.retryable) == ("ThrottlingException", True)
    assert not failed.value.denied


def _policy(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def reader_role(url: str, *, deny: str | None) -> tuple[dict[str, str], str]:
    """An IAM user allowed everything (the controller's identity) and a role it may assume
    that reads ECS, but for the action `deny`; their credentials for the CLI, the role ARN."""
    iam = client(url, "iam")
    iam.create_user(UserName="controller")
    everything = iam.create_policy(
        PolicyName="all",
        PolicyDocument=_policy({"Effect": "Allow", "Action": "*", "Resource": "*"}),
    )["Policy"]["Arn"]
    iam.attach_user_policy(UserName="controller", PolicyArn=everything)
    key = iam.create_access_key(UserName="controller")["AccessKey"]
    user = f"arn:aws:iam::{ACCOUNT}:user/controller"
    trust = {"Effect": "Allow", "Principal": {"AWS": user}, "Action": "sts:AssumeRole"}
    role = iam.create_role(RoleName="reader", AssumeRolePolicyDocument=_policy(trust))["Role"]
    set_reader_policy(url, deny=deny)
    credentials = {
        "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
    }
    return credentials, str(role["Arn"])


def set_reader_policy(url: str, *, deny: str | None) -> None:
    statements: list[dict[str, Any]] = [{"Effect": "Allow", "Action": "ecs:*", "Resource": "*"}]
    if deny is not None:
        statements.append({"Effect": "Deny", "Action": deny, "Resource": "*"})
    client(url, "iam").put_role_policy(
        RoleName="reader", PolicyName="ecs", PolicyDocument=_policy(*statements)
    )


async def test_a_denied_call_names_the_missing_action(
    moto: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """moto enforces IAM: the controller's identity (an IAM user) assumes a role whose policy
    allows every ECS action but ecs:DescribeTasks; the poll fails on that call, naming it."""
    ecs = ecs_seed(moto)
    ecs.create_cluster(clusterName="prod")
    register(ecs, "web", f"{HOST}/app:v1")
    ecs.run_task(cluster="prod", taskDefinition="web:1", launchType="FARGATE")
    credentials, role = reader_role(moto, deny="ecs:DescribeTasks")
    for key, value in credentials.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_SESSION_TOKEN")
    stats = CallStats()
    with iam_enforced(), pytest.raises(AwsDenied) as denied:
        await poll_ecs(new_session(), region=REGION, account=Account(role), stats=stats)
    assert denied.value.action == "ecs:DescribeTasks"
    assert denied.value.denied
    assert str(denied.value).startswith("ecs:DescribeTasks denied")
    assert stats.calls["AssumeRole"] == stats.calls["ListTasks"] == 1  # what was allowed, went

    stranger = {
        "Effect": "Allow",
        "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/someone-else"},
        "Action": "sts:AssumeRole",
    }
    closed = client(moto, "iam").create_role(
        RoleName="closed", AssumeRolePolicyDocument=_policy(stranger)
    )
    with iam_enforced(), pytest.raises(AwsDenied) as unassumable:  # its trust policy refuses
        await poll_ecs(new_session(), region=REGION, account=Account(closed["Role"]["Arn"]))
    assert unassumable.value.action == "sts:AssumeRole"


async def test_another_account_is_read_through_an_assumed_role(
    moto: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """moto maps assumed-role credentials to the role's account: what the poll finds there,
    the controller's own account does not have, and moto's STS recorded the session."""
    from moto.sts.models import sts_backends

    monkeypatch.setenv("MOTO_LAMBDA_STUB_ECR", "true")  # the image is in the other account

    role = f"arn:aws:iam::{OTHER_ACCOUNT}:role/ecr-cleanup-reader"
    granted = client(moto, "sts").assume_role(RoleArn=role, RoleSessionName="seeding")[
        "Credentials"
    ]
    other = {
        "aws_access_key_id": granted["AccessKeyId"],
        "aws_secret_access_key": granted["SecretAccessKey"],
        "aws_session_token": granted["SessionToken"],
    }
    ecs = ecs_seed(moto, **other)
    ecs.create_cluster(clusterName="theirs")
    register(ecs, "web", f"{HOST}/app:theirs")
    lam = client(moto, "lambda", **other)
    lam.create_function(
        FunctionName="fn",
        Role=lambda_role(moto, **other),
        PackageType="Image",
        Code={"ImageUri": f"{HOST}/app:theirs"},
    )

    session = new_session()
    account = Account(role, external_id="shared-secret")
    caplog.set_level("DEBUG", logger="controller")
    theirs = await poll_ecs(session, region=REGION, account=account)
    their_lambda = await poll_lambda(session, region=REGION, account=account)
    ours = await poll_ecs(session, region=REGION)

    assert theirs.references.tags == {TagRef(APP, "theirs")}
    assert theirs.counts.clusters == 1
    assert their_lambda.counts.functions == 1
    assert ours.counts == UsageCounts()
    sessions = [
        (r.role_arn, r.session_name, r.external_id)
        for r in sts_backends[OTHER_ACCOUNT]["aws"].assumed_roles
    ]
    assert sessions.count((role, SESSION_NAME, "shared-secret")) == 2  # one per poll
    secrets = {r.secret_access_key for r in sts_backends[OTHER_ACCOUNT]["aws"].assumed_roles}
    assert role in caplog.text  # which role was assumed is logged; its credentials never are
    assert not any(s in caplog.text for s in secrets)


async def test_a_malformed_image_is_counted_not_fatal(moto: str) -> None:
    ecs = ecs_seed(moto)
    ecs.create_cluster(clusterName="prod")
    register(ecs, "web", f"{HOST}/app:v1", f"{HOST}/App:v2", "registry.example/app:bad tag")
    usage = await poll_ecs(new_session(), region=REGION)
    assert usage.references.tags == {TagRef(APP, "v1")}
    assert usage.malformed == (f"{HOST}/App:v2", "registry.example/app:bad tag")
    assert usage.counts.task_definitions == 1


async def test_any_other_failure_names_operation_and_code(moto: str) -> None:
    """A task definition the service names but ECS cannot describe (deleted under it)."""
    ecs = ecs_seed(moto)
    ecs.create_cluster(clusterName="prod")
    register(ecs, "web", f"{HOST}/app:v1")
    ecs.create_service(cluster="prod", serviceName="web", taskDefinition="web:1", desiredCount=1)
    from moto.ecs.models import ecs_backends

    del ecs_backends[ACCOUNT][REGION].task_definitions["web"]
    with pytest.raises(AwsSourceError) as failed:
        await poll_ecs(new_session(), region=REGION)
    assert not failed.value.denied
    assert failed.value.operation == "DescribeTaskDefinition"
    assert failed.value.action == "ecs:DescribeTaskDefinition"
    assert (failed.value.code, failed.value.retryable) == ("ClientException", False)
    assert str(failed.value).startswith("DescribeTaskDefinition: ClientException: ")


def test_a_describe_failure_other_than_missing_fails_the_poll() -> None:
    """moto's DescribeServices and DescribeTasks never report a failure for something listed a
    moment before; the reading of their `failures` is tested on the answer's shape."""
    from controller.awsuse import _described

    gone = {"arn": "arn:aws:ecs:us-east-1:123456789012:task/prod/1", "reason": "MISSING"}
    task = {"taskDefinitionArn": td("web", 1)}
    assert _described({"tasks": [task], "failures": [gone]}, "tasks", "DescribeTasks") == [task]
    odd = {**gone, "reason": "TIMEOUT", "detail": "try again"}
    with pytest.raises(AwsSourceError) as failed:
        _described({"tasks": [task], "failures": [gone, odd]}, "tasks", "DescribeTasks")
    assert str(failed.value) == f"DescribeTasks: Failure: {gone['arn']}: TIMEOUT: try again"
    assert failed.value.action == "ecs:DescribeTasks"
