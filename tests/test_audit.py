"""scripts/osv_audit.py: the offline matcher scripts/audit uses with --advisories (docs/security.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def advisory(
    id_: str, name: str, events: list[dict[str, str]], **extra: object
) -> dict[str, object]:
    return {
        "id": id_,
        "aliases": [f"CVE-{id_}"],
        "affected": [
            {
                "package": {"name": name, "ecosystem": "PyPI"},
                "ranges": [{"type": "ECOSYSTEM", "events": events}],
            }
        ],
        **extra,
    }


def audit(tmp_path: Path, pins: str) -> subprocess.CompletedProcess[str]:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(pins)
    return subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "osv_audit.py"),
            str(requirements),
            str(tmp_path / "vulns"),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_pins_inside_a_range_are_found_and_fixed_or_withdrawn_ones_are_not(tmp_path: Path) -> None:
    vulns = tmp_path / "vulns" / "pkg"
    vulns.mkdir(parents=True)
    documents = {
        "A-1": advisory("A-1", "Some_Pkg", [{"introduced": "0"}, {"fixed": "2.0.1"}]),
        "A-2": advisory("A-2", "some-pkg", [{"introduced": "3.0"}, {"last_affected": "3.2"}]),
        "A-3": advisory("A-3", "some-pkg", [{"introduced": "0"}], withdrawn="2024-01-01T00:00:00Z"),
        "A-4": advisory("A-4", "other", [{"introduced": "0"}]),
    }
    for name, document in documents.items():
        (vulns / f"{name}.json").write_text(json.dumps(document))

    affected = audit(tmp_path, "some-pkg==2.0.0 \\\n    --hash=sha256:00\n")
    assert affected.returncode == 1
    assert "some-pkg==2.0.0: A-1 (CVE-A-1)" in affected.stdout
    assert "A-3" not in affected.stdout  # withdrawn
    assert "A-4" not in affected.stdout  # another package

    assert "A-2" in audit(tmp_path, "some-pkg==3.2\n").stdout
    for clean in (
        "some-pkg==2.0.1\n",
        "some-pkg==3.3\n",
        "some-pkg==2.5 ; sys_platform == 'linux'\n",
    ):
        result = audit(tmp_path, clean)
        assert result.returncode == 0, (clean, result.stdout)
        assert "0 finding(s)" in result.stdout
