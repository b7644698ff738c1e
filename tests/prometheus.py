"""A real Prometheus server (Debian's package, installed by scripts/install-prometheus) for tests."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sandbox.ports import free_port


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def get(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=5) as response:
            return json.loads(response.read())

    def target_up(self) -> bool:
        targets = self.get("/api/v1/targets")["data"]["activeTargets"]
        return any(t["health"] == "up" for t in targets)

    def targets_up(self) -> int:
        """How many scrape targets are up."""
        targets = self.get("/api/v1/targets")["data"]["activeTargets"]
        return sum(t["health"] == "up" for t in targets)

    def query_range(
        self, promql: str, *, start: float, end: float, step: float
    ) -> list[dict[str, Any]]:
        answer = self.get(
            "/api/v1/query_range", query=promql, start=str(start), end=str(end), step=str(step)
        )
        assert answer["status"] == "success", answer
        return list(answer["data"]["result"])

    def rules(self) -> list[dict[str, Any]]:
        """Every loaded rule, with its health, last error and state."""
        groups = self.get("/api/v1/rules")["data"]["groups"]
        return [rule for group in groups for rule in group["rules"]]

    def alerts(self) -> list[dict[str, Any]]:
        """The alerts pending or firing now."""
        return list(self.get("/api/v1/alerts")["data"]["alerts"])

    def query(self, promql: str, *, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query (now, or at the Unix time `at`); a query Prometheus rejects fails
        with its reason."""
        params = {"query": promql, **({"time": str(at)} if at is not None else {})}
        try:
            answer = self.get("/api/v1/query", **params)
        except urllib.error.HTTPError as error:
            raise AssertionError(f"{promql}: HTTP {error.code}: {error.read().decode()}") from None
        assert answer["status"] == "success", answer
        return list(answer["data"]["result"])

    def value(self, promql: str) -> float | None:
        """The single value of an instant query, or None when it has no result (yet)."""
        result = self.query(promql)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def wait_for(self, promql: str, expected: float, within: float = 30.0) -> float:
        """Poll until the query answers `expected` (scrapes come every second)."""
        deadline = time.monotonic() + within
        seen: float | None = None
        while time.monotonic() < deadline:
            seen = self.value(promql)
            if seen == expected:
                return seen
            time.sleep(0.25)
        raise AssertionError(f"{promql} = {seen}, expected {expected} within {within}s")


@contextmanager
def prometheus(
    target: str | Sequence[str],
    tmp: Path,
    *,
    job: str = "ecr-cleanup",
    rule_files: Sequence[Path] = (),
) -> Iterator[Prometheus]:
    """Start Prometheus scraping `target` (host:port, or several) every second as `job`, and
    evaluating `rule_files` every second; yields once it is ready."""
    binary = shutil.which("prometheus")
    assert binary, "prometheus is not installed: run scripts/install-prometheus"
    port = free_port()
    targets = [target] if isinstance(target, str) else list(target)
    config = tmp / "prometheus.yml"
    rules = "".join(f"  - '{path}'\n" for path in rule_files)
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        + (f"rule_files:\n{rules}" if rules else "")
        + f"scrape_configs:\n  - job_name: {job}\n    static_configs:\n"
        f"      - targets: [{', '.join(repr(t) for t in targets)}]\n"
    )
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = Prometheus(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"{server.url}/-/ready", timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, "prometheus did not become ready"
                time.sleep(0.1)
        yield server
    finally:
        process.terminate()
        process.wait(timeout=10)
