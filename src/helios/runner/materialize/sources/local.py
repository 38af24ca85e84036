"""Data sources: local or mounted GeoTIFF/COG scenes, found by a directory scan or STAC items.

A source turns its configuration into a list of `Scene`s (an id, an acquisition time, a WGS84
footprint and the files holding each band). Materialization (dataset_builder.py) picks scenes
per window and time period and reprojects their bands onto the window grid with
`read_band`. Formats are documented in docs/runner.md ("Data sources").
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.warp
from affine import Affine
from rasterio.enums import Resampling

from helios.runner.core.fsutil import read_json
from helios.runner.core.geometry import WGS84, parse_time

RASTER_EXTENSIONS = (".tif", ".tiff", ".jp2", ".vrt")
_DATE = re.compile(r"(?<!\d)((?:19|20)\d{2})-?(\d{2})-?(\d{2})(?:T(\d{2}):?(\d{2}):?(\d{2}))?")
_BAND = re.compile(r"^B0*(\d+[A-Z]?)$")


def band_key(name: str) -> str:
    """Normalized band name for matching: upper case, "B02" and "B2" alike."""
    upper = name.strip().upper()
    m = _BAND.match(upper)
    return f"B{m.group(1)}" if m else upper


@dataclass(frozen=True)
class BandFile:
    """One raster file of a scene and the band name of each of its bands (None: unknown)."""

    path: str
    bands: tuple[str | None, ...]


@dataclass
class Scene:
    """One acquisition (or one static tile): its time, footprint and band files."""

    id: str
    time: datetime | None
    """Acquisition time; None for timeless layers (elevation, land cover), which match any time."""
    bounds: tuple[float, float, float, float]
    """WGS84 (lon, lat) bounding box."""
    files: list[BandFile]
    properties: dict[str, Any] = field(default_factory=dict)

    def locate(self, band: str) -> tuple[str, int] | None:
        """(file path, 1-based band index) holding `band`, or None."""
        key = band_key(band)
        for f in self.files:
            for i, name in enumerate(f.bands):
                if name is not None and band_key(name) == key:
                    return f.path, i + 1
        return None

    def intersects(self, bounds: tuple[float, float, float, float]) -> bool:
        """Whether the footprint touches a WGS84 bounding box."""
        a = self.bounds
        return a[0] < bounds[2] and bounds[0] < a[2] and a[1] < bounds[3] and bounds[1] < a[3]

    def in_time(self, start: datetime, end: datetime) -> bool:
        """Whether the scene falls in [start, end) (timeless scenes always do)."""
        return self.time is None or start <= self.time < end


class DataSource:
    """Base class of data sources: `index(base_dir, bands)` lists the scenes."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, tuple[str, ...]], list[Scene]] = {}

    def scenes(self, base_dir: Path, bands: tuple[str, ...]) -> list[Scene]:
        """The source's scenes having at least one of `bands` (computed once, then cached)."""
        cache: dict[tuple[str, tuple[str, ...]], list[Scene]] = self.__dict__.setdefault(
            "_cache", {}
        )  # also for subclasses that do not call super().__init__()
        key = (str(base_dir), tuple(bands))
        if key not in cache:
            cache[key] = [s for s in self.index(base_dir, bands) if s.files]
        return cache[key]

    def index(self, base_dir: Path, bands: tuple[str, ...]) -> list[Scene]:
        """List scenes; relative paths resolve against `base_dir` (dataset.json's folder)."""
        raise NotImplementedError

    def describe(self) -> str:
        """A short description for messages."""
        return type(self).__name__


def _resolve(path: str, base_dir: Path) -> Path:
    p = Path(os.path.expanduser(path))
    return p if p.is_absolute() else base_dir / p


def _header(path: str) -> tuple[tuple[float, float, float, float], int, tuple[str | None, ...]]:
    """WGS84 bounds, band count and band descriptions of a raster file."""
    with rasterio.open(path) as src:
        if src.crs is None:
            raise ValueError(f"{path} has no CRS")
        bounds = rasterio.warp.transform_bounds(src.crs, WGS84, *src.bounds, densify_pts=21)
        return bounds, src.count, tuple(src.descriptions)


def _union(boxes: list[tuple[float, float, float, float]]) -> tuple[float, float, float, float]:
    a = np.array(boxes)
    return float(a[:, 0].min()), float(a[:, 1].min()), float(a[:, 2].max()), float(a[:, 3].max())


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


class LocalFiles(DataSource):
    """GeoTIFF/COG/JP2 files under a directory (local or mounted).

    Every sub-directory holding raster files is one scene (one file per band, the band named
    in the file name, e.g. `T18SVH_20240105_B02.tif`); a raster directly in `src_dir` is a
    scene by itself (bands from its descriptions, or layer order). The acquisition time comes
    from `scene.json` (`{"datetime": ..., "properties": {...}}`) in the scene directory, or
    `<file stem>.json` next to a lone file, else from a date in the name (20240105,
    2024-01-05); scenes without one are timeless.
    """

    def __init__(self, src_dir: str, extensions: list[str] | None = None) -> None:
        """Create the source.

        Args:
            src_dir: Directory to scan (relative: to dataset.json's folder).
            extensions: Raster file extensions to consider (default .tif .tiff .jp2 .vrt).

        """
        super().__init__()
        self.src_dir = src_dir
        self.extensions = tuple(e.lower() for e in (extensions or RASTER_EXTENSIONS))

    def describe(self) -> str:
        """A short description for messages."""
        return f"LocalFiles({self.src_dir})"

    def index(self, base_dir: Path, bands: tuple[str, ...]) -> list[Scene]:
        """Scan the directory (sorted, so scene order is stable)."""
        root = _resolve(self.src_dir, base_dir)
        if not root.is_dir():
            raise FileNotFoundError(f"LocalFiles: {root} is not a directory")
        scenes: list[Scene] = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            rasters = sorted(f for f in filenames if f.lower().endswith(self.extensions))
            rasters = [f for f in rasters if not f.startswith(".")]
            if not rasters:
                continue
            d = Path(dirpath)
            if d == root:
                scenes.extend(self._scene(d / f, [d / f], bands) for f in rasters)
            else:
                scenes.append(self._scene(d, [d / f for f in rasters], bands))
        return scenes

    def _scene(self, where: Path, files: list[Path], bands: tuple[str, ...]) -> Scene:
        meta_path = where / "scene.json" if where.is_dir() else where.with_suffix(".json")
        meta = read_json(meta_path) if meta_path.exists() else {}
        when = meta.get("datetime")
        name = where.name if where.is_dir() else where.stem
        headers = [_header(str(f)) for f in files]
        band_files = [
            BandFile(str(f), _file_bands(f.stem, n, desc, bands, len(files) == 1))
            for f, (_, n, desc) in zip(files, headers)
        ]
        return Scene(
            id=name,
            time=parse_time(when) if when else _date_from_name(name),
            bounds=_union([h[0] for h in headers]),
            files=[bf for bf in band_files if any(bf.bands)],
            properties=dict(meta.get("properties") or {}),
        )


def _href(href: str, base: Path) -> str:
    if href.startswith("file://"):
        return href[len("file://") :]
    for scheme, vsi in (("http://", "/vsicurl/"), ("https://", "/vsicurl/"), ("s3://", "/vsis3/")):
        if href.startswith(scheme):
            return vsi + (href if vsi == "/vsicurl/" else href[len(scheme) :])
    if href.startswith("gs://"):
        return "/vsigs/" + href[len("gs://") :]
    return str(_resolve(href, base))


class StacItems(DataSource):
    """A STAC item collection on disk: a GeoJSON FeatureCollection of STAC items.

    Each item needs `id`, `properties.datetime` (or `start_datetime`; null for timeless
    items), and `assets` whose `href`s point at GeoTIFF/COG files (absolute, `file://`, or
    relative to the JSON file). An asset's bands are named by `eo:bands` (or STAC 1.1
    `bands`) names, else by the asset key. `bbox` (or the geometry) gives the footprint;
    `proj:epsg` is informational (the CRS is read from the files). Other properties (such as
    `eo:cloud_cover`) can rank scenes through `sort_by`.
    """

    def __init__(self, path: str) -> None:
        """Create the source.

        Args:
            path: The item collection JSON (relative: to dataset.json's folder).

        """
        super().__init__()
        self.path = path

    def describe(self) -> str:
        """A short description for messages."""
        return f"StacItems({self.path})"

    def index(self, base_dir: Path, bands: tuple[str, ...]) -> list[Scene]:
        """Read the collection; items without a wanted band are dropped."""
        path = _resolve(self.path, base_dir)
        data = read_json(path)
        items = data.get("features") if isinstance(data, dict) else data
        if not isinstance(items, list):
            raise ValueError(f"StacItems: {path} is not a FeatureCollection of STAC items")
        keys = {band_key(b): b for b in bands}
        scenes = []
        for n, item in enumerate(items):
            props = dict(item.get("properties") or {})
            when = props.get("datetime") or props.get("start_datetime")
            files = []
            for key, asset in sorted((item.get("assets") or {}).items()):
                if not isinstance(asset, dict) or "href" not in asset:
                    continue
                meta = asset.get("eo:bands") or asset.get("bands") or [{"name": key}]
                names = tuple(keys.get(band_key(str(b.get("name", "")))) for b in meta)
                if any(names):
                    files.append(BandFile(_href(asset["href"], path.parent), names))
            if not files:
                continue
            if item.get("bbox"):
                bounds = tuple(float(v) for v in item["bbox"][:2] + item["bbox"][-2:])
            elif item.get("geometry"):
                from shapely.geometry import shape

                bounds = shape(item["geometry"]).bounds
            else:
                bounds = _header(files[0].path)[0]
            scenes.append(
                Scene(
                    id=str(item.get("id", f"item{n}")),
                    time=parse_time(when) if when else None,
                    bounds=(bounds[0], bounds[1], bounds[2], bounds[3]),
                    files=files,
                    properties=props,
                )
            )
        return scenes


BUILTIN_SOURCES: tuple[type[DataSource], ...] = (LocalFiles, StacItems)


def rank_scenes(scenes: list[Scene], sort_by: str | None) -> list[Scene]:
    """Scenes best first: ascending `sort_by` property (missing last), then time, then id."""

    def key(s: Scene) -> tuple[float, float, str]:
        v = s.properties.get(sort_by) if sort_by else None
        rank = float(v) if isinstance(v, int | float) else float("inf")
        t = s.time.timestamp() if s.time else float("-inf")
        return (rank if sort_by else 0.0, t, s.id)

    return sorted(scenes, key=key)


def read_band(
    path: str,
    index: int,
    crs: str,
    transform: Affine,
    width: int,
    height: int,
    resampling: str,
    nodata: float | None,
) -> np.ndarray:
    """One band reprojected onto a grid: float32 [height, width], NaN where there is no data.

    Only the source blocks under the grid are read (GDAL's warper reads lazily).
    """
    out = np.full((height, width), np.nan, dtype=np.float32)
    with rasterio.open(path) as src:
        src_nodata = src.nodatavals[index - 1]
        if src_nodata is None:
            src_nodata = nodata
        rasterio.warp.reproject(
            source=rasterio.band(src, index),
            destination=out,
            src_nodata=src_nodata,
            dst_nodata=np.nan,
            dst_transform=transform,
            dst_crs=crs,
            resampling=Resampling[resampling],
            init_dest_nodata=True,
        )
    return out
