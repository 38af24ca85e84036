from __future__ import annotations

import math

import numpy as np
import pytest
import rasterio.features
from affine import Affine
from shapely.geometry import Point, shape

from helios.runner.core.geometry import reproject_geometry, to_pixels
from helios.runner.finetune import (
    AnnotationTask,
    PointToPixelWindowPreparer,
    PointToRasterWindowPreparer,
    PolygonToRasterWindowPreparer,
    load_annotations,
)
from helios.runner.finetune.annotations import Annotation
from tests.runner.data.annotations import START, point_export, polygon_export

ZONES = [
    ((-118.16, 33.73), "EPSG:32611"),
    ((-75.66, 37.72), "EPSG:32618"),
    ((151.2, -33.87), "EPSG:32756"),
]


def points(tmp_path, centre, seed=0, tasks=2, per_task=3):
    export = point_export(seed=seed, tasks=tasks, points_per_task=per_task, centre=centre)
    return load_annotations(export.write(tmp_path / str(seed))).tasks


def crs_bounds(window):
    return window.spec.crs_bounds()


@pytest.mark.parametrize(("centre", "crs"), ZONES)
def test_point_to_pixel_windows(tmp_path, centre, crs):
    prep = PointToPixelWindowPreparer()
    for task in points(tmp_path, centre):
        windows, problems = prep.prepare_labeled_windows(task, "category")
        assert problems == [] and len(windows) == len(task.annotations) == 3
        for w, ann in zip(windows, task.annotations, strict=True):
            assert w.spec.projection.crs == crs and w.spec.projection.x_resolution == 10
            assert (w.spec.width, w.spec.height) == (1, 1)
            px = to_pixels(ann.geometry, w.spec.projection)
            assert w.spec.pixel_bounds[:2] == (int(px.x), int(px.y))  # upstream's int()
            x0, y0, x1, y1 = crs_bounds(w)
            p = reproject_geometry(ann.geometry, "EPSG:4326", crs)
            assert x0 <= p.x < x1 and y0 - 10 < p.y <= y1 + 10  # within a pixel
            assert w.kind == "vector" and w.label == ann.labels["category"]
            assert w.spec.properties["source_task_id"] == task.task_id
            assert (w.spec.start_time, w.spec.end_time) == (task.start_time, task.end_time)


def test_point_to_pixel_resolution_and_problems(tmp_path):
    task = points(tmp_path, ZONES[0][0])[0]
    windows, _ = PointToPixelWindowPreparer(window_resolution=20).prepare_labeled_windows(
        task, "category"
    )
    assert windows[0].spec.projection.x_resolution == 20
    assert crs_bounds(windows[0])[2] - crs_bounds(windows[0])[0] == 20
    poly = Annotation(task.geometry, {"category": 1}, 99)
    nolabel = Annotation(Point(-118.16, 33.73), {"other": 1}, 98)
    bad = AnnotationTask("t", task.geometry, task.start_time, task.end_time, [poly, nolabel])
    windows, problems = PointToPixelWindowPreparer().prepare_labeled_windows(bad, "category")
    assert windows == []
    assert [(p.index, p.reason.split(",")[0]) for p in problems] == [
        (99, "expected a Point annotation"),
        (98, "no 'category' label (labels: ['other'])"),
    ]


def test_point_to_raster_windows(tmp_path):
    prep = PointToRasterWindowPreparer(window_buffer=3)
    task = points(tmp_path, ZONES[1][0], seed=1)[0]
    windows, problems = prep.prepare_labeled_windows(task, "category")
    assert problems == [] and len(windows) == 3
    for w, ann in zip(windows, task.annotations, strict=True):
        assert (w.spec.width, w.spec.height) == (7, 7) and w.kind == "raster"
        px = to_pixels(ann.geometry, w.spec.projection)
        c0, r0 = int(px.x - 3), int(px.y - 3)  # upstream: the float square, int() bounds
        assert w.spec.pixel_bounds == (c0, r0, c0 + 7, r0 + 7)
        assert w.label.dtype == np.uint8 and w.label.shape == (7, 7) and w.nodata == 255
        # the pixel holding the point: row 2 (not 3) as rows are negative north of the equator
        assert w.label[math.floor(px.y) - r0, math.floor(px.x) - c0] == ann.labels["category"]
        assert (w.label == 255).sum() == 48


def test_point_to_raster_rejects_bad_classes(tmp_path):
    task = points(tmp_path, ZONES[1][0], seed=2)[0]
    anns = [
        Annotation(a.geometry, {"category": v}, i)
        for i, (a, v) in enumerate(zip(task.annotations, [255, 2.5, 300], strict=True))
    ]
    bad = AnnotationTask("t", task.geometry, task.start_time, task.end_time, anns)
    windows, problems = PointToRasterWindowPreparer(1).prepare_labeled_windows(bad, "category")
    assert windows == []
    reasons = [p.reason for p in problems]
    assert "equals the nodata value 255" in reasons[0]
    assert "not an integer" in reasons[1] and "does not fit uint8" in reasons[2]
    ok, problems = PointToRasterWindowPreparer(
        1, dtype="int16", nodata_value=-1
    ).prepare_labeled_windows(bad, "category")
    assert len(ok) == 2 and ok[0].label.dtype == np.int16 and (ok[0].label == 255).sum() == 1
    with pytest.raises(ValueError, match="dtype"):
        PointToRasterWindowPreparer(1, dtype="complex64")


def expected_raster(task, window, nodata=255):
    crs = window.spec.projection.crs
    x0, _, _, y1 = crs_bounds(window)
    transform = Affine(10, 0, x0, 0, -10, y1)
    shapes = [
        (reproject_geometry(a.geometry, "EPSG:4326", crs), a.labels["category"])
        for a in task.annotations
    ]
    out = (window.spec.height, window.spec.width)
    return rasterio.features.rasterize(
        shapes, out_shape=out, transform=transform, fill=nodata, dtype="uint8"
    )


@pytest.mark.parametrize(("centre", "crs"), ZONES[:2])
def test_polygon_to_raster_matches_direct_rasterization(tmp_path, centre, crs):
    export = polygon_export(seed=3, tasks=2, polygons_per_task=4, centre=centre)
    tasks = load_annotations(export.write(tmp_path)).tasks
    for task in tasks:
        windows, problems = PolygonToRasterWindowPreparer().prepare_labeled_windows(
            task, "category"
        )
        assert problems == [] and len(windows) == 1
        w = windows[0]
        assert w.spec.projection.crs == crs
        px = to_pixels(task.geometry, w.spec.projection).bounds
        assert w.spec.pixel_bounds == tuple(int(v) for v in px)  # upstream's int() bounds
        assert w.label.dtype == np.uint8 and w.nodata == 255
        np.testing.assert_array_equal(w.label, expected_raster(task, w))
        assert (w.label == 255).any() and (w.label != 255).any()


def test_polygon_to_raster_nodata_and_problems(tmp_path):
    task = load_annotations(polygon_export(seed=4, tasks=1).write(tmp_path)).tasks[0]
    fives = [Annotation(a.geometry, {"category": 5}, a.index) for a in task.annotations]
    same = AnnotationTask("t", task.geometry, task.start_time, task.end_time, fives)
    windows, _ = PolygonToRasterWindowPreparer(nodata_value=0).prepare_labeled_windows(
        same, "category"
    )
    assert set(np.unique(windows[0].label)) == {0, 5}
    point = Annotation(Point(-118.16, 33.73), {"category": 1}, 7)
    only_point = AnnotationTask("t", task.geometry, task.start_time, task.end_time, [point])
    windows, problems = PolygonToRasterWindowPreparer().prepare_labeled_windows(
        only_point, "category"
    )
    assert windows == []
    assert [(p.source, p.index) for p in problems] == [
        ("annotation_features.geojson", 7),
        ("annotation_task_features.geojson", 0),
    ]
    assert "Polygon" in problems[0].reason and "no usable annotation" in problems[1].reason
    degree = shape({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]})
    big = AnnotationTask("t", degree, task.start_time, task.end_time, task.annotations)
    windows, problems = PolygonToRasterWindowPreparer().prepare_labeled_windows(big, "category")
    assert windows == [] and "exceeds 8192 px" in problems[0].reason


def rect_task(x0, y0, x1, y1, labels=((1, 0.0, 0.0, 1.0, 1.0),)):
    """A lon/lat rectangle task with rectangles (value, fractions of the task) as annotations."""
    from shapely.geometry import box

    from tests.runner.data.annotations import END

    start, end = (load_time(t) for t in (START, END))
    anns = []
    for i, (v, a, b, c, d) in enumerate(labels):
        w, h = x1 - x0, y1 - y0
        geom = box(x0 + a * w, y0 + b * h, x0 + c * w, y0 + d * h)
        anns.append(Annotation(geom, {"category": v}, i))
    return AnnotationTask("t", box(x0, y0, x1, y1), start, end, anns)


def load_time(text):
    from helios.runner.core.geometry import parse_time

    return parse_time(text)


@pytest.mark.parametrize(("strategy", "count"), [("center_crop", 4), ("PAD_TO_FILL", 9)])
def test_polygon_grid_config(strategy, count):
    from helios.runner.finetune.preparers import GridConfig

    task = rect_task(35.0, 0.2, 35.0025, 0.2025)  # ~278 x 276 m: 27 x 27 px at 10 m
    prep = PolygonToRasterWindowPreparer(grid_config=GridConfig(12, strategy))
    windows, problems = prep.prepare_labeled_windows(task, "category")
    assert problems == [] and len(windows) == count
    (single,), _ = PolygonToRasterWindowPreparer().prepare_labeled_windows(task, "category")
    c0, r0, c1, r1 = single.spec.pixel_bounds
    for w in windows:
        assert (w.spec.width, w.spec.height) == (12, 12) and w.label.shape == (12, 12)
        wc0, wr0 = w.spec.pixel_bounds[:2]
        expect = np.full((12, 12), 255, np.uint8)
        part = single.label[wr0 - r0 : wr0 - r0 + 12, wc0 - c0 : wc0 - c0 + 12]
        expect[: part.shape[0], : part.shape[1]] = part  # padded past the task
        np.testing.assert_array_equal(w.label, expect)
    if strategy == "center_crop":  # whole squares, the grid centred on the task
        ox, oy = (c1 - c0 - 24) // 2, (r1 - r0 - 24) // 2
        assert windows[0].spec.pixel_bounds[:2] == (c0 + ox, r0 + oy)


def test_polygon_tasks_wider_than_tall_and_empty_windows():
    wide = rect_task(35.0, 0.2, 35.01, 0.201)  # upstream fails on these (its BUG 1)
    (w,), problems = PolygonToRasterWindowPreparer().prepare_labeled_windows(wide, "category")
    assert problems == [] and w.label.shape == (w.spec.height, w.spec.width)
    assert w.spec.width > 5 * w.spec.height
    tiny = rect_task(35.0, 0.2, 35.01, 0.201, labels=((1, 0.5, 0.5, 0.5001, 0.5001),))
    windows, problems = PolygonToRasterWindowPreparer().prepare_labeled_windows(tiny, "category")
    assert windows == [] and "no labeled pixel" in problems[-1].reason  # all nodata: no window


def test_polygon_drop_inconsistent_utm_skips_the_task():
    across = rect_task(35.99, 0.2, 36.01, 0.21)
    prep = PolygonToRasterWindowPreparer(drop_inconsistent_utm=True)
    windows, problems = prep.prepare_labeled_windows(across, "category")
    assert (
        windows == [] and "EPSG:32636" in problems[0].reason and "EPSG:32637" in problems[0].reason
    )
    (w,), _ = PolygonToRasterWindowPreparer().prepare_labeled_windows(across, "category")
    assert w.spec.projection.crs == "EPSG:32636"  # the centroid's zone (36.0: the lower one)
    inside = rect_task(35.9, 0.2, 35.91, 0.21)
    assert len(prep.prepare_labeled_windows(inside, "category")[0]) == 1


def test_grid_config_from_yaml_plain_or_class_path():
    from helios.runner.finetune.config import parse_window_prep

    cls = "olmoearth_run.runner.tools.labeled_window_preparers.polygon_to_raster_window_preparer"
    for grid in (
        {"window_size_px": 32},
        {"class_path": f"{cls}.GridConfig", "init_args": {"window_size_px": 32}},
    ):
        raw = {
            "labeled_window_preparer": {
                "class_path": f"{cls}.PolygonToRasterWindowPreparer",
                "init_args": {"grid_config": grid},
            },
        }
        prep, problems = parse_window_prep(raw)
        assert problems == [] and prep is not None
        cfg = prep.labeled_window_preparer.grid_config
        assert (cfg.window_size_px, cfg.gridding_strategy) == (32, "center_crop")


def test_polar_points_use_ups():
    p = Annotation(Point(10.0, 85.0), {"category": 1}, 0)
    task = AnnotationTask("t", p.geometry.buffer(0.01), load_time(START), load_time(START), [p])
    (w,), _ = PointToPixelWindowPreparer().prepare_labeled_windows(task, "category")
    assert w.spec.projection.crs == "EPSG:5041"
