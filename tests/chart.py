"""The Helm chart under test: the real helm binary (scripts/install-helm), rendering, and the rendered objects."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "kube-ecr-cleanup-controller"
ALL_FEATURES = CHART / "ci" / "all-features-values.yaml"
DASHBOARD = ROOT / "grafana" / "kube-ecr-cleanup-controller.json"
ALERTS = CHART / "files" / "alerts.yaml"
RELEASE = "ecr"
NAMESPACE = "ecr-cleanup"
# what `helm install` needs besides the chart's defaults: the repositories and the image
BARE: dict[str, Any] = {
    "repos": ["shop/*", "batch/reports", "docker-hub/library/nginx"],
    "image": {"repository": "registry.example/platform/kube-ecr-cleanup-controller"},
}
# the CRDs the chart may render (the Prometheus Operator's)
API_VERSIONS = (
    "monitoring.coreos.com/v1/ServiceMonitor",
    "monitoring.coreos.com/v1/PrometheusRule",
)


def tool(name: str, *, install: str) -> str:
    """The path of a command-line tool, or a failed test saying how to install it (never a skip)."""
    for candidate in (ROOT / ".venv" / "bin" / name, ROOT / ".cache" / "tools" / "bin" / name):
        if candidate.is_file():
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is missing: run {install}")
    return found


def helm() -> str:
    return tool("helm", install="scripts/install-helm")


def run_helm(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    link = CHART / "files" / "dashboard.json"
    if link.is_symlink() and not link.exists():  # helm refuses a chart with a dangling link
        pytest.fail(
            f"{DASHBOARD.relative_to(ROOT)} is missing: the chart's files/dashboard.json links to "
            "it (the Grafana dashboard, issue 10), and helm cannot load the chart without it"
        )
    return subprocess.run(
        [helm(), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def merged(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `extra` merged in, maps recursively (as helm merges values files)."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def values_file(values: Mapping[str, Any], directory: Path) -> Path:
    path = directory / f"values-{len(list(directory.iterdir()))}.yaml"
    path.write_text(yaml.safe_dump(dict(values), sort_keys=False))
    return path


def template(
    values: Mapping[str, Any] | None = None,
    *,
    files: Sequence[Path] = (),
    chart: Path = CHART,
    kube_version: str = "1.31.0",
    namespace: str = NAMESPACE,
) -> subprocess.CompletedProcess[str]:
    """`helm template` of the chart with values files, then `values` on top."""
    with tempfile.TemporaryDirectory(prefix="chart-values-") as directory:
        args = ["template", RELEASE, str(chart), "--namespace", namespace]
        args += ["--kube-version", kube_version]
        for api in API_VERSIONS:
            args += ["--api-versions", api]
        for file in files:
            args += ["--values", str(file)]
        if values is not None:
            args += ["--values", str(values_file(values, Path(directory)))]
        return run_helm(*args)


@dataclass(frozen=True)
class Rendered:
    """The objects `helm template` rendered, and its text."""

    text: str
    objects: tuple[dict[str, Any], ...]

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str) -> dict[str, Any]:
        found = self.all(kind)
        assert len(found) == 1, f"expected one {kind}, got {len(found)}"
        return found[0]

    def kinds(self) -> list[str]:
        return sorted(o["kind"] for o in self.objects)

    @property
    def deployment(self) -> dict[str, Any]:
        return self.one("Deployment")

    @property
    def pod_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.deployment["spec"]["template"]["spec"]
        return spec

    @property
    def container(self) -> dict[str, Any]:
        (container,) = self.pod_spec["containers"]
        return dict(container)

    @property
    def args(self) -> list[str]:
        return [str(a) for a in self.container["args"]]

    def config_file(self) -> str | None:
        """The --config file's text, from the ConfigMap the Deployment mounts, or None."""
        volumes = {v["name"]: v for v in self.pod_spec.get("volumes", [])}
        if "config" not in volumes:
            return None
        name = volumes["config"]["configMap"]["name"]
        (configmap,) = [
            o for o in self.all("ConfigMap") if o["metadata"]["name"] == name and "data" in o
        ]
        (text,) = configmap["data"].values()
        return str(text)


def render(
    values: Mapping[str, Any] | None = None,
    *,
    files: Sequence[Path] = (),
    kube_version: str = "1.31.0",
) -> Rendered:
    """Render (bare values, or the given files, then `values`); a failure fails the test."""
    if values is None and not files:
        values = BARE
    result = template(values, files=files, kube_version=kube_version)
    assert result.returncode == 0, result.stderr
    objects = tuple(d for d in yaml.safe_load_all(result.stdout) if d)
    return Rendered(result.stdout, objects)


def render_bare(extra: Mapping[str, Any] | None = None) -> Rendered:
    return render(merged(BARE, extra or {}))


def render_all_features(extra: Mapping[str, Any] | None = None) -> Rendered:
    return render(extra, files=[ALL_FEATURES]) if extra else render(files=[ALL_FEATURES])


def all_features_values() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(ALL_FEATURES.read_text())
    return data


def default_values() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return data


def walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every (JSON-pointer-ish path, node) of a loaded YAML/JSON document."""
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, f"{path}/{index}")


def setting_flags() -> dict[str, str]:
    """The chart's one mapping of values paths to flags ("kube-ecr-cleanup-controller.settingFlags")."""
    text = (CHART / "templates" / "_helpers.tpl").read_text()
    start = text.index('{{- define "kube-ecr-cleanup-controller.settingFlags" -}}')
    body = text[start:].split("\n", 1)[1].split("{{- end }}", 1)[0]
    mapping: dict[str, str] = yaml.safe_load(body)
    return mapping


def value_at(values: Mapping[str, Any], path: str) -> Any:
    node: Any = values
    for part in path.split("."):
        node = node[part]
    return node


def flag_text(value: Any) -> str:
    """How the chart writes a value into a flag: lists comma-joined, booleans lower-case."""
    if isinstance(value, list):
        return ",".join(flag_text(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


Grants = dict[tuple[str, str, str, str], set[str]]  # (scope, group, resource, names) -> verbs


def grants_of(r: Rendered) -> Grants:
    """Everything the rendered RBAC grants the controller's ServiceAccount."""
    service_account = r.deployment["spec"]["template"]["spec"]["serviceAccountName"]
    roles = {
        (o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o
        for o in r.objects
        if o["kind"] in ("Role", "ClusterRole")
    }
    grants: Grants = {}
    for binding in r.objects:
        if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": service_account, "namespace": NAMESPACE}
        ]
        ref = binding["roleRef"]
        namespace = binding["metadata"].get("namespace")
        role = roles.pop((ref["kind"], namespace if ref["kind"] == "Role" else None, ref["name"]))
        scope = "cluster" if binding["kind"] == "ClusterRoleBinding" else namespace
        for rule in role["rules"]:
            assert set(rule) <= {"apiGroups", "resources", "verbs", "resourceNames"}
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    names = ",".join(rule.get("resourceNames", []))
                    grants.setdefault((scope, group, resource, names), set()).update(rule["verbs"])
    assert roles == {}, f"roles bound to nobody: {list(roles)}"
    return grants
