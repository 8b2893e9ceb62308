"""A headless Chromium driven over the DevTools protocol (websockets only: no driver, no browser download).

``Chromium.find()`` is None when no ``chromium`` binary is installed (``make chromium`` installs
Debian's package as root); tests then skip, saying so.
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect

BINARIES = ("chromium", "chromium-browser", "google-chrome")


class Chromium:
    """One headless browser with one page; ``evaluate`` runs JavaScript in it."""

    def __init__(self, binary: str, profile: Path) -> None:
        self.process = subprocess.Popen(
            [
                binary,
                "--headless=new",
                "--no-sandbox",  # tests run as root in containers
                "--disable-gpu",
                "--no-first-run",
                "--disable-extensions",
                "--autoplay-policy=no-user-gesture-required",
                "--use-fake-ui-for-media-stream",  # microphone allowed without a prompt...
                "--use-fake-device-for-media-stream",  # ...and it is a generated tone
                "--remote-debugging-port=0",
                f"--user-data-dir={profile}",
                "--window-size=1280,1000",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not port_file.is_file() or len(port_file.read_text().split()) < 2:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"chromium did not start: {self._stderr()}")
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        pages = [t for t in httpx.get(f"http://127.0.0.1:{port}/json/list").json() if t["type"] == "page"]
        self.socket: ClientConnection = connect(pages[0]["webSocketDebuggerUrl"], max_size=2**26)
        self._ids = itertools.count(1)
        self.send("Page.enable")
        self.send("Runtime.enable")

    @classmethod
    def find(cls) -> str | None:
        return next((path for name in BINARIES if (path := shutil.which(name))), None)

    def _stderr(self) -> str:
        if self.process.stderr is None or self.process.poll() is None:
            return ""
        return self.process.stderr.read().decode(errors="replace")[-2000:]

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """One DevTools command; returns its result (events in between are dropped)."""
        call_id = next(self._ids)
        self.socket.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv(timeout=60))
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (promises awaited); raises on a JavaScript error."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def navigate(self, url: str) -> None:
        self.send("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete' && location.href !== 'about:blank'")

    def wait_for(self, expression: str, timeout_s: float = 30) -> Any:
        """Poll ``expression`` until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        raise TimeoutError(f"not true within {timeout_s} s: {expression}")

    def set_files(self, selector: str, *paths: Path) -> None:
        """Choose files in an ``<input type=file>`` (as a user would: its change event fires)."""
        root = self.send("DOM.getDocument")["root"]["nodeId"]
        node = self.send("DOM.querySelector", nodeId=root, selector=selector)["nodeId"]
        self.send("DOM.setFileInputFiles", nodeId=node, files=[str(path) for path in paths])

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"]))

    def close(self) -> None:
        socket = getattr(self, "socket", None)
        if socket is not None:
            socket.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
