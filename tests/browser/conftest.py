"""Fixtures for the browser tests: Debian's Chromium driven by Playwright
against a real `pravah serve` (real engine, SQLite) on a free port.

Why the system browser: Playwright's own browser download cannot work on
these machines; `make install` installs Debian's `chromium` instead, and a
missing browser fails the tests with that instruction rather than skipping
them. Every page records console errors, uncaught exceptions, failed
requests and HTTP errors; a test fails on any it did not declare expected.
Screenshots go to tests/browser/artifacts/ (gitignored).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))  # shared CLI harness

from cli_harness import TEST_ADMIN_KEY, Cli, Server, clean_env, free_port
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Page,
    Request,
    Response,
    sync_playwright,
)

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM = Path(os.environ.get("PRAVAH_CHROMIUM", "/usr/bin/chromium"))
# Flags known to work here: no sandbox as root, and no background networking
# (the machine's closed network would refuse those connections).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


# Module scope, not session: the sync Playwright API runs an event loop on the
# main thread while it is open, and pytest-asyncio tests cannot run under it.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: run `make install` (it installs Debian's "
            "`chromium` package) or set PRAVAH_CHROMIUM to a Chromium executable",
            pytrace=False,
        )
    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, engine_bin: Path) -> Iterator[Server]:
    """One `pravah serve` per test module, stopped with SIGINT (must end cleanly)."""
    base = tmp_path_factory.mktemp("serve")
    work = base / "cwd"
    work.mkdir()
    env = clean_env()
    env.update(PRAVAH_ENGINE_BIN=str(engine_bin), PRAVAH_STATE_DIR=str(base / "state"))
    cli = Cli(env=env, cwd=work, state_dir=base / "state")
    port = free_port()
    log = base / "serve.log"
    process = cli.popen("serve", "--port", str(port), log=log)
    running = Server(
        url=f"http://127.0.0.1:{port}", process=process, log=log, state_dir=base / "state"
    )
    import httpx
    from cli_harness import wait_for

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"pravah serve exited:\n{log.read_text()}")
        try:
            return httpx.get(f"{running.url}/readyz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(ready, 60, "pravah serve not ready in 60 s")
    yield running
    code, err = running.stop()
    assert code == 0, f"pravah serve exited with {code} on SIGINT:\n{err}"
    assert "Traceback" not in err, err


@pytest.fixture(scope="session")
def slow_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tree whose sha256 hashing takes many seconds but no disk space.

    Regression: a csv-header job over 30,000 small files finished in under a
    second, so the cancel click sometimes landed on a completed job. Two
    hundred sparse files of 128 MiB keep a hash job busy for well over the
    time the test needs, and the engine stops within one file of a cancel.
    """
    root = tmp_path_factory.mktemp("slow")
    for i in range(200):
        with (root / f"blob-{i:03d}.bin").open("wb") as f:
            f.truncate(128 * 1024 * 1024)
    return root


@dataclass
class Watched:
    """A page and everything that went wrong on it."""

    page: Page
    name: str
    problems: list[str] = field(default_factory=list)
    expected_statuses: list[tuple[str, int]] = field(default_factory=list)

    def expect_http_error(self, path_pattern: str, status: int) -> None:
        """Declare an HTTP error the test provokes on purpose (e.g. a 422 for a bad form)."""
        self.expected_statuses.append((path_pattern, status))

    def _expected(self, url: str, status: int) -> bool:
        return any(re.search(p, url) and s == status for p, s in self.expected_statuses)

    def shot(self, label: str, *, full_page: bool = True) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{self.name}-{label}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        return path


@pytest.fixture
def web(browser: Browser, server: Server, request: pytest.FixtureRequest) -> Iterator[Watched]:
    context = browser.new_context(base_url=server.url, viewport={"width": 1200, "height": 900})
    # Signed in as the test admin, as a person who typed the key in the box.
    context.add_init_script(f"localStorage.setItem('pravah.apiKey', {TEST_ADMIN_KEY!r})")
    page = context.new_page()
    page.set_default_timeout(30_000)
    watched = Watched(page=page, name=request.node.name.removeprefix("test_")[:60])

    def on_console(msg: ConsoleMessage) -> None:
        if msg.type != "error":
            return
        # Chrome logs every 4xx/5xx answer as a console error; those the
        # test provoked on purpose are declared and checked by status.
        if "Failed to load resource" in msg.text and watched.expected_statuses:
            status = re.search(r"status of (\d+)", msg.text)
            if status and any(s == int(status.group(1)) for _, s in watched.expected_statuses):
                return
        watched.problems.append(f"console error: {msg.text} at {msg.location}")

    def on_failed(req: Request) -> None:
        failure = req.failure or ""
        # A page aborts its own event streams when the user navigates away.
        if "ERR_ABORTED" in failure and "/events" in req.url:
            return
        watched.problems.append(f"request failed: {req.method} {req.url}: {failure}")

    def on_response(resp: Response) -> None:
        if resp.status >= 400 and not watched._expected(resp.url, resp.status):
            watched.problems.append(f"HTTP {resp.status}: {resp.request.method} {resp.url}")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: watched.problems.append(f"page error: {exc}"))
    page.on("requestfailed", on_failed)
    page.on("response", on_response)
    yield watched
    context.close()
    assert watched.problems == [], "\n".join(watched.problems)
