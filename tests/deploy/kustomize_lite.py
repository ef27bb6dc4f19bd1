"""A small kustomize for the tests: renders deploy/k8s overlays without kubectl.

Why: kustomize (or kubectl) is not installable from the package registries
this project may use, yet `make test` must validate exactly what
`kubectl apply -k` would send. This renders the subset the manifests use -
`resources` (files and directories), `namespace`, `images`, `replicas` and
strategic-merge `patches` (maps merge, lists of named items merge by name,
other lists are replaced) - and test_k8s.py compares it with
`kubectl kustomize` wherever kubectl is installed, so the subset cannot drift.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

Resource = dict[str, Any]

# Kinds without a namespace among those the manifests could use.
CLUSTER_SCOPED = {
    "Namespace",
    "PersistentVolume",
    "StorageClass",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PriorityClass",
}
SUPPORTED_KEYS = {"apiVersion", "kind", "resources", "namespace", "images", "replicas", "patches"}


def load_documents(path: Path) -> list[Resource]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def key(resource: Resource) -> tuple[str, str]:
    return resource["kind"], resource["metadata"]["name"]


def merge(base: Any, patch: Any) -> Any:
    """Strategic merge for the shapes the manifests use."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for name, value in patch.items():
            out[name] = merge(base[name], value) if name in base else copy.deepcopy(value)
        return out
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(i, dict) and "name" in i for i in base + patch)
    ):
        merged = [dict(i) for i in base]
        index = {item["name"]: n for n, item in enumerate(merged)}
        added = []
        for item in patch:
            if item["name"] in index:
                merged[index[item["name"]]] = merge(merged[index[item["name"]]], item)
            else:
                added.append(copy.deepcopy(item))
        return added + merged  # kustomize puts new named items first
    return copy.deepcopy(patch)


def _pod_specs(resource: Resource) -> list[Resource]:
    template = resource.get("spec", {}).get("template", {})
    return [template["spec"]] if "spec" in template else []


def _set_image(image: str, rule: Resource) -> str:
    name, _, tag = image.partition(":")
    if name != rule["name"]:
        return image
    name = rule.get("newName", name)
    tag = str(rule.get("newTag", tag))
    return f"{name}:{tag}" if tag else name


def render(directory: Path) -> list[Resource]:
    """The resources `kustomize build directory` would emit (in no set order)."""
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(spec) - SUPPORTED_KEYS
    if unknown:
        raise ValueError(f"{directory}: kustomize_lite does not support {sorted(unknown)}")
    resources: list[Resource] = []
    for entry in spec.get("resources", []):
        path = directory / entry
        resources += render(path) if path.is_dir() else load_documents(path)
    by_key = {key(r): r for r in resources}
    if len(by_key) != len(resources):
        raise ValueError(f"{directory}: duplicate resources")
    for patch_entry in spec.get("patches", []):
        for patch in load_documents(directory / patch_entry["path"]):
            target = by_key[key(patch)]  # KeyError: a patch for nothing
            by_key[key(patch)] = merge(target, patch)
    for rule in spec.get("replicas", []):
        by_key[("Deployment", rule["name"])]["spec"]["replicas"] = rule["count"]
    for rule in spec.get("images", []):
        for resource in by_key.values():
            for pod in _pod_specs(resource):
                for container in pod.get("containers", []) + pod.get("initContainers", []):
                    container["image"] = _set_image(container["image"], rule)
    if "namespace" in spec:
        for resource in by_key.values():
            if resource["kind"] not in CLUSTER_SCOPED:
                resource["metadata"]["namespace"] = spec["namespace"]
    return list(by_key.values())
