#!/usr/bin/env python3
"""Regenerate the committed protobuf/gRPC code under proto/novaops/v1.

Pinned generator: grpcio-tools==1.85.1 (see pyproject's [dev] extra). Run
`python scripts/gen_protos.py` after editing a .proto; `--check` regenerates
into a temp dir and exits 1 when the committed files differ (used by the tests
and CI).
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PINNED_GRPCIO_TOOLS = "1.85.1"
ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PACKAGE_DIR = PROTO_ROOT / "novaops" / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def _check_pinned_version() -> None:
    from importlib.metadata import version

    found = version("grpcio-tools")
    if found != PINNED_GRPCIO_TOOLS:
        sys.exit(
            f"gen_protos: grpcio-tools {found} installed, {PINNED_GRPCIO_TOOLS} expected "
            f"(pip install grpcio-tools=={PINNED_GRPCIO_TOOLS})"
        )


def generate(out_root: Path) -> list[Path]:
    """Generate code for every .proto into out_root/novaops/v1; return the files."""
    import grpc_tools
    from grpc_tools import protoc

    protos = sorted(p.relative_to(PROTO_ROOT).as_posix() for p in PACKAGE_DIR.glob("*.proto"))
    include = str(Path(grpc_tools.__file__).parent / "_proto")
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *protos,
    ]
    if protoc.main(args) != 0:
        sys.exit("gen_protos: protoc failed")
    out_dir = out_root / "novaops" / "v1"
    generated = sorted(p for p in out_dir.iterdir() if p.name.endswith(GENERATED_SUFFIXES))
    # ruff format keeps the committed files stable and diff-friendly.
    subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--quiet", "--no-cache", *map(str, generated)],
        check=True,
    )
    return generated


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if committed code is stale")
    ns = parser.parse_args()
    _check_pinned_version()
    with tempfile.TemporaryDirectory() as tmp:
        out_root = Path(tmp)
        (out_root / "novaops" / "v1").mkdir(parents=True)
        generated = generate(out_root)
        if ns.check:
            stale = [
                p.name
                for p in generated
                if not (PACKAGE_DIR / p.name).exists()
                or not filecmp.cmp(p, PACKAGE_DIR / p.name, shallow=False)
            ]
            committed = {
                p.name for p in PACKAGE_DIR.iterdir() if p.name.endswith(GENERATED_SUFFIXES)
            }
            extra = sorted(committed - {p.name for p in generated})
            if stale or extra:
                print(
                    f"gen_protos: stale generated code: {', '.join(stale + extra)}; "
                    "run python scripts/gen_protos.py",
                    file=sys.stderr,
                )
                return 1
            print("gen_protos: generated code is up to date")
            return 0
        for p in generated:
            shutil.copyfile(p, PACKAGE_DIR / p.name)
        print(f"gen_protos: wrote {len(generated)} files to {PACKAGE_DIR.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
