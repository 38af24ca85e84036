"""Reading and validating raw GeoTIFF tiles (docs/data.md, "Raw tile layout").

A raw directory holds one sub-directory per tile (names starting with `.` are ignored)::

    <raw_dir>/<tile_id>/tile.json                        {"timestamps": ["2023-01-15", ...]}
    <raw_dir>/<tile_id>/<modality>[.b<k>][.t<s>].tif

covering 256 x 256 px at 10 m. Without `.b<k>` a file holds every band of the modality on its
grid; with it, only band set `k` at its native resolution (upsampled here by pixel repeat).
Without `.t<s>` a multitemporal file holds all T steps step-major (band = `step * C + c`); with
it, the one step `s` of tile.json's time axis. Every raster of a tile shares one CRS and bounds.
Values are cast to the modality's storage dtype only when they fit exactly. A problem with a
tile raises `TileError`, whose `kind` is the skip reason `convert` reports.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.errors

from helios.data.modalities import MODALITIES, TILE_SIZE, ModalitySpec

TILE_JSON = "tile.json"
FILE_RE = re.compile(r"^(?P<modality>\w+?)(?:\.b(?P<band_set>\d+))?(?:\.t(?P<step>\d+))?\.tif$")
"""Raw raster file name: `<modality>[.b<band set>][.t<step>].tif`."""

RawFile = tuple[str, str, int | None, int | None]
"""(file name, modality, band set, step) of one raster of a tile."""


class TileError(Exception):
    """Why a tile (or one of its samples) is skipped: a short `kind` plus a detail."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


def parse_timestamps(tile_dir: Path) -> np.ndarray | None:
    """int32 [T, 3] (day, month, year) from tile.json, or None when there is no tile.json."""
    path = tile_dir / TILE_JSON
    if not path.exists():
        return None
    try:
        payload = json.loads(path.read_text())
        stamps = payload["timestamps"]
        if not isinstance(stamps, list) or not all(isinstance(s, str) for s in stamps):
            raise ValueError("'timestamps' must be a list of ISO date strings")
        dates = [datetime.fromisoformat(s.replace("Z", "+00:00")) for s in stamps]
    except (ValueError, KeyError, TypeError) as err:
        raise TileError("bad tile.json", f"{path}: {err}") from None
    return np.array([[d.day, d.month, d.year] for d in dates], dtype=np.int32).reshape(-1, 3)


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


@dataclass
class Grid:
    """The CRS and bounds every raster of one tile must share (set by the first one read)."""

    crs: Any = None
    bounds: tuple[float, ...] | None = None

    def check(self, ds: Any, path: Path) -> None:
        """Record the first raster's grid; raise TileError when a later one differs."""
        if ds.crs is None:
            raise TileError("no CRS", f"{path.name} has no coordinate reference system")
        bounds = tuple(ds.bounds)
        if self.bounds is None:
            self.crs, self.bounds = ds.crs, bounds
            return
        if ds.crs != self.crs:
            raise TileError("mismatched CRS", f"{path.name} is in {ds.crs}, not {self.crs}")
        tol = 1e-4 * abs(self.bounds[2] - self.bounds[0])
        if max(abs(a - b) for a, b in zip(bounds, self.bounds)) > tol:
            raise TileError("mismatched bounds", f"{path.name} covers {bounds}, not {self.bounds}")


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
        try:
            with rasterio.open(path) as ds:
                grid.check(ds, path)
                shape = (ds.count, ds.height, ds.width)
                if shape != (n_bands * len(steps), side, side):
                    raise TileError(
                        "wrong shape",
                        f"{name} is {shape} (bands, rows, cols), expected "
                        f"{(n_bands * len(steps), side, side)}",
                    )
                data = ds.read()
        except rasterio.errors.RasterioError as err:
            detail = str(err) if name in str(err) else f"{name}: {err}"
            raise TileError("unreadable", detail) from None
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


def scan_tiles(
    raw_dir: Path, wanted: list[str] | None
) -> tuple[list[tuple[str, Path, list[RawFile]]], list[str]]:
    """Sorted (tile_id, dir, selected files) for every non-hidden tile dir, plus notes."""
    tiles = []
    ignored: Counter[str] = Counter()
    for entry in sorted(os.scandir(raw_dir), key=lambda e: e.name):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        files: list[RawFile] = []
        for name in sorted(os.listdir(entry.path)):
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
        tiles.append((entry.name, Path(entry.path), files))
    notes = [f"ignored {n} files: {why}" for why, n in sorted(ignored.items())]
    return tiles, notes


def tile_signature(tile_dir: Path, files: list[RawFile]) -> str:
    """Hash of the names, sizes and mtimes of tile.json and `files` (detects changed tiles)."""
    h = hashlib.sha1()
    for name in [TILE_JSON, *(f[0] for f in files)]:
        try:
            st = (tile_dir / name).stat()
            h.update(f"{name}:{st.st_size}:{st.st_mtime_ns};".encode())
        except FileNotFoundError:
            h.update(f"{name}:-;".encode())
    return h.hexdigest()
