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
