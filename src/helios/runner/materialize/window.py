"""Materialize one window: search each input layer's source, match items, write rslearn layers.

Per layer: the source is asked for items over the window (in the layer's offset time range),
items are ranked (`sort_by`) and matched into groups (`helios.runner.materialize.matching`);
`items.json` records the groups (rslearn's format), so a re-run asks the source nothing again.
Each group is written band set by band set to `layers/<layer>[.n]/<band set>/geotiff.tif` in
the band set's dtype and resolution (`zoom_offset`), compositing its items FIRST_VALID (the
best-ranked item's pixel wins), MEAN or MEDIAN; `completed` marks each group folder once every
group of the layer is written. `helios_build.json` records which layer definitions were built,
so a changed layer is rebuilt and an unchanged one is skipped.
"""

from __future__ import annotations

import logging
import math
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from shapely.geometry import box

from helios.runner.core.fsutil import atomic_path, clean_tmp_files, read_json, write_json
from helios.runner.core.windows import COMPLETED, Window
from helios.runner.materialize.dataset_config import (
    BandSet,
    DatasetConfig,
    LayerConfig,
    time_range,
)
from helios.runner.materialize.matching import MatchedGroup, match_items
from helios.runner.materialize.sources.base import Grid, Item, SourceContext, rank_items

logger = logging.getLogger(__name__)
ITEMS_JSON = "items.json"
BUILD_RECORD = "helios_build.json"
TILE_THRESHOLD = 512
"""Like rslearn, GeoTIFFs wider or taller than this are tiled (256 px), smaller ones striped."""


class WindowBuildError(RuntimeError):
    """Why one window could not be built (names the layer)."""


def band_set_grid(window: Window, band_set: BandSet) -> Grid:
    """The grid of a band set over a window: the window's, scaled by 2**zoom_offset.

    rslearn refuses windows whose size is not a multiple of the coarsening factor; Helios
    covers them (the coarse grid reaches past the window by less than one coarse pixel).
    """
    c0, r0, c1, r1 = window.pixel_bounds
    xres, yres = window.resolution, window.y_resolution
    z = band_set.zoom_offset
    if z < 0:
        f = 2**-z
        c0, r0, c1, r1 = c0 // f, r0 // f, -(-c1 // f), -(-r1 // f)
        xres, yres = xres * f, yres * f
    elif z > 0:
        f = 2**z
        c0, r0, c1, r1 = c0 * f, r0 * f, c1 * f, r1 * f
        xres, yres = xres / f, yres / f
    transform = Affine(xres, 0.0, c0 * xres, 0.0, yres, r0 * yres)
    if yres > 0:  # a south-up projection: keep the raster north-up
        transform = Affine(xres, 0.0, c0 * xres, 0.0, -yres, r1 * yres)
    return Grid(window.crs, transform, c1 - c0, r1 - r0)


def _cast(data: np.ndarray, dtype: str, nodata: float) -> np.ndarray:
    """float32 with NaN for no data -> the band set's dtype, nodata where NaN (clipped)."""
    if np.dtype(dtype).kind == "f":
        return np.where(np.isfinite(data), data, nodata).astype(dtype)
    info = np.iinfo(dtype)
    out = np.where(np.isfinite(data), np.clip(np.round(data), info.min, info.max), nodata)
    return out.astype(dtype)


@dataclass
class LayerWriter:
    """Writes one layer's item groups for a window."""

    window: Window
    layer: LayerConfig

    def composite(self, items: list[Item], band_set: BandSet, grid: Grid) -> np.ndarray:
        """float32 [C, H, W] of a group (NaN where no item has data)."""
        assert self.layer.data_source is not None
        source = self.layer.data_source.source
        shape = (len(band_set.bands), grid.height, grid.width)
        filled = np.full(shape, np.nan, dtype=np.float32)
        stack: list[np.ndarray] = []
        for item in items:
            data = np.full(shape, np.nan, dtype=np.float32)
            for c, band in enumerate(band_set.bands):
                got = source.read(item, band, grid, self.layer.resampling, band_set.nodata)
                if got is not None:
                    data[c] = got
            if self.layer.compositing == "FIRST_VALID":
                take = ~np.isfinite(filled) & np.isfinite(data)
                filled[take] = data[take]
                if np.isfinite(filled).all():
                    break
            else:
                stack.append(data)
        if stack:
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels stay NaN
                reduce = np.nanmedian if self.layer.compositing == "MEDIAN" else np.nanmean
                filled = reduce(np.stack(stack), axis=0).astype(np.float32)
        return filled

    def write_group(self, index: int, group: MatchedGroup) -> bool:
        """Write every band set of one group; returns whether any pixel has data."""
        any_data = False
        for band_set in self.layer.band_sets:
            grid = band_set_grid(self.window, band_set)
            data = self.composite(group.items, band_set, grid)
            any_data |= bool(np.isfinite(data).any())
            path = self.window.layer_dir(self.layer.name, index) / band_set.dirname / "geotiff.tif"
            write_geotiff(path, _cast(data, band_set.dtype, band_set.nodata), grid, band_set)
        return any_data


def write_geotiff(path: Path, data: np.ndarray, grid: Grid, band_set: BandSet) -> None:
    """Rslearn's GeoTIFF of a band set (LZW; tiled above 512 px), written atomically."""
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": grid.width,
        "height": grid.height,
        "count": data.shape[0],
        "dtype": data.dtype.name,
        "crs": grid.crs,
        "transform": grid.transform,
        "nodata": band_set.nodata,
        "compress": "lzw",
        "BIGTIFF": "IF_SAFER",
    }
    if max(grid.width, grid.height) > TILE_THRESHOLD:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    with atomic_path(path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        dst.write(data)
        for i, band in enumerate(band_set.bands):
            dst.set_band_description(i + 1, band)


def _items_entry(layer: str, groups: list[MatchedGroup]) -> dict[str, Any]:
    ranges = [[t.isoformat() for t in g.time_range] if g.time_range else None for g in groups]
    return {
        "layer_name": layer,
        "serialized_item_groups": [[it.to_json() for it in g.items] for g in groups],
        "group_time_ranges": ranges,
        "materialized": False,
    }


def read_items(window: Window, layer: str) -> list[MatchedGroup] | None:
    """The matched groups of a layer recorded in items.json, or None if not recorded."""
    from helios.runner.core.geometry import parse_time

    path = window.path / ITEMS_JSON
    if not path.exists():
        return None
    for entry in read_json(path):
        if entry.get("layer_name") == layer:
            ranges = entry.get("group_time_ranges") or [None] * len(entry["serialized_item_groups"])
            return [
                MatchedGroup(
                    [Item.from_json(it) for it in group],
                    (parse_time(r[0]), parse_time(r[1])) if r else None,
                )
                for group, r in zip(entry["serialized_item_groups"], ranges)
            ]
    return None


def _write_items(window: Window, layer: str, groups: list[MatchedGroup]) -> None:
    path = window.path / ITEMS_JSON
    entries = [
        e for e in (read_json(path) if path.exists() else []) if e.get("layer_name") != layer
    ]
    write_json(path, [*entries, _items_entry(layer, groups)])


def search(window: Window, layer: LayerConfig, context: SourceContext) -> list[MatchedGroup]:
    """Ask the layer's source for items over the window and match them into groups."""
    src = layer.data_source
    assert src is not None
    rng = time_range(*window.time_range, src) if window.time_range else None
    if layer.modality is not None and not layer.spec.is_multitemporal and src.query.period is None:
        rng = None  # static layers (elevation, land cover) match items of any date
    footprint = box(*window.bounds)
    from helios.runner.core.geometry import WGS84, reproject_geometry

    lonlat = reproject_geometry(footprint, window.crs, WGS84)
    items = src.source.items(lonlat, rng, context)
    ascending = bool(getattr(src.source, "sort_ascending", True))
    items = rank_items(items, src.sort_by, ascending)
    if src.query.time_mode in ("BEFORE", "AFTER") and src.query.period is None:
        items.sort(key=lambda it: it.time.timestamp() if it.time else math.inf,
                   reverse=src.query.time_mode == "BEFORE")  # fmt: skip
    return match_items(footprint, window.crs, items, src.query, rng)


def _group_dirs(window: Window, layer: str) -> list[Path]:
    d = window.layers_dir
    if not d.is_dir():
        return []
    return [p for p in d.iterdir() if p.name == layer or p.name.startswith(f"{layer}.")]


def is_built(window: Window, fingerprint: str) -> bool:
    """Whether every input layer was materialized for this dataset config."""
    path = window.path / BUILD_RECORD
    return path.exists() and read_json(path).get("complete") == fingerprint


def materialize_window(window: Window, config: DatasetConfig, dataset: Path) -> None:
    """Materialize every input layer of a window, then record it as complete.

    Raises:
        WindowBuildError: a required layer has no imagery over the window (or its source
            failed); layers built before stay built.

    """
    clean_tmp_files(window.path)
    record_path = window.path / BUILD_RECORD
    record: dict[str, Any] = read_json(record_path) if record_path.exists() else {}
    built: dict[str, str] = dict(record.get("layers") or {})
    searched: dict[str, str] = dict(record.get("items") or {})
    for layer in config.input_layers():
        fp = config.layer_fingerprint(layer)
        if built.get(layer.name) == fp:
            continue
        groups = read_items(window, layer.name) if searched.get(layer.name) == fp else None
        if groups is None:
            context = SourceContext(config.base_dir, dataset, layer.bands, layer.name)
            try:
                groups = search(window, layer, context)
            except Exception as err:  # network, file and source errors: this window fails
                raise WindowBuildError(f"layer {layer.name!r}: {err}") from err
            _write_items(window, layer.name, groups)
            searched[layer.name] = fp
            write_json(record_path, {**record, "layers": built, "items": searched})
        for stale in _group_dirs(window, layer.name):
            shutil.rmtree(stale)
        writer = LayerWriter(window, layer)
        try:
            has_data = [writer.write_group(i, g) for i, g in enumerate(groups)]
        except Exception as err:  # unreadable items (HTTP errors, truncated files): this window
            raise WindowBuildError(f"layer {layer.name!r}: {err}") from err
        for i in range(len(groups)):
            (window.layer_dir(layer.name, i) / COMPLETED).touch()
        if layer.required and not any(has_data):
            first, last = (groups[0].time_range, groups[-1].time_range) if groups else (None, None)
            t = f" between {first[0].date()} and {last[1].date()}" if first and last else ""
            raise WindowBuildError(
                f"no imagery of layer {layer.name!r} covers window {window.name}{t} "
                f"({sum(len(g.items) for g in groups)} items matched)"
            )
        built[layer.name] = fp
        write_json(record_path, {**record, "layers": built, "items": searched})
    write_json(
        record_path,
        {"layers": built, "items": searched, "complete": config.fingerprint()},
    )
