"""Tracing overhead on the csv-header benchmark: the engine with and without OTLP.

Runs `pravah-engine process <csv tree> --task csv-header` (release build)
alternately with no OTLP endpoint and with one pointing at an in-process
OTLP receiver (so spans are really exported), best of N each, and prints
files/s and the relative cost. Nothing asserts a time; it reports.

    python bench/otel_overhead.py [--runs 5] [--csv-files 100000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from otlp_receiver import OtlpReceiver  # noqa: E402

from bench.generate import make_csv_tree  # noqa: E402


def run_once(engine: str, csvs: Path, env: dict[str, str]) -> float:
    with tempfile.TemporaryDirectory(prefix="pravah-otel-bench-") as tmp:
        started = time.perf_counter()
        subprocess.run(
            [engine, "process", str(csvs), "--task", "csv-header", "--results-dir", tmp],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--csv-files", type=int, default=100_000)
    parser.add_argument("--engine", default=str(ROOT / "target/release/pravah-engine"))
    parser.add_argument("--data", type=Path, default=ROOT / "bench/out/data")
    args = parser.parse_args()
    csvs = make_csv_tree(args.data / f"csv-{args.csv_files}", args.csv_files)
    base = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    with OtlpReceiver() as receiver:
        variants = {
            "no OTLP endpoint": base,
            "OTLP export on": {**base, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint},
        }
        times: dict[str, list[float]] = {name: [] for name in variants}
        run_once(args.engine, csvs, base)  # warm the page cache
        for _ in range(args.runs):
            for name, env in variants.items():
                times[name].append(run_once(args.engine, csvs, env))
        spans = len(receiver.snapshot())
    best = {name: min(t) for name, t in times.items()}
    for name, t in times.items():
        rate = args.csv_files / best[name]
        runs = ", ".join(f"{x:.3f}" for x in t)
        print(f"{name:18} best {best[name]:.3f} s  {rate:,.0f} files/s  (runs: {runs})")
    off, on = best["no OTLP endpoint"], best["OTLP export on"]
    print(f"overhead of OTLP export: {100 * (on - off) / off:+.1f}% ({spans} spans received)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
