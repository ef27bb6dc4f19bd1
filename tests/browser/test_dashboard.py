"""The web dashboard in a real headless Chromium against `pravah serve`.

Few and lean on purpose (one server per module): each test walks one user
story end to end and saves screenshots under tests/browser/artifacts/.
"""

from __future__ import annotations

import asyncio
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from cli_harness import AUTH, Server, make_cli_tree
from conftest import ARTIFACTS, Watched
from playwright.sync_api import Browser, Page, expect

pytestmark = pytest.mark.browser

# csv-header over cli_harness.make_cli_tree: distinct schemas and their file counts.
EXPECTED_SCHEMAS = {
    "id, name, email": 2,
    "sku, price, qty": 1,
    "a, b": 1,
    'last, first, age, say "hi"': 1,
}
FAILING = {"empty.csv", "blob.csv"}


def test_csv_header_job_from_the_form_completes_live_with_schema_chart_and_table(
    web: Watched, server: Server, tmp_path: Path
) -> None:
    data = make_cli_tree(tmp_path / "data")
    page = web.page
    # A second tab keeps the jobs list open: the new job must appear and
    # complete there without a reload.
    jobs_tab = page.context.new_page()
    jobs_tab.goto("/ui/#/jobs")
    expect(jobs_tab.locator(".live")).to_have_text("live")

    page.goto("/ui/#/new")
    page.get_by_label("Source folder").fill(str(data))
    expect(page.get_by_label("Task", exact=True)).to_have_value("csv-header")
    expect(
        page.get_by_label("delimiter", exact=True)
    ).to_be_visible()  # options form from the schema
    page.get_by_role("button", name="Preview (dry run)").click()
    expect(page.locator('.preview [data-stat="files"]')).to_have_text("7")
    web.shot("new-job-dry-run")
    page.get_by_role("button", name="Start job").click()

    expect(page).to_have_url(re.compile(r"#/jobs/[0-9a-f-]{36}$"))
    job_id = page.url.rsplit("/", 1)[-1]
    expect(page.locator(".status-slot .badge")).to_have_text("completed")
    expect(page.locator('[data-stat="files"]').first).to_have_text("7 of 7")
    expect(page.locator('[data-stat="failed"]').first).to_have_text("2")

    bars = page.locator(".bar-list .bar")
    expect(bars).to_have_count(len(EXPECTED_SCHEMAS))
    chart = {
        bars.nth(i).get_attribute("data-label"): int(bars.nth(i).get_attribute("data-value") or 0)
        for i in range(bars.count())
    }
    assert chart == EXPECTED_SCHEMAS
    rows = page.locator("table.schemas tbody tr")
    expect(rows).to_have_count(len(EXPECTED_SCHEMAS))
    assert sorted(int(rows.nth(i).get_attribute("data-files") or 0) for i in range(4)) == [
        1,
        1,
        1,
        2,
    ]
    expect(page.locator('[data-stat="distinct"]')).to_have_text("4")
    errors = page.locator("table.errors-table tbody tr td:first-child")
    expect(errors).to_have_count(2)
    assert set(errors.all_inner_texts()) == FAILING
    web.shot("detail-completed")

    page.get_by_label("Search columns").fill("sku")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-files", "1")
    page.get_by_label("Search columns").fill("")

    with page.expect_download() as download:
        page.get_by_role("link", name=re.compile("Download all results")).click()
    lines = Path(download.value.path()).read_text().splitlines()
    assert len(lines) == 7

    row = jobs_tab.locator(f'tr[data-job-id="{job_id}"]')
    expect(row).to_have_attribute("data-status", "completed")
    jobs_tab.get_by_label("Status", exact=True).select_option("failed")
    expect(jobs_tab.locator("tbody tr")).to_have_count(0)
    jobs_tab.get_by_label("Status", exact=True).select_option("completed")
    expect(jobs_tab.locator(f'tr[data-job-id="{job_id}"]')).to_be_visible()
    jobs_tab.close()

    page.set_viewport_size({"width": 390, "height": 844})
    web.shot("detail-phone")
    page.goto("/ui/#/jobs")
    row = page.locator(f'tr[data-job-id="{job_id}"]')
    expect(row).to_be_visible()
    # Regression: a long source path widened the card and pushed the
    # right-aligned values (status, progress, rate) off a phone's screen.
    expect(row.locator(".badge")).to_be_in_viewport(ratio=1)
    expect(row.locator('td[data-label="Duration"]')).to_be_in_viewport(ratio=1)
    web.shot("jobs-phone")


def test_bad_form_shows_the_page_and_api_errors_next_to_the_field(
    web: Watched, server: Server, tmp_path: Path
) -> None:
    web.expect_http_error(r"/jobs$", 422)
    page = web.page
    page.goto("/ui/#/new")
    source_error = page.locator('[data-field="source"] .error')

    page.get_by_role("button", name="Start job").click()  # empty: the page says so
    expect(source_error).to_have_text("Give the folder to process.")

    missing = tmp_path / "no-such-folder"
    page.get_by_label("Source folder").fill(str(missing))
    with page.expect_response(re.compile(r"/jobs$")) as answer:
        page.get_by_role("button", name="Start job").click()
    body = answer.value.json()
    assert answer.value.status == 422 and body["field"] == "source"
    expect(source_error).to_have_text(body["detail"])
    expect(page.get_by_label("Source folder")).to_have_attribute("aria-invalid", "true")
    expect(page.locator(".form-error")).to_contain_text("see the marked field")
    web.shot("api-error-on-source")

    page.get_by_label("Source folder").fill(str(tmp_path))
    page.get_by_label("Minimum size").fill("lots")
    page.get_by_role("button", name="Start job").click()
    expect(page.locator('[data-field="filters.min_size"] .error')).to_contain_text(
        "invalid size 'lots'"
    )
    expect(source_error).to_have_text("")
    assert httpx.get(f"{server.url}/jobs?status=pending", headers=AUTH).json()["total"] == 0


def test_cancel_a_long_job_from_its_page(web: Watched, server: Server, slow_tree: Path) -> None:
    page = web.page
    job = httpx.post(
        f"{server.url}/jobs",
        json={"source": str(slow_tree), "task": "hash", "options": {"algorithm": "sha256"}},
        headers=AUTH,
    ).json()
    page.goto(f"/ui/#/jobs/{job['id']}")
    expect(page.locator(".status-slot .badge")).to_have_text("running")
    page.get_by_role("button", name="Cancel job").click()
    expect(page.locator(".status-slot .badge")).to_have_text("cancelled")
    expect(page.get_by_role("button", name="Cancel job")).to_be_hidden()
    web.shot("cancelled")
    final = httpx.get(f"{server.url}/jobs/{job['id']}", headers=AUTH).json()
    assert final["status"] == "cancelled"
    assert final["progress"]["files_done"] < 200


def test_upload_a_dropped_file_and_run_a_job_on_it(web: Watched, server: Server) -> None:
    page = web.page
    page.goto("/ui/#/uploads")
    expect(page.get_by_role("heading", name="Uploads")).to_be_visible()
    page.locator(".dropzone").evaluate(
        """zone => {
            const dt = new DataTransfer();
            dt.items.add(new File(["city,country\\nPune,IN\\n"], "cities.csv", {type: "text/csv"}));
            const init = {dataTransfer: dt, bubbles: true, cancelable: true};
            zone.dispatchEvent(new DragEvent("drop", init));
        }"""
    )
    expect(page.locator(".upload-progress li progress")).to_have_attribute("value", "100")
    expect(page.locator(".upload-progress li").first).to_contain_text("done")
    uploaded = page.locator("li.upload").first
    expect(uploaded).to_contain_text("cities.csv")
    web.shot("uploaded")
    uploaded.get_by_role("link", name="Use as job source").click()
    expect(page.get_by_label("Source folder")).to_have_value(re.compile(r"/uploads/[0-9a-f-]{36}$"))
    page.get_by_role("button", name="Start job").click()
    expect(page.locator(".status-slot .badge")).to_have_text("completed")
    expect(page.locator(".bar-list .bar")).to_have_attribute("data-label", "city, country")


def test_delete_an_upload_once_no_schedule_needs_it(web: Watched, server: Server) -> None:
    upload = httpx.post(
        f"{server.url}/uploads",
        params={"filename": "towns.csv"},
        content=b"town\nNashik\n",
        headers=AUTH,
    ).json()
    schedule = httpx.post(
        f"{server.url}/schedules",
        json={
            "name": "towns nightly",
            "cron": "0 3 * * *",
            "job": {"source": upload["path"], "task": "csv-header"},
        },
        headers=AUTH,
    ).json()
    web.expect_http_error(rf"/uploads/{upload['id']}$", 409)
    page = web.page
    page.once("dialog", lambda dialog: dialog.accept())
    page.goto("/ui/#/uploads")
    row = page.locator(f'li.upload[data-upload-id="{upload["id"]}"]')
    expect(row).to_be_visible()
    expect(page.locator("main")).not_to_contain_text("null")  # once drawn for "no empty note"
    row.get_by_role("button", name="Delete towns.csv").click()
    expect(row.get_by_role("alert")).to_contain_text("schedule 'towns nightly'")
    web.shot("upload-held")
    httpx.delete(f"{server.url}/schedules/{schedule['id']}", headers=AUTH)
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Delete towns.csv").click()
    expect(row).to_have_count(0)
    gone = httpx.get(f"{server.url}/uploads/{upload['id']}", headers=AUTH)
    assert gone.status_code == 404
    page.reload()
    expect(page.get_by_role("heading", name="Uploads")).to_be_visible()
    expect(row).to_have_count(0)


def test_sign_in_with_a_viewer_key_hides_what_the_role_cannot_do(
    browser: Browser, server: Server
) -> None:
    viewer = httpx.post(
        f"{server.url}/keys", json={"name": "reader", "role": "viewer"}, headers=AUTH
    ).json()["key"]
    context = browser.new_context(base_url=server.url, viewport={"width": 1200, "height": 900})
    try:
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.goto("/ui/#/jobs")
        # No key yet: the server says 401 and the page asks for one.
        expect(page.locator("#banner")).to_contain_text("needs an API key")
        page.get_by_label("API key").fill(viewer)
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("#signin label")).to_have_text("Signed in: reader (viewer)")
        expect(page.get_by_role("link", name="Jobs")).to_be_visible()
        expect(page.get_by_role("link", name="New job")).to_be_hidden()
        expect(page.get_by_role("link", name="Uploads")).to_be_hidden()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "viewer-signed-in.png"))
    finally:
        context.close()


def _completed_job_page(web: Watched, server: Server, body: dict[str, object]) -> Page:
    """Submits `body` through the API and opens the job's page once it has completed."""
    job = httpx.post(f"{server.url}/jobs", json=body, headers=AUTH).json()
    assert "id" in job, job
    page = web.page
    page.goto(f"/ui/#/jobs/{job['id']}")
    expect(page.locator(".status-slot .badge")).to_have_text("completed")
    return page


def test_hash_job_shows_its_duplicate_groups(web: Watched, server: Server, tmp_path: Path) -> None:
    # Regression: the page looked for duplicate groups under the first key
    # naming "dup" (a count), so hash jobs fell back to the raw JSON view.
    source = tmp_path / "dups"
    (source / "sub").mkdir(parents=True)
    for name in ("a.txt", "b.txt", "sub/c.txt"):
        (source / name).write_text("same bytes\n")
    (source / "unique.txt").write_text("other\n")
    page = _completed_job_page(
        web, server, {"source": str(source), "task": "hash", "options": {"algorithm": "sha256"}}
    )
    group = page.get_by_role("region", name="Duplicate groups")
    expect(group.locator('[data-stat="groups"]')).to_have_text("1")
    expect(group.locator('[data-stat="files"]')).to_have_text("3")
    expect(group.locator("ol.dups > li")).to_have_count(1)
    expect(group.locator("ol.dups > li").first).to_contain_text("3 copies")
    # A rate of bytes is a fraction: it is shown rounded, not with 12 digits.
    expect(page.locator("body")).not_to_contain_text(re.compile(r"\d\.\d{3,} B/s"))
    # hash reads whole files: its listing has sizes, so bytes have a total.
    expect(page.locator('.stats [data-stat="bytes"]')).to_have_text("39 B of 39 B")
    web.shot("hash-duplicates")


def test_csv_header_job_shows_the_bytes_seen_without_a_total(
    web: Watched, server: Server, tmp_path: Path
) -> None:
    # csv-header reads one record per file, so its listing reads no sizes
    # and the job has no byte total: the page says what was seen, not an empty total.
    source = tmp_path / "csvs"
    source.mkdir()
    (source / "a.csv").write_text("x,y\n1,2\n")
    (source / "b.csv").write_text("x,y\n")
    page = _completed_job_page(web, server, {"source": str(source), "task": "csv-header"})
    expect(page.locator('.stats [data-stat="bytes"]')).to_have_text("12 B")
    expect(page.locator('.stats [data-stat="files"]')).to_have_text("2 of 2")


def test_thumbnail_job_shows_its_outputs_with_auth_on(
    web: Watched, server: Server, tmp_path: Path
) -> None:
    # Regression: the grid's <img src> went out without the API key, so with
    # auth on every thumbnail was refused (401) and showed broken.
    from PIL import Image

    source, dest = tmp_path / "photos", tmp_path / "thumbs"
    source.mkdir()
    dest.mkdir()
    for i, colour in enumerate(("red", "blue")):
        Image.new("RGB", (300, 200), colour).save(source / f"p{i}.png")
    job = httpx.post(
        f"{server.url}/jobs",
        json={
            "source": str(source),
            "task": "thumbnail",
            "options": {"width": 64, "height": 64},
            "destination": str(dest),
        },
        headers=AUTH,
    ).json()
    assert "id" in job, job
    page = web.page
    page.goto(f"/ui/#/jobs/{job['id']}")
    expect(page.locator(".status-slot .badge")).to_have_text("completed")
    images = page.locator("ul.thumbs img")
    expect(images).to_have_count(2)
    for i in range(2):
        image = images.nth(i)
        expect(image).to_have_attribute("src", re.compile(r"^blob:"))
        page.wait_for_function(
            "img => img.complete && img.naturalWidth > 0", arg=image.element_handle()
        )
        assert image.evaluate("img => img.naturalWidth") == 64
    web.shot("thumbnails")


def test_a_job_with_more_schemas_than_rows_drawn_stays_searchable(
    web: Watched, server: Server, tmp_path: Path
) -> None:
    # Headerless files make one schema per file; 100,000 table rows froze
    # the page. It draws the first 500, the search reaches the rest of the
    # summary's 1,000, and the page says the others are in the results.
    source = tmp_path / "headerless"
    source.mkdir()
    for i in range(1100):
        (source / f"{i:04}.csv").write_text(f"row {i:04},{i * 7}\n")
    page = _completed_job_page(web, server, {"source": str(source), "task": "csv-header"})
    expect(page.locator('[data-stat="distinct"]')).to_have_text("1,100")
    rows = page.locator("table.schemas tbody tr")
    expect(rows).to_have_count(500)
    expect(page.get_by_text("500 of 1,000 matching schemas shown (1,000 in all)")).to_be_visible()
    expect(page.get_by_text("100 more are in the per-file results")).to_be_visible()
    page.locator("#schema-search").fill("row 0999")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("0999.csv")
    expect(page.get_by_text("1 of 1,000 schemas shown.")).to_be_visible()


def test_a_job_whose_results_expired_keeps_its_summary_and_says_why(
    web: Watched, server: Server, tmp_path: Path
) -> None:
    source = tmp_path / "expiring"
    source.mkdir()
    (source / "a.csv").write_text("when,what\n")
    page = _completed_job_page(web, server, {"source": str(source), "task": "csv-header"})
    expect(page.locator("#download-results")).to_be_visible()
    job_id = page.url.rsplit("/", 1)[-1]
    assert server.state_dir is not None
    # Playwright's sync API runs an event loop in this thread.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _expire(server.state_dir, job_id)).result()
    page.reload()
    expect(page.locator(".status-slot .badge")).to_have_text("completed")
    expect(page.locator("#results-removed")).to_contain_text("were removed on")
    expect(page.locator("#download-results")).to_have_count(0)
    expect(page.locator("body")).to_contain_text("when")  # the schema, from the summary
    web.shot("results-expired")


async def _expire(state_dir: Path, job_id: str) -> None:
    """Ages the job past the retention and sweeps the server's store, as its
    worker would an hour later."""
    from datetime import timedelta

    from pravah.db import Database
    from pravah.models import utcnow
    from pravah.retention import prune_results
    from pravah.settings import Settings
    from store_helpers import finished_ago

    settings = Settings(state_dir=state_dir, database_url="")
    await finished_ago(settings, job_id, timedelta(days=31))
    db = Database(settings)
    try:
        async with db.session() as session:
            assert await prune_results(session, settings, utcnow()) == 1
    finally:
        await db.dispose()
