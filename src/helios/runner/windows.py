"""Windows on disk: the scratch layout, model inputs from materialized layers, and outputs.

Scratch layout (docs/runner.md, "Scratch directory")::

    scratch/partitions/index.json                      partition ids of the last `partition`
    scratch/partitions/<pid>/partition.json            request features + window names (last)
    scratch/partitions/<pid>/windows/<w>/window.json   crs, bounds, pixel size, size, times
    scratch/partitions/<pid>/windows/<w>/layers/<layer>.tif + <layer>.json, .complete.json
    scratch/partitions/<pid>/windows/<w>/outputs/<name>.tif | <name>.geojson
    scratch/partitions/<pid>/results/                  process_partition outputs + manifest
    scratch/results/                                   process_dataset outputs + manifest
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window as RioWindow

from helios.data.modalities import MISSING_VALUE, resolution_m
from helios.runner.dataset_config import DatasetConfig
from helios.runner.fsutil import atomic_path, read_json, write_json
from helios.runner.geometry import Projection, WindowSpec, parse_time, reproject_geometry

OutputKind = Literal["classification", "regression", "probabilities"]
WINDOW_JSON = "window.json"
PARTITION_JSON = "partition.json"
COMPLETE_MARKER = ".complete.json"
TAG_KIND = "HELIOS_KIND"
TAG_NAME = "HELIOS_OUTPUT_NAME"
TAG_CLASSES = "CLASS_NAMES"


def partitions_dir(scratch: Path) -> Path:
    """`scratch/partitions`."""
    return Path(scratch) / "partitions"


def partition_dir(scratch: Path, partition_id: str) -> Path:
    """`scratch/partitions/<partition_id>`."""
    return partitions_dir(scratch) / partition_id


def partition_results_dir(scratch: Path, partition_id: str) -> Path:
    """Where process_partition writes: `scratch/partitions/<pid>/results`."""
    return partition_dir(scratch, partition_id) / "results"


def dataset_results_dir(scratch: Path) -> Path:
    """Where process_dataset writes: `scratch/results`."""
    return Path(scratch) / "results"


@dataclass(frozen=True)
class Window:
    """A window as stored in scratch (see module docstring)."""

    name: str
    partition_id: str
    crs: str
    bounds: tuple[float, float, float, float]
    """(minx, miny, maxx, maxy) in CRS units."""
    resolution: float
    """CRS units per pixel along x; pixels are square unless `y_resolution` says otherwise."""
    width: int
    height: int
    time_range: tuple[datetime, datetime]
    path: Path
    pixel_bounds: tuple[int, int, int, int] = (0, 0, 0, 0)
    y_resolution: float | None = None
    properties: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def transform(self) -> Affine:
        """Affine transform of the window grid (north up)."""
        yres = abs(self.y_resolution) if self.y_resolution else self.resolution
        return Affine(self.resolution, 0.0, self.bounds[0], 0.0, -yres, self.bounds[3])

    @property
    def layers_dir(self) -> Path:
        """Materialized input layers."""
        return self.path / "layers"

    @property
    def outputs_dir(self) -> Path:
        """Model outputs written by inference."""
        return self.path / "outputs"

    def output_paths(self) -> list[Path]:
        """Existing output files (.tif and .geojson), sorted."""
        if not self.outputs_dir.is_dir():
            return []
        return sorted(
            p
            for p in self.outputs_dir.iterdir()
            if p.suffix in (".tif", ".geojson") and not p.name.startswith(".")
        )

    def is_built(self, fingerprint: str) -> bool:
        """Whether every input layer was materialized for this dataset config."""
        marker = self.layers_dir / COMPLETE_MARKER
        return marker.exists() and read_json(marker).get("fingerprint") == fingerprint

    def to_json(self) -> dict[str, Any]:
        """The window.json content."""
        return {
            "name": self.name,
            "partition_id": self.partition_id,
            "crs": self.crs,
            "bounds": list(self.bounds),
            "pixel_bounds": list(self.pixel_bounds),
            "resolution": self.resolution,
            "y_resolution": self.y_resolution,
            "width": self.width,
            "height": self.height,
            "time_range": [t.isoformat() for t in self.time_range],
            "properties": self.properties,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], path: Path) -> Window:
        """Inverse of `to_json`."""
        return cls(
            name=data["name"],
            partition_id=data["partition_id"],
            crs=data["crs"],
            bounds=tuple(data["bounds"]),
            resolution=float(data["resolution"]),
            width=int(data["width"]),
            height=int(data["height"]),
            time_range=(parse_time(data["time_range"][0]), parse_time(data["time_range"][1])),
            path=path,
            pixel_bounds=tuple(data.get("pixel_bounds", (0, 0, 0, 0))),
            y_resolution=data.get("y_resolution"),
            properties=dict(data.get("properties") or {}),
        )

    @classmethod
    def from_spec(cls, spec: WindowSpec, partition_id: str, path: Path) -> Window:
        """The window a partitioner's `WindowSpec` describes."""
        p = spec.projection
        return cls(
            name=spec.name,
            partition_id=partition_id,
            crs=p.crs,
            bounds=spec.crs_bounds(),
            resolution=p.x_resolution,
            width=spec.width,
            height=spec.height,
            time_range=(spec.start_time, spec.end_time),
            path=path,
            pixel_bounds=spec.pixel_bounds,
            y_resolution=p.y_resolution,
            properties=dict(spec.properties),
        )

    def projection(self) -> Projection:
        """The window's projection."""
        return Projection(self.crs, self.resolution, self.y_resolution or -self.resolution)

    def wgs84_bounds(self) -> tuple[float, float, float, float]:
        """Bounding box of the window in lon/lat."""
        from shapely.geometry import box

        return reproject_geometry(box(*self.bounds), self.crs, "EPSG:4326").bounds


def load_window(path: Path) -> Window:
    """Read a window directory's window.json."""
    return Window.from_json(read_json(path / WINDOW_JSON), path)


def list_windows(scratch: Path, partition_id: str) -> list[Window]:
    """The windows of a partition, in the order the partitioner made them."""
    pdir = partition_dir(scratch, partition_id)
    pjson = pdir / PARTITION_JSON
    wdir = pdir / "windows"
    if pjson.exists():
        names = read_json(pjson).get("windows", [])
    else:
        names = sorted(p.name for p in wdir.iterdir()) if wdir.is_dir() else []
    return [load_window(wdir / n) for n in names if (wdir / n / WINDOW_JSON).exists()]


def _resize_nearest(arr: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of [..., h, w] (pixel repeat for whole-number factors)."""
    h, w = arr.shape[-2:]
    if (h, w) == (height, width):
        return arr
    rows = np.minimum((np.arange(height) + 0.5) * h / height, h - 1).astype(int)
    cols = np.minimum((np.arange(width) + 0.5) * w / width, w - 1).astype(int)
    return arr[..., rows[:, None], cols[None, :]]


def load_window_inputs(
    window: Window, dataset_config: DatasetConfig
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Model inputs of a built window in the `Sample.data` layout.

    Returns:
        Per Helios modality, float32 [H, W, T, C] (multitemporal) or [H, W, C] (static) on the
        modality's own grid over the window, bands in the modality's `band_order`;
        MISSING_VALUE marks missing steps, bands the layer does not provide, and nodata.
        Also the timestamps, int32 [T, 3] as (day, month, year), from the layer with the
        most steps (T = 1 with the window's start date when no layer is multitemporal).

    """
    layers = dataset_config.input_layers()
    metas = {la.name: read_json(window.layers_dir / f"{la.name}.json") for la in layers}
    dates = max(
        (metas[la.name]["timestamps"] for la in layers if la.spec.is_multitemporal),
        key=len,
        default=[window.time_range[0].date().isoformat()],
    )
    num_t = len(dates)
    out: dict[str, np.ndarray] = {}
    for layer in layers:
        spec = layer.spec
        meta = metas[layer.name]
        with rasterio.open(window.layers_dir / f"{layer.name}.tif") as src:
            arr = src.read().astype(np.float32)
        steps = len(meta["timestamps"]) if spec.is_multitemporal else 1
        arr = arr.reshape(steps, len(layer.bands), *arr.shape[-2:])
        grid = resolution_m(spec.grid_factor)
        height = max(1, round(window.height * abs(window.y_resolution or window.resolution) / grid))
        width = max(1, round(window.width * window.resolution / grid))
        arr = _resize_nearest(arr, height, width)
        full = np.full((height, width, num_t, spec.num_bands), MISSING_VALUE, dtype=np.float32)
        for c, band in enumerate(layer.bands):
            full[:, :, :steps, spec.band_index(band)] = arr[:, c].transpose(1, 2, 0)
        out[spec.name] = full if spec.is_multitemporal else full[:, :, 0, :]
    ts = np.array([[d.day, d.month, d.year] for d in map(parse_time, dates)], dtype=np.int32)
    return out, ts


def _class_map(class_names: Sequence[str] | Mapping[int, str] | None) -> dict[int, str]:
    if class_names is None:
        return {}
    if isinstance(class_names, Mapping):
        return {int(k): str(v) for k, v in class_names.items()}
    return dict(enumerate(class_names))


def default_colormap(values: Sequence[int]) -> dict[int, tuple[int, int, int, int]]:
    """A fixed, distinguishable colour per class value (tab20-like cycle)."""
    palette = [
        (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
        (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
        (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213),
    ]  # fmt: skip
    return {int(v): (*palette[i % len(palette)], 255) for i, v in enumerate(sorted(values))}


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
) -> Path:
    """Write `outputs/<name>.tif` on the window's footprint, atomically.

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

    """
    arr = np.asarray(array)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(f"output {name!r}: expected [H, W] or [C, H, W], got shape {arr.shape}")
    classes = _class_map(class_names)
    if kind == "classification":
        if arr.shape[0] != 1:
            raise ValueError(f"classification output {name!r} must have one band")
        top = max(int(np.nanmax(arr)) if arr.size else 0, int(nodata or 0), *classes, 0)
        arr = arr.astype(np.uint8 if top < 256 else np.uint16)
    else:
        arr = arr.astype(np.float32)
        nodata = float("nan") if nodata is None else nodata
    count, height, width = arr.shape
    x0, y0, x1, y1 = window.bounds
    transform = Affine((x1 - x0) / width, 0.0, x0, 0.0, -(y1 - y0) / height, y1)
    if band_names is None:
        if kind == "probabilities" and len(classes) == count:
            band_names = [classes[k] for k in sorted(classes)]
        else:
            band_names = [name] if count == 1 else [f"{name}_{i}" for i in range(count)]
    path = window.outputs_dir / f"{name}.tif"
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count,
        "dtype": arr.dtype.name,
        "crs": window.crs,
        "transform": transform,
        "nodata": nodata,
        "compress": "deflate",
    }
    if width >= 256 and height >= 256:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    with atomic_path(path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        if kind == "classification":  # before any pixel: the palette is fixed once writing starts
            values = sorted(classes) or sorted(int(v) for v in np.unique(arr) if v != nodata)
            cmap = {int(k): tuple(v) for k, v in (colormap or {}).items()}
            dst.write_colormap(1, cmap or default_colormap(values))
        dst.write(arr)
        dst.update_tags(**{TAG_KIND: kind, TAG_NAME: name, "HELIOS_WINDOW": window.name})
        if classes:
            dst.update_tags(**{TAG_CLASSES: json.dumps({str(k): v for k, v in classes.items()})})
        for i, desc in enumerate(band_names[:count]):
            dst.set_band_description(i + 1, desc)
    return path


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


def read_block(path: Path, window: RioWindow, band: int | None = None) -> np.ndarray:
    """Read part of a raster as float32 (helper for postprocessors)."""
    with rasterio.open(path) as src:
        return src.read(band, window=window).astype(np.float32)
