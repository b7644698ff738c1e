"""Custom-resource declarations: parsing, presets, extraction on realistic objects, and RBAC."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.identifiers import RepositoryId, TagRef
from controller.images import Digest, EcrRegistry
from controller.inventory import References
from controller.resources import (
    EACH,
    PRESETS,
    FieldPath,
    ResourceEntry,
    ResourceSpecError,
    parse_config_entry,
    parse_entry,
    parse_path,
    rbac_rules,
    resolve,
)
from tests.digests import digest
from tests.profiles import examples

HOST = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
REG = EcrRegistry("123456789012", "us-east-1")


def tag(repo: str, t: str) -> TagRef:
    return TagRef(RepositoryId(REG, repo), t)


def preset(name: str, resource: str) -> ResourceEntry:
    (entry,) = (e for e in PRESETS[name] if e.resource == resource)
    return entry


def texts(paths: tuple[FieldPath, ...]) -> list[str]:
    return [p.text for p in paths]


# ---------------------------------------------------------------------------------------------
# Parsing


@pytest.mark.parametrize(
    ("text", "steps"),
    [
        ("spec", ("spec",)),
        ("spec.jobTargetRef.template.spec", ("spec", "jobTargetRef", "template", "spec")),
        ("spec.steps[*]", ("spec", "steps", EACH)),
        ("spec.templates[*].container", ("spec", "templates", EACH, "container")),
        ("spec.matrix[*][*].image", ("spec", "matrix", EACH, EACH, "image")),
        ("spec.x_y-z", ("spec", "x_y-z")),
    ],
)
def test_paths_parse_to_steps_and_render_back(text: str, steps: tuple[str, ...]) -> None:
    path = parse_path(text)
    assert path.steps == steps
    assert path.text == text


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty path"),
        ("a..b", "bad path 'a..b': '' is not a field name"),
        ("a.", "bad path 'a.': '' is not a field name"),
        (".a", "bad path '.a': '' is not a field name"),
        ("a[1]", "bad path 'a[1]': 'a[1]' is not a field name optionally followed by [*]"),
        ("a[*", "bad path 'a[*': 'a[*' is not"),
        ("[*].a", "bad path '[*].a': '[*]' is not a field name"),
        ("a[*]b", "bad path 'a[*]b'"),
        ("a b", "bad path 'a b'"),
    ],
)
def test_bad_paths_are_refused_with_the_reason(text: str, problem: str) -> None:
    with pytest.raises(ResourceSpecError) as error:
        parse_path(text)
    assert problem in str(error.value)
    assert "\n" not in str(error.value)


def test_a_command_line_entry_declares_each_kind_of_path() -> None:
    entry = parse_entry(
        "example.com/v1/pipelines:container=spec.steps[*];image=spec.tools[*];"
        "pod-spec=spec.runner.template.spec;container=spec.steps[*]"
    )
    assert (entry.group, entry.version, entry.resource) == ("example.com", "v1", "pipelines")
    assert entry.namespaced is True
    assert entry.api_version == "example.com/v1"
    assert entry.qualified == "pipelines.example.com"
    assert texts(entry.containers) == ["spec.steps[*]"]  # declared twice, kept once
    assert texts(entry.images) == ["spec.tools[*]"]
    assert texts(entry.pod_specs) == ["spec.runner.template.spec"]
    assert [kind for kind, _ in entry.paths] == ["pod-spec", "container", "image"]
    assert entry.text.startswith("example.com/v1/pipelines:")


def test_scope_cluster_declares_a_cluster_scoped_resource() -> None:
    entry = parse_entry("example.com/v1/things:scope=cluster;image=spec.image")
    assert entry.namespaced is False
    assert parse_entry("example.com/v1/things:scope=namespaced;image=spec.image").namespaced


PIPELINES = "example.com/v1/pipelines"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            f"{PIPELINES}:step=spec.steps[*]",
            "unknown KIND 'step'; expected one of pod-spec, container, image",
        ),
        (f"{PIPELINES}:container=", "empty path"),
        (f"{PIPELINES}:container=spec..steps", "bad path 'spec..steps'"),
        (f"{PIPELINES}:container=spec.steps[0]", "bad path 'spec.steps[0]'"),
        (f"{PIPELINES}:container", "'container' is not KIND=PATH (missing '=')"),
        (f"{PIPELINES}:", "'' is not KIND=PATH (missing '=')"),
        (PIPELINES, "missing ':KIND=PATH'"),
        ("example.com/pipelines:image=a", "is not GROUP/VERSION/RESOURCE (1 '/' instead of 2)"),
        ("example.com/v1/x/y:image=a", "(3 '/' instead of 2)"),
        ("Example.com/v1/x:image=a", "'Example.com' is not an API group"),
        ("/v1/pods:image=a", "'' is not an API group"),
        ("example.com/1/x:image=a", "'1' is not an API version"),
        ("example.com/v1/Pipelines:image=a", "'Pipelines' is not a plural resource name"),
        (f"{PIPELINES}:scope=cluster", "no paths"),
        (f"{PIPELINES}:scope=global;image=a", "scope must be cluster or namespaced, not 'global'"),
    ],
)
def test_bad_command_line_entries_name_the_entry_and_the_problem(text: str, problem: str) -> None:
    with pytest.raises(ResourceSpecError) as error:
        parse_entry(text)
    message = str(error.value)
    assert message.startswith(f"protect-resources entry {text!r}: ")
    assert problem in message
    assert "\n" not in message
    assert isinstance(error.value, ValueError)


def test_a_config_entry_declares_paths_in_lists() -> None:
    entry = parse_config_entry(
        {
            "resource": "example.com/v1/pipelines",
            "pod-specs": ["spec.runner.template.spec"],
            "containers": ["spec.steps[*]", "spec.finally[*]"],
            "images": ["spec.tools[*]"],
        }
    )
    assert texts(entry.containers) == ["spec.steps[*]", "spec.finally[*]"]
    assert texts(entry.pod_specs) == ["spec.runner.template.spec"]
    assert texts(entry.images) == ["spec.tools[*]"]
    assert entry.namespaced is True
    scoped = parse_config_entry(
        {"resource": "example.com/v1/things", "images": ["spec.image"], "cluster-scoped": True}
    )
    assert scoped.namespaced is False


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (
            {"resource": PIPELINES, "container": ["spec.steps[*]"]},
            "unknown key 'container'; allowed: resource, pod-specs, containers, images, "
            "cluster-scoped",
        ),
        ({"containers": ["spec.steps[*]"]}, "`resource: GROUP/VERSION/RESOURCE` is required"),
        ({"resource": PIPELINES}, "no paths"),
        ({"resource": PIPELINES, "containers": []}, "no paths"),
        ({"resource": PIPELINES, "containers": "spec.steps[*]"}, "must be a list of paths"),
        ({"resource": PIPELINES, "images": [3]}, "`images` must be a list of paths"),
        ({"resource": PIPELINES, "images": ["a..b"]}, "bad path 'a..b'"),
        ({"resource": PIPELINES, "images": ["a"], "cluster-scoped": "yes"}, "true or false"),
        ({"resource": "example.com/pipelines", "images": ["a"]}, "GROUP/VERSION/RESOURCE"),
    ],
)
def test_bad_config_entries_name_the_entry_and_the_problem(
    raw: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ResourceSpecError) as error:
        parse_config_entry(raw)
    message = str(error.value)
    assert message.startswith("protect-resources entry '{")
    assert problem in message
    assert "\n" not in message


# ---------------------------------------------------------------------------------------------
# Presets and resolution


def test_presets_declare_the_documented_resources() -> None:
    declared = {
        name: sorted((e.api_version, e.resource, e.namespaced) for e in entries)
        for name, entries in PRESETS.items()
    }
    argo = "argoproj.io/v1alpha1"
    assert declared == {
        "keda-scaledjobs": [("keda.sh/v1alpha1", "scaledjobs", True)],
        "argo-workflows": [
            (argo, "clusterworkflowtemplates", False),
            (argo, "cronworkflows", True),
            (argo, "workflows", True),
            (argo, "workflowtemplates", True),
        ],
        "argo-rollouts": [
            (argo, "analysistemplates", True),
            (argo, "clusteranalysistemplates", False),
            (argo, "rollouts", True),
        ],
        "tekton": [
            ("tekton.dev/v1", "pipelineruns", True),
            ("tekton.dev/v1", "pipelines", True),
            ("tekton.dev/v1", "taskruns", True),
            ("tekton.dev/v1", "tasks", True),
        ],
    }
    assert preset("keda-scaledjobs", "scaledjobs").text == "keda-scaledjobs (scaledjobs.keda.sh)"


def test_resolve_mixes_presets_and_entries_and_merges_a_resource_declared_twice() -> None:
    entries = resolve(
        [
            "keda-scaledjobs",
            "argo-rollouts",
            "keda.sh/v1alpha1/scaledjobs:image=metadata.annotations.extra",
            {"resource": "example.com/v1/things", "images": ["spec.image"]},
            "argo-rollouts",  # twice: no change
        ]
    )
    assert [e.qualified for e in entries] == [
        "scaledjobs.keda.sh",
        "rollouts.argoproj.io",
        "analysistemplates.argoproj.io",
        "clusteranalysistemplates.argoproj.io",
        "things.example.com",
    ]
    keda = entries[0]
    assert texts(keda.pod_specs) == ["spec.jobTargetRef.template.spec"]
    assert texts(keda.images) == ["metadata.annotations.extra"]
    assert keda.text.startswith("keda-scaledjobs (scaledjobs.keda.sh) + keda.sh/v1alpha1/")
    assert entries[1].pod_specs == preset("argo-rollouts", "rollouts").pod_specs


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        (
            ["keda"],
            "'keda': unknown preset; presets: argo-rollouts, argo-workflows, keda-scaledjobs, tekton",
        ),
        (["argo"], "'argo': unknown preset"),
        (
            ["keda-scaledjobs", "keda.sh/v1/scaledjobs:image=spec.image"],
            "scaledjobs.keda.sh declared with versions v1alpha1 and v1",
        ),
        (
            ["argo-workflows", "argoproj.io/v1alpha1/workflows:scope=cluster;image=spec.x"],
            "workflows.argoproj.io declared both namespaced and cluster-scoped",
        ),
    ],
)
def test_resolve_refuses_unknown_presets_and_conflicting_declarations(
    values: list[str], problem: str
) -> None:
    with pytest.raises(ResourceSpecError) as error:
        resolve(values)
    assert problem in str(error.value)
    assert "\n" not in str(error.value)


def test_rbac_rules_list_and_watch_each_group_s_resources() -> None:
    assert rbac_rules(
        resolve(["tekton", "keda-scaledjobs", "argo-rollouts", "argo-workflows"])
    ) == [
        {
            "apiGroups": ["argoproj.io"],
            "resources": [
                "analysistemplates",
                "clusteranalysistemplates",
                "clusterworkflowtemplates",
                "cronworkflows",
                "rollouts",
                "workflows",
                "workflowtemplates",
            ],
            "verbs": ["list", "watch"],
        },
        {"apiGroups": ["keda.sh"], "resources": ["scaledjobs"], "verbs": ["list", "watch"]},
        {
            "apiGroups": ["tekton.dev"],
            "resources": ["pipelineruns", "pipelines", "taskruns", "tasks"],
            "verbs": ["list", "watch"],
        },
    ]
    assert rbac_rules(()) == []


# ---------------------------------------------------------------------------------------------
# Extraction on realistic objects of each preset


def c(name: str, image: object, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": image, **extra}


def test_a_scaledjob_protects_its_job_template() -> None:
    scaled_job = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledJob",
        "metadata": {"name": "queue-worker", "namespace": "jobs", "uid": "u1"},
        "spec": {
            "jobTargetRef": {
                "parallelism": 1,
                "backoffLimit": 6,
                "template": {
                    "spec": {
                        "initContainers": [c("migrate", f"{HOST}/worker:migrate-1")],
                        "containers": [c("worker", f"{HOST}/worker@{digest(1)}")],
                        "restartPolicy": "Never",
                    }
                },
            },
            "pollingInterval": 30,
            "triggers": [{"type": "aws-sqs-queue", "metadata": {"queueURL": "https://x"}}],
        },
    }
    found = preset("keda-scaledjobs", "scaledjobs").extract(scaled_job)
    assert found.malformed == ()
    assert found.references == References(
        frozenset({digest(1)}), frozenset({tag("worker", "migrate-1")})
    )


ARGO_TEMPLATES = [
    {"name": "main", "steps": [[{"name": "build", "template": "build"}]]},
    {
        "name": "build",
        "container": c("build", f"{HOST}/builder:2.1", command=["make"]),
        "initContainers": [c("fetch", f"{HOST}/git:1")],
        "sidecars": [c("dind", "docker:24-dind")],  # not ECR: no tag kept
    },
    {"name": "report", "script": {"image": f"{HOST}/python:3.12", "source": "print(1)"}},
    {
        "name": "pair",
        "containerSet": {
            "containers": [
                c("a", f"{HOST}/a@{digest(2)}"),
                c("b", f"{HOST}/b:x", dependencies=["a"]),
            ]
        },
    },
    {"name": "apply", "resource": {"action": "create", "manifest": "image: not-a-template"}},
]
ARGO_REFS = References(
    frozenset({digest(2)}),
    frozenset({tag("builder", "2.1"), tag("git", "1"), tag("python", "3.12"), tag("b", "x")}),
)


def test_a_cronworkflow_protects_every_template_of_its_workflow_spec() -> None:
    cron = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "CronWorkflow",
        "metadata": {"name": "nightly", "namespace": "ci", "uid": "u2"},
        "spec": {
            "schedule": "0 2 * * *",
            "workflowSpec": {"entrypoint": "main", "templates": ARGO_TEMPLATES},
        },
    }
    found = preset("argo-workflows", "cronworkflows").extract(cron)
    assert found.malformed == ()
    assert found.references == ARGO_REFS


def test_a_workflowtemplate_and_a_cluster_one_protect_their_templates() -> None:
    template = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "WorkflowTemplate",
        "metadata": {"name": "ci", "namespace": "ci", "uid": "u3"},
        "spec": {
            "entrypoint": "main",
            "templates": ARGO_TEMPLATES,
            "templateDefaults": {"container": {"image": f"{HOST}/default:1"}},
        },
    }
    expected = References(ARGO_REFS.digests, ARGO_REFS.tags | {tag("default", "1")})
    assert preset("argo-workflows", "workflowtemplates").extract(template).references == expected
    cluster = {**template, "kind": "ClusterWorkflowTemplate"}
    assert preset("argo-workflows", "clusterworkflowtemplates").extract(cluster).references == (
        expected
    )


def test_a_workflow_protects_its_spec_and_its_stored_template_spec() -> None:
    workflow = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": "ci-abcde", "namespace": "ci", "uid": "u4"},
        "spec": {"workflowTemplateRef": {"name": "ci"}},
        "status": {
            "phase": "Running",
            "storedWorkflowTemplateSpec": {"entrypoint": "main", "templates": ARGO_TEMPLATES},
        },
    }
    assert preset("argo-workflows", "workflows").extract(workflow).references == ARGO_REFS


def test_a_rollout_protects_its_pod_template() -> None:
    rollout = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "web", "namespace": "prod", "uid": "u5"},
        "spec": {
            "replicas": 0,
            "strategy": {"canary": {"steps": [{"setWeight": 20}, {"pause": {}}]}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [c("web", f"{HOST}/web:blue"), c("log", 7)]},
            },
        },
    }
    found = preset("argo-rollouts", "rollouts").extract(rollout)
    assert found.references == References(frozenset(), frozenset({tag("web", "blue")}))
    assert found.malformed == ("7",)  # a non-string image, as in a pod


def test_an_analysis_template_protects_its_job_metrics() -> None:
    analysis = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": "smoke", "namespace": "prod", "uid": "u8"},
        "spec": {
            "args": [{"name": "service"}],
            "metrics": [
                {"name": "rate", "provider": {"prometheus": {"query": "up"}}},
                {
                    "name": "smoke",
                    "provider": {
                        "job": {
                            "metadata": {"labels": {"foo": "bar"}},
                            "spec": {
                                "backoffLimit": 1,
                                "template": {
                                    "spec": {
                                        "containers": [c("test", f"{HOST}/smoke:7")],
                                        "restartPolicy": "Never",
                                    }
                                },
                            },
                        }
                    },
                },
            ],
        },
    }
    expected = References(frozenset(), frozenset({tag("smoke", "7")}))
    assert preset("argo-rollouts", "analysistemplates").extract(analysis).references == expected
    cluster = preset("argo-rollouts", "clusteranalysistemplates")
    assert cluster.namespaced is False
    assert cluster.extract(analysis).references == expected


TEKTON_TASK_SPEC = {
    "params": [{"name": "revision", "type": "string"}],
    "stepTemplate": {"image": f"{HOST}/base:1", "env": [{"name": "HOME", "value": "/w"}]},
    "steps": [
        c("clone", f"{HOST}/git-init:0.40", script="git clone"),
        {"name": "test", "script": "make test"},  # inherits the step template's image
        c("push", f"{HOST}/kaniko@{digest(3)}"),
    ],
    "sidecars": [c("registry", f"{HOST}/registry:2")],
}
TEKTON_REFS = References(
    frozenset({digest(3)}),
    frozenset({tag("base", "1"), tag("git-init", "0.40"), tag("registry", "2")}),
)


def test_a_tekton_task_protects_its_steps_sidecars_and_step_template() -> None:
    task = {
        "apiVersion": "tekton.dev/v1",
        "kind": "Task",
        "metadata": {"name": "build", "namespace": "ci", "uid": "u6"},
        "spec": TEKTON_TASK_SPEC,
    }
    found = preset("tekton", "tasks").extract(task)
    assert found.malformed == ()
    assert found.references == TEKTON_REFS


def test_a_tekton_pipeline_protects_its_embedded_tasks_and_finally() -> None:
    pipeline = {
        "apiVersion": "tekton.dev/v1",
        "kind": "Pipeline",
        "metadata": {"name": "release", "namespace": "ci", "uid": "u7"},
        "spec": {
            "tasks": [
                {"name": "build", "taskSpec": TEKTON_TASK_SPEC},
                {"name": "scan", "taskRef": {"name": "trivy"}},  # a reference: its Task protects
            ],
            "finally": [
                {"name": "notify", "taskSpec": {"steps": [c("slack", f"{HOST}/notify:3")]}}
            ],
        },
    }
    found = preset("tekton", "pipelines").extract(pipeline)
    assert found.references == References(
        TEKTON_REFS.digests, TEKTON_REFS.tags | {tag("notify", "3")}
    )


def test_tekton_runs_protect_their_spec_and_resolved_status_specs() -> None:
    task_run = {
        "spec": {"taskRef": {"name": "build"}},
        "status": {"podName": "build-pod", "taskSpec": TEKTON_TASK_SPEC},
    }
    assert preset("tekton", "taskruns").extract(task_run).references == TEKTON_REFS
    pipeline_run = {
        "spec": {"pipelineSpec": {"tasks": [{"name": "b", "taskSpec": TEKTON_TASK_SPEC}]}},
        "status": {"pipelineSpec": {"finally": [{"taskSpec": {"steps": [c("x", f"{HOST}/x:1")]}}]}},
    }
    assert preset("tekton", "pipelineruns").extract(pipeline_run).references == References(
        TEKTON_REFS.digests, TEKTON_REFS.tags | {tag("x", "1")}
    )


@pytest.mark.parametrize(
    ("obj", "malformed"),
    [
        ({}, ()),  # nothing declared is there
        ({"spec": None}, ()),
        ({"spec": ["not", "a", "mapping"]}, ()),  # a list where a field name wants a mapping
        ({"spec": {"steps": {"image": f"{HOST}/a:1"}}}, ()),  # a mapping where [*] wants a list
        ({"spec": {"steps": ["a string", 3, None, []]}}, ()),  # containers that are not objects
        ({"spec": {"steps": [{"image": None}, {"image": ["x"]}]}}, ("['x']",)),
        ({"spec": {"steps": [{"image": "Not A Reference!"}]}}, ("Not A Reference!",)),
        ({"spec": {"image": 12}}, ("12",)),  # an image path reaching a number
        ({"spec": {"image": {"name": "x"}}}, ("{'name': 'x'}",)),
        ({"spec": {"template": "a string"}}, ()),  # a pod spec that is not an object
    ],
)
def test_missing_and_mistyped_fields_yield_nothing_and_bad_images_are_malformed(
    obj: dict[str, Any], malformed: tuple[str, ...]
) -> None:
    entry = parse_entry(
        "example.com/v1/things:container=spec.steps[*];image=spec.image;pod-spec=spec.template"
    )
    found = entry.extract(obj)
    assert found.references == References()
    assert found.malformed == malformed


# ---------------------------------------------------------------------------------------------
# The property: exactly what the declared paths reach is extracted

_KEYS = ("spec", "steps", "image", "containers", "initContainers", "ephemeralContainers", "t")
_IMAGE = "<image>"
# a placeholder leaf, replaced by a distinct digest reference before the object is used

_CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")


def _shapes(children: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    """Lists, mappings, containers and pod specs of `children` (random keys rarely make one)."""
    containers = st.fixed_dictionaries({"image": children})
    return (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(_KEYS), children, max_size=4)
        | containers
        | st.dictionaries(
            st.sampled_from(_CONTAINER_LISTS), st.lists(containers | children, max_size=3)
        )
    )


_trees = st.recursive(st.sampled_from((_IMAGE, _IMAGE, _IMAGE, 0, 1, None)), _shapes, max_leaves=25)
_paths = st.tuples(
    st.sampled_from(_KEYS), st.lists(st.sampled_from((*_KEYS, EACH, EACH)), max_size=4)
).map(lambda first_rest: FieldPath((first_rest[0], *first_rest[1])))
_KINDS = ("pod-spec", "container", "image")


def _fill(tree: object, counter: list[int]) -> object:
    """The tree with each placeholder replaced by the reference to a new digest."""
    if tree == _IMAGE:
        counter[0] += 1
        return f"{HOST}/repo@{digest(counter[0])}"
    if isinstance(tree, list):
        return [_fill(item, counter) for item in tree]
    if isinstance(tree, dict):
        return {key: _fill(value, counter) for key, value in tree.items()}
    return tree


def _located(tree: object, at: tuple[object, ...] = ()) -> list[tuple[tuple[object, ...], object]]:
    """Every value in the tree with its concrete location (field names and list indexes)."""
    found: list[tuple[tuple[object, ...], object]] = [(at, tree)]
    if isinstance(tree, list):
        for index, item in enumerate(tree):
            found += _located(item, (*at, index))
    elif isinstance(tree, dict):
        for key, value in tree.items():
            found += _located(value, (*at, key))
    return found


def _matches(path: FieldPath, at: tuple[object, ...]) -> bool:
    return len(path.steps) == len(at) and all(
        isinstance(where, int) if step == EACH else where == step
        for step, where in zip(path.steps, at, strict=True)
    )


def _images_at(kind: str, value: object) -> list[object]:
    """The image values one reached value holds, for a path of `kind` (the oracle's reading)."""
    if kind == "image":
        return [value]
    if kind == "container":
        return [value.get("image")] if isinstance(value, dict) else []
    if not isinstance(value, dict):
        return []
    return [
        item.get("image")
        for key in ("initContainers", "containers", "ephemeralContainers")
        if isinstance(value.get(key), list)
        for item in value[key]
        if isinstance(item, dict)
    ]


def _path_to(at: tuple[object, ...]) -> FieldPath:
    """The path reaching a concrete location, and its siblings: every index becomes `[*]`."""
    return FieldPath(tuple(EACH if isinstance(where, int) else str(where) for where in at))


@settings(max_examples=examples(300))
@given(_trees, st.data())
def test_every_image_the_paths_reach_is_extracted_and_nothing_else(
    tree: object, data: st.DataObject
) -> None:
    obj = {"spec": _fill(tree, [0]), "t": _fill(tree, [100])}
    # paths to where the object has values (else a random path rarely reaches anything), and
    # random ones
    located = [(at, value) for at, value in _located(obj) if at]
    present = sorted({_path_to(at) for at, _ in located}, key=lambda p: p.steps)
    holding = sorted(
        {_path_to(at) for at, value in located if isinstance(value, dict | str)},
        key=lambda p: p.steps,
    )
    paths = st.one_of([st.sampled_from(some) for some in (holding, present) if some] + [_paths])
    declarations = data.draw(st.lists(st.tuples(st.sampled_from(_KINDS), paths), min_size=1))
    text = ";".join(f"{kind}={path.text}" for kind, path in declarations)
    entry = parse_entry(f"example.com/v1/things:{text}")  # the rendered paths parse back
    reached: list[object] = [
        image
        for kind, path in entry.paths
        for at, value in _located(obj)
        if value is not None and _matches(path, at)
        for image in _images_at(kind, value)
        if image is not None
    ]
    found = entry.extract(obj)
    digests = {Digest(str(i).split("@", 1)[1]) for i in reached if isinstance(i, str)}
    assert found.references.digests == digests
    assert found.references.tags == frozenset()
    assert Counter(found.malformed) == Counter(repr(i) for i in reached if not isinstance(i, str))
