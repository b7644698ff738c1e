"""The real process (`python -m controller`) fed what a new user and an adversary feed it.

Wrong input stops it at start-up with exit status 2 and one line naming the input, never a
traceback; a cluster that cannot be reached gives the refusal report and exit 1; SIGTERM,
during a delete call or during start-up, ends it cleanly.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sandbox.ecrsim import ThreadedEcrSimulator
from sandbox.kubesim import ThreadedKubeSimulator, pod, write_kubeconfig
from sandbox.moto import CREDENTIALS
from sandbox.ports import free_port

PROG = "kube-ecr-cleanup-controller: error: "
HOST = "123456789012.dkr.ecr.us-east-1.amazonaws.com"


def environment(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ECR_CLEANUP_", "AWS_", "KUBECONFIG"))
    }
    return {**env, **CREDENTIALS, "PYTHONUNBUFFERED": "1", **extra}


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "controller", *args],
        env=environment(**env),
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def start(*args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "controller", *args],
        env=environment(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single error line of a run that exited 2; fails on a traceback or a second line."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith(PROG)]
    assert len(errors) == 1, result.stderr
    return errors[0][len(PROG) :]


@pytest.fixture
def kubeconfig(tmp_path: Path) -> Iterator[Path]:
    """A kubeconfig for a running simulator with one pod (so that the view can be trusted)."""
    with ThreadedKubeSimulator(token="t") as kube:
        kube.create("pods", pod("p", "ns", {"c": f"{HOST}/app:b1"}))
        yield write_kubeconfig(tmp_path / "kubeconfig", {"sim": kube}, token="t")


# -- exit 2, one line ------------------------------------------------------------------------


def test_a_profile_that_does_not_exist(kubeconfig: Path) -> None:
    line = one_error_line(run("-repos=app", f"-kubeconfig={kubeconfig}", AWS_PROFILE="nope"))
    assert line.startswith("AWS_PROFILE: The config profile (nope) could not be found")


@pytest.mark.parametrize(
    ("variable", "value"),
    [("AWS_REGION", "garbage"), ("AWS_ENDPOINT_URL_ECR", "not a url")],
)
def test_aws_variables_of_the_wrong_form(kubeconfig: Path, variable: str, value: str) -> None:
    line = one_error_line(run("-repos=app", f"-kubeconfig={kubeconfig}", **{variable: value}))
    assert line.startswith(f"{variable}: ")


def test_a_metrics_address_in_use(kubeconfig: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_error_line(
            run("-repos=app", f"-kubeconfig={kubeconfig}", f"--metrics-address=127.0.0.1:{port}")
        )
    assert line == (f"--metrics-address: cannot listen on 127.0.0.1:{port}: Address already in use")


def test_a_metrics_address_this_host_does_not_have(kubeconfig: Path) -> None:
    line = one_error_line(
        run("-repos=app", f"-kubeconfig={kubeconfig}", "--metrics-address=192.0.2.1:8080")
    )
    assert line == (
        "--metrics-address: cannot listen on 192.0.2.1:8080: Cannot assign requested address"
    )


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (
            "",
            "expected a kubeconfig (a mapping with clusters, contexts and users), got an empty file",
        ),
        ("{{{\n", "not valid YAML at line 2, column 1"),
        (
            "- a\n- b\n",
            "expected a kubeconfig (a mapping with clusters, contexts and users), got a list",
        ),
        (
            "42\n",
            "expected a kubeconfig (a mapping with clusters, contexts and users), got a number",
        ),
    ],
    ids=["empty", "malformed", "list", "scalar"],
)
def test_a_kubeconfig_that_is_not_one(tmp_path: Path, text: str, reason: str) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(text)
    line = one_error_line(run("-repos=app", "--once", f"-kubeconfig={path}"))
    assert line == f"-kubeconfig: kubeconfig {path}: {reason}"


KUBECONFIG_HEAD = "apiVersion: v1\nkind: Config\ncurrent-context: x\n"


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (
            "clusters: [{name: c, cluster: {}}]\n"
            "contexts: [{name: x, context: {cluster: c, user: u}}]\n"
            "users: [{name: u, user: {token: t}}]\n",
            "AssertionError",
        ),
        (
            "clusters: [{name: c, cluster: {server: 'http://127.0.0.1:1'}}]\n"
            "contexts: [{name: x, context: c}]\n"
            "users: [{name: u, user: {token: t}}]\n",
            "AttributeError",
        ),
    ],
    ids=["cluster-without-server", "context-not-a-mapping"],
)
def test_a_kubeconfig_entry_that_is_empty_or_not_a_mapping(
    tmp_path: Path, body: str, error: str
) -> None:
    # before: kubernetes_asyncio's AssertionError / AttributeError escaped: exit 1, a traceback
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG_HEAD + body)
    line = one_error_line(run("-repos=app", "--once", f"-kubeconfig={path}"))
    assert line == (
        f"-kubeconfig: kubeconfig {path}, context 'x': a context, cluster or user entry it uses "
        f"is empty, incomplete (a cluster without a server) or not a mapping ({error})"
    )


def test_an_unknown_kube_context_names_the_flag(kubeconfig: Path) -> None:
    line = one_error_line(
        run("-repos=app", "--once", f"-kubeconfig={kubeconfig}", "--kube-context=prod")
    )
    assert line == f"--kube-context: no context 'prod' in {kubeconfig} (contexts: sim)"


def test_an_allowed_empty_cluster_must_be_a_watched_one(kubeconfig: Path) -> None:
    line = one_error_line(
        run("-repos=app", "--once", f"-kubeconfig={kubeconfig}", "--allow-empty-clusters=staging")
    )
    assert line == "--allow-empty-clusters: staging is not a watched cluster (watched: sim)"


# -- a cluster that cannot be reached: the refusal report, exit 1 ----------------------------


@pytest.mark.parametrize(
    ("server", "reason"),
    [
        ("http://127.0.0.1:1", "ClientConnectorError"),
        ("not a url", "InvalidUrlClientError"),
    ],
)
def test_an_unreachable_api_server_gives_the_refusal_report(
    tmp_path: Path, server: str, reason: str
) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: x\n"
        f"clusters: [{{name: c, cluster: {{server: '{server}'}}}}]\n"
        "contexts: [{name: x, context: {cluster: c, user: u}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
    )
    result = run("-repos=app", "--once", "-dry-run=false", f"-kubeconfig={path}")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    refused = [line for line in result.stdout.splitlines() if line.startswith("REFUSED: ")]
    assert len(refused) == 1, result.stdout
    assert refused[0].startswith("REFUSED: x/cronjobs: initial LIST not complete (")
    for kind in ("pods", "deployments", "replicasets", "statefulsets", "daemonsets", "jobs"):
        assert f"x/{kind}: initial LIST not complete ({reason}: " in refused[0]


def test_an_empty_second_cluster_refuses_naming_it(tmp_path: Path) -> None:
    # before: `--kube-context=prod,staging` with staging empty planned deletions, no warning
    with (
        ThreadedEcrSimulator() as ecr,
        ThreadedKubeSimulator(token="t") as prod,
        ThreadedKubeSimulator(token="t") as staging,
    ):
        seeded_ecr(ecr, 20)
        prod.create("pods", pod("p", "ns", {"c": f"{HOST}/app:b1"}))
        kubeconfig = write_kubeconfig(
            tmp_path / "kubeconfig", {"prod": prod, "staging": staging}, token="t"
        )
        args = (
            "-repos=app",
            "--once",
            "-dry-run=false",
            "-max-images=5",
            f"-kubeconfig={kubeconfig}",
        )
        refused = run(*args, "--kube-context=prod,staging", AWS_ENDPOINT_URL_ECR=ecr.endpoint_url)
        assert refused.returncode == 1, refused.stderr
        assert "REFUSED: no pods in cluster staging: " in refused.stdout
        assert len(ecr.digests("app")) == 20
        allowed = run(
            *args,
            "--kube-context=prod,staging",
            "--allow-empty-clusters=staging",
            AWS_ENDPOINT_URL_ECR=ecr.endpoint_url,
        )
        assert allowed.returncode == 0, allowed.stderr
        assert len(ecr.digests("app")) == 5


# -- SIGTERM ---------------------------------------------------------------------------------


def seeded_ecr(ecr: ThreadedEcrSimulator, count: int) -> list[str]:
    now = datetime.now(UTC)
    ecr.create_repository("app")
    return [
        ecr.add_image(
            "app", tags=(f"b{n}",), pushed_at=now - timedelta(hours=n), config_seed=f"s{n}"
        )
        for n in range(count)
    ]


def wait_for(process: subprocess.Popen[str], needle: str, within: float) -> list[str]:
    """Read stderr lines until one contains `needle`; returns the lines read."""
    assert process.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        lines.append(line)
        if needle in line:
            return lines
    raise AssertionError(f"no {needle!r} within {within}s:\n{''.join(lines[-30:])}")


def test_sigterm_during_a_once_delete_prints_the_partial_report_and_exits_1(
    tmp_path: Path,
) -> None:
    # before: --once ignored SIGTERM's meaning, died with -15 and printed no report
    with ThreadedEcrSimulator() as ecr, ThreadedKubeSimulator(token="t") as kube:
        digests = seeded_ecr(ecr, 400)
        kube.create(
            "pods",
            pod(
                "p", "ns", {"c": f"{HOST}/app:b350"}, image_ids={"c": f"{HOST}/app@{digests[350]}"}
            ),
        )
        ecr.set_latency("BatchDeleteImage", 2.0)
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", {"sim": kube}, token="t")
        process = start(
            "--once",
            "-dry-run=false",
            "-repos=app",
            "-max-images=10",
            f"-kubeconfig={kubeconfig}",
            AWS_ENDPOINT_URL_ECR=ecr.endpoint_url,
        )
        try:
            wait_for(process, "deleting 100 image(s) from app:", 60)
            time.sleep(0.5)  # the first call is on the wire, its answer 1.5 s away
            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=30)
        finally:
            process.kill()
        assert process.returncode == 1, err
        assert "Traceback" not in err
        assert ecr.calls["BatchDeleteImage"] == 1  # the call in flight finished, no other began
        assert len(ecr.digests("app")) == 300
        assert digests[350] in ecr.digests("app")
        assert "STOPPED: shutting down; 1 repositories not finished" in out
        (row,) = [line.split() for line in out.splitlines() if line.startswith("app ")]
        assert row[1:6] == ["400", "300", "100", "1", "290"]  # before after deleted protected held
        assert row[-1] == "stopped"


@pytest.mark.parametrize("mode", ["--once", "service"])
def test_sigterm_during_start_up_exits_cleanly(kubeconfig: Path, mode: str) -> None:
    args = ["-repos=app", f"-kubeconfig={kubeconfig}", f"--metrics-address=127.0.0.1:{free_port()}"]
    process = start(*args, *([mode] if mode == "--once" else []))
    try:
        # the configuration is logged just before the controller's own imports (seconds of
        # kubernetes_asyncio), which used to be a window where SIGTERM killed it with -15
        read = wait_for(process, "starting with", 30)
        process.send_signal(signal.SIGTERM)
        out, rest = process.communicate(timeout=60)
    finally:
        process.kill()
    err = "".join(read) + rest
    assert "Traceback" not in err, err
    assert (
        "received SIGTERM during start-up, shutting down" in err
        or "received SIGTERM: no new delete call; shutting down" in err
    ), err
    if mode == "--once":
        assert process.returncode == 1
        assert "REFUSED: shutting down" in out
    else:
        assert process.returncode == 0
        assert "controller.app stopped" in err


def test_verbosity_1_turns_on_debug_logs(tmp_path: Path) -> None:
    with ThreadedEcrSimulator() as ecr, ThreadedKubeSimulator(token="t") as kube:
        seeded_ecr(ecr, 12)
        kube.create("pods", pod("p", "ns", {"c": f"{HOST}/app:b1"}))
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", {"sim": kube}, token="t")
        args = ("-repos=app", "--once", "-max-images=10", f"-kubeconfig={kubeconfig}")
        loud = run(*args, "-v=1", AWS_ENDPOINT_URL_ECR=ecr.endpoint_url)
        quiet = run(*args, AWS_ENDPOINT_URL_ECR=ecr.endpoint_url)
    assert loud.returncode == quiet.returncode == 0, loud.stderr
    debug = [line for line in loud.stderr.splitlines() if " DEBUG controller." in line]
    assert any(" keep app@sha256:" in line and "reason=in-use-tag" in line for line in debug)
    assert len([line for line in debug if " keep app@" in line]) == 10
    assert " DEBUG " not in quiet.stderr
