"""All configuration, read once from ``PARLA_*`` environment variables and injected everywhere else."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MB = 1024 * 1024


class Settings(BaseSettings):
    """Parla's settings. Every field is the env variable ``PARLA_<NAME>`` (upper case)."""

    model_config = SettingsConfigDict(env_prefix="PARLA_", extra="ignore")

    log_level: str = Field("INFO", description="Logging level of the API and worker processes.")

    # --- API server
    host: str = Field("127.0.0.1", description="Address the API binds to.")
    port: int = Field(8000, description="Port the API listens on.")
    public_url: str | None = Field(
        None,
        description="Base URL clients reach the API at (for links to locally stored videos and the "
        "preview links of `video.chunk` webhooks).",
    )
    http_max_header_bytes: int = Field(
        64 * 1024, description="Largest request line + headers the API reads; larger requests get a 400."
    )
    http_header_timeout_s: float = Field(
        10.0, description="Time a client has to send a whole request line + headers (slow clients)."
    )
    http_body_timeout_s: float = Field(
        30.0, description="Longest pause the API waits for more of a request body (then 408)."
    )
    http_keep_alive_s: int = Field(5, description="Idle keep-alive connections are closed after this.")
    http_max_concurrency: int = Field(
        1000, description="Connections the API serves at once; more get 503 (0: no limit)."
    )

    # --- Redis and queue
    redis_url: str | None = Field(
        None, description="Redis URL. Unset: `make run` starts a private redis-server (embedded mode)."
    )
    redis_timeout_s: float = Field(
        3.0, description="Connect and read timeout of the API's Redis calls (an outage is a 503 soon)."
    )
    key_prefix: str = Field("parla:", description="Prefix of every Redis key Parla writes.")
    idempotency_stale_s: float = Field(
        300.0,
        description="An Idempotency-Key bound by a submission that never created its job (its API "
        "process died) is taken over by a retry after this long, instead of a 409 for 24 h.",
    )
    job_ttl_s: int = Field(
        7 * 24 * 3600,
        description="How long a finished job is kept: then the worker's recovery deletes its record and files.",
    )

    # --- storage
    storage: Literal["local", "s3"] = Field("local", description="Where inputs, segments and videos live.")
    storage_dir: Path = Field(Path("var/storage"), description="Root directory of local storage.")
    s3_bucket: str = Field("parla", description="S3 bucket.")
    s3_prefix: str = Field("", description="Key prefix inside the bucket.")
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, R2, ...).")
    s3_public_endpoint_url: str | None = Field(
        None, description="Endpoint named in presigned URLs given to clients (default: the endpoint)."
    )
    s3_region: str | None = Field(None, description="S3 region.")
    presign_expires_s: int = Field(3600, description="Lifetime of presigned video URLs.")

    # --- engines
    engine: str = Field("warp", description="Engine this worker runs, and the default engine of jobs.")
    engines: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Engines the API accepts (comma-separated). Empty: just `engine`.",
    )
    engine_config: dict[str, Any] = Field(
        default_factory=dict,
        description="JSON object of constructor arguments of the worker's engine (e.g. `dtype`, "
        "`converted_dir`); a key the engine does not take stops the worker at boot.",
    )
    weights_dir: Path | None = Field(None, description="Directory of model weights (vexpress).")
    device: str = Field("auto", description="Torch device of the worker: auto, cuda, cuda:N or cpu.")
    face_check: bool = Field(True, description="Refuse portraits without a usable face at submit time.")
    face_min_size_px: int = Field(
        64, description="Smallest accepted face (box side, pixels): `face_too_small`."
    )
    face_max_yaw_deg: float = Field(
        45.0, description="Largest accepted head turn (degrees): `face_not_frontal`."
    )

    # --- input limits
    max_request_bytes: int = Field(64 * MB, description="Largest request body the API reads.")
    max_image_bytes: int = Field(20 * MB, description="Largest accepted image file.")
    max_image_pixels: int = Field(
        40_000_000, description="Largest accepted image area (decompression bombs)."
    )
    min_image_side: int = Field(128, description="Smallest accepted image width or height.")
    max_audio_bytes: int = Field(50 * MB, description="Largest accepted audio file.")
    min_audio_seconds: float = Field(0.5, description="Shortest accepted audio.")
    max_audio_seconds: float = Field(600.0, description="Longest accepted audio.")
    fetch_timeout_s: float = Field(20.0, description="Timeout for downloading `image_url`/`audio_url`.")
    fetch_allow_private_networks: bool = Field(
        False,
        description="Fetch image_url/audio_url/driving_video_url from loopback/private addresses (refused by default: SSRF).",
    )

    # --- tenancy and limits
    api_keys: str | None = Field(
        None,
        description="API keys: comma-separated `tenant:key` pairs, or `@/path/to/file` with one per line.",
    )
    auth_disabled: bool = Field(
        False, description="Serve without API keys (everyone is tenant `anonymous`). Only for local use."
    )
    submissions_per_minute: int = Field(60, description="Submissions per API key per minute (0: no limit).")
    max_queued_jobs: int = Field(100, description="Jobs an API key may have waiting at once (0: no limit).")

    # --- webhooks
    webhook_secret: str | None = Field(
        None, description="Signing secrets `whsec_<base64>`, comma-separated (all sign; first is current)."
    )
    webhook_allow_http: bool = Field(False, description="Accept http:// webhook URLs (https only otherwise).")
    webhook_allow_private_networks: bool = Field(
        False, description="Deliver webhooks to loopback/private addresses (refused by default: SSRF)."
    )
    webhook_timeout_s: float = Field(15.0, description="Timeout of one webhook attempt.")
    webhook_retry_schedule_s: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: [5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0],
        description="Waits before each retry of a terminal webhook (comma-separated seconds).",
    )

    # --- worker
    worker_metrics_host: str = Field(
        "127.0.0.1", description="Address of the worker's /metrics and /healthz."
    )
    worker_metrics_port: int = Field(9100, description="Port of the worker's /metrics and /healthz (0: off).")
    pipeline_chunks: bool = Field(
        True,
        description="Store each chunk (encode, upload, progress) on a second thread while the next "
        "one renders; false stores it before the next one renders.",
    )
    lease_s: int = Field(60, description="A running job whose worker is silent this long is re-queued.")
    heartbeat_s: float = Field(10.0, description="Interval of the worker's heartbeat while a job runs.")
    max_attempts: int = Field(3, description="Runs of one job (first run + resumes after worker loss).")

    @field_validator("engines", mode="before")
    @classmethod
    def _split_engines(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("webhook_retry_schedule_s", mode="before")
    @classmethod
    def _split_schedule(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [float(part) for part in value.split(",") if part.strip()]
        return value

    @field_validator("engine_config", mode="before")
    @classmethod
    def _parse_options(cls, value: Any) -> Any:
        if isinstance(value, str):
            return json.loads(value) if value.strip() else {}
        return value

    @property
    def enabled_engines(self) -> list[str]:
        return self.engines or [self.engine]


def settings_markdown() -> str:
    """The settings as a Markdown table (the README's configuration section is this output)."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default: Any = field.default_factory() if field.default_factory else field.default  # type: ignore[call-arg]
        if isinstance(default, list):
            default = ",".join(f"{x:g}" if isinstance(x, float) else str(x) for x in default) or "(empty)"
        elif isinstance(default, dict):
            default = "{}"
        elif default is None:
            default = "(unset)"
        rows.append(f"| `PARLA_{name.upper()}` | `{default}` | {field.description} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(settings_markdown())
