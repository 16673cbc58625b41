"""A loopback Hugging Face hub for the tests: the file protocol that `huggingface_hub` speaks, from memory.

It answers what the real client asks (read from huggingface_hub's file_download.py and utils/_http.py):
- `HEAD/GET /{repo}/resolve/{revision}/{file}` with `X-Repo-Commit`, `ETag` and `Content-Length`. Weight
  files are served as the hub serves LFS files: a 302 to another host's `/cdn/{repo}/{sha256}`, with `X-Linked-Etag`,
  `X-Linked-Size` and `Location`; the CDN answers `Range: bytes=N-` with 206 (the client resumes that way).
- 404 with `X-Error-Code: RepoNotFound`, `RevisionNotFound` or `EntryNotFound` (the last with the commit).
- 401 with `X-Error-Code: GatedRepo` for a gated repo without the right `Authorization: Bearer` token.
- `GET /api/models/{repo}/revision/{revision}` (repo info with its files) and `/api/models/{repo}/tree/{revision}`.
It binds 127.0.0.1 only, logs every request, and can cut a download halfway (once per blob).
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".h5", ".msgpack")


@dataclass
class Repo:
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # sha -> {path: content}
    refs: dict[str, str] = field(default_factory=dict)  # branch or tag -> sha
    token: str | None = None  # a gated repo: only this bearer token may read it


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    repo_id: str = ""  # the repo of a file request (resolve or CDN), else ""
    file: str = ""  # the repo file of a file request, else ""


def git_blob_sha(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


class FakeHub:
    """Serve repos at http://127.0.0.1:{port}. Use as a context manager."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[Request] = []
        self.cut_once: set[str] = set()  # repo file names whose next download stops halfway
        self.blobs: dict[str, bytes] = {}
        self.blob_names: dict[str, str] = {}  # sha256 -> the repo file name it was committed as
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # ------------------------------------------------------------------------------------ content
    def commit(self, repo_id: str, files: dict[str, bytes | Path], refs: tuple[str, ...] = ("main",),
               token: str | None = None) -> str:
        """Add a commit holding `files`, point `refs` at it, and return its sha."""
        repo = self.repos.setdefault(repo_id, Repo())
        repo.token = token if token is not None else repo.token
        contents = {name: data.read_bytes() if isinstance(data, Path) else data for name, data in files.items()}
        sha = hashlib.sha1(repr((repo_id, len(repo.commits), sorted(contents.items()))).encode()).hexdigest()
        repo.commits[sha] = contents
        for ref in refs:
            repo.refs[ref] = sha
        for name, content in contents.items():
            digest = hashlib.sha256(content).hexdigest()
            self.blobs[digest] = content
            self.blob_names[digest] = name.rsplit("/", 1)[-1]
        return sha

    def commit_folder(self, repo_id: str, folder: Path, prefix: str = "", **kwargs) -> str:
        files = {prefix + str(p.relative_to(folder)): p for p in sorted(folder.rglob("*")) if p.is_file()}
        return self.commit(repo_id, files, **kwargs)

    def downloads(self, repo_id: str | None = None) -> list[str]:
        """Repo files whose bytes were sent (a GET of a plain file, or of an LFS file on the CDN), in order."""
        return [r.file for r in self.requests
                if r.method == "GET" and r.file and (repo_id is None or r.repo_id == repo_id)
                and not ("/resolve/" in r.path and r.file.endswith(LFS_SUFFIXES))]  # that GET is only a redirect

    # ------------------------------------------------------------------------------------ serving
    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def cdn_url(self) -> str:
        """The same loopback server under the name "localhost", so that the client sees another host."""
        return self.url.replace("127.0.0.1", "localhost")

    def __enter__(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            fake = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()


class _Handler(BaseHTTPRequestHandler):
    fake: FakeHub

    def log_message(self, *args) -> None:  # keep the test output clean
        pass

    def do_HEAD(self) -> None:
        self._handle(body=False)

    def do_GET(self) -> None:
        self._handle(body=True)

    # -------------------------------------------------------------------------------- routing
    def _handle(self, body: bool) -> None:
        path = urlsplit(self.path).path
        request = Request(self.command, path, dict(self.headers.items()))
        with self.fake._lock:
            self.fake.requests.append(request)
        if path.startswith("/cdn/"):  # /cdn/{repo}/{sha256}
            request.repo_id, _, digest = unquote(path.removeprefix("/cdn/")).rpartition("/")
            request.file = self.fake.blob_names.get(digest, "")
            return self._cdn(digest, body)
        if path.startswith("/api/models/"):
            return self._api(path.removeprefix("/api/models/"))
        if "/resolve/" in path:
            repo_id, rest = path.lstrip("/").split("/resolve/", 1)
            revision, _, file = rest.partition("/")
            request.repo_id, request.file = unquote(repo_id), unquote(file)
            return self._resolve(unquote(repo_id), unquote(revision), unquote(file), body)
        self._error(404, "RepoNotFound")

    def _lookup(self, repo_id: str, revision: str) -> tuple[Repo, str, dict[str, bytes]] | None:
        """The repo, commit and files, or None after answering with the right error."""
        repo = self.fake.repos.get(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound")
            return None
        if repo.token is not None and self.headers.get("Authorization") != f"Bearer {repo.token}":
            self._error(401, "GatedRepo", f"Access to model {repo_id} is restricted. You must be authenticated.")
            return None
        sha = repo.refs.get(revision, revision if revision in repo.commits else None)
        if sha is None:
            self._error(404, "RevisionNotFound")
            return None
        return repo, sha, repo.commits[sha]

    def _resolve(self, repo_id: str, revision: str, file: str, body: bool) -> None:
        found = self._lookup(repo_id, revision)
        if found is None:
            return
        _, sha, files = found
        if file not in files:
            return self._error(404, "EntryNotFound", commit=sha)
        content = files[file]
        if file.endswith(LFS_SUFFIXES):  # the hub redirects LFS files to its CDN, and names the blob
            digest = hashlib.sha256(content).hexdigest()
            self.send_response(302)
            # The CDN is another host, as the hub's is: the client then stops at this response for the metadata.
            self.send_header("Location", f"{self.fake.cdn_url}/cdn/{repo_id}/{digest}")
            self.send_header("X-Repo-Commit", sha)
            self.send_header("ETag", f'"{git_blob_sha(content)}"')
            self.send_header("X-Linked-Etag", f'"{digest}"')
            self.send_header("X-Linked-Size", str(len(content)))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._send(content, body, {"X-Repo-Commit": sha, "ETag": f'"{git_blob_sha(content)}"'}, file)

    def _cdn(self, digest: str, body: bool) -> None:
        content = self.fake.blobs.get(digest)
        if content is None:
            return self._error(404, "EntryNotFound")
        self._send(content, body, {"ETag": f'"{digest}"'}, self.fake.blob_names[digest])

    def _send(self, content: bytes, body: bool, headers: dict[str, str], file: str) -> None:
        start = 0
        wanted = self.headers.get("Range", "")
        if wanted.startswith("bytes=") and wanted.endswith("-"):
            start = int(wanted[len("bytes="):-1])
        self.send_response(206 if start else 200)
        for key, value in headers.items():
            self.send_header(key, value)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(content) - 1}/{len(content)}")
        self.send_header("Content-Length", str(len(content) - start))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if not body:
            return
        payload = content[start:]
        with self.fake._lock:
            cut = file.rsplit("/", 1)[-1] in self.fake.cut_once
            self.fake.cut_once.discard(file.rsplit("/", 1)[-1])
        if cut:  # promise every byte, send half, hang up: a download interrupted by the network
            self.wfile.write(payload[: len(payload) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.wfile.write(payload)

    def _api(self, rest: str) -> None:
        for kind in ("/revision/", "/tree/"):
            if kind in rest:
                repo_id, _, revision = rest.partition(kind)
                revision, _, under = unquote(revision).partition("/")
                found = self._lookup(unquote(repo_id), revision)
                if found is None:
                    return
                _, sha, files = found
                if kind == "/revision/":
                    info = {"id": unquote(repo_id), "sha": sha, "siblings": [{"rfilename": f} for f in sorted(files)]}
                else:
                    info = [{"type": "file", "path": f, "size": len(c), "oid": git_blob_sha(c)}
                            for f, c in sorted(files.items()) if f.startswith(under)]
                return self._send(json.dumps(info).encode(), True, {"Content-Type": "application/json"}, "")
        self._error(404, "RepoNotFound")

    def _error(self, status: int, code: str, message: str = "", commit: str | None = None) -> None:
        payload = json.dumps({"error": message or code}).encode()
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        if message:
            self.send_header("X-Error-Message", message)
        if commit:
            self.send_header("X-Repo-Commit", commit)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
