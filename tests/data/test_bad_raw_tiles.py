"""`helios data convert` on bad raw input: each bad tile is skipped and reported, never fatal."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import Transformer

from helios.cli import main
from helios.data.convert import convert
from helios.data.h5 import read_sample
from tests.data.test_convert import (
    CRS,
    DATES,
    EXTENT,
    LEFT,
    TOP,
    on_grid,
    s2_band_sets,
    small_raw,
    stacked,
    tile,
    write_tif,
)


def _write(path, data, crs, transform):
    c, h, w = data.shape
    with rasterio.open(
        path, "w", driver="GTiff", width=w, height=h, count=c, dtype=data.dtype,
        crs=crs, transform=transform,
    ) as ds:  # fmt: skip
        ds.write(data)


def _skipped(result):
    report = json.loads(result.report_path.read_text())
    return {s["tile_id"]: s["reason"] for s in report["skipped_tiles"]}


def test_symlink_loops_skip_their_tile_only(tmp_path):
    raw = small_raw(tmp_path / "raw", 1)  # tile t0
    os.symlink("loop_dir", raw / "loop_dir")  # a tile directory that points at itself
    d = tile(raw, "loop_band", DATES[:1])
    os.symlink("sentinel2_l2a.tif", d / "sentinel2_l2a.tif")
    result = convert(raw, tmp_path / "out", progress=False)
    assert result.num_samples == 1 and result.num_tiles == 3
    skipped = _skipped(result)
    assert sorted(skipped) == ["loop_band", "loop_dir"]
    for reason in skipped.values():
        assert reason.startswith("unreadable: ") and "symbolic links" in reason
    assert "loop_dir" in skipped["loop_dir"]
    assert "sentinel2_l2a.tif" in skipped["loop_band"]


def test_out_that_is_a_file_is_a_one_line_error(tmp_path, capsys):
    raw = small_raw(tmp_path / "raw", 1)
    out = tmp_path / "out.txt"
    out.write_text("not a directory")
    with pytest.raises(ValueError, match=r"out\.txt.*not a directory"):
        convert(raw, out, progress=False)
    with pytest.raises(ValueError, match=r"out\.txt.*not a directory"):
        convert(raw, out / "below", progress=False)
    assert main(["data", "convert", str(raw), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(out) in err[0] and "Traceback" not in err[0]
    assert out.read_text() == "not a directory"  # nothing lost


def _geographic_transform(lat, lon, px):
    """A 256 px, 10 m tile in degrees at (lat, lon): about 2.56 km on the ground."""
    dlat, dlon = 2560 / 110_574, 2560 / (111_320 * np.cos(np.radians(lat)))
    return Affine(dlon / px, 0, lon - dlon / 2, 0, -dlat / px, lat + dlat / 2)


def test_bounds_must_make_sense_for_the_crs(tmp_path):
    rng = np.random.default_rng(3)
    data = stacked(on_grid(s2_band_sets(rng, 1)))
    raw = tmp_path / "raw"
    d = tile(raw, "deg_ok", DATES[:1])
    _write(d / "sentinel2_l2a.tif", data, "EPSG:4326", _geographic_transform(38.0, -75.5, 256))
    d = tile(raw, "deg_tagged_utm_metres", DATES[:1])  # the probe's tile
    _write(d / "sentinel2_l2a.tif", data, "EPSG:4326", Affine(10, 0, 453755, 0, -10, 3404805))
    d = tile(raw, "utm_tagged_degrees", DATES[:1])
    _write(d / "sentinel2_l2a.tif", data, CRS, _geographic_transform(38.0, -75.5, 256))
    result = convert(raw, tmp_path / "out", progress=False)
    skipped = _skipped(result)
    assert sorted(skipped) == ["deg_tagged_utm_metres", "utm_tagged_degrees"]
    assert all(r.startswith("bad georeferencing: sentinel2_l2a.tif") for r in skipped.values())
    assert "longitude" in skipped["deg_tagged_utm_metres"]
    assert "wide on the ground" in skipped["utm_tagged_degrees"]
    latlon = read_sample(result.out_dir / "sample_0.h5").latlon
    np.testing.assert_allclose(latlon, [38, -75.5], atol=1e-4)


def test_south_up_rasters_are_flipped_north_up(tmp_path):
    rng = np.random.default_rng(4)
    sets = s2_band_sets(rng, 1)
    d = tile(tmp_path / "raw", "mixed", DATES[:1])
    for k, arr in enumerate(sets):
        n = arr.shape[-1]
        if k == 0:  # south-up: row 0 is the southern edge
            south_up = Affine(EXTENT / n, 0, LEFT, 0, EXTENT / n, TOP - EXTENT)
            _write(d / f"sentinel2_l2a.b{k}.tif", arr[0, :, ::-1], CRS, south_up)
        else:
            write_tif(d / f"sentinel2_l2a.b{k}.tif", arr[0])
    result = convert(tmp_path / "raw", tmp_path / "out", tile_size=128, progress=False)
    assert result.num_samples == 4 and not result.skipped
    grid = on_grid(sets)
    to_wgs84 = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)
    for q in range(4):
        r, c = divmod(q, 2)
        sample = read_sample(result.out_dir / f"sample_{q}.h5")
        np.testing.assert_array_equal(
            sample.data["sentinel2_l2a"], grid[r * 128 : (r + 1) * 128, c * 128 : (c + 1) * 128]
        )
        lon, lat = to_wgs84.transform(LEFT + (c + 0.5) * 1280, TOP - (r + 0.5) * 1280)
        np.testing.assert_allclose(sample.latlon, [lat, lon], atol=1e-4)


def test_rotated_rasters_are_refused(tmp_path):
    data = stacked(on_grid(s2_band_sets(np.random.default_rng(5), 1)))
    d = tile(tmp_path / "raw", "rotated", DATES[:1])
    rotated = Affine(10, 0.5, LEFT, 0.5, -10, TOP)
    _write(d / "sentinel2_l2a.tif", data, CRS, rotated)
    small_raw(tmp_path / "raw", 1)
    result = convert(tmp_path / "raw", tmp_path / "out", progress=False)
    reason = _skipped(result)["rotated"]
    assert reason.startswith("bad georeferencing: sentinel2_l2a.tif") and "rotated" in reason


def test_empty_timestamps_are_a_bad_tile_json(tmp_path):
    raw = small_raw(tmp_path / "raw", 1)
    d = tile(raw, "no_dates", [])
    write_tif(d / "sentinel2_l2a.tif", stacked(on_grid(s2_band_sets(np.random.default_rng(6), 1))))
    result = convert(raw, tmp_path / "out", progress=False)
    reason = _skipped(result)["no_dates"]
    assert reason.startswith("bad tile.json: ") and "tile.json" in reason and "empty" in reason
