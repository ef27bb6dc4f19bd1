"""Where jobs may read and write: allowed roots, allowed buckets, destinations.

Why one module: every front end (REST, CLI, schedules) validates job paths
the same way before anything is stored, and the engine repeats the root
check on its side (`engine_service/src/sandbox.rs`) for direct gRPC clients.

- Local paths must be absolute (a relative one would be read against the
  service's working folder, not the caller's: clients make them absolute).
  They are resolved (`..`, symlinks, `file://` and
  percent-encoding undone), then must lie inside one of
  `PRAVAH_ALLOWED_ROOTS` (when set). Upload folders are always allowed as
  sources: they are the service's own.
- `s3://bucket/...` must name a bucket in `PRAVAH_ALLOWED_BUCKETS`; with
  none configured, no bucket is allowed. The prefix may not hold `.`, `..`
  or empty segments; the URI is stored normalized (`s3://bucket/prefix`).
- A destination may not be the source or lie inside it (outputs never
  overwrite inputs), nor contain the source.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from pravah.errors import InvalidRequestError
from pravah.settings import Settings

MAX_PATH_CHARS = 4096


def source_roots(settings: Settings) -> list[Path]:
    """Roots a source may lie in (empty: anywhere): allowed roots plus uploads."""
    if not settings.allowed_roots:
        return []
    return [*settings.allowed_roots, settings.uploads_dir]


def check_text(text: str, what: str) -> str:
    """Reject empty, NUL-containing and overlong path texts."""
    text = text.strip()
    if not text:
        raise InvalidRequestError(f"{what} is empty; give a directory path", field=what)
    if "\x00" in text:
        raise InvalidRequestError(f"{what} contains a NUL byte", field=what)
    if len(text) > MAX_PATH_CHARS:
        raise InvalidRequestError(f"{what} is longer than {MAX_PATH_CHARS} characters", field=what)
    return text


def check_bucket(uri: str, buckets: list[str], what: str) -> str:
    """The bucket of an s3:// URI if it is allowed; InvalidRequestError otherwise."""
    bucket = urlparse(uri).netloc
    if not bucket:
        raise InvalidRequestError(
            f"{what} {uri!r} names no bucket (s3://bucket/prefix)", field=what
        )
    if bucket not in buckets:
        allowed = ", ".join(buckets) if buckets else "none (set PRAVAH_ALLOWED_BUCKETS)"
        raise InvalidRequestError(
            f"{what} bucket {bucket!r} is not allowed; allowed buckets: {allowed}", field=what
        )
    return bucket


def s3_uri(text: str, buckets: list[str], what: str) -> str:
    """The normalized `s3://bucket/prefix` of an allowed s3:// URI."""
    bucket = check_bucket(text, buckets, what)
    prefix = urlparse(text).path.strip("/")
    segments = prefix.split("/") if prefix else []
    if any(s in ("", ".", "..") for s in segments):
        raise InvalidRequestError(
            f"{what} {text!r}: the prefix may not contain '.', '..' or empty segments",
            field=what,
        )
    return f"s3://{bucket}/{prefix}"


def is_s3(text: str) -> bool:
    """Whether a source or destination names an S3 prefix."""
    return text.startswith("s3://")


def local_path(text: str, what: str) -> Path:
    """The resolved local path a path or file:// URI names (symlinks and '..' resolved)."""
    if text.startswith("file://"):
        parsed = urlparse(text)
        if parsed.netloc not in ("", "localhost"):
            raise InvalidRequestError(
                f"{what} {text!r} names the host {parsed.netloc!r}; a file:// URI must name "
                "a local path (file:///folder)",
                field=what,
            )
        text = unquote(parsed.path)
        if "\x00" in text:
            raise InvalidRequestError(f"{what} contains a NUL byte", field=what)
    path = Path(text)
    if not path.is_absolute():
        # Resolved here it would name a folder under the server's working
        # directory (or its user's home, for "~"), not the caller's.
        raise InvalidRequestError(
            f"{what} {text!r} is a relative path; give an absolute path (the service "
            "does not know the folder the caller is in)",
            field=what,
        )
    try:
        return path.resolve(strict=False)
    except (OSError, RuntimeError) as exc:  # symlink loops end here
        raise InvalidRequestError(f"{what} cannot be resolved: {exc}", field=what) from exc


def check_inside(resolved: Path, roots: list[Path], original: str, what: str) -> None:
    """InvalidRequestError unless `resolved` lies in one of `roots` (empty: anywhere)."""
    if not roots:
        return
    resolved_roots = [r.expanduser().resolve() for r in roots]
    if any(resolved == r or resolved.is_relative_to(r) for r in resolved_roots):
        return
    allowed = ", ".join(str(r) for r in resolved_roots)
    raise InvalidRequestError(
        f"{what} {original!r} resolves to {str(resolved)!r}, which is outside the allowed "
        f"roots ({allowed}; PRAVAH_ALLOWED_ROOTS)",
        field=what,
    )


def nearest_existing(path: Path) -> Path | None:
    """`path` itself, or its closest ancestor that exists; None if none does."""
    return next((p for p in (path, *path.parents) if p.exists()), None)


def check_destination(
    destination: str | None, source: Path | str, settings: Settings
) -> str | None:
    """The destination to store: allowed, and neither the source nor inside it.

    `source` is a resolved local path or a normalized s3:// URI.
    """
    if destination is None:
        return None
    text = check_text(destination, "destination")
    scheme = urlparse(text).scheme if "://" in text else ""
    if scheme == "s3":
        uri = s3_uri(text, settings.allowed_buckets, "destination")
        if isinstance(source, str):
            inner, outer = uri.rstrip("/") + "/", source.rstrip("/") + "/"
            if inner.startswith(outer) or outer.startswith(inner):
                raise InvalidRequestError(
                    f"destination {destination!r} overlaps the source {source!r}; outputs "
                    "must not be written among the inputs: choose another prefix",
                    field="destination",
                )
        return uri
    if scheme not in ("", "file"):
        raise InvalidRequestError(
            f"destination {destination!r} uses the {scheme}:// scheme; give a local "
            "directory path, a file:// URI or an s3:// URI",
            field="destination",
        )
    resolved = local_path(text, "destination")
    check_inside(resolved, settings.allowed_roots, destination, "destination")
    # Made by the engine when missing; a file where a folder must be is
    # refused now rather than failing the job once it runs.
    in_the_way = nearest_existing(resolved)
    if in_the_way is not None and not in_the_way.is_dir():
        raise InvalidRequestError(
            f"destination {destination!r} cannot be a folder: {str(in_the_way)!r} is a file",
            field="destination",
        )
    if isinstance(source, str):  # an S3 source cannot overlap a local folder
        return str(resolved)
    if resolved == source or resolved.is_relative_to(source):
        raise InvalidRequestError(
            f"destination {destination!r} is inside the source {str(source)!r}; outputs "
            "must not be written among the inputs: choose a folder outside the source",
            field="destination",
        )
    if source.is_relative_to(resolved):
        raise InvalidRequestError(
            f"destination {destination!r} contains the source {str(source)!r}; choose a "
            "folder that does not hold the inputs",
            field="destination",
        )
    return str(resolved)
