"""Client commands: `submit`, `status`, `results`, `cancel`, `jobs` over the REST API.

Why a plain HTTP client and not the service layer: these commands talk to a
server that may run elsewhere, with its own job store and engines, so they
only use what the API promises. Errors keep the server's words: its
``detail`` is printed as is; a 400/422 (the request was bad) exits 2 like any
usage error, other API errors exit 1, and an unreachable server names the URL
it tried.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pravah.cli.common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    CliFailure,
    err_console,
    handle_errors,
    out_console,
)
from pravah.cli.options import CliUsageError, build_job_request, check_output_file
from pravah.cli.output import is_stdout, not_written, write_jsonl
from pravah.cli.params import (
    DEFAULT_SERVER,
    ApiKey,
    CaFile,
    Destination,
    Exclude,
    Extension,
    FollowSymlinks,
    Hidden,
    Include,
    JsonOutput,
    MaxDepth,
    MaxErrorRatio,
    MaxSize,
    MinSize,
    NewerThan,
    OlderThan,
    OutputFile,
    PipelineFile,
    Quiet,
    Server,
    Source,
    Sse,
    SseKmsKeyId,
    Task,
    TaskOption,
)
from pravah.cli.render import (
    MAX_ERRORS_SHOWN,
    TERMINAL_STATUSES,
    JobProgress,
    dump_json,
    error_message,
    job_counts,
    render_job_line,
    render_jobs_table,
    render_summary,
    results_removed,
)
from pravah.cli.visible import data

__all__ = [
    "ApiClient",
    "cancel_command",
    "detail_message",
    "jobs_command",
    "results_command",
    "status_command",
    "submit_command",
]

if TYPE_CHECKING:
    import httpx

POLL_INTERVAL = 0.5


def detail_message(response: httpx.Response) -> str:
    """The server's explanation of an error response, in one line.

    FastAPI answers ``{"detail": "text"}`` for raised errors and
    ``{"detail": [{"loc": [...], "msg": "..."}]}`` for validation errors.
    """
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        return text[:500] or f"HTTP {response.status_code} {response.reason_phrase}"
    detail = body.get("detail") if isinstance(body, Mapping) else body
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, Mapping):
                loc = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
                msg = str(item.get("msg", "invalid")).removeprefix("Value error, ")
                parts.append(f"{loc}: {msg}" if loc else msg)
            else:
                parts.append(str(item))
        return "; ".join(parts)
    if detail is None:
        return f"HTTP {response.status_code} {response.reason_phrase}"
    return str(detail)


def server_url(server: str) -> str:
    """`server` as a base URL, or a usage error that says what is wrong with it."""
    from urllib.parse import urlsplit

    url = server.strip().rstrip("/")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (parsing the port is the check)
    except ValueError as exc:
        raise CliUsageError(f"--server {server!r} is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CliUsageError(
            f"--server {server!r} must be an http:// or https:// URL, e.g. http://127.0.0.1:8000"
        )
    return url


class ApiClient:
    """A thin httpx wrapper that turns transport and API errors into CliFailure."""

    def __init__(
        self,
        server: str,
        *,
        api_key: str | None = None,
        ca_file: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        # Imported here: httpx costs a tenth of a second at start-up, and
        # `pravah run`, the command most often typed, never talks HTTP.
        import httpx

        self.server = server_url(server)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        verify: Any = True
        if ca_file:
            import ssl

            try:
                verify = ssl.create_default_context(cafile=ca_file)
            except ssl.SSLError:  # an OSError too: first
                raise CliUsageError(
                    f"--ca-file {ca_file!r} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
                ) from None
            except OSError as exc:
                why = exc.strerror
                raise CliUsageError(f"--ca-file {ca_file!r} cannot be read: {why}") from None
        try:
            self.http = httpx.Client(
                base_url=self.server, timeout=timeout, headers=headers, verify=verify
            )
        except httpx.InvalidURL as exc:
            raise CliUsageError(f"--server {server!r} is not a valid URL: {exc}") from None

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def _unreachable(self, exc: httpx.TransportError) -> CliFailure:
        return CliFailure(
            f"cannot reach the Pravah server at {self.server} ({exc.__class__.__name__}: {exc}); "
            "start one with `pravah serve` or point --server / PRAVAH_SERVER at it",
            EXIT_FAILED,
        )

    def _check(self, response: httpx.Response) -> httpx.Response:
        if response.is_success:
            return response
        code = EXIT_USAGE if response.status_code in (400, 422) else EXIT_FAILED
        message = detail_message(response)
        if response.status_code == 401:
            message += " (give a key with --api-key or PRAVAH_API_KEY)"
        elif response.status_code == 404 and message == "Not Found":
            # No route at all (a missing job says which job): read as "job
            # not found", it hid a --server with a wrong path.
            request = response.request
            message = (
                f"{request.url} is not a Pravah API endpoint (HTTP 404); is --server the "
                "address `pravah serve` listens on, with no path after it?"
            )
        raise CliFailure(message, code)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """The decoded JSON body of a successful call."""
        import httpx

        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        checked = self._check(response)
        return checked.json() if checked.content else None

    def stream_lines(self, path: str, **kwargs: Any) -> Iterator[bytes]:
        """The lines of a streamed (JSON-lines) response, as bytes."""
        import httpx

        try:
            with self.http.stream("GET", path, **kwargs) as response:
                if not response.is_success:
                    response.read()
                    self._check(response)
                for line in response.iter_lines():
                    if line:
                        yield line.encode()
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None

    def get_job(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = self.request("GET", f"/jobs/{job_id}")
        return job

    def first_errors(self, job_id: str, limit: int = MAX_ERRORS_SHOWN) -> list[dict[str, Any]]:
        """Up to ``limit`` failed result lines, read from the JSON-lines stream.

        Best effort: a job that ended without results (cancelled early) just
        has no examples to show.
        """
        found: list[dict[str, Any]] = []
        lines = self.stream_lines(f"/jobs/{job_id}/results", params={"format": "jsonl"})
        try:
            for raw in lines:
                if b'"error"' not in raw:
                    continue
                line = json.loads(raw)
                if isinstance(line, dict) and error_message(line) is not None:
                    found.append(line)
                    if len(found) >= limit:
                        break
        except CliFailure:
            return found
        return found


def _job_id(job: Mapping[str, Any]) -> str:
    return str(job.get("id", ""))


def wait_for_job(api: ApiClient, job: dict[str, Any], *, show_progress: bool) -> dict[str, Any]:
    """Polls the job until it ends, feeding the progress bar."""
    with JobProgress(enabled=show_progress) as progress:
        progress.update(job)
        while str(job.get("status")) not in TERMINAL_STATUSES:
            time.sleep(POLL_INTERVAL)
            job = api.get_job(_job_id(job))
            progress.update(job)
    return job


def finish_report(
    api: ApiClient, job: dict[str, Any], *, json_output: bool, to_stderr: bool = False
) -> int:
    """Prints the ended job (table or JSON) and returns the exit code."""
    if json_output:
        dump_json(job)
    else:
        errors = api.first_errors(_job_id(job)) if job_counts(job).files_failed else []
        render_summary(err_console if to_stderr else out_console, job, errors)
    return 0 if job.get("status") == "completed" else EXIT_FAILED


def submit_command(
    source: Source,
    task: Task = None,
    option: TaskOption = None,
    include: Include = None,
    exclude: Exclude = None,
    ext: Extension = None,
    min_size: MinSize = None,
    max_size: MaxSize = None,
    older_than: OlderThan = None,
    newer_than: NewerThan = None,
    max_depth: MaxDepth = None,
    hidden: Hidden = False,
    follow_symlinks: FollowSymlinks = False,
    dest: Destination = None,
    wait: Annotated[
        bool, typer.Option("--wait", "-w", help="Wait for the job, showing progress and summary.")
    ] = False,
    output: OutputFile = None,
    json_output: JsonOutput = False,
    quiet: Quiet = False,
    server: Server = DEFAULT_SERVER,
    api_key: ApiKey = None,
    ca_file: CaFile = None,
    pipeline: PipelineFile = None,
    max_error_ratio: MaxErrorRatio = None,
    sse: Sse = None,
    sse_kms_key_id: SseKmsKeyId = None,
) -> None:
    """Queue a job on a server; print its id (or, with --wait, its outcome)."""
    with handle_errors():
        # The server validates the source on its own filesystem; a local
        # check here would wrongly reject paths that only exist there. A
        # relative path is made absolute against this folder (the server
        # refuses relative paths).
        body = build_job_request(
            source=source,
            task=task or [],
            options=option or [],
            include=include or [],
            exclude=exclude or [],
            extensions=ext or [],
            min_size=min_size,
            max_size=max_size,
            older_than=older_than,
            newer_than=newer_than,
            max_depth=max_depth,
            hidden=hidden,
            follow_symlinks=follow_symlinks,
            destination=dest,
            check_source=False,
            pipeline_file=pipeline,
            max_error_ratio=max_error_ratio,
            sse=sse,
            sse_kms_key_id=sse_kms_key_id,
        )
        if wait:
            check_output_file(output, json_output=json_output)
        with ApiClient(server, api_key=api_key, ca_file=ca_file) as api:
            job: dict[str, Any] = api.request("POST", "/jobs", json=body)
            if not wait:
                if json_output:
                    dump_json(job)
                else:
                    typer.echo(_job_id(job))
                return
            if not json_output and not quiet:
                err_console.print(f"job {_job_id(job)} submitted to {api.server}")
            try:
                job = wait_for_job(api, job, show_progress=not (quiet or json_output))
            except KeyboardInterrupt:
                err_console.print(
                    f"stopped waiting; job {_job_id(job)} goes on on the server "
                    f"(pravah cancel {_job_id(job)} to stop it)",
                    style="yellow",
                )
                raise typer.Exit(EXIT_INTERRUPTED) from None
            if output is not None:
                _download_results(api, _job_id(job), output, quiet=quiet or json_output)
            code = finish_report(api, job, json_output=json_output, to_stderr=is_stdout(output))
        if code:
            raise typer.Exit(code)


def status_command(
    job_id: Annotated[str, typer.Argument(help="Job id.", show_default=False)],
    json_output: JsonOutput = False,
    server: Server = DEFAULT_SERVER,
    api_key: ApiKey = None,
    ca_file: CaFile = None,
) -> None:
    """Show one job's status and counts."""
    with handle_errors(), ApiClient(server, api_key=api_key, ca_file=ca_file) as api:
        job = api.get_job(job_id)
        if json_output:
            dump_json(job)
        else:
            render_job_line(out_console, job)


def _download_results(api: ApiClient, job_id: str, output: Path, *, quiet: bool) -> int:
    lines = api.stream_lines(f"/jobs/{job_id}/results", params={"format": "jsonl"})
    try:
        count = write_jsonl(output, lines)
    except OSError as exc:  # checked before; the disk may still fill up
        raise CliFailure(
            f"{not_written(output, exc)}; they stay on the server "
            f"(pravah results {job_id} --output FILE)"
        ) from None
    if not quiet and not is_stdout(output):
        err_console.print(f"wrote {count:,} result lines to {output}")
    return count


def results_command(
    job_id: Annotated[str, typer.Argument(help="Job id.", show_default=False)],
    output: OutputFile = None,
    json_output: JsonOutput = False,
    limit: Annotated[
        int | None,
        typer.Option("--limit", min=1, help="Items per page for --json (server default)."),
    ] = None,
    offset: Annotated[int, typer.Option("--offset", min=0, help="First item for --json.")] = 0,
    quiet: Quiet = False,
    server: Server = DEFAULT_SERVER,
    api_key: ApiKey = None,
    ca_file: CaFile = None,
) -> None:
    """Show a job's results summary, or save every per-file line with --output."""
    with handle_errors(), ApiClient(server, api_key=api_key, ca_file=ca_file) as api:
        if output is not None:
            check_output_file(output, json_output=json_output)
            _download_results(api, job_id, output, quiet=quiet or json_output)
            if not json_output:
                return
        params: dict[str, Any] = {"offset": offset}
        if limit is not None:
            params["limit"] = limit
        if not json_output:
            job = api.get_job(job_id)
            if job.get("results_removed_at"):
                # The summary is in the job; only the per-file lines are gone.
                render_summary(out_console, job)
                err_console.print(data(results_removed(job), style="yellow"))
                return
        page: dict[str, Any] = api.request("GET", f"/jobs/{job_id}/results", params=params)
        if json_output:
            dump_json(page)
            return
        if page.get("summary") is not None:
            job = {**job, "summary": page["summary"]}
        errors = [i for i in page.get("items", []) if isinstance(i, dict) and error_message(i)]
        if job_counts(job).files_failed and len(errors) < MAX_ERRORS_SHOWN:
            errors = api.first_errors(job_id)
        render_summary(out_console, job, errors)


def cancel_command(
    job_id: Annotated[str, typer.Argument(help="Job id.", show_default=False)],
    json_output: JsonOutput = False,
    server: Server = DEFAULT_SERVER,
    api_key: ApiKey = None,
    ca_file: CaFile = None,
) -> None:
    """Ask the server to cancel a job."""
    with handle_errors(), ApiClient(server, api_key=api_key, ca_file=ca_file) as api:
        job: dict[str, Any] = api.request("POST", f"/jobs/{job_id}/cancel")
        if json_output:
            dump_json(job)
        else:
            out_console.print(f"cancel requested for job {job_id} (status: {job.get('status')})")


def retry_command(
    job_id: Annotated[str, typer.Argument(help="Job id.", show_default=False)],
    failed: Annotated[
        bool,
        typer.Option("--failed", help="Retry exactly the files that failed (required for now)."),
    ] = False,
    json_output: JsonOutput = False,
    server: Server = DEFAULT_SERVER,
    api_key: ApiKey = None,
    ca_file: CaFile = None,
) -> None:
    """Start a new job over exactly the files that failed in JOB."""
    with handle_errors():
        if not failed:
            raise CliUsageError(
                f"add --failed: `pravah retry {job_id} --failed` starts a new job over "
                "exactly the files that failed (the one kind of retry there is for now)"
            )
    with handle_errors(), ApiClient(server, api_key=api_key, ca_file=ca_file) as api:
        job: dict[str, Any] = api.request("POST", f"/jobs/{job_id}/retry-failed")
        if json_output:
            dump_json(job)
        else:
            out_console.print(f"job {job.get('id')} retries the failed files of job {job_id}")


def jobs_command(
    status: Annotated[
        str | None,
        typer.Option("--status", "-s", help="Only jobs in this status.", show_default=False),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Most jobs shown.")] = 20,
    offset: Annotated[int, typer.Option("--offset", min=0, help="Jobs to skip.")] = 0,
    json_output: JsonOutput = False,
    server: Server = DEFAULT_SERVER,
    api_key: ApiKey = None,
    ca_file: CaFile = None,
) -> None:
    """List jobs, newest first."""
    with handle_errors(), ApiClient(server, api_key=api_key, ca_file=ca_file) as api:
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if status:
            params["status"] = status
        listing: Any = api.request("GET", "/jobs", params=params)
        if json_output:
            dump_json(listing)
            return
        items = listing
        if isinstance(listing, Mapping):
            items = listing.get("items") or listing.get("jobs") or listing.get("data") or []
        render_jobs_table(out_console, items)
        total = listing.get("total") if isinstance(listing, Mapping) else None
        if isinstance(total, int) and total > len(items):
            err_console.print(f"{len(items)} of {total} jobs shown (--limit/--offset for more)")
