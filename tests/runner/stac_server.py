"""A STAC API, a range-capable file server and a GCS-listing stand-in on 127.0.0.1, for tests.

What pystac-client and GDAL need from a server (docs: notes on rslearn's data sources):

- `GET /stac`: a landing page whose `conformsTo` has item-search (and query, sort, filter),
  with a POST `search` link;
- `POST /stac/search`: the matching items (collections, intersects/bbox, datetime, query
  ops eq neq lt lte gt gte in), `page_size` at a time, with a POST `next` link carrying a
  token in its body;
- `GET|HEAD /files/<path>`: files under `root`, `Accept-Ranges: bytes`, 206 for
  `Range: bytes=a-b` with `Content-Range`, 416 past the end;
- `GET /storage/v1/b/<bucket>/o?prefix=&delimiter=/`: a GCS JSON API listing of the folder
  registered for `<bucket>`, and `GET|HEAD /<bucket>/<name>` its objects.

Every request is logged (method, path, headers, status, bytes sent) and faults can be
queued: an HTTP status, or a delay before answering (to trip client timeouts).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from shapely.geometry import box, shape

CONFORMS = [
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/item-search",
    "https://api.stacspec.org/v1.0.0/item-search#query",
    "https://api.stacspec.org/v1.0.0/item-search#sort",
    "https://api.stacspec.org/v1.0.0/item-search#filter",
]


@dataclass
class Logged:
    """One request the server answered."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any = None
    status: int = 0
    sent: int = 0


@dataclass
class Fault:
    """What to do to the next matching request(s)."""

    path: str
    status: int | None = None
    delay: float = 0.0
    times: int = 1
    method: str | None = None


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _matches_query(props: dict[str, Any], query: dict[str, Any]) -> bool:
    ops = {
        "eq": lambda a, b: a == b,
        "neq": lambda a, b: a != b,
        "lt": lambda a, b: a is not None and a < b,
        "lte": lambda a, b: a is not None and a <= b,
        "gt": lambda a, b: a is not None and a > b,
        "gte": lambda a, b: a is not None and a >= b,
        "in": lambda a, b: a in b,
    }
    for prop, conds in query.items():
        value = props.get(prop)
        if not all(ops[op](value, arg) for op, arg in conds.items()):
            return False
    return True


def _matches(item: dict[str, Any], body: dict[str, Any]) -> bool:
    if body.get("collections") and item.get("collection") not in body["collections"]:
        return False
    if body.get("intersects") and not shape(item["geometry"]).intersects(shape(body["intersects"])):
        return False
    if body.get("bbox") and not shape(item["geometry"]).intersects(box(*body["bbox"])):
        return False
    if body.get("datetime"):
        start, _, end = str(body["datetime"]).partition("/")
        when = _time(item["properties"]["datetime"])
        if start not in ("", "..") and when < _time(start):
            return False
        if end not in ("", "..") and when > _time(end):
            return False
    return _matches_query(item["properties"], body.get("query") or {})


@dataclass
class StacServer:
    """The servers (one port); `with StacServer(root) as s: s.url ...`."""

    root: Path
    items: list[dict[str, Any]] = field(default_factory=list)
    page_size: int = 100
    list_page_size: int = 1000
    buckets: dict[str, Path] = field(default_factory=dict)
    log: list[Logged] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.stac = self  # type: ignore[attr-defined]
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        """http://127.0.0.1:<port>."""
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def stac_url(self) -> str:
        """The STAC API root."""
        return f"{self.url}/stac"

    def file_url(self, relative: str | Path) -> str:
        """URL of a file under `root`."""
        return f"{self.url}/files/{Path(relative).as_posix()}"

    def __enter__(self) -> StacServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def add_fault(self, path: str, **kw: Any) -> None:
        """Queue a fault for requests whose path starts with `path`."""
        self.faults.append(Fault(path, **kw))

    def take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for f in self.faults:
                if path.startswith(f.path) and f.method in (None, method) and f.times > 0:
                    f.times -= 1
                    return f
        return None

    def requests(self, method: str | None = None, path: str = "") -> list[Logged]:
        """Logged requests by method and path prefix."""
        return [
            r
            for r in list(self.log)
            if (method is None or r.method == method) and r.path.startswith(path)
        ]

    def bytes_sent(self, path: str = "") -> int:
        """Body bytes sent for requests whose path starts with `path`."""
        return sum(r.sent for r in self.requests(path=path))

    def search(self, body: dict[str, Any]) -> dict[str, Any]:
        """One page of a search (the body's `token` is the offset)."""
        found = [it for it in self.items if _matches(it, body)]
        start = int(body.get("token") or 0)
        size = min(int(body.get("limit") or self.page_size), self.page_size)
        page = found[start : start + size]
        links = []
        if start + size < len(found):
            links.append(
                {
                    "rel": "next",
                    "href": f"{self.stac_url}/search",
                    "type": "application/geo+json",
                    "method": "POST",
                    "body": {**body, "token": start + size},
                }
            )
        return {"type": "FeatureCollection", "features": page, "links": links}

    def listing(self, bucket: str, query: dict[str, list[str]]) -> dict[str, Any]:
        """A GCS JSON API object listing of `bucket`."""
        root = self.buckets[bucket]
        prefix = (query.get("prefix") or [""])[0]
        delim = (query.get("delimiter") or [""])[0]
        names = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        entries: list[tuple[str, bool]] = []
        for name in names:
            if not name.startswith(prefix):
                continue
            rest = name[len(prefix) :]
            if delim and delim in rest:
                folder = prefix + rest.split(delim, 1)[0] + delim
                if (folder, True) not in entries:
                    entries.append((folder, True))
            else:
                entries.append((name, False))
        start = int((query.get("pageToken") or ["0"])[0])
        page = entries[start : start + self.list_page_size]
        out: dict[str, Any] = {"kind": "storage#objects"}
        out["prefixes"] = [n for n, is_dir in page if is_dir]
        out["items"] = [{"name": n, "bucket": bucket} for n, is_dir in page if not is_dir]
        if start + self.list_page_size < len(entries):
            out["nextPageToken"] = str(start + self.list_page_size)
        return out

    def landing(self) -> dict[str, Any]:
        """The STAC API landing page."""
        root = self.stac_url
        return {
            "type": "Catalog",
            "stac_version": "1.0.0",
            "id": "helios-test",
            "description": "a STAC API on 127.0.0.1 for Helios tests",
            "conformsTo": CONFORMS,
            "links": [
                {"rel": "self", "href": root, "type": "application/json"},
                {"rel": "root", "href": root, "type": "application/json"},
                {
                    "rel": "search",
                    "href": f"{root}/search",
                    "type": "application/geo+json",
                    "method": "POST",
                },
                {
                    "rel": "search",
                    "href": f"{root}/search",
                    "type": "application/geo+json",
                    "method": "GET",
                },
            ],
        }


class _Handler(BaseHTTPRequestHandler):
    """Routes requests to the `StacServer` the HTTP server carries (`server.stac`)."""

    protocol_version = "HTTP/1.1"

    @property
    def app(self) -> StacServer:
        """The test server whose routes this handler answers."""
        return self.server.stac  # type: ignore[attr-defined,no-any-return]

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _entry(self, body: Any = None) -> Logged:
        entry = Logged(self.command, self.path, dict(self.headers.items()), body)
        with self.app._lock:
            self.app.log.append(entry)
        return entry

    def _send(
        self,
        entry: Logged,
        status: int,
        data: bytes,
        headers: dict[str, str],
        length: int | None = None,
    ) -> None:
        entry.status = status
        try:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data) if length is None else length))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
                entry.sent = len(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _json(self, entry: Logged, obj: Any, status: int = 200) -> None:
        data = json.dumps(obj).encode()
        self._send(entry, status, data, {"Content-Type": "application/geo+json"})

    def _fault(self, entry: Logged) -> bool:
        fault = self.app.take_fault(self.command, urlsplit(self.path).path)
        if fault is None:
            return False
        if fault.delay:
            time.sleep(fault.delay)
        if fault.status is None:
            return False
        self._json(entry, {"code": fault.status, "description": "injected fault"}, fault.status)
        return True

    def _file(self, entry: Logged, path: Path) -> None:
        if not path.is_file():
            self._send(entry, 404, b"not found", {"Content-Type": "text/plain"})
            return
        size = path.stat().st_size
        rng = self.headers.get("Range")
        base = {"Accept-Ranges": "bytes", "Content-Type": "image/tiff"}
        if not rng:
            data = path.read_bytes() if self.command != "HEAD" else b""
            self._send(entry, 200, data, base, length=size)
            return
        spec = rng.split("=", 1)[1].split(",")[0].strip()
        a, _, b = spec.partition("-")
        start = size - int(b) if a == "" else int(a)
        end = min(size - 1, int(b)) if a != "" and b else size - 1
        if start >= size:
            self._send(entry, 416, b"", {**base, "Content-Range": f"bytes */{size}"})
            return
        with path.open("rb") as f:
            f.seek(start)
            data = f.read(end - start + 1)
        self._send(entry, 206, data, {**base, "Content-Range": f"bytes {start}-{end}/{size}"})

    def _route_get(self, entry: Logged) -> None:
        parts = urlsplit(self.path)
        path = parts.path
        if path in ("/stac", "/stac/"):
            self._json(entry, self.app.landing())
        elif path == "/stac/search":
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            self._json(entry, self.app.search(query))
        elif path.startswith("/files/"):
            self._file(entry, self.app.root / path[len("/files/") :])
        elif path.startswith("/storage/v1/b/"):
            bucket = path.split("/")[4]
            self._json(entry, self.app.listing(bucket, parse_qs(parts.query)))
        elif path.split("/")[1] in self.app.buckets:
            bucket, _, name = path[1:].partition("/")
            self._file(entry, self.app.buckets[bucket] / name)
        else:
            self._send(entry, 404, b"no route", {"Content-Type": "text/plain"})

    def do_GET(self) -> None:  # noqa: N802
        entry = self._entry()
        if not self._fault(entry):
            self._route_get(entry)

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        entry = self._entry(body)
        if self._fault(entry):
            return
        if urlsplit(self.path).path == "/stac/search":
            self._json(entry, self.app.search(body))
        else:
            self._send(entry, 404, b"no route", {"Content-Type": "text/plain"})
