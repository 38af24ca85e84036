"""Partitioners: split prediction requests into partitions, and partitions into windows.

Two roles, as in the upstream runner (one class may serve both):

- `partition_request_geometry(requests) -> list[Partition]` groups or cuts the WGS84 request
  features into partitions, the unit of parallel work. Partitions stay in WGS84.
- `prepare_window_geometries(partition) -> list[WindowSpec]` turns a partition into windows:
  whole-pixel rectangles in the UTM zone of each feature's centroid (or a configured
  projection) at 10 m unless configured otherwise.

The classes and their arguments are upstream olmoearth-runner 0.1.14's; where Helios
differs on purpose, docs/runner.md ("Helios and upstream olmoearth-runner") says how and
why. Write your own by subclassing `Partitioner` and naming it by `class_path` in
olmoearth_run.yaml.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from helios.runner.core.fsutil import text_hash
from helios.runner.core.geometry import (
    WGS84,
    Projection,
    RequestFeature,
    WindowSpec,
    outer_pixel_bounds,
    pixel_shapes_to_wgs84,
    reproject_geometry,
    reproject_shapes,
    to_pixels,
    truncated_pixel_bounds,
    utm_crs,
    window_projection,
)

SLIVER = 1e-6
"""A request-level cell sharing less than this fraction of its area with an areal request
(an edge it only touches, or reprojection noise along one) holds none of it: not kept."""
SLIVER_PIXELS = 0.1
"""The same for window cells, in pixels: less than a tenth of a pixel of the request."""


@dataclass
class Partition:
    """A group of request features processed together (WGS84 geometries)."""

    features: list[RequestFeature]
    extra: dict[str, object] = field(default_factory=dict)
    """Free-form metadata a partitioner wants to keep (written to partition.json)."""

    @property
    def id(self) -> str:
        """Stable id: a hash of the features' geometries and time ranges."""
        return "p" + text_hash([f.key() for f in self.features])[:12]


class Partitioner:
    """Base class of partitioners; subclasses implement one or both methods.

    Subclasses take typed keyword arguments in `__init__` (they become `init_args` in
    olmoearth_run.yaml) and must not use `**kwargs`.
    """

    supports_request_partitioning: ClassVar[bool] = True
    """False where `partition_request_geometry` is not implemented (checked at load time)."""

    def estimate_windows(self, partition: Partition) -> int | None:
        """About how many windows `prepare_window_geometries` makes, without making them.

        None: unknown (the partition step then makes a few partitions' windows and scales).
        """
        return None

    def partition_request_geometry(self, requests: list[RequestFeature]) -> list[Partition]:
        """Split the request features into partitions."""
        raise NotImplementedError(
            f"{type(self).__name__} cannot partition request geometries; use it under "
            "prepare_window_geometries"
        )

    def prepare_window_geometries(self, partition: Partition) -> list[WindowSpec]:
        """Turn one partition into windows."""
        raise NotImplementedError(f"{type(self).__name__} cannot prepare window geometries")

    def check(self, role: str) -> list[str]:
        """Problems with using this partitioner as `role` (checked when the project loads)."""
        return []


class _Projecting(Partitioner):
    """Shared handling of `output_projection` / `use_utm` (upstream semantics)."""

    def __init__(self, output_projection: Projection | None = None, use_utm: bool = False) -> None:
        self.output_projection = output_projection
        self.use_utm = use_utm

    def projection_for(self, feature: RequestFeature) -> Projection:
        """The projection of windows made from `feature` (UTM zone of its centroid)."""
        return window_projection(feature.geometry, self.output_projection, self.use_utm)

    def estimate_windows(self, partition: Partition) -> int | None:
        """One window per feature (partitioners that tile override this)."""
        limit = getattr(self, "limit", None)
        n = len(partition.features)
        return min(n, limit) if limit else n

    def _window(
        self, feature: RequestFeature, proj: Projection, bounds: tuple[int, int, int, int]
    ) -> WindowSpec:
        return WindowSpec(proj, bounds, feature.start_time, feature.end_time, feature.properties)

    def _reprojected(self, partition: Partition) -> list[WindowSpec]:
        """One window per feature: the int-truncated bounds of the projected feature."""
        out = []
        for f in partition.features:
            proj = self.projection_for(f)
            out.append(self._window(f, proj, truncated_pixel_bounds(to_pixels(f.geometry, proj))))
        return out


class NoopPartitioner(_Projecting):
    """All requests form one partition; each feature becomes one window over its bounds."""

    def partition_request_geometry(self, requests: list[RequestFeature]) -> list[Partition]:
        """One partition holding every request feature."""
        return [Partition(list(requests))] if requests else []

    def prepare_window_geometries(self, partition: Partition) -> list[WindowSpec]:
        """One window per feature: its bounding box in whole pixels (Helios only)."""
        out = []
        for f in partition.features:
            proj = self.projection_for(f)
            out.append(self._window(f, proj, outer_pixel_bounds(to_pixels(f.geometry, proj))))
        return out


class ReprojectionPartitioner(_Projecting):
    """Reprojects each feature into its window projection: one window per feature."""

    supports_request_partitioning = False

    def prepare_window_geometries(self, partition: Partition) -> list[WindowSpec]:
        """One window per feature: the truncated pixel bounds of the projected feature."""
        return self._reprojected(partition)


class ChunkPartitioner(_Projecting):
    """Consecutive features in partitions of `num_geometries_per_partition`; a window each."""

    def __init__(
        self,
        num_geometries_per_partition: int,
        output_projection: Projection | None = None,
        use_utm: bool = False,
    ) -> None:
        """Create the partitioner.

        Args:
            num_geometries_per_partition: Features per partition (the last may hold fewer).
            output_projection: Window CRS and pixel size; default: UTM at 10 m.
            use_utm: Use the UTM zone of each feature with `output_projection`'s pixel size.

        """
        super().__init__(output_projection, use_utm)
        if num_geometries_per_partition < 1:
            raise ValueError(
                f"num_geometries_per_partition must be positive, got {num_geometries_per_partition}"
            )
        self.num_geometries_per_partition = num_geometries_per_partition

    def partition_request_geometry(self, requests: list[RequestFeature]) -> list[Partition]:
        """Batches of consecutive features, in request order."""
        n = self.num_geometries_per_partition
        return [Partition(list(requests[i : i + n])) for i in range(0, len(requests), n)]

    def prepare_window_geometries(self, partition: Partition) -> list[WindowSpec]:
        """One window per feature: the truncated pixel bounds of the projected feature."""
        return self._reprojected(partition)


class FixedWindowPartitioner(_Projecting):
    """A `window_size` x `window_size` pixel window centred on each feature's centroid."""

    supports_request_partitioning = False

    def __init__(
        self,
        window_size: float,
        output_projection: Projection | None = None,
        use_utm: bool = False,
        limit: int | None = None,
    ) -> None:
        """Create the partitioner.

        Args:
            window_size: Window side in pixels (a whole number).
            output_projection: Window CRS and pixel size; default: UTM at 10 m.
            use_utm: Use the UTM zone of each feature with `output_projection`'s pixel size.
            limit: Make at most this many windows per partition (first features first;
                Helios only).

        """
        super().__init__(output_projection, use_utm)
        if window_size <= 0 or not float(window_size).is_integer():
            raise ValueError(f"window_size must be a positive whole number, got {window_size}")
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be positive, got {limit}")
        self.window_size = int(window_size)
        self.limit = limit

    def prepare_window_geometries(self, partition: Partition) -> list[WindowSpec]:
        """One window centred on the centroid of each projected feature, up to `limit`.

        As upstream: the float square around the centroid, bounds truncated toward zero.
        """
        features = partition.features[: self.limit] if self.limit else partition.features
        half = self.window_size / 2
        out = []
        for f in features:
            proj = self.projection_for(f)
            c = to_pixels(f.geometry, proj).centroid
            square = shapely.box(c.x - half, c.y - half, c.x + half, c.y + half)
            out.append(self._window(f, proj, truncated_pixel_bounds(square)))
        return out


def grid_origins(bounds: tuple[float, float, float, float], g: float) -> np.ndarray:
    """Lower-left corners of the `g` cells over `bounds`, x-major (upstream's float loop).

    Copied from upstream's `_split_shapely_to_grid`, float accumulation (`y += g`) and all,
    so cell coordinates match to the last bit; a degenerate extent (a point on a grid line)
    still gets its one cell, where upstream gets none.
    """
    minx, miny, maxx, maxy = bounds
    x_start, y_start = math.floor(minx / g) * g, math.floor(miny / g) * g
    x_end, y_end = math.ceil(maxx / g) * g, math.ceil(maxy / g) * g
    x_end = x_end if x_end > x_start else x_start + g
    y_end = y_end if y_end > y_start else y_start + g
    ys = []
    y = y_start
    while y < y_end:
        ys.append(y)
        y += g
    xs = []
    x = x_start
    while x < x_end:
        xs.append(x)
        x += g
    return np.array([(x, y) for x in xs for y in ys], dtype=float).reshape(-1, 2)


class GridPartitioner(_Projecting):
    """Cut geometries into grid cells aligned to multiples of `grid_size`.

    At the request level the grid is in degrees (WGS84), or in metres of each feature's UTM
    zone with `request_units="metres"`. At the window level it is in pixels of the window
    projection, over the partition's bounding box. A cell is kept where it (without its
    overlap margin) holds part of the request feature it came from, tested in WGS84; the
    overlap then grows each kept cell, and `clip` cuts it to the partition geometry.
    """

    def __init__(
        self,
        grid_size: float,
        overlap_size: float | None = None,
        output_projection: Projection | None = None,
        use_utm: bool = False,
        clip: bool = False,
        request_units: Literal["degrees", "metres"] = "degrees",
    ) -> None:
        """Create the partitioner.

        Args:
            grid_size: Cell size: degrees (or metres) for requests, pixels for windows.
            overlap_size: Grow each cell by this much on every side (same units).
            output_projection: Window CRS and pixel size; default: UTM at 10 m.
            use_utm: Use the UTM zone of each feature with `output_projection`'s pixel size.
            clip: Clip cells to the geometry (windows shrink to the clipped bounds).
            request_units: Units of `grid_size` when partitioning requests (Helios only).

        """
        super().__init__(output_projection, use_utm)
        if grid_size <= 0:
            raise ValueError(f"grid_size must be positive, got {grid_size}")
        if overlap_size is not None and overlap_size < 0:
            raise ValueError(f"overlap_size must not be negative, got {overlap_size}")
        self.grid_size = float(grid_size)
        self.overlap_size = float(overlap_size or 0.0)
        self.clip = clip
        self.request_units = request_units

    def _cells(self, origins: np.ndarray, grow: float = 0.0) -> np.ndarray:
        x, y, g = origins[:, 0], origins[:, 1], self.grid_size
        return np.asarray(shapely.box(x - grow, y - grow, x + g + grow, y + g + grow))

    @staticmethod
    def _keep(cores_wgs84: np.ndarray, area: BaseGeometry, sliver: float) -> np.ndarray:
        """Cells holding part of `area` (both WGS84).

        A cell intersecting an areal request must share more than the fraction `sliver`
        of its area with it.
        """
        shapely.prepare(area)
        keep = np.asarray(shapely.intersects(cores_wgs84, area), dtype=bool)
        if area.area > 0 and keep.any():
            shared = shapely.area(shapely.intersection(cores_wgs84[keep], area))
            keep[keep] = shared > sliver * shapely.area(cores_wgs84[keep])
        return keep

    def _request_cells(self, f: RequestFeature) -> list[BaseGeometry]:
        """The request-level cells of one feature (WGS84)."""
        crs = WGS84
        geom = f.geometry
        if self.request_units == "metres":
            c = f.geometry.centroid
            crs = utm_crs(c.x, c.y)
            geom = reproject_geometry(geom, WGS84, crs)
        origins = grid_origins(geom.bounds, self.grid_size)
        cores = reproject_shapes(self._cells(origins), crs, WGS84)
        keep = self._keep(cores, f.area_of_interest, SLIVER)
        cells = self._cells(origins[keep], self.overlap_size)
        if self.clip:
            cells = np.asarray(shapely.intersection(cells, geom))
        return [c for c in reproject_shapes(cells, crs, WGS84) if not c.is_empty]

    def partition_request_geometry(self, requests: list[RequestFeature]) -> list[Partition]:
        """One partition per grid cell per feature (features are never merged)."""
        out: list[Partition] = []
        for f in requests:
            for cell in self._request_cells(f):
                footprint = cell if self.clip else None
                out.append(Partition([f.with_geometry(cell, footprint)]))
        return out

    def check(self, role: str) -> list[str]:
        """Window grids are in pixels: sizes must be whole numbers."""
        if role == "prepare_window_geometries" and not (
            self.grid_size.is_integer() and self.overlap_size.is_integer()
        ):
            return [
                "window grids are in pixels: grid_size and overlap_size must be whole numbers, "
                f"got {self.grid_size:g} and {self.overlap_size:g}"
            ]
        return []

    def estimate_windows(self, partition: Partition) -> int:
        """Cells over the part of each feature's request in the partition (nothing is made).

        Area over cell area, plus one row of cells along the outline.
        """
        total = 0
        for f in partition.features:
            proj = self.projection_for(f)
            region = to_pixels(f.geometry.intersection(f.area_of_interest), proj)
            g = self.grid_size
            total += math.ceil(region.area / g**2 + region.length / g) + 1
        return total

    def prepare_window_geometries(self, partition: Partition) -> list[WindowSpec]:
        """One window per pixel-grid cell holding part of each feature's request."""
        problems = self.check("prepare_window_geometries")
        if problems:
            raise ValueError(problems[0])
        out: list[WindowSpec] = []
        for f in partition.features:
            proj = self.projection_for(f)
            geom = to_pixels(f.geometry, proj)
            origins = grid_origins(geom.bounds, self.grid_size)
            cores = pixel_shapes_to_wgs84(self._cells(origins), proj)
            keep = self._keep(cores, f.area_of_interest, SLIVER_PIXELS / self.grid_size**2)
            cells = self._cells(origins[keep], self.overlap_size)
            if self.clip:
                cells = np.asarray(shapely.intersection(cells, geom))
            for cell in cells:
                if not cell.is_empty:
                    out.append(self._window(f, proj, truncated_pixel_bounds(cell)))
        return out


BUILTIN_PARTITIONERS: tuple[type[Partitioner], ...] = (
    NoopPartitioner,
    FixedWindowPartitioner,
    GridPartitioner,
    ReprojectionPartitioner,
    ChunkPartitioner,
)
