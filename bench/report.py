"""Where every benchmark leaves its numbers: `bench/out/<name>.json`.

Why one function: each bench prints its table for a person and saves the
same rows for tools (and for comparing runs), always in the same place.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "out"


def save_rows(name: str, rows: Sequence[Any]) -> Path:
    """Write dataclass `rows` as a JSON list to bench/out/`name`.json and say where."""
    target = OUT / f"{name}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps([asdict(r) for r in rows], indent=2))
    print(f"results written to {target}")
    return target
