"""`python -m sandbox`: the whole controller against a local ECR (moto) and a simulated cluster.

Harness, not product: it starts moto's ECR server and the API-server simulator on 127.0.0.1,
seeds them with `sandbox.scenario`, writes a kubeconfig, and runs the real controller CLI as a
subprocess, exactly as a user would. Afterwards it checks that every image the cluster uses
is still in ECR and that the unselected repository was not touched.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from sandbox.kubesim import ThreadedKubeSimulator, write_kubeconfig
from sandbox.moto import CREDENTIALS, MotoEcr, moto_server
from sandbox.scenario import SELECTED, UNSELECTED, controller_args, seed


def say(message: str) -> None:
    print(f"[sandbox] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox",
        description="Run the controller once against a seeded local ECR (moto) and a simulated cluster. "
        "Extra arguments after -- go to the controller (e.g. -- --output json).",
    )
    parser.add_argument("--dry-run", action="store_true", help="only report what would be deleted")
    parser.add_argument(
        "--go-flags", action="store_true", help="pass the Go controller's single-dash flags"
    )
    parser.add_argument("extra", nargs="*", help="more controller flags")
    options = parser.parse_args(argv)

    os.environ.update(CREDENTIALS)
    with tempfile.TemporaryDirectory(prefix="ecr-sandbox-") as tmp, moto_server() as endpoint:
        kube = ThreadedKubeSimulator(token="sandbox-token").start()
        try:
            say(f"ECR (moto) at {endpoint}; API server simulator at {kube.url}")
            ecr = MotoEcr(endpoint)
            scenario = seed(ecr, kube, progress=say)
            kubeconfig = str(
                write_kubeconfig(Path(tmp) / "kubeconfig", {"sandbox": kube}, token="sandbox-token")
            )
            before = {repo: ecr.digests(repo) for repo in scenario.digests}
            say("images: " + ", ".join(f"{repo} {len(d)}" for repo, d in before.items()))
            args = controller_args(kubeconfig, go_style=options.go_flags)
            if options.dry_run:
                args = [a for a in args if a != "-dry-run=false"] + ["--dry-run=true"]
            elif not options.go_flags:
                args.append("--dry-run=false")
            args += options.extra
            env = dict(os.environ, AWS_ENDPOINT_URL_ECR=endpoint)
            command = [sys.executable, "-m", "controller", *args]
            say("running: kube-ecr-cleanup-controller " + " ".join(args))
            status = subprocess.run(command, env=env, check=False).returncode
            after = {repo: ecr.digests(repo) for repo in scenario.digests}
        finally:
            kube.stop()

    say("images now: " + ", ".join(f"{repo} {len(d)}" for repo, d in after.items()))
    lost = {repo: scenario.must_survive(repo) - after[repo] for repo in scenario.digests}
    if any(lost.values()):
        say(f"SAFETY VIOLATION: in-use images deleted: {lost}")
        return 3
    say(
        f"safety check passed: all {len(scenario.in_use_digests)} in-use digests and every in-use tag's image still in ECR"
    )
    if after[UNSELECTED] != before[UNSELECTED]:
        say(f"{UNSELECTED} was not selected ({', '.join(SELECTED)}) but changed")
        return 3
    say(f"{UNSELECTED} (not selected) untouched: {len(after[UNSELECTED])} images")
    say(f"controller exit status {status}")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
