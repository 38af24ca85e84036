"""Partitioners: split prediction requests into partitions, and partitions into windows.

Two roles, as in the upstream runner (one class may serve both):

- `partition_request_geometry(requests) -> list[Partition]` groups or cuts the WGS84 request
  features into partitions, the unit of parallel work. Partitions stay in WGS84.
- `prepare_window_geometries(partition) -> list[WindowSpec]` turns a partition into windows:
  whole-pixel rectangles in the UTM zone of each feature's centroid (or a configured
  projection) at 10 m unless configured otherwise.

Write your own by subclassing `Partitioner` and naming it by `class_path` in
olmoearth_run.yaml (docs/runner.md shows how).
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
    reproject_geometry,
    to_pixels,
    utm_crs,
    window_projection,
)


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
        """The projection of windows made from `feature`."""
        return window_projection(feature.geometry, self.output_projection, self.use_utm)

    def _window(
        self, feature: RequestFeature, proj: Projection, bounds: tuple[int, int, int, int]
    ) -> WindowSpec:
        return WindowSpec(proj, bounds, feature.start_time, feature.end_time, feature.properties)


class NoopPartitioner(_Projecting):
    """All requests form one partition; each feature becomes one window over its bounds."""

    def partition_request_geometry(self, requests: list[RequestFeature]) -> list[Partition]:
        """One partition holding every request feature."""
        return [Partition(list(requests))] if requests else []

    def prepare_window_geometries(self, partition: Partition) -> list[WindowSpec]:
        """One window per feature: its bounding box in whole pixels."""
        out = []
        for f in partition.features:
            proj = self.projection_for(f)
            out.append(self._window(f, proj, outer_pixel_bounds(to_pixels(f.geometry, proj))))
        return out


class ReprojectionPartitioner(NoopPartitioner):
    """Reprojects each feature into its window projection: one window per feature."""

    supports_request_partitioning = False

    def partition_request_geometry(self, requests: list[RequestFeature]) -> list[Partition]:
        """Not supported: request partitions stay in WGS84."""
        return Partitioner.partition_request_geometry(self, requests)


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
            limit: Make at most this many windows per partition (first features first).

        """
        super().__init__(output_projection, use_utm)
        if window_size <= 0 or not float(window_size).is_integer():
            raise ValueError(f"window_size must be a positive whole number, got {window_size}")
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be positive, got {limit}")
        self.window_size = int(window_size)
        self.limit = limit

    def prepare_window_geometries(self, partition: Partition) -> list[WindowSpec]:
        """One window centred on each feature's centroid, up to `limit`."""
        features = partition.features[: self.limit] if self.limit else partition.features
        out = []
        for f in features:
            proj = self.projection_for(f)
            c = to_pixels(f.geometry.centroid, proj)
            c0 = int(math.floor(c.x - self.window_size / 2 + 0.5))
            r0 = int(math.floor(c.y - self.window_size / 2 + 0.5))
            bounds = (c0, r0, c0 + self.window_size, r0 + self.window_size)
            out.append(self._window(f, proj, bounds))
        return out


class GridPartitioner(_Projecting):
    """Cut geometries into grid cells aligned to multiples of `grid_size`.

    At the request level the grid is in degrees (WGS84), or in metres of each feature's UTM
    zone with `request_units="metres"`. At the window level it is in pixels of the window
    projection. Cells that do not touch the geometry are dropped; the overlap then grows each
    kept cell (a cell whose overlap margin alone would reach the geometry is not kept).
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
            request_units: Units of `grid_size` when partitioning requests.

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

    def _cells(self, geom: BaseGeometry) -> list[BaseGeometry]:
        g, o = self.grid_size, self.overlap_size
        # snap away reprojection noise (e.g. 44063.99999999997 px) so that a feature aligned to
        # the grid does not keep its neighbouring cells for a sliver of 1e-11 of their area
        geom = shapely.set_precision(geom, g * 1e-9)
        minx, miny, maxx, maxy = geom.bounds
        i0, j0 = math.floor(minx / g), math.floor(miny / g)
        ii, jj = np.meshgrid(
            np.arange(i0, max(math.ceil(maxx / g), i0 + 1)),
            np.arange(j0, max(math.ceil(maxy / g), j0 + 1)),
            indexing="ij",
        )
        i, j = ii.ravel(), jj.ravel()
        # which cells to keep is decided on the cells themselves, not their overlap margins,
        # so a cell whose margin alone reaches the geometry does not become a sliver window
        core = shapely.box(i * g, j * g, (i + 1) * g, (j + 1) * g)
        shapely.prepare(geom)
        keep = shapely.intersects(core, geom)
        if geom.area > 0:  # a cell that only touches a polygon's edge holds none of it
            keep &= ~shapely.touches(core, geom)
        i, j = i[keep], j[keep]
        cells = shapely.box(i * g - o, j * g - o, (i + 1) * g + o, (j + 1) * g + o)
        if self.clip:
            cells = shapely.intersection(cells, geom)
        return [c for c in cells if not c.is_empty]

    def partition_request_geometry(self, requests: list[RequestFeature]) -> list[Partition]:
        """One partition per grid cell per feature."""
        out: list[Partition] = []
        for f in requests:
            if self.request_units == "degrees":
                cells = self._cells(f.geometry)
            else:
                c = f.geometry.centroid
                crs = utm_crs(c.x, c.y)
                projected = reproject_geometry(f.geometry, WGS84, crs)
                cells = [reproject_geometry(cell, crs, WGS84) for cell in self._cells(projected)]
            out.extend(Partition([f.with_geometry(cell)]) for cell in cells)
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

    def prepare_window_geometries(self, partition: Partition) -> list[WindowSpec]:
        """One window per pixel-grid cell touching each feature."""
        out: list[WindowSpec] = []
        problems = self.check("prepare_window_geometries")
        if problems:
            raise ValueError(problems[0])
        for f in partition.features:
            proj = self.projection_for(f)
            for cell in self._cells(to_pixels(f.geometry, proj)):
                out.append(self._window(f, proj, outer_pixel_bounds(cell)))
        return out


BUILTIN_PARTITIONERS: tuple[type[Partitioner], ...] = (
    NoopPartitioner,
    FixedWindowPartitioner,
    GridPartitioner,
    ReprojectionPartitioner,
)
