"""Tests of controller.cli: Go-compatible flags, the environment, errors and start-up."""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import logging
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller import cli
from controller.cli import FLAGS, help_text, main, parse_settings
from controller.policy import Rules
from controller.settings import (
    DEFAULT_PROTECT_WORKLOADS,
    RULE_KNOBS,
    AwsScope,
    ConfigError,
    RuleKnob,
    Settings,
)

ERROR_PREFIX = "kube-ecr-cleanup-controller: error: "
NO_POD = Path("/nonexistent/serviceaccount/namespace")


def parse(*argv: str, env: Mapping[str, str] | None = None) -> Settings:
    return parse_settings(argv, env or {}, namespace_file=NO_POD)


@pytest.fixture(autouse=True)
def _hermetic(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """main() reads os.environ and the pod namespace file: isolate it; restore root logging."""
    for key in list(os.environ):
        hermetic = ("ECR_CLEANUP_", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL")
        if key.startswith(hermetic) or key == "KUBECONFIG":
            monkeypatch.delenv(key)
    monkeypatch.setattr(cli, "SERVICE_ACCOUNT_NAMESPACE_FILE", NO_POD)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    controller_level = logging.getLogger("controller").level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("controller").setLevel(controller_level)


class FakeApp(list[Settings]):
    """Stands in for the controller (`main(argv, app=...)`): records the Settings it is run
    with, returns 0."""

    def __call__(self, settings: Settings, **_: object) -> int:
        self.append(settings)
        return 0


@pytest.fixture
def fake_app() -> FakeApp:
    return FakeApp()


def error_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run main(argv), expecting exit status 2 and exactly one line on stderr; return it."""
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.endswith("\n")
    assert err.count("\n") == 1, err
    assert err.startswith(ERROR_PREFIX), err
    return err[len(ERROR_PREFIX) : -1]


# -- the Go controller's flags


def _spellings(name: str, value: str) -> list[list[str]]:
    return [[f"{dash}{name}={value}"] for dash in ("-", "--")] + [
        [f"{dash}{name}", value] for dash in ("-", "--")
    ]


GO_FLAGS: list[tuple[str, str, Callable[[Settings], object], object]] = [
    ("max-images", "500", lambda s: s.rules.max_images, 500),
    ("interval", "15", lambda s: s.interval, timedelta(minutes=15)),
    ("interval", "90s", lambda s: s.interval, timedelta(seconds=90)),
    ("interval", "1h", lambda s: s.interval, timedelta(hours=1)),
    ("repos", "app,worker", lambda s: s.repositories.include, ("app", "worker")),
    ("region", "eu-west-1", lambda s: s.region, "eu-west-1"),
    ("registry-id", "123456789012", lambda s: s.registry_id, "123456789012"),
    (
        "keep-filters",
        "^release-,stable$",
        lambda s: [p.pattern for p in s.rules.keep_filters],
        ["^release-", "stable$"],
    ),
    ("namespaces", "default,prod", lambda s: s.namespaces, ("default", "prod")),
]


@pytest.mark.parametrize(("name", "value", "get", "expected"), GO_FLAGS)
@pytest.mark.parametrize("form", range(4), ids=["-f=v", "--f=v", "-f v", "--f v"])
def test_go_flag_spellings(
    name: str, value: str, get: Callable[[Settings], object], expected: object, form: int
) -> None:
    argv = _spellings(name, value)[form]
    base = [] if name == "repos" else ["-repos=app"]
    assert get(parse(*base, *argv)) == expected


@pytest.mark.parametrize("dash", ["-", "--"])
def test_kubeconfig_flag_spellings(dash: str, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text("apiVersion: v1\n")
    assert parse("-repos=a", f"{dash}kubeconfig={kubeconfig}").kubeconfig == str(kubeconfig)
    assert parse("-repos=a", f"{dash}kubeconfig", str(kubeconfig)).kubeconfig == str(kubeconfig)


def test_go_defaults() -> None:
    settings = parse("-repos=app")
    assert settings.rules == Rules()
    assert settings.interval == timedelta(minutes=30)
    assert settings.dry_run is True
    assert settings.namespaces == ()  # ALL namespaces, not Go's unsafe "default"
    assert settings.region is None
    assert settings.registry_id is None
    assert settings.kubeconfig is None
    assert settings.log_level == logging.INFO


@pytest.mark.parametrize(
    ("argv", "dry_run"),
    [
        ([], True),
        (["-dry-run"], True),
        (["--dry-run"], True),
        (["-dry-run=true"], True),
        (["-dry-run=false"], False),
        (["--dry-run=false"], False),
        (["-dry-run=0"], False),
        (["--dry-run=F"], False),
        (["-dry-run", "-max-images=5"], True),
        (["-dry-run=false", "-dry-run"], True),  # the last one wins, as in Go
    ],
)
def test_dry_run_forms(argv: list[str], dry_run: bool) -> None:
    assert parse("-repos=app", *argv).dry_run is dry_run


@pytest.mark.parametrize("word", ["false", "true", "False", "0", "1", "f", "t", "no", "off"])
@pytest.mark.parametrize("flag", ["-dry-run", "--dry-run", "-once", "--allow-empty"])
def test_a_bare_boolean_word_after_a_boolean_flag_is_refused(
    capsys: pytest.CaptureFixture[str], flag: str, word: str
) -> None:
    # Go reads `-dry-run false` as -dry-run=true and stops parsing: guessing either way on
    # the flag that decides whether anything is deleted is wrong, so it is an error
    line = error_line(capsys, ["-repos=app", flag, word, "-max-images=5"])
    assert line.startswith(f"{flag}: a boolean flag takes its value after '=': ")
    assert f"write {flag}={word} " in line


def test_a_boolean_flag_never_takes_the_next_word_as_its_value(
    capsys: pytest.CaptureFixture[str],
) -> None:
    line = error_line(capsys, ["-repos=app", "-once", "soon"])
    assert line == (
        "-once: a boolean flag takes its value after '=', and 'soon' is not a flag: "
        "write -once=true or -once=false"
    )


def test_help_shows_how_to_write_a_boolean_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "write -dry-run=false, never -dry-run false" in out
    assert "kube-ecr-cleanup-controller -repos='team-*'" in out


@pytest.mark.parametrize("spelling", ["--version", "-version"])
def test_version(capsys: pytest.CaptureFixture[str], spelling: str) -> None:
    from controller import __version__

    assert main([spelling]) == 0
    assert capsys.readouterr().out == f"kube-ecr-cleanup-controller {__version__}\n"


def test_realistic_go_deployment_args_work_unchanged(fake_app: FakeApp) -> None:
    argv = [
        "-logtostderr",
        "-v=2",
        "-repos=app,worker",
        "-max-images=500",
        "-interval=30",
        "-region=eu-west-1",
        "-keep-filters=^release-,stable$",
        "-dry-run=false",
        "-namespaces=default,prod",
    ]
    assert main(argv, app=fake_app) == 0
    (settings,) = fake_app
    assert settings.repositories.include == ("app", "worker")
    assert settings.repositories.exact_names == ("app", "worker")
    assert settings.rules.max_images == 500
    assert settings.interval == timedelta(minutes=30)
    assert settings.region == "eu-west-1"
    assert [p.pattern for p in settings.rules.keep_filters] == ["^release-", "stable$"]
    assert settings.dry_run is False
    assert settings.namespaces == ("default", "prod")
    assert settings.log_level == logging.DEBUG


def test_older_go_deployment_args_with_glog_flags(fake_app: FakeApp) -> None:
    argv = [
        "-alsologtostderr",
        "-stderrthreshold=INFO",
        "-v",
        "1",
        "-repos",
        "app",
        "-interval",
        "60",
        "-max-images",
        "100",
        "-kubeconfig=",
        "-namespaces",
        "default",
    ]
    assert main(argv, app=fake_app) == 0
    (settings,) = fake_app
    assert settings.interval == timedelta(hours=1)
    assert settings.rules.max_images == 100
    assert settings.kubeconfig is None
    assert settings.log_level == logging.DEBUG


# -- glog flags


@pytest.mark.parametrize(
    ("argv", "level"),
    [
        ([], logging.INFO),
        (["-v=0"], logging.INFO),
        (["-v=1"], logging.DEBUG),
        (["--v", "5"], logging.DEBUG),
        (["-stderrthreshold=WARNING"], logging.WARNING),
        (["-stderrthreshold=error"], logging.ERROR),
        (["-stderrthreshold=FATAL"], logging.CRITICAL),
        (["-stderrthreshold=2"], logging.ERROR),
        (["-stderrthreshold=0", "-v=2"], logging.DEBUG),
        (["-stderrthreshold=INFO", "-v=2"], logging.DEBUG),
        (["-stderrthreshold=WARNING", "-v=2"], logging.WARNING),
    ],
)
def test_glog_levels(argv: list[str], level: int) -> None:
    assert parse("-repos=app", *argv).log_level == level


@pytest.mark.parametrize(
    "argv",
    [
        ["-logtostderr"],
        ["-logtostderr=true"],
        ["--logtostderr=true"],
        ["-alsologtostderr"],
        ["-alsologtostderr=false"],
    ],
)
def test_glog_bools_are_accepted_silently(
    argv: list[str], fake_app: FakeApp, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["-repos=app", *argv], app=fake_app) == 0
    assert "ignored" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "warning"),
    [
        (["-log_dir=/var/log"], "-log_dir='/var/log' is ignored: no log files are written"),
        (["-vmodule=foo=2"], "-vmodule='foo=2' is ignored"),
        (["-log_backtrace_at", "main.go:10"], "-log_backtrace_at='main.go:10' is ignored"),
        (["-logtostderr=false"], "-logtostderr=false is ignored: logs always go to stderr"),
    ],
)
def test_unmapped_glog_flags_are_accepted_with_a_warning(
    argv: list[str], warning: str, fake_app: FakeApp, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["-repos=app", *argv], app=fake_app) == 0
    assert fake_app
    assert re.search(r"WARNING controller\.cli " + re.escape(warning), capsys.readouterr().err)


# -- new options


def test_new_options() -> None:
    settings = parse(
        "-repos=app,team-*",
        "--keep-tags=latest,stable",
        "--keep-younger-than=7d",
        "--keep-pulled-within",
        "30d",
        "--exclude-repos=team-x",
        "--max-deletions-per-cycle=200",
        "--concurrency=4",
        "--once",
        "--output=json",
        "--kube-context=a",
        "--allow-empty",
        "--max-staleness=10m",
        "--protect-workloads=deployments,jobs",
        "--leader-elect=false",
        "--lease-name=cleanup.example.com",
        "--interval-jitter=0.5",
        "--metrics-address=127.0.0.1:9090",
        "--log-format=json",
    )
    assert settings.rules.keep_tags == {"latest", "stable"}
    assert settings.rules.keep_younger_than == timedelta(days=7)
    assert settings.rules.keep_pulled_within == timedelta(days=30)
    assert settings.repositories.exclude == ("team-x",)
    assert settings.repositories.exact_names is None
    assert settings.rules.max_deletions_per_cycle == 200
    assert settings.concurrency == 4
    assert settings.once is True
    assert settings.output == "json"
    assert settings.kube_contexts == ("a",)
    assert settings.allow_empty is True
    assert settings.max_staleness == timedelta(minutes=10)
    assert settings.protect_workloads == {"deployments", "jobs"}
    assert settings.leader_elect is False
    assert settings.lease_name == "cleanup.example.com"
    assert settings.lease_namespace is None
    assert settings.interval_jitter == 0.5
    assert settings.metrics_address == "127.0.0.1:9090"
    assert settings.log_format == "json"


def test_new_option_defaults() -> None:
    settings = parse("-repos=app")
    assert settings.rules.keep_tags == {"latest"}
    assert settings.concurrency == 8
    assert settings.once is False
    assert settings.output == "table"
    assert settings.kube_contexts == ()
    assert settings.in_cluster is False
    assert settings.allow_empty is False
    assert settings.max_staleness == timedelta(minutes=5)
    assert settings.protect_workloads == DEFAULT_PROTECT_WORKLOADS
    assert settings.leader_elect is True
    assert settings.lease_name == "kube-ecr-cleanup-controller"
    assert settings.interval_jitter == 0.1
    assert settings.metrics_address == ":8080"
    assert settings.log_format == "text"


def test_new_options_accept_single_dash() -> None:
    settings = parse("-repos=app", "-once", "-keep-tags", "v1", "-concurrency=2")
    assert (settings.once, settings.rules.keep_tags, settings.concurrency) == (
        True,
        frozenset({"v1"}),
        2,
    )


def test_kube_context_is_repeatable_and_a_comma_list() -> None:
    argv = ("-repos=x", "--kube-context", "a", "--kube-context", "b,c")
    assert parse(*argv).kube_contexts == ("a", "b", "c")
    assert parse("-repos=x", env={"ECR_CLEANUP_KUBE_CONTEXT": "a, b"}).kube_contexts == ("a", "b")


@pytest.mark.parametrize(
    ("value", "kinds"),
    [
        ("true", DEFAULT_PROTECT_WORKLOADS),
        ("all", DEFAULT_PROTECT_WORKLOADS | {"controllerrevisions"}),
        ("false", frozenset()),
        ("none", frozenset()),
        ("cronjobs", frozenset({"cronjobs"})),
    ],
)
def test_protect_workloads_forms(value: str, kinds: frozenset[str]) -> None:
    assert parse("-repos=x", f"--protect-workloads={value}").protect_workloads == kinds


def test_keep_tags_may_be_emptied() -> None:
    assert parse("-repos=x", "--keep-tags=").rules.keep_tags == frozenset()


@given(st.integers(min_value=1, max_value=10**6))
def test_interval_integer_is_minutes(minutes: int) -> None:
    assert parse("-repos=x", f"-interval={minutes}").interval == timedelta(minutes=minutes)


# -- kubeconfig, in-cluster, lease namespace


def test_kubeconfig_env_fallback_and_precedence(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    one.write_text("")
    two.write_text("")
    joined = f"{one}:{two}"
    assert parse("-repos=x", env={"KUBECONFIG": joined}).kubeconfig == joined
    assert parse("-repos=x", f"-kubeconfig={one}", env={"KUBECONFIG": "/nope"}).kubeconfig == str(
        one
    )
    env = {"ECR_CLEANUP_KUBECONFIG": str(two), "KUBECONFIG": str(one)}
    assert parse("-repos=x", env=env).kubeconfig == str(two)


def test_in_cluster_ignores_kubeconfig_env() -> None:
    settings = parse("-repos=x", "--in-cluster", env={"KUBECONFIG": "/nope"})
    assert settings.in_cluster is True
    assert settings.kubeconfig is None


def test_lease_namespace_comes_from_the_pod_when_unset(tmp_path: Path) -> None:
    pod_namespace = tmp_path / "namespace"
    pod_namespace.write_text("ops\n")

    def lease_namespace(*argv: str) -> str | None:
        return parse_settings(("-repos=x", *argv), {}, namespace_file=pod_namespace).lease_namespace

    assert lease_namespace() == "ops"
    assert lease_namespace("--lease-namespace=infra") == "infra"
    assert lease_namespace("--leader-elect=false") is None
    assert parse("-repos=x").lease_namespace is None


# -- --config


def test_config_file_overrides_inherit_the_flags(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "repositories:\n"
        '  - name: "team-*"\n'
        "    max-images: 50\n"
        "    keep-tags: [latest, stable]\n"
        '    keep-filters: ["^release-"]\n'
        "    keep-younger-than: 7d\n"
        "    keep-pulled-within: 30d\n"
        "    max-deletions-per-cycle: 200\n"
        "  - name: app\n"
        "    max-images: 10\n"
    )
    settings = parse("-repos=*", "-max-images=500", "--keep-younger-than=1d", f"--config={config}")
    team = settings.rules_for("team-a")
    assert team.max_images == 50
    assert team.keep_tags == {"latest", "stable"}
    assert team.keep_younger_than == timedelta(days=7)
    app = settings.rules_for("app")
    assert (app.max_images, app.keep_younger_than) == (10, timedelta(days=1))
    assert settings.rules_for("other") == settings.rules
    assert settings.rules.max_images == 500


def test_config_file_from_env(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("repositories: [{name: app, max-images: 3}]\n")
    settings = parse("-repos=app", env={"ECR_CLEANUP_CONFIG": str(config)})
    assert settings.rules_for("app").max_images == 3


# -- the environment


ENV_CASES: list[tuple[str, str, Callable[[Settings], object], object]] = [
    ("ECR_CLEANUP_MAX_IMAGES", "42", lambda s: s.rules.max_images, 42),
    ("ECR_CLEANUP_INTERVAL", "5", lambda s: s.interval, timedelta(minutes=5)),
    ("ECR_CLEANUP_REGION", "us-west-2", lambda s: s.region, "us-west-2"),
    ("ECR_CLEANUP_REGISTRY_ID", "000000000000", lambda s: s.registry_id, "000000000000"),
    ("ECR_CLEANUP_DRY_RUN", "false", lambda s: s.dry_run, False),
    ("ECR_CLEANUP_KEEP_FILTERS", "a,b", lambda s: len(s.rules.keep_filters), 2),
    ("ECR_CLEANUP_NAMESPACES", "prod", lambda s: s.namespaces, ("prod",)),
    ("ECR_CLEANUP_V", "3", lambda s: s.log_level, logging.DEBUG),
    ("ECR_CLEANUP_STDERRTHRESHOLD", "ERROR", lambda s: s.log_level, logging.ERROR),
    ("ECR_CLEANUP_KEEP_TAGS", "prod", lambda s: s.rules.keep_tags, {"prod"}),
    ("ECR_CLEANUP_KEEP_YOUNGER_THAN", "2w", lambda s: s.rules.keep_younger_than, timedelta(14)),
    ("ECR_CLEANUP_KEEP_PULLED_WITHIN", "1d", lambda s: s.rules.keep_pulled_within, timedelta(1)),
    (
        "ECR_CLEANUP_PROTECT_RESOURCES",
        "keda-scaledjobs",
        lambda s: [e.qualified for e in s.protect_resources],
        ["scaledjobs.keda.sh"],
    ),
    (
        "ECR_CLEANUP_DELETE_ARCHIVED_AFTER",
        "180d",
        lambda s: s.rules.delete_archived_after,
        timedelta(180),
    ),
    ("ECR_CLEANUP_EXCLUDE_REPOS", "b", lambda s: s.repositories.exclude, ("b",)),
    ("ECR_CLEANUP_MAX_DELETIONS_PER_CYCLE", "9", lambda s: s.rules.max_deletions_per_cycle, 9),
    (
        "ECR_CLEANUP_DELETE_ORPHANED_ARTIFACTS",
        "1",
        lambda s: s.rules.delete_orphaned_artifacts,
        True,
    ),
    ("ECR_CLEANUP_CONCURRENCY", "3", lambda s: s.concurrency, 3),
    ("ECR_CLEANUP_ONCE", "true", lambda s: s.once, True),
    ("ECR_CLEANUP_OUTPUT", "json", lambda s: s.output, "json"),
    ("ECR_CLEANUP_DISPOSAL", "archive", lambda s: s.disposal, "archive"),
    ("ECR_CLEANUP_IN_CLUSTER", "1", lambda s: s.in_cluster, True),
    ("ECR_CLEANUP_ALLOW_EMPTY", "T", lambda s: s.allow_empty, True),
    (
        "ECR_CLEANUP_PROTECT_ECS",
        "eu-west-1/prod-*",
        lambda s: s.protect_aws,
        (AwsScope("ecs", "eu-west-1", "prod-*"),),
    ),
    ("ECR_CLEANUP_PROTECT_LAMBDA", "true", lambda s: s.protect_aws, (AwsScope("lambda"),)),
    (
        "ECR_CLEANUP_AWS_SOURCES_INTERVAL",
        "5m",
        lambda s: s.aws_sources_interval,
        timedelta(minutes=5),
    ),
    ("ECR_CLEANUP_ECS_KEEP_TASK_DEFINITIONS", "3", lambda s: s.ecs_keep_task_definitions, 3),
    ("ECR_CLEANUP_ALLOW_EMPTY_CLUSTERS", "staging", lambda s: s.allow_empty_clusters, ("staging",)),
    ("ECR_CLEANUP_MAX_STALENESS", "1m", lambda s: s.max_staleness, timedelta(minutes=1)),
    ("ECR_CLEANUP_PROTECT_WORKLOADS", "none", lambda s: s.protect_workloads, frozenset()),
    ("ECR_CLEANUP_LEADER_ELECT", "false", lambda s: s.leader_elect, False),
    ("ECR_CLEANUP_LEASE_NAME", "l", lambda s: s.lease_name, "l"),
    ("ECR_CLEANUP_LEASE_NAMESPACE", "ops", lambda s: s.lease_namespace, "ops"),
    ("ECR_CLEANUP_LEASE_DURATION", "30s", lambda s: s.lease_duration, timedelta(seconds=30)),
    ("ECR_CLEANUP_INTERVAL_JITTER", "0", lambda s: s.interval_jitter, 0.0),
    ("ECR_CLEANUP_METRICS_ADDRESS", ":9", lambda s: s.metrics_address, ":9"),
    ("ECR_CLEANUP_LOG_FORMAT", "json", lambda s: s.log_format, "json"),
]


@pytest.mark.parametrize(("env", "value", "get", "expected"), ENV_CASES)
def test_env_vars(
    env: str, value: str, get: Callable[[Settings], object], expected: object
) -> None:
    assert get(parse("-repos=a,b", env={env: value})) == expected


# A sample per parser of the retention knobs: the flag or variable text, the same value as a
# --config file holds it, and the rule value both must give. A knob with a new parser fails
# below until its parser has a sample here.
KNOB_SAMPLES: dict[str, tuple[str, object, object]] = {
    "parse_positive_int": ("7", 7, 7),
    "_parse_tags": ("a, b", ["a", "b"], frozenset({"a", "b"})),
    "parse_regexes": ("^a,b{1,2}$", ["^a", "b{1,2}$"], (re.compile("^a"), re.compile("b{1,2}$"))),
    "parse_duration": ("2w", "2w", timedelta(weeks=2)),
    "parse_bool": ("true", True, True),
}


@pytest.mark.parametrize("knob", RULE_KNOBS, ids=lambda knob: knob.name)
def test_every_retention_knob_sets_its_rule_by_flag_variable_and_config_key(
    knob: RuleKnob[object], tmp_path: Path
) -> None:
    text, value, expected = KNOB_SAMPLES[getattr(knob.parse, "__name__", "")]
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({"repositories": [{"name": "app", knob.name: value}]}))
    variable = "ECR_CLEANUP_" + knob.name.upper().replace("-", "_")
    by_flag = parse("-repos=app", f"--{knob.name}={text}").rules
    by_variable = parse("-repos=app", env={variable: text}).rules
    by_config = parse("-repos=app", f"--config={config}").rules_for("app")
    change: dict[str, Any] = {knob.name.replace("-", "_"): expected}
    wanted = dataclasses.replace(Rules(), **change)
    assert wanted != Rules()  # the sample is not the default
    assert by_flag == by_variable == by_config == wanted


def test_allow_empty_namespaces_from_env_with_the_namespaces() -> None:
    env = {"ECR_CLEANUP_NAMESPACES": "shop,batch", "ECR_CLEANUP_ALLOW_EMPTY_NAMESPACES": "batch"}
    assert parse("-repos=a", env=env).allow_empty_namespaces == ("batch",)


def test_env_var_cases_cover_every_value_flag() -> None:
    covered = {env for env, *_ in ENV_CASES} | {
        "ECR_CLEANUP_ALLOW_EMPTY_NAMESPACES",  # needs -namespaces too: its own test above
        "ECR_CLEANUP_REPOS",
        "ECR_CLEANUP_KUBECONFIG",
        "ECR_CLEANUP_CONFIG",
        "ECR_CLEANUP_KUBE_CONTEXT",
        "ECR_CLEANUP_LOGTOSTDERR",
        "ECR_CLEANUP_ALSOLOGTOSTDERR",
        "ECR_CLEANUP_LOG_DIR",
        "ECR_CLEANUP_VMODULE",
        "ECR_CLEANUP_LOG_BACKTRACE_AT",
    }
    assert covered == {flag.env for flag in FLAGS}


def test_repos_from_env() -> None:
    assert parse(env={"ECR_CLEANUP_REPOS": "a, b"}).repositories.include == ("a", "b")


def test_command_line_beats_environment_beats_default() -> None:
    env = {"ECR_CLEANUP_MAX_IMAGES": "42", "ECR_CLEANUP_DRY_RUN": "false"}
    assert parse("-repos=a").rules.max_images == 900
    assert parse("-repos=a", env=env).rules.max_images == 42
    assert parse("-repos=a", "-max-images=7", env=env).rules.max_images == 7
    assert parse("-repos=a", env=env).dry_run is False
    assert parse("-repos=a", "-dry-run", env=env).dry_run is True
    contexts = {"ECR_CLEANUP_KUBE_CONTEXT": "e1,e2"}
    assert parse("-repos=a", "--kube-context=c", env=contexts).kube_contexts == ("c",)


def test_empty_env_var_counts_as_unset() -> None:
    assert parse("-repos=a", env={"ECR_CLEANUP_MAX_IMAGES": "", "ECR_CLEANUP_DRY_RUN": " "}) == (
        parse("-repos=a")
    )


def test_bad_env_value_is_an_error_naming_the_env_var(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ECR_CLEANUP_MAX_IMAGES", "0")
    line = error_line(capsys, ["-repos=app"])
    assert line.startswith("ECR_CLEANUP_MAX_IMAGES: expected a positive integer")
    monkeypatch.setenv("ECR_CLEANUP_MAX_IMAGES", "10")
    monkeypatch.setenv("ECR_CLEANUP_DRY_RUN", "nope")
    assert error_line(capsys, ["-repos=app"]).startswith("ECR_CLEANUP_DRY_RUN: expected a boolean")


def test_unknown_env_var_is_warned_about(
    monkeypatch: pytest.MonkeyPatch, fake_app: FakeApp, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ECR_CLEANUP_DRYRUN", "false")
    assert main(["-repos=app"], app=fake_app) == 0
    assert "ECR_CLEANUP_DRYRUN is not a setting and is ignored" in capsys.readouterr().err
    assert fake_app[0].dry_run is True


# -- errors: exit status 2 and one line naming the culprit


@pytest.mark.parametrize(
    ("argv", "start"),
    [
        (["-repos=app", "-nope=1"], "-nope: unknown flag"),
        (["-repos=app", "--nope"], "--nope: unknown flag"),
        (["-repos=app", "-maxi", "5"], "-maxi: unknown flag"),  # no abbreviations
        (["-repos=app", "-dry"], "-dry: unknown flag"),
        (["-repos=app", "-verbose"], "-verbose: unknown flag"),
        (["-repos=app", "-v2"], "-v2: unknown flag"),
        (["-repos=app", "stray"], "command line: unexpected argument 'stray'"),
        (["-repos=app", "--", "-x"], "command line: unexpected argument '--'"),
        (["-repos"], "-repos: expected one argument"),
        ([], "-repos: required"),
        (["-repos=,"], "-repos: required"),
        (["-repos=a", "-exclude-repos=a"], "--exclude-repos: excludes every repository"),
        (["-repos=a", "-keep-filters=ok,a)b"], "-keep-filters: invalid regular expression 'a)b'"),
        (["-repos=a", "-keep-filters=ok,(bad"], "-keep-filters: 'ok,(bad': an unclosed '('"),
        (["-repos=a", "-max-images=0"], "-max-images: expected a positive integer, got 0"),
        (["-repos=a", "--max-images", "-5"], "-max-images: expected a positive integer, got -5"),
        (["-repos=a", "-max-images=x"], "-max-images: expected a positive integer"),
        (["-repos=a", "-interval=0"], "-interval: expected a positive integer"),
        (["-repos=a", "-interval=soon"], "-interval: expected minutes as an integer"),
        (["-repos=a", "--concurrency=0"], "--concurrency: expected a positive integer"),
        (["-repos=a", "--max-deletions-per-cycle=0"], "--max-deletions-per-cycle: expected a"),
        (["-repos=a", "--max-staleness=5"], "--max-staleness: expected a positive duration"),
        (["-repos=a", "--keep-younger-than=-1d"], "--keep-younger-than: expected a positive"),
        (["-repos=a", "--keep-pulled-within=0s"], "--keep-pulled-within: expected a positive"),
        (["-repos=a", "-dry-run=yes"], "-dry-run: expected a boolean"),
        (["-repos=a", "-dry-run", "nope"], "-dry-run: a boolean flag takes its value after '='"),
        (["-repos=a", "-dry-run=nope"], "-dry-run: expected a boolean"),
        (["-repos=a", "-logtostderr=maybe"], "-logtostderr: expected a boolean"),
        (["-repos=a", "--once=2"], "--once: expected a boolean"),
        (["-repos=a", "-v=x"], "-v: expected a verbosity level"),
        (["-repos=a", "-stderrthreshold=DEBUG"], "-stderrthreshold: expected INFO, WARNING"),
        (["-repos=a", "--output=xml"], "--output: expected one of table, json, got 'xml'"),
        (["-repos=a", "--log-format=yaml"], "--log-format: expected one of text, json"),
        (["-repos=a", "-namespaces=Prod"], "-namespaces: 'Prod' is not a valid namespace"),
        (["-repos=a", "-registry-id=abc"], "-registry-id: expected a 12-digit AWS account id"),
        (["-repos=a", "--interval-jitter=2"], "--interval-jitter: expected a fraction"),
        (["-repos=a", "--metrics-address=:99999"], "--metrics-address: expected host:port"),
        (["-repos=a", "--protect-workloads=pods"], "--protect-workloads: unknown workload kind"),
        (["-repos=a", "--lease-name=Bad_Name"], "--lease-name: 'Bad_Name' is not a valid"),
        (["-repos=a", "--lease-namespace=a.b"], "--lease-namespace: 'a.b' is not a valid"),
        (["-repos=a", "--lease-duration=1s"], "--lease-duration: must be at least 2s"),
        (["-repos=a", "-kubeconfig=/nonexistent/kubeconfig"], "-kubeconfig: cannot read"),
        (["-repos=a", "--config=/nonexistent.yaml"], "--config: cannot read '/nonexistent.yaml'"),
        (["-repos=a", "--in-cluster", "--kube-context=x"], "--in-cluster: cannot be combined"),
        (["-repos=a", "-region=not a region!"], "-region: 'not a region!' is not an AWS region"),
        (["-repos=a", "-region=garbage"], "-region: 'garbage' is not an AWS region name"),
        (["-repos=a", "-interval=1ms"], "-interval: must be at least 1s, got '1ms'"),
        (["-repos=a", "-interval=0.5s"], "-interval: must be at least 1s"),
        (["-repos=a", "--concurrency=100000"], "--concurrency: must be from 1 to 256, got 100000"),
        (
            ["-repos=a", "--allow-empty-namespaces=batch"],
            "--allow-empty-namespaces: batch is not in -namespaces (unset: the check is per cluster)",
        ),
        (
            ["-repos=a", "-namespaces=shop", "--allow-empty-namespaces=batch"],
            "--allow-empty-namespaces: batch is not in -namespaces (shop)",
        ),
    ],
)
def test_errors_exit_2_with_one_line(
    argv: list[str], start: str, capsys: pytest.CaptureFixture[str]
) -> None:
    line = error_line(capsys, argv)
    assert line.startswith(start), line


def test_in_cluster_with_kubeconfig_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text("")
    line = error_line(capsys, ["-repos=a", "-in-cluster", f"-kubeconfig={kubeconfig}"])
    assert line.startswith("--in-cluster: cannot be combined with -kubeconfig")


def test_unreadable_kubeconfig_from_env_names_kubeconfig(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path}/missing")
    assert error_line(capsys, ["-repos=a"]).startswith(f"KUBECONFIG: cannot read '{tmp_path}/")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path))  # a directory
    assert error_line(capsys, ["-repos=a"]).startswith("KUBECONFIG: cannot read")


@pytest.mark.parametrize(
    ("text", "start"),
    [
        ("repositories: [\n  {name: a\n", "--config {path}: invalid YAML: "),
        ("repositories:\n  - name: a\n\tmax-images: 1\n", "--config {path}: invalid YAML: "),
        (
            "repositories:\n  - name: a\n    max-images: 1\n    max-images: 2\n",
            "--config {path}: invalid YAML: duplicate key 'max-images' at line 4, column 5",
        ),
        ("", "--config {path}: expected a mapping with a 'repositories' list, got an empty"),
        ("- name: a\n", "--config {path}: expected a mapping"),
        (
            "repositories:\n  - name: a\n    max-image: 5\n",
            "--config {path}: repositories[0].max-image: unknown key 'max-image': expected one of",
        ),
        (
            "repositories:\n  - name: a\n  - name: b\n    max-images: 0\n",
            "--config {path}: repositories[1].max-images: expected a positive integer",
        ),
        (
            "repositories:\n  - name: a\n    keep-filters: ['[']\n",
            "--config {path}: repositories[0].keep-filters[0]: invalid regular expression '['",
        ),
        ("repositories:\n  - max-images: 5\n", "--config {path}: repositories[0].name: required"),
    ],
)
def test_config_file_errors(
    text: str, start: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "overrides.yaml"
    path.write_text(text)
    line = error_line(capsys, ["-repos=a", f"--config={path}"])
    assert line.startswith(start.format(path=path)), line


def test_yaml_error_names_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("repositories:\n  - name: a\n    max-images: [1\n")
    line = error_line(capsys, ["-repos=a", f"--config={path}"])
    assert re.search(r"invalid YAML: .* at line \d+, column \d+$", line)


def test_unreadable_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = error_line(capsys, ["-repos=a", f"-config={tmp_path}"])  # a directory
    assert line.startswith(f"--config: cannot read '{tmp_path}'")
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00")
    line = error_line(capsys, ["-repos=a", f"--config={tmp_path / 'bin.yaml'}"])
    assert line.startswith("--config: cannot read")


@pytest.mark.parametrize(
    ("text", "start"),
    [
        ("{1: 2}: 3\n", "--config {path}: invalid YAML: a dict cannot be a key at line 1"),
        (
            "repositories:\n  - name: a\n    [x]: 1\n",
            "--config {path}: invalid YAML: a list cannot",
        ),
        (
            "repositories:\n  - name: 'app/[a'\n",
            "--config {path}: repositories[0].name: 'app/[a': the '[' at position 4 is never closed",
        ),
        (
            "repositories:\n  - name: other\n",
            "--config {path}: repositories[0].name: 'other' matches no repository that -repos "
            "(a,team-*) selects, so this entry would never apply",
        ),
    ],
)
def test_config_file_errors_found_by_an_adversary(
    text: str, start: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "overrides.yaml"
    path.write_text(text)
    line = error_line(capsys, ["-repos=a,team-*", f"--config={path}"])
    assert line.startswith(start.format(path=path)), line


def test_config_glob_that_no_exactly_named_repository_matches(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("repositories:\n  - name: 'team-*'\n")
    line = error_line(capsys, ["-repos=app,web", f"--config={path}"])
    assert line == (
        f"--config {path}: repositories[0].name: 'team-*' matches no repository that -repos "
        "(app,web) selects, so this entry would never apply"
    )
    # excluded by --exclude-repos: never applies either
    path.write_text("repositories:\n  - name: app\n")
    line = error_line(capsys, ["-repos=*", "--exclude-repos=app", f"--config={path}"])
    assert "'app' matches no repository that -repos (*) minus --exclude-repos (app)" in line


def test_config_yaml_merge_keys_work_as_in_safe_load(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "defaults: &defaults {max-images: 5, keep-younger-than: 3d}\n"
        "repositories:\n"
        "  - <<: *defaults\n"
        "    name: app\n"
        "  - <<: *defaults\n"
        "    name: web\n"
        "    max-images: 7\n"
    )
    with pytest.raises(ConfigError, match="unknown key 'defaults'"):
        parse("-repos=app,web", f"--config={path}")
    path.write_text(path.read_text().replace("defaults: &defaults", "x-defaults: &defaults"))
    with pytest.raises(ConfigError, match="unknown key 'x-defaults'"):
        parse("-repos=app,web", f"--config={path}")
    path.write_text(
        "repositories:\n"
        "  - &app {name: app, max-images: 5, keep-younger-than: 3d}\n"
        "  - <<: *app\n"
        "    name: web\n"
        "    max-images: 7\n"
    )
    settings = parse("-repos=app,web", f"--config={path}")
    assert settings.rules_for("app").max_images == 5
    assert settings.rules_for("web").max_images == 7  # its own key wins over the merged one
    assert settings.rules_for("web").keep_younger_than == timedelta(days=3)


def test_config_empty_path_and_endless_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert error_line(capsys, ["-repos=a", "--config="]) == (
        "--config: expected the path of a YAML file, got ''"
    )
    assert error_line(capsys, ["-repos=a", "--config=/dev/zero"]) == (
        "--config: '/dev/zero' is larger than 4 MiB"
    )


def test_config_duplicate_check_makes_no_glob_match_per_pair_of_entries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the old check called fnmatch for every (entry, earlier entry) pair: 16,000 entries took
    # 99 s. Count the glob matches the validation makes for 2,000 entries behind 10 globs.
    from controller import settings as settings_module
    from controller.settings import parse_config

    calls = 0
    real = fnmatch.fnmatchcase

    def counting(name: str, pattern: str) -> bool:
        nonlocal calls
        calls += 1
        return real(name, pattern)

    monkeypatch.setattr(settings_module, "fnmatchcase", counting)
    entries = [{"name": f"g{i}-*"} for i in range(10)] + [{"name": f"r{i}"} for i in range(2000)]
    overrides = parse_config({"repositories": entries}, defaults=Rules(), source="big.yaml")
    assert len(overrides) == 2010
    assert calls == 0  # per-pair fnmatch (about 2,000,000 calls) is gone


def test_parse_settings_raises_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        parse("-repos=a", "-max-images=0")
    assert caught.value.field == "-max-images"
    assert "a zero or negative count" in caught.value.reason


def test_subprocess_exit_status_and_single_stderr_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "controller", "-max-images=0", "-repos=x"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"{ERROR_PREFIX}-max-images: expected a positive integer, got 0: "
        "a zero or negative count is not allowed"
    ]


# -- start-up


def test_main_logs_configuration_and_dry_run_warning(
    fake_app: FakeApp, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["-repos=app"], app=fake_app) == 0
    assert fake_app[0].dry_run is True
    err = capsys.readouterr().err
    assert re.search(r"INFO controller\.cli kube-ecr-cleanup-controller \S+ starting with \{", err)
    assert '"dry_run": true' in err
    assert re.search(
        r"WARNING controller\.cli DRY RUN: nothing will be deleted.*-dry-run=false", err
    )


def test_main_without_dry_run_has_no_dry_run_warning(
    fake_app: FakeApp, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["-repos=app", "-dry-run=false"], app=fake_app) == 0
    assert "DRY RUN" not in capsys.readouterr().err


def test_a_signal_before_the_event_loop_is_recorded_not_fatal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # SIGTERM while the controller's modules load used to kill the process with -15
    def run(settings: Settings, *, early_signal: Callable[[], int | None]) -> int:
        os.kill(os.getpid(), signal.SIGTERM)  # the kubelet, during start-up
        received = early_signal()
        return 7 if received == signal.SIGTERM else 0

    before = signal.getsignal(signal.SIGTERM)
    assert main(["-repos=app"], app=run) == 7
    assert signal.getsignal(signal.SIGTERM) is before  # handlers restored after main


def test_main_returns_the_app_status() -> None:
    assert main(["-repos=app"], app=lambda settings, **_: 3) == 3


def test_main_hands_the_settings_to_the_app_it_is_given() -> None:
    # the entry point is passed in: no controller.app module is imported or replaced
    runs: list[tuple[Settings, int | None]] = []

    def app(settings: Settings, *, early_signal: Callable[[], int | None]) -> int:
        runs.append((settings, early_signal()))
        return 5

    assert main(["-repos=app", "-max-images=3"], app=app) == 5
    ((settings, early),) = runs
    assert settings.rules.max_images == 3
    assert early is None


def test_main_json_logs(fake_app: FakeApp, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-repos=app", "--log-format=json", "-namespaces=prod"], app=fake_app) == 0
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert {line["logger"] for line in lines} == {"controller.cli"}
    start = next(line for line in lines if line["message"].endswith("starting"))
    assert start["level"] == "INFO"
    assert start["configuration"]["namespaces"] == ["prod"]
    assert any(line["level"] == "WARNING" and "DRY RUN" in line["message"] for line in lines)


def test_debug_only_for_the_controller_loggers(fake_app: FakeApp) -> None:
    assert main(["-repos=app", "-v=2"], app=fake_app) == 0
    assert logging.getLogger("controller.app").isEnabledFor(logging.DEBUG)
    assert not logging.getLogger("botocore").isEnabledFor(logging.DEBUG)


# -- help and the flag table


@pytest.mark.parametrize("flag", ["-h", "-help", "--help"])
def test_help(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([flag]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out == help_text()
    assert out.startswith("usage: kube-ecr-cleanup-controller")


def test_help_lists_every_flag_with_env_var_and_default() -> None:
    text = " ".join(help_text().split())
    for flag in FLAGS:
        assert f"-{flag.name} " in text, flag.name
        assert f"--{flag.name} " in text, flag.name
        default = f"default: {flag.default}" if flag.default else "default: unset"
        assert f"[env {flag.env}; {default}]" in text, flag.name
    for word in ("Default: ALL namespaces", "-dry-run=false deletes", "SAFETY"):
        assert word in text


def test_flag_table() -> None:
    names = [flag.name for flag in FLAGS]
    assert len(names) == len(set(names))
    go_flags = {"max-images", "interval", "repos", "region", "registry-id", "kubeconfig"}
    go_flags |= {"dry-run", "keep-filters", "namespaces"}
    glog_flags = {"v", "logtostderr", "alsologtostderr", "log_dir", "stderrthreshold"}
    glog_flags |= {"vmodule", "log_backtrace_at"}
    assert go_flags | glog_flags <= set(names)
    for flag in FLAGS:
        assert flag.env == "ECR_CLEANUP_" + flag.name.upper().replace("-", "_")
        assert flag.help
    by_name = {flag.name: flag for flag in FLAGS}
    assert by_name["max-images"].default == "900"
    assert by_name["interval"].default == "30"
    assert by_name["dry-run"].default == "true"
    assert by_name["metrics-address"].default == ":8080"
    assert by_name["max-staleness"].default == "5m"
    assert by_name["max-images"].option == "-max-images"
    assert by_name["keep-tags"].option == "--keep-tags"


@pytest.mark.parametrize(
    ("variable", "value", "start"),
    [
        ("AWS_REGION", "garbage", "AWS_REGION: 'garbage' is not an AWS region name"),
        ("AWS_DEFAULT_REGION", "us east 1", "AWS_DEFAULT_REGION: 'us east 1' is not an AWS region"),
        (
            "AWS_ENDPOINT_URL_ECR",
            "not a url",
            "AWS_ENDPOINT_URL_ECR: expected an http:// or https://",
        ),
        ("AWS_ENDPOINT_URL", "ftp://host", "AWS_ENDPOINT_URL: expected an http:// or https://"),
        (
            "AWS_ENDPOINT_URL_ECR",
            "http://",
            "AWS_ENDPOINT_URL_ECR: expected an http:// or https://",
        ),
    ],
)
def test_aws_environment_errors_exit_2_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variable: str,
    value: str,
    start: str,
) -> None:
    monkeypatch.setenv(variable, value)
    line = error_line(capsys, ["-repos=a"])
    assert line.startswith(start), line


@pytest.mark.parametrize(
    "region",
    [
        "us-east-1",
        "eu-central-2",
        "us-gov-west-1",
        "cn-north-1",
        "us-isob-east-1",
        "eusc-de-east-1",
    ],
)
def test_every_partition_s_region_form_is_accepted(region: str) -> None:
    assert parse("-repos=a", f"-region={region}").region == region
    assert parse("-repos=a", env={"AWS_REGION": region}).region is None  # the SDK reads it


def test_the_region_flag_wins_over_a_bad_environment_region() -> None:
    assert (
        parse("-repos=a", "-region=eu-west-1", env={"AWS_REGION": "garbage"}).region == "eu-west-1"
    )


@pytest.mark.parametrize(
    ("text", "patterns"),
    [
        ("^release-[0-9]{1,3}$", ["^release-[0-9]{1,3}$"]),
        ("^release-,stable$", ["^release-", "stable$"]),
        ("^v[0-9]{1,2}\\.[0-9]+$,^hotfix-", ["^v[0-9]{1,2}\\.[0-9]+$", "^hotfix-"]),
        ("a\\,b,c", ["a\\,b", "c"]),
        ("[,;]x,(a|b,c)", ["[,;]x", "(a|b,c)"]),
    ],
)
def test_keep_filters_split_only_between_regexes(text: str, patterns: list[str]) -> None:
    settings = parse("-repos=a", f"-keep-filters={text}")
    assert [p.pattern for p in settings.rules.keep_filters] == patterns


def test_keep_filters_are_logged_as_parsed_at_start_up(
    fake_app: FakeApp, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["-repos=app", "-keep-filters=^release-[0-9]{1,3}$,^stable$"], app=fake_app) == 0
    err = capsys.readouterr().err
    assert "keep filters (-keep-filters): 2: '^release-[0-9]{1,3}$', '^stable$'" in err


def test_every_opt_out_of_a_safety_check_is_warned_about_at_start_up() -> None:
    from controller.cli import safety_warnings

    settings = parse(
        "-repos=app",
        "-namespaces=shop,batch",
        "--allow-empty-namespaces=batch",
        "--allow-empty-clusters=staging",
        "--protect-workloads=none",
        "--allow-empty",
    )
    warnings = safety_warnings(settings)
    assert warnings[0].startswith("DRY RUN: nothing will be deleted")
    assert any(w.startswith("only namespaces shop, batch protect their images") for w in warnings)
    assert any(w.startswith("--protect-workloads=none: only running pods") for w in warnings)
    assert (
        "--allow-empty: deletion proceeds even if a cluster or a listed namespace has no pod"
        in (warnings)
    )
    assert any(
        w.startswith("--allow-empty-namespaces: deletion proceeds even if batch") for w in warnings
    )
    assert any(
        w.startswith("--allow-empty-clusters: deletion proceeds even if staging") for w in warnings
    )
    assert safety_warnings(parse("-repos=app", "-dry-run=false")) == []
