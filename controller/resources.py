"""Custom resources that hold images: what `--protect-resources` declares, and what it finds.

A KEDA ScaledJob, an Argo CronWorkflow or a Tekton Task starts pods later, and no pod exists
between runs: their images must be protected from the objects themselves. This module owns
the declarations: an entry names one resource (group, version, plural) and the paths in its
objects that lead to pod specs, to container objects (with an `image`) or to image strings;
presets name the entries of well-known projects. It parses entries from the command line
(`GROUP/VERSION/RESOURCE:KIND=PATH;KIND=PATH`) and from the config file, extracts references
through `inventory`'s parsing (as a template's, so only ECR tags and digests count), and says
which RBAC rules the declared resources need.

Pure: no I/O. Paths are walked leniently: a missing field, or a field of another type than the
path expects (a mapping where `[*]` wants a list, a list where a field name wants a mapping),
yields nothing, since a CRD's optional fields are often absent and its schema is not ours to
enforce. At the end of a path, a pod spec or container that is not an object also yields
nothing (as inventory skips such entries of a pod's container list), while an image that is
neither a string nor null is counted as malformed (as inventory counts it in a pod).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypedDict

from controller.inventory import Extraction, extract_parts

EACH: Final = "[*]"
# the path step meaning every element of a list; field names cannot contain brackets

_FIELD = re.compile(r"[A-Za-z_$][A-Za-z0-9_$-]*")
_SEGMENT = re.compile(r"(?P<name>[^.\[\]]*)(?P<each>(?:\[\*\])*)")
_GROUP = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_VERSION = re.compile(r"v[1-9][0-9]*((alpha|beta)[1-9][0-9]*)?")
_PLURAL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


class ResourceSpecError(ValueError):
    """A `--protect-resources` value or `protect-resources:` entry that cannot be used.

    The message is one line that names the entry and what is wrong with it.
    """

    def __init__(self, entry: str, problem: str) -> None:
        super().__init__(f"protect-resources entry {entry!r}: {problem}")
        self.entry = entry
        self.problem = problem


@dataclass(frozen=True, slots=True)
class FieldPath:
    """A parsed path: field names, and `EACH` for every element of a list."""

    steps: tuple[str, ...]
    # never empty; the first step is a field name (an object is a mapping)

    @property
    def text(self) -> str:
        """The path as written: `spec.templates[*].container`."""
        out = ""
        for step in self.steps:
            out += step if step == EACH else (f".{step}" if out else step)
        return out

    def walk(self, obj: object) -> Iterator[object]:
        """Every non-null value the path reaches in `obj` (none where a field is missing)."""
        nodes: list[object] = [obj]
        for step in self.steps:
            found: list[object] = []
            for node in nodes:
                if step == EACH:
                    if isinstance(node, list):
                        found.extend(item for item in node if item is not None)
                elif isinstance(node, Mapping):
                    value = node.get(step)
                    if value is not None:
                        found.append(value)
            nodes = found
        return iter(nodes)


def parse_path(text: str, *, entry: str | None = None) -> FieldPath:
    """`spec.steps[*]` -> FieldPath; ResourceSpecError (naming `entry`, or the path) if bad."""
    where = text if entry is None else entry

    def bad(problem: str) -> ResourceSpecError:
        return ResourceSpecError(where, problem)

    if not text:
        raise bad("empty path")
    steps: list[str] = []
    for segment in text.split("."):
        match = _SEGMENT.fullmatch(segment)
        if match is None or not _FIELD.fullmatch(match["name"]):
            raise bad(
                f"bad path {text!r}: {segment!r} is not a field name optionally followed by [*]"
            )
        steps.append(match["name"])
        steps.extend(EACH for _ in range(len(match["each"]) // len(EACH)))
    return FieldPath(tuple(steps))


@dataclass(frozen=True, slots=True)
class _PathKind:
    """One kind of declared path, with its names in each syntax."""

    flag: str
    # on the command line: KIND=PATH
    key: str
    # in the config file: KEY: [PATH, ...]
    attribute: str
    # the ResourceEntry field holding the paths


_PATH_KINDS: Final = (
    _PathKind("pod-spec", "pod-specs", "pod_specs"),
    _PathKind("container", "containers", "containers"),
    _PathKind("image", "images", "images"),
)
_BY_FLAG: Final = {kind.flag: kind for kind in _PATH_KINDS}
_BY_KEY: Final = {kind.key: kind for kind in _PATH_KINDS}
_SCOPE_FLAG: Final = "scope"
# on the command line, `scope=cluster` (or `scope=namespaced`, the default) beside the paths
_SCOPE_KEY: Final = "cluster-scoped"
_RESOURCE_KEY: Final = "resource"


@dataclass(frozen=True, slots=True)
class ResourceEntry:
    """One custom resource whose objects hold images, and where in them."""

    group: str
    # API group, e.g. keda.sh (never the core group: its kinds are sources of their own)
    version: str
    # e.g. v1alpha1: the version listed and watched
    resource: str
    # plural resource name, e.g. scaledjobs
    namespaced: bool = True
    # False for a cluster-scoped resource (e.g. Argo's clusterworkflowtemplates)
    pod_specs: tuple[FieldPath, ...] = ()
    # paths to pod specs: their init, regular and ephemeral containers' images
    containers: tuple[FieldPath, ...] = ()
    # paths to container objects: their `image`
    images: tuple[FieldPath, ...] = ()
    # paths to image strings
    text: str = field(default="", compare=False)
    # what the entry came from (a preset name, a flag value, a config entry), for messages

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"

    @property
    def qualified(self) -> str:
        """`scaledjobs.keda.sh`, as kubectl and RBAC messages name a resource."""
        return f"{self.resource}.{self.group}"

    @property
    def paths(self) -> tuple[tuple[str, FieldPath], ...]:
        """Every declared path with its kind's command-line name, in declaration order."""
        return tuple(
            (kind.flag, path)
            for kind in _PATH_KINDS
            for path in getattr(self, kind.attribute)  # tuple[FieldPath, ...]
        )

    def extract(self, obj: Mapping[str, Any]) -> Extraction:
        """The references every declared path reaches in one object of this resource."""
        return extract_parts(
            pod_specs=(found for path in self.pod_specs for found in path.walk(obj)),
            containers=(found for path in self.containers for found in path.walk(obj)),
            images=(found for path in self.images for found in path.walk(obj)),
        )


def _unique(paths: Iterable[FieldPath]) -> tuple[FieldPath, ...]:
    return tuple(dict.fromkeys(paths))


def _resource_parts(text: str, entry: str) -> tuple[str, str, str]:
    parts = text.split("/")
    if len(parts) != 3:
        raise ResourceSpecError(
            entry, f"{text!r} is not GROUP/VERSION/RESOURCE ({len(parts) - 1} '/' instead of 2)"
        )
    group, version, resource = parts
    if not _GROUP.fullmatch(group):
        raise ResourceSpecError(entry, f"{group!r} is not an API group (e.g. keda.sh)")
    if not _VERSION.fullmatch(version):
        raise ResourceSpecError(entry, f"{version!r} is not an API version (e.g. v1alpha1)")
    if not _PLURAL.fullmatch(resource):
        raise ResourceSpecError(
            entry, f"{resource!r} is not a plural resource name (e.g. scaledjobs)"
        )
    return group, version, resource


def _entry(
    entry: str,
    resource: str,
    paths: Mapping[str, list[FieldPath]],
    *,
    namespaced: bool,
) -> ResourceEntry:
    group, version, plural = _resource_parts(resource, entry)
    if not any(paths.values()):
        raise ResourceSpecError(
            entry, "no paths: declare at least one pod-spec, container or image"
        )
    return ResourceEntry(
        group,
        version,
        plural,
        namespaced,
        pod_specs=_unique(paths.get("pod-spec", ())),
        containers=_unique(paths.get("container", ())),
        images=_unique(paths.get("image", ())),
        text=entry,
    )


def parse_entry(text: str) -> ResourceEntry:
    """Parse a command-line entry: `GROUP/VERSION/RESOURCE:KIND=PATH[;KIND=PATH...]`.

    KIND is `pod-spec`, `container` or `image`; a `scope=cluster` pair declares a
    cluster-scoped resource (namespaced is the default, as most custom resources are).
    """
    resource, colon, declarations = text.partition(":")
    if not colon:
        raise ResourceSpecError(
            text, "missing ':KIND=PATH' after GROUP/VERSION/RESOURCE (or an unknown preset name)"
        )
    paths: dict[str, list[FieldPath]] = {kind.flag: [] for kind in _PATH_KINDS}
    namespaced = True
    for pair in declarations.split(";"):
        kind, equals, value = pair.partition("=")
        kind = kind.strip()
        value = value.strip()
        if not equals:
            raise ResourceSpecError(text, f"{pair!r} is not KIND=PATH (missing '=')")
        if kind == _SCOPE_FLAG:
            if value not in ("cluster", "namespaced"):
                raise ResourceSpecError(text, f"scope must be cluster or namespaced, not {value!r}")
            namespaced = value == "namespaced"
            continue
        if kind not in _BY_FLAG:
            raise ResourceSpecError(
                text, f"unknown KIND {kind!r}; expected one of {', '.join(_BY_FLAG)}"
            )
        paths[kind].append(parse_path(value, entry=text))
    return _entry(text, resource, paths, namespaced=namespaced)


def parse_config_entry(raw: Mapping[str, Any]) -> ResourceEntry:
    """Parse a config-file entry.

    `{resource: GROUP/VERSION/RESOURCE, pod-specs: [PATH...], containers: [PATH...],
    images: [PATH...], cluster-scoped: true}`, every key but `resource` optional.
    """
    text = _describe(raw)
    unknown = sorted(str(k) for k in raw if k not in (_RESOURCE_KEY, _SCOPE_KEY, *_BY_KEY))
    if unknown:
        allowed = ", ".join((_RESOURCE_KEY, *_BY_KEY, _SCOPE_KEY))
        raise ResourceSpecError(text, f"unknown key {unknown[0]!r}; allowed: {allowed}")
    resource = raw.get(_RESOURCE_KEY)
    if not isinstance(resource, str):
        raise ResourceSpecError(text, f"`{_RESOURCE_KEY}: GROUP/VERSION/RESOURCE` is required")
    scope = raw.get(_SCOPE_KEY, False)
    if not isinstance(scope, bool):
        raise ResourceSpecError(text, f"`{_SCOPE_KEY}` must be true or false")
    paths: dict[str, list[FieldPath]] = {}
    for key, kind in _BY_KEY.items():
        values = raw.get(key, [])
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ResourceSpecError(text, f"`{key}` must be a list of paths")
        paths[kind.flag] = [parse_path(v, entry=text) for v in values]
    return _entry(text, resource, paths, namespaced=not scope)


def _describe(raw: Mapping[str, Any]) -> str:
    """A config entry in one line, for messages: `{resource: a/v1/b, containers: [...]}`."""

    def flow(value: object) -> str:
        if isinstance(value, list):
            return "[" + ", ".join(flow(item) for item in value) + "]"
        return str(value).lower() if isinstance(value, bool) else str(value)

    return "{" + ", ".join(f"{key}: {flow(value)}" for key, value in raw.items()) + "}"


# ---------------------------------------------------------------------------------------------
# Presets
#
# Field names checked against each project's published API reference (December 2026):
# - KEDA: keda.sh/docs/latest/reference/scaledjob-spec (ScaledJob, keda.sh/v1alpha1:
#   spec.jobTargetRef is a batch/v1 JobSpec, so its pod spec is at .template.spec).
# - Argo Workflows: argoproj/argo-workflows docs/fields.md and the generated SDK docs
#   (IoArgoprojWorkflowV1alpha1Template: container, script, initContainers and sidecars
#   (UserContainer lists), containerSet.containers (ContainerNode, a container with
#   dependencies); WorkflowSpec: templates, templateDefaults; CronWorkflowSpec: workflowSpec;
#   WorkflowStatus: storedWorkflowTemplateSpec, a WorkflowSpec). ClusterWorkflowTemplate is
#   cluster-scoped. Workflows count while they exist: a retry or resubmission runs them again.
# - Argo Rollouts: the Rollout CRD in argoproj/argo-rollouts manifests/install.yaml
#   (rollouts.argoproj.io, namespaced, spec.template is a pod template). A Rollout with
#   spec.workloadRef points at a Deployment instead, which the deployments source watches.
#   argoproj.github.io/argo-rollouts/analysis/job: a job metric's Job spec is at
#   spec.metrics[*].provider.job.spec of an AnalysisTemplate (or of the cluster-scoped
#   ClusterAnalysisTemplate), whose Jobs run only while a rollout is analysed.
# - Tekton Pipelines: tekton.dev/docs/pipelines/tasks and mintlify.com/tektoncd/pipeline/api/v1
#   (TaskSpec: steps, sidecars, stepTemplate; a Pipeline's tasks and finally are PipelineTasks
#   whose taskSpec embeds a TaskSpec; TaskRun: spec.taskSpec, status.taskSpec; PipelineRun:
#   spec.pipelineSpec, status.pipelineSpec), all in tekton.dev/v1.

_ARGO: Final = "argoproj.io/v1alpha1"
_TEKTON: Final = "tekton.dev/v1"
_ARGO_TEMPLATE: Final = (
    "container",
    "script",
    "initContainers[*]",
    "sidecars[*]",
    "containerSet.containers[*]",
)
# container paths of one Argo template
_ANALYSIS_JOB: Final = "spec.metrics[*].provider.job.spec.template.spec"
# the pod spec of an Argo Rollouts job metric
_TEKTON_TASK_SPEC: Final = ("steps[*]", "sidecars[*]", "stepTemplate")
# container paths of one Tekton TaskSpec


def _argo_workflow_spec(*prefixes: str) -> str:
    """Container declarations for the Argo WorkflowSpecs at `prefixes`."""
    return ";".join(
        f"container={prefix}.{where}.{path}"
        for prefix in prefixes
        for where in ("templates[*]", "templateDefaults")
        for path in _ARGO_TEMPLATE
    )


def _tekton_task_spec(*prefixes: str) -> str:
    return ";".join(
        f"container={prefix}.{path}" for prefix in prefixes for path in _TEKTON_TASK_SPEC
    )


def _tekton_pipeline_spec(*prefixes: str) -> str:
    return _tekton_task_spec(
        *(f"{prefix}.{tasks}[*].taskSpec" for prefix in prefixes for tasks in ("tasks", "finally"))
    )


def _preset(name: str, *entries: str) -> tuple[str, tuple[ResourceEntry, ...]]:
    parsed = tuple(parse_entry(text) for text in entries)
    return name, tuple(
        ResourceEntry(
            e.group,
            e.version,
            e.resource,
            e.namespaced,
            pod_specs=e.pod_specs,
            containers=e.containers,
            images=e.images,
            text=f"{name} ({e.qualified})",
        )
        for e in parsed
    )


PRESETS: Final[Mapping[str, tuple[ResourceEntry, ...]]] = dict(
    (
        _preset(
            "keda-scaledjobs",
            "keda.sh/v1alpha1/scaledjobs:pod-spec=spec.jobTargetRef.template.spec",
        ),
        _preset(
            "argo-workflows",
            f"{_ARGO}/workflows:"
            + _argo_workflow_spec("spec", "status.storedWorkflowTemplateSpec"),
            f"{_ARGO}/cronworkflows:" + _argo_workflow_spec("spec.workflowSpec"),
            f"{_ARGO}/workflowtemplates:" + _argo_workflow_spec("spec"),
            f"{_ARGO}/clusterworkflowtemplates:scope=cluster;" + _argo_workflow_spec("spec"),
        ),
        _preset(
            "argo-rollouts",
            f"{_ARGO}/rollouts:pod-spec=spec.template.spec",
            f"{_ARGO}/analysistemplates:pod-spec={_ANALYSIS_JOB}",
            f"{_ARGO}/clusteranalysistemplates:scope=cluster;pod-spec={_ANALYSIS_JOB}",
        ),
        _preset(
            "tekton",
            f"{_TEKTON}/tasks:" + _tekton_task_spec("spec"),
            f"{_TEKTON}/pipelines:" + _tekton_pipeline_spec("spec"),
            f"{_TEKTON}/taskruns:" + _tekton_task_spec("spec.taskSpec", "status.taskSpec"),
            f"{_TEKTON}/pipelineruns:"
            + _tekton_pipeline_spec("spec.pipelineSpec", "status.pipelineSpec"),
        ),
    )
)


def resolve(values: Iterable[str | Mapping[str, Any] | ResourceEntry]) -> tuple[ResourceEntry, ...]:
    """The entries that preset names, command-line entries and config entries declare.

    A string without `/` names a preset; any other string is a command-line entry; a mapping
    is a config entry. A resource declared twice (by two presets, or a preset and an entry of
    one's own) becomes one entry with the paths of both; declaring it with two versions or two
    scopes is an error, since only one can be watched.
    """
    merged: dict[tuple[str, str], ResourceEntry] = {}
    for value in values:
        for entry in _entries(value):
            key = (entry.group, entry.resource)
            seen = merged.get(key)
            merged[key] = entry if seen is None else _merge(seen, entry)
    return tuple(merged.values())


def _entries(value: str | Mapping[str, Any] | ResourceEntry) -> tuple[ResourceEntry, ...]:
    if isinstance(value, ResourceEntry):
        return (value,)
    if isinstance(value, Mapping):
        return (parse_config_entry(value),)
    if "/" in value:
        return (parse_entry(value),)
    preset = PRESETS.get(value.strip())
    if preset is None:
        raise ResourceSpecError(value, f"unknown preset; presets: {', '.join(sorted(PRESETS))}")
    return preset


def _merge(first: ResourceEntry, second: ResourceEntry) -> ResourceEntry:
    both = f"{first.text} + {second.text}"
    if first.version != second.version:
        raise ResourceSpecError(
            both, f"{first.qualified} declared with versions {first.version} and {second.version}"
        )
    if first.namespaced != second.namespaced:
        raise ResourceSpecError(
            both, f"{first.qualified} declared both namespaced and cluster-scoped"
        )
    return ResourceEntry(
        first.group,
        first.version,
        first.resource,
        first.namespaced,
        pod_specs=_unique((*first.pod_specs, *second.pod_specs)),
        containers=_unique((*first.containers, *second.containers)),
        images=_unique((*first.images, *second.images)),
        text=both,
    )


# ---------------------------------------------------------------------------------------------
# RBAC


class RbacRule(TypedDict):
    """One rule of a (Cluster)Role, as the chart renders it and a Forbidden message asks."""

    apiGroups: list[str]
    resources: list[str]
    verbs: list[str]


WATCH_VERBS: Final = ("list", "watch")
# what a source needs: a LIST, then a WATCH from its resourceVersion


def rbac_rules(entries: Iterable[ResourceEntry]) -> list[RbacRule]:
    """The rules that let the controller list and watch every entry's resource: one per group."""
    groups: dict[str, set[str]] = {}
    for entry in entries:
        groups.setdefault(entry.group, set()).add(entry.resource)
    return [
        RbacRule(apiGroups=[group], resources=sorted(groups[group]), verbs=list(WATCH_VERBS))
        for group in sorted(groups)
    ]


def chart_presets() -> str:
    """The presets' resources as the Helm chart reads them (files/resource-presets.yaml), for
    its RBAC: per preset, each resource's group, plural and scope."""
    lines = [
        "# generated from controller/resources.py by scripts/render-chart-presets: do not edit",
    ]
    for name in sorted(PRESETS):
        lines.append(f"{name}:")
        for entry in PRESETS[name]:
            scope = "true" if entry.namespaced else "false"
            lines.append(
                f"  - {{group: {entry.group}, resource: {entry.resource}, namespaced: {scope}}}"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["--chart-presets"]:
        sys.exit("usage: python -m controller.resources --chart-presets")
    sys.stdout.write(chart_presets())


__all__ = [
    "EACH",
    "PRESETS",
    "WATCH_VERBS",
    "FieldPath",
    "RbacRule",
    "ResourceEntry",
    "ResourceSpecError",
    "chart_presets",
    "parse_config_entry",
    "parse_entry",
    "parse_path",
    "rbac_rules",
    "resolve",
]
