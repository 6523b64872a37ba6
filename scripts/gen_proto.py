"""Regenerate hashserve/v1/*_pb2*.py from proto/ (one command: `python scripts/gen_proto.py`).

Imports are made package-relative so the generated modules work wherever the package is installed.
`--check` regenerates into a temporary folder and fails if the committed files differ.
"""

from __future__ import annotations

import argparse
import filecmp
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTO_DIR = ROOT / "proto"
OUT_PACKAGE = "hashserve/v1"


def generate(out_root: Path) -> list[Path]:
    from grpc_tools import protoc  # dev dependency: grpcio-tools

    sources = (PROTO_DIR / OUT_PACKAGE).glob("*.proto")
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in sources)
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    generated = sorted((out_root / OUT_PACKAGE).glob("*_pb2*.py*"))
    for path in generated:
        text = path.read_text()
        text = re.sub(r"^from hashserve\.v1 import", "from . import", text, flags=re.M)
        path.write_text(text)
    return generated


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the committed code is stale")
    args = parser.parse_args()
    if not args.check:
        for path in generate(ROOT):
            print(path.relative_to(ROOT))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        stale = [
            p.name for p in fresh
            if not (ROOT / OUT_PACKAGE / p.name).exists()
            or not filecmp.cmp(p, ROOT / OUT_PACKAGE / p.name, shallow=False)
        ]
        if stale:
            print("stale generated code: " + ", ".join(stale) + "; run python scripts/gen_proto.py")
            return 1
    print("generated code is current")
    return 0


if __name__ == "__main__":
    sys.exit(main())
