"""Read Studio annotation exports: task features plus the annotation features inside them.

A project for fine-tuning holds two GeoJSON FeatureCollections (shared/FORMATS.md §4):

- `annotation_task_features.geojson`: one Polygon or MultiPolygon per annotation task, with
  `oe_annotations_task_id`, `oe_start_time` and `oe_end_time`;
- `annotation_features.geojson`: any geometry with `oe_annotations_task_id` and `oe_labels`
  (a dict such as `{"category": 3}` with at least one non-null number).

Older exports use `es_` instead of `oe_` and a scalar `es_label`, which is read as
`{label_property: value}` (`{"label": value}` when no label property is configured). Both
forms may be mixed. A malformed feature is reported in `AnnotationSet.problems` with its file,
index and reason and left out; everything else proceeds. Only a missing or unreadable file
raises.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import shapely
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from helios.runner.core.fsutil import read_json
from helios.runner.core.geometry import parse_time

TASKS_GEOJSON = "annotation_task_features.geojson"
ANNOTATIONS_GEOJSON = "annotation_features.geojson"
PREFIXES = ("oe_", "es_")
"""Property prefixes: current Studio exports use `oe_`, older ones `es_`."""
LEGACY_LABEL_KEY = "label"
"""Key a legacy scalar `es_label` is stored under when no label property is configured."""
LabelValue = int | float | None


class AnnotationError(ValueError):
    """An annotation file that is missing or cannot be read as a FeatureCollection."""


@dataclass(frozen=True)
class Problem:
    """A feature left out (or a window not made), with where it came from and why.

    Unpacks as `source, index, reason = problem`.
    """

    source: str
    """File name, e.g. "annotation_features.geojson"."""
    index: int
    """Index of the feature in that file's `features` list."""
    reason: str

    def __str__(self) -> str:
        return f"{self.source}#{self.index}: {self.reason}"

    def __iter__(self) -> Iterator[Any]:
        return iter((self.source, self.index, self.reason))

    def to_json(self) -> dict[str, Any]:
        """`{source, index, reason}`."""
        return {"source": self.source, "index": self.index, "reason": self.reason}


@dataclass(frozen=True)
class Annotation:
    """One labeled geometry of a task (WGS84)."""

    geometry: BaseGeometry
    labels: dict[str, LabelValue]
    """Label values by property (`oe_labels` as exported; legacy `es_label` as one key)."""
    index: int
    """Index in the annotation file, for problem reports."""
    source: str = ANNOTATIONS_GEOJSON
    start_time: datetime | None = None
    end_time: datetime | None = None

    def problem(self, reason: str) -> Problem:
        """A problem report pointing at this annotation."""
        return Problem(self.source, self.index, reason)


@dataclass
class AnnotationTask:
    """A Studio task: the area and time range annotated, and its annotations."""

    task_id: str
    geometry: BaseGeometry
    """Polygon or MultiPolygon, WGS84 lon/lat."""
    start_time: datetime
    end_time: datetime
    annotations: list[Annotation] = field(default_factory=list)
    index: int = 0
    """Index in the task file, for problem reports."""
    source: str = TASKS_GEOJSON

    def problem(self, reason: str) -> Problem:
        """A problem report pointing at this task."""
        return Problem(self.source, self.index, reason)


@dataclass
class AnnotationSet:
    """The tasks of an export with their annotations, and every feature left out."""

    tasks: list[AnnotationTask]
    problems: list[Problem] = field(default_factory=list)

    @property
    def num_annotations(self) -> int:
        """Annotations over all tasks."""
        return sum(len(t.annotations) for t in self.tasks)

    def label_keys(self) -> list[str]:
        """Every label property used by some annotation, sorted."""
        return sorted({k for t in self.tasks for a in t.annotations for k in a.labels})


def _prop(props: Mapping[str, Any], name: str) -> tuple[str, Any]:
    """The `oe_<name>` property, else `es_<name>`; returns (key, value), ("", None) if absent."""
    for prefix in PREFIXES:
        key = prefix + name
        if key in props:
            return key, props[key]
    return "", None


def _geometry(feature: Mapping[str, Any]) -> BaseGeometry:
    raw = feature.get("geometry")
    if raw is None:
        raise ValueError("no geometry")
    try:
        geom = shape(raw)
    except Exception as err:  # shapely raises several types for malformed input
        raise ValueError(f"unreadable geometry: {err}") from None
    if geom.is_empty:
        raise ValueError("empty geometry")
    if not geom.is_valid:
        raise ValueError(f"invalid geometry ({shapely.is_valid_reason(geom)})")
    minx, miny, maxx, maxy = geom.bounds
    if minx < -180 or maxx > 180 or miny < -90 or maxy > 90:
        raise ValueError(f"coordinates {geom.bounds} are not WGS84 lon/lat")
    return geom


def _times(props: Mapping[str, Any], required: bool) -> tuple[datetime | None, datetime | None]:
    start_key, start = _prop(props, "start_time")
    end_key, end = _prop(props, "end_time")
    if start in (None, "") and end in (None, ""):
        if required:
            raise ValueError("no time range (oe_start_time / oe_end_time)")
        return None, None
    times = []
    for key, value, name in ((start_key, start, "start_time"), (end_key, end, "end_time")):
        if value in (None, ""):
            raise ValueError(f"bad times: {key or 'oe_' + name} is missing")
        try:
            times.append(parse_time(value))
        except ValueError as err:
            raise ValueError(f"bad times: {key}: {err}") from None
    if times[0] > times[1]:
        raise ValueError(
            f"bad times: {start_key} {times[0].isoformat()} is after {end_key} "
            f"{times[1].isoformat()}"
        )
    return times[0], times[1]


def _task_id(props: Mapping[str, Any]) -> str:
    _, value = _prop(props, "annotations_task_id")
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError("no task id (oe_annotations_task_id)")
    if not isinstance(value, str | int):
        raise ValueError(f"task id must be a string, got {value!r}")
    return str(value).strip()


def _check_value(key: str, value: Any) -> LabelValue:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"label {key!r} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"label {key!r} is not finite ({value!r})")
    return value


def _labels(props: Mapping[str, Any], label_property: str | None) -> dict[str, LabelValue]:
    if "oe_labels" in props or "es_labels" in props:
        key, raw = _prop(props, "labels")
        if not isinstance(raw, dict):
            raise ValueError(f"no label: {key} must be a mapping such as {{'category': 1}}")
        labels = {str(k): _check_value(str(k), v) for k, v in raw.items()}
    elif "es_label" in props or "oe_label" in props:
        key, raw = _prop(props, "label")
        labels = {label_property or LEGACY_LABEL_KEY: _check_value(key, raw)}
    else:
        raise ValueError("no label (oe_labels, or es_label in older exports)")
    if all(v is None for v in labels.values()):
        raise ValueError("no label: every label value is null")
    return labels


def _features(path: Path) -> list[Any]:
    if not path.is_file():
        raise AnnotationError(f"annotation file not found: {path}")
    try:
        data = read_json(path)
    except (OSError, ValueError) as err:
        raise AnnotationError(f"cannot read {path} as JSON: {err}") from None
    if not isinstance(data, dict) or data.get("type") != "FeatureCollection":
        raise AnnotationError(f"{path} is not a GeoJSON FeatureCollection")
    features = data.get("features")
    if not isinstance(features, list):
        raise AnnotationError(f"{path}: 'features' must be a list")
    return features


def _props(feature: Any) -> Mapping[str, Any]:
    if not isinstance(feature, dict) or feature.get("type") != "Feature":
        raise ValueError("not a GeoJSON Feature")
    props = feature.get("properties")
    return props if isinstance(props, dict) else {}


def _read_tasks(path: Path, problems: list[Problem]) -> tuple[dict[str, AnnotationTask], set[str]]:
    tasks: dict[str, AnnotationTask] = {}
    rejected: set[str] = set()
    for i, feature in enumerate(_features(path)):
        task_id = None
        try:
            props = _props(feature)
            task_id = _task_id(props)
            if task_id in tasks:
                raise ValueError(f"duplicate task id {task_id} (first at #{tasks[task_id].index})")
            geom = _geometry(feature)
            if geom.geom_type not in ("Polygon", "MultiPolygon"):
                raise ValueError(f"a task must be a Polygon or MultiPolygon, got {geom.geom_type}")
            start, end = _times(props, required=True)
        except ValueError as err:
            problems.append(Problem(path.name, i, str(err)))
            if task_id is not None and task_id not in tasks:
                rejected.add(task_id)
            continue
        assert start is not None and end is not None
        tasks[task_id] = AnnotationTask(task_id, geom, start, end, [], i, path.name)
    return tasks, rejected


def load_annotations(
    source: str | Path | tuple[str | Path, str | Path], label_property: str | None = None
) -> AnnotationSet:
    """Read a Studio export into tasks with their annotations.

    Args:
        source: A project folder holding `annotation_task_features.geojson` and
            `annotation_features.geojson`, or the two paths `(tasks, annotations)`.
        label_property: Key a legacy scalar `es_label` is stored under (default "label").

    Returns:
        The tasks in file order, each with its annotations in file order, and `problems`
        listing every feature left out: no task id, unknown or rejected task, no label,
        non-numeric labels, missing or invalid geometry, bad times.

    Raises:
        AnnotationError: a file is missing, is not JSON, or is not a FeatureCollection.

    """
    if isinstance(source, tuple):
        task_path, ann_path = Path(source[0]), Path(source[1])
    else:
        task_path, ann_path = Path(source) / TASKS_GEOJSON, Path(source) / ANNOTATIONS_GEOJSON
    problems: list[Problem] = []
    tasks, rejected = _read_tasks(task_path, problems)
    for i, feature in enumerate(_features(ann_path)):
        try:
            props = _props(feature)
            task_id = _task_id(props)
            if task_id in rejected:
                raise ValueError(f"its task {task_id} was left out (see the task file)")
            if task_id not in tasks:
                raise ValueError(f"unknown task {task_id}")
            labels = _labels(props, label_property)
            geom = _geometry(feature)
            start, end = _times(props, required=False)
        except ValueError as err:
            problems.append(Problem(ann_path.name, i, str(err)))
            continue
        ann = Annotation(geom, labels, i, ann_path.name, start, end)
        tasks[task_id].annotations.append(ann)
    return AnnotationSet(list(tasks.values()), problems)
