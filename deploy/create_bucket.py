"""One-shot: make sure the S3 bucket of the API and the workers exists (docker-compose's ``s3-init``).

Usage: ``python create_bucket.py [--timeout-s 120] [--retry-interval-s 2]``.

It reads the same settings as the API and the workers (``PARLA_S3_*``, and the AWS key pair that
boto3 reads), so a wrong endpoint or key fails here, before they start. While the server is still
starting (connection refused, 5xx) it retries until the timeout. Exit 0 once the bucket exists
(created now or before); exit 1 on a refusal (e.g. 403: bad credentials) or at the timeout.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from core.settings import Settings


def s3_client(settings: Settings) -> Any:
    """A client for the settings' endpoint that tries each call once: the retry loop is ours."""
    kwargs: dict[str, Any] = {}
    if settings.s3_endpoint_url:
        kwargs["endpoint_url"] = settings.s3_endpoint_url
    if settings.s3_region:
        kwargs["region_name"] = settings.s3_region
    config = Config(
        retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=10, signature_version="s3v4"
    )
    return boto3.client("s3", config=config, **kwargs)


def http_status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def ensure_bucket(client: Any, bucket: str, region: str | None) -> bool:
    """Create ``bucket`` unless it exists. True when this call created it."""
    try:
        client.head_bucket(Bucket=bucket)
        return False
    except ClientError as exc:
        if http_status(exc) != 404:
            raise
    location = (
        {} if region in (None, "us-east-1") else {"CreateBucketConfiguration": {"LocationConstraint": region}}
    )
    try:
        client.create_bucket(Bucket=bucket, **location)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "BucketAlreadyOwnedByYou":
            return False  # another run created it in between
        raise
    return True


def is_transient(exc: BotoCoreError | ClientError) -> bool:
    """Connection errors and 5xx mean "not up yet"; any other answer is final."""
    if isinstance(exc, ClientError):
        return http_status(exc) >= 500
    return True


def main(argv: list[str] | None = None, settings: Settings | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout-s", type=float, default=120.0, help="give up after this long")
    parser.add_argument("--retry-interval-s", type=float, default=2.0, help="wait between attempts")
    args = parser.parse_args(argv)
    settings = settings or Settings()
    if settings.storage != "s3":
        print(f"create_bucket: PARLA_STORAGE is {settings.storage!r}, not 's3'", file=sys.stderr)
        return 1
    client = s3_client(settings)
    where = f"bucket {settings.s3_bucket!r} at {settings.s3_endpoint_url or 'AWS'}"
    deadline = time.monotonic() + args.timeout_s
    while True:
        try:
            created = ensure_bucket(client, settings.s3_bucket, settings.s3_region)
        except (BotoCoreError, ClientError) as exc:
            if not is_transient(exc):
                print(f"create_bucket: {where} refused: {exc}", file=sys.stderr)
                return 1
            if time.monotonic() + args.retry_interval_s > deadline:
                print(
                    f"create_bucket: {where} not reachable after {args.timeout_s:g} s: {exc}", file=sys.stderr
                )
                return 1
            print(f"create_bucket: {where} not ready yet ({exc}); retrying", file=sys.stderr)
            time.sleep(args.retry_interval_s)
            continue
        print(f"{where}: {'created' if created else 'already there'}")
        return 0


if __name__ == "__main__":
    sys.exit(main())
