"""A stand-in for the Hugging Face Hub on loopback: the few HTTP routes huggingface_hub's downloads use.

Point HF_ENDPOINT at `HubStandIn.url` and the real huggingface_hub code lists, resolves and downloads
from it. Repos are folders; gated repos answer 401 (no token) or 403 (a token without access) with the
Hub's `X-Error-Code: GatedRepo`; unknown repos answer 404 `RepoNotFound`, as the Hub does.
"""
from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROUTE = re.compile(r"/(?:api/models/)?(?P<repo>[^/]+/[^/]+)/(?P<kind>revision|tree|resolve)/(?P<rev>[^/?]+)/?(?P<path>[^?]*)")


class HubStandIn:
    """Serves `repos` ({"org/name": folder}); `gated` repos refuse every request; `requests` logs (method, path)."""

    def __init__(self, repos: dict[str, Path], gated: set[str] = frozenset()) -> None:
        self.repos = {name: Path(folder) for name, folder in repos.items()}
        self.gated = set(gated)
        self.requests: list[tuple[str, str]] = []
        self.commits = {name: hashlib.sha1(name.encode()).hexdigest() for name in [*self.repos, *self.gated]}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The value for HF_ENDPOINT."""
        return f"http://127.0.0.1:{self.server.server_port}"

    def start(self) -> "HubStandIn":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def files(self, repo: str) -> dict[str, Path]:
        """Every file of a repo by its path in the repo."""
        folder = self.repos[repo]
        return {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def do_HEAD(self) -> None:
                self._answer(body=False)

            def do_GET(self) -> None:
                self._answer(body=True)

            def _error(self, status: int, code: str, message: str) -> None:
                self.send_response(status)
                self.send_header("X-Error-Code", code)
                self.send_header("X-Error-Message", message)
                self.send_header("Content-Type", "application/json")
                payload = json.dumps({"error": message}).encode()
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _answer(self, body: bool) -> None:
                hub.requests.append((self.command, self.path))
                match = ROUTE.match(self.path)
                if not match:
                    return self._error(404, "EntryNotFound", "no such route")
                repo, kind, rev, path = match["repo"], match["kind"], match["rev"], match["path"]
                if repo in hub.gated:
                    authorised = self.headers.get("Authorization")
                    return self._error(403 if authorised else 401, "GatedRepo",
                                       f"Access to model {repo} is restricted. You must have access to it and be "
                                       "authenticated to access it. Please log in.")
                if repo not in hub.repos:
                    return self._error(404, "RepoNotFound", "Repository not found")
                commit = hub.commits[repo]
                if rev not in ("main", commit):
                    return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
                files = hub.files(repo)
                if kind == "revision":
                    return self._json({"id": repo, "sha": commit, "private": False,
                                       "siblings": [{"rfilename": name} for name in files]}, body)
                if kind == "tree":
                    return self._json([{"type": "file", "oid": hashlib.sha1(p.read_bytes()).hexdigest(),
                                        "size": p.stat().st_size, "path": name} for name, p in files.items()], body)
                if path not in files:
                    return self._error(404, "EntryNotFound", f"{path} does not exist")
                content = files[path].read_bytes()
                self.send_response(200)
                self.send_header("X-Repo-Commit", commit)
                self.send_header("ETag", f'"{hashlib.sha256(content).hexdigest()}"')
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                if body:
                    self.wfile.write(content)

            def _json(self, value: object, body: bool) -> None:
                payload = json.dumps(value).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if body:
                    self.wfile.write(payload)

        return Handler
