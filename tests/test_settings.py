"""Tests of controller.settings: scalar parsers, repository selection, the --config schema."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.policy import Rules
from controller.settings import (
    DEFAULT_PROTECT_WORKLOADS,
    ConfigError,
    RepositoryOverride,
    RepositorySelection,
    Settings,
    compile_regex,
    format_duration,
    parse_address,
    parse_bool,
    parse_config,
    parse_duration,
    parse_fraction,
    parse_list,
    parse_namespaces,
    parse_positive_int,
    parse_workload_kinds,
    split_regexes,
)

SOURCE = "x.yaml"


def test_config_error_is_one_line_with_field_and_reason() -> None:
    error = ConfigError("-max-images", "expected\na positive   integer")
    assert error.field == "-max-images"
    assert error.reason == "expected a positive integer"
    assert str(error) == "-max-images: expected a positive integer"
    assert isinstance(error, ValueError)
    assert "\n" not in str(ConfigError("a\nb", "c"))


# -- durations


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("5m", timedelta(minutes=5)),
        ("2h", timedelta(hours=2)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("7d", timedelta(days=7)),
        ("2w", timedelta(weeks=2)),
        ("1w2d3h4m5s", timedelta(weeks=1, days=2, hours=3, minutes=4, seconds=5)),
        ("1.5h", timedelta(minutes=90)),
        (".5s", timedelta(milliseconds=500)),
        ("250ms", timedelta(milliseconds=250)),
        ("1m1m", timedelta(minutes=2)),
        (" 5m\n", timedelta(minutes=5)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "5", "0s", "0h0m", "-5m", "+5m", "5M", "1y", "abc", "1h 30m", "h", "5m-", "0.0000001s"],
)
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_duration(text, field="--max-staleness")
    assert caught.value.field == "--max-staleness"
    assert "duration" in caught.value.reason


def test_parse_duration_rejects_too_large() -> None:
    with pytest.raises(ConfigError, match="too large"):
        parse_duration("99999999999999w")


@pytest.mark.parametrize(
    ("duration", "text"),
    [
        (timedelta(minutes=30), "30m"),
        (timedelta(seconds=90), "1m30s"),
        (timedelta(days=14), "14d"),
        (timedelta(hours=1, seconds=1), "1h1s"),
        (timedelta(milliseconds=1500), "1.5s"),
        (timedelta(microseconds=1), "0.000001s"),
        (timedelta(0), "0s"),
        (-timedelta(minutes=5), "-5m"),
    ],
)
def test_format_duration(duration: timedelta, text: str) -> None:
    assert format_duration(duration) == text


@given(st.timedeltas(min_value=timedelta(microseconds=1), max_value=timedelta(days=10**6)))
def test_format_duration_round_trips(duration: timedelta) -> None:
    assert parse_duration(format_duration(duration)) == duration


@given(
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=10_000), st.sampled_from("smhdw")),
        min_size=1,
        max_size=5,
    ).filter(lambda parts: any(n for n, _ in parts))
)
def test_parse_duration_sums_its_parts(parts: list[tuple[int, str]]) -> None:
    unit = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    text = "".join(f"{n}{u}" for n, u in parts)
    assert parse_duration(text) == timedelta(seconds=sum(n * unit[u] for n, u in parts))


# -- booleans, counts, fractions, lists, regexes


@pytest.mark.parametrize("text", ["1", "t", "T", "TRUE", "true", "True"])
def test_parse_bool_true(text: str) -> None:
    assert parse_bool(text) is True


@pytest.mark.parametrize("text", ["0", "f", "F", "FALSE", "false", "False"])
def test_parse_bool_false(text: str) -> None:
    assert parse_bool(text) is False


@pytest.mark.parametrize("text", ["", "yes", "no", "on", "2", "tRUE", "y"])
def test_parse_bool_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match=r"^-dry-run: expected a boolean"):
        parse_bool(text, field="-dry-run")


@pytest.mark.parametrize(("text", "expected"), [("1", 1), ("900", 900), ("+5", 5), (" 7 ", 7)])
def test_parse_positive_int(text: str, expected: int) -> None:
    assert parse_positive_int(text) == expected


@pytest.mark.parametrize("text", ["0", "-1", "-0"])
def test_parse_positive_int_rejects_zero_or_negative(text: str) -> None:
    with pytest.raises(ConfigError, match="a zero or negative count"):
        parse_positive_int(text, field="-max-images")


@pytest.mark.parametrize("text", ["", "x", "1.5", "1_000", "1e3", "٣"])
def test_parse_positive_int_rejects_non_integers(text: str) -> None:
    with pytest.raises(ConfigError, match="expected a positive integer"):
        parse_positive_int(text)


@pytest.mark.parametrize(("text", "expected"), [("0", 0.0), ("1", 1.0), ("0.25", 0.25)])
def test_parse_fraction(text: str, expected: float) -> None:
    assert parse_fraction(text) == expected


@pytest.mark.parametrize("text", ["-0.1", "1.01", "nan", "inf", "x", ""])
def test_parse_fraction_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match="between 0 and 1"):
        parse_fraction(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("a,b", ("a", "b")), (" a , ,b,", ("a", "b")), ("", ()), ("a,a,b", ("a", "b"))],
)
def test_parse_list_trims_drops_empty_and_dedupes(text: str, expected: tuple[str, ...]) -> None:
    assert parse_list(text) == expected


def test_compile_regex_error_names_the_pattern() -> None:
    assert compile_regex("^release-").search("x-release-1") is None
    assert compile_regex("stable$").search("v1-stable") is not None
    with pytest.raises(ConfigError, match=r"^-keep-filters: invalid regular expression '\('"):
        compile_regex("(", field="-keep-filters")


def test_parse_namespaces() -> None:
    assert parse_namespaces("default, kube-system") == ("default", "kube-system")
    assert parse_namespaces("") == ()
    for bad in ("Prod", "a_b", "-a", "a" * 64):
        with pytest.raises(ConfigError, match="not a valid namespace name"):
            parse_namespaces(bad, field="-namespaces")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", DEFAULT_PROTECT_WORKLOADS),
        ("all", DEFAULT_PROTECT_WORKLOADS | {"controllerrevisions"}),
        ("false", frozenset()),
        ("none", frozenset()),
        ("NONE", frozenset()),
        ("deployments,cronjobs", frozenset({"deployments", "cronjobs"})),
        ("Deployment, job", frozenset({"deployments", "jobs"})),
        ("controllerrevisions", frozenset({"controllerrevisions"})),
    ],
)
def test_parse_workload_kinds(text: str, expected: frozenset[str]) -> None:
    assert parse_workload_kinds(text) == expected


def test_default_workload_kinds_are_the_six_without_controllerrevisions() -> None:
    six = {"deployments", "replicasets", "statefulsets", "daemonsets", "jobs", "cronjobs"}
    assert six == DEFAULT_PROTECT_WORKLOADS


@pytest.mark.parametrize("text", ["pods", "deployments,foo", "", ","])
def test_parse_workload_kinds_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match=r"^--protect-workloads: "):
        parse_workload_kinds(text, field="--protect-workloads")


@pytest.mark.parametrize("text", [":8080", "0.0.0.0:9090", "localhost:1", "[::]:65535"])
def test_parse_address(text: str) -> None:
    assert parse_address(text) == text


@pytest.mark.parametrize("text", ["8080", ":0", ":65536", ":x", ":", "::8080", "a b:80", "h:-1"])
def test_parse_address_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match=r"^--metrics-address: expected host:port"):
        parse_address(text, field="--metrics-address")


# -- repository selection


@pytest.mark.parametrize(
    ("include", "exclude", "name", "selected"),
    [
        (("app",), (), "app", True),
        (("app",), (), "app2", False),
        (("app",), (), "App", False),
        (("*",), (), "anything/at-all", True),
        (("team-*",), (), "team-a", True),
        (("team-*",), (), "other", False),
        (("team-?",), (), "team-ab", False),
        (("team-[ab]",), (), "team-b", True),
        (("*",), ("team-*",), "team-a", False),
        (("*",), ("team-*",), "app", True),
        (("app",), ("app",), "app", False),
        (("team-*",), ("team-keep",), "team-keep", False),
    ],
)
def test_selection_matches(
    include: tuple[str, ...], exclude: tuple[str, ...], name: str, selected: bool
) -> None:
    assert RepositorySelection(include=include, exclude=exclude).matches(name) is selected


@pytest.mark.parametrize(
    ("include", "exclude", "expected"),
    [
        (("app", "worker"), (), ("app", "worker")),
        (("app", "worker"), ("worker",), ("app",)),
        (("app", "worker"), ("w*",), ("app",)),
        (("app",), ("app",), ()),
        (("app", "team-*"), (), None),
        (("*",), (), None),
        (("team-[ab]",), (), None),
    ],
)
def test_selection_exact_names(
    include: tuple[str, ...], exclude: tuple[str, ...], expected: tuple[str, ...] | None
) -> None:
    assert RepositorySelection(include=include, exclude=exclude).exact_names == expected


# -- config file


FLAG_RULES = Rules(
    max_images=500,
    keep_tags=frozenset({"latest"}),
    keep_filters=(re.compile("^release-"),),
    keep_younger_than=timedelta(days=1),
)


def test_parse_config_full_entry() -> None:
    data = {
        "repositories": [
            {
                "name": "team-*",
                "max-images": 50,
                "keep-tags": ["latest", "stable"],
                "keep-filters": ["^release-", "-rc$"],
                "keep-younger-than": "7d",
                "keep-pulled-within": "30d",
                "max-deletions-per-cycle": 200,
            }
        ]
    }
    (override,) = parse_config(data, defaults=FLAG_RULES, source=SOURCE)
    assert override.pattern == "team-*"
    assert override.rules.max_images == 50
    assert override.rules.keep_tags == {"latest", "stable"}
    assert [p.pattern for p in override.rules.keep_filters] == ["^release-", "-rc$"]
    assert override.rules.keep_younger_than == timedelta(days=7)
    assert override.rules.keep_pulled_within == timedelta(days=30)
    assert override.rules.max_deletions_per_cycle == 200


def test_parse_config_inherits_unspecified_fields_from_the_flags() -> None:
    data = {"repositories": [{"name": "app", "max-images": 10}, {"name": "worker"}]}
    app, worker = parse_config(data, defaults=FLAG_RULES, source=SOURCE)
    assert app.rules == Rules(
        max_images=10,
        keep_tags=FLAG_RULES.keep_tags,
        keep_filters=FLAG_RULES.keep_filters,
        keep_younger_than=timedelta(days=1),
    )
    assert worker.rules == FLAG_RULES


def test_parse_config_null_turns_an_optional_rule_off() -> None:
    defaults = Rules(
        keep_younger_than=timedelta(days=1),
        keep_pulled_within=timedelta(days=2),
        max_deletions_per_cycle=5,
    )
    data = {
        "repositories": [
            {
                "name": "app",
                "keep-younger-than": None,
                "keep-pulled-within": None,
                "max-deletions-per-cycle": None,
            }
        ]
    }
    (override,) = parse_config(data, defaults=defaults, source=SOURCE)
    assert override.rules == Rules()


def test_parse_config_empty_list_and_empty_tags() -> None:
    assert parse_config({"repositories": []}, defaults=FLAG_RULES, source=SOURCE) == ()
    data = {"repositories": [{"name": "app", "keep-tags": [], "keep-filters": []}]}
    (override,) = parse_config(data, defaults=FLAG_RULES, source=SOURCE)
    assert override.rules.keep_tags == frozenset()
    assert override.rules.keep_filters == ()


def test_parse_config_keeps_file_order() -> None:
    data = {"repositories": [{"name": "team-a"}, {"name": "team-*"}, {"name": "b"}]}
    overrides = parse_config(data, defaults=FLAG_RULES, source=SOURCE)
    assert [o.pattern for o in overrides] == ["team-a", "team-*", "b"]


def _entry(**fields: object) -> dict[str, object]:
    return {"repositories": [{"name": "ok"}, {"name": "app", **fields}]}


@pytest.mark.parametrize(
    ("data", "field", "reason"),
    [
        (None, "--config x.yaml", "expected a mapping with a 'repositories' list, got an empty"),
        ([], "--config x.yaml", "expected a mapping with a 'repositories' list, got a list"),
        ("text", "--config x.yaml", "expected a mapping"),
        ({}, "--config x.yaml: repositories", "required"),
        ({"repos": []}, "--config x.yaml: repos", "unknown key 'repos': expected one of repo"),
        ({"repositories": {"name": "a"}}, "--config x.yaml: repositories", "expected a list"),
        ({"repositories": ["app"]}, "--config x.yaml: repositories[0]", "expected a mapping"),
        (
            {"repositories": [{"max-images": 5}]},
            "--config x.yaml: repositories[0].name",
            "required",
        ),
        ({"repositories": [{"name": 7}]}, "--config x.yaml: repositories[0].name", "a string"),
        ({"repositories": [{"name": " "}]}, "--config x.yaml: repositories[0].name", "expected"),
        (
            _entry(**{"max_images": 5}),
            "--config x.yaml: repositories[1].max_images",
            "unknown key 'max_images': expected one of name, max-images, keep-tags, keep-filters,"
            " keep-younger-than, keep-pulled-within, max-deletions-per-cycle",
        ),
        (
            _entry(**{"max-images": 0}),
            "--config x.yaml: repositories[1].max-images",
            "expected a positive integer, got 0: a zero or negative count",
        ),
        (
            _entry(**{"max-images": -3}),
            "--config x.yaml: repositories[1].max-images",
            "a zero or negative count",
        ),
        (
            _entry(**{"max-images": "50"}),
            "--config x.yaml: repositories[1].max-images",
            "expected a positive integer, got a string",
        ),
        (
            _entry(**{"max-images": True}),
            "--config x.yaml: repositories[1].max-images",
            "expected a positive integer, got a boolean",
        ),
        (
            _entry(**{"max-images": 5.0}),
            "--config x.yaml: repositories[1].max-images",
            "expected a positive integer, got a number",
        ),
        (
            _entry(**{"max-deletions-per-cycle": 0}),
            "--config x.yaml: repositories[1].max-deletions-per-cycle",
            "a zero or negative count",
        ),
        (
            _entry(**{"keep-tags": "latest"}),
            "--config x.yaml: repositories[1].keep-tags",
            "expected a list of strings, got a string",
        ),
        (
            _entry(**{"keep-tags": ["latest", 1.0]}),
            "--config x.yaml: repositories[1].keep-tags[1]",
            "expected a string, got a number 1.0",
        ),
        (
            _entry(**{"keep-filters": ["ok", "(unclosed"]}),
            "--config x.yaml: repositories[1].keep-filters[1]",
            "invalid regular expression '(unclosed'",
        ),
        (
            _entry(**{"keep-younger-than": "7 days"}),
            "--config x.yaml: repositories[1].keep-younger-than",
            "expected a positive duration",
        ),
        (
            _entry(**{"keep-pulled-within": 30}),
            "--config x.yaml: repositories[1].keep-pulled-within",
            "expected a duration such as 12h, 7d or 2w",
        ),
        (
            _entry(**{"keep-pulled-within": "0s"}),
            "--config x.yaml: repositories[1].keep-pulled-within",
            "a zero duration",
        ),
        (
            {"repositories": [{"name": "app"}, {"name": "app"}]},
            "--config x.yaml: repositories[1].name",
            "'app' is already matched by repositories[0] ('app')",
        ),
        (
            {"repositories": [{"name": "team-*"}, {"name": "team-a"}]},
            "--config x.yaml: repositories[1].name",
            "'team-a' is already matched by repositories[0] ('team-*')",
        ),
    ],
)
def test_parse_config_errors(data: object, field: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, defaults=FLAG_RULES, source=SOURCE)
    assert caught.value.field == field
    assert reason in caught.value.reason


# -- Settings


def test_settings_defaults() -> None:
    settings = Settings(repositories=RepositorySelection(include=("app",)))
    assert settings.rules == Rules()
    assert settings.dry_run is True
    assert settings.concurrency == 8
    assert settings.interval == timedelta(minutes=30)
    assert settings.max_staleness == timedelta(minutes=5)
    assert settings.namespaces == ()
    assert settings.protect_workloads == DEFAULT_PROTECT_WORKLOADS
    assert settings.leader_elect is True
    assert settings.lease_name == "kube-ecr-cleanup-controller"
    assert settings.lease_namespace is None
    assert settings.metrics_address == ":8080"
    assert settings.output == "table"
    assert settings.log_format == "text"


def test_rules_for_first_matching_override_wins_else_flag_rules() -> None:
    flag_rules = Rules(max_images=900)
    settings = Settings(
        repositories=RepositorySelection(include=("*",)),
        rules=flag_rules,
        overrides=(
            RepositoryOverride("team-a", Rules(max_images=1)),
            RepositoryOverride("team-*", Rules(max_images=2)),
            RepositoryOverride("*-b", Rules(max_images=3)),
        ),
    )
    assert settings.rules_for("team-a").max_images == 1
    assert settings.rules_for("team-b").max_images == 2
    assert settings.rules_for("x-b").max_images == 3
    assert settings.rules_for("other") is flag_rules
    assert settings.rules_for("TEAM-A") is flag_rules


def test_describe_is_plain_json() -> None:
    settings = Settings(
        repositories=RepositorySelection(include=("app", "team-*"), exclude=("team-x",)),
        rules=FLAG_RULES,
        overrides=(RepositoryOverride("team-*", Rules(max_images=5, keep_pulled_within=None)),),
        namespaces=("prod",),
        protect_workloads=frozenset({"jobs", "deployments"}),
        log_level=10,
    )
    described = settings.describe()
    assert json.loads(json.dumps(described)) == described
    assert described["repositories"] == {"include": ["app", "team-*"], "exclude": ["team-x"]}
    assert described["rules"] == {
        "max_images": 500,
        "keep_tags": ["latest"],
        "keep_filters": ["^release-"],
        "keep_younger_than": "1d",
        "keep_pulled_within": None,
        "max_deletions_per_cycle": None,
        "delete_orphaned_artifacts": False,
        "delete_archived_after": None,
    }
    assert described["overrides"] == [
        {
            "name": "team-*",
            "max_images": 5,
            "keep_tags": ["latest"],
            "keep_filters": [],
            "keep_younger_than": None,
            "keep_pulled_within": None,
            "max_deletions_per_cycle": None,
            "delete_orphaned_artifacts": False,
            "delete_archived_after": None,
        }
    ]
    assert described["interval"] == "30m"
    assert described["max_staleness"] == "5m"
    assert described["dry_run"] is True
    assert described["protect_workloads"] == ["deployments", "jobs"]
    assert described["log_level"] == "DEBUG"
    assert Settings(repositories=RepositorySelection(("a",))).describe()["namespaces"] == "ALL"


def test_describe_names_every_setting() -> None:
    import dataclasses

    described = Settings(repositories=RepositorySelection(("a",))).describe()
    # every field given to the constructor; `_index` is derived from `overrides`, not a setting
    assert set(described) == {f.name for f in dataclasses.fields(Settings) if f.init}


# -- keep filters split only between regexes

_ATOMS = st.sampled_from(
    [
        "a",
        "release-",
        "[0-9]",
        "[,;]",
        "[^],]",
        "{1,3}",
        "\\,",
        "(x|y,z)",
        "(?:v[0-9]{2,})",
        "$",
        "^",
    ]
)
_REGEX = (
    st.lists(_ATOMS, min_size=1, max_size=6)
    .map("".join)
    .filter(
        lambda r: not r.startswith("{")  # a repetition needs something to repeat
    )
)


@given(st.lists(_REGEX, min_size=1, max_size=5, unique=True))
def test_split_regexes_gives_back_the_list_it_was_joined_from(regexes: list[str]) -> None:
    assert split_regexes(",".join(regexes)) == tuple(regexes)


@pytest.mark.parametrize("text", ["(a,b", "[a,b", "a{1,", "x,(y"])
def test_split_regexes_refuses_an_open_bracket(text: str) -> None:
    with pytest.raises(ValueError, match="unclosed"):
        split_regexes(text)


def test_every_rules_field_has_one_knob_in_field_order() -> None:
    # a Rules field without a knob could be set by neither flag, variable nor --config file;
    # the field order is the order of describe_rules and of the config keys in errors
    import dataclasses

    from controller.settings import CONFIG_KEYS, RULE_KNOBS

    assert [knob.field for knob in RULE_KNOBS] == [f.name for f in dataclasses.fields(Rules)]
    assert ("name", *(knob.name for knob in RULE_KNOBS)) == CONFIG_KEYS
