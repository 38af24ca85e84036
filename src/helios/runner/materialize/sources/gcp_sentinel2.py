"""rslearn's `gcp_public_data.Sentinel2`: Sentinel-2 L1C in Google's public bucket, over HTTPS.

The bucket `gcp-public-data-sentinel-2` is public: Helios lists it anonymously through the
GCS JSON API and reads the band files with GDAL range requests, never with BigQuery (so
`use_rtree_index` / `use_bigquery` are accepted and do not matter). Per window:

1. the Sentinel-2 tiles under it, from rslearn's public tile index
   (`{tile: [[lon0, lat0, lon1, lat1], ...]}`, fetched once into `index_cache_dir`);
2. per tile and year, the product folders `tiles/<zz>/<b>/<sq>/S2?_MSIL1C_<year>*.SAFE/`
   (one listing per tile-year, cached);
3. for the products dated in the window's range, each product's `MTD_MSIL1C.xml`
   (footprint, sensing time, cloud cover, processing baseline, band file prefix; cached).

Bands B01..B12 (with B10), B8A, TCI (R, G, B): JP2 files, uint16 reflectance x 10000. The
base URLs are arguments (`storage_url`, `tile_index_url`; also $HELIOS_GCS_URL).
"""

from __future__ import annotations

import logging
import os
import re
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import quote

import numpy as np
from shapely import wkt
from shapely.geometry import Polygon, box
from shapely.geometry.base import BaseGeometry

from helios.runner.core.geometry import parse_time
from helios.runner.materialize.sources.base import (
    BandFile,
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
    HttpOptions,
    SearchError,
    http_get,
    read_remote_band,
    seconds,
)
from helios.runner.materialize.sources.search_cache import SearchCache, cache_root

logger = logging.getLogger(__name__)
STORAGE_URL = "https://storage.googleapis.com"
STORAGE_ENV = "HELIOS_GCS_URL"
BUCKET = "gcp-public-data-sentinel-2"
TILE_INDEX_URL = (
    "https://storage.googleapis.com/ai2-rslearn-projects-data/artifacts/sentinel2_tile_index.json"
)
MISSIONS = ("S2A", "S2B", "S2C")
BANDS = (*(f"B{i:02d}" for i in range(1, 13)), "B8A")
"""L1C band files: `<prefix><band>.jp2`; `TCI.jp2` holds R, G, B."""
_DATE = re.compile(r"_MSIL1C_(\d{8})T")


def parse_product_xml(text: bytes) -> dict[str, Any]:
    """Footprint (WKT), sensing time, cloud cover, baseline and band-file prefix of a product."""
    root = ET.fromstring(text)

    def first(tag: str) -> str | None:
        el = next(root.iter(tag), None)
        return el.text.strip() if el is not None and el.text else None

    coords = (first("EXT_POS_LIST") or "").split()
    ring = [(float(coords[i + 1]), float(coords[i])) for i in range(0, len(coords) - 1, 2)]
    images = [el.text for el in root.iter("IMAGE_FILE") if el.text and el.text.endswith("_B01")]
    if len(ring) < 3 or not images or first("PRODUCT_START_TIME") is None:
        raise ValueError("product XML lacks EXT_POS_LIST, IMAGE_FILE or PRODUCT_START_TIME")
    footprint = Polygon(ring).buffer(0)
    return {
        "footprint": footprint.wkt,
        "datetime": first("PRODUCT_START_TIME"),
        "eo:cloud_cover": float(first("Cloud_Coverage_Assessment") or "nan"),
        "s2:processing_baseline": first("PROCESSING_BASELINE"),
        "image_prefix": images[0][: -len("B01")],
    }


class Sentinel2(DataSource):
    """Sentinel-2 L1C from `gcp-public-data-sentinel-2` (public; no credentials)."""

    modality = "sentinel2"
    needs_network = True

    def __init__(
        self,
        index_cache_dir: str,
        product_type: Literal["L1C", "L2A"] = "L1C",
        sort_by: str | None = None,
        use_rtree_index: bool = True,
        harmonize: bool = False,
        rtree_time_range: list[str] | None = None,
        rtree_cache_dir: str | None = None,
        use_bigquery: bool | None = None,
        bands: list[str] | None = None,
        storage_url: str | None = None,
        tile_index_url: str = TILE_INDEX_URL,
        timeout: timedelta | float = timedelta(seconds=10),
        retries: int = 3,
        backoff: float = 0.5,
    ) -> None:
        """Create the source (rslearn's arguments, plus Helios's last five).

        Args:
            index_cache_dir: Where the tile index, listings and product metadata are
                cached, relative to the scratch's dataset folder.
            product_type: "L1C" (L2A is not in this bucket's public layout Helios reads:
                use planetary_computer.Sentinel2 or aws_sentinel2_element84.Sentinel2).
            sort_by: "cloud_cover" (rslearn's only choice) or any item property.
            use_rtree_index: Accepted for rslearn configs; Helios always lists the bucket.
            harmonize: Remove the baseline >= 04.00 offset (RADIO_ADD_OFFSET).
            rtree_time_range: Accepted for rslearn configs; not used.
            rtree_cache_dir: Accepted for rslearn configs; not used.
            use_bigquery: Accepted for rslearn configs; Helios never queries BigQuery.
            bands: Bands to read when the layer names none.
            storage_url: GCS root (default: $HELIOS_GCS_URL, else storage.googleapis.com).
            tile_index_url: JSON of Sentinel-2 tile bounds (rslearn's public index).
            timeout: Seconds (or a timedelta) one request may take.
            retries: Retries of a failed request.
            backoff: Backoff factor of the retries, in seconds.

        """
        self.index_cache_dir, self.product_type = index_cache_dir, product_type
        self.sort_by = "eo:cloud_cover" if sort_by == "cloud_cover" else sort_by
        self.sort_ascending = True
        self.use_rtree_index, self.use_bigquery = use_rtree_index, use_bigquery
        self.rtree_time_range, self.rtree_cache_dir = rtree_time_range, rtree_cache_dir
        self.harmonize, self.bands = harmonize, bands
        self.storage_url = (storage_url or os.environ.get(STORAGE_ENV) or STORAGE_URL).rstrip("/")
        self.tile_index_url = tile_index_url
        self.http = HttpOptions(seconds(timeout), retries, backoff)
        self._index: list[tuple[str, tuple[float, float, float, float]]] | None = None

    def __getstate__(self) -> dict[str, Any]:
        """Picklable state (the tile index is reloaded from the cache)."""
        return {**self.__dict__, "_index": None}

    def describe(self) -> str:
        """A short description for messages."""
        return f"gcp_public_data.Sentinel2({self.storage_url}/{BUCKET})"

    def check(self, context: SourceContext) -> list[str]:
        """L2A is not read from this bucket."""
        if self.product_type != "L1C":
            return [
                f"{self.describe()}: product_type {self.product_type} is not supported; use "
                "rslearn.data_sources.planetary_computer.Sentinel2 for L2A"
            ]
        return []

    def _cache(self, context: SourceContext) -> SearchCache:
        return SearchCache(cache_root(self.index_cache_dir, context), "gcp_sentinel2")

    def _get(self, url: str, what: str, context: SourceContext) -> bytes:
        """A GET answered from the cache when asked before (bodies cached as text)."""
        cache, request = self._cache(context), {"url": url}
        body = cache.get(request)
        if body is None:
            body = http_get(url, self.http, what).decode("utf-8")
            cache.put(request, body)
        return str(body).encode("utf-8")

    def tiles(self, geometry: BaseGeometry, context: SourceContext) -> list[str]:
        """Sentinel-2 tiles (e.g. "18SVH") whose bounds touch the geometry."""
        import json

        if self._index is None:
            data = json.loads(self._get(self.tile_index_url, "Sentinel-2 tile index", context))
            self._index = [(t, tuple(b)) for t, bounds in data.items() for b in bounds]
        return sorted({t for t, b in self._index if box(*b).intersects(geometry)})

    def _list(self, prefix: str, context: SourceContext) -> list[str]:
        """Folder prefixes directly under `prefix` (every page of the GCS listing)."""
        import json

        folders: list[str] = []
        token = ""
        while True:
            url = (
                f"{self.storage_url}/storage/v1/b/{BUCKET}/o?prefix={quote(prefix)}"
                f"&delimiter=/" + (f"&pageToken={quote(token)}" if token else "")
            )
            page = json.loads(self._get(url, "GCS listing", context))
            folders.extend(page.get("prefixes") or [])
            token = page.get("nextPageToken") or ""
            if not token:
                return folders

    def _product(self, folder: str, context: SourceContext) -> Item:
        """The item of a product folder (`.../<name>.SAFE/`), from its metadata XML."""
        name = folder.rstrip("/").rsplit("/", 1)[-1].removesuffix(".SAFE")
        url = f"{self.storage_url}/{BUCKET}/{folder}MTD_MSIL1C.xml"
        meta = parse_product_xml(self._get(url, "product metadata", context))
        when = parse_time(meta["datetime"])
        props = {k: meta[k] for k in ("datetime", "eo:cloud_cover", "s2:processing_baseline")}
        base = f"/vsicurl/{self.storage_url}/{BUCKET}/{folder}{meta['image_prefix']}"
        files = [BandFile(f"{base}{b}.jp2", (b,)) for b in BANDS]
        files.append(BandFile(f"{base}TCI.jp2", ("R", "G", "B")))
        return Item(name, (when, when), wkt.loads(meta["footprint"]), files, props)

    def items(
        self,
        geometry: BaseGeometry,
        time_range: tuple[datetime, datetime] | None,
        context: SourceContext,
    ) -> list[Item]:
        """Products over `geometry` dated in `time_range`, ranked by `sort_by`."""
        problems = self.check(context)
        if problems:
            raise ValueError(problems[0])
        if time_range is None:
            raise ValueError(f"{self.describe()} needs a time range (rslearn's rule)")
        first, last = time_range[0].date() - timedelta(days=1), time_range[1].date()
        out = []
        for tile in self.tiles(geometry, context):
            cell = f"tiles/{tile[:2]}/{tile[2]}/{tile[3:5]}/"
            for year in range(first.year, last.year + 1):
                for mission in MISSIONS:
                    for folder in self._list(f"{cell}{mission}_MSIL1C_{year}", context):
                        m = _DATE.search(folder)
                        day = datetime.strptime(m.group(1), "%Y%m%d").date() if m else None
                        if day is None or not first <= day <= last:
                            continue
                        try:
                            item = self._product(folder, context)
                        except (SearchError, ValueError, ET.ParseError) as err:
                            logger.warning("skipping Sentinel-2 product %s: %s", folder, err)
                            continue
                        if item.footprint.intersects(geometry):
                            out.append(item)
        wanted = {band_key(b) for b in context.bands}
        for it in out:
            it.files = [f for f in it.files if any(b and band_key(b) in wanted for b in f.bands)]
        return rank_items(out, self.sort_by, self.sort_ascending)

    def read(
        self, item: Item, band: str, grid: Grid, resampling: str, nodata: float | None
    ) -> np.ndarray | None:
        """One band on `grid` (harmonized if asked; TCI never)."""
        loc = item.locate(band)
        if loc is None:
            return None
        try:
            data = read_remote_band(loc[0], loc[1], grid, resampling, nodata, self.http)
        except AssetReadError as err:
            raise AssetReadError(f"item {item.id}, band {band}: {err}") from None
        if self.harmonize and band_key(band) not in ("R", "G", "B"):
            data = remove_offset(data, s2_offset(item.properties, item.id))
        return data
