"""docker-compose.yml: services, dependencies, env, volumes, GPU, persistence, bucket, Prometheus."""

from __future__ import annotations

from typing import Any

import pytest

from tests.deploy.deploy_files import ROOT, load_yaml_documents, parla_names
from tests.deploy.settings_names import PARLA_SETTINGS


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    [document] = load_yaml_documents(ROOT / "docker-compose.yml")
    assert isinstance(document, dict)
    return document


def env(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment", {})
    assert isinstance(environment, dict), "environment must be a mapping"
    return {key: str(value) for key, value in environment.items()}


def test_services_exist(compose: dict[str, Any]) -> None:
    assert {"redis", "minio", "minio-init", "api", "worker", "prometheus"} <= set(compose["services"])


def test_redis_keeps_an_append_only_file_on_a_volume(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command
    volume = next(v for v in redis["volumes"] if v.endswith(":/data"))
    assert volume.split(":")[0] in compose["volumes"]
    assert "redis-cli" in redis["healthcheck"]["test"]


def test_bucket_is_created_by_a_one_shot_init(compose: dict[str, Any]) -> None:
    init = compose["services"]["minio-init"]
    assert init["image"].startswith("minio/mc")
    assert init["depends_on"]["minio"]["condition"] == "service_healthy"
    script = " ".join(init["command"]) if isinstance(init["command"], list) else init["command"]
    bucket = env(compose["services"]["api"])["PARLA_S3_BUCKET"]
    assert f"mc mb --ignore-existing local/{bucket}" in script
    assert init.get("restart") == "no"
    assert compose["services"]["minio"]["healthcheck"]["test"]


@pytest.mark.parametrize("name", ["api", "worker"])
def test_api_and_worker_wait_for_healthy_dependencies(compose: dict[str, Any], name: str) -> None:
    depends = compose["services"][name]["depends_on"]
    assert depends["redis"]["condition"] == "service_healthy"
    assert depends["minio"]["condition"] == "service_healthy"
    assert depends["minio-init"]["condition"] == "service_completed_successfully"


@pytest.mark.parametrize("name", ["api", "worker"])
def test_api_and_worker_talk_to_redis_and_s3(compose: dict[str, Any], name: str) -> None:
    variables = env(compose["services"][name])
    assert variables["PARLA_REDIS_URL"].startswith("redis://redis:6379")
    assert variables["PARLA_STORAGE"] == "s3"
    assert variables["PARLA_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "PARLA_S3_BUCKET", "PARLA_WEBHOOK_SECRET"} <= set(
        variables
    )


def test_api_service(compose: dict[str, Any]) -> None:
    api = compose["services"]["api"]
    assert "8000:8000" in api["ports"]
    assert api["command"] == ["python", "-m", "service"]
    variables = env(api)
    assert variables["PARLA_API_KEYS"].startswith("${PARLA_API_KEYS:?")  # refuses to start without keys
    assert "/healthz" in " ".join(api["healthcheck"]["test"])


def test_worker_reserves_one_gpu_and_mounts_weights_read_only(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    assert worker["command"] == ["python", "-m", "worker"]
    [device] = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["count"] == 1 and device["capabilities"] == ["gpu"]
    [weights] = [volume for volume in worker["volumes"] if ":/weights" in volume]
    assert weights.endswith(":/weights:ro")
    variables = env(worker)
    assert variables["PARLA_WEIGHTS_DIR"] == "/weights"
    port = variables["PARLA_WORKER_METRICS_PORT"]
    assert port in worker["expose"]
    assert f"127.0.0.1:{port}/healthz" in " ".join(worker["healthcheck"]["test"])


def test_api_and_worker_run_the_same_image(compose: dict[str, Any]) -> None:
    api, worker = compose["services"]["api"], compose["services"]["worker"]
    assert api["image"] == worker["image"]
    assert api["build"]["dockerfile"] == worker["build"]["dockerfile"] == "Dockerfile"


def test_prometheus_scrapes_api_and_workers(compose: dict[str, Any]) -> None:
    prometheus = compose["services"]["prometheus"]
    assert any(v.startswith("./deploy/prometheus/prometheus.yml:") for v in prometheus["volumes"])
    [config] = load_yaml_documents(ROOT / "deploy" / "prometheus" / "prometheus.yml")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    worker_port = int(env(compose["services"]["worker"])["PARLA_WORKER_METRICS_PORT"])
    targets = set()
    for job in jobs.values():
        assert job.get("metrics_path", "/metrics") == "/metrics"
        for discovery in job.get("dns_sd_configs", []):
            targets |= {(name, discovery["port"]) for name in discovery["names"]}
        for static in job.get("static_configs", []):
            targets |= {(t.split(":")[0], int(t.split(":")[1])) for t in static["targets"]}
    assert ("api", 8000) in targets
    assert ("worker", worker_port) in targets


def test_every_parla_name_is_a_known_setting() -> None:
    used = parla_names((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    assert used, "the compose file configures nothing?"
    assert used <= set(PARLA_SETTINGS), f"unknown settings: {sorted(used - set(PARLA_SETTINGS))}"
