"""Postprocessors: what happens to model outputs per window, per partition and per dataset.

The three stages mirror the upstream runner:

- `process_window(window, outputs) -> list[Path]` after inference on one window;
- `process_partition(window_results, output_dir) -> list[Path]` over a partition's windows;
- `process_dataset(partition_results, output_dir) -> list[Path]` over every partition.

Each returns the files it produced (or passed through). Write your own by subclassing
`Postprocessor` and naming it by `class_path` in olmoearth_run.yaml (docs/runner.md).
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import shapely
import shapely.geometry
from shapely.geometry.base import BaseGeometry

from helios.runner.core.categories import qml_path
from helios.runner.core.fsutil import atomic_path, clean_tmp_files, read_json, write_json
from helios.runner.core.windows import Window
from helios.runner.postprocess.mosaic import (
    RasterInfo,
    existing_signature,
    mosaic,
    output_signature,
    raster_info,
    weights_path,
)

STAGES = ("process_window", "process_partition", "process_dataset")


class Postprocessor:
    """Base class of postprocessors; subclasses implement the stages they support.

    Subclasses take typed keyword arguments in `__init__` (they become `init_args`) and
    must not use `**kwargs`. Outputs must be written atomically and re-runs must skip
    finished work, so that every stage can be killed and resumed.
    """

    def process_window(self, window: Window, outputs: list[Path]) -> list[Path]:
        """Postprocess one window's outputs; returns the files passed on to the partition."""
        raise NotImplementedError(f"{type(self).__name__} does not process windows")

    def process_partition(self, window_results: list[Path], output_dir: Path) -> list[Path]:
        """Combine a partition's window results into `output_dir`; returns the results."""
        raise NotImplementedError(f"{type(self).__name__} does not process partitions")

    def process_dataset(self, partition_results: list[Path], output_dir: Path) -> list[Path]:
        """Combine every partition's results into `output_dir`; returns the final results."""
        raise NotImplementedError(f"{type(self).__name__} does not process datasets")


@dataclass
class Postprocessors:
    """The three postprocessing strategies."""

    process_window: Postprocessor
    process_partition: Postprocessor
    process_dataset: Postprocessor


def supports(postprocessor: Postprocessor, stage: str) -> bool:
    """Whether `postprocessor` implements `stage` (one of `STAGES`)."""
    return getattr(type(postprocessor), stage) is not getattr(Postprocessor, stage)


class NoopRaster(Postprocessor):
    """Pass results through unchanged at every stage."""

    def process_window(self, window: Window, outputs: list[Path]) -> list[Path]:
        """Return the window's outputs."""
        return list(outputs)

    def process_partition(self, window_results: list[Path], output_dir: Path) -> list[Path]:
        """Return the window results."""
        return list(window_results)

    def process_dataset(self, partition_results: list[Path], output_dir: Path) -> list[Path]:
        """Return the partition results."""
        return list(partition_results)


class NoopVector(NoopRaster):
    """Pass results through unchanged at every stage (vector outputs)."""


@dataclass(frozen=True)
class LinearValueTransform:
    """output = scale * input + offset, optionally cast (clipped) to `output_dtype`."""

    type: Literal["linear"] = "linear"
    scale: float = 1.0
    offset: float = 0.0
    output_dtype: Literal["uint8", "int16", "int32", "float32"] | None = None

    def apply(self, data: np.ndarray) -> np.ndarray:
        """Transform values (the cast happens when the block is written)."""
        return data * self.scale + self.offset


@dataclass(frozen=True)
class ValueTransform(LinearValueTransform):
    """Upstream's name of `LinearValueTransform` (`...combine_geotiff.ValueTransform`)."""


class Combiner(Postprocessor):
    """A postprocessor that merges its inputs the same way at the partition and dataset stage."""

    def process_partition(self, window_results: list[Path], output_dir: Path) -> list[Path]:
        """Merge the partition's window results."""
        return self.combine(window_results, output_dir)

    def process_dataset(self, partition_results: list[Path], output_dir: Path) -> list[Path]:
        """Merge every partition's results."""
        return self.combine(partition_results, output_dir)

    def combine(self, inputs: list[Path], output_dir: Path) -> list[Path]:
        """Merge `inputs` into `output_dir`; returns the results (idempotent)."""
        raise NotImplementedError


def _crs_tag(crs: str) -> str:
    return re.sub(r"[^a-zA-Z0-9]", "", crs).lower()


class CombineGeotiff(Combiner):
    """Merge raster results into Cloud-Optimized GeoTIFFs, one per output name and CRS.

    Overlapping windows blend with feathered weights (see helios.runner.postprocess.mosaic),
    so no seams show; class maps take the class of the most central window. Each result gets a
    `.png` quicklook (with its legend or colour bar, scale bar and CRS) and, for class maps,
    `<stem>.tif.aux.xml` (GDAL category names and attribute table) and `<stem>.qml` (a QGIS
    style); its summed blending weights, which only the next stage reads, go to
    `<output_dir>/../blending/<stem>.weights.tif`. Non-GeoTIFF inputs pass through.
    """

    def __init__(
        self,
        max_pixels_per_dimension: int | None = None,
        nodata_value: float | None = None,
        value_transform: LinearValueTransform | None = None,
        blend_pixels: int | None = None,
        quicklook: bool = True,
    ) -> None:
        """Create the postprocessor.

        Args:
            max_pixels_per_dimension: Split each mosaic into tiles of at most this many
                pixels per side (aligned to a grid of that size); default: one file per CRS.
            nodata_value: Output nodata; default NaN for float results, else the inputs' or 0.
            value_transform: Applied to the merged values (e.g. scale to uint8).
            blend_pixels: Width of the feathered edge of each window; default a quarter
                of the window's shorter side.
            quicklook: Write a PNG quicklook beside each result.

        """
        if max_pixels_per_dimension is not None and max_pixels_per_dimension < 1:
            raise ValueError("max_pixels_per_dimension must be positive")
        self.max_pixels_per_dimension = max_pixels_per_dimension
        self.nodata_value = nodata_value
        self.value_transform = value_transform
        self.blend_pixels = blend_pixels
        self.quicklook = quicklook

    def __repr__(self) -> str:
        return (
            f"CombineGeotiff({self.max_pixels_per_dimension}, {self.nodata_value}, "
            f"{self.value_transform}, {self.blend_pixels}, {self.quicklook})"
        )

    def combine(self, inputs: list[Path], output_dir: Path) -> list[Path]:
        """Merge the .tif inputs by (output name, CRS, pixel size); others pass through."""
        output_dir.mkdir(parents=True, exist_ok=True)
        clean_tmp_files(output_dir)
        for p in output_dir.glob(".*.staging.tif"):
            p.unlink()
        groups: dict[tuple[str, str, float, int], list[RasterInfo]] = defaultdict(list)
        passed = [p for p in inputs if p.suffix != ".tif"]
        for path in sorted(p for p in inputs if p.suffix == ".tif"):
            info = raster_info(path)
            groups[(info.name, info.crs, round(info.res, 9), info.count)].append(info)
        results: list[Path] = []
        for (name, crs, res, count), infos in sorted(groups.items()):
            stem = f"{name}_{_crs_tag(crs)}"
            if sum(k[:2] == (name, crs) for k in groups) > 1:  # same name, other grids
                stem += f"_{res:g}m_{count}b"
            for bounds, suffix in self._tiles(infos):
                results.append(self._merge(infos, bounds, output_dir / f"{stem}{suffix}.tif"))
        return results + passed

    def _tiles(self, infos: list[RasterInfo]) -> list[tuple[tuple[int, int, int, int], str]]:
        res_x, res_y = infos[0].transform.a, infos[0].transform.e
        c0 = min(round(i.transform.c / res_x) for i in infos)
        r0 = min(round(i.transform.f / res_y) for i in infos)
        c1 = max(round(i.transform.c / res_x) + i.width for i in infos)
        r1 = max(round(i.transform.f / res_y) + i.height for i in infos)
        n = self.max_pixels_per_dimension
        if n is None:
            return [((c0, r0, c1, r1), "")]
        tiles = []
        for ti in range(math.floor(c0 / n), math.ceil(c1 / n)):
            for tj in range(math.floor(r0 / n), math.ceil(r1 / n)):
                b = (max(c0, ti * n), max(r0, tj * n), min(c1, (ti + 1) * n), min(r1, (tj + 1) * n))
                if any(self._touches(i, b, res_x, res_y) for i in infos):
                    tiles.append((b, f"_{ti}_{tj}"))
        return tiles

    @staticmethod
    def _touches(info: RasterInfo, b: tuple[int, int, int, int], rx: float, ry: float) -> bool:
        c, r = round(info.transform.c / rx), round(info.transform.f / ry)
        return c < b[2] and c + info.width > b[0] and r < b[3] and r + info.height > b[1]

    def _merge(self, infos: list[RasterInfo], bounds: tuple[int, ...], out: Path) -> Path:
        hit = [
            i
            for i in infos
            if self._touches(i, bounds, i.transform.a, i.transform.e)  # type: ignore[arg-type]
        ]
        paths = [i.path for i in hit] + [
            wp for i in hit if (wp := i.weights_path()) is not None and wp.exists()
        ]
        signature = output_signature(paths, (self, bounds))
        sidecars = [weights_path(out)]
        sidecars += [out.with_suffix(".png")] if self.quicklook else []
        sidecars += [qml_path(out)] if hit[0].kind == "classification" else []
        if existing_signature(out) == signature and all(p.exists() for p in sidecars):
            return out
        vt = self.value_transform
        return mosaic(
            hit,
            out,
            bounds=bounds,  # type: ignore[arg-type]
            blend_pixels=self.blend_pixels,
            nodata_value=self.nodata_value,
            transform_values=vt.apply if vt else None,
            dtype=vt.output_dtype if vt else None,
            signature=signature,
            quicklook=self.quicklook,
        )


class CombineGeojson(Combiner):
    """Concatenate GeoJSON results into one FeatureCollection per output name.

    At the window stage (upstream's `process_window`), each result feature takes the geometry
    of the request feature its window was made for (`geometry_source="request"`, e.g. the
    alert polygon a FixedWindow was centred on) or keeps its own (`"result"`), and the
    request's properties under its own non-null ones (`include_request_properties`); the
    result goes to `<window>/processed/<name>.geojson`. At the partition and dataset stages
    features are concatenated. Non-GeoJSON inputs pass through.
    """

    def __init__(
        self,
        geometry_source: Literal["request", "result"] = "request",
        include_request_properties: bool = True,
    ) -> None:
        """Create the postprocessor (upstream's signature)."""
        self.geometry_source = geometry_source
        self.include_request_properties = include_request_properties

    def __repr__(self) -> str:
        return f"CombineGeojson({self.geometry_source!r}, {self.include_request_properties})"

    def process_window(self, window: Window, outputs: list[Path]) -> list[Path]:
        """Give each GeoJSON result feature its request's geometry and properties."""
        request = _window_request(window) if self.geometry_source == "request" else None
        out = []
        for path in outputs:
            if path.suffix != ".geojson":
                out.append(path)
                continue
            features = []
            for f in read_json(path).get("features", []):
                props = dict(window.properties) if self.include_request_properties else {}
                props.update(
                    {k: v for k, v in (f.get("properties") or {}).items() if v is not None}
                )
                geom = (
                    shapely.geometry.mapping(request) if request is not None else f.get("geometry")
                )
                features.append({"type": "Feature", "geometry": geom, "properties": props})
            target = window.path / "processed" / path.name
            write_json(target, {"type": "FeatureCollection", "features": features})
            out.append(target)
        return out

    def combine(self, inputs: list[Path], output_dir: Path) -> list[Path]:
        """Write `<name>.geojson` per input name (features concatenated, bounded memory)."""
        return _combine_features(inputs, output_dir, "CombineGeojson", None)


def _window_request(window: Window) -> BaseGeometry | None:
    """The WGS84 geometry of the request feature a window was made for (None if unknown).

    Read from its partition's request.geojson: the feature that intersects the window (the
    one whose centroid is nearest the window's when several do).
    """
    pfile = window.dataset.parent / "partitions" / window.group / "request.geojson"
    if not pfile.exists():
        return None
    box = shapely.geometry.box(*window.wgs84_bounds())
    shapes = [shapely.geometry.shape(f["geometry"]) for f in read_json(pfile).get("features", [])]
    hits = [s for s in shapes if s.intersects(box)]
    if not hits:
        return None
    return min(hits, key=lambda s: s.centroid.distance(box.centroid))


def _geojson_signature(path: Path) -> str | None:
    with open(path) as f:
        head = f.readline()
    m = re.search(r'"helios_inputs": "([0-9a-f]+)"', head)
    return m.group(1) if m else None


def _combine_features(
    inputs: list[Path],
    output_dir: Path,
    config: object,
    edit: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None,
) -> list[Path]:
    """Write `<name>.geojson` per input name: the inputs' features, concatenated and edited.

    Without `edit` the features are streamed file by file (memory bounded by one input).
    Idempotent: an output whose recorded input signature (names, sizes, mtimes and `config`)
    matches is left alone; outputs are written atomically. Non-GeoJSON inputs pass through.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    clean_tmp_files(output_dir)
    groups: dict[str, list[Path]] = defaultdict(list)
    for p in sorted(inputs):
        if p.suffix == ".geojson":
            groups[p.stem].append(p)
    results = []
    for name, paths in sorted(groups.items()):
        out = output_dir / f"{name}.geojson"
        signature = output_signature(paths, config)
        if not (out.exists() and _geojson_signature(out) == signature):
            _write_collection(paths, out, signature, edit)
        results.append(out)
    return results + [p for p in inputs if p.suffix != ".geojson"]


def _write_collection(
    paths: list[Path],
    out: Path,
    signature: str,
    edit: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None,
) -> None:
    """One FeatureCollection of the features of `paths`, its signature on the first line."""
    with atomic_path(out) as tmp, open(tmp, "w") as f:
        head = {"type": "FeatureCollection", "helios_inputs": signature}
        f.write(json.dumps(head)[:-1] + ', "features": [\n')
        if edit is not None:
            feats = edit([feat for p in paths for feat in read_json(p).get("features", [])])
            f.write(",\n".join(json.dumps(feat) for feat in feats))
        else:
            first = True
            for p in paths:
                for feat in read_json(p).get("features", []):
                    f.write(("" if first else ",\n") + json.dumps(feat))
                    first = False
        f.write("\n]}\n")


class CombineAndDeduplicateGeojson(Combiner):
    """Concatenate GeoJSON results, keeping the first of each group of duplicate features.

    Upstream's rule: two polygons are duplicates when both are valid and their intersection
    over union is at least `min_iou`; two points when they are at most `point_nearness`
    apart (CRS units: degrees for WGS84 results); other geometries when equal. Features
    without a geometry are dropped. Upstream only deduplicates per partition; here the
    dataset stage does the same over every partition's results.
    """

    def __init__(self, min_iou: float = 0.9, point_nearness: float = 0.001) -> None:
        """Create the postprocessor.

        Args:
            min_iou: Intersection over union from which two polygons are the same object.
            point_nearness: Distance up to which two points are the same object.

        """
        if not 0 <= min_iou <= 1:
            raise ValueError(f"min_iou must be in [0, 1], got {min_iou}")
        if point_nearness < 0:
            raise ValueError(f"point_nearness must not be negative, got {point_nearness}")
        self.min_iou = min_iou
        self.point_nearness = point_nearness

    def __repr__(self) -> str:
        return f"CombineAndDeduplicateGeojson({self.min_iou}, {self.point_nearness})"

    def _duplicate(self, a: BaseGeometry, b: BaseGeometry) -> bool:
        polygonal = ("Polygon", "MultiPolygon")
        if a.geom_type in polygonal and b.geom_type in polygonal:
            if not (a.is_valid and b.is_valid):
                return False
            inter = a.intersection(b).area
            union = a.area + b.area - inter
            return union > 0 and inter / union >= self.min_iou
        if a.geom_type == b.geom_type == "Point":
            return bool(a.distance(b) <= self.point_nearness)
        return a.geom_type == b.geom_type and bool(a.equals(b))

    def deduplicate(self, features: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The features without later duplicates of earlier ones (greedy, in order)."""
        features = [f for f in features if f.get("geometry")]
        geoms = [shapely.geometry.shape(f["geometry"]) for f in features]
        tree = shapely.STRtree(geoms)
        kept = np.zeros(len(geoms), dtype=bool)
        for i, g in enumerate(geoms):
            near = tree.query(g, predicate="dwithin", distance=self.point_nearness)
            kept[i] = not any(kept[j] and self._duplicate(geoms[j], g) for j in near if j < i)
        return [f for f, k in zip(features, kept, strict=True) if k]

    def combine(self, inputs: list[Path], output_dir: Path) -> list[Path]:
        """Write `<name>.geojson` per input name, duplicates removed."""
        return _combine_features(inputs, output_dir, self, self.deduplicate)


class SimplifyPolygons(Combiner):
    """Concatenate GeoJSON results, simplifying each polygon (Douglas-Peucker).

    As upstream: `geometry.simplify(tolerance, preserve_topology)` on Polygons and
    MultiPolygons (tolerance in CRS units: degrees for WGS84 results), dropping those that
    become empty or invalid; other features pass through. Upstream only does this per
    partition, and fails on a polygon that simplifies to a MultiPolygon; here both stages
    work and MultiPolygons are kept.
    """

    def __init__(self, tolerance: float = 0.01, preserve_topology: bool = True) -> None:
        """Create the postprocessor.

        Args:
            tolerance: Largest distance a simplified vertex may move.
            preserve_topology: Keep rings valid (no self-intersections or collapsed holes).

        """
        if tolerance < 0:
            raise ValueError(f"tolerance must not be negative, got {tolerance}")
        self.tolerance = tolerance
        self.preserve_topology = preserve_topology

    def __repr__(self) -> str:
        return f"SimplifyPolygons({self.tolerance}, {self.preserve_topology})"

    def simplify(self, features: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The features with their polygons simplified."""
        out = []
        for f in features:
            geom = f.get("geometry")
            if not geom or geom.get("type") not in ("Polygon", "MultiPolygon"):
                out.append(f)
                continue
            simple = shapely.geometry.shape(geom).simplify(self.tolerance, self.preserve_topology)
            if not simple.is_empty and simple.is_valid:
                out.append({**f, "geometry": shapely.geometry.mapping(simple)})
        return out

    def combine(self, inputs: list[Path], output_dir: Path) -> list[Path]:
        """Write `<name>.geojson` per input name, polygons simplified."""
        return _combine_features(inputs, output_dir, self, self.simplify)


BUILTIN_POSTPROCESSORS: tuple[type[Postprocessor], ...] = (
    NoopRaster,
    NoopVector,
    CombineGeotiff,
    CombineGeojson,
    CombineAndDeduplicateGeojson,
    SimplifyPolygons,
)
