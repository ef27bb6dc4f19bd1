"""The REST flow against a real engine, on SQLite and on PostgreSQL.

The app runs with its lifespan (migrations, worker) inside the test's event
loop and is called through httpx's ASGI transport.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from api_helpers import api_client
from pravah.engine_client import EngineClient
from pravah.settings import Settings

if TYPE_CHECKING:
    from conftest import CsvTree

POLL_TIMEOUT = 60.0


@pytest.fixture
async def api(db_settings: Settings, engine_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The API with a worker, on each backend."""
    settings = db_settings.model_copy(update={"engine_urls": [engine_url]})
    async with api_client(settings) as client:
        yield client


async def wait_for_status(
    client: httpx.AsyncClient,
    job_id: str,
    done: Callable[[dict[str, Any]], bool],
    within: float = POLL_TIMEOUT,
) -> dict[str, Any]:
    """Poll GET /jobs/{id} until `done(job)`; fail with the last state on timeout."""
    deadline = asyncio.get_running_loop().time() + within
    job: dict[str, Any] = {}
    while asyncio.get_running_loop().time() < deadline:
        resp = await client.get(f"/jobs/{job_id}")
        assert resp.status_code == 200, resp.text
        job = resp.json()
        if done(job):
            return job
        await asyncio.sleep(0.05)
    pytest.fail(f"job {job_id} did not reach the wanted state in {within} s; last: {job}")


def finished(job: dict[str, Any]) -> bool:
    return job["status"] in {"completed", "failed", "cancelled"}


async def assert_no_jobs(client: httpx.AsyncClient) -> None:
    resp = await client.get("/jobs")
    assert resp.status_code == 200
    assert resp.json()["total"] == 0, resp.json()


# --------------------------------------------------------------------- flow


async def test_csv_header_job_reports_exact_headers_and_schema_summary(
    api: httpx.AsyncClient, csv_tree: CsvTree
) -> None:
    resp = await api.post("/jobs", json={"source": str(csv_tree.root), "task": "csv-header"})
    assert resp.status_code == 202, resp.text
    created = resp.json()
    assert resp.headers["location"] == f"/jobs/{created['id']}"
    assert created["status"] in {"pending", "running"}

    job = await wait_for_status(api, created["id"], finished)
    assert job["status"] == "completed", job
    n_files = len(csv_tree.expected) + len(csv_tree.failing)
    assert job["progress"]["files_total"] == n_files
    assert job["progress"]["files_done"] == n_files
    assert job["progress"]["files_failed"] == len(csv_tree.failing)
    assert job["progress"]["percent"] == 100.0
    assert job["started_at"] and job["finished_at"]
    assert job["results_available"] is True

    page = (await api.get(f"/jobs/{job['id']}/results", params={"limit": 1000})).json()
    assert page["total"] == n_files
    by_path = {item["path"]: item for item in page["items"]}
    assert set(by_path) == set(csv_tree.expected) | csv_tree.failing
    for path, columns in csv_tree.expected.items():
        assert by_path[path].get("columns") == columns, by_path[path]
    for path in csv_tree.failing:
        assert by_path[path]["error"], by_path[path]
        assert by_path[path]["error_kind"] in {"invalid_data", "limit_exceeded"}
    assert by_path["big_line.csv"]["error_kind"] == "limit_exceeded"
    assert by_path["empty.csv"]["error_kind"] == "invalid_data"
    assert "encoding_errors" in by_path["latin1.csv"]["error"]
    # The non-UTF-8 name is carried exactly.
    raw = base64.b64decode(by_path["nested/r\ufffdsum\ufffd.csv"]["raw_path_b64"])
    assert raw == b"nested/r\xe9sum\xe9.csv"
    assert not any(p.startswith(".hidden") for p in by_path)

    summary = page["summary"]
    assert summary == job["summary"]
    assert summary["files"] == n_files
    assert summary["failed"] == len(csv_tree.failing)
    distinct = {tuple(c) for c in csv_tree.expected.values()}
    assert summary["distinct_schemas"] == len(distinct)
    schema_counts = {tuple(s["columns"]): s["files"] for s in summary["schemas"]}
    assert schema_counts[("a", "b", "c")] == 2  # semicolon.csv and tab.tsv.csv
    assert sum(schema_counts.values()) == len(csv_tree.expected)

    # Pages tile the full result list.
    first = (await api.get(f"/jobs/{job['id']}/results", params={"limit": 5})).json()
    second = (await api.get(f"/jobs/{job['id']}/results", params={"limit": 5, "offset": 5})).json()
    assert [i["path"] for i in first["items"] + second["items"]] == [
        i["path"] for i in page["items"][:10]
    ]

    resp = await api.get(f"/jobs/{job['id']}/results", params={"format": "jsonl"})
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in resp.text.splitlines()]
    assert lines == page["items"]


async def test_filters_and_options_reach_the_engine(
    api: httpx.AsyncClient, csv_tree: CsvTree
) -> None:
    body = {
        "source": str(csv_tree.root),
        "task": "csv-header",
        "options": {"encoding_errors": "replace"},
        "filters": {"include": ["nested/**"], "max_size": "1KB", "include_hidden": False},
    }
    resp = await api.post("/jobs", json=body)
    assert resp.status_code == 202, resp.text
    job = await wait_for_status(api, resp.json()["id"], finished)
    assert job["status"] == "completed", job
    assert job["filters"]["max_size"] == 1000
    page = (await api.get(f"/jobs/{job['id']}/results")).json()
    assert {i["path"] for i in page["items"]} == {
        p for p in csv_tree.expected if p.startswith("nested/")
    }


async def test_hidden_files_are_listed_on_request(
    api: httpx.AsyncClient, csv_tree: CsvTree
) -> None:
    body = {
        "source": str(csv_tree.root),
        "task": "csv-header",
        "filters": {"include_hidden": True, "extensions": ["csv"], "max_depth": 1},
    }
    job_id = (await api.post("/jobs", json=body)).json()["id"]
    job = await wait_for_status(api, job_id, finished)
    assert job["status"] == "completed", job
    items = (await api.get(f"/jobs/{job_id}/results")).json()["items"]
    assert "nested/sales.csv" not in {i["path"] for i in items}  # depth 2
    top = {i["path"] for i in items}
    assert "plain.csv" in top


async def test_list_jobs_filters_by_status_and_pages_newest_first(
    api_no_worker: httpx.AsyncClient, tmp_path: Path
) -> None:
    api = api_no_worker
    ids = []
    for _ in range(5):
        resp = await api.post("/jobs", json={"source": str(tmp_path), "task": "csv-header"})
        assert resp.status_code == 202, resp.text
        ids.append(resp.json()["id"])
    assert (await api.post(f"/jobs/{ids[0]}/cancel")).status_code == 202

    everything = (await api.get("/jobs")).json()
    assert everything["total"] == 5
    assert [j["id"] for j in everything["items"]] == list(reversed(ids))

    pending = (await api.get("/jobs", params={"status": "pending"})).json()
    assert pending["total"] == 4
    assert {j["id"] for j in pending["items"]} == set(ids[1:])
    cancelled = (await api.get("/jobs", params={"status": "cancelled"})).json()
    assert [j["id"] for j in cancelled["items"]] == [ids[0]]
    assert cancelled["items"][0]["finished_at"] is not None

    page = (await api.get("/jobs", params={"limit": 2, "offset": 1})).json()
    assert page["limit"] == 2 and page["offset"] == 1 and page["total"] == 5
    assert [j["id"] for j in page["items"]] == [ids[3], ids[2]]

    bad = await api.get("/jobs", params={"status": "sleeping"})
    assert bad.status_code == 422
    assert "status" in bad.json()["detail"]

    # Past the database's integers: a 500 from SQLite and PostgreSQL alike.
    far = {"offset": str(10**20)}
    for path in ("/jobs", f"/jobs/{ids[1]}/results"):
        beyond = await api.get(path, params=far)
        assert beyond.status_code == 422, (path, beyond.text)
        assert "offset" in beyond.json()["detail"]
    last = (await api.get("/jobs", params={"offset": 2**53})).json()
    assert last["items"] == [] and last["total"] == 5


async def test_results_of_unfinished_job_are_409_and_unknown_ids_404(
    api_no_worker: httpx.AsyncClient, tmp_path: Path
) -> None:
    api = api_no_worker
    job_id = (await api.post("/jobs", json={"source": str(tmp_path), "task": "csv-header"})).json()[
        "id"
    ]
    resp = await api.get(f"/jobs/{job_id}/results")
    assert resp.status_code == 409
    assert "available once it finishes" in resp.json()["detail"]

    for bad_id in ("not-a-uuid", "00000000-0000-0000-0000-000000000000"):
        resp = await api.get(f"/jobs/{bad_id}")
        assert resp.status_code == 404
        assert bad_id in resp.json()["detail"]
        assert (await api.post(f"/jobs/{bad_id}/cancel")).status_code == 404

    assert (await api.post(f"/jobs/{job_id}/cancel")).status_code == 202
    again = await api.post(f"/jobs/{job_id}/cancel")
    assert again.status_code == 409
    assert "already finished" in again.json()["detail"]


async def test_events_stream_progress_until_the_job_ends(
    api: httpx.AsyncClient, csv_tree: CsvTree
) -> None:
    job_id = (
        await api.post("/jobs", json={"source": str(csv_tree.root), "task": "csv-header"})
    ).json()["id"]
    resp = await api.get(f"/jobs/{job_id}/events")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    events = [block.split("\n") for block in resp.text.strip().split("\n\n")]
    assert events[-1] == ["event: end", "data: {}"]
    progress = [json.loads(e[1].removeprefix("data: ")) for e in events[:-1]]
    assert progress[-1]["status"] == "completed"
    assert progress[-1]["id"] == job_id
    assert (await api.get("/jobs/00000000-0000-0000-0000-000000000000/events")).status_code == 404


# --------------------------------------------------------------------- cancel


@pytest.fixture(scope="session")
def big_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 000 small CSV files in 20 folders."""
    root = tmp_path_factory.mktemp("big")
    for d in range(20):
        folder = root / f"d{d:02d}"
        folder.mkdir()
        for i in range(1000):
            (folder / f"f{i:04d}.csv").write_bytes(b"a,b,c\n1,2,3\n")
    return root


async def test_cancel_running_big_job_ends_cancelled(
    api: httpx.AsyncClient, big_tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The engine does 20k files in well under a second, faster than a
    # request can arrive; slowing down how fast the runner consumes the
    # engine's events keeps the job running long enough to cancel it.
    original = EngineClient.process

    async def slow_process(self: EngineClient, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        async for event in original(self, *args, **kwargs):
            await asyncio.sleep(0.1)
            yield event

    monkeypatch.setattr(EngineClient, "process", slow_process)
    resp = await api.post("/jobs", json={"source": str(big_tree), "task": "csv-header"})
    job_id = resp.json()["id"]
    running = await wait_for_status(
        api, job_id, lambda j: j["status"] == "running" and j["progress"]["files_total"]
    )
    assert running["progress"]["files_total"] == 20_000
    resp = await api.post(f"/jobs/{job_id}/cancel")
    assert resp.status_code == 202, resp.text
    assert resp.json()["cancel_requested"] is True
    job = await wait_for_status(api, job_id, finished, within=30)
    assert job["status"] == "cancelled", job
    assert job["error"] == "cancelled by request"
    assert job["progress"]["files_done"] < 20_000


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("make_body", "status", "needle"),
    [
        (lambda d: {"source": str(d), "task": "no-such-task"}, 422, "unknown task 'no-such-task'"),
        (
            lambda d: {"source": str(d), "task": "csv-header", "options": {"colour": 1}},
            422,
            "unknown option 'colour'",
        ),
        (
            lambda d: {"source": str(d), "task": "csv-header", "options": {"max_header_bytes": 0}},
            422,
            "max_header_bytes",
        ),
        (lambda d: {"source": str(d / "missing"), "task": "csv-header"}, 422, "does not exist"),
        (lambda d: {"source": str(d / "f.csv"), "task": "csv-header"}, 422, "not a directory"),
        (
            lambda d: {"source": "../../../../../../etc/passwd", "task": "csv-header"},
            422,
            "is a relative path",
        ),
        (lambda d: {"source": "/../../etc/passwd", "task": "csv-header"}, 422, "not a directory"),
        # Read against the server's own folder or home, not the caller's.
        (lambda d: {"source": "~", "task": "csv-header"}, 422, "source '~' is a relative path"),
        (
            lambda d: {"source": str(d), "task": "compress", "destination": "out"},
            422,
            "destination 'out' is a relative path",
        ),
        (lambda d: {"source": str(d), "task": "csv-header", "extra": 1}, 422, "extra"),
        (
            lambda d: {"source": str(d), "pipeline": [{"task": "extract"}, {"task": "nope"}]},
            422,
            "step 2 (nope): unknown task 'nope'",
        ),
        (
            lambda d: {
                "source": str(d),
                "destination": str(d / "out"),
                "pipeline": [{"task": "extract"}, {"task": "thumbnail", "options": {"w": 1}}],
            },
            422,
            "step 2 (thumbnail): unknown option 'w'",
        ),
        (
            lambda d: {"source": str(d), "pipeline": [{"task": "hash"}, {"task": "compress"}]},
            422,
            "impossible pipeline: step 1 (hash) writes no files",
        ),
        (
            lambda d: {"source": str(d), "pipeline": [{"task": "extract"}, {"task": "thumbnail"}]},
            422,
            "needs a 'destination'",
        ),
        (
            lambda d: {"source": str(d), "task": "hash", "pipeline": [{"task": "hash"}]},
            422,
            "not both",
        ),
        (
            lambda d: {"source": str(d), "task": "csv-header", "filters": {"min_size": "big"}},
            422,
            "invalid size 'big'",
        ),
        (
            lambda d: {"source": str(d), "task": "csv-header", "filters": {"exclude": ["\\"]}},
            422,
            "invalid glob \"\\\": dangling '\\'",
        ),
        (lambda d: {"task": "csv-header"}, 422, "source"),
        # A lone surrogate in free-form options: once stored, every GET /jobs
        # that listed the job was a 500 (its JSON could not be encoded).
        (
            lambda d: {
                "source": str(d),
                "task": "convert",
                "destination": str(d / "out"),
                "options": {"to": "parquet", "types": {"\ud800": "string"}},
            },
            422,
            "options: '\\ud800' is not valid Unicode text",
        ),
        (
            lambda d: {
                "source": str(d),
                "destination": str(d / "out"),
                "pipeline": [{"task": "convert", "options": {"to": ["x\udfff"]}}],
            },
            422,
            "pipeline.0.options: 'x\\udfff' is not valid Unicode text",
        ),
        # Options the engine refuses when the job runs: refused before it is stored.
        (
            lambda d: {"source": str(d), "task": "compress", "options": {"level": 19}},
            422,
            "19 is greater than the maximum of 9",
        ),
        (
            lambda d: {"source": str(d), "task": "compress", "options": {"level": 9.0}},
            422,
            "invalid option 'level' for task 'compress': 9.0 is not an integer; write 9",
        ),
        (
            lambda d: {
                "source": str(d),
                "destination": str(d / "out"),
                "pipeline": [{"task": "decompress", "options": {"max_output_bytes": 10**23}}],
            },
            422,
            "invalid option 'max_output_bytes' for task 'decompress': "
            "100000000000000000000000 is too large",
        ),
        # PostgreSQL's text cannot hold a NUL: this was a 500 there, a job on SQLite.
        (
            lambda d: {
                "source": str(d),
                "task": "csv-header",
                "lineage": "a\x00b",
                "incremental": "stat",
            },
            422,
            "lineage: must not contain a NUL character",
        ),
    ],
)
async def test_bad_requests_get_clear_4xx_and_store_nothing(
    api_no_worker: httpx.AsyncClient,
    tmp_path: Path,
    make_body: Callable[[Path], dict[str, Any]],
    status: int,
    needle: str,
) -> None:
    (tmp_path / "f.csv").write_text("a\n")
    # json.dumps escapes what is not ASCII, lone surrogates included.
    body = json.dumps(make_body(tmp_path)).encode("ascii")
    resp = await api_no_worker.post(
        "/jobs", content=body, headers={"content-type": "application/json"}
    )
    assert resp.status_code == status, resp.text
    detail = resp.json()["detail"]
    assert isinstance(detail, str)
    assert needle in detail, detail
    await assert_no_jobs(api_no_worker)


async def test_malformed_json_body_is_422_with_clear_message(
    api_no_worker: httpx.AsyncClient,
) -> None:
    resp = await api_no_worker.post(
        "/jobs",
        content=b'{"source": "/tmp", "task": ',
        headers={"content-type": "application/json"},
    )
    assert resp.status_code == 422
    assert resp.json()["detail"].startswith("request body is not valid JSON")
    await assert_no_jobs(api_no_worker)


async def test_source_outside_allowed_roots_is_rejected(
    db_settings: Settings, engine_url: str, tmp_path: Path
) -> None:
    root = tmp_path / "allowed"
    (root / "data").mkdir(parents=True)
    settings = db_settings.model_copy(
        update={"engine_urls": [engine_url], "run_worker": False, "allowed_roots": [root]}
    )
    async with api_client(settings) as api:
        escaped = str(root / "data" / ".." / ".." / "..")
        resp = await api.post("/jobs", json={"source": escaped, "task": "csv-header"})
        assert resp.status_code == 422
        assert "outside the allowed roots" in resp.json()["detail"]
        ok = await api.post("/jobs", json={"source": str(root / "data"), "task": "csv-header"})
        assert ok.status_code == 202
        assert (await api.get("/jobs")).json()["total"] == 1


async def test_source_vanishing_before_the_run_fails_the_job_clearly(
    api_no_worker: httpx.AsyncClient, db_settings: Settings, engine_url: str, tmp_path: Path
) -> None:
    from pravah.db import Database
    from pravah.runner import run_job

    source = tmp_path / "gone"
    source.mkdir()
    job_id = (
        await api_no_worker.post("/jobs", json={"source": str(source), "task": "csv-header"})
    ).json()["id"]
    source.rmdir()
    db = Database(db_settings)
    try:
        job = await run_job(job_id, db_settings, engine_url, db=db)
    finally:
        await db.dispose()
    assert job.status == "failed"
    assert job.error and str(source) in job.error
    assert (await api_no_worker.get(f"/jobs/{job_id}")).json()["results_available"] is False
    resp = await api_no_worker.get(f"/jobs/{job_id}/results")
    assert resp.status_code == 409


async def test_a_destination_moved_inside_the_source_after_creation_fails_the_run(
    api_no_worker: httpx.AsyncClient, db_settings: Settings, engine_url: str, tmp_path: Path
) -> None:
    """Checked when the job was made, then a symlink put it inside the source:
    the run must not write outputs among its inputs."""
    from pravah.db import Database
    from pravah.runner import run_job

    source = tmp_path / "src"
    source.mkdir()
    (source / "a.log").write_text("line\n" * 50)
    body = {"source": str(source), "task": "compress", "destination": str(tmp_path / "race/x")}
    job_id = (await api_no_worker.post("/jobs", json=body)).json()["id"]
    (tmp_path / "race").symlink_to(source)
    db = Database(db_settings)
    try:
        job = await run_job(job_id, db_settings, engine_url, db=db)
    finally:
        await db.dispose()
    assert job.status == "failed"
    assert job.error and "is inside the source" in job.error, job.error
    assert sorted(p.name for p in source.iterdir()) == ["a.log"], "nothing written"


async def test_unreadable_file_and_directory_are_per_file_errors(
    db_settings: Settings, unprivileged_engine_url: str, tmp_path: Path
) -> None:
    source = tmp_path / "perm"
    source.mkdir()
    (source / "ok.csv").write_text("a,b\n")
    locked = source / "locked.csv"
    locked.write_text("x,y\n")
    locked.chmod(0)
    (source / "sealed").mkdir()
    (source / "sealed" / "inside.csv").write_text("p,q\n")
    (source / "sealed").chmod(0)
    settings = db_settings.model_copy(update={"engine_urls": [unprivileged_engine_url]})
    try:
        async with api_client(settings) as api:
            created = await api.post("/jobs", json={"source": str(source), "task": "csv-header"})
            job = await wait_for_status(api, created.json()["id"], finished)
            results = (await api.get(f"/jobs/{job['id']}/results")).json()
    finally:
        (source / "sealed").chmod(0o755)
    assert job["status"] == "completed"
    items = {i["path"]: i for i in results["items"]}
    assert items["ok.csv"]["columns"] == ["a", "b"]
    assert items["locked.csv"]["error_kind"] == "permission_denied"
    assert "permission" in items["locked.csv"]["error"].lower()
    assert locked.read_text() == "x,y\n"  # nothing lost
    listing = job["summary"]["listing"]
    assert listing["errors"] == 1
    assert listing["error_examples"][0]["path"] == "sealed"


# ------------------------------------------------------------- config/health


async def test_config_serves_engine_tasks_and_limits(api_no_worker: httpx.AsyncClient) -> None:
    resp = await api_no_worker.get("/config")
    assert resp.status_code == 200
    config = resp.json()
    tasks = {t["name"]: t for t in config["tasks"]}
    assert "csv-header" in tasks
    assert tasks["csv-header"]["options_schema"]["type"] == "object"
    assert "columns" in json.dumps(tasks["csv-header"]["result_schema"])
    assert config["engine_version"]
    assert config["limits"]["results_max_limit"] >= 1
    assert config["limits"]["max_batch_files"] >= 1


async def test_health_and_readiness(api_no_worker: httpx.AsyncClient) -> None:
    assert (await api_no_worker.get("/healthz")).json() == {"status": "ok"}
    ready = await api_no_worker.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": "ok", "engine": "ok"}


async def test_readiness_is_503_without_an_engine(sqlite_settings: Settings) -> None:
    settings = sqlite_settings.model_copy(
        update={"engine_urls": ["127.0.0.1:1"], "run_worker": False}
    )
    async with api_client(settings) as api:
        resp = await api.get("/readyz")
        assert resp.status_code == 503
        assert "engine" in resp.json()["detail"]
        create = await api.post("/jobs", json={"source": "/tmp", "task": "csv-header"})
        assert create.status_code == 503


async def test_dry_run_takes_what_post_jobs_takes_and_refuses_what_it_refuses(
    api_no_worker: httpx.AsyncClient, tmp_path: Path
) -> None:
    """A pipeline was a 500 here, and a destination POST /jobs refuses was
    approved: the web page's preview must agree with the job it submits."""
    source = tmp_path / "in"
    source.mkdir()
    for name in ("a.log", "b.log"):
        (source / name).write_text("line\n" * 100)
    body: dict[str, Any] = {
        "source": str(source),
        "destination": str(tmp_path / "out"),
        "pipeline": [{"task": "compress"}, {"task": "decompress"}],
    }
    plan = await api_no_worker.post("/jobs/dry-run", json=body)
    assert plan.status_code == 200, plan.text
    assert plan.json()["steps"] == ["compress", "decompress"]
    assert (plan.json()["files"], plan.json()["destination"]) == (2, str(tmp_path / "out"))
    single = await api_no_worker.post("/jobs/dry-run", json={"source": str(source), "task": "hash"})
    assert single.json()["task"] == "hash" and single.json()["steps"] == ["hash"]
    for bad in (
        {**body, "destination": str(source / "out")},
        {**body, "destination": "relative/out"},
        {**body, "pipeline": [{"task": "compress", "options": {"level": "high"}}]},
    ):
        refused = await api_no_worker.post("/jobs", json=bad)
        preview = await api_no_worker.post("/jobs/dry-run", json=bad)
        assert refused.status_code == preview.status_code == 422, (bad, preview.text)
        assert preview.json()["detail"] == refused.json()["detail"]
    await assert_no_jobs(api_no_worker)
    assert not (tmp_path / "out").exists()


async def test_a_json_body_sent_as_a_form_is_told_to_say_json(
    api_no_worker: httpx.AsyncClient, tmp_path: Path
) -> None:
    """`curl -d` sends form encoding; the answer said the body was not an object."""
    body = json.dumps({"source": str(tmp_path), "task": "csv-header"})
    resp = await api_no_worker.post(
        "/jobs", content=body, headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert resp.status_code == 422
    assert resp.json()["detail"] == (
        "the body must be JSON sent with 'Content-Type: application/json' "
        "(this request said 'application/x-www-form-urlencoded')"
    )
    await assert_no_jobs(api_no_worker)
