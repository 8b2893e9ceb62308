"""Container health probe: exit 0 when ``GET <url>`` answers 200 within 4 s, else 1.

Usage: ``python healthcheck.py [URL]``; without a URL it probes the API on ``PARLA_PORT``.
Standard library only: the CUDA base image has no curl.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def main(argv: list[str]) -> int:
    url = argv[1] if len(argv) > 1 else f"http://127.0.0.1:{os.environ.get('PARLA_PORT', '8000')}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=4) as response:
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError):
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
