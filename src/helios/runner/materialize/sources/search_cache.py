"""Answers of remote indexes kept on disk, keyed by the exact request, so nothing is asked twice.

A STAC search, a bucket listing or a product's metadata is stored as
`<root>/<kind>/<sha256 of the request>.json` holding `{"request": ..., "answer": ...}`
(written atomically, so parallel build workers may share a folder). The root is the source's
`cache_dir` (relative paths resolve against the scratch's dataset folder, as rslearn resolves
them against the dataset), else `<dataset>/cache/<layer>`. Requests are JSON objects; a
request that differs in any byte (endpoint, geometry, time range, query, page size) is a
different entry.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from helios.runner.core.fsutil import read_json, write_json
from helios.runner.materialize.sources.base import SourceContext


def request_key(request: dict[str, Any]) -> str:
    """The cache key of a request: sha256 of its canonical JSON."""
    text = json.dumps(request, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def cache_root(cache_dir: str | None, context: SourceContext) -> Path | None:
    """Where a source's answers live (None: not cached, e.g. while validating)."""
    if cache_dir:
        path = Path(cache_dir).expanduser()
        if path.is_absolute():
            return path
        return context.cache_dir / path if context.cache_dir is not None else None
    if context.cache_dir is None:
        return None
    return context.cache_dir / "cache" / (context.layer or "default")


class SearchCache:
    """A folder of cached answers (`get` / `put` by request)."""

    def __init__(self, root: Path | None, kind: str) -> None:
        """Args: the cache root (None: a cache that holds nothing); the kind's subfolder."""
        self.folder = root / kind if root is not None else None

    def path(self, request: dict[str, Any]) -> Path | None:
        """The file of a request's answer."""
        return self.folder / f"{request_key(request)}.json" if self.folder else None

    def get(self, request: dict[str, Any]) -> Any | None:
        """The cached answer, or None (unreadable entries count as missing)."""
        path = self.path(request)
        if path is None or not path.is_file():
            return None
        try:
            data = read_json(path)
        except (OSError, ValueError):
            return None
        return data.get("answer") if isinstance(data, dict) else None

    def put(self, request: dict[str, Any], answer: Any) -> None:
        """Store an answer."""
        path = self.path(request)
        if path is not None:
            write_json(path, {"request": request, "answer": answer})
