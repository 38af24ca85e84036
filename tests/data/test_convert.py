"""`helios.data.convert`: raw GeoTIFF tiles (docs/data.md) -> the FORMATS §2 H5 layout."""

from __future__ import annotations

import csv
import json
import os

import h5py
import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import Transformer

import helios.data.convert as convert_mod
from helios.cli import main
from helios.data.convert import IN_PROGRESS, REPORT_JSON, SOURCES_CSV, convert
from helios.data.h5 import Compression, H5Directory, read_sample
from helios.data.modalities import MISSING_VALUE, get_modality

CRS = "EPSG:32618"
LEFT, TOP, EXTENT = 400_000.0, 4_200_000.0, 2560.0
DATES = ["2023-01-15", "2023-02-15", "2023-03-15"]
S2 = get_modality("sentinel2_l2a")
RECIPE = "h5py_data_w_missing_timesteps_zstd_3_256_x_1"


def write_tif(path, data, crs=CRS, left=LEFT, top=TOP):
    """Write [C, H, W] as a GeoTIFF covering the standard 2.56 km tile at (left, top)."""
    c, h, w = data.shape
    transform = Affine(EXTENT / w, 0, left, 0, -EXTENT / h, top)
    with rasterio.open(
        path, "w", driver="GTiff", width=w, height=h, count=c, dtype=data.dtype,
        crs=crs, transform=transform,
    ) as ds:  # fmt: skip
        ds.write(data)


def s2_band_sets(rng, steps):
    """Native-resolution band-set arrays [T, C_k, n_k, n_k] of sentinel2_l2a."""
    return [
        rng.integers(1, 10000, size=(steps, len(bs.bands), n, n), dtype=np.uint16)
        for k, bs in enumerate(S2.band_sets)
        for n in [S2.band_set_pixels(k)]
    ]


def on_grid(sets):
    """Band sets upsampled by pixel repeat and concatenated: [256, 256, T, 12]."""
    parts = []
    for arr in sets:
        f = 256 // arr.shape[-1]
        parts.append(np.repeat(np.repeat(arr, f, axis=2), f, axis=3))
    return np.concatenate(parts, axis=1).transpose(2, 3, 0, 1)


def tile(root, name, dates=None):
    d = root / name
    d.mkdir(parents=True)
    if dates is not None:
        (d / "tile.json").write_text(json.dumps({"timestamps": dates}))
    return d


def stacked(arr):
    """[H, W, T, C] -> step-major bands [T*C, H, W]."""
    h, w, t, c = arr.shape
    return np.ascontiguousarray(arr.transpose(2, 3, 0, 1).reshape(t * c, h, w))


def make_raw(root, rng):
    """Four good tiles (every file layout) and eight bad ones; returns the expected arrays."""
    truth = {}
    # a: one file per band set and step; step 1 has no files
    d = tile(root, "a_sets_steps", DATES)
    sets = s2_band_sets(rng, 3)
    for k, arr in enumerate(sets):
        for s in (0, 2):
            write_tif(d / f"sentinel2_l2a.b{k}.t{s}.tif", arr[s])
    srtm = rng.integers(-20, 800, size=(1, 256, 256), dtype=np.int16)
    write_tif(d / "srtm.tif", srtm)
    truth["a_sets_steps"] = (on_grid(sets), [True, False, True], srtm)
    # b: all bands and steps in one file; step 1 is all nodata
    d = tile(root, "b_stacked", DATES)
    full = on_grid(s2_band_sets(rng, 3))
    full[:, :, 1] = 0
    write_tif(d / "sentinel2_l2a.tif", stacked(full))
    srtm = rng.integers(-20, 800, size=(1, 256, 256), dtype=np.int16)
    write_tif(d / "srtm.tif", srtm)
    write_tif(d / "era5.tif", np.zeros((6, 4, 4), dtype=np.float32))  # ignored with a note
    truth["b_stacked"] = (full, [True, False, True], srtm)
    # c: one file per band set, steps stacked
    d = tile(root, "c_sets_stacked", DATES[:2])
    sets = s2_band_sets(rng, 2)
    for k, arr in enumerate(sets):
        write_tif(d / f"sentinel2_l2a.b{k}.tif", arr.reshape(-1, *arr.shape[2:]))
    truth["c_sets_stacked"] = (on_grid(sets), [True, True], None)
    # d: one file per step, all bands; Sentinel-1 (float32 dB) with only step 0
    d = tile(root, "d_steps", DATES[:2])
    full = on_grid(s2_band_sets(rng, 2))
    for s in range(2):
        write_tif(d / f"sentinel2_l2a.t{s}.tif", stacked(full[:, :, s : s + 1]))
    s1 = rng.normal(-12, 3, size=(2, 256, 256)).astype(np.float32)
    write_tif(d / "sentinel1.t0.tif", s1)
    truth["d_steps"] = (full, [True, True], s1)

    good = s2_band_sets(rng, 2)[0][0]  # [4, 256, 256]
    d = tile(root, "bad_corrupt")
    (d / "srtm.tif").write_bytes(b"II*\x00 this is not a GeoTIFF" * 10)
    d = tile(root, "bad_crs", DATES[:1])
    write_tif(d / "sentinel2_l2a.b0.t0.tif", good)
    write_tif(d / "sentinel2_l2a.b1.t0.tif", good[:1].repeat(6, 0)[:, :128, :128], crs="EPSG:32617")
    write_tif(d / "sentinel2_l2a.b2.t0.tif", good[:2, :64, :64])
    d = tile(root, "bad_bounds", DATES[:1])
    write_tif(d / "sentinel2_l2a.tif", np.concatenate([good] * 3))
    write_tif(d / "srtm.tif", srtm, left=LEFT + 100)
    d = tile(root, "bad_json")
    (d / "tile.json").write_text("{not json")
    write_tif(d / "srtm.tif", srtm)
    d = tile(root, "bad_nan", DATES[:2])
    nan = rng.normal(-12, 3, size=(4, 256, 256)).astype(np.float32)
    nan[1, 5, 5] = np.nan
    write_tif(d / "sentinel1.tif", nan)
    d = tile(root, "bad_nodata", DATES[:2])
    write_tif(d / "sentinel2_l2a.tif", np.zeros((24, 256, 256), dtype=np.uint16))
    d = tile(root, "bad_shape", DATES[:1])
    write_tif(d / "sentinel2_l2a.b0.tif", good[:, :200, :200])
    d = tile(root, "bad_steps", DATES)
    few = on_grid(s2_band_sets(rng, 3))
    few[:, :, 1:] = 0
    write_tif(d / "sentinel2_l2a.tif", stacked(few))
    (root / ".hidden_tmp").mkdir()  # hidden dirs are not tiles
    return truth


REASONS = {
    "bad_bounds": "mismatched bounds",
    "bad_corrupt": "unreadable",
    "bad_crs": "mismatched CRS",
    "bad_json": "bad tile.json",
    "bad_nan": "NaN values",
    "bad_nodata": "all nodata",
    "bad_shape": "wrong shape",
    "bad_steps": "too few timesteps",
}
POSITIONS = {"a_sets_steps": 0, "b_stacked": 1, "c_sets_stacked": 10, "d_steps": 11}


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("convert")
    truth = make_raw(root / "raw", np.random.default_rng(0))
    result = convert(root / "raw", root / "out", min_timesteps=2, workers=1, progress=False)
    return result, truth, root


def test_layout(converted):
    result, _, root = converted
    out = root / "out" / RECIPE / "sentinel1_sentinel2_l2a_srtm" / "4"
    assert result.out_dir == out and result.num_samples == 4 and result.num_tiles == 12
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        ["compression_settings.json", "conversion_report.json", "latlon_distribution.npy",
         "sample_metadata.csv", "sample_sources.csv"]
        + [f"sample_{i}.h5" for i in (0, 1, 10, 11)]
    )  # fmt: skip
    assert sorted(p.name for p in out.parent.iterdir()) == ["4"]  # the in-progress dir is gone
    assert json.loads((out / "compression_settings.json").read_text()) == {
        "compression": "zstd", "compression_opts": 3, "shuffle": None,
    }  # fmt: skip
    with (out / "sample_metadata.csv").open() as fh:
        rows = list(csv.reader(fh))
    assert rows == [
        ["sample_index", "sentinel1", "sentinel2_l2a", "srtm"],
        ["0", "0", "1", "1"], ["1", "0", "1", "1"], ["10", "0", "1", "0"], ["11", "1", "1", "0"],
    ]  # fmt: skip
    with (out / SOURCES_CSV).open() as fh:
        sources = [tuple(r) for r in csv.reader(fh)]
    assert sources[0] == ("sample_index", "tile_id", "quadrant")
    assert sources[1:] == [(str(i), t, "0") for t, i in POSITIONS.items()]
    assert np.load(out / "latlon_distribution.npy").shape == (4, 2)

    with h5py.File(out / "sample_0.h5") as f:
        assert sorted(f) == ["latlon", "missing_timesteps_masks", "sentinel2_l2a", "srtm",
                             "timestamps"]  # fmt: skip
        assert f["sentinel2_l2a"].shape == (256, 256, 2, 12)  # only the present steps
        assert f["sentinel2_l2a"].dtype == np.uint16
        assert f["srtm"].shape == (256, 256, 1) and f["srtm"].dtype == np.int16
        assert f["latlon"].dtype == np.float32
        for name in ("sentinel2_l2a", "srtm"):
            assert f[name].id.get_create_plist().get_filter(0)[0] == 32015
            assert f[name].chunks == f[name].shape
        assert f["missing_timesteps_masks/sentinel2_l2a"][()].tolist() == [True, False, True]
        assert list(f["missing_timesteps_masks"]) == ["sentinel2_l2a"]
        np.testing.assert_array_equal(
            f["timestamps"][()], [[15, 1, 2023], [15, 2, 2023], [15, 3, 2023]]
        )
        lon, lat = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True).transform(
            LEFT + EXTENT / 2, TOP - EXTENT / 2
        )
        np.testing.assert_allclose(f["latlon"][()], [lat, lon], atol=1e-4)
    with h5py.File(out / "sample_11.h5") as f:
        assert f["sentinel1"].shape == (256, 256, 1, 2) and f["sentinel1"].dtype == np.float32
        assert f["missing_timesteps_masks/sentinel1"][()].tolist() == [True, False]
    assert H5Directory.open(out).indices == [0, 1, 10, 11]


def test_round_trip(converted):
    result, truth, _ = converted
    for tile_id, (s2, present, extra) in truth.items():
        sample = read_sample(result.out_dir / f"sample_{POSITIONS[tile_id]}.h5")
        expected = s2.astype(np.float32)
        expected[:, :, ~np.array(present)] = MISSING_VALUE
        np.testing.assert_array_equal(sample.data["sentinel2_l2a"], expected)
        if tile_id == "d_steps":
            s1 = sample.data["sentinel1"]
            np.testing.assert_array_equal(s1[:, :, 0], extra.transpose(1, 2, 0))
            assert (s1[:, :, 1] == MISSING_VALUE).all()
        elif extra is not None:
            np.testing.assert_array_equal(sample.data["srtm"][:, :, 0], extra[0])
        else:
            assert "srtm" not in sample.data


def test_report_lists_each_bad_tile(converted):
    result, _, _ = converted
    assert {t: r.split(":")[0] for t, r in result.skipped} == REASONS
    report = json.loads(result.report_path.read_text())
    assert report["counts"]["skipped_tiles"] == 8 and report["counts"]["samples"] == 4
    assert report["counts"]["skip_reasons"] == {r: 1 for r in REASONS.values()}
    assert report["counts"]["samples_per_modality"] == {"sentinel1": 1, "sentinel2_l2a": 4,
                                                        "srtm": 2}  # fmt: skip
    assert any("era5" in n for n in report["notes"])
    reasons = dict(result.skipped)
    assert "sentinel2_l2a.b1.t0.tif" in reasons["bad_crs"]
    assert "(4, 200, 200)" in reasons["bad_shape"]
    assert "1 present timesteps, at least 2" in reasons["bad_steps"]
    text = result.summary()
    assert "converted 4 of 12 tiles into 4 samples" in text and "skipped 8 tiles" in text


def test_already_complete(converted):
    result, _, root = converted
    again = convert(root / "raw", root / "out", min_timesteps=2, progress=False)
    assert again.already_complete and again.out_dir == result.out_dir and again.written == 0
    assert again.num_samples == 4 and len(again.skipped) == 8
    assert "already complete" in again.summary()


def test_split_128_with_osm(tmp_path):
    rng = np.random.default_rng(1)
    d = tile(tmp_path / "raw", "a", DATES[:1])
    sets = s2_band_sets(rng, 1)
    for k, arr in enumerate(sets):
        write_tif(d / f"sentinel2_l2a.b{k}.tif", arr[0])
    osm = (rng.random((30, 1024, 1024)) < 0.05).astype(np.uint8)
    write_tif(d / "openstreetmap_raster.tif", osm)
    d = tile(tmp_path / "raw", "b", DATES[:1])  # bottom-right quadrant all nodata
    part = on_grid(s2_band_sets(rng, 1))
    part[128:, 128:] = 0
    write_tif(d / "sentinel2_l2a.tif", stacked(part))

    result = convert(tmp_path / "raw", tmp_path / "out", tile_size=128, progress=False)
    assert result.out_dir.parent.parent.name == "h5py_data_w_missing_timesteps_zstd_3_128_x_4"
    assert result.out_dir.name == "7" and result.num_samples == 7
    assert H5Directory.open(result.out_dir).indices == [0, 1, 2, 3, 4, 5, 6]
    report = json.loads(result.report_path.read_text())
    assert [(s["index"], s["quadrant"]) for s in report["skipped_samples"]] == [(7, 3)]
    s2 = on_grid(sets)
    for q in range(4):
        r, c = divmod(q, 2)
        sample = read_sample(result.out_dir / f"sample_{q}.h5")
        np.testing.assert_array_equal(
            sample.data["sentinel2_l2a"], s2[r * 128 : (r + 1) * 128, c * 128 : (c + 1) * 128]
        )
        np.testing.assert_array_equal(
            sample.data["openstreetmap_raster"],
            osm[:, r * 512 : (r + 1) * 512, c * 512 : (c + 1) * 512].transpose(1, 2, 0),
        )
    with (result.out_dir / SOURCES_CSV).open() as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["tile_id"], r["quadrant"]) for r in rows] == [
        ("a", "0"), ("a", "1"), ("a", "2"), ("a", "3"), ("b", "0"), ("b", "1"), ("b", "2"),
    ]  # fmt: skip
    to_wgs84 = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)
    for q, (r, c) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):  # latlon: quadrant centres
        lon, lat = to_wgs84.transform(LEFT + (c + 0.5) * 1280, TOP - (r + 0.5) * 1280)
        latlon = read_sample(result.out_dir / f"sample_{q}.h5").latlon
        np.testing.assert_allclose(latlon, [lat, lon], atol=1e-4)


def interrupted(*args, **kwargs):
    """Stands in for `_finalize`: the run stops after writing samples, before renaming."""
    raise KeyboardInterrupt


def small_raw(root, n=2):
    rng = np.random.default_rng(2)
    for i in range(n):
        d = tile(root, f"t{i}", DATES[:2])
        write_tif(d / "sentinel2_l2a.tif", stacked(on_grid(s2_band_sets(rng, 2))))
    return root


@pytest.mark.parametrize(
    ("compression", "filter_id", "payload"),
    [
        (Compression("gzip", 4), 1, {"compression": "gzip", "compression_opts": 4}),
        (Compression("lz4", None), 32004, {"compression": "lz4", "compression_opts": None}),
    ],
)
def test_gzip_and_lz4(tmp_path, compression, filter_id, payload):
    raw = small_raw(tmp_path / "raw", 1)
    result = convert(raw, tmp_path / "out", compression=compression, progress=False)
    recipe = f"h5py_data_w_missing_timesteps{compression.suffix}_256_x_1"
    assert result.out_dir.parent.parent.name == recipe
    with h5py.File(result.out_dir / "sample_0.h5") as f:
        assert f["sentinel2_l2a"].id.get_create_plist().get_filter(0)[0] == filter_id
    assert json.loads((result.out_dir / "compression_settings.json").read_text()) == payload | {
        "shuffle": None
    }


def test_interrupted_run_resumes(tmp_path, monkeypatch):
    raw = small_raw(tmp_path / "raw", 3)
    dataset = tmp_path / "out" / RECIPE / "sentinel2_l2a"

    monkeypatch.setattr(convert_mod, "_finalize", interrupted)
    with pytest.raises(KeyboardInterrupt):
        convert(raw, tmp_path / "out", progress=False)
    monkeypatch.undo()
    # the partial directory never looks complete
    assert [p.name for p in dataset.iterdir()] == [IN_PROGRESS]
    work = dataset / IN_PROGRESS
    assert not (work / "sample_metadata.csv").exists() and not (work / REPORT_JSON).exists()
    with pytest.raises(FileNotFoundError):
        H5Directory.open(dataset / "3")

    (work / "sample_1.h5").unlink()
    (work / ".sample_2.h5.12345.tmp").write_bytes(b"half a file")  # a writer killed mid-way
    mtimes = {i: os.stat(work / f"sample_{i}.h5").st_mtime_ns for i in (0, 2)}
    result = convert(raw, tmp_path / "out", workers=2, progress=False)
    assert result.written == 1 and result.num_samples == 3
    assert any("resumed" in n for n in result.notes)
    assert {i: os.stat(result.out_dir / f"sample_{i}.h5").st_mtime_ns for i in (0, 2)} == mtimes
    assert not list(result.out_dir.glob(".*"))  # no temp files, no journal
    assert [p.name for p in dataset.iterdir()] == ["3"]
    again = convert(raw, tmp_path / "out", progress=False)
    assert again.already_complete and again.written == 0


def test_changed_tile_is_rewritten_on_resume(tmp_path, monkeypatch):
    raw = small_raw(tmp_path / "raw", 2)
    monkeypatch.setattr(convert_mod, "_finalize", interrupted)
    with pytest.raises(KeyboardInterrupt):
        convert(raw, tmp_path / "out", progress=False)
    monkeypatch.undo()
    new = on_grid(s2_band_sets(np.random.default_rng(9), 2))
    write_tif(raw / "t1" / "sentinel2_l2a.tif", stacked(new))
    result = convert(raw, tmp_path / "out", progress=False)
    assert result.written == 1
    np.testing.assert_array_equal(
        read_sample(result.out_dir / "sample_1.h5").data["sentinel2_l2a"], new
    )


def test_invalid_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        convert(tmp_path / "nowhere", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no tiles"):
        convert(tmp_path / "empty", tmp_path / "out")
    raw = small_raw(tmp_path / "raw", 1)
    with pytest.raises(ValueError, match="unknown modality 'sentinel3'"):
        convert(raw, tmp_path / "out", modalities=["sentinel3"])
    with pytest.raises(ValueError, match="non-spatial"):
        convert(raw, tmp_path / "out", modalities=["era5"])
    with pytest.raises(ValueError, match="tile_size"):
        convert(raw, tmp_path / "out", tile_size=100)


def test_cli_exit_status(tmp_path, capsys):
    raw = small_raw(tmp_path / "raw", 1)
    assert main(["data", "convert", str(raw), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    assert "converted 1 of 1 tiles" in capsys.readouterr().out
    bad = tile(tmp_path / "bad", "x", DATES[:1])
    write_tif(bad / "sentinel2_l2a.tif", np.zeros((12, 256, 256), dtype=np.uint16))
    assert main(["data", "convert", str(tmp_path / "bad"), "--out", str(tmp_path / "o2"),
                 "--no-progress"]) == 1  # fmt: skip
    assert "nothing converted" in capsys.readouterr().out
