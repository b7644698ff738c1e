"""The command line: argv and ECR_CLEANUP_* environment into Settings, then the hand-off to app."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import sys
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Generic, Literal, NoReturn, Protocol, TypeVar
from urllib.parse import urlsplit

from controller import __version__
from controller.logs import configure_logging
from controller.policy import Rules
from controller.resources import PRESETS, ResourceEntry
from controller.settings import (
    ARCHIVE_MINIMUM,
    RULE_KNOBS,
    WORKLOAD_KINDS,
    AwsScope,
    ConfigError,
    Parse,
    RepositoryOverride,
    RepositorySelection,
    Settings,
    check_dns_label,
    check_dns_subdomain,
    check_glob,
    check_overrides_selected,
    format_duration,
    merge_resources,
    parse_address,
    parse_bool,
    parse_duration,
    parse_fraction,
    parse_list,
    parse_namespaces,
    parse_positive_int,
    parse_resources,
    parse_workload_kinds,
)

PROG = "kube-ecr-cleanup-controller"
ENV_PREFIX = "ECR_CLEANUP_"
SERVICE_ACCOUNT_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
MAX_CONCURRENCY = 256
MIN_INTERVAL = timedelta(seconds=1)

logger = logging.getLogger(__name__)

T = TypeVar("T")

Group = Literal["go", "glog", "retention", "kubernetes", "runtime"]
_GROUP_TITLES: dict[Group, str] = {
    "go": "flags of the Go kube-ecr-cleanup-controller (same meaning)",
    "glog": "glog flags of the Go controller (accepted; see each for what still applies)",
    "retention": "retention",
    "kubernetes": "what protects an image",
    "runtime": "running",
}


# ---------------------------------------------------------------------------------------------
# Raw strings into typed values.


def _parse_text(text: str, *, field: str) -> str | None:
    return text


def _parse_names(text: str, *, field: str) -> tuple[str, ...]:
    return parse_list(text)


def _parse_globs(text: str, *, field: str) -> tuple[str, ...]:
    return tuple(check_glob(pattern, field=field) for pattern in parse_list(text))


def _parse_interval(text: str, *, field: str) -> timedelta:
    """Go's -interval: minutes as an integer; a duration (90s, 1h) is accepted too; >= 1s."""
    value = text.strip()
    if re.fullmatch(r"[+-]?[0-9]+", value, re.ASCII):
        return timedelta(minutes=parse_positive_int(value, field=field))
    try:
        interval = parse_duration(value, field=field)
    except ConfigError:
        raise ConfigError(
            field,
            f"expected minutes as an integer (e.g. 30) or a duration such as 90s or 1h, "
            f"got {text!r}",
        ) from None
    if interval < MIN_INTERVAL:
        raise ConfigError(
            field,
            f"must be at least 1s, got {text!r} (every cycle lists every repository; "
            "production intervals are minutes or hours)",
        )
    return interval


def _parse_concurrency(text: str, *, field: str) -> int:
    number = parse_positive_int(text, field=field)
    if number > MAX_CONCURRENCY:
        raise ConfigError(field, f"must be from 1 to {MAX_CONCURRENCY}, got {number}")
    return number


_REGION = re.compile(r"[a-z]{2,4}(?:-[a-z]+)+-[0-9]{1,2}", re.ASCII)
# every AWS partition's region names: us-east-1, us-gov-west-1, cn-north-1, eu-isoe-west-1,
# eusc-de-east-1, ...


def _parse_region(text: str, *, field: str) -> str | None:
    value = text.strip()
    if value and not _REGION.fullmatch(value):
        raise ConfigError(
            field, f"{text!r} is not an AWS region name (such as us-east-1 or eu-central-1)"
        )
    return value or None


_ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=.@_/-]{1,512}", re.ASCII)


def _parse_aws_scopes(
    text: str, *, field: str, service: Literal["ecs", "lambda"]
) -> tuple[AwsScope, ...]:
    """--protect-ecs / --protect-lambda: bare (or true) is the registry's region, every
    cluster; false or none is off; else a comma list of `REGION[/CLUSTER-GLOB][;role=ARN]`
    (Lambda: no cluster part), an empty REGION meaning the registry's."""
    word = text.strip().lower()
    if not word:  # an empty template variable, most likely: say so rather than guess on or off
        example = "us-east-1/prod-*" if service == "ecs" else "us-east-1"
        raise ConfigError(
            field, f"expected true, false or a comma list such as {example}, got an empty value"
        )
    if word in ("true", "1", "yes"):
        return (AwsScope(service),)
    if word in ("false", "0", "no", "none"):
        return ()
    scopes: list[AwsScope] = []
    for item in parse_list(text):
        where, _, rest = item.partition(";")
        role = None
        if rest:
            key, _, value = rest.partition("=")
            if key.strip() != "role" or not _ROLE_ARN.fullmatch(value.strip()):
                raise ConfigError(
                    field,
                    f"{item!r}: after ';' expected role=arn:aws:iam::ACCOUNT:role/NAME, "
                    f"got {rest!r}",
                )
            role = value.strip()
        region_text, slash, clusters = where.partition("/")
        if slash and service == "lambda":
            raise ConfigError(
                field, f"{item!r}: Lambda has no clusters: expected REGION[;role=ARN]"
            )
        if slash and not clusters.strip():
            raise ConfigError(field, f"{item!r}: expected a cluster name or glob after '/'")
        region = _parse_region(region_text, field=field)
        scopes.append(
            AwsScope(
                service,
                region,
                check_glob(clusters.strip(), field=field) if slash else "*",
                role,
            )
        )
    return tuple(dict.fromkeys(scopes))


def _check_endpoint(text: str, *, field: str) -> None:
    parsed = urlsplit(text.strip())
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigError(field, f"expected an http:// or https:// URL with a host, got {text!r}")


def _parse_registry_id(text: str, *, field: str) -> str | None:
    value = text.strip()
    if value and not re.fullmatch(r"[0-9]{12}", value, re.ASCII):
        raise ConfigError(field, f"expected a 12-digit AWS account id, got {text!r}")
    return value or None


def _parse_verbosity(text: str, *, field: str) -> int:
    value = text.strip()
    if not re.fullmatch(r"\+?[0-9]+", value, re.ASCII):
        raise ConfigError(field, f"expected a verbosity level (0 or more), got {text!r}")
    return int(value)


_SEVERITIES = {"INFO": logging.INFO, "WARNING": logging.WARNING, "ERROR": logging.ERROR}
_SEVERITIES |= {"FATAL": logging.CRITICAL, "0": logging.INFO, "1": logging.WARNING}
_SEVERITIES |= {"2": logging.ERROR, "3": logging.CRITICAL}


def _parse_severity(text: str, *, field: str) -> int:
    level = _SEVERITIES.get(text.strip().upper())
    if level is None:
        raise ConfigError(
            field, f"expected INFO, WARNING, ERROR, FATAL or a number from 0 to 3, got {text!r}"
        )
    return level


def _parse_output(text: str, *, field: str) -> Literal["table", "json"]:
    value = text.strip()
    if value == "table":
        return "table"
    if value == "json":
        return "json"
    raise ConfigError(field, f"expected one of table, json, got {text!r}")


def _parse_disposal(text: str, *, field: str) -> Literal["delete", "archive"]:
    value = text.strip()
    if value == "delete":
        return "delete"
    if value == "archive":
        return "archive"
    raise ConfigError(field, f"expected one of delete, archive, got {text!r}")


def _parse_log_format(text: str, *, field: str) -> Literal["text", "json"]:
    value = text.strip()
    if value == "text":
        return "text"
    if value == "json":
        return "json"
    raise ConfigError(field, f"expected one of text, json, got {text!r}")


def _parse_lease_duration(text: str, *, field: str) -> timedelta:
    duration = parse_duration(text, field=field)
    if duration < timedelta(seconds=2):
        raise ConfigError(field, f"must be at least 2s, got {text!r}")
    return duration


def _parse_lease_name(text: str, *, field: str) -> str:
    return check_dns_subdomain(text.strip(), field=field)


def _parse_lease_namespace(text: str, *, field: str) -> str:
    return check_dns_label(text.strip(), field=field)


def _readable_paths(text: str, *, field: str) -> str:
    """`text` (one path, or several joined by os.pathsep as in KUBECONFIG) if every one reads."""
    paths = [os.path.expanduser(path.strip()) for path in text.split(os.pathsep) if path.strip()]
    for path in paths:
        try:
            with open(path, "rb"):
                pass
        except OSError as error:
            raise ConfigError(field, f"cannot read {path!r}: {error.strerror or error}") from None
    return os.pathsep.join(paths)


@dataclass(frozen=True, slots=True)
class Flag(Generic[T]):
    """One command-line flag: spelled `-name` or `--name`, also read from its env var.

    Declared once, with its parser and its default value: its --help line (default included)
    and its environment variable are derived from it (tests keep the README's table equal)."""

    name: str
    # without dashes, e.g. "max-images"
    parse: Parse[T]
    # the text of the flag or of its environment variable into the value
    fallback: T
    # the value when neither the flag nor its environment variable is set
    help: str
    group: Group
    kind: Literal["value", "bool", "append"] = "value"
    # bool: bare `-flag` means true and `-flag=false`/`-flag false` work; append: repeatable
    metavar: str = "VALUE"
    shown: str | None = None
    # the default as --help and the README show it when it is not `fallback` written out:
    # "(...)" = explained rather than literal

    @property
    def default(self) -> str:
        """The default as shown in --help and the README; "" = unset."""
        return _show(self.fallback) if self.shown is None else self.shown

    @property
    def env(self) -> str:
        """The environment variable, e.g. ECR_CLEANUP_MAX_IMAGES."""
        return ENV_PREFIX + self.name.upper().replace("-", "_")

    @property
    def option(self) -> str:
        """The spelling used in error messages: Go's `-flag` for Go and glog flags, else `--flag`."""
        return f"-{self.name}" if self.group in ("go", "glog") else f"--{self.name}"

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")


def _show(value: object) -> str:
    """A default value written as a user would write it on the command line."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, frozenset):
        return ",".join(sorted(str(item) for item in value))
    if isinstance(value, tuple):
        return ",".join(str(item) for item in value)
    return str(value)


def _rule_flag(name: str) -> Flag[Any]:
    """The flag of the retention knob `name`, from its declaration in settings.RULE_KNOBS."""
    knob = _KNOBS[name]
    return Flag(
        knob.name,
        knob.parse,
        knob.default,
        knob.help,
        knob.group,
        kind=knob.kind,
        metavar=knob.metavar,
        shown=knob.shown,
    )


_KNOBS = {knob.name: knob for knob in RULE_KNOBS}
_DEFAULTS = Settings(repositories=RepositorySelection(include=()))
# the Settings fields' defaults: a flag that sets a field falls back to the field's default
_ALL_KINDS = ", ".join(WORKLOAD_KINDS)
_GLOG_THRESHOLD = logging.INFO
# glog's default -stderrthreshold: INFO and above (a threshold, not the Settings log level)

FLAGS: tuple[Flag[Any], ...] = (
    # -- the Go controller's flags
    Flag(
        "repos",
        _parse_globs,
        _DEFAULTS.repositories.include,
        "Comma-separated repository names or globs to prune; '*' selects every repository "
        "in the registry. Required, as in the Go controller.",
        "go",
        metavar="NAMES",
        shown="(required)",
    ),
    _rule_flag("max-images"),
    Flag(
        "interval",
        _parse_interval,
        _DEFAULTS.interval,
        "Time between cleanup cycles: minutes as an integer, as in the Go controller, "
        "or a duration such as 90s or 1h; at least 1s.",
        "go",
        metavar="MINUTES",
        shown=str(_DEFAULTS.interval // timedelta(minutes=1)),
    ),
    Flag(
        "region",
        _parse_region,
        _DEFAULTS.region,
        "AWS region of the registry. Unset: AWS_REGION or AWS_DEFAULT_REGION, else us-east-1 "
        "(the Go controller's default).",
        "go",
        metavar="REGION",
        shown="(AWS_REGION, else us-east-1)",
    ),
    Flag(
        "registry-id",
        _parse_registry_id,
        _DEFAULTS.registry_id,
        "AWS account id (12 digits) of the registry.",
        "go",
        metavar="ID",
        shown="(the credentials' account)",
    ),
    Flag(
        "kubeconfig",
        _readable_paths,
        _DEFAULTS.kubeconfig,
        "Path to a kubeconfig file; it must be readable. Unset: $KUBECONFIG, ~/.kube/config, "
        "or the in-cluster service account when neither exists.",
        "go",
        metavar="PATH",
        shown="(KUBECONFIG or ~/.kube/config)",
    ),
    Flag(
        "dry-run",
        parse_bool,
        _DEFAULTS.dry_run,
        "SAFETY: while true (the default) nothing is deleted; what would be deleted is only "
        "logged. -dry-run=false deletes. The Go controller defaulted to false.",
        "go",
        kind="bool",
        metavar="BOOL",
    ),
    _rule_flag("keep-filters"),
    Flag(
        "namespaces",
        parse_namespaces,
        _DEFAULTS.namespaces,
        "SAFETY: comma-separated namespaces whose pods and workloads protect their images. "
        "Default: ALL namespaces. Restricting it lets an image used only in another namespace "
        "be deleted; the Go controller's default ('default') was unsafe and is not kept.",
        "go",
        metavar="NAMESPACES",
        shown="(all namespaces)",
    ),
    # -- glog's flags, which the Go controller exposed
    Flag(
        "v",
        _parse_verbosity,
        0,
        "Log verbosity: 1 or more turns on debug logs.",
        "glog",
        metavar="N",
    ),
    Flag(
        "logtostderr",
        parse_bool,
        True,
        "Accepted; logs always go to stderr (false is ignored with a warning).",
        "glog",
        kind="bool",
        metavar="BOOL",
        shown="(always)",
    ),
    Flag(
        "alsologtostderr",
        parse_bool,
        True,
        "Accepted; logs always go to stderr.",
        "glog",
        kind="bool",
        metavar="BOOL",
        shown="(always)",
    ),
    Flag(
        "log_dir",
        _parse_text,
        None,
        "Accepted and ignored with a warning: no log files are written.",
        "glog",
        metavar="DIR",
    ),
    Flag(
        "stderrthreshold",
        _parse_severity,
        _GLOG_THRESHOLD,
        "Lowest severity logged: INFO, WARNING, ERROR, FATAL or 0 to 3.",
        "glog",
        metavar="SEVERITY",
        shown=logging.getLevelName(_GLOG_THRESHOLD),
    ),
    Flag(
        "vmodule", _parse_text, None, "Accepted and ignored with a warning.", "glog", metavar="SPEC"
    ),
    Flag(
        "log_backtrace_at",
        _parse_text,
        None,
        "Accepted and ignored with a warning.",
        "glog",
        metavar="FILE:N",
    ),
    # -- retention: every knob of settings.RULE_KNOBS that is not a Go flag, in its order
    *(_rule_flag(knob.name) for knob in RULE_KNOBS if knob.group == "retention"),
    Flag(
        "exclude-repos",
        _parse_globs,
        _DEFAULTS.repositories.exclude,
        "Comma-separated repository names or globs never pruned, even when -repos selects them.",
        "retention",
        metavar="NAMES",
    ),
    Flag(
        "config",
        _parse_text,
        None,
        "YAML file of per-repository overrides of the retention flags (the first entry whose "
        "name or glob matches wins; unset fields inherit the flags).",
        "retention",
        metavar="FILE",
    ),
    # -- what protects an image
    Flag(
        "kube-context",
        _parse_names,
        _DEFAULTS.kube_contexts,
        "Kubeconfig context of a cluster whose usage protects images; repeatable and "
        "comma-separated. Every listed cluster is checked.",
        "kubernetes",
        kind="append",
        metavar="CONTEXTS",
        shown="(current context)",
    ),
    Flag(
        "in-cluster",
        parse_bool,
        _DEFAULTS.in_cluster,
        "Use the pod's service account instead of a kubeconfig.",
        "kubernetes",
        kind="bool",
        metavar="BOOL",
    ),
    Flag(
        "protect-workloads",
        parse_workload_kinds,
        _DEFAULTS.protect_workloads,
        "SAFETY: workload kinds whose pod templates also protect images, so that a Deployment "
        f"scaled to zero or a CronJob between runs keeps its image. A comma list of {_ALL_KINDS}; "
        "or true (the default kinds), all (every kind), false or none (running pods only).",
        "kubernetes",
        metavar="KINDS",
        shown=",".join(k for k in WORKLOAD_KINDS if k in _DEFAULTS.protect_workloads),
    ),
    Flag(
        "protect-resources",
        parse_resources,
        _DEFAULTS.protect_resources,
        "SAFETY: custom resources whose objects start pods later and so protect the images "
        "they name while no pod exists. A comma list of presets ("
        + ", ".join(sorted(PRESETS))
        + ") and entries GROUP/VERSION/RESOURCE:KIND=PATH, KIND one of pod-spec, container, "
        "image, several joined by ';', PATH dotted with [*] for every list element, e.g. "
        "keda.sh/v1alpha1/scaledjobs:pod-spec=spec.jobTargetRef.template.spec. Each is listed "
        "and watched like the built-in kinds; one the cluster does not serve stops pruning.",
        "kubernetes",
        metavar="RESOURCES",
        shown="(none)",
    ),
    Flag(
        "protect-ecs",
        lambda text, *, field: _parse_aws_scopes(text, field=field, service="ecs"),
        (),
        "SAFETY: ECS protects its images too: running and pending tasks, the task definitions of "
        "every service's deployments, and the newest --ecs-keep-task-definitions revisions of each "
        "family. Alone: every cluster in the registry's region; or a comma list of "
        "REGION[/CLUSTER-GLOB][;role=ARN] (an IAM role to assume for another account). Polled "
        "every --aws-sources-interval; a denied poll stops pruning at once, a failing one once "
        "its last good poll is older than --max-staleness.",
        "kubernetes",
        kind="bool",
        metavar="SCOPES",
        shown="(off)",
    ),
    Flag(
        "protect-lambda",
        lambda text, *, field: _parse_aws_scopes(text, field=field, service="lambda"),
        (),
        "SAFETY: Lambda functions of package type Image protect their $LATEST image and every "
        "published version's. Alone: the registry's region; or a comma list of REGION[;role=ARN].",
        "kubernetes",
        kind="bool",
        metavar="REGIONS",
        shown="(off)",
    ),
    Flag(
        "aws-sources-interval",
        parse_duration,
        _DEFAULTS.aws_sources_interval,
        "Time between two polls of each ECS and Lambda source.",
        "kubernetes",
        metavar="DURATION",
    ),
    Flag(
        "ecs-keep-task-definitions",
        parse_positive_int,
        _DEFAULTS.ecs_keep_task_definitions,
        "The newest ACTIVE revisions of each ECS task-definition family that protect their images, "
        "for rollbacks (every ACTIVE revision would protect almost everything: families are "
        "rarely deregistered).",
        "kubernetes",
        metavar="N",
    ),
    Flag(
        "allow-empty",
        parse_bool,
        _DEFAULTS.allow_empty,
        "SAFETY: delete even when a cluster, or a namespace of -namespaces, has no pod at all. "
        "By default every cluster and every listed namespace must have a pod, as an empty one "
        "usually means a typo, a wrong context or credentials that see nothing.",
        "kubernetes",
        kind="bool",
        metavar="BOOL",
    ),
    Flag(
        "allow-empty-namespaces",
        parse_namespaces,
        _DEFAULTS.allow_empty_namespaces,
        "SAFETY: namespaces of -namespaces that may have no pod (say, only CronJobs between "
        "runs); the others must still have one.",
        "kubernetes",
        metavar="NAMESPACES",
    ),
    Flag(
        "allow-empty-clusters",
        _parse_names,
        _DEFAULTS.allow_empty_clusters,
        "SAFETY: --kube-context clusters that may have no pod at all; the others must still "
        "have one.",
        "kubernetes",
        metavar="CONTEXTS",
    ),
    Flag(
        "max-staleness",
        parse_duration,
        _DEFAULTS.max_staleness,
        "SAFETY: never delete based on an in-use view older than this duration.",
        "kubernetes",
        metavar="DURATION",
    ),
    # -- running
    Flag(
        "concurrency",
        _parse_concurrency,
        _DEFAULTS.concurrency,
        "Repositories processed at once, from 1 to 256.",
        "runtime",
        metavar="N",
    ),
    Flag(
        "once",
        parse_bool,
        _DEFAULTS.once,
        "Run one cycle, print its report to stdout and exit.",
        "runtime",
        kind="bool",
        metavar="BOOL",
    ),
    Flag(
        "disposal",
        _parse_disposal,
        _DEFAULTS.disposal,
        "What happens to the images the rules let go: delete, or archive (moved to ECR's "
        "archive storage class, one call per image; they cannot be pulled, ECR bills 90 days of "
        "archive storage at least, and the service restores one within seconds when a pod "
        "needs it again).",
        "retention",
        metavar="MODE",
    ),
    Flag(
        "output",
        _parse_output,
        _DEFAULTS.output,
        "Report format: table or json.",
        "runtime",
        metavar="FORMAT",
    ),
    Flag(
        "interval-jitter",
        parse_fraction,
        _DEFAULTS.interval_jitter,
        "Randomise each wait by up to this fraction of -interval (0 to 1).",
        "runtime",
        metavar="FRACTION",
    ),
    Flag(
        "leader-elect",
        parse_bool,
        _DEFAULTS.leader_elect,
        "SAFETY: hold a Lease so that only one replica works at a time.",
        "runtime",
        kind="bool",
        metavar="BOOL",
    ),
    Flag(
        "lease-name",
        _parse_lease_name,
        _DEFAULTS.lease_name,
        "Name of the Lease.",
        "runtime",
        metavar="NAME",
    ),
    Flag(
        "lease-namespace",
        _parse_lease_namespace,
        _DEFAULTS.lease_namespace,
        "Namespace of the Lease.",
        "runtime",
        metavar="NAMESPACE",
        shown="(the pod's namespace)",
    ),
    Flag(
        "lease-duration",
        _parse_lease_duration,
        _DEFAULTS.lease_duration,
        "How long a leader that stopped renewing keeps the others waiting; it steps down after "
        "2/3 of it without a successful renewal, and renews every 2/15 of it (15s/10s/2s).",
        "runtime",
        metavar="DURATION",
    ),
    Flag(
        "metrics-address",
        parse_address,
        _DEFAULTS.metrics_address,
        "Listen address of the Prometheus /metrics endpoint: host:port or :port.",
        "runtime",
        metavar="ADDRESS",
    ),
    Flag(
        "log-format",
        _parse_log_format,
        _DEFAULTS.log_format,
        "Log format: text or json.",
        "runtime",
        metavar="FORMAT",
    ),
)

_FLAGS_BY_NAME = {flag.name: flag for flag in FLAGS}
_HELP_OPTIONS = ("-h", "-help", "--help")
_VERSION_OPTIONS = ("-version", "--version")
_OPTION_STRINGS = frozenset(
    {spelling for flag in FLAGS for spelling in (f"-{flag.name}", f"--{flag.name}")}
    | set(_HELP_OPTIONS)
    | set(_VERSION_OPTIONS)
)
_BOOL_SPELLINGS = frozenset(
    spelling
    for flag in FLAGS
    if flag.kind == "bool"
    for spelling in (f"-{flag.name}", f"--{flag.name}")
)
_OPTIONAL_VALUE_SPELLINGS = frozenset(
    spelling
    for flag in FLAGS
    if flag.kind == "bool" and flag.metavar != "BOOL"
    for spelling in (f"-{flag.name}", f"--{flag.name}")
)
# flags that mean something alone and take a value that is not a boolean (--protect-ecs)
_BOOL_WORDS = frozenset({"1", "0", "t", "f", "true", "false", "yes", "no", "on", "off"})
_NEGATIVE_NUMBER = re.compile(r"-[0-9]+|-[0-9]*\.[0-9]+")  # argparse treats these as values

_DESCRIPTION = """\
Prunes Amazon ECR repositories down to -max-images, never deleting an image that a
Kubernetes cluster uses. Successor of the Go kube-ecr-cleanup-controller: its Deployment
args keep working. Every flag is spelled -flag or --flag, with -flag=value or -flag value,
and can also be set by the environment variable shown (command line > environment > default).
"""
_EPILOG = """\
example:
  kube-ecr-cleanup-controller -repos='team-*' -max-images=200 -dry-run=false
  (boolean flags take their value after '=': write -dry-run=false, never -dry-run false)

safety:
  Nothing is deleted until you pass -dry-run=false (ECR_CLEANUP_DRY_RUN=false).
  Images used by pods or by the pod templates of --protect-workloads kinds, in the namespaces
  of -namespaces (default: all) of every --kube-context, are never deleted.
"""


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32, width=100)

    def _split_lines(self, text: str, width: int) -> list[str]:
        # never split a flag name such as -dry-run or a default such as kube-ecr-cleanup-controller
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


class _ArgumentParser(argparse.ArgumentParser):
    """argparse, raising ConfigError instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError("command line", message)


def _build_parser() -> _ArgumentParser:
    parser = _ArgumentParser(
        prog=PROG,
        usage=f"{PROG} -repos=NAMES [flags]",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=_HelpFormatter,
        add_help=False,
        allow_abbrev=False,
        exit_on_error=False,
    )
    parser.add_argument(*_HELP_OPTIONS, dest="help", action="store_true", help="Show this help.")
    parser.add_argument(
        *_VERSION_OPTIONS, dest="version", action="store_true", help="Print the version and exit."
    )
    groups = {group: parser.add_argument_group(title) for group, title in _GROUP_TITLES.items()}
    for flag in FLAGS:
        default = f"default: {flag.default}" if flag.default else "default: unset"
        help_text = f"{flag.help} [env {flag.env}; {default}]"
        spellings = (f"-{flag.name}", f"--{flag.name}")
        group = groups[flag.group]
        if flag.kind == "bool":
            group.add_argument(
                *spellings,
                dest=flag.dest,
                nargs="?",
                const="true",
                metavar=flag.metavar,
                help=help_text,
            )
        elif flag.kind == "append":
            group.add_argument(
                *spellings, dest=flag.dest, action="append", metavar=flag.metavar, help=help_text
            )
        else:
            group.add_argument(*spellings, dest=flag.dest, metavar=flag.metavar, help=help_text)
    return parser


def help_text() -> str:
    """The --help output."""
    return _build_parser().format_help()


def _parse_command_line(argv: Sequence[str]) -> argparse.Namespace:
    """argv into raw strings per flag (None when absent); unknown flags are errors, by name.

    argparse (3.11) matches single-dash options by prefix even with allow_abbrev=False, so every
    token argparse would read as an option is checked against the exact spellings first.
    """
    tokens = list(argv)
    for position, token in enumerate(tokens):
        if token == "--":
            break
        if not token.startswith("-") or token == "-" or _NEGATIVE_NUMBER.fullmatch(token):
            continue
        name = token.split("=", 1)[0]
        if name not in _OPTION_STRINGS and " " not in token:
            raise ConfigError(name, "unknown flag (see --help)")
        if token in _BOOL_SPELLINGS:
            following = tokens[position + 1] if position + 1 < len(tokens) else None
            if following is not None and following.strip().lower() in _BOOL_WORDS:
                raise ConfigError(
                    token,
                    f"a boolean flag takes its value after '=': write {token}={following} "
                    f"(Go reads '{token} {following}' as {token}=true and ignores every flag "
                    "after it)",
                )
            if (
                token in _OPTIONAL_VALUE_SPELLINGS
                and following is not None
                and not following.startswith("-")
            ):
                raise ConfigError(
                    token,
                    f"takes its value after '=': write {token}={following} (alone, {token} "
                    "means its default)",
                )
            if following is not None and following != "--" and not following.startswith("-"):
                raise ConfigError(
                    token,
                    f"a boolean flag takes its value after '=', and {following!r} is not a "
                    f"flag: write {token}=true or {token}=false",
                )
            # alone, a boolean flag means true; the next word is never its value
            tokens[position] = f"{token}=true"
    try:
        namespace, extra = _build_parser().parse_known_args(tokens)
    except argparse.ArgumentError as error:
        name = (error.argument_name or "command line").split("/")[0]
        raise ConfigError(name, error.message) from None
    if extra:
        raise ConfigError(
            "command line",
            f"unexpected argument {extra[0]!r}: every setting is a flag, e.g. -repos=NAMES",
        )
    return namespace


# ---------------------------------------------------------------------------------------------
# Settings.


class _Sources:
    """Looks a flag up on the command line, then in the environment."""

    def __init__(self, namespace: argparse.Namespace, environ: Mapping[str, str]) -> None:
        self._namespace = namespace
        self._environ = environ

    def raw(self, name: str) -> tuple[str, str] | None:
        """(text, field to blame) from the command line or the environment, or None."""
        flag = _FLAGS_BY_NAME[name]
        value: str | list[str] | None = getattr(self._namespace, flag.dest)
        if value is not None:
            return (",".join(value) if isinstance(value, list) else value), flag.option
        env_value = self._environ.get(flag.env)
        if env_value is not None and env_value.strip():
            return env_value, flag.env
        return None

    def field(self, name: str) -> str:
        """Where flag `name` came from (its env var or its flag spelling), for error messages."""
        raw = self.raw(name)
        return _FLAGS_BY_NAME[name].option if raw is None else raw[1]

    def get(self, name: str) -> Any:
        """The value of flag `name`: parsed from where it is set, else the flag's fallback."""
        flag = _FLAGS_BY_NAME[name]
        raw = self.raw(name)
        if raw is None:
            return flag.fallback
        text, field = raw
        return flag.parse(text, field=field)


def parse_settings(
    argv: Sequence[str],
    environ: Mapping[str, str],
    *,
    namespace_file: Path = SERVICE_ACCOUNT_NAMESPACE_FILE,
) -> Settings:
    """argv (without the program name) and the environment into Settings; raises ConfigError."""
    return _settings(_parse_command_line(argv), environ, namespace_file=namespace_file)[0]


def _settings(
    namespace: argparse.Namespace, environ: Mapping[str, str], *, namespace_file: Path
) -> tuple[Settings, list[str]]:
    """Settings, and warnings to log once logging is set up."""
    sources = _Sources(namespace, environ)
    notices: list[str] = []
    known_env = {flag.env for flag in FLAGS}
    for key in sorted(environ):
        if key.startswith(ENV_PREFIX) and key not in known_env:
            notices.append(f"environment variable {key} is not a setting and is ignored")

    include = sources.get("repos")
    if not include:
        raise ConfigError(
            sources.field("repos"),
            "required: a comma-separated list of repository names or globs ('*' for every "
            "repository), as in the Go controller",
        )
    exclude = sources.get("exclude-repos")
    repositories = RepositorySelection(include=include, exclude=exclude)
    if repositories.exact_names == ():
        raise ConfigError(
            sources.field("exclude-repos"), "excludes every repository that -repos names"
        )

    rules = Rules(**{knob.field: sources.get(knob.name) for knob in RULE_KNOBS})
    config = sources.raw("config")
    overrides: tuple[RepositoryOverride, ...] = ()
    configured: tuple[ResourceEntry, ...] = ()
    if config is not None:
        from controller.configfile import load_config  # YAML only when there is a file

        overrides, configured = load_config(config[0].strip(), field=config[1], defaults=rules)
        check_overrides_selected(overrides, repositories, source=config[0].strip())
    protect_resources = merge_resources(
        sources.get("protect-resources"), configured, field=sources.field("protect-resources")
    )

    in_cluster = sources.get("in-cluster")
    kube_contexts = sources.get("kube-context")
    kubeconfig_flag = sources.raw("kubeconfig")
    if kubeconfig_flag is not None and not kubeconfig_flag[0].strip():
        kubeconfig_flag = None  # -kubeconfig="" means unset, as in Go
    kubeconfig = None
    if in_cluster:
        for conflicting in (kubeconfig_flag, sources.raw("kube-context")):
            if conflicting is not None:
                raise ConfigError(
                    sources.field("in-cluster"),
                    f"cannot be combined with {conflicting[1]}: in-cluster mode uses the pod's "
                    "service account, not a kubeconfig",
                )
    elif kubeconfig_flag is not None:
        kubeconfig = _readable_paths(kubeconfig_flag[0], field=kubeconfig_flag[1])
    elif environ.get("KUBECONFIG", "").strip():
        kubeconfig = _readable_paths(environ["KUBECONFIG"], field="KUBECONFIG")

    region = sources.get("region")
    if region is None:  # the SDK's own variables: the same check, blaming them
        for variable in ("AWS_REGION", "AWS_DEFAULT_REGION"):
            if environ.get(variable, "").strip():
                _parse_region(environ[variable], field=variable)
                break
    for variable in ("AWS_ENDPOINT_URL_ECR", "AWS_ENDPOINT_URL"):
        if environ.get(variable, "").strip():
            _check_endpoint(environ[variable], field=variable)

    namespaces = sources.get("namespaces")
    allow_empty_namespaces = sources.get("allow-empty-namespaces")
    outside = [n for n in allow_empty_namespaces if n not in namespaces]
    if outside:
        raise ConfigError(
            sources.field("allow-empty-namespaces"),
            f"{', '.join(outside)} is not in -namespaces"
            + (f" ({', '.join(namespaces)})" if namespaces else " (unset: the check is per cluster")
            + (")" if not namespaces else "")
            + "; only namespaces listed in -namespaces are checked one by one",
        )

    aws_interval = sources.get("aws-sources-interval")
    max_staleness = sources.get("max-staleness")
    if (sources.get("protect-ecs") or sources.get("protect-lambda")) and (
        aws_interval >= max_staleness
    ):
        raise ConfigError(
            sources.field("aws-sources-interval"),
            f"{format_duration(aws_interval)} is not shorter than --max-staleness "
            f"{format_duration(max_staleness)}: an ECS or Lambda view is as old as its last "
            "poll, and pruning must never rest on a view older than --max-staleness",
        )

    leader_elect = sources.get("leader-elect")
    lease_namespace = sources.get("lease-namespace")
    if lease_namespace is None and leader_elect:
        lease_namespace = _pod_namespace(namespace_file)

    verbosity = sources.get("v")
    log_level = logging.DEBUG if verbosity >= 1 else logging.INFO
    threshold = sources.get("stderrthreshold")
    if threshold > logging.INFO:
        log_level = threshold
    if not sources.get("logtostderr"):
        notices.append(f"{sources.field('logtostderr')}=false is ignored: logs always go to stderr")
    sources.get("alsologtostderr")  # validated; logs go to stderr either way
    for name, why in _IGNORED_GLOG_FLAGS.items():
        raw = sources.raw(name)
        if raw is not None:
            notices.append(f"{raw[1]}={raw[0]!r} is ignored: {why}")

    settings = Settings(
        repositories=repositories,
        rules=rules,
        overrides=overrides,
        interval=sources.get("interval"),
        interval_jitter=sources.get("interval-jitter"),
        region=region,
        registry_id=sources.get("registry-id"),
        kubeconfig=kubeconfig,
        kube_contexts=kube_contexts,
        in_cluster=in_cluster,
        namespaces=namespaces,
        dry_run=sources.get("dry-run"),
        disposal=sources.get("disposal"),
        concurrency=sources.get("concurrency"),
        once=sources.get("once"),
        output=sources.get("output"),
        allow_empty=sources.get("allow-empty"),
        allow_empty_namespaces=allow_empty_namespaces,
        allow_empty_clusters=sources.get("allow-empty-clusters"),
        max_staleness=max_staleness,
        protect_workloads=sources.get("protect-workloads"),
        protect_resources=protect_resources,
        protect_aws=(*sources.get("protect-ecs"), *sources.get("protect-lambda")),
        aws_sources_interval=aws_interval,
        ecs_keep_task_definitions=sources.get("ecs-keep-task-definitions"),
        leader_elect=leader_elect,
        lease_name=sources.get("lease-name"),
        lease_namespace=lease_namespace,
        lease_duration=sources.get("lease-duration"),
        metrics_address=sources.get("metrics-address"),
        log_level=log_level,
        log_format=sources.get("log-format"),
    )
    return settings, notices


_IGNORED_GLOG_FLAGS = {
    "log_dir": "no log files are written, logs go to stderr",
    "vmodule": "per-file verbosity is not supported, -v applies to every module",
    "log_backtrace_at": "stack traces at a log line are not supported",
}


def _pod_namespace(path: Path) -> str | None:
    """The namespace of the pod we run in, from its service-account mount; None outside a pod."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise ConfigError(
            "--lease-namespace",
            f"unset, and the pod's namespace cannot be read from {str(path)!r}: {error.strerror}",
        ) from None
    return text or None


def safety_warnings(settings: Settings) -> list[str]:
    """Start-up warnings for settings that let images be deleted or that delete nothing."""
    warnings: list[str] = []
    if settings.dry_run:
        warnings.append(
            "DRY RUN: nothing will be deleted, images that would be deleted are only logged. "
            "To delete, pass -dry-run=false or set ECR_CLEANUP_DRY_RUN=false."
        )
    if settings.disposal == "archive" and settings.once:
        warnings.append(
            "--disposal=archive with --once: images are archived, but nothing restores one that "
            "comes into use before the service runs (restore on use is a service feature)"
        )
    short = sorted(
        {
            format_duration(rules.delete_archived_after)
            for rules in (settings.rules, *(o.rules for o in settings.overrides))
            if rules.delete_archived_after is not None
            and rules.delete_archived_after < ARCHIVE_MINIMUM
        }
    )
    if short:
        warnings.append(
            f"--delete-archived-after {', '.join(short)} is under 90 days: ECR bills an archived "
            "image for 90 days of archive storage even when it is deleted sooner"
        )
    if settings.namespaces:
        warnings.append(
            f"only namespaces {', '.join(settings.namespaces)} protect their images: an image "
            "used only in another namespace can be deleted (unset -namespaces to protect all)"
        )
    if not settings.protect_workloads:
        warnings.append(
            "--protect-workloads=none: only running pods protect images; the image of a "
            "workload scaled to zero or of a CronJob between runs can be deleted"
        )
    if settings.allow_empty:
        warnings.append(
            "--allow-empty: deletion proceeds even if a cluster or a listed namespace has no pod"
        )
    for flag, names in (
        ("--allow-empty-namespaces", settings.allow_empty_namespaces),
        ("--allow-empty-clusters", settings.allow_empty_clusters),
    ):
        if names:
            warnings.append(
                f"{flag}: deletion proceeds even if {', '.join(names)} has no pod; a typo or "
                "wrong credentials there go unnoticed"
            )
    return warnings


# ---------------------------------------------------------------------------------------------
# Entry point.


class EarlySignals:
    """Records SIGTERM and SIGINT from the start of `main` until the event loop takes them over.

    The controller's own imports take a second or two; a kubelet's SIGTERM in that window would
    otherwise kill the process with no clean exit. The app asks `received` once its signal
    receiver is in place, and shuts down at once if a signal came before."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> EarlySignals:
        for signum in self.SIGNALS:
            self._previous[signum] = signal.signal(signum, self._record)
        return self

    def __exit__(self, *_: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]

    def _record(self, signum: int, _frame: object) -> None:
        self.received = signum


class App(Protocol):
    """What runs the controller once the settings are valid; returns the exit status."""

    def __call__(self, settings: Settings, *, early_signal: Callable[[], int | None]) -> int: ...


def run_app(settings: Settings, *, early_signal: Callable[[], int | None]) -> int:
    """The controller itself, `controller.app.run`: imported only now, once the settings are
    valid, as its imports (aioboto3, kubernetes_asyncio) take a second or two that --help and a
    bad flag must not wait for, and that EarlySignals covers."""
    from controller.app import run

    return run(settings, early_signal=early_signal)


def main(argv: Sequence[str] | None = None, *, app: App = run_app) -> int:
    """Parse argv and the environment, set up logging, hand the settings to `app`; the exit
    status. The console script and `python -m controller` run the real controller."""
    with EarlySignals() as early:
        return _main(sys.argv[1:] if argv is None else list(argv), early, app)


def _main(args: list[str], early: EarlySignals, app: App) -> int:
    try:
        namespace = _parse_command_line(args)
        if namespace.help:
            sys.stdout.write(help_text())
            return 0
        if namespace.version:
            print(f"{PROG} {__version__}")
            return 0
        settings, notices = _settings(
            namespace, os.environ, namespace_file=SERVICE_ACCOUNT_NAMESPACE_FILE
        )
    except ConfigError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, log_format=settings.log_format)
    for notice in notices:
        logger.warning("%s", notice)
    configuration = settings.describe()
    if settings.log_format == "json":
        logger.info("%s %s starting", PROG, __version__, extra={"configuration": configuration})
    else:
        logger.info("%s %s starting with %s", PROG, __version__, json.dumps(configuration))
    for line in keep_filter_lines(settings):
        logger.info("%s", line)
    for warning in safety_warnings(settings):
        logger.warning("%s", warning)
    return app(settings, early_signal=lambda: early.received)


def keep_filter_lines(settings: Settings) -> list[str]:
    """The keep filters as parsed, one line per rule set: a wrong split is visible at once."""
    lines = []
    rule_sets = [("-keep-filters", settings.rules)]
    rule_sets += [(f"--config {o.pattern!r}", o.rules) for o in settings.overrides]
    for where, rules in rule_sets:
        if rules.keep_filters:
            patterns = ", ".join(repr(p.pattern) for p in rules.keep_filters)
            lines.append(f"keep filters ({where}): {len(rules.keep_filters)}: {patterns}")
    return lines
