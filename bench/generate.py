"""Deterministic benchmark and demo trees.

Why deterministic: a ratio against find or head only means something when
every run, on every machine, walks the same tree. Everything here derives
from a seed, and a finished tree leaves a marker so reruns skip generation.
"""

from __future__ import annotations

import random
from pathlib import Path

# A handful of realistic schemas so the csv-header summary has something to
# group; weights make a few schemas dominant, as in real data lakes.
SCHEMAS: list[tuple[list[str], str, int]] = [
    (["id", "name", "email", "created_at"], ",", 50),
    (["order_id", "customer_id", "amount", "currency", "ts"], ",", 25),
    (["sensor", "time", "value"], ";", 10),
    (["date", "open", "high", "low", "close", "volume"], "\t", 8),
    (["sku", "description, long", "price"], ",", 5),
    (["a", "b", "c"], "|", 2),
]


def _quote(field: str, delimiter: str) -> str:
    if delimiter in field or '"' in field or "\n" in field:
        return '"' + field.replace('"', '""') + '"'
    return field


def csv_body(rng: random.Random) -> bytes:
    """One small CSV file: a header from SCHEMAS and a few data rows."""
    columns, delimiter, _ = rng.choices(SCHEMAS, weights=[s[2] for s in SCHEMAS])[0]
    header = delimiter.join(_quote(c, delimiter) for c in columns)
    rows = [
        delimiter.join(str(rng.randint(0, 10**6)) for _ in columns)
        for _ in range(rng.randint(1, 20))
    ]
    return ("\n".join([header, *rows]) + "\n").encode()


def _done(root: Path, marker: str) -> bool:
    return (root / marker).exists()


def make_csv_tree(root: Path, files: int, seed: int = 7, per_dir: int = 500) -> Path:
    """`files` small CSVs spread over directories of `per_dir` files each."""
    marker = f".pravah-bench-csv-{files}-{seed}"
    if _done(root, marker):
        return root
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        d = root / f"part={i // per_dir:05d}"
        if i % per_dir == 0:
            d.mkdir(exist_ok=True)
        (d / f"data-{i:07d}.csv").write_bytes(csv_body(rng))
    (root / marker).touch()
    return root


def make_file_tree(root: Path, files: int, seed: int = 11, fanout: int = 20) -> Path:
    """`files` empty-ish files in a three-level tree, like a source checkout."""
    marker = f".pravah-bench-tree-{files}-{seed}"
    if _done(root, marker):
        return root
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    exts = ["rs", "py", "txt", "json", "log", "md", "csv", "png"]
    per_leaf = max(1, files // (fanout * fanout))
    made = 0
    for a in range(fanout):
        for b in range(fanout):
            leaf = root / f"d{a:02d}" / f"e{b:02d}"
            leaf.mkdir(parents=True, exist_ok=True)
            count = per_leaf if (a, b) != (fanout - 1, fanout - 1) else files - made
            for i in range(count):
                (leaf / f"f{i:06d}.{rng.choice(exts)}").touch()
            made += count
    (root / marker).touch()
    return root
