"""`pravah run` and `pravah tasks` end to end: CLI subprocess, SQLite state, real engine."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_harness import TREE_RESULTS, Cli, assert_usage_error, job_rows

pytestmark = pytest.mark.e2e


def expected_schemas() -> list[tuple[list[str], int]]:
    """Distinct schemas of the tree, most files first, then by columns."""
    counts: dict[tuple[str, ...], int] = {}
    for outcome in TREE_RESULTS.values():
        if isinstance(outcome, list):
            counts[tuple(outcome)] = counts.get(tuple(outcome), 0) + 1
    return [(list(c), n) for c, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def test_run_json_reports_exact_schemas_and_counts(cli: Cli, csv_dir: Path) -> None:
    result = cli.run("run", str(csv_dir), "--task", "csv-header", "--json")
    assert result.returncode == 0, result.stderr
    job = json.loads(result.stdout)  # exactly one JSON document on stdout
    assert job["status"] == "completed"
    assert job["task"] == "csv-header"
    assert job["source"] == str(csv_dir.resolve())
    progress = job["progress"]
    assert progress["files_total"] == len(TREE_RESULTS)  # .hidden/ is skipped by default
    assert progress["files_done"] == len(TREE_RESULTS)  # failed ones included
    assert progress["files_failed"] == 2
    schemas = job["summary"]["schemas"]
    assert [(s["columns"], s["files"]) for s in schemas] == expected_schemas()
    by_columns = {tuple(s["columns"]): s["example"] for s in schemas}
    assert by_columns[("id", "name", "email")] in {"people.csv", "nested/more.csv"}
    assert by_columns[("last, first", "age", 'say "hi"')] == "quoted.csv"
    assert by_columns[("sku", "price", "qty")] == "semi.csv"
    assert by_columns[("a", "b")] == "tabs.tsv"


def test_a_source_named_in_another_encoding_is_a_usage_error_with_a_way_round(
    cli: Cli, tmp_path: Path
) -> None:
    """A folder named in Latin-1 reached pydantic as lone surrogates: 'source:
    Input should be a valid string, unable to parse raw data as a unicode string'."""
    latin1 = os.fsdecode(bytes(tmp_path) + b"/caf\xe9")
    os.mkdir(latin1)
    (Path(latin1) / "menu.csv").write_text("dish,price\n")
    refused = cli.run("run", latin1, "--task", "csv-header")
    assert_usage_error(refused, "SOURCE", "caf\\xe9' is not valid UTF-8", "match such names")
    # The way round it names: the parent folder, and ? for the odd byte.
    found = cli.run("run", str(tmp_path), "--task", "csv-header", "--include", "caf?/*.csv",
                    "--json")  # fmt: skip
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["progress"]["files_done"] == 1


def test_output_dash_pipes_the_results_and_reports_on_stderr(cli: Cli, csv_dir: Path) -> None:
    """`--output -` was a file named '-' in the current folder."""
    result = cli.run("run", str(csv_dir), "--task", "csv-header", "--output", "-")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]  # nothing else on stdout
    assert {line["path"] for line in lines} == set(TREE_RESULTS)
    assert "completed" in result.stderr and "distinct schema" in result.stderr
    assert not (cli.cwd / "-").exists()
    both = cli.run("run", str(csv_dir), "--task", "csv-header", "--output", "-", "--json")
    assert_usage_error(both, "--json and --output - both write to standard output")


def test_a_reader_that_stops_early_is_not_an_error(cli: Cli, large_tree: Path) -> None:
    """`pravah run ... --output - | head -1`: the closed pipe ends the output quietly."""
    process = cli.popen("run", str(large_tree), "--task", "csv-header", "--output", "-")
    assert process.stdout is not None and process.stderr is not None
    first = json.loads(process.stdout.readline())
    assert first["columns"]
    process.stdout.close()
    with process.stderr:
        err = process.stderr.read()
    assert process.wait(timeout=120) == 0, err
    assert "Broken pipe" not in err and "Traceback" not in err
    assert "completed" in err


def test_run_output_has_one_line_per_file_with_columns_or_errors(
    cli: Cli, csv_dir: Path, tmp_path: Path
) -> None:
    output = tmp_path / "out" / "results.jsonl"
    result = cli.run("run", str(csv_dir), "--task", "csv-header", "--output", str(output))
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(lines) == len(TREE_RESULTS)
    by_path = {line["path"]: line for line in lines}
    assert set(by_path) == set(TREE_RESULTS)
    for path, expected in TREE_RESULTS.items():
        line = by_path[path]
        assert line["size"] == (csv_dir / path).stat().st_size
        if isinstance(expected, list):
            assert line["columns"] == expected, path
            assert "error" not in line
        else:
            assert line["error_kind"] == expected, path
            assert line["error"], path
            assert "columns" not in line
    assert "binary" in by_path["blob.csv"]["error"].lower()
    # Atomic write: nothing but the final file is left in its folder.
    assert [p.name for p in output.parent.iterdir()] == ["results.jsonl"]


def test_run_table_names_the_schemas_and_the_failures(cli: Cli, csv_dir: Path) -> None:
    result = cli.run("run", str(csv_dir), "--task", "csv-header")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "4 distinct schemas" in out
    assert "id, name, email" in out
    assert '"last, first", age' in out  # one column's name holds a comma
    assert "sku, price, qty" in out
    assert "completed" in out
    assert "7 files (5 ok, 2 failed)" in out
    assert "empty.csv" in out
    assert "blob.csv" in out
    # Not a terminal: no progress bar control sequences anywhere.
    assert "\x1b[" not in result.stderr + out


def test_brackets_in_columns_names_and_errors_are_printed_as_written(
    cli: Cli, tmp_path: Path
) -> None:
    """Rich would read "[kg]" or "[/]" as markup: dropped, or a crash after the job."""
    data = tmp_path / "brackets"
    data.mkdir()
    (data / "prices [2024].csv").write_text("price [USD],weight [kg],[b],[/]\n1,2,3,4\n")
    (data / "[b]empty.csv").write_text("")
    result = cli.run("run", str(data), "--task", "csv-header")
    assert result.returncode == 0, result.stderr
    assert "price [USD], weight [kg], [b], [/]" in result.stdout
    assert "prices [2024].csv" in result.stdout
    assert "[b]empty.csv: " in result.stdout
    inventory = cli.run("run", str(data), "--task", "inventory")
    assert inventory.returncode == 0, inventory.stderr
    assert "prices [2024].csv" in inventory.stdout and "[b]empty.csv" in inventory.stdout


def test_control_characters_in_names_and_headers_are_shown_escaped(
    cli: Cli, tmp_path: Path
) -> None:
    """A file name or header cell with ESC sequences (colours, an OSC 52
    clipboard write) must not reach the terminal; a newline must not split
    a line. The results file keeps the exact text."""
    data = tmp_path / "hostile"
    data.mkdir()
    (data / "a\x1b[31mRED.csv").write_text("x\x1b]52;c;cHduZWQ=\x07,b,c,d\n1,2,3,4\n")
    (data / "line\nbreak.csv").write_text("")
    output = tmp_path / "results.jsonl"
    result = cli.run("run", str(data), "--task", "csv-header", "--output", str(output))
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout + result.stderr
    assert "x\\x1b]52;c;cHduZWQ=\\x07, b, c, d" in result.stdout
    assert "a\\x1b[31mRED.csv" in result.stdout
    assert "line\\nbreak.csv: " in result.stdout
    lines = {json.loads(line)["path"]: line for line in output.read_text().splitlines()}
    assert set(lines) == {"a\x1b[31mRED.csv", "line\nbreak.csv"}
    missing = cli.run("run", str(data / "gone\x1b[2J"), "--task", "csv-header")
    assert missing.returncode == 2
    assert "gone\\x1b[2J" in missing.stderr and "\x1b" not in missing.stderr


def _paths(cli: Cli, tree: Path, *flags: str) -> set[str]:
    output = cli.cwd / "filtered.jsonl"
    result = cli.run("run", str(tree), "--task", "csv-header", "--quiet", "-o", "trim=true",
                     "--output", str(output), *flags)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return {json.loads(line)["path"] for line in output.read_text().splitlines()}


def test_a_file_source_is_refused_with_a_command_that_picks_only_that_file(
    cli: Cli, tmp_path: Path
) -> None:
    """The hint can be pasted into a shell as it is: quoted for the shell, and
    the name's glob characters escaped, so `[2024]` does not also pick `2.csv`."""
    folder = tmp_path / "it's $HOME"
    folder.mkdir()
    name = "prices [2024] {a,b} *.csv"
    for other in (name, "prices 2 a *.csv", "prices 0 {a,b} x.csv"):
        (folder / other).write_text("a,b\n1,2\n")
    refused = cli.run("run", str(folder / name), "--task", "csv-header")
    assert refused.returncode == 2, refused.stderr
    hint = refused.stderr.split("give its folder and pick it: ")[1].strip()  # one line
    # Split by a real shell, which would expand `$HOME` in double quotes.
    shell = subprocess.run(["sh", "-c", f"printf '%s\\0' {hint}"], capture_output=True, check=True)
    picked = shell.stdout.decode().split("\0")[:-1]
    assert picked[0] == str(folder) and picked[1] == "--include", picked
    assert _paths(cli, Path(picked[0]), *picked[1:]) == {name}


def test_include_exclude_ext_size_and_hidden_filters_select_files(cli: Cli, csv_dir: Path) -> None:
    assert _paths(cli, csv_dir, "--include", "nested/**") == {"nested/more.csv"}
    assert _paths(cli, csv_dir, "--exclude", "nested", "--exclude", "*.tsv") == {
        "people.csv", "semi.csv", "quoted.csv", "empty.csv", "blob.csv"
    }  # fmt: skip
    assert _paths(cli, csv_dir, "--min-size", "1KB") == {"nested/more.csv"}
    assert _paths(cli, csv_dir, "--max-size", "0") == {"empty.csv"}
    assert _paths(cli, csv_dir, "--ext", "tsv") == {"tabs.tsv"}
    assert ".hidden/secret.csv" in _paths(cli, csv_dir, "--hidden")


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["run", "{missing}", "--task", "csv-header"], ["does not exist"]),
        (["run", "{file}", "--task", "csv-header"], ["is a file, not a directory"]),
        (["run", "{tree}", "--task", "nope"], ["unknown task 'nope'", "csv-header"]),
        (["run", "{tree}", "--task", "csv-header", "-o", "bogus=1"], ["unknown option 'bogus'"]),
        (["run", "{tree}", "--task", "csv-header", "--option", "novalue"], ["KEY=VALUE"]),
        (["run", "{tree}", "--task", "csv-header", "-o", "delimiter=x"], ["delimiter"]),
        (["run", "{tree}", "--task", "csv-header", "--min-size", "12XB"], ["--min-size", "12XB"]),
        (
            ["run", "{tree}", "--task", "csv-header", "--min-size", "99999999999999999999999"],
            ["--min-size", "larger than any file can be"],
        ),
        (["run", "{tree}", "--task", "csv-header", "--max-depth", "99999999999"], ["--max-depth"]),
        (["run", "{tree}"], ["--task"]),
        (
            ["run", "{tree}", "--task", "csv-header", "--include", "*.csv", "--include", "[a"],
            ["--include '[a' is not a valid glob: unclosed character class"],
        ),
        (
            ["run", "{tree}", "--task", "csv-header", "--exclude", "logs/[z-a]*"],
            ["--exclude 'logs/[z-a]*' is not a valid glob: invalid range; 'z' > 'a'"],
        ),
        (["run", "{tree}", "--task", "compress", "--dest", "{file}"], ["people.csv' is a file"]),
        (
            ["run", "{tree}", "--task", "csv-header", "--output", "/proc/pravah.jsonl"],
            ["--output '/proc/pravah.jsonl': no file can be created in '/proc'"],
        ),
        (
            ["run", "{tree}", "--task", "csv-header", "--output", "{file}/sub/r.jsonl"],
            ["--output", "people.csv' is a file, not a folder"],
        ),
    ],
    ids=[
        "missing-source",
        "source-is-file",
        "unknown-task",
        "unknown-option",
        "malformed-option",
        "bad-option-value",
        "bad-size",
        "size-past-64-bits",
        "depth-past-32-bits",
        "no-task",
        "unclosed-include-glob",
        "reversed-exclude-range",
        "dest-is-a-file",
        "output-cannot-be-created",
        "output-under-a-file",
    ],
)
def test_bad_input_exits_2_with_a_clear_message(
    cli: Cli, csv_dir: Path, args: list[str], needles: list[str]
) -> None:
    values = {
        "missing": str(csv_dir / "nope"),
        "file": str(csv_dir / "people.csv"),
        "tree": str(csv_dir),
    }
    result = cli.run(*[a.format(**values) for a in args])
    assert_usage_error(result, *needles)


def test_bad_input_stores_no_job(cli: Cli, csv_dir: Path) -> None:
    assert_usage_error(cli.run("run", str(csv_dir), "--task", "nope"), "unknown task")
    # An --output that cannot be written is found before the job, not after it.
    unwritable = cli.run("run", str(csv_dir), "--task", "csv-header", "--output", "/sys/r.jsonl")
    assert_usage_error(unwritable, "--output '/sys/r.jsonl'")
    db = cli.state_dir / "pravah.db"
    if db.exists():
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT count(*) FROM jobs").fetchone() == (0,)


@pytest.mark.parametrize("state", ["/proc/pravah-state", "{file}/state", "/sys/fs"])
def test_an_unusable_state_folder_is_named_with_the_setting_to_change(
    cli: Cli, csv_dir: Path, state: str
) -> None:
    env = {"PRAVAH_STATE_DIR": state.format(file=csv_dir / "people.csv")}
    result = cli.run("run", str(csv_dir), "--task", "csv-header", extra_env=env)
    assert_usage_error(result, "the job store's folder", "PRAVAH_STATE_DIR")


def test_a_job_store_that_cannot_be_reached_is_one_line_not_a_traceback(
    cli: Cli, csv_dir: Path
) -> None:
    env = {"DATABASE_URL": "postgresql://root:s3cret@127.0.0.1:9/test"}  # nothing listens
    result = cli.run("run", str(csv_dir), "--task", "csv-header", extra_env=env)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and "s3cret" not in result.stderr
    assert "the job store at 'postgresql+asyncpg://root:***@127.0.0.1:9/test'" in result.stderr
    wrong = cli.run("run", str(csv_dir), "--task", "csv-header", extra_env={"DATABASE_URL": "x"})
    assert_usage_error(wrong, "DATABASE_URL must name PostgreSQL")
    # The server says the same before it starts listening.
    serve = cli.run("serve", "--port", "0", extra_env=env, timeout=60)
    assert serve.returncode == 1, serve.stderr
    assert "Traceback" not in serve.stderr and "s3cret" not in serve.stderr
    assert "the job store at 'postgresql+asyncpg://root:***@127.0.0.1:9/test'" in serve.stderr


def test_tasks_lists_csv_header_with_its_options(cli: Cli) -> None:
    result = cli.run("tasks")
    assert result.returncode == 0, result.stderr
    assert "csv-header" in result.stdout
    assert "max_header_bytes" in result.stdout
    as_json = cli.run("tasks", "--json")
    assert as_json.returncode == 0, as_json.stderr
    tasks = {t["name"]: t for t in json.loads(as_json.stdout)["tasks"]}
    assert "delimiter" in tasks["csv-header"]["options_schema"]["properties"]


def test_version_prints_the_package_version(cli: Cli) -> None:
    from pravah import __version__

    result = cli.run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"pravah {__version__}"


def _running(cli: Cli, large_tree: Path) -> subprocess.Popen[str]:
    process = cli.popen("run", str(large_tree), "--task", "csv-header", "--json")
    db = cli.state_dir / "pravah.db"
    deadline = time.monotonic() + 60
    while not any(status == "running" for _, status in job_rows(db)):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the job never started running"
        time.sleep(0.02)
    return process


# SIGTERM (kill, timeout, systemd) and SIGHUP (a closed terminal) left the
# engine running and the job 'running' until a server's lease expired.
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_stop_signal_during_run_cancels_the_job_and_exits_130(
    cli: Cli, large_tree: Path, stop: signal.Signals
) -> None:
    process = _running(cli, large_tree)
    db = cli.state_dir / "pravah.db"
    process.send_signal(stop)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, (out, err)
    assert "Traceback" not in err, err
    job = json.loads(out)
    assert job["status"] == "cancelled"
    assert job["progress"]["files_done"] < 30_000
    assert job_rows(db) == [(job["id"], "cancelled")]
    # The engine child went away with the command: no pravah-engine left for this state dir.
    engines = [p for p in Path("/proc").glob("[0-9]*") if _is_engine_of(p, cli)]
    assert engines == []


def test_an_engine_ends_when_its_pravah_run_is_killed(cli: Cli, large_tree: Path) -> None:
    """SIGKILL (or the OOM killer) gives the command no chance to stop its
    engine; the kernel tells the engine instead (PR_SET_PDEATHSIG)."""
    process = _running(cli, large_tree)
    assert [p for p in Path("/proc").glob("[0-9]*") if _is_engine_of(p, cli)] != []
    process.kill()
    process.communicate(timeout=60)
    deadline = time.monotonic() + 30
    while [p for p in Path("/proc").glob("[0-9]*") if _is_engine_of(p, cli)]:
        assert time.monotonic() < deadline, "the engine outlived its killed pravah run"
        time.sleep(0.05)


def test_sigint_inside_big_files_stops_them_and_leaves_no_temporary_file(
    cli: Cli, tmp_path: Path
) -> None:
    """A Ctrl-C while every thread is inside one big file: the engine notices
    the call is gone without waiting for a file to end, stops within a read,
    and removes its temporary outputs before it exits. Before, the work ran
    to each file's end for nobody, and the engine's exit left
    `.f.log.gz.pravah-tmp-*` files in the user's folder."""
    logs = tmp_path / "logs"
    logs.mkdir()
    originals = {}
    for name in ("a.log", "b.log"):
        # 64 MB of base64 text: gzip takes seconds per file in a debug engine.
        data = base64.encodebytes(os.urandom(48 << 20))
        (logs / name).write_bytes(data)
        originals[name] = hashlib.sha256(data).hexdigest()
    process = cli.popen("run", str(logs), "--task", "compress", "-o", "keep_original=false")
    deadline = time.monotonic() + 120
    while not any(".pravah-tmp-" in p.name for p in logs.iterdir()):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no output was ever started"
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, (out, err)
    assert "cancelled" in out, out
    # Only the originals, untouched: no temporary file, no output, nothing removed.
    assert sorted(p.name for p in logs.iterdir()) == ["a.log", "b.log"]
    for name, digest in originals.items():
        assert hashlib.sha256((logs / name).read_bytes()).hexdigest() == digest


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs: a disk that really fills up (needs root, as CI has)."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3M", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_state_disk_fails_the_run_once_with_where_to_free_space(
    cli: Cli, tmp_path: Path, small_disk: Path
) -> None:
    """The job store's disk fills up mid-run: one clear reason and exit 1.
    Before, the same JSON warning was logged twice a second, the job ended
    'pending ... retrying' although no worker was left to retry it, and the
    reason was an 'internal error' with SQLAlchemy's help link, given after
    30 s of retrying writes as if the database had only restarted."""
    source = tmp_path / "headerless"
    source.mkdir()
    row = ",".join(["a value that is not a column name"] * 6)
    for i in range(15_000):  # about 4 MB of results
        (source / f"{i:05}.csv").write_text(f"{i},{row}\n")
    state = small_disk / "state"
    result = cli.run(
        "run", str(source), "--task", "csv-header", extra_env={"PRAVAH_STATE_DIR": str(state)}
    )
    assert result.returncode == 1, (result.stdout, result.stderr)
    text = " ".join((result.stdout + result.stderr).split())
    assert "failed csv-header" in text, text[-2000:]
    assert f"the job store in {str(state)!r} is full" in text, text[-2000:]
    assert "retrying" not in text and "Traceback" not in text
    assert result.stderr.count("could not persist progress") <= 1


def _is_engine_of(proc: Path, cli: Cli) -> bool:
    try:
        cmdline = (proc / "cmdline").read_bytes()
        environ = (proc / "environ").read_bytes()
    except OSError:
        return False
    return b"pravah-engine" in cmdline and str(cli.state_dir).encode() in environ


def test_run_loads_none_of_the_servers_modules(cli: Cli, csv_dir: Path) -> None:
    """Start-up cost: `pravah run` imports no web stack, metrics or HTTP client."""
    script = (
        "import sys\n"
        "from pravah.cli.app import app\n"
        "try:\n"
        f"    app(['run', {str(csv_dir)!r}, '--task', 'csv-header', '--json'])\n"
        "except SystemExit as stop:\n"
        "    assert not stop.code, stop.code\n"
        "heavy = ('fastapi', 'starlette', 'uvicorn', 'prometheus_client', 'httpx', 'jsonschema')\n"
        "print(sorted(m for m in heavy if m in sys.modules), file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=cli.env,
        cwd=cli.cwd,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"] == "completed"
    assert result.stderr.strip().splitlines()[-1] == "[]"


def test_compressed_csvs_give_their_headers_like_plain_ones(cli: Cli, tmp_path: Path) -> None:
    """Data sets often ship as .csv.gz or .csv.zst; they were 'binary file'."""
    import gzip

    src = tmp_path / "shipped"
    src.mkdir()
    rows = "".join(f"{i},{i * 2}\n" for i in range(100_000))
    (src / "2023.csv.gz").write_bytes(gzip.compress(f"id,value\n{rows}".encode()))
    (src / "2024.csv").write_text(f"id,value\n{rows}")
    (src / "broken.csv.gz").write_bytes(gzip.compress(b"id,value\n1,2\n")[:15])
    result = cli.run("run", str(src), "--task", "csv-header", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    [schema] = report["summary"]["schemas"]
    assert schema["columns"] == ["id", "value"] and schema["files"] == 2
    assert report["progress"]["files_failed"] == 1
    errors = cli.run("run", str(src), "--task", "csv-header", "--include", "broken*")
    assert "broken.csv.gz: gzip file:" in " ".join(errors.stdout.split())
