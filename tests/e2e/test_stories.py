"""The user stories of issue 3, end to end through the CLI and through REST.

Story 1 (csv-header over many CSVs) is covered by test_cli_run.py and
test_cli_server.py. Here:

- story 2, a nightly cron line: find logs over a size threshold under a
  folder and compress them, removing the originals (a small threshold and
  real files stand in for 100 MB);
- story 3: a ZIP of images, extracted, every image resized into a 1024x1024
  box, thumbnails stored in a destination; dimensions and EXIF orientation
  are checked with Pillow against Pillow's own reading of the originals.

Each checks the outputs themselves, not only the job's counts.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest
from cli_harness import AUTH, Cli, Server
from PIL import Image, ImageChops, ImageOps, ImageStat

pytestmark = pytest.mark.e2e

BIG = 300_000  # "over 100 MB", scaled down


def make_logs(root: Path) -> dict[str, bytes]:
    """Two big logs (one nested), a small log and a big non-log; returns the big logs."""
    (root / "app" / "old").mkdir(parents=True)
    big = {
        "app/server.log": b"".join(b"%06d GET /index.html 200\n" % i for i in range(BIG // 25)),
        "app/old/worker.log": b"".join(b"%06d job done ok\n" % i for i in range(BIG // 18)),
    }
    for rel, data in big.items():
        (root / rel).write_bytes(data)
    (root / "app" / "small.log").write_bytes(b"tiny\n")
    (root / "app" / "data.bin").write_bytes(b"\x00" * BIG)
    return big


def story2_checks(root: Path, big: dict[str, bytes]) -> None:
    for rel, data in big.items():
        assert not (root / rel).exists(), f"{rel}: original should be removed"
        assert gzip.decompress((root / f"{rel}.gz").read_bytes()) == data
    assert (root / "app" / "small.log").read_bytes() == b"tiny\n"
    assert (root / "app" / "data.bin").stat().st_size == BIG
    assert not (root / "app" / "small.log.gz").exists()


def test_story2_nightly_compress_of_big_logs_through_cli(cli: Cli, tmp_path: Path) -> None:
    root = tmp_path / "var-log"
    big = make_logs(root)
    flags = ("--include", "**/*.log", "--min-size", "100KB", "--option", "keep_original=false")

    plan = cli.run("run", str(root), "--task", "compress", *flags, "--dry-run", "--json")
    assert plan.returncode == 0, plan.stderr
    planned = json.loads(plan.stdout)
    assert (planned["files"], planned["bytes"]) == (2, sum(len(d) for d in big.values()))
    assert {e["path"] for e in planned["examples"]} == set(big)
    assert all((root / rel).exists() for rel in big), "a dry run changes nothing"

    done = cli.run("run", str(root), "--task", "compress", *flags, "--json")
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    assert job["status"] == "completed"
    assert job["summary"]["written"] == 2
    assert job["summary"]["removed_originals"] == 2
    story2_checks(root, big)

    # The next night finds nothing to do (outputs are .gz, not .log).
    again = cli.run("run", str(root), "--task", "compress", *flags, "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["progress"]["files_total"] == 0


def test_story2_leaves_the_log_still_being_written_with_older_than(
    cli: Cli, tmp_path: Path
) -> None:
    """Compressing a log the application still writes to, with the original
    removed, loses what it writes next (into the deleted file): the nightly
    line skips logs modified within the last day."""
    root = tmp_path / "var-log"
    root.mkdir()
    rotated, live = root / "app.log.1.log", root / "app.log"
    rotated.write_bytes(b"yesterday\n" * 20_000)
    live.write_bytes(b"today\n" * 20_000)
    two_days_ago = time.time() - 2 * 86400
    os.utime(rotated, (two_days_ago, two_days_ago))
    flags = ("--include", "*.log", "--option", "keep_original=false", "--json")

    done = cli.run("run", str(root), "--task", "compress", "--older-than", "1d", *flags)
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    assert job["filters"] == {"min_age": "P1D", "include": ["*.log"]}
    assert job["summary"]["written"] == 1
    assert sorted(p.name for p in root.iterdir()) == ["app.log", "app.log.1.log.gz"]
    assert gzip.decompress((root / "app.log.1.log.gz").read_bytes()) == b"yesterday\n" * 20_000

    # The other way round, and with a date: only what changed since.
    newer = cli.run("run", str(root), "--task", "hash", "--newer-than", "12h", "--json")
    assert json.loads(newer.stdout)["progress"]["files_total"] == 1  # app.log
    dated = cli.run("run", str(root), "--task", "hash", "--older-than", "2000-01-01", "--json")
    assert json.loads(dated.stdout)["progress"]["files_total"] == 0


def jpeg(size: tuple[int, int], orientation: int | None = None) -> bytes:
    """A JPEG with a red top half and blue bottom half, optionally EXIF-oriented."""
    img = Image.new("RGB", size, (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, size[0], size[1] // 2))
    out = io.BytesIO()
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    img.save(out, "JPEG", quality=90, exif=exif.tobytes())
    return out.getvalue()


IMAGES = {
    "trip/landscape.jpg": jpeg((1600, 1200)),
    "trip/rotated.jpg": jpeg((1600, 1200), orientation=6),
    "trip/portrait.jpg": jpeg((900, 1400)),
    "trip/small.jpg": jpeg((400, 300)),
}
# Thumbnail sizes in a 1024x1024 box (aspect kept, no upscaling).
EXPECTED = {
    "trip/landscape.jpg": (1024, 768),
    "trip/rotated.jpg": (768, 1024),
    "trip/portrait.jpg": (658, 1024),
    "trip/small.jpg": (400, 300),
}


def make_zip(folder: Path, corrupt: bool = False) -> Path:
    folder.mkdir(parents=True)
    archive = folder / "photos.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for name, data in IMAGES.items():
            z.writestr(name, data)
        png = io.BytesIO()
        Image.new("RGB", (2048, 512), (0, 255, 0)).save(png, "PNG")
        z.writestr("trip/banner.png", png.getvalue())
        z.writestr("trip/README.txt", "holiday")
        if corrupt:
            z.writestr("trip/broken.jpg", IMAGES["trip/landscape.jpg"][:2000])
    return archive


def load(source: Path | bytes) -> Image.Image:
    """An image read fully, its file closed."""
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
        return ImageOps.exif_transpose(img).convert("RGB")


def story3_checks(dest: Path) -> None:
    for name, size in EXPECTED.items():
        thumb = load(dest / "photos" / name)
        assert thumb.size == size, name
        # Orientation: compare with Pillow's own upright reading of the original.
        upright = load(IMAGES[name])
        diff = ImageChops.difference(thumb, upright.resize(size))
        assert max(ImageStat.Stat(diff).mean) < 8, name
    # A PNG's thumbnail keeps the source extension, so a banner.jpg beside it
    # would get its own.
    assert load(dest / "photos" / "trip" / "banner.png.jpg").size == (1024, 256)
    assert not (dest / "photos" / "trip" / "README.txt").exists()


PIPELINE_YAML = """\
# story 3: unzip, then thumbnails
steps:
  - task: extract
  - task: thumbnail
    options: {width: 1024, height: 1024, mode: fit, quality: 85}
"""


def test_story3_zip_of_images_to_thumbnails_through_cli(cli: Cli, tmp_path: Path) -> None:
    make_zip(tmp_path / "in")
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(PIPELINE_YAML)
    dest = tmp_path / "thumbs"
    result = cli.run(
        "run", str(tmp_path / "in"), "--pipeline", str(pipeline), "--dest", str(dest), "--json"
    )
    assert result.returncode == 0, result.stderr
    job = json.loads(result.stdout)
    assert job["status"] == "completed", job
    assert [s["task"] for s in job["summary"]["steps"]] == ["extract", "thumbnail"]
    assert job["summary"]["thumbnails"] == 5
    story3_checks(dest)

    # The same with repeated --task flags; a corrupt JPEG fails alone, and a
    # job with --max-error-ratio 0.1 then ends failed (1 of 7 files).
    make_zip(tmp_path / "in2", corrupt=True)
    dest2 = tmp_path / "thumbs2"
    args = ["run", str(tmp_path / "in2"), "--task", "extract", "--task", "thumbnail"]
    args += ["--option", "thumbnail.quality=80", "--dest", str(dest2), "--json"]
    failed = cli.run(*args, "--max-error-ratio", "0.1")
    assert failed.returncode == 1, failed.stderr
    job = json.loads(failed.stdout)
    assert job["status"] == "failed"
    assert "more than max_error_ratio" in job["error"]
    assert [f["path"] for f in job["summary"]["failures"]] == ["photos/trip/broken.jpg"]
    story3_checks(dest2)  # every good image was still done


def wait_job(server: Server, job_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        url = f"{server.url}/jobs/{job_id}"
        job: dict[str, Any] = httpx.get(url, timeout=10, headers=AUTH).json()
        if job["status"] in ("completed", "failed", "cancelled"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.2)


def test_stories_2_and_3_through_rest(server: Server, tmp_path: Path) -> None:
    config = httpx.get(f"{server.url}/config", timeout=10, headers=AUTH).json()
    tasks = {t["name"]: t for t in config["tasks"]}
    library = {"compress", "decompress", "extract", "thumbnail", "convert", "hash", "inventory"}
    assert library <= set(tasks)
    assert tasks["extract"]["writes_files"] and not tasks["hash"]["writes_files"]

    root = tmp_path / "logs"
    big = make_logs(root)
    body = {
        "source": str(root),
        "task": "compress",
        "options": {"keep_original": False},
        "filters": {"include": ["**/*.log"], "min_size": "100KB"},
    }
    resp = httpx.post(f"{server.url}/jobs", json=body, timeout=10, headers=AUTH)
    assert resp.status_code == 202, resp.text
    job = wait_job(server, resp.json()["id"])
    assert job["status"] == "completed", job
    story2_checks(root, big)

    make_zip(tmp_path / "in", corrupt=True)
    dest = tmp_path / "thumbs"
    body = {
        "source": str(tmp_path / "in"),
        "destination": str(dest),
        "pipeline": [
            {"task": "extract"},
            {"task": "thumbnail", "options": {"width": 1024, "height": 1024}},
        ],
    }
    resp = httpx.post(f"{server.url}/jobs", json=body, timeout=10, headers=AUTH)
    assert resp.status_code == 202, resp.text
    job = wait_job(server, resp.json()["id"])
    # One corrupt image: recorded and skipped, the job completes.
    assert job["status"] == "completed", job
    assert job["progress"]["files_failed"] == 1
    assert job["summary"]["failures"][0]["error_kind"] == "invalid_data"
    story3_checks(dest)
    lines = httpx.get(
        f"{server.url}/jobs/{job['id']}/results",
        params={"format": "jsonl"},
        timeout=10,
        headers=AUTH,
    ).text.splitlines()
    by_path = {json.loads(line)["path"]: json.loads(line) for line in lines}
    assert by_path["photos.zip"]["entries"] == 7
    assert by_path["photos/trip/rotated.jpg"]["width"] == 768


def test_convert_csv_to_parquet_reads_back_with_pyarrow(cli: Cli, tmp_path: Path) -> None:
    import csv

    import pyarrow.parquet as pq

    src = tmp_path / "csvs"
    (src / "2024").mkdir(parents=True)
    rows = [{"id": str(i), "city": f"c{i % 7}", "amount": f"{i * 1.5}"} for i in range(5000)]
    with (src / "2024" / "sales.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["id", "city", "amount"])
        writer.writeheader()
        writer.writerows(rows)
    dest = tmp_path / "parquet"
    args = ("--task", "convert", "--option", "to=parquet", "--option", 'types={"id": "string"}')
    result = cli.run("run", str(src), *args, "--dest", str(dest), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["summary"]["rows"] == len(rows)
    table = pq.read_table(dest / "2024" / "sales.parquet")
    assert str(table.schema.field("id").type) == "string"  # overridden
    assert str(table.schema.field("amount").type) == "double"  # inferred
    back = [
        {"id": r["id"], "city": r["city"], "amount": f"{r['amount']}"} for r in table.to_pylist()
    ]
    assert back == rows


@pytest.mark.parametrize("to", ["jsonl", "parquet"])
def test_convert_keeps_every_value_of_repeated_and_empty_header_names(
    cli: Cli, tmp_path: Path, to: str
) -> None:
    """`a,a,b` kept one `a` per row and dropped the other, `,x` the same:
    JSON objects and Parquet need distinct names, so they are made so."""
    import pyarrow.parquet as pq

    src = tmp_path / "csvs"
    src.mkdir()
    (src / "dup.csv").write_text("a,a,b,\n1,2,3,4\n5,6,7,8\n")
    dest = tmp_path / "out"
    result = cli.run(
        "run", str(src), "--task", "convert", "--option", f"to={to}", "--dest", str(dest), "--json"
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["progress"]["files_failed"] == 0
    if to == "jsonl":
        got = [json.loads(line) for line in (dest / "dup.jsonl").read_text().splitlines()]
    else:
        got = pq.read_table(dest / "dup.parquet").to_pylist()
    values = [[str(v) for v in row.values()] for row in got]
    assert [list(row) for row in got] == [["a", "a_2", "b", "column_4"]] * 2
    assert values == [["1", "2", "3", "4"], ["5", "6", "7", "8"]]
