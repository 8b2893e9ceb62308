"""The submit-time face check, through the API, on real photos."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from core.settings import Settings
from service.app import face_portrait_check
from tests.media import image_bytes, wav_bytes
from tests.service.conftest import make_app

ASSETS = Path(__file__).resolve().parent.parent / "assets"


@pytest.fixture()
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(make_app(settings, portrait_check=face_portrait_check(settings))) as test_client:
        yield test_client


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def post(client: TestClient, image: bytes, **fields: str) -> tuple[int, str | None]:
    files = {"image": ("p.png", image), "audio": ("a.wav", wav_bytes(1.0))}
    response = client.post("/v1/videos", files=files, data=fields)
    return response.status_code, (response.json().get("error") or {}).get("code")


def test_portrait_with_a_face_is_accepted(client: TestClient) -> None:
    assert post(client, (ASSETS / "portrait.png").read_bytes()) == (202, None)


def test_photo_without_a_face_is_refused(client: TestClient) -> None:
    assert post(client, image_bytes(400, 300)) == (422, "no_face_found")


def test_tiny_face_is_refused(client: TestClient) -> None:
    # the whole portrait at 200 px: its face box is about 36 px, under the 64 px minimum
    small = np.asarray(Image.open(ASSETS / "portrait.png").convert("RGB").resize((200, 200)))
    assert post(client, png(small)) == (422, "face_too_small")


def test_face_index_out_of_range_is_face_not_found(client: TestClient) -> None:
    files = {"image": ("p.png", (ASSETS / "portrait.png").read_bytes()), "audio": ("a.wav", wav_bytes(1.0))}
    response = client.post("/v1/videos", files=files, data={"face_index": "3"})
    assert response.status_code == 422
    assert response.json()["error"] == {
        "code": "face_not_found",
        "message": "face_index 3 but only 1 face was found (numbered from 0, largest first)",
    }
