"""Audit pinned requirements against a local directory of OSV advisories (offline pip-audit stand-in).

Usage: python scripts/osv_audit.py REQUIREMENTS DIR
DIR holds OSV documents (YAML or JSON), such as `vulns/` of a checkout of the PyPA advisory
database (github.com/pypa/advisory-database). A pinned `name==version` is affected when an
advisory for that PyPI package lists the version or an ECOSYSTEM range holds it. Prints one
line per finding; exit status 1 when something is affected, 0 when nothing is.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def pins(requirements: Path) -> dict[str, str]:
    found = {}
    for line in requirements.read_text().splitlines():
        match = PIN.match(line.strip())
        if match:
            found[canonicalize_name(match.group(1))] = match.group(2)
    return found


def in_range(version: Version, events: list[dict[str, str]]) -> bool:
    affected = False
    for event in sorted(events, key=lambda e: _key(next(iter(e.values())))):
        for kind, value in event.items():
            if kind == "introduced":
                affected = value == "0" or version >= Version(value)
            elif (kind == "fixed" and version >= Version(value)) or (
                kind == "last_affected" and version > Version(value)
            ):
                affected = False
    return affected


def _key(value: str) -> Version:
    try:
        return Version("0" if value == "0" else value)
    except InvalidVersion:
        return Version("0")


def affects(advisory: dict[str, Any], name: str, version: str) -> bool:
    for entry in advisory.get("affected") or ():
        package = entry.get("package") or {}
        if package.get("ecosystem") != "PyPI" or canonicalize_name(package.get("name", "")) != name:
            continue
        if version in (str(v) for v in entry.get("versions") or ()):
            return True
        for r in entry.get("ranges") or ():
            if r.get("type") == "ECOSYSTEM" and in_range(Version(version), r.get("events") or []):
                return True
    return False


def main(argv: list[str]) -> int:
    requirements, directory = Path(argv[0]), Path(argv[1])
    pinned = pins(requirements)
    documents = [p for p in directory.rglob("*") if p.suffix in (".yaml", ".yml", ".json")]
    findings = 0
    for path in sorted(documents):
        text = path.read_text()
        advisory = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        if not isinstance(advisory, dict) or advisory.get("withdrawn"):
            continue
        for name, version in pinned.items():
            if affects(advisory, name, version):
                findings += 1
                aliases = ", ".join(advisory.get("aliases") or ())
                print(f"{name}=={version}: {advisory.get('id')} ({aliases}) {path.name}")
    print(f"{len(pinned)} pinned packages, {len(documents)} advisories read, {findings} finding(s)")
    return 1 if findings else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
