"""``python -m service``: the API server (uvicorn) built from ``PARLA_*`` settings."""

from __future__ import annotations

import sys

import uvicorn
from uvicorn.config import STARTUP_FAILURE

from core.logs import configure_logging
from core.settings import Settings
from service.app import create_app, face_portrait_check
from service.server import uvicorn_config


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_level)
    app = create_app(settings, portrait_check=face_portrait_check(settings) if settings.face_check else None)
    server = uvicorn.Server(uvicorn_config(app, settings))
    server.run()
    if not server.started:  # e.g. the port is taken: fail like `uvicorn.run` does
        sys.exit(STARTUP_FAILURE)


if __name__ == "__main__":
    main()
