"""The command line: argv and ECR_CLEANUP_* environment into Settings, logging set-up, hand-off to app."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import re
import signal
import sys
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, NoReturn, Protocol, TypeVar
from urllib.parse import urlsplit

from controller import __version__
from controller.policy import DEFAULT_MAX_IMAGES, Rules
from controller.settings import (
    DEFAULT_CONCURRENCY,
    DEFAULT_INTERVAL,
    DEFAULT_INTERVAL_JITTER,
    DEFAULT_LEASE_DURATION,
    DEFAULT_LEASE_NAME,
    DEFAULT_MAX_STALENESS,
    DEFAULT_METRICS_ADDRESS,
    DEFAULT_PROTECT_WORKLOADS,
    WORKLOAD_KINDS,
    ConfigError,
    RepositoryOverride,
    RepositorySelection,
    Settings,
    check_dns_label,
    check_dns_subdomain,
    check_glob,
    check_overrides_selected,
    compile_regex,
    format_duration,
    parse_address,
    parse_bool,
    parse_duration,
    parse_fraction,
    parse_list,
    parse_namespaces,
    parse_positive_int,
    parse_workload_kinds,
    split_regexes,
)

PROG = "kube-ecr-cleanup-controller"
ENV_PREFIX = "ECR_CLEANUP_"
SERVICE_ACCOUNT_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")

logger = logging.getLogger(__name__)

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

Group = Literal["go", "glog", "retention", "kubernetes", "runtime"]
_GROUP_TITLES: dict[Group, str] = {
    "go": "flags of the Go kube-ecr-cleanup-controller (same meaning)",
    "glog": "glog flags of the Go controller (accepted; see each for what still applies)",
    "retention": "retention",
    "kubernetes": "what protects an image",
    "runtime": "running",
}


@dataclass(frozen=True, slots=True)
class Flag:
    """One command-line flag: spelled `-name` or `--name`, also read from its env var."""

    name: str
    # without dashes, e.g. "max-images"
    default: str
    # as shown in --help and the README; "" = unset, "(...)" = explained rather than literal
    help: str
    group: Group
    kind: Literal["value", "bool", "append"] = "value"
    # bool: bare `-flag` means true and `-flag=false`/`-flag false` work; append: repeatable
    metavar: str = "VALUE"

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


_ALL_KINDS = ", ".join(WORKLOAD_KINDS)

FLAGS: tuple[Flag, ...] = (
    # -- the Go controller's flags
    Flag(
        "repos",
        "(required)",
        "Comma-separated repository names or globs to prune; '*' selects every repository "
        "in the registry. Required, as in the Go controller.",
        "go",
        metavar="NAMES",
    ),
    Flag(
        "max-images",
        str(DEFAULT_MAX_IMAGES),
        "Maximum number of images to keep in each repository. Protected images (in use, "
        "kept tags and filters, young or recently pulled) count but are never deleted.",
        "go",
        metavar="N",
    ),
    Flag(
        "interval",
        str(DEFAULT_INTERVAL // timedelta(minutes=1)),
        "Time between cleanup cycles: minutes as an integer, as in the Go controller, "
        "or a duration such as 90s or 1h; at least 1s.",
        "go",
        metavar="MINUTES",
    ),
    Flag(
        "region",
        "(AWS_REGION, else us-east-1)",
        "AWS region of the registry. Unset: AWS_REGION or AWS_DEFAULT_REGION, else us-east-1 "
        "(the Go controller's default).",
        "go",
        metavar="REGION",
    ),
    Flag(
        "registry-id",
        "(the credentials' account)",
        "AWS account id (12 digits) of the registry.",
        "go",
        metavar="ID",
    ),
    Flag(
        "kubeconfig",
        "(KUBECONFIG or ~/.kube/config)",
        "Path to a kubeconfig file; it must be readable. Unset: $KUBECONFIG, ~/.kube/config, "
        "or the in-cluster service account when neither exists.",
        "go",
        metavar="PATH",
    ),
    Flag(
        "dry-run",
        "true",
        "SAFETY: while true (the default) nothing is deleted; what would be deleted is only "
        "logged. -dry-run=false deletes. The Go controller defaulted to false.",
        "go",
        kind="bool",
        metavar="BOOL",
    ),
    Flag(
        "keep-filters",
        "",
        "Comma-separated regular expressions; an image with a tag matching any of them "
        "(unanchored search) is kept. Commas inside {}, [] or () and escaped commas (\\,) "
        "belong to the regex: '^release-[0-9]{1,3}$' is one filter (the Go controller split "
        "it in two).",
        "go",
        metavar="REGEXES",
    ),
    Flag(
        "namespaces",
        "(all namespaces)",
        "SAFETY: comma-separated namespaces whose pods and workloads protect their images. "
        "Default: ALL namespaces. Restricting it lets an image used only in another namespace "
        "be deleted; the Go controller's default ('default') was unsafe and is not kept.",
        "go",
        metavar="NAMESPACES",
    ),
    # -- glog's flags, which the Go controller exposed
    Flag("v", "0", "Log verbosity: 1 or more turns on debug logs.", "glog", metavar="N"),
    Flag(
        "logtostderr",
        "(always)",
        "Accepted; logs always go to stderr (false is ignored with a warning).",
        "glog",
        kind="bool",
        metavar="BOOL",
    ),
    Flag(
        "alsologtostderr",
        "(always)",
        "Accepted; logs always go to stderr.",
        "glog",
        kind="bool",
        metavar="BOOL",
    ),
    Flag(
        "log_dir",
        "",
        "Accepted and ignored with a warning: no log files are written.",
        "glog",
        metavar="DIR",
    ),
    Flag(
        "stderrthreshold",
        "INFO",
        "Lowest severity logged: INFO, WARNING, ERROR, FATAL or 0 to 3.",
        "glog",
        metavar="SEVERITY",
    ),
    Flag("vmodule", "", "Accepted and ignored with a warning.", "glog", metavar="SPEC"),
    Flag("log_backtrace_at", "", "Accepted and ignored with a warning.", "glog", metavar="FILE:N"),
    # -- retention
    Flag(
        "keep-tags",
        "latest",
        "Comma-separated tags; an image carrying any of them is kept (exact match).",
        "retention",
        metavar="TAGS",
    ),
    Flag(
        "keep-younger-than",
        "(off)",
        "Keep images pushed within this duration, e.g. 7d.",
        "retention",
        metavar="DURATION",
    ),
    Flag(
        "keep-pulled-within",
        "(off)",
        "Keep images pulled within this duration (ECR's lastRecordedPullTime), e.g. 30d.",
        "retention",
        metavar="DURATION",
    ),
    Flag(
        "max-deletions-per-cycle",
        "(unlimited)",
        "SAFETY valve: delete at most N images per repository per cycle.",
        "retention",
        metavar="N",
    ),
    Flag(
        "exclude-repos",
        "",
        "Comma-separated repository names or globs never pruned, even when -repos selects them.",
        "retention",
        metavar="NAMES",
    ),
    Flag(
        "config",
        "",
        "YAML file of per-repository overrides of the retention flags (the first entry whose "
        "name or glob matches wins; unset fields inherit the flags).",
        "retention",
        metavar="FILE",
    ),
    # -- what protects an image
    Flag(
        "kube-context",
        "(current context)",
        "Kubeconfig context of a cluster whose usage protects images; repeatable and "
        "comma-separated. Every listed cluster is checked.",
        "kubernetes",
        kind="append",
        metavar="CONTEXTS",
    ),
    Flag(
        "in-cluster",
        "false",
        "Use the pod's service account instead of a kubeconfig.",
        "kubernetes",
        kind="bool",
        metavar="BOOL",
    ),
    Flag(
        "protect-workloads",
        ",".join(k for k in WORKLOAD_KINDS if k in DEFAULT_PROTECT_WORKLOADS),
        "SAFETY: workload kinds whose pod templates also protect images, so that a Deployment "
        f"scaled to zero or a CronJob between runs keeps its image. A comma list of {_ALL_KINDS}; "
        "or true (the default kinds), all (every kind), false or none (running pods only).",
        "kubernetes",
        metavar="KINDS",
    ),
    Flag(
        "allow-empty",
        "false",
        "SAFETY: delete even when a cluster, or a namespace of -namespaces, has no pod at all. "
        "By default every cluster and every listed namespace must have a pod, as an empty one "
        "usually means a typo, a wrong context or credentials that see nothing.",
        "kubernetes",
        kind="bool",
        metavar="BOOL",
    ),
    Flag(
        "allow-empty-namespaces",
        "",
        "SAFETY: namespaces of -namespaces that may have no pod (say, only CronJobs between "
        "runs); the others must still have one.",
        "kubernetes",
        metavar="NAMESPACES",
    ),
    Flag(
        "allow-empty-clusters",
        "",
        "SAFETY: --kube-context clusters that may have no pod at all; the others must still "
        "have one.",
        "kubernetes",
        metavar="CONTEXTS",
    ),
    Flag(
        "max-staleness",
        format_duration(DEFAULT_MAX_STALENESS),
        "SAFETY: never delete based on an in-use view older than this duration.",
        "kubernetes",
        metavar="DURATION",
    ),
    # -- running
    Flag(
        "concurrency",
        str(DEFAULT_CONCURRENCY),
        "Repositories processed at once, from 1 to 256.",
        "runtime",
        metavar="N",
    ),
    Flag(
        "once",
        "false",
        "Run one cycle, print its report to stdout and exit.",
        "runtime",
        kind="bool",
        metavar="BOOL",
    ),
    Flag("output", "table", "Report format: table or json.", "runtime", metavar="FORMAT"),
    Flag(
        "interval-jitter",
        str(DEFAULT_INTERVAL_JITTER),
        "Randomise each wait by up to this fraction of -interval (0 to 1).",
        "runtime",
        metavar="FRACTION",
    ),
    Flag(
        "leader-elect",
        "true",
        "SAFETY: hold a Lease so that only one replica works at a time.",
        "runtime",
        kind="bool",
        metavar="BOOL",
    ),
    Flag("lease-name", DEFAULT_LEASE_NAME, "Name of the Lease.", "runtime", metavar="NAME"),
    Flag(
        "lease-namespace",
        "(the pod's namespace)",
        "Namespace of the Lease.",
        "runtime",
        metavar="NAMESPACE",
    ),
    Flag(
        "lease-duration",
        format_duration(DEFAULT_LEASE_DURATION),
        "How long a leader that stopped renewing keeps the others waiting; it steps down after "
        "2/3 of it without a successful renewal, and renews every 2/15 of it (15s/10s/2s).",
        "runtime",
        metavar="DURATION",
    ),
    Flag(
        "metrics-address",
        DEFAULT_METRICS_ADDRESS,
        "Listen address of the Prometheus /metrics endpoint: host:port or :port.",
        "runtime",
        metavar="ADDRESS",
    ),
    Flag("log-format", "text", "Log format: text or json.", "runtime", metavar="FORMAT"),
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
_BOOL_WORDS = frozenset({"1", "0", "t", "f", "true", "false", "yes", "no", "on", "off"})
MAX_CONCURRENCY = 256
MIN_INTERVAL = timedelta(seconds=1)
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
# Raw strings into typed values.


class _Parse(Protocol[T_co]):
    def __call__(self, text: str, *, field: str) -> T_co: ...


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

    def get(self, name: str, parse: _Parse[T], default: T) -> T:
        raw = self.raw(name)
        if raw is None:
            return default
        text, field = raw
        return parse(text, field=field)


def _parse_names(text: str, *, field: str) -> tuple[str, ...]:
    return parse_list(text)


def _parse_globs(text: str, *, field: str) -> tuple[str, ...]:
    return tuple(check_glob(pattern, field=field) for pattern in parse_list(text))


def _parse_regexes(text: str, *, field: str) -> tuple[re.Pattern[str], ...]:
    try:
        patterns = split_regexes(text)
    except ValueError as error:
        raise ConfigError(field, f"{text!r}: {error}") from None
    return tuple(compile_regex(pattern, field=field) for pattern in patterns)


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


# ---------------------------------------------------------------------------------------------
# Settings.


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

    include = sources.get("repos", _parse_globs, ())
    if not include:
        raise ConfigError(
            sources.field("repos"),
            "required: a comma-separated list of repository names or globs ('*' for every "
            "repository), as in the Go controller",
        )
    exclude = sources.get("exclude-repos", _parse_globs, ())
    repositories = RepositorySelection(include=include, exclude=exclude)
    if repositories.exact_names == ():
        raise ConfigError(
            sources.field("exclude-repos"), "excludes every repository that -repos names"
        )

    base = Rules()
    rules = Rules(
        max_images=sources.get("max-images", parse_positive_int, base.max_images),
        keep_tags=frozenset(sources.get("keep-tags", _parse_names, tuple(base.keep_tags))),
        keep_filters=sources.get("keep-filters", _parse_regexes, base.keep_filters),
        keep_younger_than=sources.get("keep-younger-than", parse_duration, None),
        keep_pulled_within=sources.get("keep-pulled-within", parse_duration, None),
        max_deletions_per_cycle=sources.get("max-deletions-per-cycle", parse_positive_int, None),
    )
    config = sources.raw("config")
    if config is None:
        overrides: tuple[RepositoryOverride, ...] = ()
    else:
        from controller.configfile import load_config  # YAML only when there is a file

        overrides = load_config(config[0].strip(), field=config[1], defaults=rules)
    if config is not None:
        check_overrides_selected(overrides, repositories, source=config[0].strip())

    in_cluster = sources.get("in-cluster", parse_bool, False)
    kube_contexts = sources.get("kube-context", _parse_names, ())
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

    region = sources.get("region", _parse_region, None)
    if region is None:  # the SDK's own variables: the same check, blaming them
        for variable in ("AWS_REGION", "AWS_DEFAULT_REGION"):
            if environ.get(variable, "").strip():
                _parse_region(environ[variable], field=variable)
                break
    for variable in ("AWS_ENDPOINT_URL_ECR", "AWS_ENDPOINT_URL"):
        if environ.get(variable, "").strip():
            _check_endpoint(environ[variable], field=variable)

    namespaces = sources.get("namespaces", parse_namespaces, ())
    allow_empty_namespaces = sources.get("allow-empty-namespaces", parse_namespaces, ())
    outside = [n for n in allow_empty_namespaces if n not in namespaces]
    if outside:
        raise ConfigError(
            sources.field("allow-empty-namespaces"),
            f"{', '.join(outside)} is not in -namespaces"
            + (f" ({', '.join(namespaces)})" if namespaces else " (unset: the check is per cluster")
            + (")" if not namespaces else "")
            + "; only namespaces listed in -namespaces are checked one by one",
        )

    leader_elect = sources.get("leader-elect", parse_bool, True)
    lease_namespace = sources.get("lease-namespace", _parse_lease_namespace, None)
    if lease_namespace is None and leader_elect:
        lease_namespace = _pod_namespace(namespace_file)

    verbosity = sources.get("v", _parse_verbosity, 0)
    log_level = logging.DEBUG if verbosity >= 1 else logging.INFO
    threshold = sources.get("stderrthreshold", _parse_severity, logging.INFO)
    if threshold > logging.INFO:
        log_level = threshold
    if not sources.get("logtostderr", parse_bool, True):
        notices.append(f"{sources.field('logtostderr')}=false is ignored: logs always go to stderr")
    sources.get("alsologtostderr", parse_bool, True)  # validated; logs go to stderr either way
    for name, why in _IGNORED_GLOG_FLAGS.items():
        raw = sources.raw(name)
        if raw is not None:
            notices.append(f"{raw[1]}={raw[0]!r} is ignored: {why}")

    settings = Settings(
        repositories=repositories,
        rules=rules,
        overrides=overrides,
        interval=sources.get("interval", _parse_interval, DEFAULT_INTERVAL),
        interval_jitter=sources.get("interval-jitter", parse_fraction, DEFAULT_INTERVAL_JITTER),
        region=region,
        registry_id=sources.get("registry-id", _parse_registry_id, None),
        kubeconfig=kubeconfig,
        kube_contexts=kube_contexts,
        in_cluster=in_cluster,
        namespaces=namespaces,
        dry_run=sources.get("dry-run", parse_bool, True),
        concurrency=sources.get("concurrency", _parse_concurrency, DEFAULT_CONCURRENCY),
        once=sources.get("once", parse_bool, False),
        output=sources.get("output", _parse_output, "table"),
        allow_empty=sources.get("allow-empty", parse_bool, False),
        allow_empty_namespaces=allow_empty_namespaces,
        allow_empty_clusters=sources.get("allow-empty-clusters", _parse_names, ()),
        max_staleness=sources.get("max-staleness", parse_duration, DEFAULT_MAX_STALENESS),
        protect_workloads=sources.get(
            "protect-workloads", parse_workload_kinds, DEFAULT_PROTECT_WORKLOADS
        ),
        leader_elect=leader_elect,
        lease_name=sources.get("lease-name", _parse_lease_name, DEFAULT_LEASE_NAME),
        lease_namespace=lease_namespace,
        lease_duration=sources.get("lease-duration", _parse_lease_duration, DEFAULT_LEASE_DURATION),
        metrics_address=sources.get("metrics-address", parse_address, DEFAULT_METRICS_ADDRESS),
        log_level=log_level,
        log_format=sources.get("log-format", _parse_log_format, "text"),
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
# Logging.

_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, then any `extra` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_"):
                entry.setdefault(key, value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(level: int, *, log_format: Literal["text", "json"]) -> None:
    """Log to stderr: the controller's loggers at `level`, third-party ones at INFO or above."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter(_TEXT_FORMAT)
    )
    logging.basicConfig(level=max(level, logging.INFO), handlers=[handler], force=True)
    logging.getLogger("controller").setLevel(level)


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


def main(argv: Sequence[str] | None = None) -> int:
    """Parse argv and the environment, set up logging, run controller.app; the exit status."""
    with EarlySignals() as early:
        return _main(sys.argv[1:] if argv is None else list(argv), early)


def _main(args: list[str], early: EarlySignals) -> int:
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
    app = importlib.import_module("controller.app")
    run: Callable[..., int] = app.run
    return run(settings, early_signal=lambda: early.received)


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
