"""Seam-free raster mosaics, written block by block into Cloud-Optimized GeoTIFFs.

Each input raster (a window output, or a partition mosaic) gets a weight per pixel: its
`.weights.tif` when it has one (mosaics carry the summed weights of the windows they hold; the
file lives in the `blending/` folder beside the results folder, never among the results), else
`taper_weights`, which falls linearly towards the raster's edges (separable:
a row ramp times a column ramp). Continuous
outputs blend as sum(w * value) / sum(w); class maps take, at each pixel, the class of the
input with the largest weight (the window whose centre is nearest). Because every weight is
positive, a constant field stays constant and a ramp stays a ramp: blending only mixes
values where windows overlap. Memory is bounded by the block size, never by the area.

Beside each result go its quicklook (`<stem>.png`, helios.runner.postprocess.quicklook) and,
for class maps, the sidecars that make GDAL and QGIS show classes by name
(`<stem>.tif.aux.xml`, `<stem>.qml`: helios.runner.core.categories).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.errors
import rasterio.shutil
from affine import Affine
from rasterio.windows import Window as RioWindow

from helios.runner.core.categories import write_class_styles
from helios.runner.core.fsutil import atomic_path, text_hash
from helios.runner.core.rasters import TAG_CLASSES, TAG_KIND, TAG_NAME, _taper_part
from helios.runner.postprocess.quicklook import write_quicklook

TAG_WEIGHTS = "HELIOS_WEIGHTS"
TAG_SIGNATURE = "HELIOS_INPUTS"
BLENDING_DIR = "blending"
"""Where a results folder's blending weights go: `<results folder>/../blending/`."""
BLOCK = 1024
"""Pixels per side of the blocks mosaics are computed in (a multiple of the 512 COG tile)."""


def tile_size(width: int, height: int) -> int:
    """GeoTIFF tile side for a raster: the smallest of 128, 256 and 512 px that covers it.

    Tiles are padded to full size on disk and in every compression call, so a 50 px raster of
    128 float32 bands in 512 px tiles would compress 128 MiB per write instead of 8 MiB.
    128 px is the smallest tile GDAL's COG driver accepts.
    """
    side = max(width, height)
    return 128 if side <= 128 else 256 if side <= 256 else 512


@dataclass
class RasterInfo:
    """Header facts about one input raster."""

    path: Path
    crs: str
    transform: Affine
    width: int
    height: int
    count: int
    dtype: str
    nodata: float | None
    tags: dict[str, str]
    descriptions: tuple[str | None, ...]
    colormap: dict[int, tuple[int, ...]] | None
    units: tuple[str, ...] = ()
    """GDAL unit type of each band ("" when none)."""

    @property
    def name(self) -> str:
        """Output name the raster belongs to."""
        return self.tags.get(TAG_NAME) or self.path.stem

    @property
    def kind(self) -> str:
        """classification, regression or probabilities."""
        default = "classification" if np.dtype(self.dtype).kind in "iu" else "regression"
        return self.tags.get(TAG_KIND, default)

    @property
    def res(self) -> float:
        """Pixel size."""
        return float(self.transform.a)

    def weights_path(self) -> Path | None:
        """The raster's blending weights, if it has them (a path relative to its folder)."""
        name = self.tags.get(TAG_WEIGHTS)
        return Path(os.path.normpath(self.path.parent / name)) if name else None


def raster_info(path: Path) -> RasterInfo:
    """Read the header of a raster."""
    with rasterio.open(path) as src:
        try:
            cmap = src.colormap(1)
        except ValueError:
            cmap = None
        return RasterInfo(
            path=Path(path),
            crs=src.crs.to_string() if src.crs else "",
            transform=src.transform,
            width=src.width,
            height=src.height,
            count=src.count,
            dtype=src.dtypes[0],
            nodata=src.nodata,
            tags=src.tags(),
            descriptions=tuple(src.descriptions),
            colormap=cmap,
            units=tuple(u or "" for u in src.units),
        )


def _valid(data: np.ndarray, nodata: float | None) -> np.ndarray:
    ok = np.all(np.isfinite(data), axis=0)
    if nodata is not None and not math.isnan(nodata):
        ok &= np.all(data != nodata, axis=0)
    return ok


def _input_weights(info: RasterInfo, win: RioWindow, blend: int | None) -> np.ndarray:
    wpath = info.weights_path()
    if wpath is not None and wpath.exists():
        with rasterio.open(wpath) as src:
            return src.read(1, window=win).astype(np.float32)
    r0, c0 = int(win.row_off), int(win.col_off)
    return _taper_part(info.height, info.width, r0, c0, int(win.height), int(win.width), blend)


@dataclass(frozen=True)
class _Grid:
    """Where the inputs sit on the output grid, in whole pixels of their shared grid."""

    cols: np.ndarray
    rows: np.ndarray
    widths: np.ndarray
    heights: np.ndarray
    bounds: tuple[int, int, int, int]

    @classmethod
    def of(cls, inputs: list[RasterInfo], bounds: tuple[int, int, int, int] | None) -> _Grid:
        res_x, res_y = inputs[0].transform.a, inputs[0].transform.e
        cols = np.array([round(i.transform.c / res_x) for i in inputs])
        rows = np.array([round(i.transform.f / res_y) for i in inputs])
        widths = np.array([i.width for i in inputs])
        heights = np.array([i.height for i in inputs])
        if bounds is None:
            bounds = (cols.min(), rows.min(), (cols + widths).max(), (rows + heights).max())
        c0, r0, c1, r1 = (int(v) for v in bounds)
        return cls(cols, rows, widths, heights, (c0, r0, c1, r1))

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the output."""
        c0, r0, c1, r1 = self.bounds
        return c1 - c0, r1 - r0

    def hits(self, gr: int, gc: int, h: int, w: int) -> np.ndarray:
        """Indices of the inputs overlapping a block at grid row/col (gr, gc)."""
        cols, rows = self.cols, self.rows
        return np.nonzero(
            (cols < gc + w)
            & (cols + self.widths > gc)
            & (rows < gr + h)
            & (rows + self.heights > gr)
        )[0]


def _output_nodata(first: RasterInfo, nodata_value: float | None, dtype: str) -> float:
    if first.kind == "classification":
        nodata = nodata_value if nodata_value is not None else (first.nodata or 0)
    else:
        nodata = nodata_value if nodata_value is not None else float("nan")
    return 0 if np.dtype(dtype).kind in "iu" and math.isnan(nodata) else nodata


def mosaic(
    inputs: list[RasterInfo],
    out_path: Path,
    *,
    bounds: tuple[int, int, int, int] | None = None,
    blend_pixels: int | None = None,
    nodata_value: float | None = None,
    transform_values: Callable[[np.ndarray], np.ndarray] | None = None,
    dtype: str | None = None,
    signature: str = "",
    quicklook: bool = True,
) -> Path:
    """Merge aligned rasters of one CRS and pixel size into a COG, block by block.

    Args:
        inputs: Rasters to merge (same CRS, pixel size, band count and kind).
        out_path: The COG to write; `<stem>.png` (and, for class maps, `<stem>.tif.aux.xml`
            and `<stem>.qml`) go beside it, `<stem>.weights.tif` into `weights_path(out_path)`.
        bounds: Output (col0, row0, col1, row1) in pixels of the inputs' grid (origin 0, 0);
            default: the union of the inputs.
        blend_pixels: Taper width for inputs without weight sidecars.
        nodata_value: Nodata of the output (default NaN for float, else the inputs' or 0).
        transform_values: Applied to each finished block (e.g. a linear value transform).
        dtype: Output data type (default: the inputs' for class maps, else float32).
        signature: Stored in the output's tags; callers compare it to skip finished work.
        quicklook: Also write a PNG quicklook.

    """
    first = inputs[0]
    grid = _Grid.of(inputs, bounds)
    classify = first.kind == "classification"
    dtype = dtype or (first.dtype if classify else "float32")
    nodata = _output_nodata(first, nodata_value, dtype)
    width, height = grid.size
    res_x, res_y = first.transform.a, first.transform.e
    transform = Affine(res_x, 0.0, grid.bounds[0] * res_x, 0.0, res_y, grid.bounds[1] * res_y)
    tile = tile_size(width, height)
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "crs": first.crs,
        "transform": transform,
        "width": width,
        "height": height,
        "tiled": True,
        "blockxsize": tile,
        "blockysize": tile,
        "compress": "deflate",
        "BIGTIFF": "IF_SAFER",
        "SPARSE_OK": True,  # blocks no input touches are never written: nodata, no bytes
    }
    weights = weights_path(out_path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    staging = out_path.with_name(f".{out_path.stem}.staging.tif")
    with (
        rasterio.open(
            staging, "w", **profile, count=first.count, dtype=dtype, nodata=nodata
        ) as dst,
        atomic_path(weights) as wtmp,
        rasterio.open(wtmp, "w", **profile, count=1, dtype="float32", nodata=0) as wdst,
    ):
        if first.colormap and np.dtype(dtype).kind == "u":  # before any pixel is written
            dst.write_colormap(1, first.colormap)
        merge = _BlockMerger(inputs, grid, blend_pixels, nodata, transform_values, dtype)
        for r in range(0, height, BLOCK):
            for c in range(0, width, BLOCK):
                merged = merge(r, c, min(BLOCK, height - r), min(BLOCK, width - c))
                if merged is not None:
                    win = RioWindow(c, r, merged[0].shape[-1], merged[0].shape[-2])
                    dst.write(merged[0], window=win)
                    wdst.write(merged[1], window=win)
        _copy_metadata(first, dst, signature, os.path.relpath(weights, out_path.parent))
        wdst.update_tags(**{TAG_SIGNATURE: signature})
    _to_cog(staging, out_path, tile, classify)
    if classify:
        names = {int(k): v for k, v in json.loads(first.tags.get(TAG_CLASSES, "{}")).items()}
        write_class_styles(out_path, names, first.colormap or {}, nodata)
    if quicklook:
        write_quicklook(out_path, out_path.with_suffix(".png"))
    return out_path


def weights_path(result: Path) -> Path:
    """Where a result's blending weights go: `<results>/../blending/<stem>.weights.tif`.

    They are an intermediate of the next stage (partition mosaics are merged by their summed
    weights), so they stay in the scratch folder, out of the results folder people copy.
    """
    return result.parent.parent / BLENDING_DIR / f"{result.stem}.weights.tif"


class _BlockMerger:
    """Blends the inputs under one output block (see `mosaic`)."""

    def __init__(
        self,
        inputs: list[RasterInfo],
        grid: _Grid,
        blend_pixels: int | None,
        nodata: float,
        transform_values: Callable[[np.ndarray], np.ndarray] | None,
        dtype: str,
    ) -> None:
        self.inputs, self.grid, self.blend = inputs, grid, blend_pixels
        self.nodata, self.transform_values, self.dtype = nodata, transform_values, dtype
        self.classify = inputs[0].kind == "classification"

    def __call__(self, r: int, c: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(values [C, h, w] in the output dtype, weights [1, h, w]) of a block, or None."""
        g = self.grid
        gr, gc = g.bounds[1] + r, g.bounds[0] + c
        hit = g.hits(gr, gc, h, w)
        if hit.size == 0:
            return None
        block, wsum = _merge_block(
            [self.inputs[i] for i in hit],
            g.cols[hit],
            g.rows[hit],
            gr,
            gc,
            h,
            w,
            self.classify,
            self.blend,
            self.inputs[0].count,
        )
        nodata = self.nodata
        if self.classify:
            out = np.where(wsum > 0, block, nodata)
        else:
            with np.errstate(invalid="ignore", divide="ignore"):
                out = np.where(wsum > 0, block / np.maximum(wsum, 1e-12), nodata)
        if self.transform_values is not None:
            out = np.where(wsum > 0, self.transform_values(out), nodata)
        if np.dtype(self.dtype).kind in "iu":
            info = np.iinfo(self.dtype)
            out = np.clip(np.round(np.nan_to_num(out, nan=nodata)), info.min, info.max)
        return out.astype(self.dtype), wsum[None].astype(np.float32)


def _to_cog(staging: Path, out_path: Path, tile: int, classify: bool) -> None:
    """Copy the staging GeoTIFF into a COG at `out_path`, atomically, and remove it."""
    with atomic_path(out_path) as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rasterio.shutil.copy(
                staging,
                tmp,
                driver="COG",
                compress="deflate",
                blocksize=tile,
                overview_resampling="nearest" if classify else "average",
                BIGTIFF="IF_SAFER",
                SPARSE_OK=True,
            )
        staging.unlink()


def _merge_block(
    inputs: list[RasterInfo],
    cols: np.ndarray,
    rows: np.ndarray,
    gr: int,
    gc: int,
    h: int,
    w: int,
    classify: bool,
    blend: int | None,
    count: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Accumulate one output block: (sum of w * value or best class, sum or max of w)."""
    acc = np.zeros((count, h, w), dtype=np.float32 if classify else np.float64)
    wsum = np.zeros((h, w), dtype=np.float64)
    for info, c0, r0 in zip(inputs, cols, rows):
        # overlap of the block with this input, in block and input pixel coordinates
        y0, x0 = max(gr, r0), max(gc, c0)
        y1, x1 = min(gr + h, r0 + info.height), min(gc + w, c0 + info.width)
        win = RioWindow(int(x0 - c0), int(y0 - r0), int(x1 - x0), int(y1 - y0))
        with rasterio.open(info.path) as src:
            data = src.read(window=win).astype(np.float32)
        weight = _input_weights(info, win, blend).astype(np.float64) * _valid(data, info.nodata)
        sl = (slice(int(y0 - gr), int(y1 - gr)), slice(int(x0 - gc), int(x1 - gc)))
        if classify:
            better = weight > wsum[sl]
            acc[(slice(None), *sl)] = np.where(better, data, acc[(slice(None), *sl)])
            wsum[sl] = np.maximum(wsum[sl], weight)
        else:
            acc[(slice(None), *sl)] += np.nan_to_num(data) * weight
            wsum[sl] += weight
    return acc, wsum


def _copy_metadata(first: RasterInfo, dst: Any, signature: str, weights_name: str) -> None:
    keep = {k: v for k, v in first.tags.items() if k in (TAG_KIND, TAG_NAME, TAG_CLASSES)}
    keep[TAG_SIGNATURE] = signature
    keep[TAG_WEIGHTS] = weights_name
    dst.update_tags(**keep)
    for i, desc in enumerate(first.descriptions):
        if desc:
            dst.set_band_description(i + 1, desc)
    if any(first.units):
        dst.units = first.units


def output_signature(paths: list[Path], config: object) -> str:
    """Fingerprint of mosaic inputs (names, sizes, mtimes) and the postprocessor settings."""
    from helios.runner.core.fsutil import file_signature

    return text_hash(file_signature(paths), repr(config))


def existing_signature(path: Path) -> str | None:
    """The input signature stored in a finished mosaic, or None."""
    if not path.exists():
        return None
    try:
        with rasterio.open(path) as src:
            return src.tags().get(TAG_SIGNATURE)
    except rasterio.errors.RasterioIOError:
        return None
