"""Generates the Python gRPC stubs from proto/ into control_plane/.

Why a script: the stubs are build output (never committed, never edited), and
grpcio-tools bundles protoc, so a fresh machine needs nothing else. The output
lands in the package `pravah.engine.v1`, matching the proto package, so the
generated imports resolve without path tricks.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
OUT_DIR = ROOT / "control_plane"


def main() -> int:
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    well_known = str(resources.files("grpc_tools") / "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"-I{well_known}",
        f"--python_out={OUT_DIR}",
        f"--pyi_out={OUT_DIR}",
        f"--grpc_python_out={OUT_DIR}",
        *protos,
    ]
    code = protoc.main(args)
    if code != 0:
        print(f"protoc failed with exit code {code}", file=sys.stderr)
        return int(code)
    # Regular packages (not namespace ones) so mypy and setuptools see them.
    for proto in protos:
        pkg = OUT_DIR / Path(proto).parent
        while pkg != OUT_DIR / "pravah":
            (pkg / "__init__.py").touch()
            pkg = pkg.parent
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
