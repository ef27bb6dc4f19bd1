"""Property-based API tests: schemathesis against the published OpenAPI document.

Requests generated from the schema (valid and invalid) go to a real
`pravah serve` with an admin key. Two properties must hold for every one:
no 5xx, and every response that the schema describes matches it. Status
codes the schema does not list (401, 404, 409, 422) are the API's documented
error shape and are not checked here. Bounded: a few examples per operation,
so the whole module takes well under a minute on two cores.

Marked `serial`: schemathesis gives all its items (one per operation) the
same node id, and pytest-xdist, which hands out tests by node id, would run
one of them and drop the rest without a word. `make test` runs serial tests
in a second, plain pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from cli_harness import AUTH, Cli, Server, clean_env, free_port, wait_for
from hypothesis import HealthCheck, settings
from pravah.api.app import create_app
from pravah.settings import Settings
from schemathesis.checks import not_a_server_error, response_schema_conformance

pytestmark = pytest.mark.serial

MAX_EXAMPLES = 15

_raw = create_app(Settings(admin_key=None)).openapi()
# Event streams never end by design; their guards and 404s are tested elsewhere.
schema = schemathesis.openapi.from_dict(_raw).exclude(path_regex=r"events")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, engine_bin: Path) -> Iterator[Server]:

    base = tmp_path_factory.mktemp("props")
    (base / "cwd").mkdir()
    (base / "data").mkdir()
    (base / "data" / "a.csv").write_text("x,y\n1,2\n")
    env = clean_env()
    env.update(
        PRAVAH_ENGINE_BIN=str(engine_bin),
        PRAVAH_STATE_DIR=str(base / "state"),
        PRAVAH_ALLOWED_ROOTS=str(base / "data"),
        PRAVAH_RUN_WORKER="false",
    )
    cli = Cli(env=env, cwd=base / "cwd", state_dir=base / "state")
    port = free_port()
    log = base / "serve.log"
    running = Server(
        url=f"http://127.0.0.1:{port}",
        process=cli.popen("serve", "--port", str(port), log=log),
        log=log,
    )

    def ready() -> bool:
        assert running.process.poll() is None, log.read_text()
        try:
            return httpx.get(f"{running.url}/readyz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(ready, 60, "pravah serve not ready in 60 s")
    yield running
    code, err = running.stop()
    assert code == 0, err


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_server_errors_and_responses_match_schema(case: schemathesis.Case, live: Server) -> None:
    case.call_and_validate(
        base_url=live.url,
        headers=AUTH,
        timeout=30,
        checks=[not_a_server_error, response_schema_conformance],
    )
