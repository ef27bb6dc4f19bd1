"""Benchmark of S3 sources and destinations (issue 4, performance).

On a local S3 server (moto, from the dev dependencies), side by side in one
run, best of N, peak RSS through GNU time (see bench/run.py):

- listing 10,000 objects (``pravah-engine list s3://...``) vs the same tree
  on local disk and vs ``aws s3 ls --recursive``;
- csv-header over those objects (ranged GETs of the first bytes) vs the
  same on local disk, and vs ``aws s3 cp --recursive`` (a plain copy of the
  same objects, the least any tool reading them whole must do);
- thumbnailing 200 photos from S3 to S3 vs local disk to local disk, and
  vs ``aws s3 cp --recursive`` of the photos.

moto is an in-process Python server, far slower than S3 or MinIO: the
numbers compare tools against the same server, not against AWS. Nothing
asserts a time.

    python bench/s3.py [--objects 10000] [--photos 200] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.generate import make_csv_tree  # noqa: E402
from bench.report import save_rows  # noqa: E402
from bench.run import engine_bin  # noqa: E402
from bench.tasks import Row, make_photos, measure  # noqa: E402

BUCKET = "pravah-bench"


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen(
        [str(server), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            with urllib.request.urlopen(f"{url}/moto-api/", timeout=1):
                return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    sys.exit("moto_server did not start; run `make install` (dev dependencies)")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("PRAVAH_BENCH_DIR", ROOT / "bench/out/data")),
    )
    args = parser.parse_args()
    engine = engine_bin()
    aws = str(Path(sys.executable).parent / "aws")
    proc, url = start_moto()
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench-secret",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "S3_ENDPOINT_URL": url,
        "PRAVAH_ALLOWED_BUCKETS": BUCKET,
    }
    aws_cmd = f"{aws} --endpoint-url {url}"
    rows: list[Row] = []
    tmp = Path(tempfile.mkdtemp(prefix="pravah-bench-s3-"))
    os.environ.update(env)  # measure() runs its commands with our environment
    try:
        subprocess.run(f"{aws_cmd} s3 mb s3://{BUCKET}", shell=True, check=True, env=env)
        csv_dir = make_csv_tree(args.data / f"csv-{args.objects}", args.objects)
        csv_uri = f"s3://{BUCKET}/csv"
        print(f"uploading {args.objects} objects to {csv_uri} ...")
        subprocess.run(
            f"{aws_cmd} s3 cp --recursive --quiet {csv_dir} {csv_uri}/",
            shell=True,
            check=True,
            env=env,
        )
        mb = sum(p.stat().st_size for p in csv_dir.rglob("*.csv")) / 1e6
        n = args.objects
        measure(
            rows,
            "list",
            n,
            mb,
            args.runs,
            [
                ("aws s3 ls --recursive", f"{aws_cmd} s3 ls --recursive {csv_uri}/ | wc -l", ""),
                ("pravah list s3://", [engine, "list", csv_uri, "--count"], ""),
                ("pravah list (local disk)", [engine, "list", str(csv_dir), "--count"], ""),
            ],
        )
        copy_dir = tmp / "copy"
        measure(
            rows,
            "csv-header",
            n,
            mb,
            args.runs,
            [
                (
                    "aws s3 cp --recursive",
                    f"rm -rf {copy_dir} && {aws_cmd} s3 cp --recursive --quiet "
                    f"{csv_uri}/ {copy_dir}",
                    "plain copy",
                ),
                ("pravah s3://", [engine, "process", csv_uri, "--task", "csv-header"], ""),
                (
                    "pravah (local disk)",
                    [engine, "process", str(csv_dir), "--task", "csv-header"],
                    "",
                ),
            ],
        )
        photos = make_photos(args.data / f"photos-{args.photos}", args.photos)
        photos_uri = f"s3://{BUCKET}/photos"
        subprocess.run(
            f"{aws_cmd} s3 cp --recursive --quiet --exclude '.*' {photos} {photos_uri}/",
            shell=True,
            check=True,
            env=env,
        )
        pmb = sum(p.stat().st_size for p in photos.glob("*.jpg")) / 1e6
        thumb = ["--task", "thumbnail", "--option", "existing=overwrite"]
        measure(
            rows,
            "thumbnail",
            args.photos,
            pmb,
            args.runs,
            [
                (
                    "aws s3 cp --recursive",
                    f"rm -rf {tmp}/p && {aws_cmd} s3 cp --recursive --quiet {photos_uri}/ {tmp}/p",
                    "plain copy",
                ),
                (
                    "pravah s3:// -> s3://",
                    [engine, "process", photos_uri, *thumb, "--destination", f"s3://{BUCKET}/t"],
                    "",
                ),
                (
                    "pravah local -> local",
                    [engine, "process", str(photos), *thumb, "--destination", str(tmp / "t")],
                    "",
                ),
            ],
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        proc.terminate()
        proc.wait()
    save_rows("s3", rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
