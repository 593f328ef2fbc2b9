"""A tiny stand-in for the Hugging Face Hub, served on loopback, for tests that download.

It answers exactly the requests `huggingface_hub` makes for `model_info` and `snapshot_download`:
- GET  /api/models/{repo}[/revision/{rev}]   repo info: commit `sha` and `siblings` (the file names)
- GET  /api/models/{repo}/tree/{rev}         the file listing (one page, no `Link` header)
- HEAD /{repo}/resolve/{rev}/{file}          `X-Repo-Commit`, `ETag`, `Content-Length`
- GET  /{repo}/resolve/{rev}/{file}          the bytes
An unknown repo, revision or file gets a 404 with the `X-Error-Code` header (`RepoNotFound`,
`RevisionNotFound`, `EntryNotFound`), and a gated repo a 403 `GatedRepo`, which huggingface_hub turns into
its matching errors.
Every request is recorded in `requests` as (method, path), so a test can assert that none was made.
"""

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

_INFO = re.compile(r"^/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?$")
_TREE = re.compile(r"^/api/models/([^/]+/[^/]+)/tree/([^/]+)$")
_RESOLVE = re.compile(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")


class FakeHub:
    def __init__(self):
        self.commits: dict[str, dict[str, dict[str, bytes]]] = {}  # repo -> commit -> path -> bytes
        self.refs: dict[str, dict[str, str]] = {}  # repo -> branch or tag -> commit
        self.gated: set[str] = set()  # repos that answer 403 GatedRepo, as to a user who did not accept the terms
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def add_repo(self, repo_id: str, files: dict[str, bytes], revision: str = "main") -> str:
        """Publish `files` as a new commit of `repo_id` on branch `revision`; returns the commit hash."""
        commit = hashlib.sha1(f"{repo_id}@{revision}".encode() + b"".join(sorted(files.values()))).hexdigest()
        self.commits.setdefault(repo_id, {})[commit] = dict(files)
        self.refs.setdefault(repo_id, {})[revision] = commit
        return commit

    def start(self) -> "FakeHub":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def record(self, method: str, path: str) -> None:
        with self._lock:
            self.requests.append((method, path))

    def files_at(self, repo_id: str, revision: str | None) -> tuple[str, dict[str, bytes]] | None:
        """(commit, files) for a branch, tag or commit hash; None for an unknown revision."""
        revision = revision or "main"
        commit = self.refs[repo_id].get(revision, revision)
        return (commit, self.commits[repo_id][commit]) if commit in self.commits[repo_id] else None


def _handler_for(hub: FakeHub):
    class Handler(BaseHTTPRequestHandler):
        def do_HEAD(self):
            self._answer(with_body=False)

        def do_GET(self):
            self._answer(with_body=True)

        def log_message(self, *args):  # keep test output quiet
            pass

        def _answer(self, with_body: bool):
            path = urlsplit(self.path).path
            hub.record(self.command, path)
            if match := _INFO.match(path):
                self._info(*match.groups())
            elif match := _TREE.match(path):
                self._tree(*match.groups())
            elif match := _RESOLVE.match(path):
                self._resolve(*match.groups(), with_body=with_body)
            else:
                self._error(404, "EntryNotFound")

        def _lookup(self, repo_id: str, revision: str | None):
            if repo_id not in hub.commits:
                return self._error(404, "RepoNotFound")
            if repo_id in hub.gated:
                return self._error(403, "GatedRepo")
            found = hub.files_at(repo_id, unquote(revision) if revision else None)
            return found if found is not None else self._error(404, "RevisionNotFound")

        def _info(self, repo_id, revision):
            if found := self._lookup(repo_id, revision):
                commit, files = found
                siblings = [{"rfilename": name} for name in sorted(files)]
                self._json({"id": repo_id, "modelId": repo_id, "sha": commit, "private": False, "siblings": siblings})

        def _tree(self, repo_id, revision):
            if found := self._lookup(repo_id, revision):
                _, files = found
                entries = [
                    {"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                    for name, data in sorted(files.items())
                ]
                self._json(entries)

        def _resolve(self, repo_id, revision, filename, with_body: bool):
            if not (found := self._lookup(repo_id, revision)):
                return
            commit, files = found
            data = files.get(unquote(filename))
            if data is None:
                return self._error(404, "EntryNotFound", {"X-Repo-Commit": commit})
            self.send_response(200)
            self.send_header("X-Repo-Commit", commit)
            self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            if with_body:
                self.wfile.write(data)

        def _json(self, value):
            body = json.dumps(value).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _error(self, status: int, code: str, headers: dict[str, str] | None = None):
            body = json.dumps({"error": code}).encode()
            self.send_response(status)
            self.send_header("X-Error-Code", code)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            return None

    return Handler
