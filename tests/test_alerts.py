"""The alert rules: `promtool check rules`, `promtool test rules` (a firing and a quiet case per
alert, two replicas), and a runbook section for each alert."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).parent.parent
RULES = ROOT / "charts" / "kube-ecr-cleanup-controller" / "files" / "alerts.yaml"
UNIT_TESTS = sorted((Path(__file__).parent / "alerts").glob("*_test.yaml"))
RUNBOOK = ROOT / "docs" / "runbook.md"
RUNBOOK_URL = "https://github.com/kube-ecr-cleanup-controller/kube-ecr-cleanup-controller/blob/main/docs/runbook.md"
"""Where the runbook is published: the repository's docs/runbook.md on the main branch."""


def promtool(*args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is not installed: run scripts/install-prometheus")
    return subprocess.run(
        [binary, *map(str, args)], capture_output=True, text=True, timeout=120, check=False, cwd=cwd
    )


def alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_promtool_check_rules_passes() -> None:
    result = promtool("check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = promtool("test", "rules", *(t.name for t in UNIT_TESTS), cwd=UNIT_TESTS[0].parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(UNIT_TESTS) >= 2


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    cases = [
        check
        for unit in UNIT_TESTS
        for test in yaml.safe_load(unit.read_text())["tests"]
        for check in test["alert_rule_test"]
    ]
    names = {rule["alert"] for rule in alerts()}
    assert names == {case["alertname"] for case in cases}
    for name in sorted(names):
        expected = [case["exp_alerts"] for case in cases if case["alertname"] == name]
        assert any(expected), f"{name}: no case in which it fires"
        assert not all(expected), f"{name}: no case in which it stays quiet"


def test_the_naive_no_success_rule_would_page_for_the_standby(tmp_path: Path) -> None:
    """The two-replica cases have teeth: a per-replica rule fails them."""
    naive = RULES.read_text().replace(
        "max without (instance, pod) (ecr_cleanup_last_success_timestamp_seconds > 0)",
        "ecr_cleanup_last_success_timestamp_seconds",
    )
    assert naive != RULES.read_text()
    rules = tmp_path / "charts" / "kube-ecr-cleanup-controller" / "files" / "alerts.yaml"
    rules.parent.mkdir(parents=True)
    rules.write_text(naive)
    unit = tmp_path / "tests" / "alerts" / "alerts_test.yaml"
    unit.parent.mkdir(parents=True)
    shutil.copy(UNIT_TESTS[0].parent / unit.name, unit)

    result = promtool("test", "rules", unit.name, cwd=unit.parent)
    assert result.returncode != 0
    assert "a leader that succeeds and a standby that never ran a cycle are healthy" in (
        result.stdout + result.stderr
    )


def anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^a-z0-9 _-]", "", heading.strip().lower()).replace(" ", "-")


def runbook_sections() -> dict[str, str]:
    sections: dict[str, str] = {}
    for part in re.split(r"^## ", RUNBOOK.read_text(), flags=re.MULTILINE)[1:]:
        heading, _, body = part.partition("\n")
        sections[anchor(heading)] = body
    return sections


def test_every_alert_links_to_its_runbook_section() -> None:
    sections = runbook_sections()
    for rule in alerts():
        url = rule["annotations"]["runbook_url"]
        base, _, fragment = url.partition("#")
        assert base == RUNBOOK_URL, url
        assert fragment == anchor(rule["alert"]), url
        body = sections.get(fragment)
        assert body is not None, f"{rule['alert']}: no section {fragment} in {RUNBOOK.name}"
        for part in ("**What it means.**", "**How to check.**", "**How to fix.**"):
            assert part in body, f"{rule['alert']}: the runbook section has no {part}"
    # and no section for an alert that does not exist
    assert set(sections) == {anchor(rule["alert"]) for rule in alerts()}


def test_every_alert_says_how_bad_what_and_why() -> None:
    for rule in alerts():
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        assert rule["annotations"]["description"].strip(), rule["alert"]
    severities = {rule["alert"]: rule["labels"]["severity"] for rule in alerts()}
    assert severities["EcrCleanupDryRunLeftOn"] == "info"


def test_the_readme_lists_every_alert_with_its_severity() -> None:
    readme = (ROOT / "README.md").read_text()
    listed = dict(re.findall(r"^\| `(EcrCleanup\w+)` \| (\w+) \|", readme, re.MULTILINE))
    assert listed == {rule["alert"]: rule["labels"]["severity"] for rule in alerts()}
