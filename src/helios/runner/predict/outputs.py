"""Window outputs written by inference: `outputs/<name>.tif` and `outputs/<name>.geojson`."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import rasterio
from affine import Affine

from helios.runner.core.categories import write_class_styles
from helios.runner.core.fsutil import atomic_path, write_json
from helios.runner.core.geometry import reproject_geometry
from helios.runner.core.rasters import TAG_CLASSES, TAG_KIND, TAG_NAME, class_map, default_colormap
from helios.runner.core.windows import Window

OutputKind = Literal["classification", "regression", "probabilities"]


def write_window_output(
    window: Window,
    name: str,
    array: np.ndarray,
    *,
    kind: OutputKind,
    class_names: Sequence[str] | Mapping[int, str] | None = None,
    nodata: float | None = None,
    colormap: Mapping[int, Sequence[int]] | None = None,
    band_names: Sequence[str] | None = None,
    bounds: tuple[float, float, float, float] | None = None,
    units: str | None = None,
) -> Path:
    """Write `outputs/<name>.tif` on the window's footprint, atomically.

    A class map also gets `<name>.tif.aux.xml` and `<name>.qml`, so GDAL and QGIS show its
    classes by name (helios.runner.core.categories).

    Args:
        window: The window predicted.
        name: Output name (file stem; also the name of the combined results).
        array: [H, W] or [C, H, W]. H, W are usually the window's size; another size covers
            the same footprint at a proportionally different pixel size.
        kind: "classification" (integer class ids, written uint8 or uint16 with a colour
            table), "regression" or "probabilities" (float32, one band per class).
        class_names: Names by class value (a sequence is indexed from 0); stored as the
            CLASS_NAMES tag, and as band descriptions for probabilities.
        nodata: Nodata value; default NaN for float outputs, none for classification.
        colormap: Class value -> (r, g, b[, a]); default: a fixed palette over class_names.
        band_names: Band descriptions (default: class names or the output name).
        bounds: The footprint (CRS units) `array` covers; default the window's.
        units: Units of a continuous output's values (e.g. "m"), stored as every band's GDAL
            unit type; quicklooks and mosaics show and keep it.

    """
    arr = np.asarray(array)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(f"output {name!r}: expected [H, W] or [C, H, W], got shape {arr.shape}")
    classes = class_map(class_names)
    if kind == "classification":
        if arr.shape[0] != 1:
            raise ValueError(f"classification output {name!r} must have one band")
        top = max(int(np.nanmax(arr)) if arr.size else 0, int(nodata or 0), *classes, 0)
        arr = arr.astype(np.uint8 if top < 256 else np.uint16)
    else:
        arr = arr.astype(np.float32)
        nodata = float("nan") if nodata is None else nodata
    count = arr.shape[0]
    if band_names is None:
        if kind == "probabilities" and len(classes) == count:
            band_names = [classes[k] for k in sorted(classes)]
        else:
            band_names = [name] if count == 1 else [f"{name}_{i}" for i in range(count)]
    path = window.outputs_dir / f"{name}.tif"
    profile = _profile(window, arr, nodata, bounds if bounds is not None else window.bounds)
    cmap: dict[int, tuple[int, ...]] = {}
    with atomic_path(path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        if kind == "classification":  # before any pixel: the palette is fixed once writing starts
            values = sorted(classes) or sorted(int(v) for v in np.unique(arr) if v != nodata)
            cmap = {int(k): tuple(v) for k, v in (colormap or {}).items()}
            cmap = cmap or dict(default_colormap(values))
            dst.write_colormap(1, cmap)
        dst.write(arr)
        if units and kind != "classification":
            dst.units = [units] * count
        dst.update_tags(**{TAG_KIND: kind, TAG_NAME: name, "HELIOS_WINDOW": window.name})
        if classes:
            dst.update_tags(**{TAG_CLASSES: json.dumps({str(k): v for k, v in classes.items()})})
        for i, desc in enumerate(band_names[:count]):
            dst.set_band_description(i + 1, desc)
    if kind == "classification":
        write_class_styles(path, classes, cmap, nodata)
    return path


def _profile(
    window: Window, arr: np.ndarray, nodata: float | None, bounds: tuple[float, ...]
) -> dict[str, Any]:
    """The GeoTIFF profile of `arr` [C, H, W] covering `bounds` in the window's CRS."""
    count, height, width = arr.shape
    x0, y0, x1, y1 = bounds
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count,
        "dtype": arr.dtype.name,
        "crs": window.crs,
        "transform": Affine((x1 - x0) / width, 0.0, x0, 0.0, -(y1 - y0) / height, y1),
        "nodata": nodata,
        "compress": "deflate",
    }
    if width >= 256 and height >= 256:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    return profile


def write_window_geojson(
    window: Window, name: str, features: Sequence[Mapping[str, Any]], crs: str | None = None
) -> Path:
    """Write `outputs/<name>.geojson` in WGS84, atomically.

    Features given in another `crs` (e.g. the window's) are reprojected.
    """
    from shapely.geometry import mapping, shape

    out = []
    for f in features:
        feat = dict(f)
        if crs is not None and feat.get("geometry") is not None:
            geom = reproject_geometry(shape(feat["geometry"]), crs, "EPSG:4326")
            feat["geometry"] = mapping(geom)
        feat.setdefault("type", "Feature")
        feat["properties"] = {**(feat.get("properties") or {}), "window": window.name}
        out.append(feat)
    path = window.outputs_dir / f"{name}.geojson"
    write_json(path, {"type": "FeatureCollection", "features": out})
    return path
