"""``python -m worker``: one worker process (one per GPU)."""

from __future__ import annotations

import argparse

from core.logs import configure_logging
from core.settings import Settings
from worker.boot import run_worker


def main() -> None:
    parser = argparse.ArgumentParser(description="Parla GPU worker")
    parser.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    args = parser.parse_args()
    settings = Settings()
    configure_logging(settings.log_level)
    run_worker(settings, burst=args.burst)


if __name__ == "__main__":
    main()
