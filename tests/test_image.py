"""The container image, built for real from the Dockerfile and run read-only as uid 65532.

No Docker daemon runs here and no public registry can be reached, so (TOOLING.md): the base
image is made locally (`mmdebstrap` of Debian bookworm with python3, imported with `podman
import`, the root file system cached under .cache/image), passed as BASE_IMAGE to `podman
build --isolation chroot` on the vfs storage driver (in .cache/containers), with the host's CA
bundle for PyPI through the Dockerfile's build arguments. Containers cannot be run with crun
on this kernel, so the image's file system (`podman image mount`) runs under bubblewrap: a
read-only root, uid and gid 65532, the host network (moto and the simulator on 127.0.0.1),
the image's own ENV and ENTRYPOINT. A tool that is missing fails the tests, naming it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import threading
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import controller
from sandbox.kubesim import write_kubeconfig
from sandbox.moto import CREDENTIALS
from sandbox.ports import free_port
from sandbox.scenario import MAX_IMAGES, UNSELECTED, controller_args
from tests.chart import BARE, NAMESPACE, ROOT, merged, render, tool
from tests.figures import report
from tests.worlds import World, world

__all__ = ["world"]  # the fixture

# The first test using the image fixture builds it: on a fresh machine mmdebstrap (about 60 s)
# and the build (40-100 s on 2 shared cores) exceed the suite's 120 s per test. Every command
# below has its own, tighter timeout.
pytestmark = pytest.mark.timeout(900)

DOCKERFILE = ROOT / "Dockerfile"
CACHE = ROOT / ".cache"
ROOTFS = CACHE / "image" / "rootfs-bookworm.tar"
BASE = "localhost/debian-python:bookworm"
IMAGE = "localhost/kube-ecr-cleanup-controller:test"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
INSTALL = "scripts/install-image-tools (as root)"


def podman_command() -> list[str]:
    podman = shutil.which("podman")
    if podman is None:
        pytest.fail(f"podman is missing: run {INSTALL}")
    return [
        podman,
        "--root",
        str(CACHE / "containers" / "storage"),
        "--runroot",
        str(CACHE / "containers" / "run"),
        "--storage-driver",
        "vfs",
    ]


def podman(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*podman_command(), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, f"podman {' '.join(args[:3])}: {result.stderr[-3000:]}"
    return result


def require_tools() -> None:
    missing = [name for name in ("podman", "mmdebstrap", "bwrap") if shutil.which(name) is None]
    if missing:
        pytest.fail(f"missing: {', '.join(missing)}; run {INSTALL}")
    if os.geteuid() != 0:
        pytest.fail("building the image with podman --isolation chroot needs root (as CI runs)")


def base_image() -> None:
    """The Debian bookworm + python3 root file system (cached), imported as BASE."""
    if not ROOTFS.is_file():
        ROOTFS.parent.mkdir(parents=True, exist_ok=True)
        partial = ROOTFS.with_suffix(".partial.tar")
        result = subprocess.run(
            [
                "mmdebstrap",
                "--variant=minbase",
                "--include=python3,python3-venv,ca-certificates",
                "bookworm",
                str(partial),
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert result.returncode == 0, f"mmdebstrap: {result.stderr[-3000:]}"
        partial.rename(ROOTFS)
    exists = subprocess.run([*podman_command(), "image", "exists", BASE], check=False)
    if exists.returncode != 0:
        podman("import", str(ROOTFS), BASE)


@dataclass(frozen=True)
class Image:
    root: Path
    # the image's file system, mounted
    config: dict[str, Any]
    # its OCI config: User, Env, Entrypoint, Cmd, Labels
    size: int
    build_seconds: float

    @property
    def env(self) -> dict[str, str]:
        return dict(entry.split("=", 1) for entry in self.config["Env"])

    def bwrap(self, *extra: str, unshare_pid: bool = True) -> list[str]:
        """bubblewrap running the image: its root read-only, as its User, with only its ENV."""
        uid, _, gid = self.config["User"].partition(":")
        command = [tool("bwrap", install=INSTALL), "--ro-bind", str(self.root), "/"]
        command += ["--proc", "/proc", "--dev", "/dev"]
        command += ["--unshare-user", "--uid", uid, "--gid", gid or uid, "--die-with-parent"]
        if unshare_pid:
            command.append("--unshare-pid")
        command.append("--clearenv")
        for key, value in self.env.items():
            command += ["--setenv", key, value]
        return [*command, *extra]

    def run(
        self, *args: str, extra: Sequence[str] = (), timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.bwrap(*extra), *self.config["Entrypoint"], *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


@pytest.fixture(scope="module")
def image() -> Iterator[Image]:
    require_tools()
    base_image()
    command = [
        "build",
        "--layers=false",
        "--isolation",
        "chroot",
        "--build-arg",
        f"BASE_IMAGE={BASE}",
    ]
    if HOST_CA.is_file():  # this machine reaches PyPI through a CA only the host's bundle has
        command += ["--volume", f"{HOST_CA}:/etc/host-ca.crt:ro"]
        command += ["--build-arg", "PIP_CERT=/etc/host-ca.crt"]
        command += ["--build-arg", "SSL_CERT_FILE=/etc/host-ca.crt"]
    started = time.monotonic()
    podman(*command, "--tag", IMAGE, "--file", str(DOCKERFILE), str(ROOT), timeout=900)
    build_seconds = time.monotonic() - started
    subprocess.run(
        [*podman_command(), "image", "prune", "--force"], capture_output=True, check=False
    )
    inspected = json.loads(podman("image", "inspect", IMAGE).stdout)[0]
    root = Path(podman("image", "mount", IMAGE).stdout.strip())
    built = Image(root, inspected["Config"], int(inspected["Size"]), build_seconds)
    report(
        f"container image {IMAGE}: {built.size / 2**20:.0f} MiB ({built.size / 1e6:.0f} MB) on "
        f"{BASE} ({ROOTFS.stat().st_size / 2**20:.0f} MiB), built in {build_seconds:.0f} s"
    )
    try:
        yield built
    finally:
        subprocess.run(
            [*podman_command(), "image", "unmount", IMAGE], capture_output=True, check=False
        )


# ---------------------------------------------------------------------------------------------
# The Dockerfile


def test_dockerfile_is_hadolint_clean() -> None:
    hadolint = tool("hadolint", install="scripts/bootstrap (a dev dependency)")
    result = subprocess.run(
        [hadolint, "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_hadolint_check_is_live(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nRUN apt-get install curl\nENTRYPOINT python app.py\n")
    hadolint = tool("hadolint", install="scripts/bootstrap (a dev dependency)")
    result = subprocess.run([hadolint, str(bad)], capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert "DL3025" in result.stdout  # the shell-form ENTRYPOINT


def test_dockerfile_shape() -> None:
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM (\S+)(?: AS (\S+))?$", text, re.MULTILINE)
    assert stages == [("${BASE_IMAGE}", "build"), ("${BASE_IMAGE}", "")]
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim-bookworm$", text, re.MULTILINE)
    # the host CA bundle's build arguments default to empty: a plain build needs none
    assert re.search(r'^ARG PIP_CERT=""$', text, re.MULTILINE)
    assert re.search(r'^ARG SSL_CERT_FILE=""$', text, re.MULTILINE)
    assert "uv sync --frozen --no-dev" in text
    version = re.search(r"^ARG VERSION=(\S+)$", text, re.MULTILINE)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert version is not None
    assert version.group(1) == project["version"] == controller.__version__
    entrypoint = re.search(r"^ENTRYPOINT (.+)$", text, re.MULTILINE)
    assert entrypoint is not None
    assert isinstance(json.loads(entrypoint.group(1)), list)  # exec form: signals reach it
    # the same pinned uv as scripts/bootstrap
    assert re.findall(r"^ARG UV_VERSION=([0-9.]+)$", text, re.MULTILINE) == re.findall(
        r"UV_VERSION=([0-9.]+)", (ROOT / "scripts" / "bootstrap").read_text()
    )


def test_dockerignore_sends_only_what_the_build_copies() -> None:
    lines = [
        line
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {line.removeprefix("!").rstrip("/") for line in lines if line.startswith("!")}
    copied = set()
    for sources in re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE.read_text(), re.MULTILINE):
        copied.update(sources.split())
    assert copied == allowed


# ---------------------------------------------------------------------------------------------
# The built image


def test_image_config_user_entrypoint_labels(image: Image) -> None:
    config = image.config
    assert config["User"] == "65532:65532"
    assert config["Entrypoint"] == ["/opt/venv/bin/kube-ecr-cleanup-controller"]
    assert image.env["PYTHONDONTWRITEBYTECODE"] == "1"
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == "kube-ecr-cleanup-controller"
    assert labels["org.opencontainers.image.version"] == controller.__version__
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert labels["org.opencontainers.image.base.name"] == BASE
    assert image.size > 0


def test_image_holds_the_locked_runtime_dependencies_only(image: Image) -> None:
    site = next((image.root / "opt" / "venv" / "lib").glob("python3*/site-packages"))
    installed = {
        m.group(1).lower().replace("_", "-"): m.group(2)
        for d in site.glob("*.dist-info")
        if (m := re.fullmatch(r"(.+)-([^-]+)\.dist-info", d.name))
    }
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    locked = {p["name"]: p["version"] for p in lock["package"]}
    assert installed["kube-ecr-cleanup-controller"] == controller.__version__
    for name, version in installed.items():
        assert locked[name] == version, name
    assert installed["aioboto3"] == "15.5.0"
    assert installed["botocore"] == locked["botocore"]
    for dev in ("pytest", "moto", "mypy", "ruff", "hypothesis", "kubernetes-validate"):
        assert dev not in installed, dev


def test_nothing_in_the_image_is_writable_by_its_user(image: Image) -> None:
    """No file is writable by uid or gid 65532 or by everyone (the sticky /tmp aside), so the
    controller cannot change its image even on a runtime without a read-only root."""
    writable = []
    for directory, subdirectories, files in os.walk(image.root):
        for name in [*subdirectories, *files]:
            path = Path(directory) / name
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode) or stat.S_ISCHR(info.st_mode):
                continue  # links; the device nodes of /dev (a runtime mounts its own /dev)
            relative = "/" + str(path.relative_to(image.root))
            mode = info.st_mode
            if (
                (info.st_uid == 65532 and mode & stat.S_IWUSR)
                or (info.st_gid == 65532 and mode & stat.S_IWGRP)
                or (mode & stat.S_IWOTH and not mode & stat.S_ISVTX)
            ):
                writable.append(relative)
    assert writable == []


def test_image_help_runs_as_65532_on_a_read_only_root(image: Image) -> None:
    result = image.run("--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: kube-ecr-cleanup-controller")
    probe = subprocess.run(
        [
            *image.bwrap(),
            "/opt/venv/bin/python",
            "-c",
            "import os, sys, controller.app\n"
            "print(os.getuid(), os.getgid())\n"
            "for path in ('/tmp/x', '/opt/venv/x', '/x'):\n"
            "    try:\n"
            "        open(path, 'w')\n"
            "    except OSError as error:\n"
            "        print(path, error.errno)\n"
            "missing = [m.__spec__.cached for m in list(sys.modules.values())\n"
            "           if getattr(m, '__spec__', None) is not None and m.__spec__.cached\n"
            "           and not os.path.exists(m.__spec__.cached)]\n"
            "print('modules', len(sys.modules), 'without pyc', missing)\n",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr
    lines = probe.stdout.splitlines()
    assert lines[0] == "65532 65532"
    assert lines[1:4] == ["/tmp/x 30", "/opt/venv/x 30", "/x 30"]  # EROFS everywhere
    assert re.fullmatch(r"modules \d+ without pyc \[\]", lines[4]), lines[4]  # compiled at build


def test_image_s_gateway_reads_the_shipped_ecr_model(image: Image) -> None:
    """controller/data (the newer ECR model) is package data: the wheel, and so the image,
    carry it, and the gateway's session reads it there."""
    probe = subprocess.run(
        [
            *image.bwrap(),
            "/opt/venv/bin/python",
            "-c",
            "import asyncio\n"
            "from controller.ecr import ECR_MODEL, new_session\n"
            "async def main():\n"
            "    async with new_session().client('ecr', region_name='us-east-1',\n"
            "            aws_access_key_id='t', aws_secret_access_key='t') as client:\n"
            "        names = set(client.meta.service_model.operation_names)\n"
            "    print(ECR_MODEL, sorted(names & {'UpdateImageStorageClass', 'ListImageReferrers'}))\n"
            "asyncio.run(main())\n",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr
    assert (
        probe.stdout.split(" ", 1)[1].strip() == "['ListImageReferrers', 'UpdateImageStorageClass']"
    )
    assert probe.stdout.startswith("/opt/venv/lib/"), probe.stdout  # installed, not a checkout


def kubeconfig_dir(world: World, tmp_path: Path) -> Path:
    directory = tmp_path / "mnt"
    directory.mkdir()
    write_kubeconfig(directory / "kubeconfig", {"e2e": world.kube}, token="e2e-token")
    return directory


def test_image_once_deletes_and_keeps_every_image_in_use(
    image: Image, world: World, tmp_path: Path
) -> None:
    before = world.state()
    mounted = kubeconfig_dir(world, tmp_path)
    args = [*controller_args("/mnt/kubeconfig", go_style=False), "-dry-run=false"]
    result = image.run(
        *args,
        extra=[
            "--ro-bind", str(mounted), "/mnt",
            *[x for key, value in {**CREDENTIALS, "AWS_ENDPOINT_URL_ECR": world.endpoint}.items()
              for x in ("--setenv", key, value)],
        ],
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "total: " in result.stdout
    after = world.state()
    for repository in ("shop/api", "shop/web", "batch/reports", "docker-hub/library/nginx"):
        assert world.scenario.must_survive(repository) <= after[repository], repository
    assert len(after["shop/api"]) == MAX_IMAGES
    assert len(before["shop/api"]) - len(after["shop/api"]) == 300
    assert after[UNSELECTED] == before[UNSELECTED]


def test_image_service_runs_the_charts_args_and_exits_0_on_sigterm(
    image: Image, world: World, tmp_path: Path
) -> None:
    port = free_port()
    rendered = render(merged(BARE, {"metrics": {"port": port}}))
    args = [
        "--kubeconfig=/mnt/kubeconfig" if a == "--in-cluster=true" else a for a in rendered.args
    ]
    mounted = kubeconfig_dir(world, tmp_path)
    env = {**CREDENTIALS, "AWS_ENDPOINT_URL_ECR": world.endpoint}
    read_fd, write_fd = os.pipe()
    command = image.bwrap(
        "--ro-bind", str(mounted), "/mnt",
        "--info-fd", str(write_fd),
        *[x for key, value in env.items() for x in ("--setenv", key, value)],
        unshare_pid=False,  # so that the entrypoint's pid is ours to signal, as a kubelet does
    )  # fmt: skip
    process = subprocess.Popen(
        [*command, *image.config["Entrypoint"], *args],
        pass_fds=(write_fd,),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(write_fd)
    out: list[str] = []
    err: list[str] = []
    drains = [
        threading.Thread(target=lambda s=s, sink=sink: sink.extend(s), daemon=True)
        for s, sink in ((process.stdout, out), (process.stderr, err))
    ]
    for drain in drains:
        drain.start()

    def wait_for(what: str, predicate: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 90
        while not predicate():
            assert process.poll() is None, f"exited before {what}: {''.join(err)[-3000:]}"
            assert time.monotonic() < deadline, f"no {what} within 90 s: {''.join(err)[-3000:]}"
            time.sleep(0.2)

    try:
        info = b""
        while b"}" not in info:
            chunk = os.read(read_fd, 4096)
            assert chunk, "bwrap closed --info-fd without a child pid"
            info += chunk
        child = int(json.loads(info[: info.index(b"}") + 1])["child-pid"])
        wait_for("ready /readyz", lambda: ready(port) == 200)
        wait_for("a held Lease", lambda: bool(lease_holder(world)))
        wait_for("a cycle report", lambda: any(line.startswith("total: ") for line in out))
        os.kill(child, signal.SIGTERM)  # to the entrypoint, as the kubelet's runtime does
        code = process.wait(timeout=30)
        for drain in drains:
            drain.join(timeout=10)
    finally:
        os.close(read_fd)
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
    assert code == 0, "".join(err)[-3000:]
    assert "received SIGTERM" in "".join(err)
    assert lease_holder(world) == ""  # released on the way out


def lease_holder(world: World) -> str | None:
    lease = world.kube.get("leases", NAMESPACE, "kube-ecr-cleanup-controller")
    return None if lease is None else str(lease["spec"].get("holderIdentity") or "")


def ready(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        error.close()
        return int(error.code)
    except OSError:
        return 0
