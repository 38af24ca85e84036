"""The data-source interface: find a window's items, then read their pixels onto its grid.

A data source answers `items(geometry, time_range, context)` with the `Item`s (scenes,
tiles) that may cover a window: each has an id, an acquisition time range (None for timeless
items such as elevation), a WGS84 footprint and, per band, the raster file (a local path or
a GDAL path such as `/vsicurl/https://...`) and band index holding it. The build step then
matches items to the window as rslearn does (`helios.runner.materialize.matching`) and reads
the matched items band set by band set with `read`, which reprojects only the window's pixels.

Sources with an index on disk (`LocalFiles`, `StacItems`) build it once per run; STAC API
sources search per window and cache their answers (docs/runner.md, "Data sources").
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import rasterio
import rasterio.warp
from affine import Affine
from rasterio.enums import Resampling
from shapely.geometry.base import BaseGeometry

RESAMPLING = {
    "nearest": Resampling.nearest,
    "bilinear": Resampling.bilinear,
    "cubic": Resampling.cubic,
    "cubic_spline": Resampling.cubic_spline,
    "average": Resampling.average,
    "mode": Resampling.mode,
}


def band_key(name: str) -> str:
    """Normalized band name for matching: upper case, "B02" and "B2" alike."""
    import re

    upper = name.strip().upper()
    m = re.match(r"^B0*(\d+[A-Z]?)$", upper)
    return f"B{m.group(1)}" if m else upper


@dataclass(frozen=True)
class BandFile:
    """One raster file of an item and the band name of each of its bands (None: unknown)."""

    path: str
    bands: tuple[str | None, ...]


@dataclass
class Item:
    """One scene or tile a source offers: its time, footprint and band files."""

    id: str
    time_range: tuple[datetime, datetime] | None
    """Acquisition time (start == end for an instant); None for timeless items."""
    footprint: BaseGeometry
    """WGS84 (lon, lat) footprint."""
    files: list[BandFile]
    properties: dict[str, Any] = field(default_factory=dict)

    @property
    def time(self) -> datetime | None:
        """The acquisition (start) time."""
        return self.time_range[0] if self.time_range else None

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """WGS84 bounding box."""
        b = self.footprint.bounds
        return (b[0], b[1], b[2], b[3])

    def locate(self, band: str) -> tuple[str, int] | None:
        """(file path, 1-based band index) holding `band`, or None."""
        key = band_key(band)
        for f in self.files:
            for i, name in enumerate(f.bands):
                if name is not None and band_key(name) == key:
                    return f.path, i + 1
        return None

    def intersects(self, bounds: tuple[float, float, float, float]) -> bool:
        """Whether the footprint's bounding box touches a WGS84 bounding box."""
        a = self.bounds
        return a[0] < bounds[2] and bounds[0] < a[2] and a[1] < bounds[3] and bounds[1] < a[3]

    def to_json(self) -> dict[str, Any]:
        """Rslearn's serialized item (items.json), plus the band files Helios reads."""
        times = [t.isoformat() for t in self.time_range] if self.time_range else None
        return {
            "name": self.id,
            "geometry": {
                "projection": {"crs": "EPSG:4326", "x_resolution": 1, "y_resolution": 1},
                "shp": self.footprint.wkt,
                "time_range": times,
            },
            "asset_urls": {
                b or f"band{i}": f.path for f in self.files for i, b in enumerate(f.bands)
            },
            "properties": self.properties,
            "helios_files": [{"path": f.path, "bands": list(f.bands)} for f in self.files],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Item:
        """Inverse of `to_json` (items.json written by Helios)."""
        from shapely import wkt

        from helios.runner.core.geometry import parse_time

        g = data["geometry"]
        times = g.get("time_range")
        return cls(
            id=str(data["name"]),
            time_range=(parse_time(times[0]), parse_time(times[1])) if times else None,
            footprint=wkt.loads(g["shp"]),
            files=[BandFile(f["path"], tuple(f["bands"])) for f in data.get("helios_files", [])],
            properties=dict(data.get("properties") or {}),
        )


@dataclass(frozen=True)
class SourceContext:
    """Where a source runs: its config's folder, its cache folder, the layer's bands."""

    base_dir: Path
    """Relative paths in the config resolve against this folder (dataset.json's)."""
    cache_dir: Path | None
    """A writable folder for this source's caches (search results), or None."""
    bands: tuple[str, ...]
    """Every band the layer reads."""
    layer: str = ""


class DataSource:
    """Base class of data sources; subclasses implement `items` (and may override `read`)."""

    modality: ClassVar[str | None] = None
    """The Helios modality this source provides (None: taken from the layer)."""
    needs_network: ClassVar[bool] = False
    """Whether finding items needs the network (validation never does)."""

    def items(
        self,
        geometry: BaseGeometry,
        time_range: tuple[datetime, datetime] | None,
        context: SourceContext,
    ) -> list[Item]:
        """Items that may cover `geometry` (WGS84) in `time_range` (None: any time)."""
        raise NotImplementedError

    def check(self, context: SourceContext) -> list[str]:
        """Problems found without the network (missing folders, files); empty when fine."""
        return []

    def describe(self) -> str:
        """A short description for messages."""
        return type(self).__name__

    def read(
        self,
        item: Item,
        band: str,
        grid: Grid,
        resampling: str,
        nodata: float | None,
    ) -> np.ndarray | None:
        """One band of an item on `grid`: float32 [H, W], NaN where it has no data.

        None when the item has no such band.
        """
        loc = item.locate(band)
        if loc is None:
            return None
        return read_band(loc[0], loc[1], grid, resampling, nodata)

    def to_model_units(self, modality: str, data: np.ndarray) -> np.ndarray:
        """Convert materialized values to what Helios models read (default: unchanged)."""
        return data


@dataclass(frozen=True)
class Grid:
    """A raster grid: CRS, affine transform and size."""

    crs: str
    transform: Affine
    width: int
    height: int


def resolve_path(path: str, base_dir: Path) -> Path:
    """`path` with `~` expanded; relative paths resolve against `base_dir`."""
    p = Path(os.path.expanduser(path))
    return p if p.is_absolute() else base_dir / p


def read_band(
    path: str, index: int, grid: Grid, resampling: str, nodata: float | None
) -> np.ndarray:
    """One band reprojected onto a grid: float32 [height, width], NaN where there is no data.

    Only the source blocks under the grid are read (GDAL's warper reads lazily; over HTTP that
    means range requests for the blocks needed).
    """
    out = np.full((grid.height, grid.width), np.nan, dtype=np.float32)
    with rasterio.open(path) as src:
        src_nodata = src.nodatavals[index - 1]
        if src_nodata is None:
            src_nodata = nodata
        rasterio.warp.reproject(
            source=rasterio.band(src, index),
            destination=out,
            src_nodata=src_nodata,
            dst_nodata=np.nan,
            dst_transform=grid.transform,
            dst_crs=grid.crs,
            resampling=RESAMPLING[resampling],
            init_dest_nodata=True,
        )
    return out


def rank_items(items: list[Item], sort_by: str | None, ascending: bool = True) -> list[Item]:
    """Items ordered by a property (missing last), as rslearn's client-side `sort_by` does.

    Without `sort_by` the order is kept (the source's order).
    """
    if not sort_by:
        return list(items)

    def key(it: Item) -> tuple[int, float]:
        v = it.properties.get(sort_by)
        if isinstance(v, int | float):
            return (0, float(v) if ascending else -float(v))
        return (1, 0.0)

    return sorted(items, key=key)
