"""Creates the demo folder `make demo` runs a csv-header job on.

Why: the README's first command must show Pravah working on a fresh machine
with no data of the user's; a couple of thousand CSVs with a few schemas, one
empty file and one binary file show both the summary and per-file errors.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.generate import make_csv_tree


def main() -> int:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else ".pravah/demo-csvs")
    make_csv_tree(root, files=2000, per_dir=250)
    (root / "broken").mkdir(exist_ok=True)
    (root / "broken" / "empty.csv").write_bytes(b"")
    (root / "broken" / "image.csv").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    print(f"sample folder ready: {root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
