#!/usr/bin/env python3
"""Run ``mypy --strict`` on the hand-written code.

The packages live in role folders mapped to ``novaops.*`` by setuptools
package-dir, which mypy cannot follow through an editable install. This script
builds a tree of symlinks, build/typecheck/novaops/<pkg> -> <folder>, and points
mypy at it. Generated protobuf modules are type-checked through their .pyi stubs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHIM = ROOT / "build" / "typecheck"
EXTRA_PATHS = ["tests", "bench", "scripts"]


def build_shim() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    mapping: dict[str, str] = config["tool"]["setuptools"]["package-dir"]
    shutil.rmtree(SHIM, ignore_errors=True)
    (SHIM / "novaops").mkdir(parents=True)
    for package, folder in sorted(mapping.items()):
        parts = package.split(".")
        if len(parts) != 2:
            continue  # subpackages come along with their parent's folder
        (SHIM / "novaops" / parts[1]).symlink_to(ROOT / folder, target_is_directory=True)


def main() -> int:
    build_shim()
    env = dict(os.environ, MYPYPATH=str(SHIM))
    targets = [str(SHIM / "novaops")] + [p for p in EXTRA_PATHS if any((ROOT / p).rglob("*.py"))]
    command = [sys.executable, "-m", "mypy", "--strict", *targets, *sys.argv[1:]]
    return subprocess.run(command, cwd=ROOT, env=env, check=False).returncode


if __name__ == "__main__":
    raise SystemExit(main())
