"""`StacApi`: a window's items from a STAC API (pystac-client), its pixels read over HTTP.

Per window: one item search (POST `/search` with `intersects` = the window's footprint in
WGS84, `datetime` = the layer's time range, the configured `collections` and `query`),
every `next` page followed, answered from the search cache when the same request was made
before (`search_cache.py`). Items are ranked client-side by `sort_by` (a stable sort, as
rslearn's), and read with GDAL range requests (`remote.py`): only the blocks under the
window, signed just before the read when the catalogue needs it (Planetary Computer SAS
tokens), never stored signed. Searches retry 429/5xx, connection errors and timeouts
(POST included) with exponential backoff through urllib3's `Retry` in pystac-client's
`StacApiIO`.
"""

from __future__ import annotations

import copy
import logging
import os
import re
import warnings
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

import numpy as np
from shapely.geometry import mapping
from shapely.geometry.base import BaseGeometry

from helios.runner.materialize.sources.base import (
    DataSource,
    Grid,
    Item,
    SourceContext,
    band_key,
    rank_items,
)
from helios.runner.materialize.sources.harmonize import harmonize as remove_offset
from helios.runner.materialize.sources.harmonize import s2_offset
from helios.runner.materialize.sources.remote import (
    AssetReadError,
    CredentialsError,
    HttpOptions,
    SearchError,
    call_with_timeout,
    has_aws_credentials,
    read_remote_band,
    redact_text,
    redact_url,
    s3_path,
    seconds,
    strip_vsi,
)
from helios.runner.materialize.sources.search_cache import SearchCache, cache_root
from helios.runner.materialize.sources.stac_items import item_from_stac

logger = logging.getLogger(__name__)
Signer = Literal["none", "planetary_computer"]
RETRY_STATUS = (429, 500, 502, 503, 504)
NOT_REFLECTANCE = frozenset({"SCL", "R", "G", "B", "TCI", "AOT", "WVP"})
"""Bands harmonization leaves alone (classes, 8-bit previews, atmosphere products)."""
BLOB_DOMAIN = ".blob.core.windows.net"


def with_cloud_limit(query: dict[str, Any] | None, max_cloud_cover: float | None) -> Any:
    """`query` plus `eo:cloud_cover < max_cloud_cover` (the stricter of two limits)."""
    q = copy.deepcopy(query) if query else {}
    if max_cloud_cover is not None:
        ops = dict(q.get("eo:cloud_cover") or {})
        limit = float(max_cloud_cover)
        ops["lt"] = min(float(ops["lt"]), limit) if "lt" in ops else limit
        q["eo:cloud_cover"] = ops
    return q or None


def stac_time(t: datetime) -> str:
    """RFC 3339 UTC time as STAC APIs take it."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class StacApi(DataSource):
    """Items of one collection of a STAC API, read where they live.

    The rslearn names (`planetary_computer.*`, `aws_sentinel2_element84.Sentinel2`, ...) are
    this class with their catalogue's endpoint, collection and band table filled in
    (docs/runner.md, "Data sources"); any other STAC API can be named directly.
    """

    needs_network = True
    SIGN_WAIT_FLOOR_S: ClassVar[float] = 30.0
    """The least time a SAS token request may take before the read fails."""
    credentials_hint: ClassVar[str] = ""
    """What to use instead when requester-pays credentials are missing."""

    def __init__(
        self,
        endpoint: str,
        collection_name: str,
        asset_bands: dict[str, list[str]] | None = None,
        query: dict[str, Any] | None = None,
        max_cloud_cover: float | None = None,
        sort_by: str | None = None,
        sort_ascending: bool = True,
        skip_items_missing_assets: bool = False,
        id_pattern: str | None = None,
        timeless: bool = False,
        limit: int = 100,
        max_items: int | None = None,
        timeout: timedelta | float = timedelta(seconds=10),
        retries: int = 3,
        backoff: float = 0.5,
        cache_dir: str | None = None,
        sign: Signer = "none",
        harmonize: bool = False,
        headers_from_env: dict[str, str] | None = None,
        alternate_href: str | None = None,
        requester_pays: bool = False,
    ) -> None:
        """Create the source.

        Args:
            endpoint: The STAC API root, e.g. "https://earth-search.aws.element84.com/v1".
            collection_name: The collection to search, e.g. "sentinel-2-l2a".
            asset_bands: Asset key -> the band names it holds, in order; None: an asset's
                bands are its `eo:bands` names, else its key.
            query: STAC query-extension filter, e.g. {"eo:cloud_cover": {"lt": 50}}.
            max_cloud_cover: Adds `eo:cloud_cover < max_cloud_cover` to `query`.
            sort_by: Item property ranking items (client-side, stable; items without it
                last), e.g. "eo:cloud_cover".
            sort_ascending: Rank by ascending `sort_by`.
            skip_items_missing_assets: Drop items lacking an asset of `asset_bands` that
                holds a band the layer reads.
            id_pattern: Keep only items whose id matches this regular expression.
            timeless: Items have no time (elevation): no datetime filter, match any range.
            limit: Items per page (1..10000).
            max_items: Stop after this many items (None: every page).
            timeout: Seconds (or a timedelta, rslearn's type) one request may take.
            retries: Retries of a failed request (429/5xx, connection error, timeout).
            backoff: Backoff factor of the retries, in seconds.
            cache_dir: Search cache folder; relative: to the scratch's dataset folder
                (default `<dataset>/cache/<layer>`).
            sign: "planetary_computer": sign Azure blob hrefs with the planetary-computer
                package (PC_SDK_SUBSCRIPTION_KEY from the environment, if set).
            harmonize: Remove the Sentinel-2 baseline >= 04.00 offset (harmonize.py).
            headers_from_env: Request header -> the environment variable holding its value
                (API keys; never written to configs, caches or logs).
            alternate_href: Read `asset.alternate[<this>].href` where an asset has one
                (e.g. "s3" for the s3:// copy of a file).
            requester_pays: s3:// reads are billed to the reader (needs AWS credentials).

        """
        self.endpoint = endpoint.rstrip("/")
        self.collection_name = collection_name
        self.asset_bands = dict(asset_bands) if asset_bands is not None else None
        self.query = with_cloud_limit(query, max_cloud_cover)
        self.max_cloud_cover = max_cloud_cover
        self.sort_by, self.sort_ascending = sort_by, sort_ascending
        self.skip_items_missing_assets = skip_items_missing_assets
        self.id_pattern, self.timeless = id_pattern, timeless
        self.limit, self.max_items = limit, max_items
        self.http = HttpOptions(seconds(timeout), retries, backoff, requester_pays)
        self.cache_dir, self.sign, self.harmonize = cache_dir, sign, harmonize
        self.headers_from_env = dict(headers_from_env or {})
        self.alternate_href = alternate_href
        self._client: Any = None
        self._warned: set[str] = set()

    def __getstate__(self) -> dict[str, Any]:
        """Picklable state (the open client stays behind; workers open their own)."""
        return {**self.__dict__, "_client": None}

    def describe(self) -> str:
        """A short description for messages."""
        return f"{type(self).__name__}({self.collection_name} at {redact_url(self.endpoint)})"

    def check(self, context: SourceContext) -> list[str]:
        """Settings that cannot work (no network is used)."""
        where = self.describe()
        problems = []
        if urlsplit(self.endpoint).scheme not in ("http", "https"):
            problems.append(f"{where}: endpoint must be an http(s) URL, got {self.endpoint!r}")
        if not 1 <= self.limit <= 10000:
            problems.append(f"{where}: limit must be 1..10000, got {self.limit}")
        if self.id_pattern is not None:
            try:
                re.compile(self.id_pattern)
            except re.error as err:
                problems.append(f"{where}: id_pattern: {err}")
        return problems

    def search_request(
        self, geometry: BaseGeometry, time_range: tuple[datetime, datetime] | None
    ) -> dict[str, Any]:
        """The search a window makes (also its cache key)."""
        request: dict[str, Any] = {
            "endpoint": self.endpoint,
            "collections": [self.collection_name],
            "intersects": mapping(geometry),
            "limit": self.limit,
        }
        if time_range is not None and not self.timeless:
            request["datetime"] = f"{stac_time(time_range[0])}/{stac_time(time_range[1])}"
        if self.query:
            request["query"] = self.query
        if self.max_items is not None:
            request["max_items"] = self.max_items
        return request

    def _open(self) -> Any:
        """The pystac-client Client (opened once per process: one landing-page GET)."""
        if self._client is None:
            from pystac_client import Client
            from pystac_client.stac_api_io import StacApiIO
            from urllib3 import Retry

            retry = Retry(
                total=self.http.retries,
                backoff_factor=self.http.backoff_s,
                status_forcelist=RETRY_STATUS,
                allowed_methods=None,  # retry POST searches too
                raise_on_status=False,  # the last answer's status and text reach the error
            )
            headers = {
                h: os.environ[v] for h, v in self.headers_from_env.items() if v in os.environ
            }
            if headers:  # pystac-client logs request headers at DEBUG
                io_log = logging.getLogger("pystac_client.stac_api_io")
                io_log.setLevel(max(io_log.getEffectiveLevel(), logging.INFO))
            t = (self.http.timeout_s, self.http.timeout_s)
            io = StacApiIO(max_retries=retry)  # Client.open sets its headers and timeout
            self._client = Client.open(
                self.endpoint, headers=headers or None, stac_io=io, timeout=t
            )
        return self._client

    def search(self, request: dict[str, Any]) -> list[dict[str, Any]]:
        """Run a search, following every next page; returns the item dicts.

        Raises:
            SearchError: naming the collection, the redacted endpoint and the answer.

        """
        from pystac_client.exceptions import APIError
        from pystac_client.warnings import PystacClientWarning

        args = {k: v for k, v in request.items() if k != "endpoint"}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", PystacClientWarning)
                search = self._open().search(method="POST", **args)
                return list(search.items_as_dicts())
        except (APIError, NotImplementedError, OSError, ValueError) as err:
            said = " ".join(str(err).split())[:400] or type(err).__name__
            raise SearchError(
                f"search of {self.collection_name} at {redact_url(self.endpoint)} failed: "
                f"{redact_text(said)}"
            ) from None

    def asset_table(self, context: SourceContext) -> dict[str, list[str]] | None:
        """Asset key -> band names, for the layer's bands (None: from the items)."""
        return self.asset_bands

    def items(
        self,
        geometry: BaseGeometry,
        time_range: tuple[datetime, datetime] | None,
        context: SourceContext,
    ) -> list[Item]:
        """The collection's items over `geometry` in `time_range`, ranked by `sort_by`."""
        if self.http.requester_pays and not has_aws_credentials():
            raise CredentialsError(
                f"{self.describe()} reads requester-pays S3 objects: set AWS credentials in "
                "the environment (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE); "
                "the reads are billed to that account" + self.credentials_hint
            )
        request = self.search_request(geometry, time_range)
        cache = SearchCache(cache_root(self.cache_dir, context), "stac_search")
        features = cache.get(request)
        if features is None:
            features = self.search(request)
            cache.put(request, features)
        return rank_items(self.to_items(features, context), self.sort_by, self.sort_ascending)

    def to_items(self, features: list[dict[str, Any]], context: SourceContext) -> list[Item]:
        """Search results as Items holding the layer's bands."""
        table = self.asset_table(context)
        wanted = {band_key(b) for b in context.bands}
        if table is not None:
            known = {band_key(b) for names in table.values() for b in names}
            missing = sorted(b for b in context.bands if band_key(b) not in known)
            if missing and not self._warned.issuperset(missing):
                self._warned.update(missing)
                logger.warning(
                    "%s has no %s: those bands stay nodata", self.describe(), ", ".join(missing)
                )
        required = [
            k for k, names in (table or {}).items() if any(band_key(n) in wanted for n in names)
        ]
        out = []
        for n, feature in enumerate(features):
            if self.id_pattern and not re.search(self.id_pattern, str(feature.get("id", ""))):
                continue
            assets = feature.get("assets") or {}
            if self.skip_items_missing_assets and any(k not in assets for k in required):
                continue
            item = item_from_stac(self._hrefs(feature), context.bands, context.base_dir, table, n)
            if item is None:
                continue
            if self.timeless:
                item.time_range = None
            out.append(item)
        return out

    def _hrefs(self, feature: dict[str, Any]) -> dict[str, Any]:
        """The feature with `alternate_href` copies of its assets chosen."""
        if not self.alternate_href:
            return feature
        assets = {}
        for key, asset in (feature.get("assets") or {}).items():
            alt = (asset.get("alternate") or {}).get(self.alternate_href) or {}
            assets[key] = {**asset, "href": alt["href"]} if "href" in alt else asset
        return {**feature, "assets": assets}

    def signed(self, path: str) -> str:
        """The GDAL path to read: Azure blob URLs signed when `sign` says so."""
        if self.http.requester_pays:
            path = s3_path(path)
        if self.sign != "planetary_computer":
            return path
        url = strip_vsi(path)
        if not urlsplit(url).netloc.endswith(BLOB_DOMAIN):
            return path  # planetary_computer returns it unchanged anyway
        import planetary_computer

        wait = max(self.SIGN_WAIT_FLOOR_S, 3 * self.http.timeout_s)
        signed = call_with_timeout(
            lambda: planetary_computer.sign_url(url), wait, "the Planetary Computer SAS endpoint"
        )
        return "/vsicurl/" + signed

    def read(
        self,
        item: Item,
        band: str,
        grid: Grid,
        resampling: str,
        nodata: float | None,
    ) -> np.ndarray | None:
        """One band of an item on `grid`, read over the network (harmonized if asked).

        Raises:
            AssetReadError: naming the item, the band, the redacted URL and the cause.

        """
        loc = item.locate(band)
        if loc is None:
            return None
        path, index = loc
        where = f"item {item.id}, band {band}"
        try:
            url = self.signed(path)
        except Exception as err:  # the signing library's own errors, or our timeout
            said = redact_text(str(err)) or type(err).__name__
            raise AssetReadError(
                f"{where}: cannot sign {redact_url(strip_vsi(path))}: {said}"
            ) from None
        try:
            data = read_remote_band(url, index, grid, resampling, nodata, self.http)
        except AssetReadError as err:
            raise AssetReadError(f"{where}: {err}") from None
        if self.harmonize and band_key(band) not in NOT_REFLECTANCE:
            data = remove_offset(data, s2_offset(item.properties, item.id))
        return data
