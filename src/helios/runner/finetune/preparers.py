"""Labeled window preparers: turn an annotation task into windows with labels.

`window_prep.labeled_window_preparer` in olmoearth_run.yaml. The classes, their arguments
and their windows (projection, pixel bounds, time range) are upstream olmoearth-runner
0.1.14's: windows live in the UTM (or UPS) zone of their geometry's centroid (a point's own
zone for point windows) at `window_resolution` metres, and pixel bounds are the projected
float bounds truncated toward zero (`int()`), as upstream.

- `PointToPixelWindowPreparer`: a 1 x 1 px window on each point annotation, labeled with the
  point's class (a number: a vector label).
- `PointToRasterWindowPreparer`: a (2 b + 1)^2 px window around each point; a raster label
  with the class burnt into the pixel holding the point and nodata elsewhere.
- `PolygonToRasterWindowPreparer`: the task polygon's bounding box as the window (or a grid
  of `grid_config` squares over it); the annotation polygons burnt into a class raster
  (pixel centres, later polygons win), nodata where none covers. Windows without a labeled
  pixel are not made.

Where upstream fails, Helios reports the feature and goes on (docs/runner.md, "Helios and
upstream olmoearth-runner"). Write your own by subclassing `LabeledWindowPreparer` and
implementing `prepare_labeled_windows(task, label_property)`.
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
    pixels_to_wgs84,
    to_pixels,
    truncated_pixel_bounds,
    utm_crs,
)
from helios.runner.finetune.annotations import Annotation, AnnotationTask, Problem

LabelKind = Literal["vector", "raster"]
DEFAULT_NODATA_VALUE = 255
"""Nodata of raster labels (as upstream): pixels no annotation covers."""
RASTER_DTYPES = ("uint8", "uint16", "int16", "int32", "float32")
Bounds = tuple[int, int, int, int]


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
    """The labeled geometry (WGS84, inside the window) of a vector label, written to its
    label layer."""

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


def _check_resolution(window_resolution: float) -> float:
    if window_resolution <= 0:
        raise ValueError(f"window_resolution must be > 0, got {window_resolution}")
    return window_resolution


def _spec(task: AnnotationTask, proj: Projection, bounds: Bounds) -> WindowSpec:
    props = {"source_task_id": task.task_id}
    return WindowSpec(proj, bounds, task.start_time, task.end_time, props)


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

    def _point(self, ann: Annotation) -> tuple[Projection, Point]:
        """The point's projection (its own zone) and its position in float pixels."""
        if not isinstance(ann.geometry, Point):
            raise ValueError(f"expected a Point annotation, got a {ann.geometry.geom_type}")
        proj = _projection(ann.geometry, self.window_resolution)
        px = to_pixels(ann.geometry, proj)
        assert isinstance(px, Point)
        return proj, px


class PointToPixelWindowPreparer(_PointPreparer):
    """A 1 x 1 pixel window on each point annotation, labeled with the point's class.

    The pixel is upstream's `(int(x), int(y))` of the projected point: truncation toward
    zero, so north of the equator (negative rows) it is the pixel south of the point's.
    """

    kind = "vector"

    def __init__(self, window_resolution: float = 10.0) -> None:
        """Create the preparer.

        Args:
            window_resolution: Metres per pixel (10 m matches Sentinel-2 and the encoder).

        """
        self.window_resolution = _check_resolution(window_resolution)

    def prepare_labeled_windows(
        self, task: AnnotationTask, label_property: str
    ) -> tuple[list[LabeledWindow], list[Problem]]:
        """One window per point annotation."""
        windows, problems = [], []
        for ann in task.annotations:
            try:
                value = label_value(ann, label_property)
                proj, px = self._point(ann)
            except ValueError as err:
                problems.append(ann.problem(str(err)))
                continue
            col, row = int(px.x), int(px.y)
            spec = _spec(task, proj, (col, row, col + 1, row + 1))
            origin = ann.problem("window")
            # the label lies in its window: the pixel's centre (upstream: its corner)
            where = pixels_to_wgs84(Point(col + 0.5, row + 0.5), proj)
            windows.append(LabeledWindow(spec, value, "vector", task.task_id, origin, None, where))
        return windows, problems


class PointToRasterWindowPreparer(_PointPreparer):
    """A (2 b + 1)^2 pixel window around each point; its class at the point's pixel.

    As upstream: the float square `[x - b, x + b + 1]` around the projected point, bounds
    truncated toward zero, the point burnt into the pixel holding it (with negative rows
    that is row b - 1, column b).
    """

    kind = "raster"

    def __init__(
        self,
        window_buffer: int,
        window_resolution: float = 10.0,
        dtype: str = "uint8",
        nodata_value: int | float = DEFAULT_NODATA_VALUE,
    ) -> None:
        """Create the preparer.

        Args:
            window_buffer: Pixels on each side of the point (31 gives 63 x 63 windows).
            window_resolution: Metres per pixel.
            dtype: Label raster type, one of uint8, uint16, int16, int32, float32 (any case).
            nodata_value: Label value of unlabeled pixels.

        """
        if window_buffer < 0:
            raise ValueError(f"window_buffer must be >= 0, got {window_buffer}")
        if dtype.lower() not in RASTER_DTYPES:
            raise ValueError(f"dtype must be one of {RASTER_DTYPES}, got {dtype!r}")
        self.window_buffer = window_buffer
        self.window_resolution = _check_resolution(window_resolution)
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
                proj, px = self._point(ann)
            except ValueError as err:
                problems.append(ann.problem(str(err)))
                continue
            bounds = truncated_pixel_bounds(
                shapely.box(px.x - b, px.y - b, px.x + b + 1, px.y + b + 1)
            )
            c0, r0, c1, r1 = bounds
            label = rasterio.features.rasterize(
                [(Point(px.x - c0, px.y - r0), value)],
                out_shape=(r1 - r0, c1 - c0),
                fill=self.nodata_value,
                dtype=self.dtype,
            )
            windows.append(
                LabeledWindow(
                    _spec(task, proj, bounds),
                    label,
                    "raster",
                    task.task_id,
                    ann.problem("window"),
                    self.nodata_value,
                )
            )
        return windows, problems


class GridConfig:
    """Cut a polygon task's raster into `window_size_px` squares (upstream's GridConfig)."""

    def __init__(
        self,
        window_size_px: int,
        gridding_strategy: Literal[
            "center_crop", "pad_to_fill", "CENTER_CROP", "PAD_TO_FILL"
        ] = "center_crop",
    ) -> None:
        """Create the grid.

        Args:
            window_size_px: Side of each window in pixels.
            gridding_strategy: `center_crop`: whole squares only, the grid centred on the
                task (a task smaller than one square makes none); `pad_to_fill`: squares
                from the task's top-left corner covering all of it, the last ones reaching
                past it (nodata there).

        """
        if window_size_px < 1:
            raise ValueError(f"window_size_px must be positive, got {window_size_px}")
        self.window_size_px = window_size_px
        self.gridding_strategy = gridding_strategy.lower()

    def __repr__(self) -> str:
        return f"GridConfig({self.window_size_px}, {self.gridding_strategy!r})"

    def cells(self, width: int, height: int) -> list[Bounds]:
        """Pixel offsets (col0, row0, col1, row1) of the squares, row-major, as upstream."""
        s = self.window_size_px
        if self.gridding_strategy == "center_crop":
            cols, rows = width // s, height // s
            ox, oy = (width - cols * s) // 2, (height - rows * s) // 2
        else:
            cols, rows = max(1, math.ceil(width / s)), max(1, math.ceil(height / s))
            ox = oy = 0
        return [
            (ox + c * s, oy + r * s, ox + (c + 1) * s, oy + (r + 1) * s)
            for r in range(rows)
            for c in range(cols)
        ]


def _cut(label: np.ndarray, cell: Bounds, nodata: int) -> np.ndarray:
    """The cell's part of the task raster, padded with nodata where it reaches past it."""
    c0, r0, c1, r1 = cell
    out = np.full((r1 - r0, c1 - c0), nodata, dtype=label.dtype)
    part = label[r0:r1, c0:c1]
    out[: part.shape[0], : part.shape[1]] = part
    return out


def _zones(geom: BaseGeometry) -> list[str]:
    """UTM zones of the corners of a WGS84 geometry's bounding box."""
    x0, y0, x1, y1 = geom.bounds
    return sorted({utm_crs(x, y) for x, y in ((x0, y0), (x0, y1), (x1, y0), (x1, y1))})


class PolygonToRasterWindowPreparer(LabeledWindowPreparer):
    """The task polygon as the window; annotation polygons rasterised into a class map."""

    kind = "raster"

    def __init__(
        self,
        window_resolution: float = 10.0,
        nodata_value: int = DEFAULT_NODATA_VALUE,
        grid_config: GridConfig | None = None,
        drop_inconsistent_utm: bool = False,
    ) -> None:
        """Create the preparer.

        Args:
            window_resolution: Metres per pixel.
            nodata_value: Label of pixels no annotation covers (uint8).
            grid_config: Cut each task into squares (default: one window per task).
            drop_inconsistent_utm: Leave out (and report) tasks whose bounding box corners
                lie in more than one UTM zone.

        """
        self.window_resolution = _check_resolution(window_resolution)
        self.nodata_value = int(class_value(nodata_value, "uint8", None))
        self.grid_config = grid_config
        self.drop_inconsistent_utm = drop_inconsistent_utm

    def _shapes(
        self, task: AnnotationTask, label_property: str, proj: Projection, origin: tuple[int, int]
    ) -> tuple[list[tuple[BaseGeometry, int | float]], list[Problem]]:
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
            px = shapely.transform(to_pixels(ann.geometry, proj), lambda xy: xy - origin)
            shapes.append((px, value))
        return shapes, problems

    def prepare_labeled_windows(
        self, task: AnnotationTask, label_property: str
    ) -> tuple[list[LabeledWindow], list[Problem]]:
        """The task's bounding box (or its grid squares) holding labeled pixels."""
        if self.drop_inconsistent_utm and len(zones := _zones(task.geometry)) > 1:
            return [], [task.problem(f"task spans UTM zones {zones}; left out")]
        proj = _projection(task.geometry, self.window_resolution)
        c0, r0, c1, r1 = truncated_pixel_bounds(to_pixels(task.geometry, proj))
        width, height = c1 - c0, r1 - r0
        if self.grid_config is None and max(width, height) > MAX_WINDOW_SIDE:
            reason = f"task of {width} x {height} px exceeds {MAX_WINDOW_SIDE} px per side"
            return [], [task.problem(reason)]
        shapes, problems = self._shapes(task, label_property, proj, (c0, r0))
        if not shapes:
            problems.append(task.problem("no usable annotation; no window made"))
            return [], problems
        nodata = self.nodata_value
        label = rasterio.features.rasterize(
            shapes, out_shape=(height, width), fill=nodata, dtype="uint8"
        )
        cells = [(0, 0, width, height)]
        if self.grid_config is not None:
            cells = self.grid_config.cells(width, height)
            if not cells:
                side = self.grid_config.window_size_px
                reason = f"task of {width} x {height} px holds no {side} px square; no window"
                return [], [*problems, task.problem(reason)]
        windows = []
        for cell in cells:
            part = _cut(label, cell, nodata) if self.grid_config else label
            if (part == nodata).all():
                continue
            bounds = (c0 + cell[0], r0 + cell[1], c0 + cell[2], r0 + cell[3])
            origin = task.problem("window")
            windows.append(
                LabeledWindow(
                    _spec(task, proj, bounds), part, "raster", task.task_id, origin, nodata
                )
            )
        if not windows:
            problems.append(task.problem("no labeled pixel (annotations too small?); no window"))
        return windows, problems


BUILTIN_PREPARERS: tuple[type[LabeledWindowPreparer], ...] = (
    PointToPixelWindowPreparer,
    PointToRasterWindowPreparer,
    PolygonToRasterWindowPreparer,
)
