"""The README's "Install with Helm" stays true: its values render, its install command installs."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from sandbox.kubesim import ThreadedKubeSimulator, write_kubeconfig
from tests.chart import BARE, CHART, ROOT, merged, render, run_helm

README = ROOT / "README.md"


def section() -> str:
    text = README.read_text()
    start = text.index("## Install with Helm\n")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def blocks(language: str) -> list[str]:
    return re.findall(rf"^ *```{language}\n(.*?)^ *```", section(), re.MULTILINE | re.DOTALL)


def values_blocks() -> list[dict[str, Any]]:
    return [yaml.safe_load(block) for block in blocks("yaml")]


def test_the_section_has_values_and_commands() -> None:
    # the common cases, custom resources with ECS and Lambda, several clusters, monitoring
    assert len(values_blocks()) == 4
    assert any("helm install" in block for block in blocks("sh"))


@pytest.mark.parametrize("number", range(len(values_blocks())))
def test_every_values_example_renders(number: int) -> None:
    values = values_blocks()[number]
    r = render(merged(BARE, values))
    assert r.deployment  # rendered with these values, schema and templates agreeing
    if "repositoryOverrides" in values:
        assert r.config_file() is not None


@pytest.fixture(scope="module")
def kubeconfig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with ThreadedKubeSimulator() as kube:
        yield write_kubeconfig(tmp_path_factory.mktemp("helm") / "kubeconfig", {"sim": kube})


def test_the_install_command_installs(kubeconfig: Path) -> None:
    (command,) = [block for block in blocks("sh") if "helm install" in block]
    words = shlex.split(command.replace("\\\n", " "))
    assert words[:2] == ["helm", "install"]
    words[words.index("charts/kube-ecr-cleanup-controller")] = str(CHART)
    result = run_helm(
        *words[1:],
        "--dry-run=client",
        "--disable-openapi-validation",
        "--kubeconfig",
        str(kubeconfig),
    )
    assert result.returncode == 0, result.stderr
    assert "DRY RUN is ON" in result.stdout
    assert "eks.amazonaws.com/role-arn: arn:aws:iam::123456789012:role/ecr-cleanup" in result.stdout
    assert "name: kube-ecr-cleanup-controller\n" in result.stdout  # the ServiceAccount's name
