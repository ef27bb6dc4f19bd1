"""`pravah run` in-process (run_embedded): how it starts, and what it asks of the engine.

The command spawns its engine child before importing the job store, so the
engine's start-up overlaps the control plane's; these tests check that this
changes nothing a person can see: the capabilities are asked once and serve
both the validation and the runner, a bad request is reported before an
engine that cannot start, and a job needs no more from the engine than before.
A task whose work ignores file sizes (csv-header) is listed without them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pravah.cli.options import build_job_request
from pravah.cli.render import JobProgress
from pravah.cli.run import result_lines, run_embedded
from pravah.db import Database
from pravah.engine_client import EngineClient
from pravah.errors import EngineBinaryNotFoundError
from pravah.jobs import list_jobs
from pravah.settings import Settings
from pydantic import ValidationError


def _tree(root: Path, n: int) -> Path:
    root.mkdir(parents=True)
    for i in range(n):
        (root / f"f{i:03d}.csv").write_text(f"a{i % 2},b\n1,2\n")
    return root


async def _run(
    settings: Settings, source: Path, task: str = "csv-header", **request: Any
) -> dict[str, Any]:
    outcome = await run_embedded(
        build_job_request(source=str(source), task=task, **request),
        settings,
        engine_url=None,
        progress=JobProgress(enabled=False),
        output=None,
        want_errors=False,
    )
    return outcome.job


async def test_pravah_run_asks_its_engine_for_capabilities_once(
    sqlite_settings: Settings, engine_bin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = sqlite_settings.model_copy(update={"engine_bin": engine_bin, "chunk_files": 5})
    source = _tree(tmp_path / "src", 12)
    asked: list[str] = []
    original = EngineClient.capabilities

    async def counting(self: EngineClient, *args: Any, **kwargs: Any) -> Any:
        asked.append(self.url)
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(EngineClient, "capabilities", counting)
    job = await _run(settings, source)
    assert job["status"] == "completed", job["error"]
    assert job["progress"]["files_done"] == 12
    assert job["summary"]["listing"]["chunks"] == 3  # several chunks, one window
    assert len(asked) == 1


async def test_results_that_cannot_be_written_after_the_job_say_where_they_stay(
    sqlite_settings: Settings, engine_bin: Path, tmp_path: Path
) -> None:
    """The command checks --output first; should the write still fail (the
    disk filled up meanwhile), the completed job says so and where its
    results are, instead of ending in a traceback."""
    settings = sqlite_settings.model_copy(update={"engine_bin": engine_bin})
    source = _tree(tmp_path / "src", 3)
    outcome = await run_embedded(
        build_job_request(source=str(source), task="csv-header"),
        settings,
        engine_url=None,
        progress=JobProgress(enabled=False),
        output=Path("/proc/pravah-results.jsonl"),  # no file can be created there
        want_errors=False,
    )
    assert outcome.job["status"] == "completed"
    assert outcome.lines_written is None
    assert outcome.output_error is not None
    assert "could not be written to '/proc/pravah-results.jsonl'" in outcome.output_error
    workspace = outcome.output_error.rsplit("stay in ", 1)[1].strip("'")
    assert len(list(result_lines(Path(workspace)))) == 3  # nothing lost


async def test_a_bad_request_is_reported_before_an_engine_that_cannot_start(
    sqlite_settings: Settings, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-engine"
    settings = sqlite_settings.model_copy(update={"engine_bin": missing})
    source = _tree(tmp_path / "src", 1)
    with pytest.raises(ValidationError):
        await _run(settings, source, max_error_ratio=7.0)
    with pytest.raises(EngineBinaryNotFoundError, match="no-such-engine"):
        await _run(settings, source)
    db = Database(settings)
    try:
        async with db.session() as session:
            _, total = await list_jobs(session)
    finally:
        await db.dispose()
    assert total == 0  # nothing was stored


async def test_a_size_independent_task_counts_files_and_a_sized_one_bytes(
    sqlite_settings: Settings, engine_bin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = sqlite_settings.model_copy(update={"engine_bin": engine_bin, "chunk_files": 5})
    source = _tree(tmp_path / "src", 12)
    (source / "big.csv").write_text("x,y\n" + "1,2\n" * 5000)
    size = sum(p.stat().st_size for p in source.iterdir())
    asked: list[bool] = []
    original = EngineClient.list_to_chunks

    async def spying(self: EngineClient, *args: Any, **kwargs: Any) -> Any:
        asked.append(kwargs.get("sizes", True))
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(EngineClient, "list_to_chunks", spying)

    # csv-header reads one record per file: listed without sizes (no stat per
    # file), progress by files; the bytes of the files processed still count.
    job = await _run(settings, source)
    assert job["status"] == "completed", job["error"]
    progress = job["progress"]
    assert (progress["files_total"], progress["bytes_total"]) == (13, None)
    assert progress["percent"] == 100.0
    assert progress["bytes_done"] == size
    assert job["summary"]["listing"]["bytes"] is None
    assert job["summary"]["distinct_schemas"] == 3

    # A size filter still works: the engine stats the files the filter needs.
    job = await _run(settings, source, min_size="1KB")
    assert job["status"] == "completed", job["error"]
    assert job["progress"]["files_done"] == 1

    # hash reads files whole: listed with sizes, progress by bytes.
    job = await _run(settings, source, task="hash")
    assert job["status"] == "completed", job["error"]
    assert job["progress"]["bytes_total"] == size
    assert asked == [False, False, True]
