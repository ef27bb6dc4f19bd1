"""Pravah's benchmark: the engine next to the tools users compare it with.

Why it looks like this: a number means something only beside its anchor, run
on the same tree, in the same run, with a warm cache. Each case runs the
anchor (find, fd, the head pipeline) and Pravah alternately, keeps the best of
N wall times, and reads each command's peak RSS through GNU time, which
covers every process of a pipeline. Nothing here asserts a time: it reports.

    make bench                       # 200k-file tree, 100k CSVs
    make bench BENCH_ARGS=--large    # 1M-file tree
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.generate import make_csv_tree, make_file_tree  # noqa: E402
from bench.report import save_rows  # noqa: E402

GNU_TIME = "/usr/bin/time"


@dataclass
class Measurement:
    case: str
    tool: str
    files: int
    seconds: float
    files_per_s: float
    peak_rss_mib: float
    ratio_vs_anchor: float | None = None


# The least CPU time (user + sys of the command and the children it waited
# for, as GNU time reports it) seen per command: on a shared machine the wall
# time of a run depends on its neighbours, its CPU time much less.
CPU_SECONDS: dict[str, float] = {}
# What `pravah run` cannot do without: its job store, validation, gRPC and CLI libraries.
STACK_IMPORTS = "import pydantic, sqlalchemy.ext.asyncio, sqlmodel, grpc, typer, rich.progress"
# Ended as `pravah` ends (pravah.cli.main): os._exit, no interpreter teardown.
IMPORTS_CMD = [sys.executable, "-c", f"{STACK_IMPORTS}; import os; os._exit(0)"]


def timed(cmd: list[str] | str, *, env: dict[str, str] | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB, the largest process of the tree) of one run.

    GNU time reports the peak: rusage read from Python itself would count the
    interpreter's own pages, which a forked child carries until it execs.
    Its CPU time goes to CPU_SECONDS.
    """
    with tempfile.NamedTemporaryFile(prefix="pravah-rss-") as rss:
        inner = ["/bin/bash", "-c", cmd] if isinstance(cmd, str) else cmd
        resident_before = resident_children_cpu()
        start = time.perf_counter()
        proc = subprocess.run(
            [GNU_TIME, "-f", "%M %U %S", "-o", rss.name, *inner],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            check=False,
        )
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            err = proc.stderr.decode(errors="replace")
            raise RuntimeError(f"{cmd!r} exited {proc.returncode}: {err[-2000:]}")
        peak, user, system = Path(rss.name).read_text().split()[-3:]
    # A warm-started command runs in a child of the resident, not of GNU time.
    served = resident_children_cpu() - resident_before
    key = repr(cmd)
    cpu = float(user) + float(system) + served
    CPU_SECONDS[key] = min(CPU_SECONDS.get(key, float("inf")), cpu)
    return elapsed, int(peak) / 1024


def resident_children_cpu() -> float:
    """CPU seconds of the commands warm-start residents have run and reaped so far.

    A resident (pravah.cli.resident) waits for each command it forks, so the
    command's CPU, and its engine's, lands in the resident's cutime and cstime.
    """
    total = 0
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if b"pravah.cli.resident" not in (proc / "cmdline").read_bytes():
                continue
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[13]) + int(fields[14])  # cutime, cstime (stat fields 16, 17)
    return total / os.sysconf("SC_CLK_TCK")


def best_of_each(
    cmds: list[list[str] | str],
    runs: int,
    env: dict[str, str] | None = None,
    setup: Callable[[int], None] | None = None,
) -> list[tuple[float, float]]:
    """Best wall time and peak RSS of each command over `runs` rounds, after
    one warm-up round.

    The commands alternate: each round runs every command once, in reverse
    order every other round (A B, B A, ...). On a shared machine the
    background drifts over a minute (other jobs, and on ext4 without a
    journal the cost of creating files after a removal fades over minutes),
    so all of one tool's runs then all of the other's would hand the drift
    to whichever ran second.

    `setup(i)`, when given, runs before every run of command `i` (warm-up
    included), outside the timed region: it puts the file system in the same
    state for each run (for instance, no outputs left by the previous run).
    """
    results: list[list[tuple[float, float]]] = [[] for _ in cmds]
    for round_ in range(runs + 1):
        order = list(range(len(cmds)))
        if round_ % 2:
            order.reverse()
        for i in order:
            if setup is not None:
                setup(i)
            r = timed(cmds[i], env=env)
            if round_ > 0:  # the first round warms the page cache and dentry cache
                results[i].append(r)
    return [(min(r[0] for r in rs), max(r[1] for r in rs)) for rs in results]


def best_of(
    cmd: list[str] | str, runs: int, env: dict[str, str] | None = None
) -> tuple[float, float]:
    """`best_of_each` for one command."""
    return best_of_each([cmd], runs, env)[0]


def count_files(root: Path, pattern: str = "*") -> int:
    out = subprocess.run(
        ["find", str(root), "-type", "f", "-name", pattern, "-not", "-name", ".pravah-bench*"],
        capture_output=True,
        check=True,
    ).stdout
    return out.count(b"\n")


def engine_bin() -> str:
    path = os.environ.get("PRAVAH_ENGINE_BIN") or str(ROOT / "target/release/pravah-engine")
    if not Path(path).exists():
        sys.exit(f"engine binary not found at {path}; run `make engine-release`")
    return path


def fd_bin() -> str | None:
    return shutil.which("fd") or shutil.which("fdfind")


def case(
    name: str,
    files: int,
    runs: int,
    anchor: tuple[str, list[str] | str],
    others: list[tuple[str, list[str] | str]],
    env: dict[str, str] | None = None,
) -> list[Measurement]:
    rows: list[Measurement] = []
    anchor_rate = 0.0
    entries = [anchor, *others]
    timings = best_of_each([cmd for _, cmd in entries], runs, env)
    for i, ((tool, _), (secs, rss)) in enumerate(zip(entries, timings, strict=True)):
        rate = files / secs if secs > 0 else float("inf")
        if i == 0:
            anchor_rate = rate
        rows.append(
            Measurement(
                name,
                tool,
                files,
                round(secs, 4),
                round(rate),
                round(rss, 1),
                None if i == 0 else round(rate / anchor_rate, 2),
            )
        )
    return rows


def print_table(rows: list[Measurement]) -> None:
    cols = ("case", "tool", "files", "seconds", "files/s", "ratio", "peak MiB")
    header = "{:<12} {:<28} {:>9} {:>9} {:>11} {:>7} {:>9}".format(*cols)
    print(header)
    print("-" * len(header))
    for r in rows:
        ratio = "anchor" if r.ratio_vs_anchor is None else f"{r.ratio_vs_anchor:.2f}x"
        print(
            f"{r.case:<12} {r.tool:<28} {r.files:>9} {r.seconds:>9.3f} "
            f"{r.files_per_s:>11,} {ratio:>7} {r.peak_rss_mib:>9.1f}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--large", action="store_true", help="walk 1,000,000 files instead of 200,000"
    )
    parser.add_argument("--csv-files", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("PRAVAH_BENCH_DIR", ROOT / "bench/out/data")),
    )
    args = parser.parse_args()

    tree_files = 1_000_000 if args.large else 200_000
    tree = make_file_tree(args.data / f"tree-{tree_files}", tree_files)
    csvs = make_csv_tree(args.data / f"csv-{args.csv_files}", args.csv_files)
    engine = engine_bin()
    rows: list[Measurement] = []

    # Scan: names only, as find and fd print them.
    n = count_files(tree)
    others: list[tuple[str, list[str] | str]] = [
        ("pravah-engine list", [engine, "list", str(tree)])
    ]
    if fd := fd_bin():
        others.insert(0, ("fd -u", [fd, "-u", "-t", "f", ".", str(tree)]))
    rows += case("scan", n, args.runs, ("find -type f", ["find", str(tree), "-type", "f"]), others)

    # csv-header: the first line of every CSV.
    n = count_files(csvs, "*.csv")
    with tempfile.TemporaryDirectory(prefix="pravah-bench-") as tmp:
        results = Path(tmp) / "results"
        state = Path(tmp) / "state"
        env = {**os.environ, "PRAVAH_ENGINE_BIN": engine, "PRAVAH_STATE_DIR": str(state)}
        env.pop("DATABASE_URL", None)
        # As installed for a user: modules load from cached bytecode (the
        # warm-up run writes it), not compiled from source on every start.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        pravah = str(Path(sys.executable).parent / "pravah")
        csv_cases: list[tuple[str, list[str] | str]] = [
            (
                "pravah-engine process",
                [
                    engine,
                    "process",
                    str(csvs),
                    "--task",
                    "csv-header",
                    "--results-dir",
                    str(results),
                ],
            ),
            (
                "pravah run (end to end)",
                [pravah, "run", str(csvs), "--task", "csv-header", "--quiet", "--json"],
            ),
            (
                "pravah run (cold start)",
                [
                    "env",
                    "PRAVAH_WARM_START=off",
                    pravah,
                    "run",
                    str(csvs),
                    "--task",
                    "csv-header",
                    "--quiet",
                    "--json",
                ],
            ),
        ]
        rows += case(
            "csv-header",
            n,
            args.runs,
            ("find | xargs head -qn1", f"find {csvs} -name '*.csv' -print0 | xargs -0 head -qn1"),
            csv_cases,
            env=env,
        )
        # What every `pravah run` pays whatever its size (Python start-up,
        # job store, engine child, shutdown): the same command on one file.
        one = Path(tmp) / "one"
        one.mkdir()
        (one / "a.csv").write_text("a,b\n1,2\n")
        one_cmd = [pravah, "run", str(one), "--task", "csv-header", "--quiet", "--json"]
        fixed, _ = best_of(one_cmd, args.runs, env)
        imports, _ = best_of(IMPORTS_CMD, args.runs, env)
        bare_cmd = next(c for t, c in csv_cases if t == "pravah-engine process")
        e2e_cmd = next(c for t, c in csv_cases if t.startswith("pravah run"))
        cpu = {
            k: CPU_SECONDS[repr(c)]
            for k, c in (("bare", bare_cmd), ("e2e", e2e_cmd), ("one", one_cmd))
        }
        cpu["imports"] = CPU_SECONDS[repr(IMPORTS_CMD)]

    print_table(rows)
    bare = next(r for r in rows if r.tool == "pravah-engine process")
    e2e = next(r for r in rows if r.tool.startswith("pravah run"))
    cold = next(r for r in rows if r.tool == "pravah run (cold start)")
    print(
        f"\npravah run / bare engine time: {e2e.seconds / bare.seconds:.2f}x "
        f"(a cold start, with no resident: {cold.seconds / bare.seconds:.2f}x)"
    )
    print(
        "  pravah run runs in a fork of a warm-start resident after its warm-up round; "
        "its peak MiB is the caller's only, the command's own is the cold start's"
    )
    rest = e2e.seconds - fixed
    print(
        f"  of which fixed cost (a 1-file run): {fixed:.3f} s; the remaining "
        f"{rest:.3f} s is {rest / bare.seconds:.2f}x the bare engine"
    )
    print(
        f"  CPU (user+sys with the engine child, least of the runs): pravah run "
        f"{cpu['e2e']:.2f} s, bare engine {cpu['bare']:.2f} s "
        f"({cpu['e2e'] / max(cpu['bare'], 0.01):.2f}x), a 1-file run {cpu['one']:.2f} s"
    )
    # The floor of a cold Python front end on this stack: its libraries'
    # imports take CPU that no ordering hides once both cores run the engine.
    floor = (cpu["imports"] + cpu["bare"]) / 2
    print(
        f"  cold-start floor: importing the stack alone ({STACK_IMPORTS.removeprefix('import ')}) "
        f"takes {imports:.3f} s and {cpu['imports']:.2f} s of CPU; even overlapped with "
        f"the engine on both cores, pravah run needs at least {floor:.3f} s, "
        f"{max(floor, bare.seconds) / bare.seconds:.2f}x the bare engine"
    )
    save_rows("results", rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
