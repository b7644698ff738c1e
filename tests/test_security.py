"""Security review, end to end against the real controller process (docs/security.md).

- IAM: the ECR operations the real gateway calls, recorded by the ECR simulator in a dry run
  and in a deleting run, equal the README's least-privilege policy for each mode.
- No credentials in logs: a --once run and a service run at the highest verbosity, with fake
  AWS secret access key, session token and kubeconfig bearer token, and faults that make
  every error path log; no output contains any of the three.
- The HTTP endpoints: nothing sensitive in /metrics, /healthz or /readyz; malformed requests
  get a 4xx or a closed connection, never a hang or a crash; slow and idle clients are cut
  off, connections are capped, and /healthz keeps answering.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.serving import IDLE_TIMEOUT
from sandbox.ecrsim import ThreadedEcrSimulator
from sandbox.kubesim import ThreadedKubeSimulator, pod, write_kubeconfig
from sandbox.moto import ACCOUNT, REGION
from sandbox.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
HOST = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"

# fake secrets, distinctive enough that any occurrence in the output is a leak
SECRET_ACCESS_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzSECRETKEY9"
SESSION_TOKEN = "FwoGZXIvYXdzEXAMPLESESSIONTOKEN0123456789abcdefZZZ"
BEARER_TOKEN = "eyJhbGciOiJSUzI1NiJ9.KUBEBEARERTOKEN.c2lnbmF0dXJl"
SECRETS = (SECRET_ACCESS_KEY, SESSION_TOKEN, BEARER_TOKEN)


def env_for(ecr: ThreadedEcrSimulator) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "AWS_ACCESS_KEY_ID": "AKIDSECURITYTEST",
        "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
        "AWS_SESSION_TOKEN": SESSION_TOKEN,
        "AWS_REGION": REGION,
        "AWS_ENDPOINT_URL_ECR": ecr.endpoint_url,
        "PYTHONUNBUFFERED": "1",
    }


@dataclass
class Simulators:
    ecr: ThreadedEcrSimulator
    kube: ThreadedKubeSimulator
    kubeconfig: Path
    in_use: str
    index: str


@pytest.fixture
def simulators(tmp_path: Path) -> Iterator[Simulators]:
    yield from _simulators(tmp_path)


def _simulators(tmp_path: Path) -> Iterator[Simulators]:
    now = datetime.now(UTC)
    with ThreadedEcrSimulator() as ecr, ThreadedKubeSimulator(token=BEARER_TOKEN) as kube:
        ecr.create_repository("app")
        ecr.create_repository("multi")
        digests = [
            ecr.add_image(
                "app", tags=(f"b{n}",), pushed_at=now - timedelta(hours=n), config_seed=f"a{n}"
            )
            for n in range(30)
        ]
        for n in range(6):  # multi-arch: indexes make the controller read manifests
            children = [
                ecr.add_image("multi", pushed_at=now - timedelta(hours=n), config_seed=f"m{n}{c}")
                for c in range(2)
            ]
            index = ecr.add_index(
                "multi", children, tags=(f"v{n}",), pushed_at=now - timedelta(hours=n)
            )
        in_use = digests[25]
        kube.create(
            "pods",
            pod("p", "ns", {"c": f"{HOST}/app:b25"}, image_ids={"c": f"{HOST}/app@{in_use}"}),
        )
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", {"sim": kube}, token=BEARER_TOKEN)
        yield Simulators(ecr, kube, kubeconfig, in_use, index)


def base_args(sims: Simulators, repos: str = "app,multi") -> list[str]:
    return [f"--kubeconfig={sims.kubeconfig}", f"--repos={repos}", "--max-images=3"]


def assert_no_secret(*outputs: str) -> None:
    for output in outputs:
        for secret in SECRETS:
            assert secret not in output, f"{secret[:12]}... leaked:\n" + "\n".join(
                line for line in output.splitlines() if secret in line
            )
        # nor their halves (a truncated header or a split log line)
        for secret in SECRETS:
            assert secret[: len(secret) // 2] not in output
            assert secret[len(secret) // 2 :] not in output


# ---------------------------------------------------------------------------------------------
# (a) IAM: the policy per mode equals the operations the code calls


def readme_policies() -> dict[str, set[str]]:
    """The IAM actions of the README's per-mode policies (## Permissions, ```json blocks
    preceded by a line naming the mode)."""
    text = README.read_text()
    section = text[text.index("## Permissions") :]
    section = section[: section.index("\n## ", 5)]
    policies: dict[str, set[str]] = {}
    for match in re.finditer(
        r"\*\*(dry-run|deleting|archiving|expiring)\*\*(?:(?!```).)*```json\n(.*?)```",
        section,
        re.S,
    ):
        document = json.loads(match.group(2))
        actions = {a for s in document["Statement"] for a in s["Action"]}
        policies[match.group(1)] = actions
    return policies


def operations_in_code() -> set[str]:
    """Every ECR operation controller/ecr.py names in a call."""
    source = (ROOT / "controller" / "ecr.py").read_text()
    return set(re.findall(r"_call(?:_once)?\(\s*\"([A-Z][A-Za-z]+)\"", source))


def test_the_readme_policy_per_mode_equals_the_ecr_operations_the_code_calls(
    simulators: Simulators,
) -> None:
    called: dict[str, set[str]] = {}
    modes = (
        ("dry-run", ["--dry-run=true"]),
        ("deleting", ["--dry-run=false"]),
        ("archiving", ["--dry-run=false", "--disposal=archive"]),
        # the second run finds what the first archived over a second ago, and deletes it
        ("expiring", ["--dry-run=false", "--disposal=archive", "--delete-archived-after=1s"]),
    )
    simulators.ecr.checkpoint()
    for mode, flags in modes:
        simulators.ecr.rollback()  # each mode starts from the same registry (and no calls)
        for repos in ("app,multi", "*"):  # by name, and every repository (the listing path)
            if mode == "expiring" and repos == "*":
                time.sleep(1.1)  # the first run's archived images are over 1s old now
            result = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "controller",
                    *base_args(simulators, repos),
                    *flags,
                    "--once",
                ],
                env=env_for(simulators.ecr),
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert result.returncode == 0, result.stderr[-2000:]
        called[mode] = {f"ecr:{op}" for op, n in simulators.ecr.calls.items() if n}
    assert called["dry-run"] == {
        "ecr:DescribeRepositories",
        "ecr:DescribeImages",
        "ecr:BatchGetImage",
    }
    assert called["deleting"] == called["dry-run"] | {"ecr:BatchDeleteImage"}
    # archive mode moves images (and restores them on use: the same action) and deletes none
    assert called["archiving"] == called["dry-run"] | {"ecr:UpdateImageStorageClass"}
    # --delete-archived-after deletes from the archive: BatchDeleteImage again
    assert called["expiring"] == called["archiving"] | {"ecr:BatchDeleteImage"}
    # no operation in the code that these runs did not exercise
    assert {f"ecr:{op}" for op in operations_in_code()} == called["deleting"] | called["archiving"]
    assert readme_policies() == called


def rbac_rules(objects: Iterable[Mapping[str, Any]]) -> set[tuple[str, str, str, str, str]]:
    """(Role kind, API group, resource, resource names, verb) of every rule of every role."""
    rules = set()
    for role in objects:
        if role.get("kind") not in ("Role", "ClusterRole"):
            continue
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        names = ",".join(rule.get("resourceNames", []))
                        rules.add((str(role["kind"]), group, resource, names, verb))
    return rules


def test_the_readme_rbac_is_what_the_chart_grants_by_default() -> None:
    from tests.chart import render_bare  # helm, installed by scripts/install-helm

    text = README.read_text()
    section = text[text.index("## Permissions") :]
    section = section[: section.index("\n## ", 5)]
    block = re.search(r"Kubernetes RBAC.*?```yaml\n(.*?)```", section, re.S)
    assert block is not None
    documented = rbac_rules([d for d in yaml.safe_load_all(block.group(1)) if d])
    assert rbac_rules(render_bare().objects) == documented
    assert {verb for *_rest, verb in documented} == {"list", "watch", "create", "get", "update"}


# ---------------------------------------------------------------------------------------------
# (b) no credentials or tokens in the logs


def test_a_once_run_at_the_highest_verbosity_logs_no_secret(simulators: Simulators) -> None:
    simulators.ecr.throttle("DescribeImages", 2)
    simulators.ecr.server_error("BatchGetImage", 1)
    outputs = []
    for log_format in ("text", "json"):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "controller",
                *base_args(simulators),
                "--dry-run=false",
                "--once",
                "-v=10",
                f"--log-format={log_format}",
            ],
            env=env_for(simulators.ecr),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        assert " DEBUG " in result.stderr or '"level": "DEBUG"' in result.stderr
        outputs += [result.stdout, result.stderr]
    assert_no_secret(*outputs)
    # the libraries that would print headers at DEBUG (botocore: X-Amz-Security-Token) stay at INFO
    for line in "".join(outputs).splitlines():
        assert not re.search(r"DEBUG (botocore|aiobotocore|aiohttp|urllib3|kubernetes)", line)
        assert '"level": "DEBUG", "logger": "botocore' not in line


def test_a_service_run_with_faults_logs_no_secret(simulators: Simulators) -> None:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "controller",
            *base_args(simulators),
            "--dry-run=false",
            "--interval=1s",
            "--interval-jitter=0",
            "--lease-namespace=default",
            "--lease-duration=3s",
            f"--metrics-address=127.0.0.1:{port}",
            "-v=10",
            "--log-format=json",
        ],
        env=env_for(simulators.ecr),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: simulators.ecr.calls["BatchDeleteImage"] >= 1, 60, "a delete call")
        sims = simulators
        # the error paths: 401 and 403 from the API server, dropped and expired watches,
        # throttling, a 5xx, a per-image failure
        sims.kube.fail_next(2, 401)
        sims.kube.deny("deployments")
        sims.kube.drop_watches()
        sims.kube.compact()
        sims.kube.drop_watches()
        sims.ecr.throttle("DescribeImages", 3)
        sims.ecr.server_error("DescribeRepositories", 2)
        sims.ecr.add_image("app", tags=("late",), config_seed="late")
        for n in range(5):
            sims.ecr.add_image("app", tags=(f"more{n}",), config_seed=f"more{n}")
        time.sleep(4)
        sims.kube.allow("deployments")
        for path in ("/metrics", "/healthz", "/readyz"):
            http_get(port, path)
        time.sleep(2)
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr[-2000:]
    assert '"level": "DEBUG"' in stderr
    assert "403" in stderr  # the faults were logged
    assert_no_secret(stdout, stderr)


# ---------------------------------------------------------------------------------------------
# (c) the HTTP endpoints


@dataclass
class Service:
    port: int
    process: subprocess.Popen[bytes]
    kubeconfig: Path


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    tmp = tmp_path_factory.mktemp("security-service")
    for sims in _simulators(tmp):
        port = free_port()
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "controller",
                *base_args(sims),
                "--interval=1h",
                "--lease-namespace=default",
                f"--metrics-address=127.0.0.1:{port}",
            ],
            env=env_for(sims.ecr),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_until(lambda port=port: http_get(port, "/readyz")[0] == 200, 60, "ready")
            yield Service(port, process, sims.kubeconfig)
            assert process.poll() is None  # survived everything
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)


def test_the_endpoints_expose_nothing_sensitive(service: Service) -> None:
    bodies = []
    for path, accept in (
        ("/metrics", "text/plain"),
        ("/metrics", "application/openmetrics-text; version=1.0.0"),
        ("/healthz", "*/*"),
        ("/readyz", "*/*"),
    ):
        status, headers, body = http_get(service.port, path, accept=accept)
        assert status == 200, (path, body)
        bodies.append(headers + body)
    everything = "\n".join(bodies)
    assert "ecr_cleanup_cycles_total" in everything
    assert_no_secret(everything)
    for needle in ("arn:aws", "AKID", "Bearer", "token", str(service.kubeconfig), "BEGIN"):
        assert needle not in everything, needle


# request bytes -> the statuses that are an acceptable answer (None: the server closes the
# connection without one); none may hang or take the server down
MALFORMED: dict[str, tuple[bytes, set[int | None]]] = {
    "garbage": (bytes(range(256)) * 8, {400, None}),
    "http/0.9": (b"GET /healthz\r\n\r\n", {400, None}),
    "bad method": (b"FROBNICATE /healthz HTTP/1.1\r\nHost: x\r\n\r\n", {400, 405}),
    "post": (b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", {405}),
    "unknown version": (b"GET /healthz HTTP/7.3\r\nHost: x\r\n\r\n", {400, 505, None}),
    "huge header": (
        b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n",
        {400, 431, None},
    ),
    "many headers": (
        b"GET /healthz HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(5_000)) + b"\r\n",
        {400, 431, None},
    ),
    "huge request line": (b"GET /" + b"a" * 1_000_000 + b" HTTP/1.1\r\n\r\n", {400, 414, None}),
    "nul bytes": (b"GET /hea\x00lthz HTTP/1.1\r\nHost: \x00\r\n\r\n", {400, 404, None}),
    "bad chunking": (
        b"POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nxx\r\n",
        {400, 405, None},
    ),
    "huge content-length": (
        b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999\r\n\r\nx",
        {400, 405, 413, None},
    ),
    "traversal": (b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", {404, 400}),
    "empty": (b"", {None}),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_a_malformed_request_gets_a_4xx_or_a_close_and_the_server_goes_on(
    service: Service, case: str
) -> None:
    payload, acceptable = MALFORMED[case]
    started = time.monotonic()
    status = exchange(service.port, payload)
    assert status in acceptable, (case, status)
    assert time.monotonic() - started < 10  # answered or closed: no hang
    healthz_fast(service.port)


def test_a_half_closed_connection_is_answered_or_closed(service: Service) -> None:
    for payload in (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", b"GET /healthz HTTP/1.1\r\nHo"):
        with socket.create_connection(("127.0.0.1", service.port), timeout=10) as sock:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            started = time.monotonic()
            read_all(sock)  # returns once the server closed its side
            assert time.monotonic() - started < 10
    healthz_fast(service.port)


def test_slow_clients_are_cut_off_and_the_probes_keep_answering(service: Service) -> None:
    # slowloris: many connections, each sending one more byte of its request head per second
    slow = [socket.create_connection(("127.0.0.1", service.port)) for _ in range(100)]
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
    try:
        for sock in slow:
            sock.setblocking(False)
        open_ = set(range(len(slow)))
        started = time.monotonic()
        second = 0
        while open_ and time.monotonic() - started < 15:
            for n in list(open_):
                try:
                    slow[n].send(head[second : second + 1])
                    if slow[n].recv(1) == b"":
                        open_.discard(n)  # the server closed it
                except BlockingIOError:
                    pass
                except OSError:
                    open_.discard(n)
            healthz_fast(service.port)
            second += 1
            time.sleep(1)
        assert not open_, f"{len(open_)} slow connections still open after 15 s"
    finally:
        for sock in slow:
            sock.close()
    healthz_fast(service.port)


def test_connections_are_capped_and_idle_ones_closed_so_descriptors_stay_bounded(
    service: Service,
) -> None:
    before = sockets_of(service.process.pid)
    idle = []
    try:
        for _ in range(400):
            idle.append(socket.create_connection(("127.0.0.1", service.port), timeout=5))
        # not one descriptor per client: the ones over the cap are reset as the event loop
        # accepts them, which a loaded machine does in batches, so this is polled, but only
        # for less than IDLE_TIMEOUT (after which the idle close would empty it anyway)
        deadline = time.monotonic() + IDLE_TIMEOUT - 2
        while (held := sockets_of(service.process.pid) - before) > 200:
            assert time.monotonic() < deadline, held
            time.sleep(0.1)
        # the idle ones are closed within 10 s; then the probes answer again
        wait_until(
            lambda: sockets_of(service.process.pid) - before <= 5, 12, "idle connections closed"
        )
    finally:
        for sock in idle:
            sock.close()
    healthz_fast(service.port)


# ---------------------------------------------------------------------------------------------
# helpers


def wait_until(predicate: object, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"no {what} within {within} s"
        time.sleep(0.1)


def http_get(port: int, path: str, accept: str = "*/*") -> tuple[int, str, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Accept": accept})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, str(response.headers), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, str(error.headers), error.read().decode()
    except OSError:
        return 0, "", ""


def healthz_fast(port: int) -> None:
    started = time.monotonic()
    assert http_get(port, "/healthz")[:1] == (200,)
    assert time.monotonic() - started < 1.0


def read_all(sock: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return data


def exchange(port: int, payload: bytes) -> int | None:
    """Send `payload`; the status of the answer, None if the server closed without one, -1 if
    it did neither within 8 s."""
    with socket.create_connection(("127.0.0.1", port), timeout=8) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(payload)  # closed on us mid-send: acceptable
        data = b""
        try:
            while b"\r\n" not in data and (chunk := sock.recv(65536)):
                data += chunk
        except ConnectionResetError:
            pass
        except TimeoutError:
            return -1  # neither answered nor closed within 8 s
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", data)
    return int(match.group(1)) if match else None


def sockets_of(pid: int) -> int:
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):  # closed meanwhile
            count += os.readlink(fd).startswith("socket:")
    return count


# ---------------------------------------------------------------------------------------------
# (d) non-root: the chart's securityContext is asserted by tests/test_chart.py
# (test_security_context_is_locked_down) and the built image's user, read-only root and
# writable files by tests/test_image.py; this checks the Dockerfile without a build.


def test_the_dockerfile_final_stage_runs_as_a_numeric_non_root_user() -> None:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    final = max(n for n, line in enumerate(lines) if line.upper().startswith("FROM "))
    users = [line.split()[1] for line in lines[final:] if line.upper().startswith("USER ")]
    # numeric, so that the kubelet can verify runAsNonRoot; the last word of the stage
    assert users == ["65532:65532"], users
    entry = next(n for n, line in enumerate(lines) if line.upper().startswith("USER "))
    assert not any(line.upper().startswith("RUN ") for line in lines[entry:])
