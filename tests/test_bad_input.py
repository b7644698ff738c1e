"""The bad-input table (issue 12 §3): every flag, variable and config field fed invalid values,
and malformed input from outside (kubeconfig, pod objects, ECR answers).

This module holds the cases; `python -m tests.bad_input_table` writes docs/bad-input.md from
them, and a test here checks that the committed file is what the cases generate, so the table
and the tests cannot drift apart. Settings errors run through the real entry point
(`controller.cli.main`) in-process, kubeconfig errors through the real process; pod objects go
through the API-server simulator to the real Watcher; ECR answers come from the ECR simulator's
`malform` knob through the real aioboto3 gateway and Pruner. Settings errors must exit 2 with
one line naming the input and no traceback; malformed objects and answers must be skipped (or
fail their repository), logged and counted, and the controller must go on.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from prometheus_client import CollectorRegistry

from controller import cli
from controller.clusters import connect
from controller.ecr import open_ecr
from controller.identifiers import SourceKey
from controller.inventory import InUseIndex
from controller.kinds import KINDS
from controller.metrics import Metrics
from controller.policy import Rules
from controller.pruning import PruneOptions, Pruner
from controller.settings import CONFIG_KEYS, CONFIG_SECTIONS, RepositorySelection
from controller.trust import SourceTracker, View
from controller.watching import Watcher, WatchOptions
from sandbox.ecrsim import EcrSimulator
from sandbox.kubesim import KubeSimulator, pod, write_kubeconfig
from sandbox.moto import CREDENTIALS

PROG = "kube-ecr-cleanup-controller: error: "
ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "bad-input.md"
HOST = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Case:
    """One invalid input and what must come of it."""

    name: str
    # the flag, environment variable, config field, or what the malformed input is
    value: str
    # the invalid value as written (a description for huge ones)
    problem: str
    # wrong type, out of range, bad regex, bad duration, unknown key, empty, conflicting, ...
    outcome: str
    # settings: the start of the one error line after the program name; outside input: what
    # is skipped and counted
    payload: Any = None
    # the input itself where `value` only describes it


# -- flags -----------------------------------------------------------------------------------
# every flag at least once; a flag "missing value" case is the flag with nothing after it

FLAG_CASES = (
    Case("-repos", "", "empty list", "-repos: required: a comma-separated list"),
    Case("-repos", ",,", "empty list", "-repos: required: a comma-separated list"),
    Case("-repos", "app,[x", "bad glob", "-repos: '[x': the '[' at position 0 is never closed"),
    Case("-max-images", "0", "out of range", "-max-images: expected a positive integer, got 0"),
    Case("-max-images", "-3", "out of range", "-max-images: expected a positive integer, got -3"),
    Case("-max-images", "ten", "wrong type", "-max-images: expected a positive integer, got 'ten'"),
    Case("-max-images", "1.5", "wrong type", "-max-images: expected a positive integer, got '1.5'"),
    Case("-interval", "0", "out of range", "-interval: expected a positive integer, got 0"),
    Case("-interval", "soon", "bad duration", "-interval: expected minutes as an integer"),
    Case("-interval", "1ms", "out of range", "-interval: must be at least 1s, got '1ms'"),
    Case("-region", "us_east_1", "bad form", "-region: 'us_east_1' is not an AWS region name"),
    Case("-registry-id", "12345", "bad form", "-registry-id: expected a 12-digit AWS account id"),
    Case("-kubeconfig", "/nonexistent/kubeconfig", "unreadable", "-kubeconfig: cannot read"),
    Case("-dry-run", "maybe", "wrong type", "-dry-run: expected a boolean (true or false)"),
    Case("-keep-filters", "(unclosed", "bad regex", "-keep-filters: '(unclosed': an unclosed '('"),
    Case("-keep-filters", "a)b", "bad regex", "-keep-filters: invalid regular expression 'a)b'"),
    Case("-namespaces", "Bad_NS", "bad form", "-namespaces: 'Bad_NS' is not a valid namespace"),
    Case("-v", "-1", "out of range", "-v: expected a verbosity level (0 or more), got '-1'"),
    Case("-v", "loud", "wrong type", "-v: expected a verbosity level (0 or more), got 'loud'"),
    Case("-logtostderr", "maybe", "wrong type", "-logtostderr: expected a boolean"),
    Case("-alsologtostderr", "2", "wrong type", "-alsologtostderr: expected a boolean"),
    Case("-log_dir", "", "missing value", "-log_dir: expected one argument"),
    Case("-stderrthreshold", "LOUD", "unknown value", "-stderrthreshold: expected INFO, WARNING"),
    Case("-vmodule", "", "missing value", "-vmodule: expected one argument"),
    Case("-log_backtrace_at", "", "missing value", "-log_backtrace_at: expected one argument"),
    Case("--keep-tags", "", "missing value", "-keep-tags: expected one argument"),
    Case(
        "--keep-tags", "prod stable", "not a tag", "--keep-tags: 'prod stable' is not an image tag"
    ),
    Case("--keep-tags", "app:v1", "not a tag", "--keep-tags: 'app:v1' is not an image tag"),
    Case("--keep-younger-than", "7", "bad duration", "--keep-younger-than: expected a positive"),
    Case("--keep-younger-than", "-1d", "out of range", "--keep-younger-than: expected a positive"),
    Case("--keep-younger-than", "1fortnight", "bad duration", "--keep-younger-than: expected a"),
    Case("--keep-pulled-within", "0s", "out of range", "--keep-pulled-within: expected a positive"),
    Case("--delete-archived-after", "90", "bad duration", "--delete-archived-after: expected a"),
    Case("--delete-archived-after", "0d", "out of range", "--delete-archived-after: expected a"),
    Case("--keep-pulled-within", "d7", "bad duration", "--keep-pulled-within: expected a positive"),
    Case("--max-deletions-per-cycle", "0", "out of range", "--max-deletions-per-cycle: expected"),
    Case("--max-deletions-per-cycle", "all", "wrong type", "--max-deletions-per-cycle: expected"),
    Case("--disposal", "shred", "unknown value", "--disposal: expected one of delete, archive"),
    Case(
        "--delete-orphaned-artifacts",
        "sometimes",
        "wrong type",
        "--delete-orphaned-artifacts: expected a boolean",
    ),
    Case("--exclude-repos", "*", "conflicting", "--exclude-repos: excludes every repository"),
    Case("--exclude-repos", "[", "bad glob", "--exclude-repos: '[': the '[' at position 0"),
    Case(
        "--config", "/nonexistent.yaml", "unreadable", "--config: cannot read '/nonexistent.yaml'"
    ),
    Case("--kube-context", "", "missing value", "-kube-context: expected one argument"),
    Case("--in-cluster", "perhaps", "wrong type", "--in-cluster: expected a boolean"),
    Case("--protect-workloads", "pods", "unknown value", "--protect-workloads: unknown workload"),
    Case(
        "--protect-resources",
        "keda",
        "unknown preset",
        "--protect-resources: entry 'keda': unknown",
    ),
    Case("--protect-ecs", "mars-1", "bad region", "--protect-ecs: 'mars-1' is not an AWS region"),
    Case(
        "--protect-ecs us-east-1",
        "",
        "conflicting",
        "--protect-ecs: takes its value after '=': write --protect-ecs=us-east-1",
    ),
    Case(
        "--protect-ecs",
        "us-east-1/prod-*;role=admin",
        "bad role",
        "--protect-ecs: 'us-east-1/prod-*;role=admin': after ';' expected role=arn:aws:iam::",
    ),
    Case("--protect-ecs", "us-east-1/", "no cluster", "--protect-ecs: 'us-east-1/': expected a"),
    Case("--protect-ecs", "", "empty", "--protect-ecs: expected true, false or a comma list"),
    Case("--protect-ecs", "us-east-1/a[b", "bad glob", "--protect-ecs: 'a[b'"),
    Case(
        "--protect-lambda",
        "us-east-1/fn",
        "clusters for Lambda",
        "--protect-lambda: 'us-east-1/fn': Lambda has no clusters",
    ),
    Case("--protect-lambda", "useast1", "bad region", "--protect-lambda: 'useast1' is not an AWS"),
    Case("--aws-sources-interval", "2", "bad duration", "--aws-sources-interval: expected a"),
    Case(
        "--protect-ecs --aws-sources-interval=5m",
        "",
        "conflicting",
        "--aws-sources-interval: 5m is not shorter than --max-staleness 5m",
    ),
    Case("--ecs-keep-task-definitions", "0", "out of range", "--ecs-keep-task-definitions: "),
    Case(
        "--protect-resources",
        "keda.sh/v1alpha1/scaledjobs",
        "no path",
        "--protect-resources: entry 'keda.sh/v1alpha1/scaledjobs': ",
    ),
    Case(
        "--protect-resources",
        "keda.sh/v1alpha1/scaledjobs:pods=spec",
        "unknown kind",
        "--protect-resources: entry 'keda.sh/v1alpha1/scaledjobs:pods=spec': unknown KIND 'pods'",
    ),
    Case(
        "--protect-resources",
        "example.com/v1/xs:image=spec..image",
        "bad path",
        "--protect-resources: entry 'example.com/v1/xs:image=spec..image': ",
    ),
    Case(
        "--protect-resources",
        "example.com/xs:image=spec.image",
        "bad resource",
        "--protect-resources: entry 'example.com/xs:image=spec.image': ",
    ),
    Case("--allow-empty", "yes please", "wrong type", "--allow-empty: expected a boolean"),
    Case("--allow-empty-namespaces", "batch", "conflicting", "--allow-empty-namespaces: batch is"),
    Case("--allow-empty-clusters", "", "missing value", "-allow-empty-clusters: expected one"),
    Case("--max-staleness", "5", "bad duration", "--max-staleness: expected a positive duration"),
    Case("--max-staleness", "0s", "out of range", "--max-staleness: expected a positive duration"),
    Case("--concurrency", "0", "out of range", "--concurrency: expected a positive integer"),
    Case("--concurrency", "100000", "out of range", "--concurrency: must be from 1 to 256"),
    Case("--concurrency", "many", "wrong type", "--concurrency: expected a positive integer"),
    Case("--once", "2", "wrong type", "--once: expected a boolean (true or false), got '2'"),
    Case("--output", "xml", "unknown value", "--output: expected one of table, json, got 'xml'"),
    Case("--interval-jitter", "2", "out of range", "--interval-jitter: expected a fraction"),
    Case("--interval-jitter", "-0.1", "out of range", "--interval-jitter: expected a fraction"),
    Case("--interval-jitter", "lots", "wrong type", "--interval-jitter: expected a fraction"),
    Case("--leader-elect", "sometimes", "wrong type", "--leader-elect: expected a boolean"),
    Case("--lease-name", "Bad_Name", "bad form", "--lease-name: 'Bad_Name' is not a valid"),
    Case("--lease-namespace", "a.b", "bad form", "--lease-namespace: 'a.b' is not a valid"),
    Case("--lease-duration", "1s", "out of range", "--lease-duration: must be at least 2s"),
    Case("--lease-duration", "forever", "bad duration", "--lease-duration: expected a positive"),
    Case("--metrics-address", ":99999", "out of range", "--metrics-address: expected host:port"),
    Case("--metrics-address", "nohost", "bad form", "--metrics-address: expected host:port"),
    Case("--log-format", "yaml", "unknown value", "--log-format: expected one of text, json"),
    Case("--nope", "1", "unknown flag", "--nope: unknown flag (see --help)"),
    Case("-in-cluster -kube-context=x", "", "conflicting", "--in-cluster: cannot be combined"),
)

# -- environment variables: every flag's variable (those taking any string: see ANY_STRING)

ANY_STRING = {
    "log_dir": "accepted and ignored with a warning (no log files are written)",
    "vmodule": "accepted and ignored with a warning",
    "log_backtrace_at": "accepted and ignored with a warning",
    "keep-tags": "any tags (an empty value counts as unset)",
    "kube-context": "any context name: checked against the kubeconfig when connecting",
    "allow-empty-clusters": "any names: checked against the watched clusters when connecting",
}


def _env_cases() -> tuple[Case, ...]:
    cases = []
    seen: set[str] = set()
    for case in FLAG_CASES:
        name = case.name.lstrip("-")
        if name in seen or name in ANY_STRING or case.problem == "unknown flag" or " " in name:
            continue
        if name == "repos":
            case = FLAG_CASES[1]
        seen.add(name)
        variable = cli.ENV_PREFIX + name.upper().replace("-", "_")
        outcome = variable + case.outcome[len(case.name) :]
        cases.append(Case(variable, case.value, case.problem, outcome))
    cases += [
        Case("AWS_REGION", "garbage", "bad form", "AWS_REGION: 'garbage' is not an AWS region"),
        Case("AWS_ENDPOINT_URL_ECR", "ftp://x", "bad form", "AWS_ENDPOINT_URL_ECR: expected an"),
        Case("KUBECONFIG", "/nonexistent/config", "unreadable", "KUBECONFIG: cannot read"),
    ]
    return tuple(cases)


ENV_CASES = _env_cases()

# -- --config fields: every key, the document and the file

ENTRY = "repositories:\n  - name: app\n"
CONFIG_CASES = (
    Case("(file)", "repositories: [", "not YAML", "invalid YAML: expected the node content"),
    Case("(file)", ENTRY + "    max-images: 1\n    max-images: 2\n", "duplicate key", "invalid"),
    Case("(file)", "", "empty", "expected a mapping with a 'repositories' list, got an empty"),
    Case("(document)", "repos: []\n", "unknown key", "repos: unknown key 'repos'"),
    Case("repositories", "repositories: {name: app}\n", "wrong type", "repositories: expected a"),
    Case("repositories[0]", "repositories: [app]\n", "wrong type", "repositories[0]: expected a"),
    Case(
        "repositories[0]", ENTRY + "    max-image: 5\n", "unknown key", "repositories[0].max-image"
    ),
    Case("name", "repositories:\n  - max-images: 5\n", "missing", "repositories[0].name: required"),
    Case("name", "repositories:\n  - name: 42\n", "wrong type", "repositories[0].name: expected"),
    Case("name", "repositories:\n  - name: ''\n", "empty", "repositories[0].name: expected an"),
    Case("name", "repositories:\n  - name: 'app[x'\n", "bad glob", "repositories[0].name: 'app[x'"),
    Case(
        "name",
        "repositories:\n  - name: 'a*'\n  - name: app\n",
        "conflicting",
        "repositories[1].name: 'app' is already matched by repositories[0]",
    ),
    Case(
        "name",
        "repositories:\n  - name: other\n",
        "conflicting",
        "repositories[0].name: 'other' matches no repository that -repos",
    ),
    Case("max-images", ENTRY + "    max-images: 0\n", "out of range", "repositories[0].max-images"),
    Case("max-images", ENTRY + "    max-images: '5'\n", "wrong type", "repositories[0].max-images"),
    Case(
        "max-images", ENTRY + "    max-images: true\n", "wrong type", "repositories[0].max-images"
    ),
    Case("keep-tags", ENTRY + "    keep-tags: latest\n", "wrong type", "repositories[0].keep-tags"),
    Case(
        "keep-tags", ENTRY + "    keep-tags: [1.0]\n", "wrong type", "repositories[0].keep-tags[0]"
    ),
    Case(
        "keep-tags", ENTRY + "    keep-tags: ['a b']\n", "not a tag", "repositories[0].keep-tags[0]"
    ),
    Case("keep-filters", ENTRY + "    keep-filters: ['(x']\n", "bad regex", "repositories[0].keep"),
    Case("keep-filters", ENTRY + "    keep-filters: '^v'\n", "wrong type", "repositories[0].keep"),
    Case("keep-younger-than", ENTRY + "    keep-younger-than: 7\n", "bad duration", "repo"),
    Case("keep-younger-than", ENTRY + "    keep-younger-than: 7 days\n", "bad duration", "repo"),
    Case("keep-pulled-within", ENTRY + "    keep-pulled-within: 0s\n", "out of range", "repo"),
    Case("delete-archived-after", ENTRY + "    delete-archived-after: 90\n", "bad duration", "r"),
    Case(
        "max-deletions-per-cycle", ENTRY + "    max-deletions-per-cycle: -1\n", "out of range", "r"
    ),
    Case(
        "max-deletions-per-cycle", ENTRY + "    max-deletions-per-cycle: [5]\n", "wrong type", "r"
    ),
    Case(
        "delete-orphaned-artifacts",
        ENTRY + "    delete-orphaned-artifacts: 'yes'\n",
        "wrong type",
        "repositories[0].delete-orphaned-artifacts: expected true or false",
    ),
    Case(
        "protect-resources",
        "protect-resources: keda-scaledjobs\n",
        "wrong type",
        "protect-resources: expected a list of presets and resource entries, got a string",
    ),
    Case("protect-resources", "protect-resources: [5]\n", "wrong type", "protect-resources[0]: "),
    Case(
        "protect-resources",
        "protect-resources:\n",
        "empty",
        "protect-resources: expected a list of presets and resource entries, got null",
    ),
    Case(
        "protect-resources",
        "protect-resources: [argo]\n",
        "unknown preset",
        "protect-resources[0]: unknown preset",
    ),
    Case(
        "protect-resources",
        "protect-resources:\n  - {resource: example.com/v1/xs, pod-spec: [spec]}\n",
        "unknown key",
        "protect-resources[0]: ",
    ),
    Case(
        "protect-resources",
        "protect-resources:\n  - {resource: example.com/v1/xs}\n",
        "no path",
        "protect-resources[0]: ",
    ),
)

# -- kubeconfig: through the real process (connect() runs in controller.app)

KC_HEAD = "apiVersion: v1\nkind: Config\ncurrent-context: x\n"
KC_USER = "users: [{name: u, user: {token: t}}]\n"
KC_CONTEXT = "contexts: [{name: x, context: {cluster: c, user: u}}]\n"
KUBECONFIG_CASES = (
    Case("kubeconfig", "{{{", "not YAML", "-kubeconfig: kubeconfig {path}: not valid YAML"),
    Case("kubeconfig", "- a\n", "wrong type", "-kubeconfig: kubeconfig {path}: expected a kube"),
    Case(
        "current-context",
        "apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n",
        "missing",
        "--kube-context: kubeconfig {path} has no current-context",
    ),
    Case(
        "clusters",
        KC_HEAD + "clusters: 5\n" + KC_CONTEXT + KC_USER,
        "wrong type",
        "-kubeconfig: kubeconfig {path}, context 'x': 'int' object is not iterable",
    ),
    Case(
        "clusters[0].cluster",
        KC_HEAD + "clusters: [{name: c, cluster: {}}]\n" + KC_CONTEXT + KC_USER,
        "empty",
        "-kubeconfig: kubeconfig {path}, context 'x': a context, cluster or user entry",
    ),
    Case(
        "contexts[0].context",
        KC_HEAD + "clusters: [{name: c, cluster: {server: 'http://127.0.0.1:1'}}]\n"
        "contexts: [{name: x, context: c}]\n" + KC_USER,
        "wrong type",
        "-kubeconfig: kubeconfig {path}, context 'x': a context, cluster or user entry",
    ),
    Case(
        "certificate-authority-data",
        KC_HEAD + "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:1', "
        "certificate-authority-data: '!!!notbase64'}}]\n" + KC_CONTEXT + KC_USER,
        "bad form",
        "-kubeconfig: kubeconfig {path}, context 'x': Invalid base64-encoded string",
    ),
)

# -- pod objects: watch events from the API-server simulator to the real Watcher


def _event(obj: object) -> bytes:
    return orjson.dumps({"type": "ADDED", "object": obj})


def _pod_with(image: object, *, image_id: object = "") -> bytes:
    raw = pod("bad", "shop", {"c": f"{HOST}/app:v1"})
    raw["metadata"]["uid"] = "uid-bad"
    raw["spec"]["containers"][0]["image"] = image
    raw["status"]["containerStatuses"][0]["imageID"] = image_id
    return _event(raw)


HUGE = "x" * 1_000_000
POD_CASES = (
    Case("watch line", "not JSON", "not JSON", "skipped, counted 1", b"{not json"),
    Case("watch line", "truncated JSON", "truncated", "skipped, counted 1", _event({})[:-5]),
    Case("watch event", '{"type":"ADDED","object":[]}', "wrong type", "skipped, counted 1", None),
    Case("metadata.uid", "missing", "missing field", "skipped, counted 1", None),
    Case("containers[].image", "42", "non-string", "image skipped, counted 1", _pod_with(42)),
    Case("containers[].image", '["a"]', "non-string", "image skipped, counted 1", _pod_with(["a"])),
    Case("containers[].image", "{}", "non-string", "image skipped, counted 1", _pod_with({})),
    Case(
        "containers[].image",
        "a 1,000,000-character string",
        "huge string",
        "image skipped, counted 1",
        _pod_with(HUGE),
    ),
    Case(
        "containers[].image",
        f"{HOST}/app:тег",
        "unicode",
        "image skipped, counted 1",
        _pod_with(f"{HOST}/app:тег"),
    ),
    Case(
        "containers[].image",
        "ｎｇｉｎｘ",
        "unicode",
        "image skipped, counted 1",
        _pod_with("ｎｇｉｎｘ"),
    ),
    Case(
        "containerStatuses[].imageID",
        "docker-pullable://???",
        "bad form",
        "imageID skipped, counted 1",
        _pod_with(f"{HOST}/app:v1", image_id="docker-pullable://???"),
    ),
    Case(
        "containers[].image",
        "null",
        "missing field",
        "no reference from it, not counted (a container not yet specified)",
        _pod_with(None),
    ),
)


def _pod_payload(case: Case) -> bytes:
    if case.name == "watch event":
        return orjson.dumps({"type": "ADDED", "object": []})
    if case.name == "metadata.uid":
        return _event(pod("no-uid", "shop", {"c": f"{HOST}/app:v1"}))  # no metadata.uid
    payload = case.payload
    assert isinstance(payload, bytes)
    return payload


# -- ECR answers: the simulator's malform knob through the real gateway and pruner


def _huge_page(answer: dict[str, Any]) -> dict[str, Any]:
    details = answer["imageDetails"]
    answer["imageDetails"] = details * (20_000 // max(1, len(details)))
    return answer


def _tags_not_a_list(answer: dict[str, Any]) -> dict[str, Any]:
    answer["imageDetails"][0]["imageTags"] = "v1"
    return answer


def _subject_not_a_digest(answer: dict[str, Any]) -> dict[str, Any]:
    answer["imageDetails"][0]["subjectManifestDigest"] = "sha256:not-hex"
    return answer


def _token_not_a_string(answer: dict[str, Any]) -> dict[str, Any]:
    answer["nextToken"] = 5
    return answer


ECR_CASES = (
    Case("DescribeImages", "imageDetails[0] without imageDigest", "missing field", "failed"),
    Case("DescribeImages", "imagePushedAt 'not-a-timestamp'", "wrong type", "failed"),
    Case("DescribeImages", "imageSizeInBytes 'ten megabytes'", "wrong type", "tolerated"),
    Case("DescribeImages", "imageTags 'v1' (not a list)", "wrong type", "failed", _tags_not_a_list),
    Case(
        "DescribeImages",
        "subjectManifestDigest 'sha256:not-hex'",
        "wrong type",
        "failed",
        _subject_not_a_digest,
    ),
    Case(
        "DescribeImages",
        "nextToken 5 (not a string)",
        "wrong type",
        "failed-token",
        _token_not_a_string,
    ),
    Case(
        "DescribeImages",
        "a page of 20,000 entries (asked 1000)",
        "huge page",
        "tolerated",
        _huge_page,
    ),
    Case("BatchGetImage", "images[0] without imageManifest", "missing field", "failed"),
    Case(
        "BatchDeleteImage", "imageIds[0] without imageDigest", "missing field", "tolerated-delete"
    ),
    Case(
        "DescribeRepositories", "repositories[0] without repositoryName", "missing field", "cycle"
    ),
)
ECR_KINDS = {
    "imageDetails[0] without imageDigest": "missing-field",
    "imagePushedAt 'not-a-timestamp'": "bad-timestamp",
    "imageSizeInBytes 'ten megabytes'": "wrong-type",
}
ECR_OUTCOMES = {
    "failed": "that repository fails (nothing deleted in it), logged, ecr_cleanup_errors_total"
    "{operation, code=MalformedResponse} +1; the other repositories are pruned",
    "tolerated": "tolerated: the repository is pruned as planned",
    "tolerated-delete": "tolerated: the deletions are counted from the ids sent minus the "
    "failures; the repository is pruned",
    "failed-token": "that repository fails: the next page request carries the token back and "
    "ECR answers SerializationException; logged, ecr_cleanup_errors_total{operation, "
    "code=SerializationException} +1; the other repositories are pruned",
    "cycle": "the cycle fails (listing repositories), logged, cycles_total{result=failed} +1; "
    "nothing deleted",
}

SECTIONS: tuple[tuple[str, str, tuple[Case, ...]], ...] = (
    ("Flags", "flag", FLAG_CASES),
    ("Environment variables", "variable", ENV_CASES),
    ("Config file (`--config`)", "field", CONFIG_CASES),
    ("Kubeconfig", "field", KUBECONFIG_CASES),
    ("Pod objects from the API server", "input", POD_CASES),
    ("ECR answers", "operation", ECR_CASES),
)


def _cell(text: str) -> str:
    text = text.replace("|", "\\|").replace("\n", "⏎ ")
    if len(text) > 90:
        text = text[:87] + "…"
    return f"`{text}`" if text.strip() else "(none)"


def table() -> str:
    """docs/bad-input.md, generated from the cases of this module."""
    lines = [
        "# Bad input: what the controller does with it",
        "",
        "Generated from the cases of `tests/test_bad_input.py` by `python -m tests.bad_input_table`;",
        "`tests/test_bad_input.py` runs every row and checks that this file is what the cases",
        "generate. Settings errors exit with status 2 and print one line, "
        f"`{PROG}<input>: <what is wrong>`, with no traceback; the outcome column is the start of",
        "that line. Malformed objects and answers are skipped or fail only their repository, are",
        "logged, and are counted in a metric; the controller goes on.",
        "",
    ]
    for title, column, cases in SECTIONS:
        lines += [f"## {title}", "", f"| {column} | invalid value | problem | outcome |"]
        lines.append("|---|---|---|---|")
        for case in cases:
            outcome = ECR_OUTCOMES.get(case.outcome, case.outcome)
            if cases is POD_CASES:
                where = " in `ecr_cleanup_watch_malformed_total`" if "counted 1" in outcome else ""
                outcome += f"{where}; the next event is applied"
            shown = outcome if cases in (POD_CASES, ECR_CASES) else f"exit 2: `{outcome}…`"
            lines.append(f"| `{case.name}` | {_cell(case.value)} | {case.problem} | {shown} |")
        lines.append("")
        if cases is ENV_CASES:
            lines.append("Variables that take any string (checked later, or ignored):")
            lines.append("")
            for name, why in ANY_STRING.items():
                lines.append(f"- `{cli.ENV_PREFIX}{name.upper().replace('-', '_')}`: {why}")
            lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Settings: in-process, through the real entry point


@pytest.fixture
def hermetic(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith((cli.ENV_PREFIX, "AWS_")) or key == "KUBECONFIG":
            monkeypatch.delenv(key)
    monkeypatch.setattr(cli, "SERVICE_ACCOUNT_NAMESPACE_FILE", Path("/nonexistent/namespace"))


def one_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    status = cli.main(argv)
    out, err = capsys.readouterr()
    assert status == 2, (status, out, err)
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(PROG), err
    return lines[0][len(PROG) :]


def _flag_argv(case: Case) -> list[str]:
    base = [] if case.name == "-repos" else ["-repos=app"]
    if case.problem == "conflicting" and " " in case.name:
        return base + case.name.split()
    if case.problem == "missing value":
        return [*base, case.name]
    return [*base, f"{case.name}={case.value}"]


@pytest.mark.usefixtures("hermetic")
@pytest.mark.parametrize("case", FLAG_CASES, ids=lambda c: f"{c.name}={c.value}")
def test_a_bad_flag(case: Case, capsys: pytest.CaptureFixture[str]) -> None:
    assert one_line(capsys, _flag_argv(case)).startswith(case.outcome)


@pytest.mark.usefixtures("hermetic")
@pytest.mark.parametrize("case", ENV_CASES, ids=lambda c: f"{c.name}={c.value}")
def test_a_bad_environment_variable(
    case: Case, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(case.name, case.value)
    argv = [] if case.name == "ECR_CLEANUP_REPOS" else ["-repos=app"]
    assert one_line(capsys, argv).startswith(case.outcome)


@pytest.mark.usefixtures("hermetic")
@pytest.mark.parametrize("case", CONFIG_CASES, ids=lambda c: f"{c.name}:{c.problem}")
def test_a_bad_config_field(case: Case, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "overrides.yaml"
    path.write_text(case.value)
    line = one_line(capsys, ["-repos=app,a*", f"--config={path}"])
    assert line.startswith(f"--config {path}: {case.outcome}"), line


def test_every_flag_variable_and_config_key_has_a_case() -> None:
    flagged = {c.name.lstrip("-").split()[0] for c in FLAG_CASES}
    assert {f.name for f in cli.FLAGS} <= flagged
    variables = {c.name for c in ENV_CASES}
    variables |= {cli.ENV_PREFIX + n.upper().replace("-", "_") for n in ANY_STRING}
    assert {f.env for f in cli.FLAGS} <= variables
    assert {*CONFIG_KEYS, *CONFIG_SECTIONS} <= {c.name for c in CONFIG_CASES}


def test_the_table_in_the_docs_is_generated_from_the_cases() -> None:
    assert DOC.read_text() == table(), "run: python -m tests.bad_input_table"


# ---------------------------------------------------------------------------------------------
# Kubeconfig: the real process


@pytest.mark.parametrize("case", KUBECONFIG_CASES, ids=lambda c: f"{c.name}:{c.problem}")
def test_a_bad_kubeconfig(case: Case, tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(case.value)
    env = {
        k: v for k, v in os.environ.items() if not k.startswith((cli.ENV_PREFIX, "AWS_", "KUBE"))
    }
    result = subprocess.run(
        [sys.executable, "-m", "controller", "-repos=app", "--once", f"-kubeconfig={path}"],
        env={**env, **CREDENTIALS},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith(PROG)]
    assert len(errors) == 1, result.stderr
    assert errors[0][len(PROG) :].startswith(case.outcome.format(path=path)), errors[0]


# ---------------------------------------------------------------------------------------------
# Pod objects: the API-server simulator and the real Watcher

PODS = SourceKey("sim", "pods")


@pytest.mark.parametrize("case", POD_CASES, ids=lambda c: f"{c.name}:{c.problem}:{c.value[:20]}")
async def test_a_malformed_pod_is_skipped_and_counted(
    case: Case, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = CollectorRegistry()
    async with KubeSimulator(token="t") as kube:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", {"sim": kube}, token="t")
        async with (
            connect(kubeconfig=str(kubeconfig), contexts=(), in_cluster=False) as (cluster,),
            anyio.create_task_group() as tg,
        ):
            index, tracker = InUseIndex(), SourceTracker()
            watcher = Watcher(
                cluster,
                KINDS["pods"],
                "",
                view=View(index, tracker),
                options=WatchOptions(timeout_seconds=30, backoff_initial=0.02, backoff_max=0.1),
            )
            Metrics(registry).watch_sources(tracker, index, lambda: 0.0, refusal=lambda: None)
            tg.start_soon(watcher.run)
            with anyio.fail_after(10):
                while not kube.watch_count("pods"):  # noqa: ASYNC110 - shared state
                    await anyio.sleep(0.01)
            assert kube.inject_raw_event("pods", _pod_payload(case)) == 1
            kube.create("pods", pod("good", "shop", {"c": f"{HOST}/app:v2"}))
            with anyio.fail_after(10):  # the watcher survived and applied the next event
                while not any(  # noqa: ASYNC110 - shared state
                    t.tag == "v2" for t in index.snapshot().tags
                ):
                    await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
    counted = registry.get_sample_value(
        "ecr_cleanup_watch_malformed_total",
        {"source_cluster": "sim", "kind": "pods", "source_namespace": ""},
    )
    assert counted == (0 if "not counted" in case.outcome else 1)
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    if counted:
        assert any(
            "skipp" in r.getMessage()
            for r in caplog.records  # logged as skipped
        )


# ---------------------------------------------------------------------------------------------
# ECR answers: the simulator's malform knob, the real gateway and pruner


@pytest.mark.parametrize("case", ECR_CASES, ids=lambda c: f"{c.name}:{c.value[:30]}")
async def test_a_malformed_ecr_answer_is_logged_counted_and_survived(
    case: Case, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    async with EcrSimulator() as sim:
        for name in ("a-broken", "b-fine"):
            sim.create_repository(name)
            kids = [
                sim.add_image(
                    name,
                    tags=(f"b{n}",),
                    pushed_at=NOW - timedelta(hours=n),
                    config_seed=f"{name}{n}",
                )
                for n in range(12)
            ]
            if name == "a-broken":  # an index: BatchGetImage is called for this repository
                sim.add_index(name, kids[:2], pushed_at=NOW - timedelta(hours=20))
        mutate: Callable[[dict[str, Any]], dict[str, Any]] | None = case.payload
        kind = ECR_KINDS.get(case.value, "missing-field")
        sim.malform(case.name, kind=kind, mutate=mutate)  # type: ignore[arg-type]
        before = {n: sim.digests(n) for n in ("a-broken", "b-fine")}
        async with open_ecr(
            region="us-east-1", registry_id=None, concurrency=1, endpoint_url=sim.endpoint_url
        ) as ecr:
            pruner = Pruner(
                ecr,
                InUseIndex(),
                PruneOptions(
                    RepositorySelection(("a-broken", "b-fine")),
                    lambda _n: Rules(max_images=5),
                    dry_run=False,
                    concurrency=1,
                ),
            )
            report = await pruner.run_cycle(now=NOW, gate=lambda: None, clock=lambda: NOW)
        metrics.observe_cycle(report, 0.1)
        after = {n: sim.digests(n) for n in ("a-broken", "b-fine")}
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    if case.outcome == "cycle":
        assert registry.get_sample_value("ecr_cleanup_cycles_total", {"result": "failed"}) == 1
        assert after == before
        assert any("MalformedResponse" in str(e) for e in report.errors), report.errors
        return
    broken, fine = report.repositories
    assert len(after["b-fine"]) == 5, "the other repository is pruned"
    if case.outcome.startswith("tolerated"):
        assert broken.ok
        assert len(after["a-broken"]) == 5
        return
    errors = registry.get_sample_value(
        "ecr_cleanup_errors_total",
        {
            "repository": "a-broken",
            "operation": case.name,
            "code": "SerializationException"
            if case.outcome == "failed-token"
            else "MalformedResponse",
        },
    )
    assert errors == 1, (broken.errors, fine.errors)
    assert after["a-broken"] == before["a-broken"]
    assert any("a-broken failed" in r.getMessage() for r in caplog.records)
