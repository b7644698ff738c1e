"""The ECR service model shipped in controller/data: a newer botocore's, read by the gateway only.

aioboto3 pins botocore 1.40.61, whose ECR model predates storage classes and referrers; botocore
drops every answer field its model does not name. These tests prove that the gateway's session
knows the new operations and fields from a real HTTP answer, that nothing else in the process
does, and that the shipped file is the generator's output (`scripts/vendor_ecr_model.py --check`
compares it with the pinned wheel itself, which needs PyPI).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import aioboto3
import botocore.session
import pytest

from controller.ecr import ECR_MODEL, new_session
from sandbox.ecrsim import EcrSimulator

ROOT = Path(__file__).resolve().parent.parent
NEW_OPERATIONS = {"UpdateImageStorageClass", "ListImageReferrers"}
NEW_FIELDS = {"imageStatus", "subjectManifestDigest", "lastArchivedAt", "lastActivatedAt"}


def vendor_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "vendor_ecr_model", ROOT / "scripts" / "vendor_ecr_model.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def keys(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from keys(value)
    elif isinstance(node, list):
        for value in node:
            yield from keys(value)


def test_the_shipped_model_is_the_generator_s_output_with_its_provenance() -> None:
    script = vendor_script()
    text = script.MODEL.read_text()
    model = json.loads(text)
    assert script.MODEL == ECR_MODEL / "ecr" / "2015-09-21" / "service-2.json"
    assert script.render(model) == text  # the generator's canonical form, nothing hand-edited
    record = json.loads(script.PROVENANCE.read_text())
    assert record["botocore"] == script.BOTOCORE_VERSION
    assert record["wheel_sha256"] == script.WHEEL_SHA256
    assert record["service-2.json sha256"] == hashlib.sha256(text.encode()).hexdigest()
    assert script.PROVENANCE.read_text() == script.provenance(text)
    assert not script.DOCUMENTATION_KEYS & set(keys(model))
    assert set(model["operations"]) >= NEW_OPERATIONS
    assert set(model["shapes"]["ImageDetail"]["members"]) >= NEW_FIELDS
    assert model["metadata"]["protocol"] == "json"  # the protocol the installed botocore speaks


def test_the_generator_strips_every_documentation_string() -> None:
    script = vendor_script()
    documented = {
        "documentation": "<p>top</p>",
        "shapes": {"S": {"type": "string", "documentation": "x", "documentationUrl": "y"}},
        "list": [{"documentation": "z", "keep": 1}],
    }
    assert script.strip_documentation(documented) == {
        "shapes": {"S": {"type": "string"}},
        "list": [{"keep": 1}],
    }


async def test_only_the_gateway_s_session_reads_the_shipped_model() -> None:
    async with new_session().client(
        "ecr", region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t"
    ) as ours:
        assert set(ours.meta.service_model.operation_names) >= NEW_OPERATIONS
        assert hasattr(ours, "update_image_storage_class")
        assert hasattr(ours, "list_image_referrers")
    # no process-wide change: a plain session in the same process keeps the installed model
    async with aioboto3.Session().client(
        "ecr", region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t"
    ) as plain:
        assert not NEW_OPERATIONS & set(plain.meta.service_model.operation_names)
    default = botocore.session.Session().get_service_model("ecr")
    assert "ListImageReferrers" not in default.operation_names
    assert "AWS_DATA_PATH" not in os.environ


@pytest.fixture
async def sim() -> AsyncIterator[EcrSimulator]:
    async with EcrSimulator() as simulator:
        simulator.create_repository("app")
        yield simulator


async def _detail(session: Any, sim: EcrSimulator, digest: str) -> dict[str, Any]:
    async with session.client(
        "ecr",
        region_name="us-east-1",
        endpoint_url=sim.endpoint_url,
        aws_access_key_id="t",
        aws_secret_access_key="t",
    ) as client:
        answer = await client.describe_images(
            repositoryName="app", imageIds=[{"imageDigest": digest}]
        )
    (detail,) = answer["imageDetails"]
    assert isinstance(detail, dict)
    return detail


async def test_a_real_answer_s_subject_and_status_are_parsed(sim: EcrSimulator) -> None:
    image = sim.add_image("app", tags=["v1"])
    signature = sim.add_artifact("app", image)

    ours = await _detail(new_session(), sim, signature)
    assert ours["subjectManifestDigest"] == image
    assert ours["imageStatus"] == "ACTIVE"
    # the control: the installed model drops both fields from the very same answer
    plain = await _detail(aioboto3.Session(), sim, signature)
    assert plain["imageDigest"] == signature
    assert not NEW_FIELDS & set(plain)
