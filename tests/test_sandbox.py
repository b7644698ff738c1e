"""The README's first command runs: the live sandbox, two cycles with churn, then its safety check."""

from __future__ import annotations

import subprocess
import sys


def test_live_sandbox_runs_cycles_with_churn_and_passes_its_safety_check() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sandbox", "--cycles", "2", "--interval", "3s"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("total: ") == 2
    assert "[sandbox] safety check passed" in result.stderr
    assert "legacy/monolith (not selected) untouched: 150 images" in result.stderr
    assert "controller.app stopped" in result.stderr


def test_a_typo_in_namespaces_is_refused_and_the_named_opt_out_works() -> None:
    # the repro from the safety review: before, the CronJob image of `batch` was deleted and
    # the sandbox's own check printed SAFETY VIOLATION
    typo = subprocess.run(
        [sys.executable, "-m", "sandbox", "--once", "--", "--namespaces=shop,bacth"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert typo.returncode == 1, typo.stderr[-3000:]
    assert "REFUSED: no pods in namespace bacth of cluster sandbox" in typo.stdout
    assert "total: 0 image(s) deleted" in typo.stdout
    assert "[sandbox] safety check passed" in typo.stderr
    # batch holds only a CronJob and a Deployment scaled to zero: allowed to have no pod
    allowed = subprocess.run(
        [
            sys.executable,
            "-m",
            "sandbox",
            "--once",
            "--",
            "--namespaces=shop,batch,jobs",
            "--allow-empty-namespaces=batch",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    assert "total: 480 image(s) deleted" in allowed.stdout
    assert "[sandbox] safety check passed" in allowed.stderr
