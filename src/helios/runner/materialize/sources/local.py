"""`LocalFiles`: GeoTIFF/COG/JP2 scenes in a local or mounted folder, indexed by a scan."""

from __future__ import annotations

import os
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import rasterio
import rasterio.warp
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from helios.runner.core.fsutil import read_json
from helios.runner.core.geometry import parse_time
from helios.runner.materialize.sources.base import (
    BandFile,
    DataSource,
    Item,
    SourceContext,
    band_key,
    resolve_path,
)

RASTER_EXTENSIONS = (".tif", ".tiff", ".jp2", ".vrt")
_DATE = re.compile(r"(?<!\d)((?:19|20)\d{2})-?(\d{2})-?(\d{2})(?:T(\d{2}):?(\d{2}):?(\d{2}))?")


class IndexedSource(DataSource):
    """A source whose whole index is read once per run and filtered per window."""

    def __init__(self) -> None:
        self._index: dict[tuple[str, tuple[str, ...]], list[Item]] = {}

    def index(self, context: SourceContext) -> list[Item]:
        """Every item of the source (computed once per context, then cached)."""
        cache: dict[tuple[str, tuple[str, ...]], list[Item]] = self.__dict__.setdefault(
            "_index", {}
        )  # also for subclasses that do not call super().__init__()
        key = (str(context.base_dir), tuple(context.bands))
        if key not in cache:
            cache[key] = [it for it in self.build_index(context) if it.files]
        return cache[key]

    def build_index(self, context: SourceContext) -> list[Item]:
        """List the items; relative paths resolve against `context.base_dir`."""
        raise NotImplementedError

    def items(
        self,
        geometry: BaseGeometry,
        time_range: tuple[datetime, datetime] | None,
        context: SourceContext,
    ) -> list[Item]:
        """Indexed items whose footprint intersects `geometry` (time is matched later)."""
        return [it for it in self.index(context) if it.footprint.intersects(geometry)]


def _header(path: str) -> tuple[tuple[float, float, float, float], int, tuple[str | None, ...]]:
    """WGS84 bounds, band count and band descriptions of a raster file."""
    with rasterio.open(path) as src:
        if src.crs is None:
            raise ValueError(f"{path} has no CRS")
        bounds = rasterio.warp.transform_bounds(src.crs, "EPSG:4326", *src.bounds, densify_pts=21)
        return bounds, src.count, tuple(src.descriptions)


def _date_from_name(name: str) -> datetime | None:
    for m in _DATE.finditer(name):
        y, mo, d = int(m.group(1)), int(m.group(2)), int(m.group(3))
        if 1 <= mo <= 12 and 1 <= d <= 31:
            hh, mm, ss = (int(m.group(i) or 0) for i in (4, 5, 6))
            return parse_time(datetime(y, mo, d, hh, mm, ss))
    return None


def _file_bands(
    stem: str,
    count: int,
    descriptions: tuple[str | None, ...],
    wanted: tuple[str, ...],
    alone: bool,
) -> tuple[str | None, ...]:
    """Band names of a file: from descriptions, its name, or layer order for a lone file."""
    keys = {band_key(b): b for b in wanted}
    named = tuple(keys.get(band_key(d)) if d else None for d in descriptions)
    if any(named):
        return named
    if count == 1:
        tokens = [t for t in re.split(r"[_\-.\s]+", stem) if t]
        for token in reversed(tokens):
            if band_key(token) in keys:
                return (keys[band_key(token)],)
        if alone and len(wanted) == 1:
            return (wanted[0],)
        return (None,)
    if alone and count == len(wanted):
        return tuple(wanted)
    return (None,) * count


class LocalFiles(IndexedSource):
    """GeoTIFF/COG/JP2 files under a directory (local or mounted).

    Every sub-directory holding raster files is one scene (one file per band, the band named
    in the file name, e.g. `T18SVH_20240105_B02.tif`); a raster directly in `src_dir` is a
    scene by itself (bands from its descriptions, or layer order). The acquisition time comes
    from `scene.json` (`{"datetime": ..., "properties": {...}}`) in the scene directory, or
    `<file stem>.json` next to a lone file, else from a date in the name (20240105,
    2024-01-05); scenes without one are timeless.
    """

    def __init__(
        self,
        src_dir: str,
        extensions: list[str] | None = None,
        sort_by: str | None = None,
        sort_ascending: bool = True,
    ) -> None:
        """Create the source.

        Args:
            src_dir: Directory to scan (relative: to dataset.json's folder).
            extensions: Raster file extensions to consider (default .tif .tiff .jp2 .vrt).
            sort_by: Item property ranking items (from scene.json), e.g. "eo:cloud_cover".
            sort_ascending: Rank by ascending `sort_by`.

        """
        super().__init__()
        self.src_dir = src_dir
        self.sort_by, self.sort_ascending = sort_by, sort_ascending
        self.extensions = tuple(e.lower() for e in (extensions or RASTER_EXTENSIONS))

    def describe(self) -> str:
        """A short description for messages."""
        return f"LocalFiles({self.src_dir})"

    def check(self, context: SourceContext) -> list[str]:
        """The folder must exist."""
        root = resolve_path(self.src_dir, context.base_dir)
        return [] if root.is_dir() else [f"LocalFiles: {root} is not a directory"]

    def build_index(self, context: SourceContext) -> list[Item]:
        """Scan the directory (sorted, so item order is stable)."""
        root = resolve_path(self.src_dir, context.base_dir)
        if not root.is_dir():
            raise FileNotFoundError(f"LocalFiles: {root} is not a directory")
        items: list[Item] = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            rasters = sorted(f for f in filenames if f.lower().endswith(self.extensions))
            rasters = [f for f in rasters if not f.startswith(".")]
            if not rasters:
                continue
            d = Path(dirpath)
            if d == root:
                items.extend(self._item(d / f, [d / f], context.bands) for f in rasters)
            else:
                items.append(self._item(d, [d / f for f in rasters], context.bands))
        return items

    def _item(self, where: Path, files: list[Path], bands: tuple[str, ...]) -> Item:
        meta_path = where / "scene.json" if where.is_dir() else where.with_suffix(".json")
        meta: dict[str, Any] = read_json(meta_path) if meta_path.exists() else {}
        when = meta.get("datetime")
        name = where.name if where.is_dir() else where.stem
        headers = [_header(str(f)) for f in files]
        band_files = [
            BandFile(str(f), _file_bands(f.stem, n, desc, bands, len(files) == 1))
            for f, (_, n, desc) in zip(files, headers)
        ]
        time = parse_time(when) if when else _date_from_name(name)
        footprint = box(*headers[0][0])
        for h in headers[1:]:
            footprint = footprint.union(box(*h[0]))
        return Item(
            id=name,
            time_range=(time, time) if time else None,
            footprint=footprint,
            files=[bf for bf in band_files if any(bf.bands)],
            properties=dict(meta.get("properties") or {}),
        )
