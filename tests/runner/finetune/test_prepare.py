from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import rasterio

from helios.runner import ProjectError, build_dataset, load_project, load_window_inputs
from helios.runner.finetune import (
    ChooseNSampler,
    PointToPixelWindowPreparer,
    PolygonToRasterWindowPreparer,
    RandomDataSplitter,
    SpatialDataSplitter,
    WindowPrepError,
    list_labeled_windows,
    load_labeled_window,
    prepare_labeled_windows,
)
from tests.runner.data.annotations import annotation_feature, point_export, polygon_export
from tests.runner.data.project import default_run_config, make_project, to_lonlat

TOOLS = "olmoearth_run.runner.tools"
SHORT = "olmoearth_run.tools"
INSIDE_IMAGERY = to_lonlat(440300.0, 4173300.0)
"""Inside the generated project's Sentinel-2 scenes (EPSG:32618)."""


def window_prep(preparer, splitter, **extra):
    return {
        "sampler": {"class_path": f"{TOOLS}.samplers.noop_sampler.NoopSampler"},
        "labeled_window_preparer": preparer,
        "data_splitter": splitter,
        "label_layer": "label",
        "label_property": "category",
        **extra,
    }


PREPARERS = "labeled_window_preparers"
PIXEL = {
    "class_path": f"{TOOLS}.{PREPARERS}.point_to_pixel_window_preparer.PointToPixelWindowPreparer"
}
POLYGON = {
    "class_path": (
        f"{SHORT}.{PREPARERS}.polygon_to_raster_window_preparer.PolygonToRasterWindowPreparer"
    ),
    "init_args": {"window_resolution": 10.0},
}
RANDOM = {
    "class_path": f"{SHORT}.data_splitters.random_data_splitter.RandomDataSplitter",
    "init_args": {"train_prop": 0.6, "val_prop": 0.2, "test_prop": 0.2, "seed": 3},
}
SPATIAL = {
    "class_path": f"{TOOLS}.data_splitters.spatial_data_splitter.SpatialDataSplitter",
    "init_args": {"train_prop": 0.7, "val_prop": 0.15, "test_prop": 0.15, "grid_size": 50},
}


def project_with(tmp_path, prep, export, name="project"):
    config = default_run_config()
    config["window_prep"] = prep
    root = make_project(tmp_path / name, run_config=config)
    export.write(root)
    return load_project(root, require_window_prep=True)


def files(root):
    return {p: p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file()}


def test_upstream_window_prep_resolves(tmp_path):
    export = point_export(seed=0, tasks=1, points_per_task=1, centre=INSIDE_IMAGERY)
    p = project_with(tmp_path, window_prep(PIXEL, RANDOM, group_name="pts"), export)
    prep = p.window_prep
    assert isinstance(prep.labeled_window_preparer, PointToPixelWindowPreparer)
    assert isinstance(prep.data_splitter, RandomDataSplitter) and prep.data_splitter.seed == 3
    assert prep.group_name == "pts" and prep.split_property == "split"
    short = window_prep({"class_path": "ChooseNSampler"}, SPATIAL)
    short["sampler"] = {
        "class_path": f"{SHORT}.samplers.choose_n_sampler.ChooseNSampler",
        "init_args": {"n": 2},
    }
    short["labeled_window_preparer"] = POLYGON
    p = project_with(tmp_path, short, export, "other")
    assert isinstance(p.window_prep.sampler, ChooseNSampler) and p.window_prep.sampler.n == 2
    assert isinstance(p.window_prep.labeled_window_preparer, PolygonToRasterWindowPreparer)
    assert isinstance(p.window_prep.data_splitter, SpatialDataSplitter)


def test_window_prep_problems_are_listed(tmp_path):
    bad_split = {**RANDOM, "init_args": {"train_prop": 0.8, "val_prop": 0.1, "test_prop": 0.2}}
    prep = window_prep(
        {"class_path": f"{TOOLS}.labeled_window_preparers.magic.MagicPreparer"}, bad_split
    )
    prep["group_name"] = "../escape"
    prep["split_property"] = "label"
    config = default_run_config()
    config["window_prep"] = prep
    root = make_project(tmp_path / "p", run_config=config, imagery=False)
    with pytest.raises(ProjectError) as info:
        load_project(root, check_imagery=False)
    text = "\n".join(info.value.problems)
    assert "unknown class" in text and "PointToPixelWindowPreparer" in text  # lists supported
    assert "must sum to 1" in text and "group_name" in text and "reserved" in text
    config["window_prep"] = {"label_layer": "label"}
    root = make_project(tmp_path / "q", run_config=config, imagery=False)
    assert load_project(root, check_imagery=False).window_prep.labeled_window_preparer is None
    with pytest.raises(ProjectError) as info:
        load_project(root, check_imagery=False, require_window_prep=True)
    text = "\n".join(info.value.problems)
    assert "annotation_task_features.geojson: no annotation export" in text
    assert "labeled_window_preparer: missing" in text and "data_splitter: missing" in text


def test_point_windows_layout_labels_and_rerun(tmp_path):
    export = point_export(seed=5, tasks=3, points_per_task=5, centre=INSIDE_IMAGERY, extent_m=600)
    bad = annotation_feature("nobody", {"type": "Point", "coordinates": list(INSIDE_IMAGERY)}, 1)
    export.annotations["features"].append(bad)
    twin = json.loads(json.dumps(export.annotations["features"][0]))  # same pixel, same task
    export.annotations["features"].append(twin)
    p = project_with(tmp_path, window_prep(PIXEL, RANDOM, group_name="pts"), export)
    scratch = tmp_path / "scratch"
    out = prepare_labeled_windows(p.path, p.window_prep, scratch)
    assert len(out.windows) == 15 and out.created == 15
    assert out.root == scratch / "labeled" and out.partition_ids == ["pts"]
    pdir = scratch / "labeled/partitions/pts"
    wdir = scratch / "labeled/dataset/windows/pts"
    assert out.summary_path == pdir / "summary.json"
    assert json.loads((pdir / "partition.json").read_text())["windows"] == [
        w.name for w in out.windows
    ]
    assert [(q.index, q.reason.split(" ")[0]) for q in out.problems] == [
        (15, "unknown"),
        (16, "same"),
    ]
    labels = [f["properties"]["oe_labels"]["category"] for f in export.annotations["features"][:15]]
    summary = json.loads(out.summary_path.read_text())
    assert summary["windows"] == 15 and sum(summary["by_split"].values()) == 15
    assert summary["by_class"] == {str(k): labels.count(k) for k in sorted(set(labels))}
    assert summary["class_counts_unit"] == "windows" and len(summary["problems"]) == 2
    for w, label in zip(out.windows, labels, strict=True):
        assert w.path == wdir / w.name and (w.width, w.height) == (1, 1)
        assert w.crs == "EPSG:32618" and w.properties["split"] in ("train", "val", "test")
        assert load_labeled_window(w) == (label, None)
        # rslearn's vector label layer: pixel coordinates, the projection on top, completed
        gj = json.loads((w.path / "layers/label/data.geojson").read_text())
        assert gj["features"][0]["properties"]["category"] == label
        projection = {"crs": "EPSG:32618", "x_resolution": 10.0, "y_resolution": -10.0}
        assert gj["properties"] == projection
        x, y = gj["features"][0]["geometry"]["coordinates"]
        c0, r0, c1, r1 = w.pixel_bounds
        assert c0 <= x <= c1 and r0 <= y <= r1
        assert (w.path / "layers/label/completed").exists()
    assert list_labeled_windows(scratch, "pts") == out.windows
    val = list_labeled_windows(scratch, "pts", split="val")
    assert len(val) == out.by_split["val"]
    before = files(scratch)
    again = prepare_labeled_windows(p.path, p.window_prep, scratch)
    assert again.created == 0 and [w.name for w in again.windows] == [w.name for w in out.windows]
    assert files(scratch) == before  # nothing rewritten

    # the labeled windows build and load like prediction windows
    built = build_dataset(p.dataset_config, out.root, out.partition_ids, progress=False)
    assert built.built == 15 and built.failed == {}
    inputs, timestamps = load_window_inputs(out.windows[0], p.dataset_config)
    assert inputs["sentinel2_l2a"].shape[:2] == (1, 1) and timestamps.shape[1] == 3
    assert (inputs["sentinel2_l2a"][..., 0] > 0).any()


def test_polygon_windows_raster_labels(tmp_path):
    export = polygon_export(seed=6, tasks=3, polygons_per_task=3, centre=INSIDE_IMAGERY)
    p = project_with(tmp_path, window_prep(POLYGON, SPATIAL), export)
    scratch = tmp_path / "scratch"
    out = prepare_labeled_windows(p.path, p.window_prep, scratch)
    assert len(out.windows) == 3 and out.problems == []
    pixels: dict[str, int] = {}
    for w in out.windows:
        label, nodata = load_labeled_window(w)
        assert nodata == 255 and label.dtype == np.uint8 and label.shape == (w.height, w.width)
        with rasterio.open(w.path / "layers/label/category/geotiff.tif") as src:
            assert src.transform == w.transform and src.crs.to_string() == w.crs
            assert src.nodata == 255
        for v, c in zip(*np.unique(label, return_counts=True), strict=True):
            if v != 255:
                pixels[str(v)] = pixels.get(str(v), 0) + int(c)
    assert out.by_class == pixels
    assert json.loads(out.summary_path.read_text())["class_counts_unit"] == "pixels"


def test_legacy_export_and_inferred_label_property(tmp_path):
    export = point_export(seed=7, tasks=2, points_per_task=2, centre=INSIDE_IMAGERY, prefix="es_")
    prep = window_prep(PIXEL, RANDOM)
    del prep["label_property"]
    p = project_with(tmp_path, prep, export)
    out = prepare_labeled_windows(p.path, p.window_prep, tmp_path / "scratch")
    assert len(out.windows) == 4 and out.windows[0].properties["label"]["property"] == "label"
    export = point_export(seed=8, tasks=1, points_per_task=2, centre=INSIDE_IMAGERY)
    export.annotations["features"][0]["properties"]["oe_labels"] = {"crop": 1}
    shutil.rmtree(tmp_path / "project2", ignore_errors=True)
    p = project_with(tmp_path, prep, export, "project2")
    with pytest.raises(WindowPrepError, match="label_property"):
        prepare_labeled_windows(p.path, p.window_prep, tmp_path / "scratch2")
