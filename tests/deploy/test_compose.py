"""docker-compose.yml: services, dependencies, env, volumes, GPU, persistence, bucket, Prometheus, pins."""

from __future__ import annotations

import re
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


def interpolate(value: str) -> str:
    """The value Compose passes when the operator's shell sets nothing: ``${NAME:-default}`` → default."""
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", value)


def test_services_exist(compose: dict[str, Any]) -> None:
    assert {"redis", "s3", "s3-init", "api", "worker", "prometheus"} <= set(compose["services"])


def test_redis_keeps_an_append_only_file_on_a_volume(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command
    volume = next(v for v in redis["volumes"] if v.endswith(":/data"))
    assert volume.split(":")[0] in compose["volumes"]
    assert "redis-cli" in redis["healthcheck"]["test"]


def test_s3_server_is_healthchecked_and_keeps_its_data(compose: dict[str, Any]) -> None:
    s3 = compose["services"]["s3"]
    assert s3["image"].startswith("chrislusf/seaweedfs:")
    assert s3["command"][0] == "server" and "-s3" in s3["command"] and "-s3.port=8333" in s3["command"]
    assert "http://127.0.0.1:8333/healthz" in s3["healthcheck"]["test"]
    volume = next(v for v in s3["volumes"] if v.endswith(":/data"))
    assert volume.split(":")[0] in compose["volumes"]
    public = interpolate(env(compose["services"]["api"])["PARLA_S3_PUBLIC_ENDPOINT_URL"])
    assert f"{public.rsplit(':', 1)[1]}:8333" in s3["ports"], "presigned URLs must name a published port"


def test_s3_server_and_parla_share_one_key_pair(compose: dict[str, Any]) -> None:
    server = env(compose["services"]["s3"])
    for name in ("api", "worker", "s3-init"):
        client = env(compose["services"][name])
        assert client["AWS_ACCESS_KEY_ID"] == server["AWS_ACCESS_KEY_ID"]
        assert client["AWS_SECRET_ACCESS_KEY"] == server["AWS_SECRET_ACCESS_KEY"]


def test_bucket_is_created_by_a_one_shot_init(compose: dict[str, Any]) -> None:
    init = compose["services"]["s3-init"]
    assert init["image"] == compose["services"]["api"]["image"], "the init runs the Parla image's script"
    assert init["command"][:2] == ["python", "/app/create_bucket.py"]
    assert "COPY deploy/healthcheck.py deploy/create_bucket.py /app/" in (ROOT / "Dockerfile").read_text()
    assert init["depends_on"]["s3"]["condition"] == "service_healthy"
    assert init.get("restart") == "no"
    # The bucket, endpoint and keys it creates with are exactly those that api and worker use.
    assert env(init) == {
        key: value for key, value in env(compose["services"]["api"]).items() if key in env(init)
    }
    assert {"PARLA_S3_BUCKET", "PARLA_S3_ENDPOINT_URL", "PARLA_STORAGE"} <= set(env(init))


@pytest.mark.parametrize("name", ["api", "worker"])
def test_api_and_worker_wait_for_healthy_dependencies(compose: dict[str, Any], name: str) -> None:
    depends = compose["services"][name]["depends_on"]
    assert depends["redis"]["condition"] == "service_healthy"
    assert depends["s3"]["condition"] == "service_healthy"
    assert depends["s3-init"]["condition"] == "service_completed_successfully"


@pytest.mark.parametrize("name", ["api", "worker"])
def test_api_and_worker_talk_to_redis_and_s3(compose: dict[str, Any], name: str) -> None:
    variables = env(compose["services"][name])
    assert variables["PARLA_REDIS_URL"].startswith("redis://redis:6379")
    assert variables["PARLA_STORAGE"] == "s3"
    assert variables["PARLA_S3_ENDPOINT_URL"] == "http://s3:8333"
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


def test_api_and_worker_see_the_same_engine_settings(compose: dict[str, Any]) -> None:
    """The API enqueues on ``parla-<engine>``, a worker serves PARLA_ENGINE's queue: they must agree."""
    api, worker = env(compose["services"]["api"]), env(compose["services"]["worker"])
    for name in ("PARLA_ENGINE", "PARLA_ENGINES", "PARLA_ENGINE_CONFIG"):
        assert api.get(name) == worker.get(name), name
    assert "PARLA_ENGINE" in api
    served = interpolate(worker["PARLA_ENGINE"])
    accepted = [e.strip() for e in interpolate(api.get("PARLA_ENGINES", "")).split(",") if e.strip()]
    default = interpolate(api["PARLA_ENGINE"])
    assert default == served and (not accepted or served in accepted)


def test_worker_metrics_listen_beyond_loopback(compose: dict[str, Any]) -> None:
    assert env(compose["services"]["worker"])["PARLA_WORKER_METRICS_HOST"] == "0.0.0.0"


# An exact release: three numbers (`7.4.11`, `v3.5.5`), or a digest. SeaweedFS numbers each release
# with two (`4.44`), so two are exact there; `redis:7.4-alpine` would float.
EXACT_TAG = {"chrislusf/seaweedfs": r"\d+\.\d+"}


def is_pinned(image: str) -> bool:
    if re.search(r"@sha256:[0-9a-f]{64}$", image):
        return True
    repository, _, tag = image.rpartition(":")
    exact = EXACT_TAG.get(repository, r"v?\d+\.\d+\.\d+")
    return bool(repository) and re.fullmatch(exact + r"(-[a-z0-9.]+)?", tag) is not None


@pytest.mark.parametrize("name", ["redis", "s3", "prometheus"])
def test_pulled_images_are_pinned_to_exact_versions(compose: dict[str, Any], name: str) -> None:
    image = compose["services"][name]["image"]
    assert is_pinned(image), f"{name}: {image} is not pinned to an exact version"


def test_the_pin_check_refuses_floating_tags() -> None:
    assert not any(map(is_pinned, ["redis:7.4-alpine", "redis:7", "prom/prometheus:latest", "minio/minio"]))
    assert not is_pinned("chrislusf/seaweedfs:4") and is_pinned("chrislusf/seaweedfs:4.44")


def test_every_image_is_pinned_or_built_here(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: {image}"
        if "build" in service:
            assert service.get("pull_policy") == "build", f"{name}: a built image is never pulled"
        else:
            assert is_pinned(image), f"{name}: {image} is not pinned to an exact version"


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
