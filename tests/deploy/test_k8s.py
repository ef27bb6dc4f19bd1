"""deploy/k8s: the overlay renders, every object is valid against the Kubernetes
OpenAPI schemas (kubernetes-validate, offline, strict: unknown fields fail), and
the wiring holds - probes on the real endpoints, selectors that match, an HPA
on the engines, PDBs, and engines reachable only from the control plane."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kustomize_lite import key, render

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
OVERLAY = K8S / "overlays" / "production"

Resource = dict[str, Any]


@pytest.fixture(scope="module", params=["base", "overlays/production"])
def rendered(request: pytest.FixtureRequest) -> dict[tuple[str, str], Resource]:
    return {key(r): r for r in render(K8S / request.param)}


def _pod_spec(resource: Resource) -> Resource:
    return resource["spec"]["template"]["spec"]


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_every_object_validates_against_the_kubernetes_schemas(rendered):
    version = kubernetes_validate.latest_version()
    for resource in rendered.values():
        kubernetes_validate.validate(resource, version, strict=True)


def test_schema_validation_rejects_a_broken_probe():
    # The validator really checks nested fields (not only kind/apiVersion).
    resource = render(K8S / "base")
    engine = next(r for r in resource if key(r) == ("Deployment", "pravah-engine"))
    _pod_spec(engine)["containers"][0]["livenessProbe"]["grpc"]["port"] = "grpc"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(engine, kubernetes_validate.latest_version(), strict=True)


def test_overlay_render_matches_kubectl_kustomize():
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed; kustomize_lite renders the overlay alone")
    for directory in (K8S / "base", OVERLAY):
        out = subprocess.run(
            [kubectl, "kustomize", str(directory)], capture_output=True, text=True, check=True
        ).stdout
        theirs = {key(r): r for r in yaml.safe_load_all(out) if r}
        assert {key(r): r for r in render(directory)} == theirs


def test_all_roles_and_their_objects_exist(rendered):
    expected = {
        ("Deployment", "pravah-engine"),
        ("Service", "pravah-engine"),
        ("HorizontalPodAutoscaler", "pravah-engine"),
        ("PodDisruptionBudget", "pravah-engine"),
        ("Deployment", "pravah-api"),
        ("Service", "pravah-api"),
        ("PodDisruptionBudget", "pravah-api"),
        ("Deployment", "pravah-worker"),
        ("PodDisruptionBudget", "pravah-worker"),
        ("Job", "pravah-migrate"),
        ("ConfigMap", "pravah-config"),
        ("NetworkPolicy", "pravah-engine-ingress"),
    }
    assert expected <= set(rendered)


def test_secrets_are_referenced_never_defined(rendered):
    assert not [k for k in rendered if k[0] == "Secret"]
    text = "\n".join(p.read_text() for p in K8S.rglob("*.yaml"))
    assert not re.search(r"(?i)password\s*[:=]\s*\S+", text.replace("PASSWORD@", ""))
    for resource in rendered.values():
        if resource["kind"] not in ("Deployment", "Job"):
            continue
        for container in _pod_spec(resource)["containers"]:
            refs = [e for e in container.get("envFrom", []) if "secretRef" in e]
            assert [r["secretRef"]["name"] for r in refs] == ["pravah-secrets"], key(resource)
            config = [
                e["configMapRef"]["name"] for e in container["envFrom"] if "configMapRef" in e
            ]
            assert config == ["pravah-config"]


def test_containers_have_resources_and_run_as_the_images_user(rendered):
    dockerfile_user = re.search(r"^USER (\d+)", (REPO / "Dockerfile").read_text(), re.M)
    assert dockerfile_user is not None
    for resource in rendered.values():
        if resource["kind"] not in ("Deployment", "Job"):
            continue
        pod = _pod_spec(resource)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert str(pod["securityContext"]["runAsUser"]) == dockerfile_user.group(1)
        for container in pod["containers"]:
            resources = container["resources"]
            assert set(resources) == {"requests", "limits"}, key(resource)
            assert {"cpu", "memory"} <= set(resources["requests"]) & set(resources["limits"])


def test_engine_probes_use_grpc_health_on_the_served_port(rendered):
    engine = _pod_spec(rendered[("Deployment", "pravah-engine")])["containers"][0]
    port = engine["ports"][0]["containerPort"]
    listen = {e["name"]: e["value"] for e in engine["env"]}["PRAVAH_ENGINE_LISTEN"]
    assert listen.endswith(f":{port}")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert engine[probe]["grpc"] == {"port": port}


def test_api_probes_hit_routes_the_app_serves(rendered):
    from pravah.api.app import create_app

    paths = set(create_app().openapi()["paths"])
    api = _pod_spec(rendered[("Deployment", "pravah-api")])["containers"][0]
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert api[probe]["httpGet"]["path"] in paths
        assert api[probe]["httpGet"]["port"] == api["ports"][0]["name"]
    env = {e["name"]: e["value"] for e in api["env"]}
    assert env["PRAVAH_RUN_WORKER"] == "false"  # jobs run in the worker Deployment
    assert api["args"] == ["serve"]


def test_roles_run_the_entrypoint_commands(rendered):
    args = {
        name: _pod_spec(rendered[("Deployment", name)])["containers"][0]["args"]
        for name in ("pravah-engine", "pravah-api", "pravah-worker")
    }
    assert args == {
        "pravah-engine": ["engine"],
        "pravah-api": ["serve"],
        "pravah-worker": ["worker"],
    }
    job = rendered[("Job", "pravah-migrate")]
    assert _pod_spec(job)["containers"][0]["args"] == ["migrate"]


def test_services_pdbs_and_hpa_point_at_real_pods(rendered):
    pods = {
        name: r["spec"]["template"]["metadata"]["labels"]
        for (kind, name), r in rendered.items()
        if kind == "Deployment"
    }
    for (kind, name), r in rendered.items():
        if kind == "Deployment":
            assert _selects(r["spec"]["selector"]["matchLabels"], pods[name])
        if kind == "Service":
            assert [n for n, labels in pods.items() if _selects(r["spec"]["selector"], labels)] == [
                name
            ]
        if kind == "PodDisruptionBudget":
            selector = r["spec"]["selector"]["matchLabels"]
            assert [n for n, labels in pods.items() if _selects(selector, labels)] == [name]
    hpa = rendered[("HorizontalPodAutoscaler", "pravah-engine")]["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "pravah-engine",
    }
    assert hpa["metrics"][0]["resource"]["name"] == "cpu"
    assert hpa["minReplicas"] >= 2
    config = rendered[("ConfigMap", "pravah-config")]["data"]
    service = rendered[("Service", "pravah-engine")]
    assert config["PRAVAH_ENGINE_URLS"] == f"pravah-engine:{service['spec']['ports'][0]['port']}"


def test_only_the_control_plane_reaches_the_engines(rendered):
    policy = rendered[("NetworkPolicy", "pravah-engine-ingress")]["spec"]
    labels = {
        name: r["spec"]["template"]["metadata"]["labels"]
        for (kind, name), r in rendered.items()
        if kind == "Deployment"
    }
    assert _selects(policy["podSelector"]["matchLabels"], labels["pravah-engine"])
    assert policy["policyTypes"] == ["Ingress"]
    grpc_rule, metrics_rule = policy["ingress"]
    allowed = {
        name
        for peer in grpc_rule["from"]
        for name, pod in labels.items()
        if set(peer) == {"podSelector"} and _selects(peer["podSelector"]["matchLabels"], pod)
    }
    assert allowed == {"pravah-api", "pravah-worker"}
    assert grpc_rule["ports"] == [{"protocol": "TCP", "port": 50051}]
    # Prometheus may scrape the metrics port, and only that port.
    (scraper,) = metrics_rule["from"]
    assert scraper["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"}
    assert metrics_rule["ports"] == [{"protocol": "TCP", "port": 9464}]
    engine = _pod_spec(rendered[("Deployment", "pravah-engine")])["containers"][0]
    env = {e["name"]: e.get("value") for e in engine["env"]}
    assert env["PRAVAH_ENGINE_METRICS_LISTEN"] == "0.0.0.0:9464"


def test_engines_and_control_plane_share_the_s3_settings(rendered):
    # The engine checks buckets itself: it must see the same allowed list and
    # region as the control plane (from the ConfigMap), and the S3 keys (from
    # the Secret); none of them is overridden per container.
    config = rendered[("ConfigMap", "pravah-config")]["data"]
    assert "PRAVAH_ALLOWED_BUCKETS" in config and "AWS_REGION" in config
    for name in ("pravah-engine", "pravah-api", "pravah-worker"):
        container = _pod_spec(rendered[("Deployment", name)])["containers"][0]
        sources = [next(iter(e.values()))["name"] for e in container["envFrom"]]
        assert sources == ["pravah-config", "pravah-secrets"], name
        own = {e["name"] for e in container.get("env", [])}
        assert not own & {"PRAVAH_ALLOWED_BUCKETS", "AWS_REGION", "S3_ENDPOINT_URL"}, name


def test_overlay_sets_namespace_image_and_replicas():
    rendered = {key(r): r for r in render(OVERLAY)}
    for (kind, _), resource in rendered.items():
        if kind != "Namespace":
            assert resource["metadata"]["namespace"] == "pravah"
    images = {
        c["image"]
        for r in rendered.values()
        if r["kind"] in ("Deployment", "Job")
        for c in _pod_spec(r)["containers"]
    }
    assert len(images) == 1 and next(iter(images)).endswith("/pravah:0.1.0")
    assert rendered[("Deployment", "pravah-api")]["spec"]["replicas"] == 3
    assert rendered[("HorizontalPodAutoscaler", "pravah-engine")]["spec"]["maxReplicas"] == 30
