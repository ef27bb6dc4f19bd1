"""Security from the outside: `pravah keys`, client keys, HTTPS, and what `serve` refuses."""

from __future__ import annotations

import json
import ssl
import time
from pathlib import Path

import httpx
import pytest
import trustme
from cli_harness import Cli, Server, free_port


def _without_keys(cli: Cli, **extra: str) -> Cli:
    env = {k: v for k, v in cli.env.items() if k not in ("PRAVAH_ADMIN_KEY", "PRAVAH_API_KEY")}
    env.update(extra)
    return Cli(env=env, cwd=cli.cwd, state_dir=cli.state_dir)


def test_serve_refuses_a_public_address_without_any_key(cli: Cli) -> None:
    bare = _without_keys(cli)
    port = str(free_port())
    result = bare.run("serve", "--host", "0.0.0.0", "--port", port, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "no API key yet" in result.stderr
    result = bare.run(
        "serve", "--host", "0.0.0.0", "--port", port, extra_env={"PRAVAH_AUTH": "off"}
    )
    assert result.returncode == 2
    assert "PRAVAH_AUTH=off" in result.stderr


def test_placeholder_admin_key_is_rejected_in_production(cli: Cli) -> None:
    result = cli.run(
        "serve",
        "--port",
        str(free_port()),
        extra_env={"PRAVAH_ADMIN_KEY": "changethis", "PRAVAH_ENVIRONMENT": "production"},
    )
    assert result.returncode == 2
    assert "placeholder" in result.stderr
    assert "changethis" not in result.stderr  # the value itself is never echoed


def test_keys_create_list_revoke_and_client_api_key(cli: Cli, server: Server) -> None:
    bare = _without_keys(cli)
    created = bare.run("keys", "create", "--role", "operator", "--name", "ci", "--json")
    assert created.returncode == 0, created.stderr
    info = json.loads(created.stdout)
    key = info["key"]
    listing = bare.run("keys", "list", "--json")
    assert info["id"] in listing.stdout and key not in listing.stdout
    ok = bare.run("jobs", "--server", server.url, "--api-key", key)
    assert ok.returncode == 0, ok.stderr
    none = bare.run("jobs", "--server", server.url)
    assert none.returncode == 1 and "--api-key" in none.stderr
    assert bare.run("keys", "revoke", info["id"]).returncode == 0
    revoked = bare.run("jobs", "--server", server.url, extra_env={"PRAVAH_API_KEY": key})
    assert revoked.returncode == 1 and "revoked" in revoked.stderr
    for result in (created, listing, ok, none, revoked):
        assert key not in result.stderr


def test_keys_create_rejects_unknown_role(cli: Cli) -> None:
    result = cli.run("keys", "create", "--role", "root")
    assert result.returncode == 2 and "unknown role" in result.stderr


@pytest.mark.parametrize(
    ("expires", "needle"),
    [
        ("99999999d", "longer than 100 years"),
        ("-1d", "invalid --expires"),
        ("1.5h", "invalid --expires"),
    ],
)
def test_keys_create_rejects_a_lifetime_it_cannot_use(cli: Cli, expires: str, needle: str) -> None:
    # 99999999d ended in an OverflowError traceback (past year 9999).
    result = cli.run("keys", "create", "--expires", expires)
    assert result.returncode == 2, result.stderr
    assert needle in result.stderr and "Traceback" not in result.stderr
    assert "pvh_" not in result.stdout  # no key was made


def test_https_only_when_a_certificate_is_configured(cli: Cli, tmp_path: Path) -> None:
    ca, other = trustme.CA(), trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_file, key_file, ca_file = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert_file.write_bytes(b"".join(b.bytes() for b in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(ca_file))
    port = free_port()
    log = tmp_path / "serve.log"
    process = cli.popen(
        "serve",
        "--port",
        str(port),
        log=log,
        extra_env={"PRAVAH_TLS_CERT_FILE": str(cert_file), "PRAVAH_TLS_KEY_FILE": str(key_file)},
    )
    running = Server(url=f"https://127.0.0.1:{port}", process=process, log=log)
    trusted = ssl.create_default_context(cafile=str(ca_file))
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"{running.url}/readyz", verify=trusted, timeout=1).is_success:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)  # plaintext
        wrong = ssl.create_default_context()
        wrong.load_verify_locations(cadata=other.cert_pem.bytes().decode())
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{running.url}/readyz", verify=wrong, timeout=5)
        result = cli.run("jobs", "--server", running.url, "--ca-file", str(ca_file))
        assert result.returncode == 0, result.stderr
    finally:
        code, err = running.stop()
    assert code == 0, err
