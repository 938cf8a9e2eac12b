#!/usr/bin/env python3
"""Print the requirements of pyproject.toml for some extras, one per line (the Dockerfile installs them).

    python deploy/requirements.py web      -> the core dependencies plus the `web` extra

Dependencies only, so an image's dependency layer is cached until pyproject.toml changes.
"""
from __future__ import annotations

import sys
import tomllib
from pathlib import Path


def requirements(pyproject: Path, extras: list[str]) -> list[str]:
    """The project's core dependencies followed by those of each extra named.

    Raises:
        KeyError: an extra that pyproject.toml does not define.
    """
    project = tomllib.loads(pyproject.read_text())["project"]
    lines = list(project["dependencies"])
    for extra in extras:
        lines += project["optional-dependencies"][extra]
    return lines


if __name__ == "__main__":
    print("\n".join(requirements(Path(__file__).resolve().parent.parent / "pyproject.toml", sys.argv[1:])))
