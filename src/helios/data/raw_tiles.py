"""Reading and validating raw GeoTIFF tiles (docs/data.md, "Raw tile layout").

A raw directory holds one sub-directory per tile (names starting with `.` are ignored)::

    <raw_dir>/<tile_id>/tile.json                        {"timestamps": ["2023-01-15", ...]}
    <raw_dir>/<tile_id>/<modality>[.b<k>][.t<s>].tif

covering 256 x 256 px at 10 m. Without `.b<k>` a file holds every band of the modality on its
grid; with it, only band set `k` at its native resolution (upsampled here by pixel repeat).
Without `.t<s>` a multitemporal file holds all T steps step-major (band = `step * C + c`); with
it, the one step `s` of tile.json's time axis. Every raster of a tile shares one CRS and bounds,
which must place the tile on the globe at about its 2.56 km size; south-up rasters are flipped
north-up. Values are cast to the modality's storage dtype only when they fit exactly. A problem
with a tile raises `TileError`, whose `kind` is the skip reason `convert` reports.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pyproj
import rasterio
import rasterio.errors
import rasterio.warp

from helios.data.modalities import MODALITIES, TILE_SIZE, ModalitySpec

TILE_JSON = "tile.json"
FILE_RE = re.compile(r"^(?P<modality>\w+?)(?:\.b(?P<band_set>\d+))?(?:\.t(?P<step>\d+))?\.tif$")
"""Raw raster file name: `<modality>[.b<band set>][.t<step>].tif`."""

RawFile = tuple[str, str, int | None, int | None]
"""(file name, modality, band set, step) of one raster of a tile."""

GROUND_SIZE = TILE_SIZE * 10.0
"""Metres a tile covers on the ground (256 px at 10 m)."""
GROUND_TOLERANCE = 4.0
"""A tile's ground width and height must be within this factor of `GROUND_SIZE`."""
AREA_OF_USE_MARGIN = 3.0
"""Degrees a tile centre may lie outside its CRS's area of use (e.g. just past a UTM zone)."""


@dataclass(frozen=True)
class RawTile:
    """One tile directory found by `scan_tiles`."""

    tile_id: str
    directory: Path
    files: list[RawFile] = field(default_factory=list)
    """The rasters of the selected modalities."""
    error: str | None = None
    """Why the directory could not be listed (a symlink loop, no permission), if it could not."""


class TileError(Exception):
    """Why a tile (or one of its samples) is skipped: a short `kind` plus a detail."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


def parse_timestamps(tile_dir: Path) -> np.ndarray | None:
    """int32 [T, 3] (day, month, year) from tile.json, or None when there is no tile.json."""
    path = tile_dir / TILE_JSON
    if not path.exists() and not path.is_symlink():
        return None
    try:
        payload = json.loads(path.read_text())
        stamps = payload["timestamps"]
        if not isinstance(stamps, list) or not all(isinstance(s, str) for s in stamps):
            raise ValueError("'timestamps' must be a list of ISO date strings")
        dates = [datetime.fromisoformat(s.replace("Z", "+00:00")) for s in stamps]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise TileError("bad tile.json", f"{path}: {err}") from None
    return np.array([[d.day, d.month, d.year] for d in dates], dtype=np.int32).reshape(-1, 3)


def tile_timestamps(tile_dir: Path, multitemporal: list[str]) -> np.ndarray:
    """int32 [T, 3] time axis of a tile; [0, 3] for a static-only tile without tile.json.

    A tile with `multitemporal` modalities needs a tile.json listing at least one date.
    """
    stamps = parse_timestamps(tile_dir)
    if multitemporal and stamps is None:
        raise TileError("bad tile.json", f"missing; needed for {', '.join(multitemporal)}")
    if multitemporal and stamps is not None and len(stamps) == 0:
        raise TileError(
            "bad tile.json",
            f"{tile_dir / TILE_JSON}: 'timestamps' is empty; needed for {', '.join(multitemporal)}",
        )
    return stamps if stamps is not None else np.zeros((0, 3), dtype=np.int32)


def cast_values(data: np.ndarray, spec: ModalitySpec, path: Path) -> np.ndarray:
    """Check values (no NaN, representable) and cast to the modality's storage dtype."""
    dtype = np.dtype(spec.dtype)
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        raise TileError("NaN values", f"{path.name} holds NaN or infinite values")
    if data.dtype == dtype:
        return data
    if dtype.kind in "iu" and data.size:
        info = np.iinfo(dtype)
        exact = data.dtype.kind in "iu" or bool(np.all(np.floor(data) == data))
        if not exact or data.min() < info.min or data.max() > info.max:
            raise TileError("bad values", f"{path.name} ({data.dtype}) does not fit {dtype}")
    return data.astype(dtype)


@lru_cache(maxsize=64)
def _area_of_use(wkt: str) -> tuple[float, float, float, float] | None:
    """(west, south, east, north) in degrees where a CRS is meant to be used, if known."""
    crs = pyproj.CRS.from_user_input(wkt)
    area = crs.area_of_use
    if area is None and (code := crs.to_epsg()) is not None:
        area = pyproj.CRS.from_epsg(code).area_of_use
    return None if area is None else (area.west, area.south, area.east, area.north)


_GEOD = pyproj.Geod(ellps="WGS84")


def check_georeferencing(crs: Any, bounds: tuple[float, ...], name: str) -> None:
    """Raise TileError unless `bounds` (left, bottom, right, top) make sense in `crs`.

    Geographic bounds must be longitudes and latitudes; in any CRS the tile must map onto the
    globe, near the CRS's area of use, and cover about `GROUND_SIZE` metres each way (a tile
    tagged EPSG:4326 but laid out in UTM metres fails the first check, the reverse the last).
    """
    left, bottom, right, top = bounds
    where = f"{name}: bounds {tuple(round(b, 6) for b in bounds)} in {crs}"
    lon_ok = -180.0 <= left <= right <= 180.0
    if crs.is_geographic and not (lon_ok and -90.0 <= bottom <= top <= 90.0):
        raise TileError(
            "bad georeferencing", f"{where} are outside longitude -180..180, latitude -90..90"
        )
    mid_x, mid_y = (left + right) / 2, (bottom + top) / 2
    try:
        lons, lats = rasterio.warp.transform(
            crs, "EPSG:4326", [left, right, mid_x, mid_x, mid_x], [mid_y, mid_y, top, bottom, mid_y]
        )
    except Exception as err:  # GDAL: "Point outside of projection domain"
        raise TileError(
            "bad georeferencing", f"{where} cannot be placed on the globe ({err})"
        ) from None
    if not all(math.isfinite(v) for v in (*lons, *lats)) or max(map(abs, lats)) > 90:
        raise TileError("bad georeferencing", f"{where} cannot be placed on the globe")
    area = _area_of_use(crs.to_wkt())
    lon, lat, m = lons[4], lats[4], AREA_OF_USE_MARGIN
    if area is not None and not (
        area[0] - m <= lon <= area[2] + m and area[1] - m <= lat <= area[3] + m
    ):
        raise TileError(
            "bad georeferencing",
            f"{where} put the tile centre at lat {lat:.4f}, lon {lon:.4f}, outside the CRS's "
            f"area of use {area}",
        )
    width = _GEOD.inv(lons[0], lats[0], lons[1], lats[1])[2]
    height = _GEOD.inv(lons[2], lats[2], lons[3], lats[3])[2]
    for size, what in ((width, "wide"), (height, "tall")):
        if not GROUND_SIZE / GROUND_TOLERANCE <= size <= GROUND_SIZE * GROUND_TOLERANCE:
            raise TileError(
                "bad georeferencing",
                f"{where} make the tile {size:.4g} m {what} on the ground; a tile covers "
                f"{GROUND_SIZE:.0f} m ({TILE_SIZE} px at 10 m)",
            )


@dataclass
class Grid:
    """The CRS and bounds every raster of one tile must share (set by the first one read)."""

    crs: Any = None
    bounds: tuple[float, ...] | None = None
    """(left, bottom, right, top), north-up whatever the rasters' orientation."""

    def check(self, ds: Any, path: Path) -> tuple[bool, bool]:
        """Check a raster against the tile's grid: (flip rows, flip columns) to make it north-up.

        The first raster sets the grid (after `check_georeferencing`); raise TileError when a
        later one differs, or when a transform is rotated or sheared.
        """
        if ds.crs is None:
            raise TileError("no CRS", f"{path.name} has no coordinate reference system")
        t = ds.transform
        if t.b != 0 or t.d != 0 or t.a == 0 or t.e == 0:
            raise TileError(
                "bad georeferencing",
                f"{path.name}: rotated, sheared or degenerate transform {tuple(t)[:6]}; "
                "only axis-aligned rasters can be read",
            )
        left, bottom, right, top = ds.bounds
        bounds = (min(left, right), min(bottom, top), max(left, right), max(bottom, top))
        if self.bounds is None:
            check_georeferencing(ds.crs, bounds, path.name)
            self.crs, self.bounds = ds.crs, bounds
        elif ds.crs != self.crs:
            raise TileError("mismatched CRS", f"{path.name} is in {ds.crs}, not {self.crs}")
        else:
            tol = 1e-4 * abs(self.bounds[2] - self.bounds[0])
            if max(abs(a - b) for a, b in zip(bounds, self.bounds)) > tol:
                raise TileError(
                    "mismatched bounds", f"{path.name} covers {bounds}, not {self.bounds}"
                )
        return bool(t.e > 0), bool(t.a < 0)


def read_modality(
    tile_dir: Path,
    spec: ModalitySpec,
    files: list[tuple[str, int | None, int | None]],
    num_steps: int,
    grid: Grid,
) -> tuple[np.ndarray, np.ndarray]:
    """One modality of one tile: ([G, G, T, C] or [G, G, C], bool [T] steps with a file).

    `files` are (file name, band set, step) of the modality's rasters.
    """
    split_sets = {b is not None for _, b, _ in files}
    split_steps = {s is not None for _, _, s in files}
    names = ", ".join(sorted(f for f, _, _ in files))
    if len(split_sets) > 1 or len(split_steps) > 1:
        raise TileError("bad file layout", f"{spec.name} mixes file layouts ({names})")
    if True in split_steps and not spec.is_multitemporal:
        raise TileError("bad file layout", f"{spec.name} is static but has per-step files")
    t = num_steps if spec.is_multitemporal else 1
    size = spec.tile_pixels(TILE_SIZE)
    out = np.zeros((size, size, t, spec.num_bands), dtype=np.dtype(spec.dtype))
    has_file = np.zeros(t, dtype=bool)
    slices = spec.band_set_slices()
    covered: dict[int, set[int]] = {}
    for name, band_set, step in files:
        path = tile_dir / name
        if band_set is not None and band_set >= spec.num_band_sets:
            raise TileError("bad file layout", f"{name}: {spec.name} has no band set {band_set}")
        if step is not None and step >= t:
            raise TileError("bad file layout", f"{name}: step {step} but tile.json has {t}")
        bands = slices[band_set] if band_set is not None else slice(0, spec.num_bands)
        n_bands = bands.stop - bands.start
        side = size if band_set is None else spec.band_set_pixels(band_set, TILE_SIZE)
        steps = [step] if step is not None else list(range(t))
        data = _read_raster(path, grid, (n_bands * len(steps), side, side))
        data = cast_values(data, spec, path)
        factor = size // side
        if factor > 1:
            data = np.repeat(np.repeat(data, factor, axis=1), factor, axis=2)
        # band index = step * C + c (step-major), as [H, W, steps, C]
        data = data.reshape(len(steps), n_bands, size, size).transpose(2, 3, 0, 1)
        out[:, :, steps, bands] = data
        has_file[steps] = True
        for s in steps:
            covered.setdefault(s, set()).add(band_set if band_set is not None else -1)
    need = {-1} if True not in split_sets else set(range(spec.num_band_sets))
    for s, sets in covered.items():
        if sets != need:
            missing = sorted(need - sets)
            raise TileError("bad file layout", f"{spec.name} step {s} lacks band sets {missing}")
    return (out if spec.is_multitemporal else out[:, :, 0]), has_file


def _read_raster(path: Path, grid: Grid, shape: tuple[int, int, int]) -> np.ndarray:
    """[bands, rows, cols] of one raster, north-up, after checking its grid and `shape`."""
    try:
        path.stat()  # GDAL reports a symlink loop as "No such file or directory"
        with rasterio.open(path) as ds:
            flip_rows, flip_cols = grid.check(ds, path)
            got = (ds.count, ds.height, ds.width)
            if got != shape:
                raise TileError(
                    "wrong shape", f"{path.name} is {got} (bands, rows, cols), expected {shape}"
                )
            data = ds.read()
    except rasterio.errors.RasterioError as err:  # before OSError: RasterioIOError is both
        detail = str(err) if path.name in str(err) else f"{path.name}: {err}"
        raise TileError("unreadable", detail) from None
    except OSError as err:
        raise TileError("unreadable", f"{path.name}: {err.strerror or err}") from None
    if flip_rows:  # south-up: row 0 is the southern edge
        data = data[:, ::-1]
    if flip_cols:
        data = data[:, :, ::-1]
    return data


def present_steps(spec: ModalitySpec, arr: np.ndarray, has_file: np.ndarray) -> np.ndarray:
    """Mark steps (static: [1]) that have a file and at least one non-nodata value."""
    if spec.nodata is None:
        return has_file.copy()
    valid = arr != spec.nodata
    if spec.is_multitemporal:
        return has_file & valid.any(axis=(0, 1, 3))
    return has_file & bool(valid.any())


def check_sample(
    spec_present: dict[str, np.ndarray], multitemporal: list[str], min_steps: int
) -> None:
    """Raise TileError unless some modality has data and one series has `min_steps` steps."""
    if not any(p.any() for p in spec_present.values()):
        raise TileError("all nodata", "no modality has any valid pixel")
    if multitemporal:
        steps = max(int(spec_present[m].sum()) for m in multitemporal)
        if steps < min_steps:
            raise TileError(
                "too few timesteps", f"{steps} present timesteps, at least {min_steps} needed"
            )


def scan_tiles(raw_dir: Path, wanted: list[str] | None) -> tuple[list[RawTile], list[str]]:
    """Every non-hidden tile directory, sorted by name, with its selected files; plus notes.

    A directory that cannot be listed (a symlink loop, no permission) is still returned, with
    its `error`, so that convert reports it as a skipped tile.
    """
    tiles = []
    ignored: Counter[str] = Counter()
    for entry in sorted(os.scandir(raw_dir), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue
        try:
            if not entry.is_dir():
                continue
            names = sorted(os.listdir(entry.path))
        except OSError as err:
            tiles.append(
                RawTile(entry.name, Path(entry.path), error=f"{entry.path}: {err.strerror}")
            )
            continue
        files: list[RawFile] = []
        for name in names:
            m = FILE_RE.match(name)
            if m is None:
                continue
            mod = m["modality"]
            if mod not in MODALITIES:
                ignored[f"unknown modality {mod!r}"] += 1
            elif not MODALITIES[mod].is_spatial:
                ignored[f"{mod} is non-spatial and cannot be read from GeoTIFF"] += 1
            elif wanted is None or mod in wanted:
                b, s = m["band_set"], m["step"]
                files.append(
                    (name, mod, None if b is None else int(b), None if s is None else int(s))
                )
        tiles.append(RawTile(entry.name, Path(entry.path), files))
    notes = [f"ignored {n} files: {why}" for why, n in sorted(ignored.items())]
    return tiles, notes


def tile_signature(tile_dir: Path, files: list[RawFile]) -> str:
    """Hash of the names, sizes and mtimes of tile.json and `files` (detects changed tiles)."""
    h = hashlib.sha1()
    for name in [TILE_JSON, *(f[0] for f in files)]:
        try:
            st = (tile_dir / name).stat()
            h.update(f"{name}:{st.st_size}:{st.st_mtime_ns};".encode())
        except OSError:  # absent, or a symlink loop (reading the tile reports it)
            h.update(f"{name}:-;".encode())
    return h.hexdigest()
