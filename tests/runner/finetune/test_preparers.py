from __future__ import annotations

import numpy as np
import pytest
import rasterio.features
from affine import Affine
from shapely.geometry import Point, shape

from helios.runner.core.geometry import reproject_geometry
from helios.runner.finetune import (
    AnnotationTask,
    PointToPixelWindowPreparer,
    PointToRasterWindowPreparer,
    PolygonToRasterWindowPreparer,
    load_annotations,
)
from helios.runner.finetune.annotations import Annotation
from tests.runner.data.annotations import point_export, polygon_export

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
            x0, y0, x1, y1 = crs_bounds(w)
            p = reproject_geometry(ann.geometry, "EPSG:4326", crs)
            assert x0 <= p.x < x1 and y0 < p.y <= y1  # the point is in its pixel
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
    pixel = PointToPixelWindowPreparer().prepare_labeled_windows(task, "category")[0]
    for w, px, ann in zip(windows, pixel, task.annotations, strict=True):
        assert (w.spec.width, w.spec.height) == (7, 7) and w.kind == "raster"
        c0, r0, _, _ = px.spec.pixel_bounds
        assert w.spec.pixel_bounds == (c0 - 3, r0 - 3, c0 + 4, r0 + 4)  # centred on the point
        assert w.label.dtype == np.uint8 and w.label.shape == (7, 7) and w.nodata == 255
        assert w.label[3, 3] == ann.labels["category"]
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
    assert len(ok) == 2 and ok[0].label.dtype == np.int16 and ok[0].label[1, 1] == 255
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
        assert w.spec.projection.crs == crs and (w.spec.width, w.spec.height) in (
            (64, 64),
            (65, 65),
            (64, 65),
            (65, 64),
        )
        x0, y0, x1, y1 = crs_bounds(w)
        tb = reproject_geometry(task.geometry, "EPSG:4326", crs).bounds
        assert x0 <= tb[0] and y0 <= tb[1] and x1 >= tb[2] and y1 >= tb[3]  # holds the task
        assert x1 - x0 < tb[2] - tb[0] + 20  # and no more than a pixel around it
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
