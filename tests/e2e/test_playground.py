"""The playground in a real headless Chromium against a real stack with API keys: the form comes from
``GET /v1/engines``, a job renders, the live HLS preview plays through the vendored hls.js before
the job ends (and the progressive-MP4 fallback too), then the result."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import httpx
import pytest

from service.stack import Stack
from tests.e2e.browser import Chromium
from tests.e2e.test_stack import wait_for
from tests.media import image_bytes, wav_bytes

pytestmark = pytest.mark.e2e

KEY = "playground-test-key-0123456789"
CHROMIUM = Chromium.find()


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="!!! NO CHROMIUM: the playground browser test did not run. Install Debian's package "
    "(`make chromium` as root, or `apt-get install chromium`) !!!",
)
def test_playground_renders_a_job_with_a_live_preview_and_plays_the_result(tmp_path: Path) -> None:
    assert CHROMIUM is not None
    image, audio = tmp_path / "portrait.png", tmp_path / "speech.wav"
    image.write_bytes(image_bytes(256, 256))
    audio.write_bytes(wav_bytes(3.0))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PARLA_")},
        "PARLA_ENGINE": "test",
        "PARLA_API_KEYS": f"play:{KEY}",
        "PARLA_FACE_CHECK": "false",
        # 75 frames in 8 chunks, slow enough that the preview shows chunks before the job ends.
        "PARLA_ENGINE_CONFIG": json.dumps({"chunk_frames": 10, "frame_delay_s": 0.08}),
    }
    with (
        Stack(env, workers=1, state_dir=tmp_path / "stack") as stack,
        Chromium(CHROMIUM, tmp_path / "profile") as browser,
    ):
        browser.navigate(f"{stack.base_url}/playground/")
        refused = browser.wait_for("window.parlaPlayground.log.find((e) => e.type === 'error')")
        assert refused["code"] == "unauthorized"  # no key yet
        browser.evaluate(
            f"(() => {{ const input = document.getElementById('api-key'); input.value = {json.dumps(KEY)};"
            " input.dispatchEvent(new Event('change')); })()"
        )
        engines = browser.wait_for("window.parlaPlayground.log.find((e) => e.type === 'engines')")
        assert engines["names"] == ["test"]
        assert browser.evaluate("document.getElementById('engine').value") == "test"
        browser.set_files("#image", image)
        browser.set_files("#audio", audio)
        browser.evaluate("document.getElementById('size').value = '128'")
        browser.evaluate("document.getElementById('submit').click()")

        ended = browser.wait_for(
            "window.parlaPlayground.log.find((e) => ['result', 'result-error', 'failed', 'canceled'].includes(e.type))",
            timeout_s=120,
        )
        log = browser.evaluate("window.parlaPlayground.log")
        browser.screenshot(tmp_path / "playground.png")
        assert ended["type"] == "result", log
        submitted = next(i for i, event in enumerate(log) if event["type"] == "submitted")
        assert not [event for event in log[submitted:] if event["type"].endswith("error")], log
        # The live HLS stream played through hls.js (MSE, the key on every request) while the job
        # still rendered, from a playlist that was still live and grew.
        [playing] = [event for event in log if event["type"] == "stream-playing"]
        assert playing["player"] == "hls.js" and playing["status"] == "running", log
        assert playing["currentTime"] > 0 and playing["readyState"] >= 2 and playing["width"] == 128
        playlists = [event for event in log if event["type"] == "stream-playlist"]
        assert playlists[0]["live"] and playlists[0]["status"] == "running"
        assert playlists[0]["segments"] < 8 and [e["segments"] for e in playlists] == sorted(
            e["segments"] for e in playlists
        )
        assert not [event for event in log if event["type"] == "preview"]  # no MP4 fallback needed
        assert browser.wait_for("document.getElementById('preview').webkitAudioDecodedByteCount > 0")
        assert abs(ended["duration"] - 3.0) < 0.1 and ended["readyState"] >= 2
        link = browser.evaluate(
            "(() => { const a = document.getElementById('download'); return [a.hidden, a.href, a.download]; })()"
        )
        job_id = browser.evaluate("window.parlaPlayground.state.job.id")
        assert link[0] is False and link[1].startswith("blob:") and link[2] == f"{job_id}.mp4"
        assert browser.evaluate("document.getElementById('status').textContent").startswith("succeeded")

        # Speech recorded in the page (MediaRecorder on Chromium's fake microphone) renders too, with
        # the progressive-MP4 preview (the fallback where neither MSE nor native HLS can be used).
        browser.navigate(f"{stack.base_url}/playground/?player=mp4")  # the key stays in localStorage
        browser.wait_for("window.parlaPlayground.log.find((e) => e.type === 'engines')")
        browser.set_files("#image", image)
        browser.evaluate("document.getElementById('size').value = '128'")
        browser.evaluate("document.getElementById('record').click()")
        browser.wait_for("document.getElementById('record').textContent === 'Stop'")
        time.sleep(1.5)
        browser.evaluate("document.getElementById('record').click()")
        assert browser.wait_for(
            "window.parlaPlayground.state.recorded && window.parlaPlayground.state.recorded.size"
        )
        browser.evaluate("document.getElementById('submit').click()")
        browser.wait_for(
            "window.parlaPlayground.log.filter((e) => e.type === 'result').length > 0"
            " || window.parlaPlayground.log.slice(-1)[0].type.endsWith('error')",
            timeout_s=120,
        )
        log = browser.evaluate("window.parlaPlayground.log")
        last = log[-1]
        assert last["type"] == "result" and 1.0 < last["duration"] < 2.5, log
        live = [event for event in log if event["type"] == "preview" and event["status"] == "running"]
        assert live and all(e["player"] == "mp4" for e in live), log  # played while rendering
        assert all(e["readyState"] >= 2 and e["width"] == 128 and 0 < e["duration"] <= 2.5 for e in live), (
            live
        )
        durations = [e["duration"] for e in live]
        assert durations == sorted(durations) and durations[0] < last["duration"]  # grows with the chunks
        assert not [event for event in log if event["type"] == "stream-playing"]


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="!!! NO CHROMIUM: the playground browser test did not run !!!")
def test_playground_sample_on_the_warp_engine_with_an_option_from_its_schema(tmp_path: Path) -> None:
    assert CHROMIUM is not None
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PARLA_")},
        "PARLA_AUTH_DISABLED": "true",
    }
    with (
        Stack(env, workers=1, state_dir=tmp_path / "stack") as stack,  # the default: warp, face check on
        Chromium(CHROMIUM, tmp_path / "profile") as browser,
    ):
        browser.navigate(f"{stack.base_url}/playground/")
        browser.wait_for("window.parlaPlayground.log.find((e) => e.type === 'engines')")
        option = browser.wait_for("document.querySelector('#engine-options input[name=head_motion]')?.value")
        assert option == "0.5"  # the default, from GET /v1/engines
        browser.evaluate("document.getElementById('use-sample').click()")
        browser.wait_for("window.parlaPlayground.log.find((e) => e.type === 'sample')")
        browser.evaluate(
            "(() => { const input = document.querySelector('#engine-options input[name=head_motion]');"
            " input.value = '0.8'; input.dispatchEvent(new Event('change')); })()"
        )
        browser.evaluate("document.getElementById('size').value = '128'")
        browser.evaluate("document.getElementById('submit').click()")
        ended = browser.wait_for(
            "window.parlaPlayground.log.find((e) => ['result', 'result-error', 'failed', 'error'].includes(e.type))",
            timeout_s=240,
        )
        assert ended["type"] == "result", browser.evaluate("window.parlaPlayground.log")
        assert abs(ended["duration"] - 8.26) < 0.1
        job = browser.evaluate("window.parlaPlayground.state.job")
        assert job["params"]["engine"] == "warp" and job["params"]["engine_options"] == {"head_motion": 0.8}
        browser.screenshot(tmp_path / "playground-warp.png")


@pytest.mark.skipif(CHROMIUM is None, reason="!!! NO CHROMIUM: the HLS browser test did not run !!!")
def test_chromiums_own_hls_player_plays_the_live_stream_with_its_audio(tmp_path: Path) -> None:
    """``stream.m3u8`` in a plain ``<video>`` (Chromium plays HLS natively): playing before the job ends."""
    assert CHROMIUM is not None
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PARLA_")},
        "PARLA_ENGINE": "test",
        "PARLA_AUTH_DISABLED": "true",  # a <video src> sends no Authorization header
        "PARLA_FACE_CHECK": "false",
        "PARLA_ENGINE_CONFIG": json.dumps({"chunk_frames": 10, "frame_delay_s": 0.08}),
    }
    with (
        Stack(env, workers=1, state_dir=tmp_path / "stack") as stack,
        Chromium(CHROMIUM, tmp_path / "profile") as browser,
        httpx.Client(base_url=stack.base_url, timeout=30) as api,
    ):
        files = {"image": ("p.png", image_bytes(200, 200)), "audio": ("a.wav", wav_bytes(4.0))}
        job_id = api.post("/v1/videos", files=files, data={"size": "128"}).json()["id"]
        deadline = time.monotonic() + 60
        # Chromium's native HLS player has been seen to refuse (DEMUXER_ERROR_COULD_NOT_PARSE) a live
        # playlist of only two 0.4 s segments, and to play it once four are listed: start there.
        while api.get(f"/v1/videos/{job_id}").json()["progress"]["chunks_done"] < 4:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        browser.navigate(f"{stack.base_url}/playground/")
        browser.evaluate(
            "(() => { const v = document.createElement('video'); v.id = 'hls'; v.muted = true;"
            f" v.src = '/v1/videos/{job_id}/stream.m3u8'; document.body.append(v); v.play(); }})()"
        )
        browser.wait_for("document.getElementById('hls').currentTime > 0", timeout_s=60)
        assert api.get(f"/v1/videos/{job_id}").json()["status"] == "running"  # playing while rendering
        assert browser.evaluate("document.getElementById('hls').videoWidth") == 128
        browser.wait_for("document.getElementById('hls').webkitAudioDecodedByteCount > 0", timeout_s=30)
        assert not browser.evaluate("document.getElementById('hls').error")


@pytest.mark.skipif(CHROMIUM is None, reason="!!! NO CHROMIUM: the HLS browser test did not run !!!")
def test_hlsjs_plays_the_live_stream_from_its_first_segments(tmp_path: Path) -> None:
    """The vendored hls.js (MSE) plays a live playlist that lists only one or two segments, where
    Chromium's own player has refused one of two (above); with the key sent on each request."""
    assert CHROMIUM is not None
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PARLA_")},
        "PARLA_ENGINE": "test",
        "PARLA_API_KEYS": f"play:{KEY}",
        "PARLA_FACE_CHECK": "false",
        "PARLA_ENGINE_CONFIG": json.dumps({"chunk_frames": 10, "frame_delay_s": 0.08}),
    }
    with (
        Stack(env, workers=1, state_dir=tmp_path / "stack") as stack,
        Chromium(CHROMIUM, tmp_path / "profile") as browser,
        httpx.Client(base_url=stack.base_url, timeout=30, headers={"authorization": f"Bearer {KEY}"}) as api,
    ):
        browser.navigate(f"{stack.base_url}/playground/")
        assert browser.evaluate("Hls.isSupported() && Hls.version") == "1.7.4"
        files = {"image": ("p.png", image_bytes(200, 200)), "audio": ("a.wav", wav_bytes(4.0))}
        job_id = api.post("/v1/videos", files=files, data={"size": "128"}).json()["id"]
        deadline = time.monotonic() + 60
        while api.get(f"/v1/videos/{job_id}").json()["progress"]["chunks_done"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        browser.evaluate(
            "(() => { const v = document.createElement('video'); v.id = 'hls'; v.muted = true;"
            " document.body.append(v); window.firstSegments = null;"
            " const hls = new Hls({ startPosition: 0, xhrSetup: (xhr) =>"
            f" xhr.setRequestHeader('Authorization', 'Bearer {KEY}') }});"
            " hls.on(Hls.Events.LEVEL_LOADED, (_, d) => { if (window.firstSegments === null)"
            " window.firstSegments = [d.details.fragments.length, d.details.live];"
            " window.lastLevel = [d.details.fragments.length, d.details.live]; });"
            f" hls.loadSource('/v1/videos/{job_id}/stream.m3u8'); hls.attachMedia(v); v.play(); }})()"
        )
        browser.wait_for("document.getElementById('hls').currentTime > 0", timeout_s=30)
        assert api.get(f"/v1/videos/{job_id}").json()["status"] == "running"  # playing while rendering
        segments, live = browser.evaluate("window.firstSegments")
        assert segments <= 2 and live  # it started from a live playlist of one or two segments
        assert browser.evaluate("document.getElementById('hls').videoWidth") == 128
        browser.wait_for("document.getElementById('hls').webkitAudioDecodedByteCount > 0", timeout_s=30)
        assert not browser.evaluate("document.getElementById('hls').error")
        # It keeps reloading the live playlist: once the job ends, all 10 chunks and the end (VOD).
        wait_for(api, job_id, lambda job: job["status"] == "succeeded")
        assert browser.wait_for("window.lastLevel[1] === false && window.lastLevel", timeout_s=30) == [
            10,
            False,
        ]
        assert abs(browser.evaluate("document.getElementById('hls').duration") - 4.0) < 0.15
