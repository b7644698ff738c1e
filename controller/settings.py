"""The validated configuration: the Settings value, its parsers, the retention knobs, the --config schema."""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from fnmatch import fnmatchcase
from typing import Any, Generic, Literal, Protocol, TypeVar, cast

from controller.identifiers import SourceKey
from controller.kinds import KINDS, PODS
from controller.policy import Rules
from controller.resources import ResourceEntry, ResourceSpecError, resolve

DEFAULT_INTERVAL = timedelta(minutes=30)
DEFAULT_INTERVAL_JITTER = 0.1
DEFAULT_CONCURRENCY = 8
DEFAULT_MAX_STALENESS = timedelta(minutes=5)
DEFAULT_LEASE_NAME = "kube-ecr-cleanup-controller"
DEFAULT_LEASE_DURATION = timedelta(seconds=15)
DEFAULT_METRICS_ADDRESS = ":8080"
# Kinds whose pod templates protect their images even when no pod runs (scaled to zero, between
# runs of a CronJob, mid-rollout): every built-in kind but pods, from the one table of kinds.
# ControllerRevisions (StatefulSet/DaemonSet rollback history) are supported but off by default.
WORKLOAD_KINDS = tuple(name for name in KINDS if name != PODS)
DEFAULT_PROTECT_WORKLOADS = frozenset(name for name in WORKLOAD_KINDS if KINDS[name].by_default)

_GLOB_CHARS = frozenset("*?[")
_DNS_LABEL = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?", re.ASCII)
_DNS_SUBDOMAIN = re.compile(
    r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*", re.ASCII
)
_INTEGER = re.compile(r"[+-]?[0-9]+", re.ASCII)
_DURATION = re.compile(r"(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:ms|s|m|h|d|w))+", re.ASCII)
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ms|s|m|h|d|w)", re.ASCII)
_MICROSECONDS = {
    "ms": 1_000,
    "s": 1_000_000,
    "m": 60_000_000,
    "h": 3_600_000_000,
    "d": 86_400_000_000,
    "w": 604_800_000_000,
}
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


class ConfigError(ValueError):
    """Invalid configuration: `field` names the flag, env var or config path; str() is one line."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field.replace("\r", "\\r").replace("\n", "\\n")
        self.reason = " ".join(reason.split())
        super().__init__(f"{self.field}: {self.reason}")


# ---------------------------------------------------------------------------------------------
# Scalar parsers. Each takes the text as given and the field to blame in the error.


def parse_duration(text: str, *, field: str = "duration") -> timedelta:
    """A positive Go-style duration (`90s`, `5m`, `1h30m`, `1.5h`, `250ms`) plus `d` and `w`."""
    value = text.strip()
    expected = "expected a positive duration such as 90s, 5m, 1h30m, 7d or 2w"
    if not _DURATION.fullmatch(value):
        raise ConfigError(field, f"{expected}, got {text!r}")
    total = Decimal(0)
    for number, unit in _DURATION_PART.findall(value):
        total += Decimal(number) * _MICROSECONDS[unit]
    try:
        duration = timedelta(microseconds=int(total.to_integral_value()))
    except (OverflowError, InvalidOperation):
        raise ConfigError(field, f"duration {text!r} is too large") from None
    if duration <= timedelta(0):
        raise ConfigError(field, f"{expected}, got {text!r}: a zero duration is not allowed")
    return duration


def format_duration(duration: timedelta) -> str:
    """The shortest `parse_duration` spelling of `duration`, e.g. `7d`, `1h30m`, `1.5s`."""
    if duration < timedelta(0):
        return "-" + format_duration(-duration)
    micros = duration // timedelta(microseconds=1)
    days, micros = divmod(micros, _MICROSECONDS["d"])
    hours, micros = divmod(micros, _MICROSECONDS["h"])
    minutes, micros = divmod(micros, _MICROSECONDS["m"])
    seconds, micros = divmod(micros, _MICROSECONDS["s"])
    parts = [f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "m")) if n]
    if micros:
        parts.append(f"{seconds}.{micros:06d}".rstrip("0") + "s")
    elif seconds or not parts:
        parts.append(f"{seconds}s")
    return "".join(parts)


def parse_bool(text: str, *, field: str = "value") -> bool:
    """Go's strconv.ParseBool: 1, t, T, TRUE, true, True and 0, f, F, FALSE, false, False."""
    value = text.strip()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(field, f"expected a boolean (true or false), got {text!r}")


def parse_positive_int(text: str, *, field: str = "value") -> int:
    """A decimal integer greater than zero."""
    value = text.strip()
    if not _INTEGER.fullmatch(value):
        raise ConfigError(field, f"expected a positive integer, got {text!r}")
    number = int(value)
    if number <= 0:
        raise ConfigError(
            field,
            f"expected a positive integer, got {number}: a zero or negative count is not allowed",
        )
    return number


def parse_fraction(text: str, *, field: str = "value") -> float:
    """A number between 0 and 1 inclusive."""
    try:
        number = float(text.strip())
    except ValueError:
        number = float("nan")
    if not 0.0 <= number <= 1.0:  # also rejects nan
        raise ConfigError(field, f"expected a fraction between 0 and 1, got {text!r}")
    return number


def parse_list(text: str) -> tuple[str, ...]:
    """A comma-separated list as the Go controller read it: items trimmed, empty ones dropped."""
    return tuple(dict.fromkeys(item.strip() for item in text.split(",") if item.strip()))


def split_regexes(text: str) -> tuple[str, ...]:
    """A comma-separated list of regular expressions, split only at the commas between them.

    A comma inside `{}` (a repetition such as `{1,3}`), inside `[]` (a character class) or
    inside `()` belongs to its regex, and so does an escaped comma (`\\,`, which a regex reads
    as a literal comma). Items are trimmed and empty ones dropped, as `parse_list` does.
    Raises ValueError when a bracket is left open, as the split would then be a guess.
    The Go controller split at every comma: `^release-[0-9]{1,3}$` became two filters that
    both compiled and matched nothing.
    """
    items: list[str] = []
    start = 0  # where the current item begins
    depth = 0  # open ( and { outside a character class
    class_start: int | None = None  # position of the [ of the class we are in
    escaped = False
    for position, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif class_start is not None:
            # a ] right after [ or [^ is a member of the class, not its end
            first = class_start + (2 if text[class_start + 1 : class_start + 2] == "^" else 1)
            if char == "]" and position > first:
                class_start = None
        elif char == "[":
            class_start = position
        elif char in "({":
            depth += 1
        elif char in ")}" and depth:
            depth -= 1
        elif char == "," and depth == 0:
            items.append(text[start:position])
            start = position + 1
    if depth or class_start is not None:
        raise ValueError(
            "an unclosed '(', '{' or '[' makes the split at commas ambiguous: close it, or "
            "escape a literal one (\\(, \\{, \\[)"
        )
    items.append(text[start:])
    return tuple(dict.fromkeys(item.strip() for item in items if item.strip()))


def compile_regex(pattern: str, *, field: str = "regex") -> re.Pattern[str]:
    """Compile a keep filter (used with `search`, i.e. unanchored, as the Go controller did)."""
    try:
        return re.compile(pattern)
    except re.error as error:
        raise ConfigError(field, f"invalid regular expression {pattern!r}: {error}") from None


def parse_regexes(text: str, *, field: str = "regexes") -> tuple[re.Pattern[str], ...]:
    """Comma-separated keep filters (split as `split_regexes` does), each compiled."""
    try:
        patterns = split_regexes(text)
    except ValueError as error:
        raise ConfigError(field, f"{text!r}: {error}") from None
    return tuple(compile_regex(pattern, field=field) for pattern in patterns)


def parse_namespaces(text: str, *, field: str = "namespaces") -> tuple[str, ...]:
    """A comma list of Kubernetes namespace names; empty means every namespace."""
    names = parse_list(text)
    for name in names:
        check_dns_label(name, field=field)
    return names


def check_dns_label(name: str, *, field: str) -> str:
    """A namespace-style name (RFC 1123 label: lower-case alphanumerics and '-', at most 63)."""
    if not _DNS_LABEL.fullmatch(name):
        raise ConfigError(
            field,
            f"{name!r} is not a valid namespace name "
            "(lower-case letters, digits and '-', starting and ending with an alphanumeric, "
            "at most 63 characters)",
        )
    return name


def check_dns_subdomain(name: str, *, field: str) -> str:
    """An object name (RFC 1123 subdomain: dot-separated labels, at most 253 characters)."""
    if len(name) > 253 or not _DNS_SUBDOMAIN.fullmatch(name):
        raise ConfigError(
            field,
            f"{name!r} is not a valid Kubernetes object name "
            "(lower-case letters, digits, '-' and '.', at most 253 characters)",
        )
    return name


def parse_workload_kinds(text: str, *, field: str = "workloads") -> frozenset[str]:
    """Workload kinds whose pod templates protect images: a comma list, or true/all/false/none.

    `true` means the default kinds, `all` every supported kind (adds controllerrevisions),
    `false`/`none` only running pods. Kinds are case-insensitive and may be singular.
    """
    value = text.strip().lower()
    if value == "true":
        return DEFAULT_PROTECT_WORKLOADS
    if value == "all":
        return frozenset(WORKLOAD_KINDS)
    if value in ("false", "none"):
        return frozenset()
    kinds: set[str] = set()
    for item in parse_list(value):
        kind = item if item.endswith("s") else item + "s"
        if kind not in WORKLOAD_KINDS:
            allowed = ", ".join(WORKLOAD_KINDS)
            raise ConfigError(
                field,
                f"unknown workload kind {item!r}: expected a comma list of {allowed}, "
                "or one of true, all, false, none",
            )
        kinds.add(kind)
    if not kinds:
        raise ConfigError(field, "expected a comma list of workload kinds, or true/all/false/none")
    return frozenset(kinds)


def parse_address(text: str, *, field: str = "address") -> str:
    """A listen address `host:port` or `:port` (IPv6 hosts in brackets); the port is checked."""
    split_address(text, field=field)
    return text.strip()


def split_address(text: str, *, field: str = "address", ephemeral: bool = False) -> tuple[str, int]:
    """`host:port`, `[v6]:port` or `:port` into the host ("" = all interfaces, IPv6 without its
    brackets) and the port. Port 0 (any free port, told once bound) only with `ephemeral`: the
    tests' servers ask for it, a flag never does."""
    value = text.strip()
    host, colon, port = value.rpartition(":")
    expected = "expected host:port or :port"
    if not colon:
        raise ConfigError(field, f"{expected}, got {text!r}")
    lowest = 0 if ephemeral else 1
    if not (port.isascii() and port.isdigit() and lowest <= int(port) <= 65535):
        raise ConfigError(field, f"{expected} with a port from {lowest} to 65535, got {text!r}")
    bracketed = host.startswith("[") and host.endswith("]")
    if any(c.isspace() for c in host) or (":" in host and not bracketed):
        raise ConfigError(field, f"{expected} (IPv6 hosts in brackets), got {text!r}")
    return (host[1:-1] if bracketed else host), int(port)


# ---------------------------------------------------------------------------------------------
# The configuration values.


_IMAGE_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
"""The OCI distribution spec's tag grammar, which ECR enforces: a keep tag outside it can never
match an image, so it would protect nothing."""


def check_tag(tag: str, *, field: str) -> str:
    """An image tag a repository can hold; anything else (a space from a space-separated list,
    a `repo:tag`) is refused rather than silently protecting nothing."""
    if not _IMAGE_TAG.fullmatch(tag):
        hint = " (separate tags with commas)" if any(c.isspace() for c in tag) else ""
        raise ConfigError(
            field,
            f"{tag!r} is not an image tag: letters, digits, '_', '.' and '-', at most 128, "
            f"not starting with '.' or '-'{hint}",
        )
    return tag


def check_glob(pattern: str, *, field: str) -> str:
    """A name or glob whose every `[` opens a closed character class (fnmatch would silently
    read `app/[a` as the literal name `app/[a`, which no repository has)."""
    position = 0
    while (start := pattern.find("[", position)) >= 0:
        end = start + 1
        if end < len(pattern) and pattern[end] == "!":
            end += 1
        if end < len(pattern) and pattern[end] == "]":
            end += 1
        close = pattern.find("]", end)
        if close < 0:
            raise ConfigError(
                field, f"{pattern!r}: the '[' at position {start} is never closed by a ']'"
            )
        position = close + 1
    return pattern


def is_glob(pattern: str) -> bool:
    """Whether `pattern` uses fnmatch wildcards (`*`, `?`, `[...]`) rather than naming one repo."""
    return not _GLOB_CHARS.isdisjoint(pattern)


@dataclass(frozen=True, slots=True)
class RepositorySelection:
    """Which ECR repositories are pruned: exact names or fnmatch globs; exclusions win."""

    include: tuple[str, ...]
    # names or globs from -repos; "*" selects every repository
    exclude: tuple[str, ...] = ()
    # names or globs from --exclude-repos, applied after `include`

    def matches(self, name: str) -> bool:
        """Whether repository `name` is selected (case-sensitive, as ECR names are)."""
        return any(fnmatchcase(name, p) for p in self.include) and not any(
            fnmatchcase(name, p) for p in self.exclude
        )

    @property
    def exact_names(self) -> tuple[str, ...] | None:
        """The selected names when `include` has no glob; None means: list all, then filter."""
        if any(is_glob(p) for p in self.include):
            return None
        return tuple(name for name in self.include if self.matches(name))


@dataclass(frozen=True, slots=True)
class RepositoryOverride:
    """Rules for the repositories whose name matches `pattern` (exact name or glob)."""

    pattern: str
    # exact repository name or fnmatch glob
    rules: Rules
    # complete rules: fields the config file leaves out are inherited from the flags

    def matches(self, repository: str) -> bool:
        return fnmatchcase(repository, self.pattern)


class OverrideIndex:
    """First-match lookup over overrides: a dict lookup for exact names, and for globs only the
    ones whose literal prefix (the text before their first wildcard) begins the name.

    A scan calling fnmatch once per entry would cost 16,000 × 16,000 calls to validate a file
    of 16,000 entries, and a lookup per repository as long as the file.
    """

    def __init__(self, overrides: Sequence[RepositoryOverride]) -> None:
        self._exact: dict[str, int] = {}
        self._globs: dict[str, list[tuple[int, re.Pattern[str]]]] = {}
        # literal prefix -> (position, compiled glob), in file order
        for position, override in enumerate(overrides):
            pattern = override.pattern
            if is_glob(pattern):
                prefix = pattern[: min(pattern.find(c) for c in _GLOB_CHARS if c in pattern)]
                compiled = re.compile(fnmatch.translate(pattern))
                self._globs.setdefault(prefix, []).append((position, compiled))
            else:
                self._exact.setdefault(pattern, position)

    def first_glob(self, name: str) -> int | None:
        """Position of the earliest glob that matches `name`."""
        best: int | None = None
        if not self._globs:
            return best
        for cut in range(len(name) + 1):
            for position, compiled in self._globs.get(name[:cut], ()):
                if best is not None and position >= best:
                    break
                if compiled.match(name):
                    best = position
                    break
        return best

    def first(self, name: str) -> int | None:
        """Position of the first override (exact name or glob) that matches `name`."""
        found = [p for p in (self._exact.get(name), self.first_glob(name)) if p is not None]
        return min(found, default=None)


@dataclass(frozen=True, slots=True)
class AwsScope:
    """One AWS source of --protect-ecs or --protect-lambda: a service in a region (None: the
    registry's), its clusters (ECS only; a glob), and the IAM role to assume to read it (None:
    the controller's own credentials)."""

    service: Literal["ecs", "lambda"]
    region: str | None = None
    clusters: str = "*"
    role: str | None = None

    def __str__(self) -> str:
        where = self.region or "(registry region)"
        if self.service == "ecs":
            where += f"/{self.clusters}"
        return f"{self.service}:{where}" + (f" as {self.role}" if self.role else "")


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the controller needs to run, validated; built by the CLI from argv and env."""

    repositories: RepositorySelection
    # which ECR repositories are pruned
    rules: Rules = field(default_factory=Rules)
    # retention rules from the flags; apply to every repository without an override
    overrides: tuple[RepositoryOverride, ...] = ()
    # per-repository rules from --config, in file order; the first match wins
    interval: timedelta = DEFAULT_INTERVAL
    # time between cleanup cycles
    interval_jitter: float = DEFAULT_INTERVAL_JITTER
    # each wait is randomised by up to this fraction of `interval` (0..1)
    region: str | None = None
    # AWS region; None = AWS_REGION, else AWS_DEFAULT_REGION, else us-east-1 (as the Go controller)
    registry_id: str | None = None
    # ECR registry (AWS account id); None = the credentials' account
    kubeconfig: str | None = None
    # kubeconfig path(s), os.pathsep-separated as in KUBECONFIG; None = the client's default
    kube_contexts: tuple[str, ...] = ()
    # clusters whose usage protects images; empty = current context, or in-cluster when no
    # kubeconfig exists
    in_cluster: bool = False
    # use the pod's service account instead of any kubeconfig
    namespaces: tuple[str, ...] = ()
    # namespaces whose usage protects images; empty = ALL namespaces (the safe default)
    dry_run: bool = True
    # log what would be deleted and delete nothing
    disposal: Literal["delete", "archive"] = "delete"
    # what happens to the images the policy lets go: deleted, or moved to ECR's archive storage
    # class (restored at once when they come into use)
    concurrency: int = DEFAULT_CONCURRENCY
    # at most this many ECR repositories are processed at once
    once: bool = False
    # run one cycle, print its report and exit instead of looping
    output: Literal["table", "json"] = "table"
    # format of the cycle report written to stdout
    allow_empty: bool = False
    # allow deleting when a cluster (or a listed namespace) has no pod at all
    allow_empty_namespaces: tuple[str, ...] = ()
    # namespaces of `namespaces` that may have no pod (say, only CronJobs between runs)
    allow_empty_clusters: tuple[str, ...] = ()
    # clusters (context names) that may have no pod at all
    max_staleness: timedelta = DEFAULT_MAX_STALENESS
    # never delete based on an in-use view older than this
    protect_workloads: frozenset[str] = DEFAULT_PROTECT_WORKLOADS
    # workload kinds (plural, lower-case) whose pod templates protect images besides pods
    protect_resources: tuple[ResourceEntry, ...] = ()
    # custom resources whose objects protect the images they name (--protect-resources and
    # the --config file's protect-resources section, merged by `resources.resolve`)
    protect_aws: tuple[AwsScope, ...] = ()
    # ECS and Lambda sources (--protect-ecs, --protect-lambda), polled every
    # `aws_sources_interval`
    aws_sources_interval: timedelta = timedelta(minutes=2)
    ecs_keep_task_definitions: int = 5
    # the newest ACTIVE revisions of each ECS task-definition family that protect their images
    leader_elect: bool = True
    # hold a coordination.k8s.io Lease so only one replica deletes
    lease_name: str = DEFAULT_LEASE_NAME
    # name of that Lease
    lease_namespace: str | None = None
    # namespace of that Lease; None = not running in a pod (the CLI reads the pod's namespace)
    lease_duration: timedelta = DEFAULT_LEASE_DURATION
    # how long a Lease holder that stopped renewing blocks the others (renewal deadline 2/3 of it)
    metrics_address: str = DEFAULT_METRICS_ADDRESS
    # Prometheus /metrics listen address, host:port or :port
    log_level: int = logging.INFO
    # threshold for the controller's own loggers (logging.DEBUG with -v >= 1)
    log_format: Literal["text", "json"] = "text"
    # text lines, or one JSON object per line

    _index: OverrideIndex = field(init=False, repr=False, compare=False)
    # derived from `overrides` once, for rules_for

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", OverrideIndex(self.overrides))

    def rules_for(self, repository: str) -> Rules:
        """The rules of the first override matching `repository`, else the flag rules."""
        position = self._index.first(repository)
        return self.rules if position is None else self.overrides[position].rules

    def unused_overrides(self, repositories: Iterable[str]) -> list[tuple[int, RepositoryOverride]]:
        """The overrides (with their position in the file) that are the first match of none of
        `repositories`: they apply to nothing (a typo, a repository gone or not selected)."""
        used = {self._index.first(name) for name in repositories}
        return [(i, o) for i, o in enumerate(self.overrides) if i not in used]

    def may_be_empty(self, source: SourceKey) -> bool:
        """Whether the user allowed this pod source to hold no pod at all."""
        return (
            self.allow_empty
            or source.cluster in self.allow_empty_clusters
            or (bool(source.namespace) and source.namespace in self.allow_empty_namespaces)
        )

    def describe(self) -> dict[str, object]:
        """The effective configuration as JSON-able data, for the start-up log line."""
        return {
            "repositories": {
                "include": list(self.repositories.include),
                "exclude": list(self.repositories.exclude),
            },
            "rules": describe_rules(self.rules),
            "overrides": [{"name": o.pattern, **describe_rules(o.rules)} for o in self.overrides],
            "interval": format_duration(self.interval),
            "interval_jitter": self.interval_jitter,
            "region": self.region,
            "registry_id": self.registry_id,
            "kubeconfig": self.kubeconfig,
            "kube_contexts": list(self.kube_contexts),
            "in_cluster": self.in_cluster,
            "namespaces": list(self.namespaces) or "ALL",
            "dry_run": self.dry_run,
            "disposal": self.disposal,
            "concurrency": self.concurrency,
            "once": self.once,
            "output": self.output,
            "allow_empty": self.allow_empty,
            "allow_empty_namespaces": list(self.allow_empty_namespaces),
            "allow_empty_clusters": list(self.allow_empty_clusters),
            "max_staleness": format_duration(self.max_staleness),
            "protect_workloads": [k for k in WORKLOAD_KINDS if k in self.protect_workloads],
            "protect_aws": [str(scope) for scope in self.protect_aws],
            "aws_sources_interval": format_duration(self.aws_sources_interval),
            "ecs_keep_task_definitions": self.ecs_keep_task_definitions,
            "protect_resources": [
                {
                    "resource": f"{e.api_version}/{e.resource}",
                    "scope": "namespaced" if e.namespaced else "cluster",
                    "paths": [f"{kind}={path.text}" for kind, path in e.paths],
                }
                for e in self.protect_resources
            ],
            "leader_elect": self.leader_elect,
            "lease_name": self.lease_name,
            "lease_namespace": self.lease_namespace,
            "lease_duration": format_duration(self.lease_duration),
            "metrics_address": self.metrics_address,
            "log_level": logging.getLevelName(self.log_level),
            "log_format": self.log_format,
        }


def describe_rules(rules: Rules) -> dict[str, object]:
    """`rules` as JSON-able data: durations as `format_duration` text, regexes as patterns."""
    return {knob.field: knob.describe(getattr(rules, knob.field)) for knob in RULE_KNOBS}


# ---------------------------------------------------------------------------------------------
# Retention knobs: each field of Rules as a flag, an environment variable and a --config key.

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class Parse(Protocol[T_co]):
    """A parser of flag or environment text: `field` is what to blame in the ConfigError."""

    def __call__(self, text: str, *, field: str) -> T_co: ...


class Read(Protocol[T_co]):
    """A reader of a value loaded from the --config file: `at` is its path, for errors."""

    def __call__(self, value: object, *, at: str) -> T_co: ...


_DEFAULT_RULES = Rules()


@dataclass(frozen=True, slots=True, kw_only=True)
class RuleKnob(Generic[T]):
    """One retention rule, declared once: the `Rules` field `name` (with `_` for `-`) is set by
    the flag `name`, its ECR_CLEANUP_ variable and the --config key `name`; its default is
    the field's default in `Rules`. The CLI's flag, the config schema and `describe_rules`
    are derived from this."""

    name: str
    # flag and --config key, e.g. "max-images"
    parse: Parse[T]
    # the text of the flag or its environment variable into the field's value
    read: Read[T]
    # a value of the --config file into the field's value
    describe: Callable[[T], object]
    # the value as JSON-able data, for the start-up log line
    help: str
    # the --help text, without the "[env ...; default ...]" that the CLI adds
    group: Literal["go", "retention"] = "retention"
    # "go": one of the Go controller's flags (spelled -flag in errors); else a new one
    metavar: str = "VALUE"
    unset: str = ""
    # what --help shows as the default when it is None, e.g. "(off)"
    kind: Literal["value", "bool"] = "value"
    # bool: a bare `--flag` means true, `--flag=false` works

    @property
    def field(self) -> str:
        """The field of Rules, e.g. max_images."""
        return self.name.replace("-", "_")

    @property
    def default(self) -> T:
        """The value when neither the flag, its variable nor a --config entry sets it."""
        return cast(T, getattr(_DEFAULT_RULES, self.field))

    @property
    def shown(self) -> str:
        """The default as --help shows it: "" for none, a comma list for a list."""
        described = self.describe(self.default)
        if described is None:
            return self.unset
        if isinstance(described, bool):
            return "true" if described else "false"
        if isinstance(described, list):
            return ",".join(str(item) for item in described)
        return str(described)


def _optional(read: Read[T]) -> Read[T | None]:
    """A --config reader that also takes null, which turns the rule off."""

    def read_optional(value: object, *, at: str) -> T | None:
        return None if value is None else read(value, at=at)

    return read_optional


def _config_count(value: object, *, at: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(at, f"expected a positive integer, got {_type_name(value)}")
    if value <= 0:
        raise ConfigError(
            at, f"expected a positive integer, got {value}: a zero or negative count is not allowed"
        )
    return value


def _config_strings(value: object, *, at: str) -> list[str]:
    if not isinstance(value, list):
        raise ConfigError(at, f"expected a list of strings, got {_type_name(value)}")
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise ConfigError(
                f"{at}[{index}]",
                f"expected a string, got {_type_name(item)} {item!r} (quote it in YAML)",
            )
    return value


def _config_bool(value: object, *, at: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(at, f"expected true or false, got {_type_name(value)} {value!r}")
    return value


def _config_duration(value: object, *, at: str) -> timedelta:
    if not isinstance(value, str):
        raise ConfigError(
            at,
            f"expected a duration such as 12h, 7d or 2w (a string with a unit), "
            f"got {_type_name(value)} {value!r}",
        )
    return parse_duration(value, field=at)


def _config_tags(value: object, *, at: str) -> frozenset[str]:
    tags = _config_strings(value, at=at)
    return frozenset(check_tag(tag, field=f"{at}[{i}]") for i, tag in enumerate(tags))


def _config_regexes(value: object, *, at: str) -> tuple[re.Pattern[str], ...]:
    strings = _config_strings(value, at=at)
    return tuple(compile_regex(pattern, field=f"{at}[{i}]") for i, pattern in enumerate(strings))


def _parse_tags(text: str, *, field: str) -> frozenset[str]:
    return frozenset(check_tag(tag, field=field) for tag in parse_list(text))


def _describe_duration(value: timedelta | None) -> str | None:
    return None if value is None else format_duration(value)


def _describe_patterns(value: tuple[re.Pattern[str], ...]) -> list[str]:
    return [pattern.pattern for pattern in value]


def _describe_as_is(value: object) -> object:
    return value


ARCHIVE_MINIMUM = timedelta(days=90)
"""ECR's minimum storage duration of an archived image: one deleted sooner is billed for 90
days anyway (the ECR user guide, "Archiving an image")."""

RULE_KNOBS: tuple[RuleKnob[Any], ...] = (
    # in the order of Rules' fields: describe_rules and the config keys follow it
    RuleKnob(
        name="max-images",
        parse=parse_positive_int,
        read=_config_count,
        describe=_describe_as_is,
        help="Maximum number of images to keep in each repository. Protected images (in use, "
        "kept tags and filters, young or recently pulled) count but are never deleted.",
        group="go",
        metavar="N",
    ),
    RuleKnob(
        name="keep-tags",
        parse=_parse_tags,
        read=_config_tags,
        describe=sorted,
        help="Comma-separated tags; an image carrying any of them is kept (exact match).",
        metavar="TAGS",
    ),
    RuleKnob(
        name="keep-filters",
        parse=parse_regexes,
        read=_config_regexes,
        describe=_describe_patterns,
        help="Comma-separated regular expressions; an image with a tag matching any of them "
        "(unanchored search) is kept. Commas inside {}, [] or () and escaped commas (\\,) "
        "belong to the regex: '^release-[0-9]{1,3}$' is one filter (the Go controller split "
        "it in two).",
        group="go",
        metavar="REGEXES",
    ),
    RuleKnob(
        name="keep-younger-than",
        parse=parse_duration,
        read=_optional(_config_duration),
        describe=_describe_duration,
        help="Keep images pushed within this duration, e.g. 7d.",
        metavar="DURATION",
        unset="(off)",
    ),
    RuleKnob(
        name="keep-pulled-within",
        parse=parse_duration,
        read=_optional(_config_duration),
        describe=_describe_duration,
        help="Keep images pulled within this duration (ECR's lastRecordedPullTime), e.g. 30d.",
        metavar="DURATION",
        unset="(off)",
    ),
    RuleKnob(
        name="max-deletions-per-cycle",
        parse=parse_positive_int,
        read=_optional(_config_count),
        describe=_describe_as_is,
        help="SAFETY valve: delete at most N images per repository per cycle.",
        metavar="N",
        unset="(unlimited)",
    ),
    RuleKnob(
        name="delete-orphaned-artifacts",
        parse=parse_bool,
        read=_config_bool,
        describe=_describe_as_is,
        help="Also delete attached artifacts (signatures, attestations, SBOMs) whose subject is "
        "in none of the repository's images and not in use. Off: they are left alone, since "
        "signatures may be stored apart from their images (cosign's COSIGN_REPOSITORY).",
        metavar="BOOL",
        kind="bool",
    ),
    RuleKnob(
        name="delete-archived-after",
        parse=parse_duration,
        read=_optional(_config_duration),
        describe=_describe_duration,
        help="Delete the archived images (ECR's archive storage class: --disposal=archive, a "
        "lifecycle policy or by hand) whose lastArchivedAt is older than this, e.g. 180d, "
        "unless in use, kept by a keep tag or filter, or linked to a kept image. ECR bills 90 "
        "days of archive storage however soon an archived image is deleted.",
        metavar="DURATION",
        unset="(never)",
    ),
)
_KNOBS_BY_NAME = {knob.name: knob for knob in RULE_KNOBS}


# ---------------------------------------------------------------------------------------------
# The --config file: per-repository overrides.

MAX_CONFIG_ENTRIES = 20_000
"""Entries in a --config file: far more than any registry's repository families need."""

CONFIG_KEYS = ("name", *(knob.name for knob in RULE_KNOBS))


CONFIG_SECTIONS = ("repositories", "protect-resources")
"""The top-level keys of a --config document; at least one is required."""


def parse_resources(text: str, *, field: str) -> tuple[ResourceEntry, ...]:
    """--protect-resources: a comma list of presets and `GROUP/VERSION/RESOURCE:KIND=PATH;...`
    entries (paths hold no comma), merged per resource."""
    try:
        return resolve(parse_list(text))
    except ResourceSpecError as error:
        raise ConfigError(field, f"entry {error.entry!r}: {error.problem}") from None


def merge_resources(*declared: tuple[ResourceEntry, ...], field: str) -> tuple[ResourceEntry, ...]:
    """The flag's and the config file's entries as one set (a resource in both: both's paths)."""
    try:
        return resolve(entry for entries in declared for entry in entries)
    except ResourceSpecError as error:
        raise ConfigError(field, f"entry {error.entry!r}: {error.problem}") from None


def parse_config_resources(data: object, *, source: str) -> tuple[ResourceEntry, ...]:
    """The `protect-resources:` section of a --config document (after `parse_config` checked
    its shape): presets, command-line style entries and `{resource: ..., pod-specs: [...]}`
    mappings. Errors name the entry's path, e.g. `--config x.yaml: protect-resources[2]`."""
    where = f"--config {source}: protect-resources"
    if not isinstance(data, Mapping) or "protect-resources" not in data:
        return ()
    items = data["protect-resources"]
    if not isinstance(items, list):  # `protect-resources:` with nothing after it is null
        raise ConfigError(
            where, f"expected a list of presets and resource entries, got {_type_name(items)}"
        )
    entries: list[ResourceEntry] = []
    for position, item in enumerate(items):
        if not isinstance(item, (str, Mapping)):
            raise ConfigError(
                f"{where}[{position}]",
                f"expected a preset name, an entry string or a mapping, got {_type_name(item)}",
            )
        try:
            entries.extend(resolve([item]))
        except ResourceSpecError as error:
            raise ConfigError(f"{where}[{position}]", error.problem) from None
    return merge_resources(tuple(entries), field=where)


def parse_config(data: object, *, defaults: Rules, source: str) -> tuple[RepositoryOverride, ...]:
    """Validate a loaded --config document into overrides (file order) inheriting `defaults`.

    Shape: `{"repositories": [{"name": ..., "max-images": ..., ...}, ...]}`; see CONFIG_KEYS;
    and/or `{"protect-resources": [...]}` (`parse_config_resources`). Every error names its
    path, e.g. `--config x.yaml: repositories[1].max-images`.
    """
    where = f"--config {source}"
    if not isinstance(data, Mapping):
        got = "an empty document" if data is None else _type_name(data)
        raise ConfigError(where, f"expected a mapping with a 'repositories' list, got {got}")
    _check_keys(data, CONFIG_SECTIONS, prefix=f"{where}: ")
    if "repositories" not in data:
        if "protect-resources" in data:
            return ()
        raise ConfigError(f"{where}: repositories", "required: a list of per-repository overrides")
    items = data["repositories"]
    if not isinstance(items, list):
        raise ConfigError(
            f"{where}: repositories",
            f"expected a list of per-repository overrides, got {_type_name(items)}",
        )
    if len(items) > MAX_CONFIG_ENTRIES:
        raise ConfigError(
            f"{where}: repositories",
            f"{len(items)} entries; at most {MAX_CONFIG_ENTRIES} (use globs for families of "
            "repositories)",
        )
    overrides = tuple(
        _parse_override(item, defaults=defaults, path=f"{where}: repositories[{position}]")
        for position, item in enumerate(items)
    )
    index = OverrideIndex(overrides)
    first_of: dict[str, int] = {}
    for position, override in enumerate(overrides):
        earlier = first_of.setdefault(override.pattern, position)
        if earlier == position and not is_glob(override.pattern):
            glob = index.first_glob(override.pattern)
            earlier = glob if glob is not None and glob < position else position
        if earlier != position:
            raise ConfigError(
                f"{where}: repositories[{position}].name",
                f"{override.pattern!r} is already matched by repositories[{earlier}] "
                f"({overrides[earlier].pattern!r}); the first match wins, so this entry would "
                "never apply: move it before the broader one",
            )
    return overrides


def check_overrides_selected(
    overrides: Sequence[RepositoryOverride], selection: RepositorySelection, *, source: str
) -> None:
    """Refuse an override that can never apply because -repos never selects what it names.

    Decidable without the registry for an exact name (selected or not), and for a glob when
    -repos names repositories exactly; a glob against glob selections is checked per cycle,
    against the repositories actually found (`Settings.unused_overrides`)."""
    exact = selection.exact_names
    for position, override in enumerate(overrides):
        if not is_glob(override.pattern):
            applies = selection.matches(override.pattern)
        elif exact is not None:
            applies = any(override.matches(name) for name in exact)
        else:
            continue
        if not applies:
            raise ConfigError(
                f"--config {source}: repositories[{position}].name",
                f"{override.pattern!r} matches no repository that -repos "
                f"({','.join(selection.include)})"
                + (
                    f" minus --exclude-repos ({','.join(selection.exclude)})"
                    if selection.exclude
                    else ""
                )
                + " selects, so this entry would never apply",
            )


def _parse_override(item: object, *, defaults: Rules, path: str) -> RepositoryOverride:
    if not isinstance(item, Mapping):
        raise ConfigError(path, f"expected a mapping with a 'name' key, got {_type_name(item)}")
    _check_keys(item, CONFIG_KEYS, prefix=f"{path}.")
    name = item.get("name")
    if name is None:
        raise ConfigError(f"{path}.name", "required: an exact repository name or a glob")
    if not isinstance(name, str):
        raise ConfigError(
            f"{path}.name",
            f"expected an exact repository name or a glob (a string), got {_type_name(name)}",
        )
    if not name.strip():
        raise ConfigError(f"{path}.name", "expected an exact repository name or a glob, got ''")
    check_glob(name, field=f"{path}.name")
    changes = {
        _KNOBS_BY_NAME[key].field: _KNOBS_BY_NAME[key].read(value, at=f"{path}.{key}")
        for key, value in item.items()
        if key != "name"
    }
    rules = dataclasses.replace(defaults, **changes)
    return RepositoryOverride(pattern=name, rules=rules)


def _check_keys(mapping: Mapping[object, object], allowed: tuple[str, ...], *, prefix: str) -> None:
    for key in mapping:
        if key not in allowed:
            raise ConfigError(
                f"{prefix}{key}", f"unknown key {key!r}: expected one of {', '.join(allowed)}"
            )


def _type_name(value: object) -> str:
    names = {type(None): "null", bool: "a boolean", int: "an integer", float: "a number"}
    names |= {str: "a string", list: "a list", dict: "a mapping"}
    return names.get(type(value), type(value).__name__)
