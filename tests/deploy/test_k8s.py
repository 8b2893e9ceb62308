"""deploy/k8s: GPU workers (one GPU each), API Deployment + Service, KEDA on queue + in-flight."""

from __future__ import annotations

from typing import Any

import pytest

from tests.deploy.deploy_files import ROOT, load_yaml_documents, parla_names
from tests.deploy.settings_names import PARLA_SETTINGS

K8S = ROOT / "deploy" / "k8s"


@pytest.fixture(scope="module")
def objects() -> dict[tuple[str, str], dict[str, Any]]:
    found = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in load_yaml_documents(path):
            found[(document["kind"], document["metadata"]["name"])] = document
    return found


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    [only] = deployment["spec"]["template"]["spec"]["containers"]
    return only


def env_names(item: dict[str, Any]) -> dict[str, str]:
    return {entry["name"]: str(entry.get("value")) for entry in item.get("env", [])}


def effective_env(objects: dict[tuple[str, str], Any], deployment: str) -> dict[str, str]:
    """What the container sees: the ConfigMaps of ``envFrom``, then ``env`` (which wins)."""
    main = container(objects[("Deployment", deployment)])
    seen: dict[str, str] = {}
    for source in main["envFrom"]:
        if "configMapRef" in source:
            seen |= {
                key: str(value)
                for key, value in objects[("ConfigMap", source["configMapRef"]["name"])]["data"].items()
            }
    return seen | env_names(main)


def test_api_and_worker_see_the_same_engine_settings(objects: dict[tuple[str, str], Any]) -> None:
    """The API enqueues on ``parla-<engine>``, a worker serves PARLA_ENGINE's queue: they must agree."""
    api, worker = effective_env(objects, "parla-api"), effective_env(objects, "parla-worker")
    for name in ("PARLA_ENGINE", "PARLA_ENGINES", "PARLA_ENGINE_CONFIG"):
        assert api.get(name) == worker.get(name), name
    assert "PARLA_ENGINE" in objects[("ConfigMap", "parla-config")]["data"], "shared: in the ConfigMap"
    accepted = [e.strip() for e in api.get("PARLA_ENGINES", "").split(",") if e.strip()]
    assert not accepted or worker["PARLA_ENGINE"] in accepted


def test_worker_metrics_listen_beyond_loopback(objects: dict[tuple[str, str], Any]) -> None:
    assert (
        env_names(container(objects[("Deployment", "parla-worker")]))["PARLA_WORKER_METRICS_HOST"]
        == "0.0.0.0"
    )


def test_kustomization_pins_the_image() -> None:
    [kustomization] = load_yaml_documents(K8S / "kustomization.yaml")
    [image] = kustomization["images"]
    assert image.get("digest") or (image.get("newTag") and image["newTag"] != "latest")


def test_kustomization_lists_every_manifest_but_the_example_secret() -> None:
    [kustomization] = load_yaml_documents(K8S / "kustomization.yaml")
    listed = set(kustomization["resources"])
    on_disk = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert listed == on_disk


def test_worker_takes_exactly_one_gpu_and_mounts_weights_read_only(
    objects: dict[tuple[str, str], Any],
) -> None:
    worker = objects[("Deployment", "parla-worker")]
    main = container(worker)
    assert main["command"] == ["python", "-m", "worker"]
    assert str(main["resources"]["limits"]["nvidia.com/gpu"]) == "1"
    [mount] = [m for m in main["volumeMounts"] if m["mountPath"] == "/weights"]
    assert mount["readOnly"] is True
    assert env_names(main)["PARLA_WEIGHTS_DIR"] == "/weights"
    port = int(env_names(main)["PARLA_WORKER_METRICS_PORT"])
    assert {"name": "metrics", "containerPort": port} in main["ports"]
    assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert worker["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0
    assert worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 60


def test_api_deployment_and_service(objects: dict[tuple[str, str], Any]) -> None:
    api = objects[("Deployment", "parla-api")]
    main = container(api)
    assert main["command"] == ["python", "-m", "service"]
    assert main["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert main["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert "nvidia.com/gpu" not in main["resources"].get("limits", {})
    service = objects[("Service", "parla-api")]
    assert service["spec"]["selector"] == api["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["ports"][0]["port"] == 8000


@pytest.mark.parametrize("name", ["parla-api", "parla-worker"])
def test_pods_run_the_same_image_as_non_root(objects: dict[tuple[str, str], Any], name: str) -> None:
    deployment = objects[("Deployment", name)]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert container(deployment)["image"] == "parla"
    sources = {next(iter(ref.values()))["name"] for ref in container(deployment)["envFrom"]}
    assert sources == {"parla-config", "parla-secrets"}


def test_keda_scales_workers_on_queue_depth_plus_in_flight(objects: dict[tuple[str, str], Any]) -> None:
    scaled = objects[("ScaledObject", "parla-worker")]
    assert scaled["spec"]["scaleTargetRef"]["name"] == "parla-worker"
    [trigger] = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    query = trigger["metadata"]["query"]
    assert "max(parla_queue_depth)" in query and "max(parla_jobs_in_flight)" in query and "sum(" not in query
    assert trigger["metadata"]["threshold"] == "1"
    assert 0 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]


def test_secret_example_holds_placeholders_only(objects: dict[tuple[str, str], Any]) -> None:
    secret = objects[("Secret", "parla-secrets")]
    assert all("CHANGE" in value.upper() for value in secret["stringData"].values())


def test_every_parla_name_is_a_known_setting() -> None:
    used: set[str] = set()
    for path in K8S.glob("*.yaml"):
        used |= parla_names(path.read_text(encoding="utf-8"))
    assert used, "the manifests configure nothing?"
    assert used <= set(PARLA_SETTINGS), f"unknown settings: {sorted(used - set(PARLA_SETTINGS))}"
