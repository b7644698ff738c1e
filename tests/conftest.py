"""Shared pytest fixtures: the anyio backend (asyncio only: kubernetes_asyncio and aiobotocore need it)."""

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
