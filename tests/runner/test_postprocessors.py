from __future__ import annotations

import json
import logging
import os
import struct
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import rasterio

from helios.runner import (
    CombineGeojson,
    CombineGeotiff,
    LinearValueTransform,
    Window,
    taper_weights,
    write_window_geojson,
    write_window_output,
)
from helios.runner.core.geometry import Projection, WindowSpec
from helios.runner.postprocess.postprocessors import BUILTIN_POSTPROCESSORS, STAGES, supports

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
T1 = datetime(2024, 2, 1, tzinfo=timezone.utc)
COL0, ROW0 = 44000, -417500


def grid_windows(
    root: Path, n: int = 3, size: int = 256, overlap: int = 16, crs: str = "EPSG:32618", pid="p0"
) -> list[Window]:
    """n x n windows of `size` px cells grown by `overlap`, like GridPartitioner makes."""
    out = []
    for i in range(n):
        for j in range(n):
            c0, r0 = COL0 + i * size - overlap, ROW0 + j * size - overlap
            b = (c0, r0, c0 + size + 2 * overlap, r0 + size + 2 * overlap)
            spec = WindowSpec(Projection(crs, 10, -10), b, T0, T1)
            out.append(Window.from_spec(spec, pid, root / "dataset"))
    return out


def ramp(w: Window) -> np.ndarray:
    """A global linear field sampled on the window grid (float32)."""
    rows, cols = np.mgrid[0 : w.height, 0 : w.width]
    gc = w.pixel_bounds[0] + cols - COL0
    gr = w.pixel_bounds[1] + rows - ROW0
    return (0.01 * gc + 0.02 * gr).astype(np.float32)


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def test_taper_weights_are_positive_and_flat_inside():
    w = taper_weights(64, 48, blend_pixels=8)
    assert w.shape == (64, 48) and w.min() == pytest.approx(1 / 81) and w.max() == 1
    assert (w[8:-8, 8:-8] == 1).all() and (w > 0).all()
    np.testing.assert_allclose(w, w[::-1, ::-1])


def test_constant_field_gives_a_constant_mosaic(tmp_path):
    windows = grid_windows(tmp_path)
    outs = [
        write_window_output(w, "value", np.full((w.height, w.width), 7.25), kind="regression")
        for w in windows
    ]
    (result,) = CombineGeotiff().process_partition(outs, tmp_path / "results")
    data = read(result)
    assert data.shape == (3 * 256 + 32, 3 * 256 + 32)
    assert (data == np.float32(7.25)).all()


def test_ramp_stays_a_ramp_across_window_boundaries(tmp_path):
    windows = grid_windows(tmp_path)
    outs = [write_window_output(w, "value", ramp(w), kind="regression") for w in windows]
    (result,) = CombineGeotiff().process_partition(outs, tmp_path / "results")
    with rasterio.open(result) as src:
        data = src.read(1)
        c0 = round(src.transform.c / 10)
        r0 = round(src.transform.f / -10)
    rows, cols = np.mgrid[0 : data.shape[0], 0 : data.shape[1]]
    expect = 0.01 * (c0 + cols - COL0) + 0.02 * (r0 + rows - ROW0)
    np.testing.assert_allclose(data, expect, atol=1e-4)


def test_disagreeing_windows_blend_without_seams(tmp_path):
    """Each window is off by its own constant; feathering spreads the step over the overlap."""
    windows = grid_windows(tmp_path, overlap=16)
    rng = np.random.default_rng(0)
    outs = [
        write_window_output(w, "value", ramp(w) + rng.choice([-0.5, 0.5]), kind="regression")
        for w in windows
    ]
    (result,) = CombineGeotiff(blend_pixels=16).process_partition(outs, tmp_path / "results")
    data = read(result).astype(np.float64)
    jumps_x = np.abs(np.diff(data, axis=1) - 0.01).max()
    jumps_y = np.abs(np.diff(data, axis=0) - 0.02).max()
    # a hard seam would jump by up to 1.0; blended steps stay below 1 / (overlap + 1)
    assert jumps_x < 0.07 and jumps_y < 0.07


def test_results_are_valid_cogs_with_overviews_and_quicklooks(tmp_path):
    windows = grid_windows(tmp_path)
    outs = [write_window_output(w, "value", ramp(w), kind="regression") for w in windows]
    (result,) = CombineGeotiff().process_dataset(outs, tmp_path / "results")
    with rasterio.open(result) as src:
        assert src.driver == "GTiff"
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert src.profile["tiled"] and src.block_shapes == [(512, 512)]
        assert len(src.overviews(1)) >= 1
        assert src.crs.to_string() == "EPSG:32618" and src.descriptions == ("value",)
        assert src.tags()["HELIOS_KIND"] == "regression"
    raw = result.read_bytes()[:16]
    assert raw[:4] == b"II*\x00"
    (first_ifd,) = struct.unpack("<I", raw[4:8])
    assert first_ifd < 4096  # COG: the IFDs come first, before the image data
    png = result.with_suffix(".png")
    with rasterio.open(png) as q:
        assert q.driver == "PNG" and q.count == 4 and max(q.width, q.height) <= 1024
    # the blending weights are an intermediate: in the scratch folder, not among the results
    assert (tmp_path / "blending" / f"{result.stem}.weights.tif").exists()
    assert not list((tmp_path / "results").glob("*.weights.tif"))


def test_partition_then_dataset_equals_one_mosaic(tmp_path):
    windows = grid_windows(tmp_path, n=4)
    rng = np.random.default_rng(1)
    outs = [
        write_window_output(w, "value", ramp(w) + rng.normal(0, 0.3), kind="regression")
        for w in windows
    ]
    (single,) = CombineGeotiff().process_partition(outs, tmp_path / "single")
    first = CombineGeotiff().process_partition(outs[:8], tmp_path / "pa")
    second = CombineGeotiff().process_partition(outs[8:], tmp_path / "pb")
    (final,) = CombineGeotiff().process_dataset(first + second, tmp_path / "final")
    np.testing.assert_allclose(read(final), read(single), atol=1e-5)


def test_class_maps_keep_names_colours_and_the_most_central_class(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="rasterio")
    windows = grid_windows(tmp_path, n=2, size=64, overlap=8)
    names = {1: "water", 2: "trees", 3: "crops", 4: "urban"}
    cmap = {1: (0, 0, 255), 2: (0, 255, 0), 3: (255, 255, 0), 4: (255, 0, 0)}
    outs = [
        write_window_output(
            w,
            "classes",
            np.full((w.height, w.width), k + 1),
            kind="classification",
            class_names=names,
            colormap=cmap,
        )
        for k, w in enumerate(windows)
    ]
    (result,) = CombineGeotiff().process_partition(outs, tmp_path / "results")
    # the palette is set before any pixel, so GDAL has nothing to complain about
    assert not [r for r in caplog.records if "GDAL signalled an error" in r.getMessage()]
    with rasterio.open(result) as src:
        data = src.read(1)
        assert src.dtypes[0] == "uint8"
        assert json.loads(src.tags()["CLASS_NAMES"]) == {str(k): v for k, v in names.items()}
        assert src.colormap(1)[3] == (255, 255, 0, 255)
    assert set(np.unique(data)) == {1, 2, 3, 4}
    # windows are ordered column-major: 1 top-left, 2 bottom-left, 3 top-right, 4 bottom-right
    h = data.shape[0]
    assert data[5, 5] == 1 and data[h - 5, 5] == 2 and data[5, h - 5] == 3
    # inside the 16 px overlap, the pixel goes to the window whose centre is nearer
    assert data[5, 64 + 8 - 3] == 1 and data[5, 64 + 8 + 3] == 3


def test_one_result_per_utm_zone_and_tiling(tmp_path):
    a = grid_windows(tmp_path, n=2, size=64, overlap=0, crs="EPSG:32617")
    b = grid_windows(tmp_path, n=2, size=64, overlap=0, crs="EPSG:32618", pid="p1")
    outs = [write_window_output(w, "value", ramp(w), kind="regression") for w in a + b]
    results = CombineGeotiff(quicklook=False).process_dataset(outs, tmp_path / "results")
    assert sorted(p.name for p in results) == ["value_epsg32617.tif", "value_epsg32618.tif"]
    tiled = CombineGeotiff(max_pixels_per_dimension=50, quicklook=False).process_dataset(
        outs[4:], tmp_path / "tiled"
    )
    assert len(tiled) == 9  # 128 px starting off a 50 px grid: 3 x 3 tiles
    assert all(max(rasterio.open(p).shape) <= 50 for p in tiled)
    assert sum(int(np.isfinite(read(p)).sum()) for p in tiled) == 128 * 128


def test_value_transform_casts(tmp_path):
    windows = grid_windows(tmp_path, n=1, size=32, overlap=0)
    outs = [
        write_window_output(w, "prob", np.full((32, 32), 0.5), kind="regression") for w in windows
    ]
    vt = LinearValueTransform(scale=200, offset=1, output_dtype="uint8")
    (result,) = CombineGeotiff(value_transform=vt).process_partition(outs, tmp_path / "r")
    data = read(result)
    assert data.dtype == np.uint8 and (data == 101).all()


def test_combine_is_idempotent_and_resumes(tmp_path):
    windows = grid_windows(tmp_path, n=2, size=64, overlap=8)
    outs = [write_window_output(w, "value", ramp(w), kind="regression") for w in windows]
    out_dir = tmp_path / "results"
    (result,) = CombineGeotiff().process_partition(outs, out_dir)
    stamp = {p.name: p.stat().st_mtime_ns for p in out_dir.iterdir()}
    CombineGeotiff().process_partition(outs, out_dir)
    assert {p.name: p.stat().st_mtime_ns for p in out_dir.iterdir()} == stamp

    # a killed run leaves a staging file and a temporary file: both are cleaned up
    (out_dir / ".value_epsg32618.staging.tif").write_bytes(b"partial")
    (out_dir / ".value_epsg32618.tif.42.tmp").write_bytes(b"partial")
    result.with_suffix(".png").unlink()
    CombineGeotiff().process_partition(outs, out_dir)
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(stamp)

    # a changed input is noticed
    new = write_window_output(windows[0], "value", ramp(windows[0]) + 1, kind="regression")
    os.utime(new, ns=(10**18, 10**18))
    CombineGeotiff().process_partition(outs, out_dir)
    assert result.stat().st_mtime_ns != stamp[result.name]
    assert read(result)[0, 0] == pytest.approx(ramp(windows[0])[0, 0] + 1, abs=1e-4)


def test_combine_geojson(tmp_path):
    windows = grid_windows(tmp_path, n=2, size=16, overlap=0)
    outs = []
    for k, w in enumerate(windows):
        x0, y0, x1, y1 = w.bounds
        feats = [
            {"geometry": {"type": "Point", "coordinates": [x0 + 5, y1 - 5]}, "properties": {"k": k}}
        ]
        outs.append(write_window_geojson(w, "points", feats, crs=w.crs))
    (part,) = CombineGeojson().process_partition(outs[:2], tmp_path / "pa")
    (part2,) = CombineGeojson().process_partition(outs[2:], tmp_path / "pb")
    (final,) = CombineGeojson().process_dataset([part, part2], tmp_path / "final")
    data = json.loads(final.read_text())
    assert data["type"] == "FeatureCollection" and len(data["features"]) == 4
    lon, lat = data["features"][0]["geometry"]["coordinates"]
    assert -76 < lon < -75 and 37 < lat < 38
    assert {f["properties"]["window"] for f in data["features"]} == {w.name for w in windows}
    mtime = final.stat().st_mtime_ns
    CombineGeojson().process_dataset([part, part2], tmp_path / "final")
    assert final.stat().st_mtime_ns == mtime


@pytest.mark.parametrize("cls", BUILTIN_POSTPROCESSORS, ids=lambda c: c.__name__)
def test_postprocessor_contract(cls, tmp_path):
    """Every stage a postprocessor supports returns existing files, and re-runs agree."""
    windows = grid_windows(tmp_path, n=2, size=32, overlap=4)
    outs = []
    for w in windows:
        outs.append(write_window_output(w, "value", ramp(w), kind="regression"))
        outs.append(
            write_window_geojson(
                w, "points", [{"geometry": {"type": "Point", "coordinates": [-75.6, 37.7]}}]
            )
        )
    pp = cls()
    assert any(supports(pp, s) for s in STAGES)
    if supports(pp, "process_window"):
        first = pp.process_window(windows[0], outs[:2])
        assert len(first) == 2 and all(p.exists() for p in first)
        assert pp.process_window(windows[0], outs[:2]) == first
    for stage in ("process_partition", "process_dataset"):
        if supports(pp, stage):
            first = getattr(pp, stage)(outs, tmp_path / stage)
            assert first and all(p.exists() for p in first)
            assert getattr(pp, stage)(outs, tmp_path / stage) == first


def test_sparse_windows_leave_empty_blocks_unwritten(tmp_path):
    near = grid_windows(tmp_path, n=1, size=32, overlap=0)
    spec = WindowSpec(
        Projection("EPSG:32618", 10, -10),
        (COL0 + 3000, ROW0 + 3000, COL0 + 3032, ROW0 + 3032),
        T0,
        T1,
    )
    far = Window.from_spec(spec, "p0", tmp_path / "far")
    outs = [
        write_window_output(w, "value", np.full((32, 32), 2.0), kind="regression")
        for w in near + [far]
    ]
    (result,) = CombineGeotiff().process_partition(outs, tmp_path / "r")
    with rasterio.open(result) as src:
        assert src.shape == (3032, 3032)
        data = src.read(1)
    assert np.isfinite(data).sum() == 2 * 32 * 32 and (data[np.isfinite(data)] == 2).all()
    assert result.stat().st_size < 200_000  # the empty area costs next to nothing


def test_small_results_get_small_tiles_and_quicklooks_read_one_band(tmp_path):
    """A 52 px, 128-band result must not be padded to 512 px tiles (128 MiB per write)."""
    from helios.runner.postprocess.mosaic import tile_size

    assert tile_size(50, 40) == 128 and tile_size(200, 20) == 256 and tile_size(600, 20) == 512
    windows = grid_windows(tmp_path, n=2, size=24, overlap=2)
    outs = [
        write_window_output(w, "embedding", np.stack([ramp(w)] * 128), kind="regression")
        for w in windows
    ]
    (result,) = CombineGeotiff().process_dataset(outs, tmp_path / "results")
    with rasterio.open(result) as src:
        assert src.count == 128 and (src.width, src.height) == (52, 52)
        assert src.block_shapes[0] == (128, 128)
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
    assert result.with_suffix(".png").exists()


def _fc(path: Path, features: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def _feat(geometry: dict | None, k: int) -> dict:
    return {"type": "Feature", "geometry": geometry, "properties": {"k": k}}


def _square(x: float, y: float, s: float) -> dict:
    ring = [[x, y], [x + s, y], [x + s, y + s], [x, y + s], [x, y]]
    return {"type": "Polygon", "coordinates": [ring]}


def test_combine_and_deduplicate_geojson(tmp_path):
    from helios.runner.postprocess.postprocessors import CombineAndDeduplicateGeojson

    a = _fc(
        tmp_path / "w1/outputs/objects.geojson",
        [
            _feat(_square(0, 0, 1), 0),
            _feat({"type": "Point", "coordinates": [5, 5]}, 1),
            _feat(None, 2),  # no geometry: dropped
            _feat({"type": "LineString", "coordinates": [[0, 0], [1, 1]]}, 3),
        ],
    )
    b = _fc(
        tmp_path / "w2/outputs/objects.geojson",
        [
            _feat(_square(0.01, 0, 1), 4),  # IoU 0.98 with 0: a duplicate
            _feat(_square(0.5, 0, 1), 5),  # IoU 1/3: kept
            _feat({"type": "Point", "coordinates": [5.0005, 5]}, 6),  # 0.0005 away: duplicate
            _feat({"type": "Point", "coordinates": [5.01, 5]}, 7),  # kept
            _feat({"type": "LineString", "coordinates": [[0, 0], [1, 1]]}, 8),  # equal: dup
        ],
    )
    pp = CombineAndDeduplicateGeojson()
    (part,) = pp.process_partition([a, b], tmp_path / "part")
    assert part.name == "objects.geojson"
    assert [f["properties"]["k"] for f in json.loads(part.read_text())["features"]] == [
        0,
        1,
        3,
        5,
        7,
    ]
    strict = CombineAndDeduplicateGeojson(min_iou=0.99, point_nearness=0.0001)
    (part2,) = strict.process_partition([a, b], tmp_path / "strict")
    assert [f["properties"]["k"] for f in json.loads(part2.read_text())["features"]] == [
        0,
        1,
        3,
        4,
        5,
        6,
        7,
    ]
    # the dataset stage deduplicates across partitions too (upstream: partitions only)
    (final,) = pp.process_dataset([part, part2], tmp_path / "final")
    assert len(json.loads(final.read_text())["features"]) == 5
    mtime = final.stat().st_mtime_ns
    assert pp.process_dataset([part, part2], tmp_path / "final") == [final]
    assert final.stat().st_mtime_ns == mtime  # idempotent
    with pytest.raises(ValueError, match="min_iou"):
        CombineAndDeduplicateGeojson(min_iou=2)


def test_simplify_polygons(tmp_path):
    from helios.runner.postprocess.postprocessors import SimplifyPolygons

    wiggly = [[i / 10, 0.001 * (i % 2)] for i in range(11)] + [[1, 1], [0, 1], [0, 0]]
    two = {
        "type": "MultiPolygon",
        "coordinates": [_square(0, 0, 1)["coordinates"], _square(3, 0, 1)["coordinates"]],
    }
    src = _fc(
        tmp_path / "w/outputs/fields.geojson",
        [
            _feat({"type": "Polygon", "coordinates": [wiggly]}, 0),
            _feat(two, 1),  # stays a MultiPolygon (upstream fails validation on it)
            _feat(_square(5, 5, 0.001), 2),  # collapses unless the topology is preserved
            _feat({"type": "Point", "coordinates": [1, 2]}, 3),  # passes through
        ],
    )
    pp = SimplifyPolygons()
    (part,) = pp.process_partition([src], tmp_path / "part")
    feats = json.loads(part.read_text())["features"]
    assert [f["properties"]["k"] for f in feats] == [0, 1, 2, 3]
    assert len(feats[0]["geometry"]["coordinates"][0]) == 5  # the wiggles are gone
    assert feats[1]["geometry"]["type"] == "MultiPolygon"
    (final,) = pp.process_dataset([part], tmp_path / "final")
    assert json.loads(final.read_text())["features"] == feats
    loose = SimplifyPolygons(preserve_topology=False)
    (p2,) = loose.process_partition([src], tmp_path / "loose")
    assert [f["properties"]["k"] for f in json.loads(p2.read_text())["features"]] == [0, 1, 3]


def test_combine_geojson_window_stage_takes_the_request_geometry(tmp_path):
    """Upstream's process_window: result features get their request's polygon and properties."""
    (w,) = grid_windows(tmp_path, n=1, size=32, overlap=0)
    lon0, lat0, lon1, lat1 = w.wgs84_bounds()
    alert = {
        "type": "Polygon",
        "coordinates": [[[lon0, lat0], [lon1, lat0], [lon1, lat1], [lon0, lat0]]],
    }
    pdir = tmp_path / "partitions" / w.group
    pdir.mkdir(parents=True)
    request = {"type": "Feature", "geometry": alert, "properties": {"alert_id": 7}}
    (pdir / "request.geojson").write_text(
        json.dumps({"type": "FeatureCollection", "features": [request]})
    )
    w = replace(w, properties={"alert_id": 7, "note": "kept"})
    out = write_window_geojson(
        w,
        "label",
        [{"geometry": {"type": "Point", "coordinates": [lon0, lat0]},
          "properties": {"label": "mining", "note": None}}],
    )  # fmt: skip
    (result,) = CombineGeojson().process_window(w, [out])
    (feature,) = json.loads(result.read_text())["features"]
    assert feature["geometry"]["type"] == "Polygon"
    assert feature["properties"] == {
        "alert_id": 7, "note": "kept", "label": "mining", "window": w.name,
    }  # fmt: skip
    (kept,) = CombineGeojson(geometry_source="result").process_window(w, [out])
    assert json.loads(kept.read_text())["features"][0]["geometry"]["type"] == "Point"
