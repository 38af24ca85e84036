from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from helios.runner.finetune import AnnotationError, Problem, load_annotations
from tests.runner.data.annotations import (
    Export,
    annotation_feature,
    collection,
    point_export,
    polygon_export,
    task_feature,
)

TASKS, ANNS = "annotation_task_features.geojson", "annotation_features.geojson"


def test_current_export(tmp_path):
    export = point_export(seed=1, tasks=3, points_per_task=4)
    result = load_annotations(export.write(tmp_path))
    assert result.problems == []
    assert len(result.tasks) == 3 and result.num_annotations == 12
    task = result.tasks[0]
    assert task.task_id == export.tasks["features"][0]["properties"]["oe_annotations_task_id"]
    assert task.geometry.geom_type == "Polygon" and -119 < task.geometry.centroid.x < -118
    assert task.start_time == datetime(2024, 1, 1, tzinfo=timezone.utc)
    ann = task.annotations[0]
    assert ann.labels == {
        "category": export.annotations["features"][0]["properties"]["oe_labels"]["category"]
    }
    assert ann.index == 0 and ann.start_time == datetime(2024, 2, 24, 5, 57, tzinfo=timezone.utc)
    assert [a.index for t in result.tasks for a in t.annotations] == list(range(12))
    assert result.label_keys() == ["category"]


def test_paths_tuple_and_multi_key_labels(tmp_path):
    export = polygon_export(seed=2)
    export.annotations["features"][0]["properties"]["oe_labels"] = {"category": None, "crop": 2}
    export.write(tmp_path)
    result = load_annotations((tmp_path / TASKS, tmp_path / ANNS))
    assert result.problems == []
    assert result.tasks[0].annotations[0].labels == {"category": None, "crop": 2}
    assert result.label_keys() == ["category", "crop"]


def test_legacy_es_export(tmp_path):
    export = point_export(seed=3, tasks=2, points_per_task=3, prefix="es_")
    props = export.annotations["features"][0]["properties"]
    assert "es_label" in props and "oe_labels" not in props
    export.write(tmp_path)
    result = load_annotations(tmp_path)
    assert result.problems == [] and result.num_annotations == 6
    assert result.tasks[0].annotations[0].labels == {"label": props["es_label"]}
    named = load_annotations(tmp_path, label_property="category")
    assert named.tasks[0].annotations[0].labels == {"category": props["es_label"]}


def test_mixed_forms(tmp_path):
    export = point_export(seed=4, tasks=1, points_per_task=2)
    tid = export.tasks["features"][0]["properties"]["oe_annotations_task_id"]
    point = {"type": "Point", "coordinates": [-118.159, 33.731]}
    export.annotations["features"].append(annotation_feature(tid, point, 7, prefix="es_"))
    result = load_annotations(export.write(tmp_path), label_property="category")
    assert result.problems == []
    assert [a.labels["category"] for a in result.tasks[0].annotations][-1] == 7


def test_bad_features_are_reported_with_index_and_reason(tmp_path):
    export = point_export(seed=5, tasks=2, points_per_task=2)
    tasks, anns = export.tasks["features"], export.annotations["features"]
    good_tid = tasks[0]["properties"]["oe_annotations_task_id"]
    ring = tasks[0]["geometry"]["coordinates"][0]
    bowtie = [[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]
    tasks += [
        task_feature("", ring),  # 2: no task id
        task_feature("t-bad-time", ring, start="yesterday"),  # 3: unparseable time
        task_feature("t-reversed", ring, start="2024-03-01", end="2024-01-01"),  # 4
        task_feature("t-bowtie", bowtie),  # 5: self-intersecting
        task_feature(good_tid, ring),  # 6: duplicate id
        {
            "type": "Feature",
            "properties": {
                "oe_annotations_task_id": "t-nogeom",
                "oe_start_time": "2024-01-01",
                "oe_end_time": "2024-02-01",
            },
        },  # 7
    ]
    point = {"type": "Point", "coordinates": [-118.159, 33.731]}
    no_label = annotation_feature(good_tid, point, 1)
    del no_label["properties"]["oe_labels"]
    null_labels = annotation_feature(good_tid, point, 1)
    null_labels["properties"]["oe_labels"] = {"category": None}
    no_tid = annotation_feature(good_tid, point, 1)
    del no_tid["properties"]["oe_annotations_task_id"]
    bad_time = annotation_feature(good_tid, point, 1)
    bad_time["properties"]["oe_end_time"] = "2024-13-45"
    anns += [
        no_tid,  # 4
        annotation_feature("nobody", point, 1),  # 5: unknown task
        annotation_feature("t-bad-time", point, 1),  # 6: task rejected
        no_label,  # 7
        null_labels,  # 8
        annotation_feature(good_tid, {"type": "Point", "coordinates": [500000, 4e6]}, 1),  # 9
        annotation_feature(good_tid, {"type": "Polygon", "coordinates": [bowtie]}, 1),  # 10
        bad_time,  # 11
        annotation_feature(good_tid, point, "forest"),  # 12: not a number
        "garbage",  # 13
    ]
    result = load_annotations(export.write(tmp_path))
    assert len(result.tasks) == 2 and result.num_annotations == 4  # the good ones proceed
    got = {(p.source, p.index): p.reason for p in result.problems}
    expected = {
        (TASKS, 2): "no task id",
        (TASKS, 3): "bad times",
        (TASKS, 4): "bad times",
        (TASKS, 5): "invalid geometry",
        (TASKS, 6): "duplicate task id",
        (TASKS, 7): "no geometry",
        (ANNS, 4): "no task id",
        (ANNS, 5): "unknown task nobody",
        (ANNS, 6): "t-bad-time was left out",
        (ANNS, 7): "no label",
        (ANNS, 8): "no label",
        (ANNS, 9): "not WGS84",
        (ANNS, 10): "invalid geometry",
        (ANNS, 11): "bad times",
        (ANNS, 12): "must be a number",
        (ANNS, 13): "not a GeoJSON Feature",
    }
    assert set(got) == set(expected)
    for key, words in expected.items():
        assert words in got[key], (key, got[key])
    assert str(Problem(ANNS, 5, "x")) == f"{ANNS}#5: x"
    source, index, reason = result.problems[0]
    assert (source, index) == (TASKS, 2) and "no task id" in reason


def test_unreadable_files_raise(tmp_path):
    with pytest.raises(AnnotationError, match="not found"):
        load_annotations(tmp_path)
    Export(collection([]), collection([])).write(tmp_path)
    assert load_annotations(tmp_path).tasks == []
    (tmp_path / ANNS).write_text("{not json")
    with pytest.raises(AnnotationError, match="JSON"):
        load_annotations(tmp_path)
    (tmp_path / ANNS).write_text(json.dumps({"type": "Feature"}))
    with pytest.raises(AnnotationError, match="FeatureCollection"):
        load_annotations(tmp_path)
