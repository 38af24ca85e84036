from __future__ import annotations

import shutil

import numpy as np
import pytest
import rasterio

from helios.data.modalities import MISSING_VALUE, get_modality
from helios.data.normalize import RunningStats
from helios.evals.datasets.sen1floods11 import Sen1Floods11
from tests.evals.contract import assert_contract
from tests.evals.data.sen1floods11 import SIDE, make_sen1floods11

S1, S2 = get_modality("sentinel1"), get_modality("sentinel2")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_sen1floods11(tmp_path_factory.mktemp("sen1floods11"))


def hand(root, layer, chip):
    with rasterio.open(root / f"data/flood_events/HandLabeled/{layer}/{chip}_{layer}.tif") as src:
        return src.read()


def test_contract(root):
    for split in ("train", "val", "test"):
        assert_contract(Sen1Floods11(root, split, modalities=("sentinel1", "sentinel2")))
    assert_contract(Sen1Floods11(root, "test", test_set="bolivia", tile_size=SIDE // 2))


def test_splits_and_task(root):
    assert [len(Sen1Floods11(root, s)) for s in ("train", "val", "test")] == [3, 1, 2]
    assert len(Sen1Floods11(root, "test", test_set="bolivia")) == 1
    task = Sen1Floods11(root, "val", modalities=("sentinel1", "sentinel2")).task
    assert task.kind == "segmentation" and task.num_classes == 2 and task.ignore_index == -1
    assert task.modalities == ("sentinel1", "sentinel2")


def test_sentinel1_values_dates_and_labels(root):
    ds = Sen1Floods11(root, "train")
    item = ds[0]  # Ghana_103272
    arr = item.sample.arrays["sentinel1"]
    assert list(item.sample.arrays) == ["sentinel1"]
    assert arr.shape == (SIDE, SIDE, 1, 2) and arr.dtype == np.float32
    s1 = hand(root, "S1Hand", "Ghana_103272")
    assert arr[0, 0, 0, S1.band_index("vv")] == MISSING_VALUE  # NaN in the file
    np.testing.assert_array_equal(arr[..., 0, S1.band_index("vh")], s1[1])
    np.testing.assert_array_equal(arr[..., 0, 0].ravel()[1:], s1[0].ravel()[1:])
    assert item.sample.timestamps.tolist() == [[18, 9, 2018]]  # Ghana S1 date
    assert ds[1].sample.timestamps.tolist() == [[5, 8, 2018]]  # Mekong = Cambodia event
    label = hand(root, "LabelHand", "Ghana_103272")[0]
    assert item.label.dtype == np.int64
    np.testing.assert_array_equal(item.label, label)
    assert (item.label[: SIDE // 2, : SIDE // 2] == -1).all()
    lat, lon = item.sample.latlon
    assert lat == pytest.approx(6.3 - 16 * 8.983e-5, abs=1e-5)
    assert lon == pytest.approx(-1.2 + 16 * 8.983e-5, abs=1e-5)


def test_sentinel2_bands_by_name(root):
    item = Sen1Floods11(root, "val", modalities=("sentinel2",))[0]  # India_1068117
    arr = item.sample.arrays["sentinel2"]
    assert arr.shape == (SIDE, SIDE, 1, 13)
    s2 = hand(root, "S2Hand", "India_1068117").astype(np.float32)
    file_bands = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10",
                  "B11", "B12"]  # fmt: skip
    for i, band in enumerate(file_bands):
        got = arr[..., 0, S2.band_index(band)]
        if band == "B02":
            assert got[0, 0] == MISSING_VALUE  # nodata 0
            got, want = got.ravel()[1:], s2[i].ravel()[1:]
        else:
            want = s2[i]
        np.testing.assert_array_equal(got, want)
    assert item.sample.timestamps.tolist() == [[12, 8, 2016]]  # India S2 date


def test_both_modalities_and_tiles(root):
    full = Sen1Floods11(root, "test", modalities=("sentinel1", "sentinel2"))[1]
    tiles = Sen1Floods11(root, "test", modalities=("sentinel1", "sentinel2"), tile_size=SIDE // 2)
    assert len(tiles) == 8
    t = tiles[4 + 3]  # second chip, bottom-right tile
    h = SIDE // 2
    np.testing.assert_array_equal(t.label, full.label[h:, h:])
    for m in ("sentinel1", "sentinel2"):
        np.testing.assert_array_equal(t.sample.arrays[m], full.sample.arrays[m][h:, h:])
    assert t.sample.timestamps.tolist() == [[22, 5, 2019]]  # USA S1 date
    assert t.sample.latlon[0] < full.sample.latlon[0] < tiles[4].sample.latlon[0]
    kept = Sen1Floods11(root, "test", tile_size=SIDE // 2, drop_unlabeled=True)
    assert len(kept) == 6  # each chip's top-left tile is all no-data


def test_stats(root):
    stats = Sen1Floods11(root, "test", modalities=("sentinel1", "sentinel2")).stats()
    assert stats.get("sentinel1", "vv").mean == pytest.approx(0.6851 * 51 - 50)
    assert stats.get("sentinel1", "vh").std == pytest.approx(0.1102 * 51)
    acc = RunningStats(13)
    train = Sen1Floods11(root, "train", modalities=("sentinel2",))
    for i in range(len(train)):
        acc.update(train[i].sample.arrays["sentinel2"])
    b02 = stats.get("sentinel2", "B02")
    assert b02.count == acc.count[S2.band_index("B02")] == 3 * SIDE * SIDE - 3
    assert b02.mean == pytest.approx(acc.mean[S2.band_index("B02")])
    assert Sen1Floods11(root, "train").stats().get("sentinel2", "B02") is None


def test_flat_layout_and_files_without_descriptions(tmp_path):
    bucket = make_sen1floods11(tmp_path)
    flat = tmp_path / "flat"
    shutil.copytree(bucket / "data/flood_events/HandLabeled", flat)
    for csv in (bucket / "splits/flood_handlabeled").iterdir():
        shutil.copy(csv, flat / csv.name)
    path = flat / "S2Hand" / "Ghana_103272_S2Hand.tif"
    with rasterio.open(path) as src:
        profile, data = src.profile, src.read()
    with rasterio.open(path, "w", **profile) as dst:  # same bands, no descriptions
        dst.write(data)
    arr = Sen1Floods11(flat, "train", modalities=("sentinel2",))[0].sample.arrays["sentinel2"]
    np.testing.assert_array_equal(arr[..., 0, S2.band_index("B8A")], data[8])
    np.testing.assert_array_equal(arr[..., 0, S2.band_index("B10")], data[10])


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="Sen1Floods11 folder not found"):
        Sen1Floods11(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="LabelHand/ folder"):
        Sen1Floods11(tmp_path)
    root = make_sen1floods11(tmp_path)
    with pytest.raises(ValueError, match="modalities must be"):
        Sen1Floods11(root, modalities=("sentinel2_l2a",))  # type: ignore[arg-type]
    splits = root / "splits/flood_handlabeled"
    (splits / "flood_valid_data.csv").write_text("Atlantis_1_S1Hand.tif,Atlantis_1_LabelHand.tif\n")
    with pytest.raises(ValueError, match="unknown event 'Atlantis'"):
        Sen1Floods11(root, "val")
    (splits / "flood_valid_data.csv").write_text("Ghana_1.tif,Ghana_1_LabelHand.tif\n")
    with pytest.raises(ValueError, match="flood_valid_data.csv, line 1: expected"):
        Sen1Floods11(root, "val")
    (splits / "flood_bolivia_data.csv").unlink()
    with pytest.raises(FileNotFoundError, match="flood_bolivia_data.csv"):
        Sen1Floods11(root, "test", test_set="bolivia")
    data = root / "data/flood_events/HandLabeled"
    s2 = data / "S2Hand" / "Ghana_103272_S2Hand.tif"
    with rasterio.open(s2, "r+") as dst:
        dst.set_band_description(3, "Red")
    with pytest.raises(ValueError, match="Ghana_103272_S2Hand.tif: unknown band 'Red'"):
        Sen1Floods11(root, "train", modalities=("sentinel2",))[0]
    (data / "S1Hand" / "Mekong_1111068_S1Hand.tif").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="Mekong_1111068_S1Hand.tif: cannot read GeoTIFF"):
        Sen1Floods11(root, "train")[1]
    (data / "S1Hand" / "Sri-Lanka_101973_S1Hand.tif").unlink()
    with pytest.raises(FileNotFoundError, match="Sri-Lanka_101973_S1Hand.tif: missing"):
        Sen1Floods11(root, "train")[2]
