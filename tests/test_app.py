"""The composition root's small decisions: start-up checks that need the connected world."""

from __future__ import annotations

import logging

import pytest

from controller.app import _config_error, check_clusters, open_registry
from controller.clusters import Cluster
from controller.settings import ConfigError, RepositorySelection, Settings


def settings(**fields: object) -> Settings:
    return Settings(repositories=RepositorySelection(("app",)), **fields)  # type: ignore[arg-type]


def test_a_region_the_sdk_does_not_know_yet_is_a_warning_not_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="controller.app"):
        open_registry(settings(region="ap-nowhere-9"))
        open_registry(settings(region="eu-west-1"))
    (record,) = caplog.records
    assert record.getMessage().startswith(
        "region ap-nowhere-9 is not known to the installed botocore; using it anyway"
    )


def test_allowed_empty_clusters_must_be_watched_ones() -> None:
    clusters = [Cluster("prod", object()), Cluster("staging", object())]
    check_clusters(settings(allow_empty_clusters=("staging",)), clusters)
    with pytest.raises(ConfigError) as caught:
        check_clusters(settings(allow_empty_clusters=("stagin",)), clusters)
    assert str(caught.value) == (
        "--allow-empty-clusters: stagin is not a watched cluster (watched: prod, staging)"
    )


def test_a_config_error_is_found_inside_task_group_exception_groups() -> None:
    error = ConfigError("--kube-context", "no context 'x'")
    nested = BaseExceptionGroup("outer", [ExceptionGroup("inner", [error])])
    assert _config_error(nested) is error
    assert _config_error(ExceptionGroup("other", [ValueError("no")])) is None
