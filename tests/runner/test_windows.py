from __future__ import annotations

import json
from datetime import datetime, timezone

import numpy as np
import pytest
import rasterio

from helios.runner import RequestFeature, Window, write_window_output
from helios.runner.core.geometry import Projection, RequestError, WindowSpec, parse_time
from helios.runner.core.windows import load_window

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
T1 = datetime(2024, 2, 1, tzinfo=timezone.utc)


@pytest.fixture
def window(tmp_path) -> Window:
    spec = WindowSpec(Projection("EPSG:32618", 10, -10), (44000, -417500, 44064, -417452), T0, T1)
    return Window.from_spec(spec, "p0", tmp_path / "dataset")


def test_window_geometry_and_metadata_roundtrip(window, tmp_path):
    assert (window.width, window.height) == (64, 48)
    assert window.bounds == (440000.0, 4174520.0, 440640.0, 4175000.0)
    assert window.transform == rasterio.transform.from_origin(440000, 4175000, 10, 10)
    assert window.path == tmp_path / "dataset" / "windows" / "p0" / window.name
    window.save()
    meta = json.loads((window.path / "metadata.json").read_text())
    assert meta == {  # rslearn's window metadata
        "group": "p0",
        "name": window.name,
        "projection": {"crs": "EPSG:32618", "x_resolution": 10.0, "y_resolution": -10.0},
        "bounds": [44000, -417500, 44064, -417452],
        "time_range": ["2024-01-01T00:00:00+00:00", "2024-02-01T00:00:00+00:00"],
        "options": {},
    }
    assert load_window(window.path) == window
    # rslearn 0.1 writes no group and name: they come from the folders
    del meta["group"], meta["name"]
    (window.path / "metadata.json").write_text(json.dumps(meta))
    assert load_window(window.path) == window
    lon0, lat0, lon1, lat1 = window.wgs84_bounds()
    assert -75.7 < lon0 < lon1 < -75.6 and 37.7 < lat0 < lat1 < 37.8


def test_write_regression_and_probability_outputs(window):
    path = write_window_output(
        window, "height", np.arange(64 * 48).reshape(48, 64), kind="regression"
    )
    with rasterio.open(path) as src:
        assert src.transform == window.transform and src.crs.to_string() == "EPSG:32618"
        assert src.dtypes[0] == "float32" and np.isnan(src.nodata)
        assert src.tags()["HELIOS_KIND"] == "regression" and src.descriptions == ("height",)
    probs = np.random.default_rng(0).random((3, 24, 32))
    path = write_window_output(
        window, "probs", probs, kind="probabilities", class_names=["a", "b", "c"]
    )
    with rasterio.open(path) as src:
        assert src.count == 3 and src.descriptions == ("a", "b", "c")
        assert src.res == (20.0, 20.0) and src.bounds == rasterio.coords.BoundingBox(*window.bounds)
    assert not list(window.outputs_dir.glob(".*"))  # nothing temporary left behind


def test_write_classification_output(window):
    classes = np.ones((48, 64), dtype=np.int64)
    classes[:, 32:] = 2
    path = write_window_output(
        window,
        "lc",
        classes,
        kind="classification",
        class_names={1: "water", 2: "trees"},
        colormap={2: (0, 200, 0)},
    )
    with rasterio.open(path) as src:
        assert src.dtypes[0] == "uint8" and src.nodata is None
        assert json.loads(src.tags()["CLASS_NAMES"]) == {"1": "water", "2": "trees"}
        assert src.colormap(1)[2] == (0, 200, 0, 255)
        np.testing.assert_array_equal(src.read(1), classes)
    default = write_window_output(
        window, "lc2", classes, kind="classification", class_names=["x", "y", "z"]
    )
    with rasterio.open(default) as src:
        assert src.colormap(1)[1] != src.colormap(1)[2]  # a distinct default colour per class
    with pytest.raises(ValueError, match="one band"):
        write_window_output(window, "bad", np.zeros((2, 48, 64)), kind="classification")
    with pytest.raises(ValueError, match=r"expected \[H, W\] or \[C, H, W\]"):
        write_window_output(window, "bad", np.zeros((1, 2, 48, 64)), kind="regression")


def test_request_times_and_prefixes():
    feat = {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [-75.6, 37.7]},
        "properties": {"es_start_time": "2024-02-24 05:57:00+00:00", "es_end_time": "2024-03-01Z"},
    }
    r = RequestFeature.from_geojson(feat)
    assert r.start_time == datetime(2024, 2, 24, 5, 57, tzinfo=timezone.utc)
    assert r.end_time == datetime(2024, 3, 1, tzinfo=timezone.utc)
    assert r.to_geojson()["properties"]["oe_start_time"] == "2024-02-24T05:57:00+00:00"
    assert parse_time("2024-01-01T03:00:00+03:00") == datetime(2024, 1, 1, tzinfo=timezone.utc)
    with pytest.raises(RequestError, match="not a GeoJSON Feature"):
        RequestFeature.from_geojson({"type": "FeatureCollection"})
    feat["geometry"] = {"type": "Polygon", "coordinates": []}
    with pytest.raises(RequestError, match="empty"):
        RequestFeature.from_geojson(feat)
