"""Image references: parses pod `image:` strings and status `imageID`s; recognises ECR hosts.

Follows the distribution/reference grammar that Docker and containerd use
(https://github.com/distribution/reference), with these normalisations:

* the registry host is lower-cased; `index.docker.io` becomes `docker.io`;
* a name without a registry host is on `docker.io`, and a single-component Docker Hub
  name gets the `library/` prefix;
* `parse_reference` adds the implicit tag `latest` when neither tag nor digest is given;
  `parse_image_id` never does.

Pure: standard library only, no I/O. Parse results are cached (references repeat a lot).
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Final, NewType

__all__ = [
    "DOCKER_HUB",
    "Digest",
    "EcrRegistry",
    "ImageRef",
    "InvalidReference",
    "all_digests",
    "format_reference",
    "is_digest",
    "parse_ecr_host",
    "parse_image_id",
    "parse_reference",
]

Digest = NewType("Digest", str)
"""A content digest: "sha256:<64 lower-case hex>" (or "sha512:<128 lower-case hex>")."""

DOCKER_HUB: Final = "docker.io"
_LEGACY_DOCKER_HUB: Final = "index.docker.io"
_OFFICIAL_PREFIX: Final = "library/"
_DEFAULT_TAG: Final = "latest"
_NAME_MAX: Final = 255
# name, ":" tag and "@" digest at their longest: anything longer is rejected before any regex runs.
_TEXT_MAX: Final = _NAME_MAX + 1 + 128 + 1 + len("sha512:") + 128
_MESSAGE_TEXT_MAX: Final = 300
_IMAGE_ID_PREFIXES: Final = ("docker-pullable://", "docker://")
_DIGEST_ALGORITHMS: Final = frozenset({"sha256", "sha512"})
_CACHE_SIZE: Final = 1024

_PATH_COMPONENT: Final = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_COMPONENT: Final = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"

_PATH_RE: Final = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*", re.ASCII)
_PATH_COMPONENT_RE: Final = re.compile(_PATH_COMPONENT, re.ASCII)
_DOMAIN_RE: Final = re.compile(
    rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[A-Fa-f0-9:]+\])(?::[0-9]+)?",
    re.ASCII,
)
_TAG_RE: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", re.ASCII)
_DIGEST: Final = r"sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128}"
_DIGEST_RE: Final = re.compile(_DIGEST, re.ASCII)
_DIGEST_LINES_RE: Final = re.compile(rf"(?:(?:{_DIGEST})\n)*", re.ASCII)
_IDENTIFIER_RE: Final = re.compile(r"[0-9a-f]{64}", re.ASCII)

# Amazon ECR private registry hosts: "<12-digit account>.<endpoint label>.<region>.<DNS suffix>",
# optionally with ":443". IPv4-only endpoints ("dkr.ecr", "dkr.ecr-fips") use the partition's
# DNS suffix; dual-stack endpoints ("dkr-ecr", "dkr-ecr-fips") use ECR's "on.*" suffixes.
_ECR_REGION: Final = r"[a-z]{2,}(?:-[a-z]+)+-[0-9]+"
_ECR_IPV4_SUFFIXES: Final = (
    "amazonaws.com",  # aws, aws-us-gov
    "amazonaws.com.cn",  # aws-cn
    "c2s.ic.gov",  # aws-iso
    "sc2s.sgov.gov",  # aws-iso-b
    "cloud.adc-e.uk",  # aws-iso-e
    "csp.hci.ic.gov",  # aws-iso-f
    "amazonaws.eu",  # aws-eusc (European Sovereign Cloud)
)
_ECR_DUALSTACK_SUFFIXES: Final = (
    "on.aws",  # aws, aws-us-gov
    "on.amazonwebservices.com.cn",  # aws-cn
    "on.amazonwebservices.eu",  # aws-eusc, by analogy with the China partition
)


def _alternation(suffixes: tuple[str, ...]) -> str:
    return "|".join(re.escape(suffix) for suffix in suffixes)


_ECR_HOST_RE: Final = re.compile(
    rf"(?P<account>[0-9]{{12}})\."
    rf"(?:dkr\.ecr(?:-fips)?\.(?P<region>{_ECR_REGION})\.(?:{_alternation(_ECR_IPV4_SUFFIXES)})"
    rf"|dkr-ecr(?:-fips)?\.(?P<ds_region>{_ECR_REGION})\.(?:{_alternation(_ECR_DUALSTACK_SUFFIXES)}))"
    r"(?::443)?",
    re.ASCII,
)


class InvalidReference(ValueError):
    """An image reference or image ID that does not follow the grammar; the message says why."""

    text: str
    reason: str

    def __init__(self, text: str, reason: str) -> None:
        shown = text if len(text) <= _MESSAGE_TEXT_MAX else text[:_MESSAGE_TEXT_MAX] + "…"
        super().__init__(f"invalid image reference {shown!r}: {reason}")
        self.text = text
        self.reason = reason

    def __reduce__(self) -> tuple[type["InvalidReference"], tuple[str, str]]:
        return (type(self), (self.text, self.reason))


@dataclass(frozen=True, slots=True)
class EcrRegistry:
    """An Amazon ECR private registry: the 12-digit registry (account) id and the region."""

    account: str
    region: str


@dataclass(frozen=True, slots=True)
class ImageRef:
    """A parsed, normalised image reference."""

    registry: str
    """Host, lower-cased, with ":port" if one was given; "docker.io" for Docker Hub."""
    repository: str
    """Path below the host; Docker Hub single-component names carry the "library/" prefix."""
    tag: str | None
    digest: Digest | None
    ecr: EcrRegistry | None
    """Set when `registry` is an Amazon ECR private registry host."""


def is_digest(text: str) -> bool:
    """Whether `text` is "sha256:<64 lower-case hex>" or "sha512:<128 lower-case hex>"."""
    return _DIGEST_RE.fullmatch(text) is not None


def all_digests(texts: Sequence[str]) -> bool:
    """Whether every one of `texts` is a digest: `all(map(is_digest, texts))`, over them joined
    a line each (a DescribeImages page names 1000: a call each was 5% of a cycle's CPU). A
    newline inside one of them adds a line, so the count tells.

    When every line is as long as a sha256 digest's (the lines of ECR's answers), the check is
    by column: the prefix's characters and the newline in their columns (a slice each), and
    nothing but hex digits in the others (deleting them and the newlines leaves "sh:" a line):
    a fifth of the regex's time. Any other text is the regex's."""
    count = len(texts)
    joined = "\n".join(texts) + "\n" if texts else ""
    if joined.count("\n") != count:
        return False
    width = len(_SHA256_LINE)
    if (
        len(joined) == width * count
        and joined.isascii()
        and all(joined[i::width] == c * count for i, c in enumerate(_SHA256_LINE) if c != ".")
    ):
        return joined.encode().translate(None, _HEX_AND_NEWLINE) == _SHA256_LEFT * count
    return _DIGEST_LINES_RE.fullmatch(joined) is not None


_SHA256_LINE: Final = "sha256:" + "." * 64 + "\n"
"""A line of the joined digests by column: "." stands for any lower-case hex digit."""
_HEX_AND_NEWLINE: Final = b"0123456789abcdef\n"
_SHA256_LEFT: Final = b"sh:"
"""What is left of "sha256:" once its hex digits are deleted."""


def parse_ecr_host(host: str) -> EcrRegistry | None:
    """The ECR private registry `host` names (any case, optional ":443"); None if not ECR."""
    if not host.isascii():  # str.lower() maps some non-ASCII letters (e.g. "\u212a") to ASCII
        return None
    match = _ECR_HOST_RE.fullmatch(host.lower())
    if match is None:
        return None
    region = match["region"] or match["ds_region"]
    return EcrRegistry(account=match["account"], region=region)


def parse_reference(text: str) -> ImageRef:
    """Parse a pod spec `image:` string: name, name:tag, name@digest or name:tag@digest.

    The tag defaults to "latest" when neither a tag nor a digest is given. Raises
    InvalidReference for anything malformed, including a bare image ID ("sha256:<hex>" or
    64 hex digits), which names no repository.
    """
    return _parse_reference_cached(text)


def parse_image_id(text: str) -> ImageRef | None:
    """Parse a pod status `containerStatuses[].imageID`.

    Accepts the containerd/CRI-O form "repo@sha256:<hex>" and Docker's "docker-pullable://"
    and "docker://" prefixes. Returns None for "" (container not started yet) and for a bare
    config id ("sha256:<hex>" or 64 hex digits, with or without a prefix), which names no
    repository. Never adds an implicit tag. Raises InvalidReference for anything malformed.
    """
    return _parse_image_id_cached(text)


def format_reference(ref: ImageRef) -> str:
    """The fully qualified text of `ref`: "registry/repository[:tag][@digest]".

    `parse_reference(format_reference(ref)) == ref` for every ref that `parse_reference` returns.
    """
    text = f"{ref.registry}/{ref.repository}"
    if ref.tag is not None:
        text = f"{text}:{ref.tag}"
    if ref.digest is not None:
        text = f"{text}@{ref.digest}"
    return text


@lru_cache(maxsize=_CACHE_SIZE)
def _parse_reference_cached(text: str) -> ImageRef:
    if _IDENTIFIER_RE.fullmatch(text) or _DIGEST_RE.fullmatch(text):
        raise InvalidReference(text, "a bare image ID names no repository")
    return _parse(text, text, implicit_latest=True)


@lru_cache(maxsize=_CACHE_SIZE)
def _parse_image_id_cached(text: str) -> ImageRef | None:
    if not text:
        return None
    body = text
    for prefix in _IMAGE_ID_PREFIXES:
        if text.startswith(prefix):
            body = text[len(prefix) :]
            break
    if _DIGEST_RE.fullmatch(body) or _IDENTIFIER_RE.fullmatch(body):
        return None
    if "/" not in body and "@" not in body:
        algorithm, colon, _ = body.partition(":")
        if colon and algorithm in _DIGEST_ALGORITHMS:
            raise InvalidReference(text, f"bad image id: {_digest_problem(body)}")
    return _parse(body, text, implicit_latest=False)


def _parse(body: str, text: str, *, implicit_latest: bool) -> ImageRef:
    """Parse `body` (`text` without any imageID prefix; `text` is what errors quote)."""
    if not body:
        raise InvalidReference(text, "empty")
    if len(body) > _TEXT_MAX:
        raise InvalidReference(text, f"longer than {_TEXT_MAX} characters")

    name, at, digest = body.partition("@")
    if at and _DIGEST_RE.fullmatch(digest) is None:
        raise InvalidReference(text, _digest_problem(digest))

    tag: str | None = None
    colon = name.rfind(":")
    if colon > name.rfind("/"):
        tag = name[colon + 1 :]
        name = name[:colon]
        if _TAG_RE.fullmatch(tag) is None:
            raise InvalidReference(
                text, f"tag {tag!r} must match [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}"
            )
    if not name:
        raise InvalidReference(text, "no repository name")

    first, slash, rest = name.partition("/")
    # The first component is a host if it looks like one. Docker also takes an upper-case first
    # component for a host, but that could not round-trip through a lower-cased registry.
    if slash and ("." in first or ":" in first or first.lower() == "localhost"):
        if _DOMAIN_RE.fullmatch(first) is None:
            raise InvalidReference(text, f"registry host {first!r} is not a valid host[:port]")
        registry = first.lower()
        repository = rest
    else:
        registry = DOCKER_HUB
        repository = name

    if repository != repository.lower():
        raise InvalidReference(text, f"repository {repository!r} must be lower-case")
    if _PATH_RE.fullmatch(repository) is None:
        raise InvalidReference(text, _path_problem(repository))

    if registry == _LEGACY_DOCKER_HUB:
        registry = DOCKER_HUB
    if registry == DOCKER_HUB and "/" not in repository:
        repository = _OFFICIAL_PREFIX + repository
    if len(registry) + 1 + len(repository) > _NAME_MAX:
        raise InvalidReference(text, f"name longer than {_NAME_MAX} characters")

    if tag is None and not at and implicit_latest:
        tag = _DEFAULT_TAG
    return ImageRef(
        registry=registry,
        repository=repository,
        tag=tag,
        digest=Digest(digest) if at else None,
        ecr=None if registry == DOCKER_HUB else parse_ecr_host(registry),
    )


def _digest_problem(digest: str) -> str:
    algorithm = digest.partition(":")[0]
    if algorithm not in _DIGEST_ALGORITHMS:
        return f"digest {digest!r} must start with 'sha256:' or 'sha512:'"
    if _DIGEST_RE.fullmatch(digest.lower()):
        return f"digest {digest!r} must be lower-case hex"
    width = 64 if algorithm == "sha256" else 128
    return f"digest {digest!r} must be {algorithm}: followed by {width} lower-case hex digits"


def _path_problem(repository: str) -> str:
    for component in repository.split("/"):
        if not component:
            return f"repository {repository!r} has an empty path component"
        if _PATH_COMPONENT_RE.fullmatch(component) is None:
            return (
                f"repository component {component!r} must be lower-case letters and digits "
                "joined by '.', '_', '__' or dashes"
            )
    return f"repository {repository!r} is not a valid path"  # pragma: no cover - unreachable
