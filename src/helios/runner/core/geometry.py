"""Geometry for the runner: prediction requests, projections, UTM zones and window grids.

Requests are GeoJSON features in WGS84 (lon, lat). Windows live on a pixel grid of a
projection: pixel column `x / x_resolution`, row `y / y_resolution` (`y_resolution` is
negative, so rows grow southwards). Window bounds are whole pixels on that grid, which keeps
every window of a UTM zone aligned with every other and makes mosaics seam-free.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from pyproj import CRS, Transformer
from shapely.geometry import box, mapping, shape
from shapely.geometry.base import BaseGeometry

from helios.runner.core.fsutil import read_json, text_hash

WGS84 = "EPSG:4326"
MAX_WINDOW_SIDE = 8192
"""Windows larger than this (pixels per side) are refused: use a grid partitioner."""
DEFAULT_RESOLUTION = 10.0
"""Metres per pixel of windows when a partitioner names no projection."""
TIME_PROPERTIES = (("oe_start_time", "oe_end_time"), ("es_start_time", "es_end_time"))
"""Request time properties: current Studio exports use `oe_`, older ones `es_`."""


class RequestError(ValueError):
    """A prediction request feature that cannot be used, with the reason."""


class Projection:
    """A CRS plus pixel size; upstream configs name it `rslearn.utils.geometry.Projection`."""

    def __init__(self, crs: str, x_resolution: float = 10.0, y_resolution: float = -10.0) -> None:
        """Create a projection.

        Args:
            crs: Any CRS pyproj understands, e.g. "EPSG:32618".
            x_resolution: CRS units per pixel along x (positive).
            y_resolution: CRS units per pixel along y (negative: rows grow southwards).

        """
        if x_resolution <= 0 or y_resolution == 0:
            raise ValueError(
                f"bad resolution ({x_resolution}, {y_resolution}): x must be > 0, y non-zero"
            )
        self.crs = crs_string(crs)
        self.x_resolution = float(x_resolution)
        self.y_resolution = float(y_resolution)

    def __repr__(self) -> str:
        return f"Projection({self.crs!r}, {self.x_resolution}, {self.y_resolution})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Projection) and repr(self) == repr(other)

    def __hash__(self) -> int:
        return hash(repr(self))


def crs_string(crs: str | CRS) -> str:
    """Normalize a CRS to "EPSG:<code>" where it has one, else to WKT."""
    parsed = CRS.from_user_input(crs)
    epsg = parsed.to_epsg()
    return f"EPSG:{epsg}" if epsg is not None else parsed.to_wkt()


UPS_NORTH_LATITUDE = 84 - 1e-4
"""North of this latitude windows use UPS North (EPSG:5041), as rslearn's `get_utm_ups_crs`."""
UPS_SOUTH_LATITUDE = -80 + 1e-4
"""South of this latitude windows use UPS South (EPSG:5042)."""


def utm_crs(lon: float, lat: float) -> str:
    """The UTM zone CRS ("EPSG:326zz" north, "EPSG:327zz" south) or UPS CRS of a point.

    Rslearn's `get_utm_ups_crs`: UPS beyond 84 - 1e-4 N / 80 - 1e-4 S, else the first zone
    pyproj's `query_utm_crs_info` lists, i.e. plain 6-degree zones (no Norway or Svalbard
    exceptions) where a point on a zone boundary (36 E, the equator) takes the lower EPSG
    code: the western zone, the northern hemisphere. Computed, not queried (a query takes
    ~0.1 s); tests check it against pyproj.
    """
    if lat > UPS_NORTH_LATITUDE:
        return "EPSG:5041"
    if lat < UPS_SOUTH_LATITUDE:
        return "EPSG:5042"
    zone = min(60, max(1, math.ceil((lon + 180.0) / 6.0)))
    return f"EPSG:{(32600 if lat >= 0 else 32700) + zone}"


@lru_cache(maxsize=256)
def _transformer(src: str, dst: str) -> Transformer:
    return Transformer.from_crs(src, dst, always_xy=True)


def reproject_geometry(geom: BaseGeometry, src: str, dst: str) -> BaseGeometry:
    """Reproject a shapely geometry between CRSs (x, y order; lon, lat for WGS84)."""
    if src == dst:
        return geom
    t = _transformer(src, dst)

    def fn(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return t.transform(x, y)

    return shapely.transform(geom, lambda xy: np.column_stack(fn(xy[:, 0], xy[:, 1])))


def to_pixels(geom: BaseGeometry, projection: Projection) -> BaseGeometry:
    """A WGS84 geometry in pixel units of `projection`."""
    projected = reproject_geometry(geom, WGS84, projection.crs)
    sx, sy = 1.0 / projection.x_resolution, 1.0 / projection.y_resolution
    return shapely.transform(projected, lambda xy: xy * np.array([sx, sy]))


def pixels_to_wgs84(geom: BaseGeometry, projection: Projection) -> BaseGeometry:
    """Inverse of `to_pixels`."""
    scale = np.array([projection.x_resolution, projection.y_resolution])
    projected = shapely.transform(geom, lambda xy: xy * scale)
    return reproject_geometry(projected, projection.crs, WGS84)


def window_projection(
    geom: BaseGeometry, output_projection: Projection | None, use_utm: bool
) -> Projection:
    """The projection a window over `geom` (WGS84) lives in.

    With no `output_projection`, or with `use_utm`, the CRS is the UTM zone of the geometry's
    centroid (at the projection's resolution, else `DEFAULT_RESOLUTION`).
    """
    if output_projection is not None and not use_utm:
        return output_projection
    c = geom.centroid
    crs = utm_crs(c.x, c.y)
    if output_projection is None:
        return Projection(crs, DEFAULT_RESOLUTION, -DEFAULT_RESOLUTION)
    return Projection(crs, output_projection.x_resolution, output_projection.y_resolution)


def parse_time(value: Any) -> datetime:
    """Parse an ISO-8601 time ("2024-02-24 05:57:00+00:00", "...Z", "2024-02-24"); naive is UTC."""
    if isinstance(value, datetime):
        t = value
    elif isinstance(value, str) and value.strip():
        t = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    else:
        raise ValueError(f"expected an ISO-8601 time string, got {value!r}")
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)


@dataclass(frozen=True)
class RequestFeature:
    """One prediction request: a WGS84 geometry and the time range to predict for."""

    geometry: BaseGeometry
    start_time: datetime
    end_time: datetime
    properties: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    """The feature's GeoJSON properties, passed through to windows and results."""
    source: str = field(default="", compare=False)
    """Where the request came from ("prediction/a.geojson#0"), for error messages."""
    footprint: BaseGeometry | None = field(default=None, compare=False, repr=False)
    """The part of the request this feature stands for, where partition cells replace the
    geometry: windows made from the feature must intersect it (None: the geometry)."""

    @classmethod
    def from_geojson(cls, feature: Any, source: str = "") -> RequestFeature:
        """Parse and check a GeoJSON feature; raises `RequestError` saying what is wrong."""
        where = f"{source}: " if source else ""
        if not isinstance(feature, dict) or feature.get("type") != "Feature":
            raise RequestError(f"{where}not a GeoJSON Feature")
        props = feature.get("properties") or {}
        if feature.get("geometry") is None:
            raise RequestError(f"{where}the feature has no geometry")
        try:
            geom = shape(feature["geometry"])
        except Exception as err:  # shapely raises several types for malformed input
            raise RequestError(f"{where}unreadable geometry: {err}") from None
        if geom.is_empty:
            raise RequestError(f"{where}the geometry is empty")
        if not geom.is_valid:
            reason = shapely.is_valid_reason(geom)
            raise RequestError(f"{where}invalid geometry ({reason}); fix it, e.g. with buffer(0)")
        minx, miny, maxx, maxy = geom.bounds
        if minx < -180 or maxx > 180 or miny < -90 or maxy > 90:
            raise RequestError(
                f"{where}coordinates {geom.bounds} are outside lon/lat range; request "
                "geometries must be WGS84 longitude/latitude (GeoJSON), not projected"
            )
        start, end = cls._times(props, where)
        return cls(geom, start, end, dict(props), source)

    @staticmethod
    def _times(props: dict[str, Any], where: str) -> tuple[datetime, datetime]:
        for start_key, end_key in TIME_PROPERTIES:
            if start_key in props or end_key in props:
                break
        else:
            raise RequestError(
                f"{where}missing time range: set properties 'oe_start_time' and "
                "'oe_end_time' (ISO-8601, e.g. '2024-01-01T00:00:00+00:00')"
            )
        times = []
        for key in (start_key, end_key):
            if props.get(key) in (None, ""):
                raise RequestError(f"{where}property {key!r} is missing or empty")
            try:
                times.append(parse_time(props[key]))
            except ValueError as err:
                raise RequestError(f"{where}property {key!r}: {err}") from None
        if times[0] > times[1]:  # equal is an instant (Studio tasks often are): allowed
            raise RequestError(
                f"{where}{start_key} ({times[0].isoformat()}) is after "
                f"{end_key} ({times[1].isoformat()})"
            )
        return times[0], times[1]

    def to_geojson(self) -> dict[str, Any]:
        """The feature as GeoJSON, times written back in `oe_` properties."""
        props = dict(self.properties)
        props["oe_start_time"] = self.start_time.isoformat()
        props["oe_end_time"] = self.end_time.isoformat()
        return {"type": "Feature", "geometry": mapping(self.geometry), "properties": props}

    @property
    def area_of_interest(self) -> BaseGeometry:
        """What windows made from this feature must intersect: `footprint`, else `geometry`."""
        return self.footprint if self.footprint is not None else self.geometry

    def with_geometry(
        self, geom: BaseGeometry, footprint: BaseGeometry | None = None
    ) -> RequestFeature:
        """The same request over another (WGS84) geometry, e.g. a partition cell.

        Its windows must intersect `footprint`, by default this feature's area of interest.
        """
        keep = footprint if footprint is not None else self.area_of_interest
        return RequestFeature(
            geom, self.start_time, self.end_time, self.properties, self.source, keep
        )

    def key(self) -> str:
        """A stable hash of geometry and time range."""
        wkb = shapely.to_wkb(shapely.normalize(self.geometry), hex=True)
        return text_hash(wkb, self.start_time.isoformat(), self.end_time.isoformat())


def load_requests(paths: Iterable[Path]) -> tuple[list[RequestFeature], list[str]]:
    """Read request FeatureCollections; returns the features and every problem found."""
    features: list[RequestFeature] = []
    problems: list[str] = []
    for path in paths:
        try:
            data = read_json(path)
        except (OSError, ValueError) as err:
            problems.append(f"{path.name}: cannot read GeoJSON: {err}")
            continue
        if isinstance(data, dict) and data.get("type") == "Feature":
            items = [data]
        elif isinstance(data, dict) and data.get("type") == "FeatureCollection":
            items = list(data.get("features") or [])
        else:
            problems.append(f"{path.name}: not a GeoJSON FeatureCollection")
            continue
        if not items:
            problems.append(f"{path.name}: the FeatureCollection has no features")
        for i, item in enumerate(items):
            try:
                features.append(RequestFeature.from_geojson(item, f"{path.name}#{i}"))
            except RequestError as err:
                problems.append(str(err))
    return features, problems


@dataclass(frozen=True)
class WindowSpec:
    """A window to create: whole pixels of a projection, a time range, and its request."""

    projection: Projection
    pixel_bounds: tuple[int, int, int, int]
    """(col0, row0, col1, row1) on the projection's pixel grid; col1/row1 exclusive."""
    start_time: datetime
    end_time: datetime
    properties: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    """Properties of the request the window came from."""

    def __post_init__(self) -> None:
        c0, r0, c1, r1 = self.pixel_bounds
        if c1 <= c0 or r1 <= r0:
            raise ValueError(f"empty window pixel bounds {self.pixel_bounds}")

    @cached_property
    def name(self) -> str:
        """Stable name: a hash of projection, pixel bounds and time range."""
        p = self.projection
        return text_hash(
            p.crs,
            p.x_resolution,
            p.y_resolution,
            list(self.pixel_bounds),
            self.start_time.isoformat(),
            self.end_time.isoformat(),
        )[:16]

    @property
    def width(self) -> int:
        """Width in pixels."""
        return self.pixel_bounds[2] - self.pixel_bounds[0]

    @property
    def height(self) -> int:
        """Height in pixels."""
        return self.pixel_bounds[3] - self.pixel_bounds[1]

    def crs_bounds(self) -> tuple[float, float, float, float]:
        """(minx, miny, maxx, maxy) in CRS units."""
        return pixel_to_crs_bounds(self.pixel_bounds, self.projection)


def pixel_to_crs_bounds(
    pixel_bounds: tuple[int, int, int, int], projection: Projection
) -> tuple[float, float, float, float]:
    """Convert (col0, row0, col1, row1) to (minx, miny, maxx, maxy) in CRS units."""
    c0, r0, c1, r1 = pixel_bounds
    xs = (c0 * projection.x_resolution, c1 * projection.x_resolution)
    ys = (r0 * projection.y_resolution, r1 * projection.y_resolution)
    return min(xs), min(ys), max(xs), max(ys)


def outer_pixel_bounds(geom: BaseGeometry) -> tuple[int, int, int, int]:
    """Whole-pixel bounds enclosing a geometry in pixel units (at least one pixel)."""
    minx, miny, maxx, maxy = geom.bounds
    c0, r0 = math.floor(minx + 1e-9), math.floor(miny + 1e-9)
    c1, r1 = math.ceil(maxx - 1e-9), math.ceil(maxy - 1e-9)
    return c0, r0, max(c1, c0 + 1), max(r1, r0 + 1)


def _snapped(v: float, rounding: Any) -> int:
    """`rounding(v)`, except that reprojection noise (44069.9999999) snaps to the integer."""
    r = round(v)
    return int(r) if abs(v - r) < 1e-6 else int(rounding(v))


def truncated_pixel_bounds(geom: BaseGeometry) -> tuple[int, int, int, int]:
    """`int()` of a pixel-unit geometry's bounds (toward zero, as upstream), at least 1 px.

    Upstream's windows (fixed, chunk, reprojection, clipped cells, labeled windows) take the
    truncated float bounds of their shape; for negative rows (north of the UTM equator) that
    moves both edges south, so a window can miss a partial row. Helios snaps values within
    1e-6 px of an integer first, and gives a degenerate extent (a point) the pixel holding it.
    """
    x0, y0, x1, y1 = geom.bounds
    c0, r0, c1, r1 = (_snapped(v, int) for v in (x0, y0, x1, y1))
    if c1 <= c0:
        c0 = _snapped(x0, math.floor)
        c1 = c0 + 1
    if r1 <= r0:
        r0 = _snapped(y0, math.floor)
        r1 = r0 + 1
    return c0, r0, c1, r1


def _object_array(shapes: Sequence[BaseGeometry] | np.ndarray) -> np.ndarray:
    arr = np.empty(len(shapes), dtype=object)
    arr[:] = list(shapes)
    return arr


def reproject_shapes(shapes: Sequence[BaseGeometry] | np.ndarray, src: str, dst: str) -> np.ndarray:
    """`reproject_geometry` over many geometries at once (one pyproj call)."""
    arr = _object_array(shapes)
    if src == dst or len(arr) == 0:
        return arr
    t = _transformer(src, dst)
    out = shapely.transform(arr, lambda xy: np.column_stack(t.transform(xy[:, 0], xy[:, 1])))
    return np.asarray(out, dtype=object)


def pixel_shapes_to_wgs84(
    shapes: Sequence[BaseGeometry] | np.ndarray, projection: Projection
) -> np.ndarray:
    """`pixels_to_wgs84` over many geometries at once (vertices reprojected, as upstream)."""
    scale = np.array([projection.x_resolution, projection.y_resolution])
    arr = _object_array(shapes)
    if len(arr) == 0:
        return arr
    return reproject_shapes(shapely.transform(arr, lambda xy: xy * scale), projection.crs, WGS84)


def intersects_in_wgs84(
    shapes: Sequence[BaseGeometry] | np.ndarray, projection: Projection, area: BaseGeometry
) -> np.ndarray:
    """Which pixel-unit `shapes` intersect the WGS84 geometry `area` (touching counts).

    Upstream's window filter: each shape's vertices are reprojected to WGS84 and the shape
    is tested against `area` there.
    """
    if len(shapes) == 0:
        return np.zeros(0, dtype=bool)
    shapely.prepare(area)
    return np.asarray(shapely.intersects(pixel_shapes_to_wgs84(shapes, projection), area))


def pixel_box(bounds: tuple[int, int, int, int]) -> BaseGeometry:
    """A shapely box over pixel bounds."""
    return box(*bounds)
