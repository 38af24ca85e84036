"""rslearn's `hf_srtm.SRTM`: void-filled SRTM elevation mirrored on Hugging Face by AI2.

The index is `<base>/file_list.json`, a JSON list of tile paths such as
`N05/SRTM1N05W163V2.tif` (1 arc-second) and `N05/SRTM3N05W163V2.tif` (3 arc-second), one
per 1x1 degree cell (the name gives the cell's south-west corner). It is fetched once per
dataset (cached as rslearn caches it) and every tile under a window becomes a timeless item
whose single band is the layer's single band (e.g. `dem`); tiles are read with GDAL range
requests over plain HTTPS (no credentials). The base URL is the `base_url` argument, else
$HELIOS_HF_SRTM_URL, else AI2's dataset.
"""

from __future__ import annotations

import json
import math
import os
import re
from datetime import datetime, timedelta

import numpy as np
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from helios.runner.materialize.sources.base import (
    BandFile,
    DataSource,
    Grid,
    Item,
    SourceContext,
)
from helios.runner.materialize.sources.remote import (
    AssetReadError,
    HttpOptions,
    http_get,
    read_remote_band,
    seconds,
)
from helios.runner.materialize.sources.search_cache import SearchCache, cache_root

BASE_URL = "https://huggingface.co/datasets/allenai/srtm-global-void-filled/resolve/main/"
BASE_URL_ENV = "HELIOS_HF_SRTM_URL"
FILE_LIST = "file_list.json"
_TILE = re.compile(r"^SRTM(\d)([NS])(\d{2})([EW])(\d{3})V2\.tif$")


def tile_cell(name: str) -> tuple[int, int, bool] | None:
    """(lon_min, lat_min, is 1 arc-second) of a tile file name, or None if it is not one."""
    m = _TILE.match(os.path.basename(name))
    if m is None:
        return None
    lat = int(m.group(3)) * (1 if m.group(2) == "N" else -1)
    lon = int(m.group(5)) * (1 if m.group(4) == "E" else -1)
    return lon, lat, m.group(1) == "1"


class SRTM(DataSource):
    """SRTM tiles from the Hugging Face mirror (int16 metres), read over HTTPS."""

    modality = "srtm"
    needs_network = True

    def __init__(
        self,
        timeout: timedelta | float = timedelta(seconds=10),
        cache_dir: str | None = None,
        always_use_3arcsecond: bool = False,
        base_url: str | None = None,
        retries: int = 3,
        backoff: float = 0.5,
    ) -> None:
        """Create the source (rslearn's arguments, plus Helios's last three).

        Args:
            timeout: Seconds (or a timedelta) one request may take.
            cache_dir: Where file_list.json is cached, relative to the scratch's dataset
                folder (default `<dataset>/cache/<layer>`).
            always_use_3arcsecond: Use the 3 arc-second tiles even where 1 arc-second ones
                exist (default: prefer 1 arc-second).
            base_url: The mirror's root (default: $HELIOS_HF_SRTM_URL, else AI2's).
            retries: Retries of a failed request.
            backoff: Backoff factor of the retries, in seconds.

        """
        self.base_url = base_url or os.environ.get(BASE_URL_ENV) or BASE_URL
        if not self.base_url.endswith("/"):
            self.base_url += "/"
        self.cache_dir = cache_dir
        self.always_use_3arcsecond = always_use_3arcsecond
        self.http = HttpOptions(seconds(timeout), retries, backoff)
        self._tiles: dict[tuple[int, int], str] | None = None

    def __getstate__(self) -> dict[str, object]:
        """Picklable state (the tile table is rebuilt from the cache)."""
        return {**self.__dict__, "_tiles": None}

    def describe(self) -> str:
        """A short description for messages."""
        return f"SRTM({self.base_url})"

    def check(self, context: SourceContext) -> list[str]:
        """The layer must read exactly one band (the elevation)."""
        if len(context.bands) != 1:
            return [f"{self.describe()}: expects one band (e.g. 'dem'), got {context.bands}"]
        return []

    def tiles(self, context: SourceContext) -> dict[tuple[int, int], str]:
        """(lon_min, lat_min) -> tile path, preferring 1 arc-second unless told not to."""
        if self._tiles is None:
            url = self.base_url + FILE_LIST
            cache = SearchCache(cache_root(self.cache_dir, context), "hf_srtm")
            names = cache.get({"url": url})
            if names is None:
                names = json.loads(http_get(url, self.http, "SRTM file list"))
                if not isinstance(names, list):
                    raise ValueError(f"{url}: expected a JSON list of tile paths")
                cache.put({"url": url}, names)
            table: dict[tuple[int, int], tuple[str, bool]] = {}
            for name in names:
                cell = tile_cell(str(name))
                if cell is None or (self.always_use_3arcsecond and cell[2]):
                    continue
                key = (cell[0], cell[1])
                if key not in table or (cell[2] and not table[key][1]):
                    table[key] = (str(name), cell[2])
            self._tiles = {k: v[0] for k, v in table.items()}
        return self._tiles

    def items(
        self,
        geometry: BaseGeometry,
        time_range: tuple[datetime, datetime] | None,
        context: SourceContext,
    ) -> list[Item]:
        """The tiles under `geometry` (timeless)."""
        tiles = self.tiles(context)
        band = context.bands[0] if context.bands else "dem"
        x0, y0, x1, y1 = geometry.bounds
        out = []
        for lat in range(math.floor(y0), math.floor(y1) + 1):
            for lon in range(math.floor(x0), math.floor(x1) + 1):
                path = tiles.get((lon, lat))
                cell = box(lon, lat, lon + 1, lat + 1)
                if path is None or not cell.intersects(geometry):
                    continue
                href = "/vsicurl/" + self.base_url + path
                out.append(Item(path, None, cell, [BandFile(href, (band,))]))
        return out

    def read(
        self, item: Item, band: str, grid: Grid, resampling: str, nodata: float | None
    ) -> np.ndarray | None:
        """The tile's elevation on `grid`, read with range requests."""
        loc = item.locate(band)
        if loc is None:
            return None
        try:
            return read_remote_band(loc[0], loc[1], grid, resampling, nodata, self.http)
        except AssetReadError as err:
            raise AssetReadError(f"item {item.id}, band {band}: {err}") from None
