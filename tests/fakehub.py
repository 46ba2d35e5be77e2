"""A local HTTP server standing in for the Hugging Face hub endpoint (``HF_ENDPOINT``), serving
model repositories from folders, so tests download through huggingface_hub's own HTTP client.

It answers what ``snapshot_download`` asks: ``/api/models/<repo>/revision/<rev>`` (the commit),
``/api/models/<repo>/tree/<commit>`` (the file list), and ``HEAD``/``GET``
``/<repo>/resolve/<commit>/<file>`` (metadata headers, then the bytes, with ``Range`` for resumed
downloads). ``gated`` repositories answer 403 with ``X-Error-Code: GatedRepo``, unknown ones 404
with ``RepoNotFound``, as the hub does."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict, List, Optional
from urllib.parse import unquote, urlparse

COMMIT = "b" * 40


class FakeHub:
    """``with FakeHub({"org/name": folder}) as hub: hub.endpoint`` ..."""

    def __init__(self, repos: Dict[str, Path], gated=(), revisions=("main",), datasets: Optional[Dict[str, Path]] = None):
        self.repos = {k: Path(v) for k, v in repos.items()}
        self.datasets = {k: Path(v) for k, v in (datasets or {}).items()}
        self.gated = set(gated)
        self.revisions = set(revisions)
        self.requests: List[str] = []
        self.fail_after: Optional[int] = None  # cut a GET body after this many bytes (an interrupted download)
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, code: int, body: bytes = b"", headers: Optional[dict] = None, head: bool = False):
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                if "Content-Length" not in (headers or {}):
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head and body:
                    self.wfile.write(body)

            def _error(self, code: int, error_code: str, message: str, head: bool = False):
                body = json.dumps({"error": message}).encode()
                self._send(code, body, {"X-Error-Code": error_code, "X-Error-Message": message,
                                        "Content-Type": "application/json"}, head)

            def _repo(self, repo: str, head: bool = False, kind: str = "models") -> Optional[Path]:
                table = hub.datasets if kind == "datasets" else hub.repos
                if repo in hub.gated:
                    self._error(403, "GatedRepo", f"Access to {kind[:-1]} {repo} is restricted.", head)
                    return None
                if repo not in table:
                    self._error(404, "RepoNotFound", "Repository not found", head)
                    return None
                return table[repo]

            def _files(self, folder: Path):
                return sorted(f for f in folder.rglob("*") if f.is_file())

            def do_HEAD(self):
                self._handle(head=True)

            def do_GET(self):
                self._handle(head=False)

            def _handle(self, head: bool):
                path = unquote(urlparse(self.path).path)
                rng = self.headers.get("Range")
                hub.requests.append(f"{self.command} {path}" + (f" [{rng}]" if rng else ""))
                kind = "datasets" if path.startswith(("/api/datasets/", "/datasets/")) else "models"
                path = path.replace("/api/datasets/", "/api/models/", 1).replace("/datasets/", "/", 1) \
                    if kind == "datasets" else path
                m = re.match(r"^/api/models/([^/]+/[^/]+)/revision/(.+)$", path)
                if m:
                    folder = self._repo(m.group(1), head, kind)
                    if folder is None:
                        return
                    if m.group(2) not in hub.revisions and m.group(2) != COMMIT:
                        return self._error(404, "RevisionNotFound", f"Invalid rev id: {m.group(2)}", head)
                    info = {"id": m.group(1), "modelId": m.group(1), "sha": COMMIT, "private": False,
                            "siblings": [{"rfilename": f.relative_to(folder).as_posix()} for f in self._files(folder)]}
                    return self._send(200, json.dumps(info).encode(), {"Content-Type": "application/json"}, head)
                m = re.match(r"^/api/models/([^/]+/[^/]+)/tree/([^/]+)(/.*)?$", path)
                if m:
                    folder = self._repo(m.group(1), head, kind)
                    if folder is None:
                        return
                    tree = [{"type": "file", "path": f.relative_to(folder).as_posix(), "size": f.stat().st_size,
                             "oid": hashlib.sha1(f.read_bytes()).hexdigest()} for f in self._files(folder)]
                    return self._send(200, json.dumps(tree).encode(), {"Content-Type": "application/json"}, head)
                m = re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path)
                if m:
                    folder = self._repo(m.group(1), head, kind)
                    if folder is None:
                        return
                    f = folder / m.group(3)
                    if not f.is_file():
                        return self._error(404, "EntryNotFound", f"{m.group(3)} does not exist", head)
                    data = f.read_bytes()
                    etag = hashlib.sha256(data).hexdigest()
                    start = 0
                    if rng and not head:
                        start = int(re.match(r"bytes=(\d+)-", rng).group(1))
                    body = data[start:]
                    headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{etag}"', "Content-Length": str(len(body)),
                               "Accept-Ranges": "bytes"}
                    if start:
                        headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                    if head:
                        headers["Content-Length"] = str(len(data))
                        return self._send(200, b"", headers, head=True)
                    self.send_response(206 if start else 200)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    if hub.fail_after is not None and len(body) > hub.fail_after:
                        hub.fail_after, cut = None, hub.fail_after
                        self.wfile.write(body[:cut])
                        self.wfile.flush()
                        self.close_connection = True
                        return
                    self.wfile.write(body)
                    return
                self._error(404, "EntryNotFound", f"no route {path}", head)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeHub":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()


def use_hub(monkeypatch, server: FakeHub, cache) -> None:
    """Point huggingface_hub (its module constants, read at call time) at ``server`` and ``cache``, online."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", server.endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
