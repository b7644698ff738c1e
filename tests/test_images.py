"""Tests for controller.images: reference and imageID parsing, ECR host detection, round-trips."""

import pickle
from collections.abc import Callable

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from controller.images import (
    Digest,
    EcrRegistry,
    ImageRef,
    InvalidReference,
    all_digests,
    format_reference,
    is_digest,
    parse_ecr_host,
    parse_image_id,
    parse_reference,
)
from tests.profiles import examples

HEX64 = "0123456789abcdef" * 4
HEX128 = "fedcba9876543210" * 8
D = Digest(f"sha256:{HEX64}")
D512 = Digest(f"sha512:{HEX128}")
ACCOUNT = "123456789012"
USE1 = EcrRegistry(ACCOUNT, "us-east-1")
ECR = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com"


def ref(
    registry: str,
    repository: str,
    tag: str | None = None,
    digest: str | None = None,
    ecr: EcrRegistry | None = None,
) -> ImageRef:
    return ImageRef(
        registry=registry,
        repository=repository,
        tag=tag,
        digest=Digest(digest) if digest is not None else None,
        ecr=ecr,
    )


def hub(repository: str, tag: str | None = None, digest: str | None = None) -> ImageRef:
    return ref("docker.io", repository, tag, digest)


# --------------------------------------------------------------------------- ECR hosts

ECR_HOSTS: list[tuple[str, EcrRegistry]] = [
    # standard
    (f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com", USE1),
    (f"{ACCOUNT}.dkr.ecr.ap-southeast-2.amazonaws.com", EcrRegistry(ACCOUNT, "ap-southeast-2")),
    ("000000000001.dkr.ecr.eu-west-3.amazonaws.com", EcrRegistry("000000000001", "eu-west-3")),
    # FIPS
    (f"{ACCOUNT}.dkr.ecr-fips.us-east-1.amazonaws.com", USE1),
    (f"{ACCOUNT}.dkr.ecr-fips.us-gov-west-1.amazonaws.com", EcrRegistry(ACCOUNT, "us-gov-west-1")),
    # dual-stack and dual-stack FIPS
    (f"{ACCOUNT}.dkr-ecr.us-east-1.on.aws", USE1),
    (f"{ACCOUNT}.dkr-ecr-fips.us-east-1.on.aws", USE1),
    (f"{ACCOUNT}.dkr-ecr.us-gov-east-1.on.aws", EcrRegistry(ACCOUNT, "us-gov-east-1")),
    # China, China dual-stack
    (f"{ACCOUNT}.dkr.ecr.cn-north-1.amazonaws.com.cn", EcrRegistry(ACCOUNT, "cn-north-1")),
    (
        f"{ACCOUNT}.dkr-ecr.cn-northwest-1.on.amazonwebservices.com.cn",
        EcrRegistry(ACCOUNT, "cn-northwest-1"),
    ),
    # GovCloud
    (f"{ACCOUNT}.dkr.ecr.us-gov-west-1.amazonaws.com", EcrRegistry(ACCOUNT, "us-gov-west-1")),
    # other partitions
    (f"{ACCOUNT}.dkr.ecr.us-iso-east-1.c2s.ic.gov", EcrRegistry(ACCOUNT, "us-iso-east-1")),
    (f"{ACCOUNT}.dkr.ecr.us-isob-east-1.sc2s.sgov.gov", EcrRegistry(ACCOUNT, "us-isob-east-1")),
    (f"{ACCOUNT}.dkr.ecr.eu-isoe-west-1.cloud.adc-e.uk", EcrRegistry(ACCOUNT, "eu-isoe-west-1")),
    (f"{ACCOUNT}.dkr.ecr.us-isof-south-1.csp.hci.ic.gov", EcrRegistry(ACCOUNT, "us-isof-south-1")),
    (f"{ACCOUNT}.dkr.ecr.eusc-de-east-1.amazonaws.eu", EcrRegistry(ACCOUNT, "eusc-de-east-1")),
    # case and :443
    (f"{ACCOUNT}.DKR.ECR.US-EAST-1.AMAZONAWS.COM", USE1),
    (f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com:443", USE1),
    (f"{ACCOUNT}.Dkr-Ecr.Us-East-1.On.Aws:443", USE1),
]

NOT_ECR_HOSTS = [
    "public.ecr.aws",
    "ecr.aws",
    "docker.io",
    "localhost:5000",
    "12345678901.dkr.ecr.us-east-1.amazonaws.com",  # 11-digit account
    "1234567890123.dkr.ecr.us-east-1.amazonaws.com",  # 13-digit account
    "abcdefghijkl.dkr.ecr.us-east-1.amazonaws.com",
    f"{ACCOUNT}.dkr.ecr.amazonaws.com",  # no region
    "dkr.ecr.us-east-1.amazonaws.com",  # no account
    f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com.evil.com",
    f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com.",
    f"evil.{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com",
    f"x{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com",
    f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.co",
    f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws-com",
    f"{ACCOUNT}.dkrXecr.us-east-1.amazonaws.com",
    f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com:8443",
    f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com:",
    f"{ACCOUNT}.api.ecr.us-east-1.amazonaws.com",
    f"{ACCOUNT}.dkr.ecr.us-east-1.on.aws",  # IPv4 label with the dual-stack suffix
    f"{ACCOUNT}.dkr-ecr.us-east-1.amazonaws.com",  # dual-stack label with the IPv4 suffix
    f"{ACCOUNT}.dkr.ecr-fips.us-east-1.amazonaws.com.cn.example.org",
    f"{ACCOUNT}.dkr.ecr.us-east.amazonaws.com",  # region without its number
    f" {ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com",
    f"{ACCOUNT}.d\u212ar.ecr.us-east-1.amazonaws.com",  # Kelvin sign lower-cases to "k"
    "",
]


@pytest.mark.parametrize(("host", "expected"), ECR_HOSTS)
def test_parse_ecr_host(host: str, expected: EcrRegistry) -> None:
    assert parse_ecr_host(host) == expected


@pytest.mark.parametrize("host", NOT_ECR_HOSTS)
def test_parse_ecr_host_rejects(host: str) -> None:
    assert parse_ecr_host(host) is None


@pytest.mark.parametrize(("host", "expected"), ECR_HOSTS)
def test_every_ecr_host_form_in_a_reference(host: str, expected: EcrRegistry) -> None:
    parsed = parse_reference(f"{host}/team/app:v1")
    assert parsed == ref(host.lower(), "team/app", "v1", None, expected)
    by_id = parse_image_id(f"{host}/team/app@{D}")
    assert by_id == ref(host.lower(), "team/app", None, D, expected)


# --------------------------------------------------------------------------- parse_reference

VALID_REFERENCES: list[tuple[str, ImageRef]] = [
    # Docker Hub normalisation and implicit latest
    ("nginx", hub("library/nginx", "latest")),
    ("nginx:1.25", hub("library/nginx", "1.25")),
    ("nginx:1.25-alpine3.19", hub("library/nginx", "1.25-alpine3.19")),
    ("bitnami/redis:7.2", hub("bitnami/redis", "7.2")),
    ("docker.io/nginx", hub("library/nginx", "latest")),
    ("docker.io/library/nginx:stable", hub("library/nginx", "stable")),
    ("index.docker.io/nginx:1", hub("library/nginx", "1")),
    ("index.docker.io/grafana/grafana", hub("grafana/grafana", "latest")),
    ("DOCKER.IO/nginx", hub("library/nginx", "latest")),
    ("registry-1.docker.io/library/nginx", ref("registry-1.docker.io", "library/nginx", "latest")),
    ("localhost", hub("library/localhost", "latest")),  # a single name is never a host
    ("localhost:5000", hub("library/localhost", "5000")),  # ... so this is a tag
    # digests
    (f"nginx@{D}", hub("library/nginx", None, D)),
    (f"nginx:1.25@{D}", hub("library/nginx", "1.25", D)),
    (f"nginx@{D512}", hub("library/nginx", None, D512)),
    (f"docker.io/library/busybox:latest@{D}", hub("library/busybox", "latest", D)),
    # tags at the edges of the grammar
    ("alpine:_x", hub("library/alpine", "_x")),
    ("alpine:A.B-c_D", hub("library/alpine", "A.B-c_D")),
    (f"alpine:{'t' * 128}", hub("library/alpine", "t" * 128)),
    (f"alpine:{HEX64}", hub("library/alpine", HEX64)),
    # path components
    ("a/b/c/d/e", ref("docker.io", "a/b/c/d/e", "latest")),
    ("foo__bar/a.b_c---d", ref("docker.io", "foo__bar/a.b_c---d", "latest")),
    ("0/1", ref("docker.io", "0/1", "latest")),
    # other registries
    (
        "quay.io/prometheus/node-exporter:v1.8.0",
        ref("quay.io", "prometheus/node-exporter", "v1.8.0"),
    ),
    ("ghcr.io/org/app", ref("ghcr.io", "org/app", "latest")),
    ("public.ecr.aws/nginx/nginx:1.25", ref("public.ecr.aws", "nginx/nginx", "1.25")),
    ("localhost/app", ref("localhost", "app", "latest")),
    ("localhost:5000/app:dev", ref("localhost:5000", "app", "dev")),
    ("localhost:5000/team/app@" + D, ref("localhost:5000", "team/app", None, D)),
    ("10.0.0.1:5000/app:1", ref("10.0.0.1:5000", "app", "1")),
    ("192.168.1.10/a/b", ref("192.168.1.10", "a/b", "latest")),
    ("[::1]:5000/app:v2", ref("[::1]:5000", "app", "v2")),
    ("[FE80::1]/app", ref("[fe80::1]", "app", "latest")),
    ("registry:5000/app", ref("registry:5000", "app", "latest")),
    ("Registry.Example.COM/app", ref("registry.example.com", "app", "latest")),
    ("LOCALHOST/app", ref("localhost", "app", "latest")),
    ("my-registry.internal:8443/a/b:c", ref("my-registry.internal:8443", "a/b", "c")),
    # ECR
    (f"{ECR}/app", ref(ECR, "app", "latest", None, USE1)),
    (f"{ECR}/app:v1.2.3", ref(ECR, "app", "v1.2.3", None, USE1)),
    (f"{ECR}/app@{D}", ref(ECR, "app", None, D, USE1)),
    (f"{ECR}/app:v1@{D}", ref(ECR, "app", "v1", D, USE1)),
    (f"{ECR}:443/app:v1", ref(f"{ECR}:443", "app", "v1", None, USE1)),
    (f"{ECR.upper()}/app", ref(ECR, "app", "latest", None, USE1)),
    (f"{ECR}/team/service/api:1", ref(ECR, "team/service/api", "1", None, USE1)),
    # ECR pull-through cache
    (
        f"{ECR}/docker-hub/library/nginx:1.25",
        ref(ECR, "docker-hub/library/nginx", "1.25", None, USE1),
    ),
    (f"{ECR}/ecr-public/nginx/nginx", ref(ECR, "ecr-public/nginx/nginx", "latest", None, USE1)),
    (
        f"{ECR}/quay/prometheus/node-exporter@{D}",
        ref(ECR, "quay/prometheus/node-exporter", None, D, USE1),
    ),
    (
        f"{ACCOUNT}.dkr.ecr.cn-north-1.amazonaws.com.cn/k8s/pause:3.9",
        ref(
            f"{ACCOUNT}.dkr.ecr.cn-north-1.amazonaws.com.cn",
            "k8s/pause",
            "3.9",
            None,
            EcrRegistry(ACCOUNT, "cn-north-1"),
        ),
    ),
    # ECR lookalikes are ordinary registries
    (f"{ECR}.evil.com/app:v1", ref(f"{ECR}.evil.com", "app", "v1")),
    (f"{ECR}:8443/app:v1", ref(f"{ECR}:8443", "app", "v1")),
    (
        "12345678901.dkr.ecr.us-east-1.amazonaws.com/app",
        ref("12345678901.dkr.ecr.us-east-1.amazonaws.com", "app", "latest"),
    ),
]


@pytest.mark.parametrize(("text", "expected"), VALID_REFERENCES)
def test_parse_reference(text: str, expected: ImageRef) -> None:
    assert parse_reference(text) == expected


@pytest.mark.parametrize(("text", "expected"), VALID_REFERENCES)
def test_format_reference_round_trips(text: str, expected: ImageRef) -> None:
    assert parse_reference(format_reference(expected)) == expected


INVALID_REFERENCES: list[tuple[str, str]] = [
    ("", "empty"),
    (" ", "repository"),
    (" nginx", "repository"),
    ("nginx ", "repository"),
    ("nginx:1.25 ", "tag"),
    ("nginx\n", "repository"),
    ("NGINX", "lower-case"),
    ("Nginx:1", "lower-case"),
    ("docker.io/Library/nginx", "lower-case"),
    (f"{ECR}/MyApp:v1", "lower-case"),
    ("library/Nginx", "lower-case"),
    ("MyRegistry/app", "lower-case"),  # Docker would take this for a host
    ("nginx:", "tag"),
    ("nginx:-bad", "tag"),
    ("nginx:.bad", "tag"),
    (f"nginx:{'t' * 129}", "tag"),
    ("nginx:a/b", "host"),  # the colon is before the last slash: a host without a path
    ("nginx@", "digest"),
    ("nginx@sha256:", "digest"),
    (f"nginx@sha256:{HEX64.upper()}", "lower-case hex"),
    (f"nginx@sha256:{HEX64[:-1]}", "64 lower-case hex"),
    (f"nginx@sha256:{HEX64}0", "64 lower-case hex"),
    (f"nginx@sha512:{HEX64}", "128 lower-case hex"),
    (f"nginx@md5:{HEX64}", "sha256"),
    (f"nginx@{HEX64}", "sha256"),
    (f"nginx@{D}@{D}", "digest"),
    (f"@{D}", "no repository"),
    (":latest", "no repository"),
    ("/nginx", "empty path component"),
    ("foo//bar", "empty path component"),
    ("foo/bar/", "empty path component"),
    (f"{ECR}/", "empty path component"),
    ("-foo.com/app", "host"),
    ("foo..com/app", "host"),
    ("foo.com:/app", "host"),
    ("foo.com:port/app", "host"),
    ("foo.com./app", "host"),
    ("[::1/app", "host"),
    ("ex_ample.com/app", "host"),
    ("foo/-bar", "component"),
    ("foo/bar-", "component"),
    ("foo/a..b", "component"),
    ("foo/a___b", "component"),
    ("foo/a+b", "component"),
    ("fōō/bar", "component"),
    (HEX64, "bare image ID"),
    (D, "bare image ID"),
    (D512, "bare image ID"),
    ("docker-pullable://nginx@" + D, "host"),
    ("a/" * 127 + "a", "longer than 255"),
    ("x" * 10_000, "longer than"),
]


@pytest.mark.parametrize(("text", "why"), INVALID_REFERENCES)
def test_parse_reference_rejects(text: str, why: str) -> None:
    with pytest.raises(InvalidReference) as caught:
        parse_reference(text)
    message = str(caught.value)
    assert why in message
    assert caught.value.text == text
    assert repr(text[:50])[1:-1] in message or len(text) > 300


def test_invalid_reference_is_a_value_error_and_pickles() -> None:
    with pytest.raises(ValueError, match="must be lower-case"):
        parse_reference("NGINX")
    error = InvalidReference("NGINX", "why")
    clone = pickle.loads(pickle.dumps(error))
    assert (type(clone), clone.text, clone.reason, str(clone)) == (
        InvalidReference,
        "NGINX",
        "why",
        str(error),
    )


def test_long_text_is_truncated_in_the_message() -> None:
    with pytest.raises(InvalidReference) as caught:
        parse_reference("x" * 10_000)
    assert len(str(caught.value)) < 400
    assert caught.value.text == "x" * 10_000


def test_name_length_limit_counts_the_normalised_name() -> None:
    # docker.io/ + 245 = 255: the limit exactly
    assert parse_reference("a/" + "b" * 243).repository == "a/" + "b" * 243
    with pytest.raises(InvalidReference, match="longer than 255"):
        parse_reference("a/" + "b" * 244)
    # "library/" counts too
    assert parse_reference("b" * 237).repository == "library/" + "b" * 237
    with pytest.raises(InvalidReference, match="longer than 255"):
        parse_reference("b" * 238)


# --------------------------------------------------------------------------- parse_image_id

VALID_IMAGE_IDS: list[tuple[str, ImageRef | None]] = [
    # containers not started yet, bare config ids
    ("", None),
    (D, None),
    (D512, None),
    (HEX64, None),
    (f"docker://{D}", None),
    (f"docker-pullable://{D}", None),
    (f"docker://{HEX64}", None),
    # containerd / CRI-O
    (f"docker.io/library/nginx@{D}", hub("library/nginx", None, D)),
    (f"docker.io/bitnami/redis@{D}", hub("bitnami/redis", None, D)),
    (f"{ECR}/app@{D}", ref(ECR, "app", None, D, USE1)),
    (
        f"{ECR}/docker-hub/library/nginx@{D}",
        ref(ECR, "docker-hub/library/nginx", None, D, USE1),
    ),
    (
        f"quay.io/prometheus/node-exporter@{D512}",
        ref("quay.io", "prometheus/node-exporter", None, D512),
    ),
    (f"localhost:5000/app@{D}", ref("localhost:5000", "app", None, D)),
    # Docker's docker-pullable:// (familiar names are normalised)
    (f"docker-pullable://nginx@{D}", hub("library/nginx", None, D)),
    (f"docker-pullable://{ECR}/app@{D}", ref(ECR, "app", None, D, USE1)),
    (f"docker-pullable://{ECR.upper()}:443/app@{D}", ref(f"{ECR}:443", "app", None, D, USE1)),
    # with a tag: kept, and no implicit latest is ever added
    (f"{ECR}/app:v1@{D}", ref(ECR, "app", "v1", D, USE1)),
    ("docker.io/library/nginx", hub("library/nginx")),
    ("nginx:1.25", hub("library/nginx", "1.25")),
    (f"docker://{ECR}/app:v1", ref(ECR, "app", "v1", None, USE1)),
]


@pytest.mark.parametrize(("text", "expected"), VALID_IMAGE_IDS)
def test_parse_image_id(text: str, expected: ImageRef | None) -> None:
    assert parse_image_id(text) == expected


INVALID_IMAGE_IDS: list[tuple[str, str]] = [
    ("docker://", "empty"),
    ("docker-pullable://", "empty"),
    (f"sha256:{HEX64.upper()}", "lower-case hex"),
    (f"docker://sha256:{HEX64[:10]}", "64 lower-case hex"),
    ("sha512:abc", "128 lower-case hex"),
    (f"SHA256:{HEX64}", "lower-case"),
    (f"docker.io/library/nginx@sha256:{HEX64.upper()}", "lower-case hex"),
    (f"nginx@{HEX64}", "sha256"),
    (f"docker-pullable://NGINX@{D}", "lower-case"),
    (f"containerd://nginx@{D}", "host"),
    (f" {D}", "repository"),
    (f"{D} ", "64 lower-case hex"),
    (f"{ECR}/App@{D}", "lower-case"),
    (f"{ECR}/app@@{D}", "digest"),
    ("docker://docker://" + D, "host"),
]


@pytest.mark.parametrize(("text", "why"), INVALID_IMAGE_IDS)
def test_parse_image_id_rejects(text: str, why: str) -> None:
    with pytest.raises(InvalidReference, match=why):
        parse_image_id(text)


# --------------------------------------------------------------------------- is_digest, cache


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (D, True),
        (D512, True),
        (HEX64, False),
        (f"sha256:{HEX64.upper()}", False),
        (f"sha256:{HEX64[:-1]}", False),
        (f"sha512:{HEX64}", False),
        (f"sha384:{HEX64}{HEX64[:32]}", False),
        (f"{D}\n", False),
        ("", False),
    ],
)
def test_is_digest(text: str, expected: bool) -> None:
    assert is_digest(text) is expected


digest_like = st.one_of(
    st.sampled_from([D, D512, f"sha256:{HEX64[:-1]}", f"{D}\n", f"\n{D}", "", "\n"]),
    # two digests in one text, split as the joined lines are: must not pass as two
    st.just(f"{D}\n{D}"),
    st.just(f"{D}\n{D512}"),
    st.text(alphabet="sha256:0f\n", max_size=12),
    # as long as a sha256 digest, one character changed: the width `all_digests` checks by column
    st.builds(
        lambda at, c: D[:at] + c + D[at + 1 :],
        st.integers(0, len(D) - 1),
        st.sampled_from("shaSHA256:0fFg\n\u00e9\u212a"),
    ),
)


@given(st.lists(digest_like, max_size=6))
@settings(max_examples=examples(500))
@example([f"{D}\n{D}"])
@example([D, f"{D}\n{D}", D])
@example([f"{D}\n"])
@example([D, "s" + D[2:] + "0"])  # the prefix's "h" moved into the hex columns
@example([D, D[:-1] + "\u212a"])
def test_all_digests_is_is_digest_of_each(texts: list[str]) -> None:
    assert all_digests(texts) is all(is_digest(t) for t in texts)


def test_cached_results_are_equal_and_errors_repeat() -> None:
    assert parse_reference("nginx") is parse_reference("nginx")
    for _ in range(2):
        with pytest.raises(InvalidReference):
            parse_reference("NGINX")


# --------------------------------------------------------------------------- properties

_alnum = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)
_separator = st.sampled_from([".", "_", "__", "-", "--", "---"])


@st.composite
def path_components(draw: st.DrawFn) -> str:
    parts = [draw(_alnum)]
    for _ in range(draw(st.integers(0, 3))):
        parts += [draw(_separator), draw(_alnum)]
    return "".join(parts)


repositories = st.lists(path_components(), min_size=1, max_size=5).map("/".join)
tags = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True) | st.just("t" * 128)
digests = st.one_of(
    st.text(alphabet="0123456789abcdef", min_size=64, max_size=64).map(lambda h: f"sha256:{h}"),
    st.text(alphabet="0123456789abcdef", min_size=128, max_size=128).map(lambda h: f"sha512:{h}"),
).map(Digest)
regions = st.sampled_from(
    [
        "us-east-1",
        "eu-central-2",
        "ap-southeast-5",
        "cn-north-1",
        "us-gov-west-1",
        "us-iso-east-1",
        "us-isob-east-1",
        "eu-isoe-west-1",
        "us-isof-south-1",
        "eusc-de-east-1",
        "mx-central-1",
    ]
)
_ECR_FORMS = [
    "{a}.dkr.ecr.{r}.amazonaws.com",
    "{a}.dkr.ecr-fips.{r}.amazonaws.com",
    "{a}.dkr-ecr.{r}.on.aws",
    "{a}.dkr-ecr-fips.{r}.on.aws",
    "{a}.dkr.ecr.{r}.amazonaws.com.cn",
    "{a}.dkr-ecr.{r}.on.amazonwebservices.com.cn",
    "{a}.dkr.ecr.{r}.c2s.ic.gov",
    "{a}.dkr.ecr.{r}.sc2s.sgov.gov",
    "{a}.dkr.ecr.{r}.cloud.adc-e.uk",
    "{a}.dkr.ecr.{r}.csp.hci.ic.gov",
    "{a}.dkr.ecr.{r}.amazonaws.eu",
]


@st.composite
def ecr_hosts(draw: st.DrawFn) -> tuple[str, EcrRegistry]:
    account = draw(st.text(alphabet="0123456789", min_size=12, max_size=12))
    region = draw(regions)
    host = draw(st.sampled_from(_ECR_FORMS)).format(a=account, r=region)
    if draw(st.booleans()):
        host += ":443"
    return host, EcrRegistry(account, region)


_domain_label = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
other_hosts = st.one_of(
    st.lists(_domain_label, min_size=2, max_size=4).map(".".join),
    st.tuples(
        st.lists(_domain_label, min_size=1, max_size=3).map(".".join), st.integers(0, 65535)
    ).map(lambda hp: f"{hp[0]}:{hp[1]}"),
    st.just("localhost"),
    st.integers(1, 65535).map(lambda port: f"localhost:{port}"),
    st.tuples(*[st.integers(0, 255)] * 4, st.integers(1, 65535)).map(
        lambda t: f"{t[0]}.{t[1]}.{t[2]}.{t[3]}:{t[4]}"
    ),
    st.just("[::1]:5000"),
)


@st.composite
def image_refs(draw: st.DrawFn) -> ImageRef:
    """A valid, normalised ImageRef as parse_reference returns it."""
    kind = draw(st.sampled_from(["ecr", "other", "hub"]))
    repository = draw(repositories)
    ecr: EcrRegistry | None = None
    if kind == "ecr":
        registry, ecr = draw(ecr_hosts())
    elif kind == "other":
        registry = draw(other_hosts)
        assume(registry not in ("docker.io", "index.docker.io"))
    else:
        registry = "docker.io"
        if "/" not in repository:
            repository = f"library/{repository}"
    assume(len(registry) + 1 + len(repository) <= 255)
    tag = draw(st.none() | tags)
    digest = draw(st.none() | digests)
    if tag is None and digest is None:
        tag = "latest"
    return ImageRef(registry=registry, repository=repository, tag=tag, digest=digest, ecr=ecr)


@given(image_refs())
@settings(max_examples=examples(300))
def test_round_trip(image: ImageRef) -> None:
    text = format_reference(image)
    assert parse_reference(text) == image
    # imageID parsing sees the same thing (it never adds a tag, and this ref has one or a digest)
    assert parse_image_id(text) == image


@given(image_refs())
def test_imageid_of_a_digested_ref_is_the_ref(image: ImageRef) -> None:
    assume(image.digest is not None)
    assert parse_image_id(f"docker-pullable://{format_reference(image)}") == image


@given(ecr_hosts(), st.sampled_from([str.upper, str.lower, str.title]))
def test_ecr_hosts_in_any_case(pair: tuple[str, EcrRegistry], case: Callable[[str], str]) -> None:
    host, expected = pair
    assert parse_ecr_host(case(host)) == expected


@given(ecr_hosts(), st.sampled_from([".evil.com", ".", "x", ":444", "-x", "/"]))
def test_ecr_lookalike_suffixes_are_not_ecr(pair: tuple[str, EcrRegistry], suffix: str) -> None:
    host, _ = pair
    assert parse_ecr_host(host + suffix) is None


@given(ecr_hosts(), st.sampled_from(["x", "evil.", "1", "."]))
def test_ecr_lookalike_prefixes_are_not_ecr(pair: tuple[str, EcrRegistry], prefix: str) -> None:
    host, _ = pair
    assert parse_ecr_host(prefix + host) is None


_reference_alphabet = st.sampled_from(
    [*"abcxyz019AZ:/@._-[]", "sha256:", "sha512:", HEX64, "docker://", "localhost"]
)
reference_like = st.lists(_reference_alphabet, max_size=30).map("".join)


def _outcome(
    parse: Callable[[str], ImageRef | None], text: str
) -> ImageRef | InvalidReference | None:
    """What `parse` returns, or the InvalidReference it raises; anything else propagates."""
    try:
        return parse(text)
    except InvalidReference as error:
        return error


@given(st.one_of(st.text(), reference_like))
@example("")
@example(f"docker-pullable://{D}")
@example("docker://")
@example("\x00")
@example("sha256:")
@settings(max_examples=examples(500))
def test_arbitrary_text_parses_or_raises_invalid_reference(text: str) -> None:
    for parse in (parse_reference, parse_image_id):
        result = _outcome(parse, text)
        if isinstance(result, InvalidReference):
            assert result.text == text
            continue
        if result is None:
            continue
        # anything accepted is normalised and round-trips through the reference grammar
        assert result.registry == result.registry.lower()
        again = parse_image_id(format_reference(result))
        assert again == result
