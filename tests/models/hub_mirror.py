"""A loopback stand-in for the Hugging Face Hub: the endpoints ``huggingface_hub`` calls to list a
repository and fetch its files (``HF_ENDPOINT`` pointed at it), serving files from a directory."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class HubMirror:
    """Repositories at ``root/<owner>/<name>/``; ``requests`` records ``(method, path)`` of each call."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[tuple[str, str]] = []
        self.url = ""

    def repo(self, repo_id: str) -> Path:
        return self.root / repo_id

    def add(self, repo_id: str, path: str, data: bytes) -> None:
        target = self.repo(repo_id) / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)

    def files(self, repo_id: str) -> list[str]:
        base = self.repo(repo_id)
        return sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file())


def _handler(mirror: HubMirror) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._serve(body=True)

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def log_message(self, *args: Any) -> None:
            return None

        def _error(self, status: int, code: str) -> None:
            payload = json.dumps({"error": code}).encode()
            self.send_response(status)
            self.send_header("X-Error-Code", code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _json(self, value: Any, body: bool) -> None:
            payload = json.dumps(value).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if body:
                self.wfile.write(payload)

        def _serve(self, *, body: bool) -> None:
            path = unquote(urlsplit(self.path).path)
            mirror.requests.append((self.command, path))
            parts = path.strip("/").split("/")
            if parts[:2] == ["api", "models"] and len(parts) >= 6:
                repo_id, kind, revision = "/".join(parts[2:4]), parts[4], parts[5]
                if not mirror.repo(repo_id).is_dir():
                    return self._error(404, "RepoNotFound")
                if revision not in ("main", COMMIT):
                    return self._error(404, "RevisionNotFound")
                files = mirror.files(repo_id)
                if kind == "revision":
                    return self._json(
                        {"id": repo_id, "sha": COMMIT, "siblings": [{"rfilename": f} for f in files]}, body
                    )
                if kind == "tree":
                    base = mirror.repo(repo_id)
                    entries = [
                        {
                            "type": "file",
                            "path": f,
                            "size": (base / f).stat().st_size,
                            "oid": hashlib.sha1((base / f).read_bytes()).hexdigest(),
                        }
                        for f in files
                    ]
                    return self._json(entries, body)
            if len(parts) >= 5 and parts[2] == "resolve":
                repo_id, revision, file = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
                target = mirror.repo(repo_id) / file
                if not mirror.repo(repo_id).is_dir():
                    return self._error(404, "RepoNotFound")
                if not target.is_file():
                    return self._error(404, "EntryNotFound")
                data = target.read_bytes()
                self.send_response(200)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                if body:
                    self.wfile.write(data)
                return None
            return self._error(404, "NotFound")

    return Handler


@contextmanager
def serve_mirror(root: Path) -> Iterator[HubMirror]:
    mirror = HubMirror(root)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(mirror))
    mirror.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield mirror
    finally:
        server.shutdown()
        server.server_close()
