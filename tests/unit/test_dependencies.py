"""constraints.txt (what CI installs, refreshed by scripts/lock.sh) satisfies pyproject.toml's
ranges, and no pinned or admitted version is below a known-vulnerable release (issue 16)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]

# The first release past the advisories each floor answers (docs/security.md).
SAFE = {
    "starlette": "1.3.1", "h11": "0.16.0", "jinja2": "3.1.6", "python-multipart": "0.0.31",
    "cryptography": "50.0.2", "urllib3": "2.7.0", "requests": "2.32.4", "pygments": "2.20.0",
}

# The last affected release of an advisory each direct dependency's floor must exclude.
VULNERABLE = {
    "starlette": "1.3.0", "fastapi": "0.115.0", "h11": "0.15.0", "jinja2": "3.1.5",
    "python-multipart": "0.0.30",
}


def _pins() -> dict[str, Version]:
    out = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            out[canonicalize_name(name)] = Version(version)
    return out


def _requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in
            [*project["dependencies"], *project["optional-dependencies"]["test"]]]


def test_constraints_satisfy_the_declared_ranges() -> None:
    pins = _pins()
    for req in _requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not pinned: run bash scripts/lock.sh"
        assert pins[name] in req.specifier, (req.name, str(pins[name]), str(req.specifier))


def test_nothing_known_vulnerable_is_pinned_or_admitted() -> None:
    pins = _pins()
    for name, safe in SAFE.items():
        assert pins[name] >= Version(safe), (name, pins[name])
    floors = {canonicalize_name(r.name): r for r in _requirements()}
    for name, vulnerable in VULNERABLE.items():
        assert not floors[name].specifier.contains(vulnerable), (name, vulnerable)
