"""Generate controller/data/ecr/: the ECR service model of a newer botocore than aioboto3 pins.

aioboto3 15.5.0 pins botocore 1.40.61, whose ECR model has neither UpdateImageStorageClass
nor ListImageReferrers, nor the ImageDetail fields imageStatus, subjectManifestDigest,
lastArchivedAt and lastActivatedAt (botocore drops fields its model does not name). This
script takes `service-2.json` from a named botocore release's wheel, pinned by sha256, strips
the documentation strings, and writes it with a provenance file. The gateway's own botocore
session reads it before its built-in data (controller.ecr.ECR_MODEL); nothing process-wide.

The file goes away when aioboto3 moves to a botocore whose ECR model has these.

    .cache/tools/bin/python scripts/vendor_ecr_model.py            # download, verify, write
    .cache/tools/bin/python scripts/vendor_ecr_model.py --check    # equal to a fresh generation
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

BOTOCORE_VERSION = "1.44.8"
WHEEL = f"botocore-{BOTOCORE_VERSION}-py3-none-any.whl"
WHEEL_SHA256 = "76342a76c338701db80dcb8afe1c9bd079283d6fffbb9d881442abb02a215043"
API_VERSION = "2015-09-21"
MEMBER = f"botocore/data/ecr/{API_VERSION}/service-2.json.gz"

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "controller" / "data"
MODEL = DATA / "ecr" / API_VERSION / "service-2.json"
PROVENANCE = DATA / "ecr" / "PROVENANCE.json"
DOCUMENTATION_KEYS = frozenset({"documentation", "documentationUrl"})


def strip_documentation(node: Any) -> Any:
    """The model without its documentation strings (about three quarters of its size)."""
    if isinstance(node, dict):
        return {k: strip_documentation(v) for k, v in node.items() if k not in DOCUMENTATION_KEYS}
    if isinstance(node, list):
        return [strip_documentation(v) for v in node]
    return node


def render(model: dict[str, Any]) -> str:
    return json.dumps(strip_documentation(model), indent=1) + "\n"  # botocore's order kept


def provenance(text: str) -> str:
    record = {
        "botocore": BOTOCORE_VERSION,
        "wheel": WHEEL,
        "wheel_sha256": WHEEL_SHA256,
        "member": MEMBER,
        "documentation": "stripped",
        "service-2.json sha256": hashlib.sha256(text.encode()).hexdigest(),
        "generated_by": "scripts/vendor_ecr_model.py",
    }
    return json.dumps(record, indent=2) + "\n"


def download(directory: Path) -> Path:
    requirements = directory / "requirements.txt"
    requirements.write_text(f"botocore=={BOTOCORE_VERSION} --hash=sha256:{WHEEL_SHA256}\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--require-hashes",
            "--only-binary=:all:",
            "-r",
            str(requirements),
            "-d",
            str(directory),
        ],
        check=True,
    )
    wheel = directory / WHEEL
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:  # pip checked it too; this guards a changed script
        raise SystemExit(f"{WHEEL}: sha256 {digest}, expected {WHEEL_SHA256}")
    return wheel


def generate(wheel: Path) -> tuple[str, str]:
    with zipfile.ZipFile(wheel) as archive:
        model = json.loads(gzip.decompress(archive.read(MEMBER)))
    text = render(model)
    return text, provenance(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    parser.add_argument("--wheel", type=Path, help="a downloaded wheel instead of PyPI")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel or download(Path(tmp))
        text, record = generate(wheel)
    if args.check:
        same = MODEL.read_text() == text and PROVENANCE.read_text() == record
        print("up to date" if same else f"{MODEL} differs from botocore {BOTOCORE_VERSION}'s")
        return 0 if same else 1
    MODEL.parent.mkdir(parents=True, exist_ok=True)
    MODEL.write_text(text)
    PROVENANCE.write_text(record)
    print(f"wrote {MODEL.relative_to(ROOT)} ({len(text):,} bytes) from {WHEEL}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
