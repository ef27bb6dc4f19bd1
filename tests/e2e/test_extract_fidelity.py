"""`pravah run --task extract` gives the tree that `tar -x` gives.

Archives made by the real tools, with what real trees hold: an executable
script, a read-only file, a read-only folder, old modification times, a
symlink and a hard link inside, and the `./` entry that `tar -C dir -c .`
writes first. The extracted tree is compared with GNU tar's extraction of
the same archive, file by file: bytes, permission bits, times, link targets
and shared inodes.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import zipfile
from pathlib import Path

import pytest
from cli_harness import Cli

pytestmark = pytest.mark.e2e

OLD = 1_500_000_000  # 2017-07-14


def make_tree(root: Path) -> None:
    (root / "bin").mkdir(parents=True)
    (root / "docs" / "locked").mkdir(parents=True)
    (root / "bin" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "bin" / "run.sh").chmod(0o750)
    (root / "docs" / "notes.txt").write_text("notes\n")
    (root / "docs" / "notes.txt").chmod(0o444)
    (root / "docs" / "locked" / "a.txt").write_text("a\n")
    (root / "docs" / "latest").symlink_to("notes.txt")
    os.link(root / "docs" / "notes.txt", root / "bin" / "notes-link.txt")
    for i, path in enumerate(sorted(root.rglob("*"), reverse=True)):
        os.utime(path, (OLD + i, OLD + i), follow_symlinks=False)
    (root / "docs" / "locked").chmod(0o555)
    os.utime(root / "docs" / "locked", (OLD, OLD))


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Each path under `root`: kind, permission bits, mtime, link target or bytes."""
    out: dict[str, tuple[object, ...]] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = ("link", os.readlink(path))
        elif path.is_dir():
            out[rel] = ("dir", st.st_mtime_ns // 10**9)
        else:
            out[rel] = (
                "file",
                oct(st.st_mode & 0o7777),
                st.st_mtime_ns // 10**9,
                path.read_bytes(),
            )
    return out


def extract(cli: Cli, source: Path, dest: Path) -> dict[str, object]:
    result = cli.run("run", str(source), "--task", "extract", "--dest", str(dest), "--json")
    assert result.returncode == 0, result.stderr
    job: dict[str, object] = json.loads(result.stdout)
    assert job["status"] == "completed", job
    return job


def test_a_tar_made_by_tar_extracts_as_tar_extracts_it(cli: Cli, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    make_tree(tree)
    (tmp_path / "in").mkdir()
    archive = tmp_path / "in" / "project.tar.gz"
    subprocess.run(["tar", "-C", str(tree), "-czf", str(archive), "."], check=True)
    listing = subprocess.run(["tar", "-tzf", str(archive)], check=True, capture_output=True)
    assert listing.stdout.startswith(b"./\n")  # the folder itself comes first
    reference = tmp_path / "by-tar"
    reference.mkdir()
    # As a user's tar does (root's keeps modes whole): the umask applies.
    untar = ["tar", "--no-same-permissions", "-C", str(reference), "-xzf", str(archive)]
    subprocess.run(untar, check=True)

    job = extract(cli, tmp_path / "in", tmp_path / "out")
    assert job["summary"]["files"] == 1 and not job["summary"]["failed"], job  # type: ignore[index]
    ours = tmp_path / "out" / "project"
    expected = snapshot(reference)
    assert snapshot(ours) == expected
    assert expected["bin/run.sh"][1] == oct(0o750 & ~_umask())  # tar kept it too
    assert expected["bin/run.sh"][2] != expected["docs/notes.txt"][2]
    # The hard link shares its inode, as with tar; folders keep their times.
    assert (ours / "bin" / "notes-link.txt").stat().st_ino == (
        ours / "docs/notes.txt"
    ).stat().st_ino
    assert (ours / "docs" / "locked").stat().st_mtime == OLD
    # A folder's owner keeps rwx (so the tree can be replaced), the rest is the archive's.
    assert (ours / "docs" / "locked").stat().st_mode & 0o777 == (0o555 & ~_umask()) | 0o700


def test_a_zip_keeps_modes_and_times(cli: Cli, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    make_tree(tree)
    (tmp_path / "in").mkdir()
    with zipfile.ZipFile(tmp_path / "in" / "site.zip", "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(tree.rglob("*")):
            if path.is_file() and not path.is_symlink():
                info = zipfile.ZipInfo.from_file(path, str(path.relative_to(tree)))
                # MS-DOS times carry no zone: written as UTC, as the engine reads them.
                info.date_time = time.gmtime(path.stat().st_mtime)[:6]
                info.compress_type = zipfile.ZIP_DEFLATED
                z.writestr(info, path.read_bytes())
        # An entry whose writer recorded MS-DOS attributes only: Unix bits 0.
        bare = zipfile.ZipInfo("bare.txt", date_time=(2020, 1, 2, 3, 4, 6))
        bare.external_attr = 0x20  # MS-DOS "archive", nothing else
        z.writestr(bare, b"bare")
    extract(cli, tmp_path / "in", tmp_path / "out")
    ours = tmp_path / "out" / "site"
    for rel in ("bin/run.sh", "docs/notes.txt", "docs/locked/a.txt"):
        original, extracted = (tree / rel).stat(), (ours / rel).stat()
        assert extracted.st_mode & 0o777 == original.st_mode & 0o777 & ~_umask(), rel
        # MS-DOS times have two-second steps.
        assert abs(extracted.st_mtime - original.st_mtime) <= 2, rel
        assert (ours / rel).read_bytes() == (tree / rel).read_bytes()
    # No recorded permissions: a new file's, readable, not 0o000.
    assert (ours / "bare.txt").stat().st_mode & 0o777 == 0o666 & ~_umask()
    assert (ours / "bare.txt").read_bytes() == b"bare"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _windows_zip(path: Path, names: list[str]) -> None:
    """A ZIP as Windows PowerShell's Compress-Archive writes it: made on MS-DOS
    (host 0), folders separated by backslashes."""
    with zipfile.ZipFile(path, "w") as z:
        for name in names:
            info = zipfile.ZipInfo(name, date_time=(2024, 5, 1, 12, 0, 0))
            info.create_system = 0
            z.writestr(info, name.encode())


def test_a_zip_from_windows_with_backslashes_extracts_into_folders(
    cli: Cli, tmp_path: Path
) -> None:
    # Taken literally, 'photos\2024\a.jpg' was one file of that name, and a
    # thumbnail pipeline mirrored nothing of the folders.
    (tmp_path / "in").mkdir()
    _windows_zip(tmp_path / "in" / "upload.zip", ["photos\\2024\\a.jpg", "photos\\b.jpg"])
    _windows_zip(tmp_path / "in" / "slip.zip", ["ok.txt", "..\\..\\evil.txt"])
    # Made on Unix, a backslash is part of a name, as for unzip.
    with zipfile.ZipFile(tmp_path / "in" / "unix.zip", "w") as z:
        info = zipfile.ZipInfo("back\\slash.txt")
        info.create_system = 3
        z.writestr(info, b"u")
    extract(cli, tmp_path / "in", tmp_path / "out")
    out = tmp_path / "out"
    assert (out / "upload" / "photos" / "2024" / "a.jpg").read_bytes() == b"photos\\2024\\a.jpg"
    assert (out / "upload" / "photos" / "b.jpg").is_file()
    assert (out / "unix" / "back\\slash.txt").read_bytes() == b"u"
    assert not (out / "slip").exists()  # refused whole: '..\..\' escapes as '../../' does
    assert not any("evil" in p.name for p in tmp_path.rglob("*"))
