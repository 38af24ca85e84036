"""Seeded generator of Studio annotation exports (shared/FORMATS.md §4), both forms.

`point_export` and `polygon_export` build the two FeatureCollections a project holds,
`annotation_task_features.geojson` and `annotation_features.geojson`, in the current `oe_`
form (`oe_labels: {"category": k}`) or the older `es_` form (scalar `es_label`), with the
property layout, UUID task ids and time strings of real exports. Geometries are made in the
UTM zone of `centre` so tests can compare with exact projected coordinates.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pyproj import Transformer

from helios.runner.core.geometry import utm_crs

TIME = "2024-02-24 05:57:00+00:00"
"""Real exports often carry start == end (a single annotation time)."""
START, END = "2024-01-01 00:00:00+00:00", "2024-03-01 00:00:00+00:00"
LONG_BEACH = (-118.16, 33.73)
"""Centre of the upstream sample project's annotations (UTM zone 11N)."""


@dataclass
class Export:
    """The two FeatureCollections of a Studio export."""

    tasks: dict[str, Any]
    annotations: dict[str, Any]

    def write(self, root: Path) -> Path:
        """Write both files into `root` (a project folder) and return it."""
        root.mkdir(parents=True, exist_ok=True)
        (root / "annotation_task_features.geojson").write_text(json.dumps(self.tasks, indent=1))
        (root / "annotation_features.geojson").write_text(json.dumps(self.annotations, indent=1))
        return root


def collection(features: list[dict[str, Any]]) -> dict[str, Any]:
    """A FeatureCollection as Studio writes it (with null bbox)."""
    return {"bbox": None, "features": features, "type": "FeatureCollection"}


def task_id(rng: np.random.Generator) -> str:
    """A seeded UUID4 string."""
    return str(uuid.UUID(bytes=rng.bytes(16), version=4))


def task_feature(
    tid: str, ring: list, start: str = START, end: str = END, prefix: str = "oe_"
) -> dict[str, Any]:
    """A task feature over a Polygon ring (lon/lat)."""
    return {
        "bbox": None,
        "geometry": {"bbox": None, "coordinates": [ring], "type": "Polygon"},
        "id": None,
        "properties": {
            f"{prefix}annotations_task_id": tid,
            f"{prefix}start_time": start,
            f"{prefix}end_time": end,
        },
        "type": "Feature",
    }


def annotation_feature(
    tid: str, geometry: dict[str, Any], label: int | float, prefix: str = "oe_"
) -> dict[str, Any]:
    """An annotation feature: `oe_labels: {"category": label}`, or `es_label: label`."""
    props: dict[str, Any] = {
        f"{prefix}annotations_task_id": tid,
        f"{prefix}start_time": TIME,
        f"{prefix}end_time": TIME,
    }
    if prefix == "oe_":
        props["oe_labels"] = {"category": label}
    else:
        props["es_label"] = label
    return {"bbox": None, "geometry": geometry, "id": None, "properties": props, "type": "Feature"}


class _Utm:
    def __init__(self, centre: tuple[float, float]) -> None:
        self.crs = utm_crs(*centre)
        self.fwd = Transformer.from_crs("EPSG:4326", self.crs, always_xy=True)
        self.inv = Transformer.from_crs(self.crs, "EPSG:4326", always_xy=True)
        self.x0, self.y0 = self.fwd.transform(*centre)

    def lonlat(self, dx: float, dy: float) -> list[float]:
        lon, lat = self.inv.transform(self.x0 + dx, self.y0 + dy)
        return [float(lon), float(lat)]

    def ring(self, x0: float, y0: float, x1: float, y1: float) -> list:
        corners = [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]
        return [self.lonlat(x, y) for x, y in corners]


def point_export(
    seed: int = 0,
    tasks: int = 3,
    points_per_task: int = 4,
    centre: tuple[float, float] = LONG_BEACH,
    extent_m: float = 2000.0,
    num_classes: int = 4,
    prefix: str = "oe_",
) -> Export:
    """Square tasks side by side east of `centre`, each with random labeled points inside."""
    rng = np.random.default_rng(seed)
    utm = _Utm(centre)
    task_feats, ann_feats = [], []
    for t in range(tasks):
        tid = task_id(rng)
        x0 = t * extent_m
        task_feats.append(
            task_feature(tid, utm.ring(x0, 0, x0 + extent_m, extent_m), prefix=prefix)
        )
        for _ in range(points_per_task):
            dx, dy = rng.uniform(5, extent_m - 5, size=2)
            geom = {"bbox": None, "coordinates": utm.lonlat(x0 + dx, dy), "type": "Point"}
            label = int(rng.integers(1, num_classes + 1))
            ann_feats.append(annotation_feature(tid, geom, label, prefix))
    return Export(collection(task_feats), collection(ann_feats))


def polygon_export(
    seed: int = 0,
    tasks: int = 2,
    polygons_per_task: int = 3,
    centre: tuple[float, float] = LONG_BEACH,
    task_m: float = 640.0,
    num_classes: int = 3,
    prefix: str = "oe_",
) -> Export:
    """Square tasks with random (possibly overlapping) labeled triangles and rectangles."""
    rng = np.random.default_rng(seed)
    utm = _Utm(centre)
    task_feats, ann_feats = [], []
    for t in range(tasks):
        tid = task_id(rng)
        x0 = t * (task_m + 500.0)
        task_feats.append(task_feature(tid, utm.ring(x0, 0, x0 + task_m, task_m), prefix=prefix))
        for k in range(polygons_per_task):
            label = int(rng.integers(0, num_classes))
            if k % 2 == 0:
                ax, ay = rng.uniform(0, task_m * 0.6, size=2)
                w, h = rng.uniform(task_m * 0.15, task_m * 0.4, size=2)
                ring = utm.ring(x0 + ax, ay, x0 + ax + w, ay + h)
            else:
                pts = rng.uniform(0, task_m, size=(3, 2))
                ring = [utm.lonlat(x0 + px, py) for px, py in pts]
                ring.append(ring[0])
            geom = {"bbox": None, "coordinates": [ring], "type": "Polygon"}
            ann_feats.append(annotation_feature(tid, geom, label, prefix))
    return Export(collection(task_feats), collection(ann_feats))
