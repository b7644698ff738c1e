# syntax=docker/dockerfile:1
# The kube-ecr-cleanup-controller image: the locked dependencies (uv.lock, no dev group) and the
# package in a virtual environment, on a slim Python base, run as uid 65532 on a read-only root.
#
#   docker build -t kube-ecr-cleanup-controller .
#
# BASE_IMAGE is any Debian-like image with python3 (3.11+) and its venv module: the same base
# builds the environment and runs it, so the venv's interpreter path exists in both stages.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
# uv, pinned as in scripts/bootstrap
ARG UV_VERSION=0.13.9
# Optional: a CA bundle for reaching the package index through a TLS-intercepting proxy, e.g.
# `-v /etc/ssl/certs/ca-certificates.crt:/etc/host-ca.crt:ro --build-arg PIP_CERT=/etc/host-ca.crt
# --build-arg SSL_CERT_FILE=/etc/host-ca.crt`. Empty (the default): the image's own CA bundle.
ARG PIP_CERT=""
ARG SSL_CERT_FILE=""
ENV UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON_PREFERENCE=only-system \
    UV_NO_CACHE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# An empty build argument must not reach the installers as an empty setting.
RUN set -eu; \
    [ -n "$PIP_CERT" ] || unset PIP_CERT; \
    python3 -m venv /opt/uv; \
    /opt/uv/bin/pip install "uv==${UV_VERSION}"
# The dependencies first (a layer that survives code changes), then the package, not editable.
COPY pyproject.toml uv.lock README.md ./
RUN set -eu; \
    if [ -n "$SSL_CERT_FILE" ]; then export UV_NATIVE_TLS=1; else unset SSL_CERT_FILE; fi; \
    /opt/uv/bin/uv sync --frozen --no-dev --no-install-project
COPY controller ./controller
RUN set -eu; \
    if [ -n "$SSL_CERT_FILE" ]; then export UV_NATIVE_TLS=1; else unset SSL_CERT_FILE; fi; \
    /opt/uv/bin/uv sync --frozen --no-dev --no-editable; \
    rm -f /opt/venv/.lock; \
    /opt/venv/bin/python -c "import controller.app"

FROM ${BASE_IMAGE}
ARG BASE_IMAGE
# the package version (tests/test_image.py keeps it equal to pyproject.toml's)
ARG VERSION=0.1.0
ARG REVISION=""
LABEL org.opencontainers.image.title="kube-ecr-cleanup-controller" \
      org.opencontainers.image.description="Prunes Amazon ECR repositories without ever deleting an image a Kubernetes cluster uses" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"
# Nothing is written at run time: no .pyc (compiled here, at build time, for a fast start), no
# HOME (uid 65532 has none), no temporary files (the chart mounts /tmp only for a kubeconfig's
# inline certificates).
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/nonexistent
# The interpreter's standard library compiled too (some bases ship it without .pyc); files that
# are not valid Python 3 on purpose (lib2to3 and test fixtures) are skipped.
RUN set -eu; \
    python3 -m compileall -q -j 0 -x '/(test|tests|lib2to3|idlelib)/' \
      "$(python3 -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')"; \
    echo 'nonroot:x:65532:65532:kube-ecr-cleanup-controller:/nonexistent:/usr/sbin/nologin' >> /etc/passwd; \
    echo 'nonroot:x:65532:' >> /etc/group
COPY --from=build /opt/venv /opt/venv
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/opt/venv/bin/kube-ecr-cleanup-controller"]
CMD ["--help"]
