"""The Helm chart, rendered by the real helm: lint, Kubernetes schemas, the values schema, RBAC derived
from the rendered args, security defaults, and every controller flag reachable from values."""

from __future__ import annotations

import json
import re
import subprocess
import tarfile
import tempfile
import tomllib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import kubernetes_validate.utils
import pytest
import yaml

import controller
from controller.cli import FLAGS, parse_settings
from controller.kinds import KINDS
from controller.resources import chart_presets
from controller.settings import DEFAULT_PROTECT_WORKLOADS, WORKLOAD_KINDS, Settings
from sandbox.kubesim import ThreadedKubeSimulator, write_kubeconfig
from tests.chart import (
    ALERTS,
    ALL_FEATURES,
    BARE,
    CHART,
    DASHBOARD,
    NAMESPACE,
    RELEASE,
    ROOT,
    Grants,
    Rendered,
    all_features_values,
    default_values,
    flag_text,
    grants_of,
    merged,
    render,
    render_all_features,
    render_bare,
    run_helm,
    setting_flags,
    template,
    tool,
    value_at,
    walk,
)

# Flags the chart sets itself, from other values: they must still be rendered (checked below).
CHART_OWNED = {
    "in-cluster": "the default connection: the pod's service account",
    "kubeconfig": "kubeconfig.secretName: the mounted Secret",
    "kube-context": "kubeContexts (with kubeconfig.secretName)",
    "config": "repositoryOverrides: the mounted ConfigMap",
    "lease-namespace": "the release namespace",
    "metrics-address": "metrics.port: the container port the probes and the Service use",
}
# Flags deliberately NOT reachable from values (extraArgs can still pass them):
NOT_IN_VALUES = {
    # glog compatibility flags of the Go controller: accepted for unchanged Go Deployments,
    # nothing for a new install to set
    "logtostderr": "glog: logs always go to stderr",
    "alsologtostderr": "glog: logs always go to stderr",
    "log_dir": "glog: ignored, no log files",
    "vmodule": "glog: ignored",
    "log_backtrace_at": "glog: ignored",
    "stderrthreshold": "glog: the level is `verbosity` (-v); a threshold above INFO hides warnings",
    # a Deployment runs the service: with --once the process exits after one cycle and the
    # kubelet restarts it, a crash loop that prunes on every restart
    "once": "the chart runs the service, never one cycle",
}
LATEST = kubernetes_validate.utils.latest_version()  # the newest minor kubernetes-validate bundles
KUBE_VERSIONS = ("1.28.0", "1.31.0", LATEST)
VALUES_SETS = ("default", "all-features")


def rendered(which: str) -> Rendered:
    return render_bare() if which == "default" else render_all_features()


def settings_of(args: list[str], tmp_path: Path | None = None) -> Settings:
    """The controller's own reading of the rendered args. A mounted file (kubeconfig, --config)
    is read from where the test put a copy: `/etc/...` maps to tmp_path/etc/..."""
    if tmp_path is not None:
        args = [re.sub(r"=(/etc/)", f"={tmp_path}/etc/", a) for a in args]
    return parse_settings(args, {}, namespace_file=Path("/nonexistent"))


@pytest.fixture(scope="module")
def kubeconfig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A kubeconfig for the API-server simulator, for helm's client-side dry run (it reads the
    server's version and discovery). Without a bearer token: helm sends none over plain HTTP."""
    with ThreadedKubeSimulator() as kube:
        yield write_kubeconfig(tmp_path_factory.mktemp("helm") / "kubeconfig", {"sim": kube})


def install_dry_run(values: dict[str, Any], kubeconfig: Path) -> subprocess.CompletedProcess[str]:
    """`helm install --dry-run=client` of the chart with these values, against the simulator."""
    with tempfile.TemporaryDirectory(prefix="chart-values-") as directory:
        file = Path(directory) / "values.yaml"
        file.write_text(yaml.safe_dump(values))
        return run_helm(
            "install",
            RELEASE,
            str(CHART),
            "--namespace",
            NAMESPACE,
            "--values",
            str(file),
            "--dry-run=client",
            "--disable-openapi-validation",
            "--kubeconfig",
            str(kubeconfig),
        )


def mount_files(r: Rendered, tmp_path: Path, *, kubeconfig: str = "") -> None:
    """Put what the kubelet would mount under tmp_path: the ConfigMap's file, a kubeconfig."""
    for mount in r.container.get("volumeMounts", []):
        directory = tmp_path / mount["mountPath"].lstrip("/")
        directory.mkdir(parents=True, exist_ok=True)
        if mount["name"] == "config":
            config = r.config_file()
            assert config is not None
            (directory / "rules.yaml").write_text(config)
        if mount["name"] == "kubeconfig":
            (volume,) = [v for v in r.pod_spec["volumes"] if v["name"] == "kubeconfig"]
            (item,) = volume["secret"]["items"]
            (directory / item["path"]).write_text(kubeconfig or "apiVersion: v1\nkind: Config\n")


# ---------------------------------------------------------------------------------------------
# Chart metadata, lint, Kubernetes schemas, yamllint


def test_chart_version_and_app_version_equal_the_package_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["apiVersion"] == "v2"
    assert chart["version"] == chart["appVersion"] == project["version"] == controller.__version__
    assert chart["kubeVersion"] == ">=1.28.0-0"


@pytest.mark.parametrize("which", VALUES_SETS)
def test_helm_lint_strict(which: str, tmp_path: Path) -> None:
    values = tmp_path / "bare.yaml"
    values.write_text(yaml.safe_dump(BARE))
    file = values if which == "default" else ALL_FEATURES
    result = run_helm("lint", "--strict", str(CHART), "--values", str(file))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout
    assert "[WARNING]" not in result.stdout
    assert "[ERROR]" not in result.stdout


def test_kube_version_below_1_28_is_refused() -> None:
    result = template(BARE, kube_version="1.27.9")
    assert result.returncode != 0
    assert ">=1.28.0-0" in result.stderr


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("which", VALUES_SETS)
def test_rendered_objects_are_valid_kubernetes_strictly(
    which: str, kube_version: str, tmp_path: Path
) -> None:
    r = (
        render(BARE, kube_version=kube_version)
        if which == "default"
        else render(files=[ALL_FEATURES], kube_version=kube_version)
    )
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(r.text)
    validate = tool("kubernetes-validate", install="scripts/bootstrap (a dev dependency)")
    result = subprocess.run(
        [validate, "--strict", "-k", kube_version, str(manifest)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    minor = ".".join(kube_version.split(".")[:2])
    passed = re.findall(
        rf"passed for resource (\S+) against version {re.escape(minor)}$",
        result.stdout,
        re.MULTILINE,
    )
    crds = [o for o in r.objects if o["apiVersion"].startswith("monitoring.coreos.com/")]
    # every object but the Prometheus Operator's CRDs was checked (those: test_service_monitor...)
    assert len(passed) == len(r.objects) - len(crds), result.stdout


def test_kubernetes_validate_strict_rejects_an_unknown_field(tmp_path: Path) -> None:
    """The check above is live: one unknown field in the rendered Deployment fails it."""
    r = render_bare()
    broken = [dict(o) for o in r.objects]
    for o in broken:
        if o["kind"] == "Deployment":
            o["spec"] = dict(o["spec"], replica=1)
    manifest = tmp_path / "broken.yaml"
    manifest.write_text(yaml.safe_dump_all(broken))
    validate = tool("kubernetes-validate", install="scripts/bootstrap (a dev dependency)")
    result = subprocess.run(
        [validate, "--strict", "-k", "1.31.0", str(manifest)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert "replica" in result.stdout + result.stderr


def yamllint(*paths: Path, rendered: bool) -> subprocess.CompletedProcess[str]:
    config = ROOT / ".yamllint.yaml"
    lint = tool("yamllint", install="scripts/bootstrap (a dev dependency)")
    how = (
        ["-d", f"{{extends: {config}, rules: {{line-length: disable}}}}"]
        if rendered
        else ["-c", str(config)]
    )
    return subprocess.run(
        [lint, "--strict", *how, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_yamllint_values_chart_yaml_and_ci_values() -> None:
    result = yamllint(CHART / "values.yaml", CHART / "Chart.yaml", ALL_FEATURES, rendered=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("which", VALUES_SETS)
def test_yamllint_rendered_output(which: str, tmp_path: Path) -> None:
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(rendered(which).text)
    result = yamllint(manifest, rendered=True)
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------
# values.yaml and values.schema.json


SCHEMA = json.loads((CHART / "values.schema.json").read_text())


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        name = node["$ref"].removeprefix("#/definitions/")
        resolved: dict[str, Any] = SCHEMA["definitions"][name]
        return resolved
    return node


def test_schema_closes_every_object() -> None:
    """additionalProperties at every level: false, or a typed schema for free-form maps."""
    objects = [
        (path, node)
        for path, node in walk(SCHEMA)
        if isinstance(node, dict)
        and (node.get("type") == "object" or "object" in (node.get("type") or []))
    ]
    assert len(objects) > 40
    for path, node in objects:
        extra = node.get("additionalProperties")
        assert extra is False or (isinstance(extra, dict) and "properties" not in node), path
        if extra is not False:
            assert extra.get("type") or extra.get("$ref"), path


# Kubernetes objects passed through verbatim: the schema knows more of their fields than
# values.yaml sets by default.
KUBERNETES_TYPED = {
    "podSecurityContext",
    "securityContext",
    "resources",
    "livenessProbe",
    "readinessProbe",
    "affinity",
    "podDisruptionBudget",
}


def test_schema_and_values_yaml_have_the_same_keys() -> None:
    """The schema is not stale: it describes exactly values.yaml's keys."""

    def compare(values: dict[str, Any], schema: dict[str, Any], where: str) -> None:
        properties = resolve(schema)["properties"]
        assert set(values) == set(properties), where
        for key, value in values.items():
            if isinstance(value, dict) and value and key not in KUBERNETES_TYPED:
                node = resolve(properties[key])
                if "properties" in node:
                    compare(value, node, f"{where}.{key}")

    compare(default_values(), SCHEMA, "values")


def test_every_values_key_is_documented() -> None:
    """Line by line: each setting has a `# --` comment; sections have documented children."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    keys: list[tuple[int, str, bool]] = []  # (indent, key, documented)
    for number, line in enumerate(lines):
        match = re.match(r"^( *)([A-Za-z][\w.-]*):", line)
        if not match:
            continue
        above = []
        for previous in reversed(lines[:number]):
            if not previous.strip().startswith("#"):
                break
            above.append(previous)
        keys.append((len(match.group(1)), match.group(2), any("# --" in a for a in above)))
    undocumented = []
    for index, (indent, key, documented) in enumerate(keys):
        if documented:
            continue
        # a documented ancestor covers its fields (e.g. podSecurityContext's seccompProfile.type)
        ancestors, level = [], indent
        for k in reversed(keys[:index]):
            if k[0] < level:
                ancestors.append(k)
                level = k[0]
        if any(a[2] for a in ancestors):
            continue
        children = []
        for child in keys[index + 1 :]:
            if child[0] <= indent:
                break
            children.append(child)
        direct = [c for c in children if c[0] == min(c[0] for c in children)] if children else []
        if direct and all(c[2] for c in direct):
            continue  # a section: each of its settings is documented
        undocumented.append(key)
    assert undocumented == []
    assert len(keys) > 60


def test_values_yaml_defaults_render_the_controllers_defaults() -> None:
    """With only the required values, the controller runs with its own defaults: the chart
    changes none of them (dry-run stays on)."""
    r = render_bare()
    chart = settings_of(r.args)
    plain = parse_settings(
        [
            f"--repos={','.join(BARE['repos'])}",
            "--in-cluster",
            f"--lease-namespace={NAMESPACE}",
        ],
        {},
        namespace_file=Path("/nonexistent"),
    )
    assert chart == plain
    assert chart.dry_run is True
    assert chart.in_cluster is True


# ---------------------------------------------------------------------------------------------
# Schema rejections: each bad value fails `helm template` with a message naming its key


DROP: Any = object()  # a key left out of the values
REJECTIONS: list[tuple[str, dict[str, Any], str]] = [
    ("no repos", {"repos": DROP}, "/repos"),
    ("empty repos", {"repos": []}, "/repos"),
    ("repos not a list", {"repos": "shop/*"}, "/repos"),
    ("unknown top-level key", {"maxImage": 5}, "'maxImage' not allowed"),
    ("unknown nested key", {"serviceAccount": {"annotation": {}}}, "'annotation' not allowed"),
    (
        "unknown key in a repository override",
        {"repositoryOverrides": [{"name": "a", "max-images": 5}]},
        "'max-images' not allowed",
    ),
    ("zero maxImages", {"maxImages": 0}, "/maxImages"),
    ("negative concurrency", {"concurrency": -1}, "/concurrency"),
    ("concurrency over 256", {"concurrency": 257}, "/concurrency"),
    (
        "zero maxImages in an override",
        {"repositoryOverrides": [{"name": "a", "maxImages": 0}]},
        "/repositoryOverrides/0/maxImages",
    ),
    ("override without name", {"repositoryOverrides": [{"maxImages": 5}]}, "name"),
    ("zero maxDeletionsPerCycle", {"maxDeletionsPerCycle": 0}, "/maxDeletionsPerCycle"),
    ("dryRun as a string", {"dryRun": "false"}, "/dryRun"),
    ("replicaCount as a string", {"replicaCount": "2"}, "/replicaCount"),
    ("a duration without unit", {"keepYoungerThan": "7 days"}, "/keepYoungerThan"),
    ("a zero duration", {"maxStaleness": "0s"}, "/maxStaleness"),
    ("an unknown workload kind", {"protectWorkloads": ["pods"]}, "/protectWorkloads"),
    ("a comma in a keep filter", {"keepFilters": ["^a{1,2}$"]}, "/keepFilters/0"),
    ("a namespace that is no DNS label", {"namespaces": ["Shop"]}, "/namespaces/0"),
    ("registryId as a number", {"registryId": 123456789012}, "/registryId"),
    ("intervalJitter over 1", {"intervalJitter": 1.5}, "/intervalJitter"),
    ("metrics port out of range", {"metrics": {"port": 70000}}, "/metrics/port"),
    (
        "grace period under 30 s",
        {"terminationGracePeriodSeconds": 10},
        "/terminationGracePeriodSeconds",
    ),
    ("unknown toleration field", {"tolerations": [{"keys": "a"}]}, "'keys' not allowed"),
    ("no image repository", {"image": {"repository": ""}}, "/image/repository"),
    (
        "kubeContexts without a kubeconfig Secret",
        {"kubeContexts": ["production"]},
        "/kubeconfig/secretName",
    ),
    (
        "two replicas without leader election",
        {"replicaCount": 2, "leaderElection": {"enabled": False}},
        "/leaderElection/enabled",
    ),
]


@pytest.mark.parametrize(
    ("values", "names"), [(v, n) for _, v, n in REJECTIONS], ids=[r[0] for r in REJECTIONS]
)
def test_schema_rejects_bad_values_naming_the_key(values: dict[str, Any], names: str) -> None:
    bad = {k: v for k, v in merged(BARE, values).items() if v is not DROP}
    result = template(bad)
    assert result.returncode != 0, result.stdout
    assert "values don't meet the specifications of the schema" in result.stderr
    assert names in result.stderr, result.stderr
    # only that key is named: the rest of the values are good
    problems = [
        line
        for line in result.stderr.splitlines()
        if line.lstrip().startswith("- at ")
        and not re.search(r"('(allOf|anyOf|oneOf)' failed|validation failed)$", line)
    ]
    assert problems, result.stderr
    assert all(names in line for line in problems), result.stderr


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"allowEmptyNamespaces": ["batch"]}, "allowEmptyNamespaces: batch is not in namespaces"),
        ({"kubeContexts": ["a"], "kubeconfig": {"secretName": ""}}, "/kubeconfig/secretName"),
    ],
)
def test_values_that_contradict_each_other_fail_naming_the_key(
    values: dict[str, Any], message: str
) -> None:
    result = template(merged(BARE, values))
    assert result.returncode != 0
    assert message in result.stderr


def test_helm_install_without_repositories_fails_naming_repos(kubeconfig: Path) -> None:
    result = install_dry_run({"image": BARE["image"]}, kubeconfig)
    assert result.returncode != 0
    assert "at '/repos': minItems: got 0, want 1" in result.stderr


# ---------------------------------------------------------------------------------------------
# The args: every controller flag reachable from values, through one mapping


def test_every_controller_flag_is_reachable_from_values() -> None:
    mapping = setting_flags()
    mapped = set(mapping.values())
    every = {flag.name for flag in FLAGS}
    assert len(mapped) == len(mapping), "a flag is mapped twice"
    assert not mapped & set(CHART_OWNED), "a chart-owned flag is also mapped from values"
    assert not mapped & set(NOT_IN_VALUES)
    missing = every - mapped - set(CHART_OWNED) - set(NOT_IN_VALUES)
    assert not missing, (
        f"controller flags not reachable from values: {sorted(missing)}; add each to "
        "'kube-ecr-cleanup-controller.settingFlags' in templates/_helpers.tpl, to values.yaml "
        "(documented), values.schema.json and ci/all-features-values.yaml"
    )
    assert not (mapped | set(CHART_OWNED) | set(NOT_IN_VALUES)) - every, "a flag that is gone"
    assert mapping["verbosity"] == "v"


def test_every_mapped_setting_has_a_documented_default_and_a_schema() -> None:
    values = default_values()
    for path in setting_flags():
        value_at(values, path)  # KeyError if missing
        node: dict[str, Any] = SCHEMA
        for part in path.split("."):
            node = resolve(resolve(node)["properties"][part])


def test_all_features_args_reflect_every_mapped_value() -> None:
    """Each mapped setting differs from its default in the all-features file and is rendered
    as `--flag=value`."""
    defaults, features = default_values(), all_features_values()
    r = render_all_features()
    for path, flag in setting_flags().items():
        value = value_at(features, path)
        if path != "leaderElection.enabled":  # on in both: off is tested below
            assert value != value_at(defaults, path), path
        assert f"--{flag}={flag_text(value)}" in r.args, (path, r.args)


def test_chart_owned_flags_are_rendered() -> None:
    bare, features = render_bare().args, render_all_features().args
    assert "--in-cluster=true" in bare
    assert not any(a.startswith(("--kubeconfig", "--kube-context", "--config")) for a in bare)
    assert f"--lease-namespace={NAMESPACE}" in bare
    assert "--metrics-address=:8080" in bare
    # several clusters: the kubeconfig and the contexts, never together with --in-cluster
    assert "--kubeconfig=/etc/kube-ecr-cleanup-controller/kubeconfig/config" in features
    assert "--kube-context=production,staging" in features
    assert not any(a.startswith("--in-cluster") for a in features)
    assert "--config=/etc/kube-ecr-cleanup-controller/config/rules.yaml" in features
    assert "--metrics-address=:9102" in features
    used = {a.split("=", 1)[0].lstrip("-") for a in bare + features}
    assert set(CHART_OWNED) <= used


def test_leader_election_off_passes_no_lease_namespace_and_grants_no_lease() -> None:
    r = render_bare({"leaderElection": {"enabled": False}})
    assert "--leader-elect=false" in r.args
    assert not any(a.startswith("--lease-namespace") for a in r.args)
    assert not [o for o in r.all("Role") if "leases" in json.dumps(o["rules"])]
    assert settings_of(r.args).leader_elect is False


def test_all_features_args_mean_what_the_values_say(tmp_path: Path) -> None:
    """The controller's own parser reads the rendered args and the rendered --config file."""
    r = render_all_features()
    mount_files(r, tmp_path)
    s = settings_of(r.args, tmp_path)
    assert s.dry_run is False
    assert s.repositories.include == ("shop/*", "batch/reports", "docker-hub/library/nginx")
    assert s.repositories.exclude == ("legacy/*",)
    assert s.rules.max_images == 100
    assert s.rules.keep_tags == frozenset({"latest", "stable"})
    assert [p.pattern for p in s.rules.keep_filters] == ["^release-"]
    assert s.rules.keep_younger_than == timedelta(days=2)
    assert s.rules.keep_pulled_within == timedelta(days=30)
    assert s.rules.max_deletions_per_cycle == 1000
    assert s.rules.delete_orphaned_artifacts is True
    assert s.max_staleness == timedelta(minutes=15)  # extraArgs come last and win
    assert s.protect_workloads == frozenset(WORKLOAD_KINDS)
    assert s.namespaces == ("shop", "batch", "edge", "jobs")
    assert s.kube_contexts == ("production", "staging")
    assert not s.in_cluster
    assert (s.lease_name, s.lease_namespace) == ("ecr-cleanup", NAMESPACE)
    assert s.lease_duration == timedelta(seconds=20)
    assert (s.output, s.log_format, s.concurrency) == ("json", "json", 4)
    reports, hub = s.overrides
    assert reports.pattern == "batch/reports"
    assert reports.rules.max_images == 50
    assert [p.pattern for p in reports.rules.keep_filters] == [r"^v[0-9]{1,3}\."]
    assert reports.rules.keep_pulled_within is None  # null turns the window off
    assert reports.rules.keep_younger_than == timedelta(days=1)
    assert reports.rules.keep_tags == frozenset({"latest"})
    assert hub.pattern == "docker-hub/*"
    assert hub.rules.max_images == 30
    assert hub.rules.max_deletions_per_cycle == 500
    assert hub.rules.delete_orphaned_artifacts is False  # the override beats the flag
    assert reports.rules.delete_orphaned_artifacts is True  # inherited from the flag
    assert hub.rules.keep_tags == frozenset({"latest", "stable"})  # inherited from the flags
    assert s.rules_for("shop/api").max_images == 100


def test_an_empty_list_clears_a_default() -> None:
    r = render_bare({"keepTags": []})
    assert "--keep-tags=" in r.args
    assert settings_of(r.args).rules.keep_tags == frozenset()


def test_the_config_checksum_rolls_the_pods_when_the_rules_change() -> None:
    def checksum(max_images: int) -> str:
        rules = {"repositoryOverrides": [{"name": "shop/*", "maxImages": max_images}]}
        annotations = render_bare(rules).deployment["spec"]["template"]["metadata"]["annotations"]
        return str(annotations["checksum/config"])

    assert re.fullmatch(r"[0-9a-f]{64}", checksum(5))
    assert checksum(5) != checksum(6)
    assert "annotations" not in render_bare().deployment["spec"]["template"]["metadata"]
    assert render_bare().all("ConfigMap") == []  # no overrides, no --config


def test_interval_in_whole_minutes_as_in_the_go_controller() -> None:
    r = render_bare({"interval": 15})
    assert "--interval=15" in r.args
    assert settings_of(r.args).interval == timedelta(minutes=15)


# ---------------------------------------------------------------------------------------------
# RBAC: exactly what the rendered args need, derived from the args


def api_group(kind: str) -> str:
    """A watched kind's API group, from the controller's own table of kinds (pods -> "")."""
    return KINDS[kind].group


def needed(settings: Settings) -> Grants:
    """What the controller needs for these settings: list+watch on pods and every protected
    workload kind, cluster-wide or in each namespace; the Lease in its namespace."""
    scopes = settings.namespaces or ("cluster",)
    kinds = ["pods", *sorted(settings.protect_workloads)]
    grants: Grants = {
        (scope, api_group(kind), kind, ""): {"list", "watch"} for scope in scopes for kind in kinds
    }
    for entry in settings.protect_resources:  # a cluster-scoped resource is read cluster-wide
        for scope in scopes if entry.namespaced else ("cluster",):
            grants[(scope, entry.group, entry.resource, "")] = {"list", "watch"}
    if settings.leader_elect:
        assert settings.lease_namespace is not None
        grants[(settings.lease_namespace, "coordination.k8s.io", "leases", "")] = {"create"}
        grants[(settings.lease_namespace, "coordination.k8s.io", "leases", settings.lease_name)] = {
            "get",
            "update",
        }
    return grants


RBAC_CASES: dict[str, dict[str, Any]] = {
    "default": {},
    "protect all": {"protectWorkloads": "all"},
    "protect none": {"protectWorkloads": "none"},
    "protect some": {"protectWorkloads": ["cronjobs", "deployments"]},
    "namespaces": {"namespaces": ["shop", "batch"]},
    "namespaces, pods only": {"namespaces": ["shop"], "protectWorkloads": "none"},
    "no leader election": {"leaderElection": {"enabled": False}},
    "another lease": {"leaderElection": {"leaseName": "pruner"}},
    "custom resources": {"protectResources": ["tekton", "argo-rollouts", "x.io/v1/ys:image=a"]},
    "custom resources, namespaces": {
        "namespaces": ["shop"],
        "protectResources": ["argo-workflows", "x.io/v1/zs:scope=cluster;pod-spec=spec"],
    },
}


@pytest.mark.parametrize("extra", RBAC_CASES.values(), ids=RBAC_CASES.keys())
def test_rbac_is_exactly_what_the_rendered_args_need(extra: dict[str, Any]) -> None:
    r = render_bare(extra)
    assert grants_of(r) == needed(settings_of(r.args))


def test_rbac_of_all_features_is_exactly_what_its_args_need(tmp_path: Path) -> None:
    r = render_all_features()
    mount_files(r, tmp_path)
    settings = settings_of(r.args, tmp_path)
    assert grants_of(r) == needed(settings)
    assert {k[2] for k in grants_of(r)} >= {"controllerrevisions", "cronjobs"}  # `all`


@pytest.mark.parametrize("which", VALUES_SETS)
def test_no_wildcard_and_nothing_but_read_on_workloads(which: str) -> None:
    r = rendered(which)
    rules = [rule for o in r.objects if o["kind"] in ("Role", "ClusterRole") for rule in o["rules"]]
    assert rules
    for rule in rules:
        for field in ("apiGroups", "resources", "verbs", "resourceNames"):
            assert "*" not in rule.get(field, []), rule
        if rule["resources"] != ["leases"]:
            assert rule["verbs"] == ["list", "watch"], rule
    assert "secrets" not in json.dumps(rules)


def test_protect_workloads_default_is_the_controllers_default() -> None:
    r = render_bare()
    assert settings_of(r.args).protect_workloads == DEFAULT_PROTECT_WORKLOADS
    resources = {k[2] for k in grants_of(r)}
    assert "controllerrevisions" not in resources
    assert "cronjobs" in resources


def test_the_chart_s_preset_file_is_generated_from_the_controller_s_presets() -> None:
    path = CHART / "files" / "resource-presets.yaml"
    assert path.read_text() == chart_presets(), "run scripts/render-chart-presets"


def test_an_unknown_preset_or_a_bad_entry_fails_the_render() -> None:
    for value, message in (
        ("keda", 'protectResources: unknown preset "keda"'),
        ("x.io/ys:image=a", "expected GROUP/VERSION/RESOURCE:KIND=PATH"),
    ):
        result = template(merged(BARE, {"protectResources": [value]}))
        assert result.returncode != 0
        assert message in result.stderr


def test_a_namespaced_install_has_no_cluster_role() -> None:
    r = render_bare({"namespaces": ["shop", "batch"]})
    assert r.all("ClusterRole") == []
    assert r.all("ClusterRoleBinding") == []
    namespaces = sorted(o["metadata"]["namespace"] for o in r.all("RoleBinding"))
    assert namespaces == ["batch", NAMESPACE, "shop"]


# ---------------------------------------------------------------------------------------------
# Pods: security, probes, scheduling


@pytest.mark.parametrize("which", VALUES_SETS)
def test_security_context_is_locked_down(which: str) -> None:
    r = rendered(which)
    pod, container = r.pod_spec, r.container
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "fsGroup": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert container["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    for forbidden in ("hostNetwork", "hostPID", "hostIPC"):
        assert forbidden not in pod
    for mount in container.get("volumeMounts", []):
        assert mount.get("readOnly") is True or mount["mountPath"] == "/tmp", mount
    assert r.one("ServiceAccount")["automountServiceAccountToken"] is False
    assert pod["automountServiceAccountToken"] is True  # only this pod gets the token


@pytest.mark.parametrize("which", VALUES_SETS)
def test_probes_and_grace_period(which: str) -> None:
    r = rendered(which)
    container = r.container
    (port,) = container["ports"]
    assert port["name"] == "http-metrics"
    assert f"--metrics-address=:{port['containerPort']}" in r.args
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http-metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http-metrics"}
    assert r.pod_spec["terminationGracePeriodSeconds"] >= 30
    assert container["resources"]["requests"]["memory"]
    assert container["resources"]["limits"]["memory"]


def test_all_features_pod_settings_are_rendered() -> None:
    features, r = all_features_values(), render_all_features()
    pod, template_meta = r.pod_spec, r.deployment["spec"]["template"]["metadata"]
    for key in (
        "nodeSelector",
        "tolerations",
        "affinity",
        "topologySpreadConstraints",
        "priorityClassName",
        "imagePullSecrets",
        "terminationGracePeriodSeconds",
    ):
        assert pod[key] == features[key], key
    assert r.container["env"] == features["extraEnv"]
    assert r.container["resources"] == features["resources"]
    assert template_meta["annotations"]["example.com/owner"] == "platform"
    assert template_meta["labels"]["team"] == "platform"
    assert (
        r.container["image"] == f"{features['image']['repository']}@{features['image']['digest']}"
    )
    assert r.deployment["spec"]["replicas"] == 2
    service_account = r.one("ServiceAccount")
    assert service_account["metadata"]["annotations"] == features["serviceAccount"]["annotations"]
    assert pod["serviceAccountName"] == "ecr-cleanup"
    for o in r.objects:
        assert o["metadata"]["labels"]["cost-center"] == "platform", o["kind"]


def test_several_clusters_mount_the_kubeconfig_secret_read_only() -> None:
    r = render_all_features()
    volumes = {v["name"]: v for v in r.pod_spec["volumes"]}
    assert volumes["kubeconfig"]["secret"] == {
        "secretName": "ecr-cleanup-kubeconfig",
        "items": [{"key": "config", "path": "config"}],
    }
    mounts = {m["name"]: m for m in r.container["volumeMounts"]}
    assert mounts["kubeconfig"] == {
        "name": "kubeconfig",
        "mountPath": "/etc/kube-ecr-cleanup-controller/kubeconfig",
        "readOnly": True,
    }
    assert volumes["tmp"]["emptyDir"]["medium"] == "Memory"


def test_image_defaults_to_the_app_version() -> None:
    r = render_bare()
    assert r.container["image"] == f"{BARE['image']['repository']}:{controller.__version__}"


# ---------------------------------------------------------------------------------------------
# Service, ServiceMonitor, PrometheusRule, dashboard, PodDisruptionBudget, NetworkPolicy


def test_optional_objects_are_off_by_default() -> None:
    kinds = render_bare().kinds()
    assert kinds == sorted(
        [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "Service",
            "Deployment",
        ]
    )


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_service_monitor_scrapes_the_metrics_port() -> None:
    r = render_all_features()
    features = all_features_values()["serviceMonitor"]
    monitor, service = r.one("ServiceMonitor"), r.one("Service")
    pod_labels = r.deployment["spec"]["template"]["metadata"]["labels"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["name"]
    assert monitor["metadata"]["namespace"] == NAMESPACE
    assert set(monitor["spec"]) <= {"jobLabel", "namespaceSelector", "selector", "endpoints"}
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    assert selects(service["spec"]["selector"], pod_labels)
    (endpoint,) = monitor["spec"]["endpoints"]
    assert set(endpoint) <= {
        "port",
        "path",
        "scheme",
        "interval",
        "scrapeTimeout",
        "relabelings",
        "metricRelabelings",
    }
    (port,) = service["spec"]["ports"]
    assert endpoint["port"] == port["name"] == port["targetPort"] == "http-metrics"
    assert endpoint["path"] == "/metrics"
    assert endpoint["interval"] == features["interval"]
    assert endpoint["scrapeTimeout"] == features["scrapeTimeout"]
    assert endpoint["relabelings"] == features["relabelings"]
    assert endpoint["metricRelabelings"] == features["metricRelabelings"]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_prometheus_rule_renders_files_alerts_yaml_and_promtool_accepts_it(tmp_path: Path) -> None:
    assert ALERTS.is_file(), f"{ALERTS.relative_to(ROOT)} is missing (the alert rules, issue 10)"
    rule = render_all_features().one("PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["name"]
    assert rule["metadata"]["namespace"] == NAMESPACE
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert set(rule["spec"]) == {"groups"}
    groups = rule["spec"]["groups"]
    # one source: exactly the groups of files/alerts.yaml
    assert groups == yaml.safe_load(ALERTS.read_text())["groups"]
    assert groups
    for group in groups:
        assert group["name"]
        assert group["rules"]
        assert set(group) <= {
            "name",
            "interval",
            "rules",
            "limit",
            "query_offset",
            "partial_response_strategy",
        }
        for item in group["rules"]:
            assert ("alert" in item) != ("record" in item), item
            assert isinstance(item["expr"], str | int | float)
            assert str(item["expr"]).strip()
            assert set(item) <= {
                "alert",
                "record",
                "expr",
                "for",
                "keep_firing_for",
                "labels",
                "annotations",
            }
    extracted = tmp_path / "rules.yaml"
    extracted.write_text(yaml.safe_dump({"groups": groups}))
    promtool = tool("promtool", install="scripts/install-prometheus")
    result = subprocess.run(
        [promtool, "check", "rules", str(extracted)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    count = sum(len(g["rules"]) for g in groups)
    assert f"SUCCESS: {count} rules found" in result.stdout


def test_prometheus_rule_check_is_live(tmp_path: Path) -> None:
    """promtool, as used above, rejects a broken rule."""
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        yaml.safe_dump(
            {"groups": [{"name": "g", "rules": [{"alert": "A", "expr": "sum(rate(x[5m])"}]}]}
        )
    )
    promtool = tool("promtool", install="scripts/install-prometheus")
    result = subprocess.run(
        [promtool, "check", "rules", str(broken)], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0


def test_dashboard_configmap_is_byte_identical_to_the_grafana_file() -> None:
    assert DASHBOARD.is_file(), (
        f"{DASHBOARD.relative_to(ROOT)} is missing (the dashboard, issue 10)"
    )
    link = CHART / "files" / "dashboard.json"
    assert link.is_symlink()
    assert link.resolve() == DASHBOARD.resolve()
    r = render_all_features()
    (configmap,) = [o for o in r.all("ConfigMap") if o["metadata"]["name"].endswith("-dashboard")]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["namespace"] == "monitoring"
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "Platform"}
    (content,) = configmap["data"].values()
    assert content.encode() == DASHBOARD.read_bytes()
    json.loads(content)  # still valid JSON


def test_bare_dashboard_uses_the_release_namespace_and_sidecar_label() -> None:
    r = render_bare({"dashboard": {"enabled": True}})
    (configmap,) = r.all("ConfigMap")
    assert configmap["metadata"]["namespace"] == NAMESPACE
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"


def test_packaged_chart_carries_the_real_files(tmp_path: Path) -> None:
    """helm package follows the dashboard symlink: the .tgz holds the content, not a link."""
    result = run_helm("package", str(CHART), "--destination", str(tmp_path))
    assert result.returncode == 0, result.stderr
    (package,) = tmp_path.glob("kube-ecr-cleanup-controller-*.tgz")
    with tarfile.open(package) as tar:
        member = tar.getmember("kube-ecr-cleanup-controller/files/dashboard.json")
        assert member.isfile()
        dashboard = tar.extractfile(member)
        assert dashboard is not None
        assert dashboard.read() == DASHBOARD.read_bytes()
        alerts = tar.extractfile("kube-ecr-cleanup-controller/files/alerts.yaml")
        assert alerts is not None
        assert alerts.read() == ALERTS.read_bytes()
        names = tar.getnames()
        assert not [n for n in names if "/ci/" in n], "ci/ values are not packaged"
    from_package = template(files=[ALL_FEATURES], chart=package)
    assert from_package.returncode == 0, from_package.stderr
    assert from_package.stdout == render_all_features().text


def test_pod_disruption_budget_only_with_more_than_one_replica() -> None:
    assert render_bare().all("PodDisruptionBudget") == []
    r = render_bare({"replicaCount": 2})
    budget = r.one("PodDisruptionBudget")
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["selector"] == r.deployment["spec"]["selector"]


def test_network_policy_allows_only_what_the_controller_uses() -> None:
    r = render_bare({"networkPolicy": {"enabled": True}})
    policy = r.one("NetworkPolicy")["spec"]
    assert policy["podSelector"] == r.deployment["spec"]["selector"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    (ingress,) = policy["ingress"]
    assert ingress == {"ports": [{"port": "http-metrics", "protocol": "TCP"}]}
    egress = policy["egress"]
    dns, api_server, https, pod_identity = egress
    assert dns == {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}
    assert {p["port"] for p in api_server["ports"]} == {443, 6443}
    assert https["ports"] == [{"port": 443, "protocol": "TCP"}]
    assert pod_identity == {
        "to": [
            {"ipBlock": {"cidr": "169.254.170.23/32"}},
            {"ipBlock": {"cidr": "fd00:ec2::23/128"}},
        ],
        "ports": [{"port": 80, "protocol": "TCP"}],
    }


def test_all_features_network_policy_narrows_sources_and_adds_egress() -> None:
    policy = render_all_features().one("NetworkPolicy")["spec"]
    features = all_features_values()["networkPolicy"]
    assert policy["ingress"][0]["from"] == features["metricsFrom"]
    assert policy["egress"][-1] == features["extraEgress"][0]


# ---------------------------------------------------------------------------------------------
# NOTES.txt


def notes(values: dict[str, Any], kubeconfig: Path) -> str:
    """NOTES.txt as `helm install --dry-run=client` prints it."""
    result = install_dry_run(values, kubeconfig)
    assert result.returncode == 0, result.stderr
    return result.stdout.split("\nNOTES:\n", 1)[1]


def test_notes_say_dry_run_is_on_how_to_review_and_how_to_turn_it_off(kubeconfig: Path) -> None:
    text = notes(BARE, kubeconfig)
    assert "DRY RUN is ON" in text
    assert (
        f"kubectl --namespace {NAMESPACE} logs deployment/ecr-kube-ecr-cleanup-controller" in text
    )
    assert "--reuse-values --set dryRun=false" in text
    assert "region is not set" in text


def test_notes_name_metrics_that_exist(kubeconfig: Path) -> None:
    """The metrics NOTES.txt greps for are in the README's metric table (kept equal to the
    registry by tests/test_readme.py)."""
    text = notes(BARE, kubeconfig)
    (group,) = re.findall(r"\^ecr_cleanup_\(([a-z_|]+)\)", text)
    documented = set(
        re.findall(r"^\| `(ecr_cleanup_[a-z_]+)`", (ROOT / "README.md").read_text(), re.M)
    )
    named = {f"ecr_cleanup_{name}" for name in group.split("|")}
    assert named <= documented, named - documented


def test_notes_say_when_dry_run_is_off(kubeconfig: Path) -> None:
    text = notes(merged(BARE, {"dryRun": False, "region": "eu-west-1"}), kubeconfig)
    assert "DRY RUN is OFF" in text
    assert "WILL BE DELETED" in text
    assert "--set dryRun=true" in text
    assert "region is not set" not in text
