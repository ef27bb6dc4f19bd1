"""The release pipeline: valid GitHub workflow syntax (check-jsonschema's
vendored schema) and the same make targets a developer runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / ".github" / "workflows" / "ci.yml"


def _workflow() -> dict[str, Any]:
    return yaml.safe_load(WORKFLOW.read_text())


def test_workflows_match_the_github_workflow_schema():
    files = sorted((REPO / ".github" / "workflows").glob("*.yml"))
    result = subprocess.run(
        [
            Path(sys.executable).parent / "check-jsonschema",
            "--builtin-schema",
            "vendor.github-workflows",
            *files,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _runs(job: dict[str, Any]) -> list[str]:
    return [step["run"] for step in job["steps"] if "run" in step]


def test_ci_runs_the_developers_make_targets():
    jobs = _workflow()["jobs"]
    assert "make lint" in _runs(jobs["lint"])
    assert "make test" in _runs(jobs["test"])
    assert {"make dist", "make dist-check"} <= set(_runs(jobs["wheel"]))
    makefile = (REPO / "Makefile").read_text()
    for target in ("lint", "test", "dist", "dist-check"):
        assert re.search(rf"^{target}:", makefile, re.M), target


def test_image_on_main_and_tags_release_only_on_v_tags():
    workflow = _workflow()
    triggers = workflow[True] if True in workflow else workflow["on"]  # YAML 1.1: on -> True
    assert triggers["push"]["branches"] == ["main"] and triggers["push"]["tags"] == ["v*"]
    assert "pull_request" in triggers
    jobs = workflow["jobs"]
    assert jobs["image"]["if"] == "github.event_name == 'push'"
    assert set(jobs["image"]["needs"]) == {"lint", "test", "wheel"}
    assert jobs["publish"]["if"] == "startsWith(github.ref, 'refs/tags/v')"
    assert "image" in jobs["publish"]["needs"]
    uses = [s.get("uses", "") for s in jobs["publish"]["steps"]]
    assert any(u.startswith("pypa/gh-action-pypi-publish") for u in uses)
    assert any(
        s.get("uses", "").startswith("docker/build-push-action") and s["with"]["push"] is True
        for s in jobs["image"]["steps"]
    )
