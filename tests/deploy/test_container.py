"""The Dockerfile, .dockerignore, shell scripts and docker-compose.yml, checked
without a container engine: hadolint and shellcheck (from PyPI), the compose
file against the Compose Specification schema (check-jsonschema's vendored
copy) and, where a `docker compose` binary exists, `docker compose config`."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
COMPOSE = REPO / "docker-compose.yml"
TEST_ENV = (
    "POSTGRES_PASSWORD=test-only-1\nMINIO_ROOT_PASSWORD=test-only-2\n"
    "PRAVAH_ADMIN_KEY=test-only-admin-key-0123456789\n"
)


def _run(*args: str | Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, check=False, **kwargs
    )


# ------------------------------------------------------------------ Dockerfile


def test_dockerfile_passes_hadolint():
    result = _run(
        BIN / "hadolint", "--config", REPO / "deploy" / "hadolint.yaml", "Dockerfile", cwd=REPO
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_really_lints():
    # Guard against a silently passing tool: a known-bad Dockerfile fails.
    result = _run(BIN / "hadolint", "-", input="FROM debian\nRUN cd /tmp && apt-get install x\n")
    assert result.returncode != 0 and "DL" in result.stdout


def test_shell_scripts_pass_shellcheck():
    scripts = sorted((REPO / "deploy").glob("*.sh"))
    assert scripts
    result = _run(BIN / "shellcheck", *scripts)
    assert result.returncode == 0, result.stdout


def _dockerfile() -> str:
    return (REPO / "Dockerfile").read_text()


def test_image_is_multi_stage_and_runs_as_non_root_under_tini():
    text = _dockerfile()
    stages = re.findall(r"^FROM \S+ AS (\S+)", text, re.M)
    assert stages == ["wheel", "venv", "runtime"]
    runtime = text.split("AS runtime", 1)[1]
    user = re.search(r"^USER (\d+):(\d+)", runtime, re.M)
    assert user and user.group(1) != "0"
    assert re.search(r'^ENTRYPOINT \["/usr/bin/tini", "--", "pravah-entrypoint"\]', runtime, re.M)
    assert re.search(r'^CMD \["combined"\]', runtime, re.M)
    assert re.search(r"^HEALTHCHECK .*\n.*pravah.healthcheck", runtime, re.M)
    # The runtime takes only the venv from the build stages: no compilers, no sources.
    assert re.findall(r"COPY --from=(\S+)", runtime) == ["venv"]
    # The wheel is built the way `make dist` builds it.
    assert "maturin build --release --locked" in text


def test_build_context_keeps_local_state_out():
    ignored = (REPO / ".dockerignore").read_text().split()
    for path in (".git", ".venv", "target", ".env", "tools/node_modules", "dist"):
        assert path in ignored
    for source in re.findall(r"^COPY (?!--from)(\S+)", _dockerfile(), re.M):
        assert (REPO / source).exists(), source
        assert source not in ignored


# ------------------------------------------------------------------ compose


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_file_matches_the_compose_specification():
    result = _run(BIN / "check-jsonschema", "--builtin-schema", "vendor.compose-spec", COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_runs_every_role_with_health_checks_and_named_volumes():
    services = _compose()["services"]
    assert {"postgres", "minio", "engine-1", "engine-2", "api", "worker", "migrate"} <= set(
        services
    )
    commands = {name: s.get("command") for name, s in services.items()}
    assert commands["engine-1"] == commands["engine-2"] == ["engine"]
    assert commands["api"] == ["serve"] and commands["worker"] == ["worker"]
    assert commands["migrate"] == ["migrate"]
    for name in ("postgres", "minio", "engine-1", "engine-2", "api"):
        assert services[name]["healthcheck"]["test"][0] == "CMD", name
    api_env = services["api"]["environment"]
    assert api_env["PRAVAH_ENGINE_URLS"] == "engine-1:50051,engine-2:50051"
    assert api_env["PRAVAH_RUN_WORKER"] == "false"
    assert api_env["AWS_ENDPOINT_URL"] == "http://minio:9000"
    # Engines check buckets and reach the store themselves: same settings.
    for engine in ("engine-1", "engine-2"):
        engine_env = services[engine]["environment"]
        for name in ("PRAVAH_ALLOWED_BUCKETS", "AWS_ENDPOINT_URL", "AWS_REGION"):
            assert engine_env[name] == api_env[name], (engine, name)
        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(engine_env)
    assert services["api"]["depends_on"]["migrate"]["condition"] == (
        "service_completed_successfully"
    )
    for engine in ("engine-1", "engine-2"):
        assert services["api"]["depends_on"][engine]["condition"] == "service_healthy"
        assert services["worker"]["depends_on"][engine]["condition"] == "service_healthy"
    named = set(_compose()["volumes"])
    assert {"pgdata", "miniodata", "pravah-state"} <= named
    # Engines, API and worker share the job workspaces at one path.
    for name in ("engine-1", "engine-2", "api", "worker"):
        assert "pravah-state:/var/lib/pravah" in services[name]["volumes"]


def test_compose_takes_secrets_only_from_the_env_file():
    text = COMPOSE.read_text()
    for secret in ("POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD", "PRAVAH_ADMIN_KEY"):
        uses = re.findall(r"\$\{" + secret + r"([^}]*)\}", text)
        assert uses and all(u.startswith(":?") for u in uses), secret  # required, no default
        assert re.search(rf"^# {secret}=", (REPO / ".env.template").read_text(), re.M)
    assert ".env" in (REPO / ".gitignore").read_text().split()


def _docker_compose() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and _run(docker, "compose", "version").returncode == 0:
        return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    if standalone and _run(standalone, "version").stdout.startswith("Docker Compose version v2"):
        return [standalone]
    return None


def test_docker_compose_config_resolves_the_file(tmp_path: Path):
    compose = _docker_compose()
    if compose is None:
        pytest.skip("no `docker compose` v2 binary here (schema and structure are checked above)")
    env = tmp_path / "test.env"
    env.write_text(TEST_ENV)
    args = [*compose, "-f", str(COMPOSE), "--project-directory", str(REPO)]
    result = _run(*args, "--env-file", env, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    import json

    config = json.loads(result.stdout)
    assert config["services"]["api"]["environment"]["DATABASE_URL"] == (
        "postgresql://pravah:test-only-1@postgres:5432/pravah"
    )
    missing = _run(*args, "--env-file", "/dev/null", "config", "--quiet")
    assert missing.returncode != 0 and "in .env" in missing.stderr
