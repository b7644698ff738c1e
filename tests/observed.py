"""A watched run: two real controller replicas (leader and standby) against the seeded world,
scraped by a real Prometheus that also evaluates the alert rules. Used by the dashboard's
end-to-end test and by `python -m grafana.picture` (the README's picture)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sandbox.ports import free_port
from tests.prometheus import Prometheus, prometheus
from tests.test_e2e_service import Process, service_args
from tests.worlds import World

ROOT = Path(__file__).parent.parent
RULES = ROOT / "charts" / "kube-ecr-cleanup-controller" / "files" / "alerts.yaml"
JOB = "kube-ecr-cleanup-controller"
"""The scrape job's name (the dashboard's `job` variable gets this value)."""


@dataclass
class Run:
    world: World
    prom: Prometheus
    replicas: list[Process]
    ports: list[int]

    def wait(self, promql: str, at_least: float, within: float, what: str) -> None:
        """Poll Prometheus until the single value of `promql` reaches `at_least`."""
        deadline = time.monotonic() + within
        while True:
            value = self.prom.value(promql)
            if value is not None and value >= at_least:
                return
            for replica in self.replicas:
                assert replica.popen.poll() is None, f"a replica exited:\n{replica.log()}"
            assert time.monotonic() < deadline, f"no {what} within {within}s: {promql} = {value}"
            time.sleep(0.2)


@contextmanager
def observed_run(
    world: World, tmp: Path, *, interval: str = "2s", extra: Sequence[str] = ()
) -> Iterator[Run]:
    """Start Prometheus and two replicas; yields once both targets are up and the leader's
    cycles have been scraped (cycles every `interval`; a 3 s Lease)."""
    ports = [free_port(), free_port()]
    replicas: list[Process] = []
    try:
        with prometheus(
            [f"127.0.0.1:{port}" for port in ports], tmp, job=JOB, rule_files=[RULES]
        ) as prom:
            for port in ports:
                args = service_args(
                    world,
                    port,
                    "--lease-duration=3s",
                    f"--interval={interval}",
                    "--interval-jitter=0",
                    *extra,
                )
                replicas.append(Process(world.start(args)))
            run = Run(world, prom, replicas, ports)
            deadline = time.monotonic() + 60
            while prom.targets_up() < 2:  # the targets API, not a sleep
                for replica in replicas:
                    assert replica.popen.poll() is None, f"a replica exited:\n{replica.log()}"
                assert time.monotonic() < deadline, "the two targets are not up within 60s"
                time.sleep(0.2)
            run.wait(f'sum(ecr_cleanup_leader{{job="{JOB}"}})', 1, 60, "leader")
            run.wait(f'count(ecr_cleanup_leader{{job="{JOB}"}} == 0)', 1, 60, "standby")
            # three cycles scraped: every rate window has samples after the first cycle
            run.wait(f'sum(ecr_cleanup_cycles_total{{job="{JOB}", result="ok"}})', 3, 90, "cycles")
            # ... and three scrapes of each replica: increase() needs two samples of a series,
            # and a loaded machine can delay the first scrape until after the third cycle
            run.wait(f'min(sum_over_time(up{{job="{JOB}"}}[1h]))', 3, 30, "three scrapes each")
            yield run
    finally:
        for replica in replicas:
            replica.close()
