"""`python -m sandbox`: the whole controller against a local ECR (moto) and a simulated cluster.

Harness, not product: it starts moto's ECR server and the API-server simulator on 127.0.0.1,
seeds them with `sandbox.scenario`, writes a kubeconfig, and runs the real controller CLI as a
subprocess, exactly as a user would: continuously (the service, with /metrics, while a churn
thread rolls pods and pushes CI builds) until Ctrl-C or `--cycles N`, or once (`--once`).
Afterwards it checks that every image the cluster uses is still in ECR and that the
unselected repository was not touched.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path

from sandbox.kubesim import ThreadedKubeSimulator, pod
from sandbox.moto import CREDENTIALS, MotoEcr
from sandbox.ports import free_port
from sandbox.scenario import UNSELECTED, Scenario, controller_args
from sandbox.world import seeded_world


def say(message: str) -> None:
    print(f"[sandbox] {message}", file=sys.stderr, flush=True)


class Churn(threading.Thread):
    """A little life: CI pushes a build of shop/api, and a worker pod rolls onto it."""

    def __init__(
        self, ecr: MotoEcr, kube: ThreadedKubeSimulator, scenario: Scenario, every: float
    ) -> None:
        super().__init__(name="churn", daemon=True)
        self.ecr, self.kube, self.scenario, self.every = ecr, kube, scenario, every
        self.stopped = threading.Event()
        self.builds = 0

    def run(self) -> None:
        api = "shop/api"
        while not self.stopped.wait(self.every):
            self.builds += 1
            tag = f"build-{400 + self.builds}"
            digest = self.ecr.push(
                api, f"{api}-churn-{self.builds}", tag, "latest", pushed_at=datetime.now(UTC)
            )
            self.scenario.digests[api][tag] = digest
            victim = f"worker-{self.builds % 600:03d}"
            self.kube.delete("pods", "jobs", victim)
            image = self.scenario.ref(api, tag)
            self.kube.create(
                "pods",
                pod(
                    victim,
                    "jobs",
                    {"worker": image},
                    image_ids={"worker": self.scenario.image_id(api, tag)},
                ),
            )
            self.scenario.in_use_digests.add(digest)
            say(f"churn: CI pushed {api}:{tag}; pod jobs/{victim} rolled onto it")

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox",
        description="Run the controller against a seeded local ECR (moto) and a simulated cluster, "
        "continuously with churn (Ctrl-C to stop) or once. Arguments after -- go to the controller.",
    )
    parser.add_argument("--once", action="store_true", help="one cycle (--once), then exit")
    parser.add_argument(
        "--cycles", type=int, default=0, help="stop after this many cycles (0 = until Ctrl-C)"
    )
    parser.add_argument("--interval", default="20s", help="controller -interval in service mode")
    parser.add_argument("--dry-run", action="store_true", help="only report what would be deleted")
    parser.add_argument(
        "--go-flags", action="store_true", help="pass the Go controller's single-dash flags"
    )
    parser.add_argument("extra", nargs="*", help="more controller flags")
    options = parser.parse_args(argv)

    os.environ.update(CREDENTIALS)
    with (
        tempfile.TemporaryDirectory(prefix="ecr-sandbox-") as tmp,
        seeded_world(Path(tmp), token="sandbox-token", context="sandbox", progress=say) as world,
    ):
        ecr, kube, scenario, kubeconfig = world.ecr, world.kube, world.scenario, world.kubeconfig
        churn: Churn | None = None
        try:
            say(f"ECR (moto) at {world.endpoint}; API server simulator at {kube.url}")
            before = world.state()
            say("images: " + ", ".join(f"{repo} {len(d)}" for repo, d in before.items()))
            args = controller_args(kubeconfig, go_style=options.go_flags)
            if not options.once:
                port = free_port()
                args = [a for a in args if a not in ("-once", "--once")]
                args += [
                    f"--interval={options.interval}",
                    f"--metrics-address=127.0.0.1:{port}",
                    "--lease-namespace=default",
                ]
                say(f"metrics at http://127.0.0.1:{port}/metrics, readiness at /readyz")
            if options.dry_run:
                args = [a for a in args if a != "-dry-run=false"] + ["--dry-run=true"]
            elif not options.go_flags:
                args.append("--dry-run=false")
            args += options.extra
            say("running: kube-ecr-cleanup-controller " + " ".join(args))
            process = subprocess.Popen(
                [sys.executable, "-m", "controller", *args],
                env=world.env(),
                stdout=subprocess.PIPE,
                text=True,
            )
            if not options.once:
                churn = Churn(ecr, kube, scenario, every=5.0)
                churn.start()
            status = _follow(process, cycles=options.cycles)
            if churn is not None:
                churn.stop()
            after = world.state()
        finally:
            if churn is not None:
                churn.stop()

    say("images now: " + ", ".join(f"{repo} {len(d)}" for repo, d in after.items()))
    problems = scenario.violations(before, after)
    for problem in problems:
        say(f"SAFETY VIOLATION: {problem}")
    if problems:
        return 3
    say(
        f"safety check passed: all {len(scenario.in_use_digests)} in-use digests, every in-use tag's image and the children of in-use indexes still in ECR"
    )
    say(f"{UNSELECTED} (not selected) untouched: {len(after[UNSELECTED])} images")
    say(f"controller exit status {status}")
    return status


def _follow(process: subprocess.Popen[str], *, cycles: int) -> int:
    """Echo the controller's reports; stop it with SIGTERM after `cycles` reports or on Ctrl-C."""
    assert process.stdout is not None
    seen = 0
    try:
        for line in process.stdout:
            print(line, end="", flush=True)
            if line.startswith("total: "):
                seen += 1
                if cycles and seen >= cycles:
                    say(f"{seen} cycle(s) done: sending SIGTERM")
                    process.send_signal(signal.SIGTERM)
    except KeyboardInterrupt:
        say("Ctrl-C: sending SIGTERM to the controller")
        process.send_signal(signal.SIGTERM)
    return process.wait(timeout=60)


if __name__ == "__main__":
    raise SystemExit(main())
