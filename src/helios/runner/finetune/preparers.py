"""Labeled window preparers: turn an annotation task into windows with labels.

`window_prep.labeled_window_preparer` in olmoearth_run.yaml. Each window is whole pixels of
the UTM zone of its geometry's centroid (a point's own zone for point windows) at
`window_resolution` metres, on the zone's global pixel grid like prediction windows.

- `PointToPixelWindowPreparer`: a 1 x 1 px window on each point annotation, labeled with the
  point's class (a number: a vector label).
- `PointToRasterWindowPreparer`: a (2 b + 1)^2 px window centred on each point; a raster
  label with the class at the centre pixel and nodata elsewhere.
- `PolygonToRasterWindowPreparer`: the task polygon's bounding box as the window; the
  annotation polygons burnt into a class raster (pixel centres, later polygons win), nodata
  where none covers.

Write your own by subclassing `LabeledWindowPreparer` and implementing
`prepare_labeled_windows(task, label_property)`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import rasterio.features
import shapely
from shapely.geometry import Point
from shapely.geometry.base import BaseGeometry

from helios.runner.core.geometry import (
    MAX_WINDOW_SIDE,
    Projection,
    WindowSpec,
    outer_pixel_bounds,
    to_pixels,
    utm_crs,
)
from helios.runner.finetune.annotations import Annotation, AnnotationTask, Problem

LabelKind = Literal["vector", "raster"]
DEFAULT_NODATA_VALUE = 255
"""Nodata of raster labels (as upstream): pixels no annotation covers."""
RASTER_DTYPES = ("uint8", "uint16", "int16", "int32", "float32")


@dataclass
class LabeledWindow:
    """A window to create plus its label."""

    spec: WindowSpec
    """Projection, pixel bounds, time range (the task's) and properties (`source_task_id`)."""
    label: int | float | np.ndarray
    """A number (vector labels) or an [H, W] array on the window grid (raster labels)."""
    kind: LabelKind
    task_id: str
    origin: Problem
    """The feature the window came from (reason: "window"), for duplicate reports."""
    nodata: int | float | None = None
    """Nodata of a raster label."""
    geometry: BaseGeometry | None = None
    """The labeled geometry (WGS84) of a vector label, written to labels/<layer>.geojson."""

    @property
    def name(self) -> str:
        """The window name: a hash of projection, pixel bounds and time range."""
        return self.spec.name


def label_value(annotation: Annotation, label_property: str) -> int | float:
    """The annotation's value of `label_property`; ValueError saying what is missing."""
    value = annotation.labels.get(label_property)
    if value is None:
        have = sorted(k for k, v in annotation.labels.items() if v is not None)
        raise ValueError(f"no {label_property!r} label (labels: {have})")
    return value


def class_value(value: int | float, dtype: str, nodata: int | float | None) -> int | float:
    """Check a label fits a raster of `dtype` and differs from nodata; returns it."""
    if dtype != "float32":
        if float(value) != math.floor(value):
            raise ValueError(f"class {value!r} is not an integer (raster labels are {dtype})")
        value = int(value)
        info = np.iinfo(dtype)
        if not info.min <= value <= info.max:
            raise ValueError(f"class {value} does not fit {dtype} ({info.min}..{info.max})")
    if nodata is not None and value == nodata:
        raise ValueError(f"class {value} equals the nodata value {nodata}")
    return value


def _projection(geom: BaseGeometry, resolution: float) -> Projection:
    c = geom.centroid
    return Projection(utm_crs(c.x, c.y), resolution, -resolution)


class LabeledWindowPreparer:
    """Base class of labeled window preparers."""

    kind: ClassVar[LabelKind] = "vector"
    """Whether windows carry a vector (a number) or a raster label."""

    def prepare_labeled_windows(
        self, task: AnnotationTask, label_property: str
    ) -> tuple[list[LabeledWindow], list[Problem]]:
        """The windows of one task, and the annotations (or the task) left out, with why."""
        raise NotImplementedError


class _PointPreparer(LabeledWindowPreparer):
    window_resolution: float

    def _point_pixel(self, ann: Annotation) -> tuple[Projection, int, int]:
        if not isinstance(ann.geometry, Point):
            raise ValueError(f"expected a Point annotation, got a {ann.geometry.geom_type}")
        proj = _projection(ann.geometry, self.window_resolution)
        px = to_pixels(ann.geometry, proj)
        return proj, math.floor(px.x), math.floor(px.y)

    def _spec(
        self, task: AnnotationTask, proj: Projection, bounds: tuple[int, int, int, int]
    ) -> WindowSpec:
        props = {"source_task_id": task.task_id}
        return WindowSpec(proj, bounds, task.start_time, task.end_time, props)


class PointToPixelWindowPreparer(_PointPreparer):
    """A 1 x 1 pixel window on each point annotation, labeled with the point's class."""

    kind = "vector"

    def __init__(self, window_resolution: float = 10.0) -> None:
        """Create the preparer.

        Args:
            window_resolution: Metres per pixel (10 m matches Sentinel-2 and the encoder).

        """
        if window_resolution <= 0:
            raise ValueError(f"window_resolution must be > 0, got {window_resolution}")
        self.window_resolution = window_resolution

    def prepare_labeled_windows(
        self, task: AnnotationTask, label_property: str
    ) -> tuple[list[LabeledWindow], list[Problem]]:
        """One window per point annotation."""
        windows, problems = [], []
        for ann in task.annotations:
            try:
                value = label_value(ann, label_property)
                proj, col, row = self._point_pixel(ann)
            except ValueError as err:
                problems.append(ann.problem(str(err)))
                continue
            spec = self._spec(task, proj, (col, row, col + 1, row + 1))
            origin = ann.problem("window")
            windows.append(
                LabeledWindow(spec, value, "vector", task.task_id, origin, None, ann.geometry)
            )
        return windows, problems


class PointToRasterWindowPreparer(_PointPreparer):
    """A (2 b + 1)^2 pixel window centred on each point; its class at the centre pixel."""

    kind = "raster"

    def __init__(
        self,
        window_buffer: int,
        window_resolution: float = 10.0,
        dtype: str = "uint8",
        nodata_value: int = DEFAULT_NODATA_VALUE,
    ) -> None:
        """Create the preparer.

        Args:
            window_buffer: Pixels on each side of the point (31 gives 63 x 63 windows).
            window_resolution: Metres per pixel.
            dtype: Label raster type, one of uint8, uint16, int16, int32, float32.
            nodata_value: Label value of unlabeled pixels.

        """
        if window_buffer < 0:
            raise ValueError(f"window_buffer must be >= 0, got {window_buffer}")
        if window_resolution <= 0:
            raise ValueError(f"window_resolution must be > 0, got {window_resolution}")
        if dtype.lower() not in RASTER_DTYPES:
            raise ValueError(f"dtype must be one of {RASTER_DTYPES}, got {dtype!r}")
        self.window_buffer = window_buffer
        self.window_resolution = window_resolution
        self.dtype = dtype.lower()
        self.nodata_value = class_value(nodata_value, self.dtype, None)

    def prepare_labeled_windows(
        self, task: AnnotationTask, label_property: str
    ) -> tuple[list[LabeledWindow], list[Problem]]:
        """One window per point annotation."""
        b = self.window_buffer
        windows, problems = [], []
        for ann in task.annotations:
            try:
                value = class_value(label_value(ann, label_property), self.dtype, self.nodata_value)
                proj, col, row = self._point_pixel(ann)
            except ValueError as err:
                problems.append(ann.problem(str(err)))
                continue
            label = np.full((2 * b + 1, 2 * b + 1), self.nodata_value, dtype=self.dtype)
            label[b, b] = value
            spec = self._spec(task, proj, (col - b, row - b, col + b + 1, row + b + 1))
            windows.append(
                LabeledWindow(
                    spec, label, "raster", task.task_id, ann.problem("window"), self.nodata_value
                )
            )
        return windows, problems


class PolygonToRasterWindowPreparer(LabeledWindowPreparer):
    """The task polygon as the window; annotation polygons rasterised into a class map."""

    kind = "raster"

    def __init__(
        self, window_resolution: float = 10.0, nodata_value: int = DEFAULT_NODATA_VALUE
    ) -> None:
        """Create the preparer.

        Args:
            window_resolution: Metres per pixel.
            nodata_value: Label of pixels no annotation covers (uint8).

        """
        if window_resolution <= 0:
            raise ValueError(f"window_resolution must be > 0, got {window_resolution}")
        self.window_resolution = window_resolution
        self.nodata_value = class_value(nodata_value, "uint8", None)

    def prepare_labeled_windows(
        self, task: AnnotationTask, label_property: str
    ) -> tuple[list[LabeledWindow], list[Problem]]:
        """One window over the task's bounding box (in whole pixels)."""
        proj = _projection(task.geometry, self.window_resolution)
        c0, r0, c1, r1 = outer_pixel_bounds(to_pixels(task.geometry, proj))
        if max(c1 - c0, r1 - r0) > MAX_WINDOW_SIDE:
            reason = f"task of {c1 - c0} x {r1 - r0} px exceeds {MAX_WINDOW_SIDE} px per side"
            return [], [task.problem(reason)]
        shapes, problems = [], []
        for ann in task.annotations:
            try:
                if ann.geometry.geom_type not in ("Polygon", "MultiPolygon"):
                    raise ValueError(
                        f"expected a Polygon or MultiPolygon annotation, got a "
                        f"{ann.geometry.geom_type}"
                    )
                value = class_value(label_value(ann, label_property), "uint8", self.nodata_value)
            except ValueError as err:
                problems.append(ann.problem(str(err)))
                continue
            px = shapely.transform(to_pixels(ann.geometry, proj), lambda xy: xy - (c0, r0))
            shapes.append((px, value))
        if not shapes:
            problems.append(task.problem("no usable annotation; no window made"))
            return [], problems
        label = rasterio.features.rasterize(
            shapes, out_shape=(r1 - r0, c1 - c0), fill=self.nodata_value, dtype="uint8"
        )
        props = {"source_task_id": task.task_id}
        spec = WindowSpec(proj, (c0, r0, c1, r1), task.start_time, task.end_time, props)
        origin = task.problem("window")
        return [
            LabeledWindow(spec, label, "raster", task.task_id, origin, self.nodata_value)
        ], problems


BUILTIN_PREPARERS: tuple[type[LabeledWindowPreparer], ...] = (
    PointToPixelWindowPreparer,
    PointToRasterWindowPreparer,
    PolygonToRasterWindowPreparer,
)
