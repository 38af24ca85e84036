"""Rasters read where they live (HTTP(S), S3) through GDAL, and secrets kept out of messages.

Reads go through GDAL's `/vsicurl/` (or `/vsis3/`) with options that make a window read a
few range requests: no directory listing on open, no sidecar probes (only the file's own
extension is allowed), retries on 429/5xx with a delay, and a per-request timeout. A failed
read raises `AssetReadError` naming the URL without its query string (where signatures
live) and what GDAL or the server said.
"""

from __future__ import annotations

import math
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import PurePosixPath
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import rasterio
import rasterio.errors
from rasterio._err import CPLE_BaseError

from helios.runner.materialize.sources.base import Grid, read_band

T = TypeVar("T")
REDACTED = "<redacted>"
_URL = re.compile(r"(?:https?|s3|gs)://[^\s'\"<>]+")
_SIGNED_QUERY = re.compile(
    r"\?[^\s'\"<>]*\b(?:sig|se|sp|st|sv|token|key|signature|x-amz-[a-z-]+)=[^\s'\"<>]*",
    re.IGNORECASE,
)
"""A query string holding a signature or key, wherever it appears."""
VSI_PREFIXES = ("/vsicurl/", "/vsis3/", "/vsigs/", "/vsiaz/")
AWS_CREDENTIAL_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_PROFILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)
"""Environment variables any of which gives GDAL AWS credentials (besides ~/.aws)."""


class AssetReadError(RuntimeError):
    """An asset could not be read (the message names the redacted URL and the cause)."""


class SearchError(RuntimeError):
    """A catalogue search failed (the message names the redacted URL and the cause)."""


class CredentialsError(RuntimeError):
    """A source needs credentials that the environment does not provide."""


def redact_url(url: str) -> str:
    """`url` without its query string (SAS tokens, presigned signatures) or user info."""
    prefix = next((p for p in VSI_PREFIXES if url.startswith(p)), "")
    parts = urlsplit(url[len(prefix) :])
    if not parts.scheme:
        return url
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = REDACTED if parts.query else ""
    return prefix + urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def redact_text(text: str, *urls: str) -> str:
    """`text` with every URL in it redacted (`redact_url`), and the query strings of `urls`.

    GDAL messages often name a file by its bare name plus query (`B02.tif?sig=...`): pass
    the URL read to remove its query wherever it appears.
    """
    for url in urls:
        query = urlsplit(strip_vsi(url)).query
        if query:
            text = text.replace("?" + query, "?" + REDACTED).replace(query, REDACTED)
    text = _URL.sub(lambda m: redact_url(m.group(0)), text)
    return _SIGNED_QUERY.sub("?" + REDACTED, text)


def seconds(value: timedelta | float) -> float:
    """A timeout given as a timedelta (rslearn's type) or as seconds."""
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def has_aws_credentials() -> bool:
    """Whether GDAL can find AWS credentials (environment or ~/.aws files)."""
    if any(os.environ.get(k) for k in AWS_CREDENTIAL_ENV):
        return True
    home = os.path.expanduser("~")
    files = [os.environ.get("AWS_SHARED_CREDENTIALS_FILE") or f"{home}/.aws/credentials"]
    files.append(os.environ.get("AWS_CONFIG_FILE") or f"{home}/.aws/config")
    return any(os.path.isfile(f) for f in files)


def gdal_path(href: str, requester_pays: bool = False) -> str:
    """The GDAL path of an asset href: http(s) through /vsicurl/, s3:// through /vsis3/."""
    if href.startswith(VSI_PREFIXES):
        return href
    if href.startswith(("http://", "https://")):
        return "/vsicurl/" + href
    if href.startswith("s3://"):
        return "/vsis3/" + href[len("s3://") :]
    if href.startswith("gs://"):
        return "/vsigs/" + href[len("gs://") :]
    return href


_S3_HOSTED = re.compile(r"^https?://([a-z0-9.\-]+)\.s3[.\-](?:[a-z0-9\-]+\.)?amazonaws\.com/(.+)$")
_S3_PATH = re.compile(r"^https?://s3[.\-](?:[a-z0-9\-]+\.)?amazonaws\.com/([^/]+)/(.+)$")


def s3_path(path: str) -> str:
    """An S3 object's `/vsis3/bucket/key` path (signed requests), from an https URL too.

    Requester-pays objects cannot be read anonymously over plain HTTPS; other paths are
    returned unchanged.
    """
    url = strip_vsi(path)
    for pattern in (_S3_HOSTED, _S3_PATH):
        m = pattern.match(url.split("?", 1)[0])
        if m:
            return f"/vsis3/{m.group(1)}/{m.group(2)}"
    return path


def strip_vsi(path: str) -> str:
    """The URL inside a `/vsicurl/` path (other paths unchanged)."""
    return path[len("/vsicurl/") :] if path.startswith("/vsicurl/") else path


@dataclass(frozen=True)
class HttpOptions:
    """Timeouts and retries of remote reads (searches and GDAL range requests)."""

    timeout_s: float = 10.0
    """Seconds one HTTP request may take (connect, and each read)."""
    retries: int = 3
    """Retries of a request answered 429/5xx or timed out."""
    backoff_s: float = 0.5
    """Delay before the first retry (STAC searches double it at each retry)."""
    requester_pays: bool = False
    """S3 reads are billed to the caller (AWS_REQUEST_PAYER=requester; needs credentials)."""
    cache_mb: int = 256
    """GDAL's process-wide cache of downloaded ranges (its default, 16 MB, is smaller than the
    blocks neighbouring windows share, so they would be downloaded again)."""

    def gdal_options(self, path: str) -> dict[str, Any]:
        """GDAL config options for reading `path` (one set in the environment is kept)."""
        opts: dict[str, Any] = {
            "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
            "GDAL_HTTP_MAX_RETRY": self.retries,
            "GDAL_HTTP_RETRY_DELAY": self.backoff_s,
            "GDAL_HTTP_TIMEOUT": max(1, math.ceil(self.timeout_s)),
            "GDAL_HTTP_CONNECTTIMEOUT": max(1, math.ceil(self.timeout_s)),
            "CPL_VSIL_CURL_CACHE_SIZE": self.cache_mb * 2**20,
            # serial ranges go through that cache; parallel ones (GDAL's default) re-download
            # blocks a previous window already fetched
            "GDAL_HTTP_MULTIRANGE": "SERIAL",
        }
        suffix = PurePosixPath(urlsplit(strip_vsi(path)).path).suffix
        if suffix:  # only the file itself: no .aux.xml/.msk/.ovr probes
            opts["CPL_VSIL_CURL_ALLOWED_EXTENSIONS"] = suffix
        if self.requester_pays:
            opts["AWS_REQUEST_PAYER"] = "requester"
        return {k: v for k, v in opts.items() if k not in os.environ}  # the environment wins


def http_get(url: str, options: HttpOptions, what: str) -> bytes:
    """GET a URL with `options`' timeout and retries (429/5xx, connection errors).

    Raises:
        SearchError: naming `what`, the redacted URL and what the server said.

    """
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3 import Retry

    retry = Retry(
        total=options.retries,
        backoff_factor=options.backoff_s,
        status_forcelist=(429, 500, 502, 503, 504),
        raise_on_status=False,
    )
    with requests.Session() as session:
        session.mount("http://", HTTPAdapter(max_retries=retry))
        session.mount("https://", HTTPAdapter(max_retries=retry))
        try:
            resp = session.get(url, timeout=(options.timeout_s, options.timeout_s))
        except requests.RequestException as err:
            raise SearchError(f"{what}: {redact_url(url)}: {redact_text(str(err))}") from None
    if resp.status_code != 200:
        said = " ".join(resp.text.split())[:200]
        raise SearchError(
            f"{what}: {redact_url(url)}: HTTP {resp.status_code} {resp.reason}: {said}"
        )
    return resp.content


def _gdal_message(err: BaseException, path: str) -> str:
    """The messages of an error and of what caused it (GDAL chains them)."""
    parts: list[str] = []
    cur: BaseException | None = err
    while cur is not None and len(parts) < 4:
        text = str(cur).strip()
        if text and text not in parts and "See previous exception" not in text:
            parts.append(text)
        cur = cur.__cause__ or cur.__context__
    return redact_text("; ".join(parts) or type(err).__name__, path)


def read_remote_band(
    path: str,
    index: int,
    grid: Grid,
    resampling: str,
    nodata: float | None,
    options: HttpOptions,
) -> np.ndarray:
    """`read_band` of a remote (or local) raster under `options`.

    Raises:
        AssetReadError: naming the redacted URL and GDAL's or the server's message.

    """
    try:
        with rasterio.Env(**options.gdal_options(path)):
            return read_band(path, index, grid, resampling, nodata)
    except (rasterio.errors.RasterioError, CPLE_BaseError, OSError) as err:
        raise AssetReadError(f"{redact_url(strip_vsi(path))}: {_gdal_message(err, path)}") from None


def call_with_timeout(fn: Callable[[], T], timeout_s: float, what: str) -> T:
    """`fn()`, or TimeoutError after `timeout_s` (fn keeps running in a daemon thread).

    For library calls with no timeout of their own (planetary_computer's SAS token request
    retries for minutes against an unreachable endpoint).
    """
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as err:  # handed to the caller
            box["error"] = err

    thread = threading.Thread(target=run, daemon=True, name=f"helios-{what}")
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise TimeoutError(f"{what} did not answer within {timeout_s:.0f} s")
    if "error" in box:
        raise box["error"]
    return box["value"]
