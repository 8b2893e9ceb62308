"""``python -m service``: the API server (uvicorn) built from ``PARLA_*`` settings."""

from __future__ import annotations

import logging

import uvicorn

from core.settings import Settings
from service.app import create_app, face_portrait_check


def main() -> None:
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    app = create_app(settings, portrait_check=face_portrait_check(settings) if settings.face_check else None)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info", access_log=False)


if __name__ == "__main__":
    main()
