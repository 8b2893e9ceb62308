"""Prometheus metric names, labels, buckets, scrape-time queue callbacks, and the worker's port."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.parser import text_string_to_metric_families

from core.metrics import ParlaMetrics, exposition


def scrape(registry: CollectorRegistry) -> dict[str, float]:
    """Every sample as ``name{label="value",...}`` -> value, parsed from the text exposition."""
    body, content_type = exposition(registry)
    assert content_type.startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            labels = ",".join(f'{key}="{value}"' for key, value in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def test_names_and_labels_are_exported() -> None:
    registry = CollectorRegistry()
    metrics = ParlaMetrics(registry)
    metrics.jobs_submitted.inc()
    metrics.job_finished("succeeded")
    metrics.observe_stage("render", 1.5)
    metrics.webhook_outcome("dropped")
    metrics.input_rejected("no_face_found")
    metrics.render_seconds_per_video_second.labels(engine="warp").observe(0.2)
    metrics.gpu_memory.labels(device="0", kind="allocated").set(2**30)
    samples = scrape(registry)
    assert samples["parla_jobs_submitted_total"] == 1
    assert samples['parla_jobs_finished_total{status="succeeded"}'] == 1
    assert samples['parla_jobs_finished_total{status="canceled"}'] == 0  # pre-created label values
    assert samples['parla_chunk_stage_seconds_count{stage="render"}'] == 1
    assert samples['parla_chunk_stage_seconds_count{stage="upload"}'] == 0
    assert samples['parla_webhook_deliveries_total{outcome="dropped"}'] == 1
    assert samples['parla_input_rejections_total{code="no_face_found"}'] == 1
    assert samples['parla_gpu_memory_bytes{device="0",kind="allocated"}'] == 2**30
    assert samples['parla_render_seconds_per_video_second_count{engine="warp"}'] == 1
    for name in (
        "parla_job_duration_seconds",
        "parla_queue_wait_seconds",
        "parla_time_to_first_chunk_seconds",
    ):
        assert f"{name}_count" in samples
    with pytest.raises(ValueError, match="stage"):
        metrics.observe_stage("paint", 1.0)
    with pytest.raises(ValueError, match="status"):
        metrics.job_finished("exploded")
    with pytest.raises(ValueError, match="outcome"):
        metrics.webhook_outcome("lost")


def bucket_bounds(samples: dict[str, float], name: str) -> list[float]:
    prefix = f'{name}_bucket{{le="'
    return sorted(
        float(key[len(prefix) : key.index('"', len(prefix))]) for key in samples if key.startswith(prefix)
    )


def test_duration_buckets_span_seconds_to_an_hour_not_library_defaults() -> None:
    registry = CollectorRegistry()
    ParlaMetrics(registry).job_duration.observe(2400)
    samples = scrape(registry)
    bounds = bucket_bounds(samples, "parla_job_duration_seconds")
    assert bounds[0] <= 1 and 3600 in bounds and bounds[-1] == float("inf")
    assert samples['parla_job_duration_seconds_bucket{le="1800.0"}'] == 0
    assert samples['parla_job_duration_seconds_bucket{le="3600.0"}'] == 1
    for name in (
        "parla_job_duration_seconds",
        "parla_queue_wait_seconds",
        "parla_time_to_first_chunk_seconds",
    ):
        finite = [bound for bound in bucket_bounds(samples, name) if bound != float("inf")]
        assert tuple(finite) != tuple(Histogram.DEFAULT_BUCKETS[:-1])
        assert max(finite) >= 600  # the library's default stops at 10 s


def test_queue_gauges_read_callbacks_at_scrape_time_and_survive_failures() -> None:
    registry = CollectorRegistry()
    metrics = ParlaMetrics(registry)
    assert "parla_queue_depth" not in scrape(registry)  # a process without callbacks exports none
    depth = {"value": 3}

    def broken() -> int:
        raise ConnectionError("redis down")

    metrics.set_queue_callbacks(lambda: depth["value"], lambda: 2)
    assert scrape(registry)["parla_queue_depth"] == 3
    depth["value"] = 7
    samples = scrape(registry)
    assert samples["parla_queue_depth"] == 7 and samples["parla_jobs_in_flight"] == 2
    metrics.set_queue_callbacks(broken, lambda: 1)
    samples = scrape(registry)
    assert "parla_queue_depth" not in samples and samples["parla_jobs_in_flight"] == 1


def test_two_instances_on_separate_registries_do_not_clash() -> None:
    first, second = CollectorRegistry(), CollectorRegistry()
    ParlaMetrics(first).jobs_submitted.inc(5)
    ParlaMetrics(second)
    assert scrape(first)["parla_jobs_submitted_total"] == 5
    assert scrape(second)["parla_jobs_submitted_total"] == 0
    with pytest.raises(ValueError, match="Duplicated"):
        ParlaMetrics(first)
