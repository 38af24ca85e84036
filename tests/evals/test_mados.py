from __future__ import annotations

import warnings

import numpy as np
import pytest
import rasterio
from rasterio.errors import NotGeoreferencedWarning

from helios.data.modalities import MISSING_VALUE, get_modality
from helios.evals.datasets.mados import MADOS, band_for_wavelength
from tests.evals.contract import assert_contract
from tests.evals.data.mados import SIDE, SPLITS, make_mados

SPEC = get_modality("sentinel2_l2a")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_mados(tmp_path_factory.mktemp("mados"))


def read(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as src:
            return src.read(1)


def test_contract(root):
    for split in SPLITS:
        assert_contract(MADOS(root, split))
    assert_contract(MADOS(root, "val", tile_size=SIDE // 2, drop_unlabeled=True))


def test_splits_and_task(root):
    for split, names in SPLITS.items():
        assert len(MADOS(root, split)) == len(names)
    task = MADOS(root, "val").task
    assert (task.name, task.kind, task.num_classes, task.ignore_index) == (
        "mados",
        "segmentation",
        15,
        -1,
    )
    assert task.modalities == ("sentinel2_l2a",) and task.class_names[5] == "oil_spill"


def test_bands_land_by_wavelength_and_are_upsampled(root):
    item = MADOS(root, "train")[0]  # Scene_0_1, Sentinel-2A names
    arr = item.sample.arrays["sentinel2_l2a"]
    assert arr.shape == (SIDE, SIDE, 1, 12) and arr.dtype == np.float32
    b02 = read(root / "Scene_0/10/Scene_0_L2R_rhorc_492_1.tif")
    got = arr[:, :, 0, SPEC.band_index("B02")]
    assert got[0, 0] == MISSING_VALUE  # NaN in the file
    np.testing.assert_allclose(got.ravel()[1:], b02.ravel()[1:] * 10000, rtol=1e-6)
    b05 = read(root / "Scene_0/20/Scene_0_L2R_rhorc_704_1.tif")
    np.testing.assert_allclose(
        arr[:, :, 0, SPEC.band_index("B05")], np.kron(b05, np.ones((2, 2))) * 10000, rtol=1e-6
    )
    b01 = read(root / "Scene_0/60/Scene_0_L2R_rhorc_443_1.tif")
    np.testing.assert_allclose(
        arr[:, :, 0, SPEC.band_index("B01")], np.kron(b01, np.ones((6, 6))) * 10000, rtol=1e-6
    )
    assert (arr[:, :, 0, SPEC.band_index("B09")] == MISSING_VALUE).all()
    assert (np.delete(arr, SPEC.band_index("B09"), axis=-1)[1:, 1:] != MISSING_VALUE).all()
    assert item.sample.present["sentinel2_l2a"].tolist() == [True]
    assert item.sample.timestamps.tolist() == [[1, 6, 2020]]
    assert item.sample.data["sentinel2_l2a"].shape == (SIDE, SIDE, 1, 12)


def test_sentinel2b_wavelength_names(root):
    arr = MADOS(root, "train")[2].sample.arrays["sentinel2_l2a"]  # Scene_1_1
    for band, nm, res in (("B06", 739, 20), ("B8A", 864, 20), ("B12", 2186, 20), ("B01", 442, 60)):
        src = read(root / f"Scene_1/{res}/Scene_1_L2R_rhorc_{nm}_1.tif")
        k = res // 10
        expect = np.kron(src, np.ones((k, k))) * 10000
        np.testing.assert_allclose(arr[:, :, 0, SPEC.band_index(band)], expect, rtol=1e-6)
    assert band_for_wavelength(740) == band_for_wavelength(741) == "B06"
    assert band_for_wavelength(1375) is None


def test_labels_shift_and_ignore(root):
    item = MADOS(root, "train")[0]
    cl = read(root / "Scene_0/10/Scene_0_L2R_cl_1.tif")
    assert item.label.dtype == np.int64 and item.label.shape == (SIDE, SIDE)
    np.testing.assert_array_equal(item.label, cl.astype(np.int64) - 1)
    assert item.label[1, 1] == 0 and item.label[2, 2] == 14
    assert (item.label[cl == 0] == -1).all()


def test_latlon(root):
    ds = MADOS(root, "train")
    lat, lon = ds[0].sample.latlon
    assert 40.0 < lat < 41.0 and 14.9 < lon < 15.1  # EPSG:32633 near (500 km E, 4500 km N)
    assert (ds[2].sample.latlon == MISSING_VALUE).all()  # Scene_1 is not georeferenced


def test_tiles_and_drop_unlabeled(root):
    full = MADOS(root, "val")[0]
    tiles = MADOS(root, "val", tile_size=SIDE // 4)
    assert len(tiles) == 16
    t5 = tiles[5]
    s = SIDE // 4
    np.testing.assert_array_equal(t5.label, full.label[s : 2 * s, s : 2 * s])
    np.testing.assert_array_equal(
        t5.sample.arrays["sentinel2_l2a"],
        full.sample.arrays["sentinel2_l2a"][s : 2 * s, s : 2 * s],
    )
    kept = MADOS(root, "val", tile_size=SIDE // 4, drop_unlabeled=True)
    assert len(kept) == 1 and (kept[0].label >= 0).any()


def test_stats_are_published_and_scaled(root):
    stats = MADOS(root, "test").stats()
    assert stats.get("sentinel2_l2a", "B02").mean == pytest.approx(522.3386)
    assert stats.get("sentinel2_l2a", "B12").std == pytest.approx(301.9115)
    assert stats.get("sentinel2_l2a", "B09") is None
    raw = MADOS(root, "test", reflectance_scale=1.0)
    assert raw.stats().get("sentinel2_l2a", "B01").mean == pytest.approx(0.0582676)
    assert raw[0].sample.arrays["sentinel2_l2a"][..., 0].max() <= 0.2


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="MADOS folder not found"):
        MADOS(tmp_path / "nope")
    root = make_mados(tmp_path)
    with pytest.raises(ValueError, match="split must be"):
        MADOS(root, "valid")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must divide"):
        MADOS(root, "train", tile_size=7)
    (root / "splits" / "test_X.txt").write_text("Scene_9_1\n")
    with pytest.raises(FileNotFoundError, match="Scene_9"):
        MADOS(root, "test")
    (root / "splits" / "val_X.txt").unlink()
    with pytest.raises(FileNotFoundError, match="val_X.txt"):
        MADOS(root, "val")
    odd = root / "Scene_0" / "20" / "Scene_0_L2R_rhorc_1375_1.tif"
    odd.write_bytes((root / "Scene_0/20/Scene_0_L2R_rhorc_704_1.tif").read_bytes())
    with pytest.raises(ValueError, match="rhorc_1375_1.tif: unknown band wavelength 1375"):
        MADOS(root, "train")[0]
    odd.unlink()
    (root / "Scene_0/10/Scene_0_L2R_rhorc_492_2.tif").write_bytes(b"not a tiff")
    with pytest.raises(ValueError, match="rhorc_492_2.tif: cannot read GeoTIFF"):
        MADOS(root, "train")[1]
    (root / "Scene_1/10/Scene_1_L2R_cl_1.tif").unlink()
    with pytest.raises(FileNotFoundError, match="Scene_1_L2R_cl_1.tif: missing"):
        MADOS(root, "train")[2]
