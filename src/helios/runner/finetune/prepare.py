"""Prepare labeled windows for fine-tuning: annotations -> sampled tasks -> windows + splits.

The labeled windows form a partition-like folder under `scratch/labeled`, so the prediction
runner's machinery works on them unchanged, with `scratch/labeled` as its scratch and the
group name as the partition id::

    scratch/labeled/partitions/<group>/partition.json           window names (written last)
    scratch/labeled/partitions/<group>/summary.json             counts per split / class, problems
    scratch/labeled/partitions/<group>/windows/<w>/window.json  as for prediction windows
    scratch/labeled/partitions/<group>/windows/<w>/labels/<label_layer>.tif | .geojson
    (after build_dataset)                      .../windows/<w>/layers/<layer>.tif + .json

    build_dataset(dataset_config, labeled_root(scratch), [group])  materialize the imagery
    list_windows(labeled_root(scratch), group)                  the windows, in order
    load_window_inputs(window, dataset_config)                  model inputs
    load_labeled_window(window)                                 its label

Window names hash projection, pixel bounds and time range, so re-runs create nothing twice
and keep every window's split (splitters hash the window, not the run). Every file is written
atomically and unchanged files are not rewritten.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from shapely.geometry import mapping

from helios.runner.core.fsutil import atomic_path, read_json, text_hash, write_json
from helios.runner.core.geometry import WindowSpec
from helios.runner.core.windows import (
    PARTITION_JSON,
    WINDOW_JSON,
    Window,
    list_windows,
    partition_dir,
)
from helios.runner.finetune.annotations import AnnotationSet, Problem, load_annotations
from helios.runner.finetune.config import LABEL_KEY, WindowPrep, WindowPrepError
from helios.runner.finetune.preparers import LabeledWindow
from helios.runner.finetune.splitters import SPLITS

logger = logging.getLogger(__name__)
LABELED_DIR = "labeled"
SUMMARY_JSON = "summary.json"


def labeled_root(scratch: Path) -> Path:
    """`scratch/labeled`: the scratch to give build_dataset and list_windows."""
    return Path(scratch) / LABELED_DIR


@dataclass
class PreparedWindows:
    """What `prepare_labeled_windows` made."""

    root: Path
    """`scratch/labeled`; pass it as `scratch` to build_dataset / list_windows."""
    group_name: str
    """The partition id of the labeled windows."""
    windows: list[Window]
    created: int
    """Windows written in this run, new or changed (the others existed unchanged)."""
    by_split: dict[str, int]
    """Windows per split."""
    by_class: dict[str, int]
    """Windows per class (vector labels) or labeled pixels per class (raster labels)."""
    problems: list[Problem]
    """Features left out and windows not made, with why (also in summary.json)."""
    summary_path: Path

    @property
    def partition_ids(self) -> list[str]:
        """`[group_name]`, for build_dataset."""
        return [self.group_name]


def resolve_label_property(prep: WindowPrep, annotations: AnnotationSet) -> str:
    """The configured label property, else the only one the annotations use."""
    if prep.label_property:
        return prep.label_property
    keys = annotations.label_keys()
    if len(keys) == 1:
        return keys[0]
    raise WindowPrepError(
        [
            f"window_prep.label_property: missing, and the annotations use {len(keys)} label "
            f"properties {keys}; name the one holding the class"
        ]
    )


def _label_hash(lw: LabeledWindow) -> str:
    if isinstance(lw.label, np.ndarray):
        digest = hashlib.sha1(np.ascontiguousarray(lw.label).tobytes()).hexdigest()
        return text_hash("raster", lw.label.dtype.name, lw.label.shape, digest, lw.nodata)[:16]
    return text_hash("vector", lw.label, lw.geometry.wkt if lw.geometry else None)[:16]


def _write_raster(path: Path, window: Window, lw: LabeledWindow, label_property: str) -> None:
    assert isinstance(lw.label, np.ndarray)
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": window.width,
        "height": window.height,
        "count": 1,
        "dtype": lw.label.dtype.name,
        "crs": window.crs,
        "transform": window.transform,
        "nodata": lw.nodata,
        "compress": "deflate",
    }
    with atomic_path(path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        dst.write(lw.label[None])
        dst.set_band_description(1, label_property)
        dst.update_tags(HELIOS_KIND="label", HELIOS_WINDOW=window.name)


def _write_window(
    lw: LabeledWindow, split: str, prep: WindowPrep, label_property: str, wdir: Path, group: str
) -> tuple[Window, bool]:
    """Write one window's label, then its window.json; returns it and whether it changed."""
    assert prep.label_layer is not None
    info: dict[str, Any] = {
        "layer": prep.label_layer,
        "property": label_property,
        "kind": lw.kind,
        "hash": _label_hash(lw),
    }
    if lw.kind == "vector":
        info["value"] = lw.label
    else:
        info["nodata"] = lw.nodata
    props = {**lw.spec.properties, prep.split_property: split, LABEL_KEY: info}
    spec = WindowSpec(
        lw.spec.projection, lw.spec.pixel_bounds, lw.spec.start_time, lw.spec.end_time, props
    )
    window = Window.from_spec(spec, group, wdir / spec.name)
    labels_dir = window.path / "labels"
    suffix = ".geojson" if lw.kind == "vector" else ".tif"
    label_path = labels_dir / f"{prep.label_layer}{suffix}"
    wjson = window.path / WINDOW_JSON
    old = read_json(wjson) if wjson.exists() else None
    same_label = old is not None and old.get("properties", {}).get(LABEL_KEY) == info
    if not (same_label and label_path.exists()):
        if isinstance(lw.label, np.ndarray):
            _write_raster(label_path, window, lw, label_property)
        else:
            geom = mapping(lw.geometry) if lw.geometry is not None else None
            feature = {
                "type": "Feature",
                "geometry": geom,
                "properties": {label_property: lw.label, "window": window.name},
            }
            write_json(label_path, {"type": "FeatureCollection", "features": [feature]})
    new = window.to_json()
    write_json(wjson, new)
    return window, old != new


def _class_counts(lw: LabeledWindow) -> Counter[str]:
    if isinstance(lw.label, np.ndarray):
        values, counts = np.unique(lw.label, return_counts=True)
        return Counter(
            {
                str(v.item()): int(c)
                for v, c in zip(values, counts, strict=True)
                if lw.nodata is None or v != lw.nodata
            }
        )
    return Counter({str(lw.label): 1})


def write_labeled_windows(
    prep: WindowPrep, annotations: AnnotationSet, scratch: Path
) -> PreparedWindows:
    """Sample tasks, prepare and split their windows, and write them under `scratch/labeled`.

    Raises:
        WindowPrepError: `prep` lacks a preparer, splitter or label layer, or the label
            property is ambiguous.

    """
    missing = prep.check()
    if missing:
        raise WindowPrepError(missing)
    assert prep.labeled_window_preparer is not None and prep.data_splitter is not None
    label_property = resolve_label_property(prep, annotations)
    root = labeled_root(scratch)
    group = prep.group_name
    pdir = partition_dir(root, group)
    tasks = prep.sampler.sample(annotations.tasks)
    problems = list(annotations.problems)
    windows: list[Window] = []
    origins: dict[str, Problem] = {}
    by_split: Counter[str] = Counter({s: 0 for s in SPLITS})
    by_class: Counter[str] = Counter()
    by_split_class: dict[str, Counter[str]] = defaultdict(Counter)
    created = 0
    for task in tasks:
        made, more = prep.labeled_window_preparer.prepare_labeled_windows(task, label_property)
        problems.extend(more)
        for lw in made:
            if lw.name in origins:
                first = origins[lw.name]
                reason = (
                    f"same window as {first.source}#{first.index} (same pixels and time); kept once"
                )
                problems.append(replace(lw.origin, reason=reason))
                continue
            origins[lw.name] = lw.origin
            split = prep.data_splitter.choose_split(lw)
            window, new = _write_window(lw, split, prep, label_property, pdir / "windows", group)
            windows.append(window)
            created += new
            by_split[split] += 1
            counts = _class_counts(lw)
            by_class.update(counts)
            by_split_class[split].update(counts)
    kind = prep.labeled_window_preparer.kind
    summary = {
        "group_name": group,
        "label_layer": prep.label_layer,
        "label_property": label_property,
        "label_kind": kind,
        "class_counts_unit": "windows" if kind == "vector" else "pixels",
        "tasks": len(annotations.tasks),
        "sampled_tasks": len(tasks),
        "annotations": annotations.num_annotations,
        "windows": len(windows),
        "by_split": dict(by_split),
        "by_class": dict(sorted(by_class.items())),
        "by_split_class": {s: dict(sorted(by_split_class[s].items())) for s in SPLITS},
        "problems": [p.to_json() for p in problems],
    }
    summary_path = pdir / SUMMARY_JSON
    write_json(summary_path, summary)
    write_json(
        pdir / PARTITION_JSON,
        {"id": group, "kind": "labeled", "windows": [w.name for w in windows]},
    )
    logger.info(
        "%d labeled windows (%d new) from %d tasks; %d problems",
        len(windows),
        created,
        len(tasks),
        len(problems),
    )
    return PreparedWindows(
        root, group, windows, created, dict(by_split), dict(by_class), problems, summary_path
    )


def prepare_labeled_windows(
    project_dir: Path, window_prep: WindowPrep | None, scratch: Path
) -> PreparedWindows:
    """Read a project's Studio export and write its labeled windows (see module docstring).

    `project_dir` holds the export (annotation_task_features.geojson and
    annotation_features.geojson); `window_prep` is its parsed olmoearth_run.yaml section.

    Idempotent: re-running writes nothing new for unchanged annotations and config.

    Raises:
        WindowPrepError: the project has no usable `window_prep`.
        AnnotationError: an annotation file is missing or unreadable.

    """
    if window_prep is None:
        raise WindowPrepError(["olmoearth_run.yaml: window_prep: missing"])
    prep = window_prep
    missing = prep.check()
    if missing:
        raise WindowPrepError(missing)
    annotations = load_annotations(Path(project_dir), prep.label_property)
    return write_labeled_windows(prep, annotations, Path(scratch))


def list_labeled_windows(
    scratch: Path,
    group_name: str = "default",
    split: str | None = None,
    split_property: str = "split",
) -> list[Window]:
    """The labeled windows of a group (optionally of one split), in preparation order."""
    windows = list_windows(labeled_root(scratch), group_name)
    if split is None:
        return windows
    return [w for w in windows if w.properties.get(split_property) == split]


def load_labeled_window(window: Window) -> tuple[int | float | np.ndarray, int | float | None]:
    """A labeled window's label and nodata.

    Returns:
        For vector labels the class (or value) and None; for raster labels the [H, W] array
        (uint8 unless the preparer chose another dtype) and its nodata value.

    """
    info = window.properties.get(LABEL_KEY)
    if not isinstance(info, dict):
        raise ValueError(f"window {window.name} has no label (not a labeled window)")
    if info["kind"] == "vector":
        value: int | float = info["value"]
        return value, None
    path = window.path / "labels" / f"{info['layer']}.tif"
    with rasterio.open(path) as src:
        return src.read(1), info.get("nodata")
