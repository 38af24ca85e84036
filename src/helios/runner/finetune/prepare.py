"""Prepare labeled windows for fine-tuning: annotations -> sampled tasks -> windows + splits.

`scratch/labeled` is a scratch folder like prediction's, with the group name as the
partition id, and its dataset is the rslearn dataset upstream's window prep writes (rslearn
trains on it as is)::

    scratch/labeled/partitions/<group>/partition.json    window names (written last)
    scratch/labeled/partitions/<group>/summary.json      counts per split / class, problems
    scratch/labeled/dataset/windows/<group>/<w>/metadata.json   options: split, source task
    .../windows/<group>/<w>/layers/<label_layer>/data.geojson   vector labels (pixel coords)
    .../windows/<group>/<w>/layers/<label_layer>/<property>/geotiff.tif   raster labels
    (after build_dataset)  .../layers/<input layer>[.n]/<band set>/geotiff.tif

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
from helios.runner.core.geometry import WindowSpec, to_pixels
from helios.runner.core.windows import (
    COMPLETED,
    METADATA_JSON,
    PARTITION_JSON,
    Window,
    dataset_root,
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


def _band_dir(label_property: str) -> str:
    from helios.runner.materialize.dataset_config import BandSet

    return BandSet((label_property,), "uint8").dirname


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
        "compress": "lzw",
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "BIGTIFF": "IF_SAFER",
    }
    with atomic_path(path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        dst.write(lw.label[None])
        dst.set_band_description(1, label_property)


def _write_vector(path: Path, window: Window, lw: LabeledWindow, label_property: str) -> None:
    """Rslearn's GeoJSON (pixel coordinates of the window's projection, projection on top)."""
    geom = None
    if lw.geometry is not None:
        geom = mapping(to_pixels(lw.geometry, window.projection))
    p = window.projection
    write_json(
        path,
        {
            "type": "FeatureCollection",
            "properties": {
                "crs": p.crs,
                "x_resolution": p.x_resolution,
                "y_resolution": p.y_resolution,
            },
            "features": [
                {"type": "Feature", "geometry": geom, "properties": {label_property: lw.label}}
            ],
        },
    )


def label_path(window: Window, info: dict[str, Any]) -> Path:
    """Where a labeled window's label lives (rslearn's label layer layout)."""
    layer = window.layer_dir(info["layer"])
    if info["kind"] == "vector":
        return layer / "data.geojson"
    return layer / _band_dir(info["property"]) / "geotiff.tif"


def _write_window(
    lw: LabeledWindow, split: str, prep: WindowPrep, label_property: str, dataset: Path, group: str
) -> tuple[Window, bool]:
    """Write one window's label layer, then its metadata.json; returns it and whether it changed."""
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
    window = Window.from_spec(spec, group, dataset)
    path = label_path(window, info)
    meta = window.path / METADATA_JSON
    old = read_json(meta) if meta.exists() else None
    same_label = old is not None and old.get("options", {}).get(LABEL_KEY) == info
    if not (same_label and path.exists()):
        if isinstance(lw.label, np.ndarray):
            _write_raster(path, window, lw, label_property)
        else:
            _write_vector(path, window, lw, label_property)
        (window.layer_dir(prep.label_layer) / COMPLETED).touch()
    new = window.to_metadata()
    window.save()
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
    prep.data_splitter.reset()  # a second run in one process draws the same splits
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
            window, new = _write_window(lw, split, prep, label_property, dataset_root(root), group)
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
    with rasterio.open(label_path(window, info)) as src:
        return src.read(1), info.get("nodata")
