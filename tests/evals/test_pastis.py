from __future__ import annotations

import json

import numpy as np
import pytest

from helios.data.modalities import MISSING_VALUE, get_modality
from helios.data.normalize import RunningStats
from helios.evals.datasets.pastis import PASTIS
from helios.evals.datasets.temporal import monthly_composite
from tests.evals.contract import assert_contract
from tests.evals.data.pastis import S1A_DATES, S1D_DATES, SIDE, make_pastis

L2A, S1 = get_modality("sentinel2_l2a"), get_modality("sentinel1")
S2_FILE_BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_pastis(tmp_path_factory.mktemp("pastis"))


def test_contract(root):
    both = ("sentinel2_l2a", "sentinel1")
    for split in ("train", "val", "test"):
        assert_contract(PASTIS(root, split, modalities=both, s1_orbits=("S1A", "S1D")))
    assert_contract(PASTIS(root, "val", tile_size=SIDE // 4))


def test_folds_and_task(root):
    assert [len(PASTIS(root, s)) for s in ("train", "val", "test")] == [3, 1, 1]
    assert len(PASTIS(root, "val", val_folds=(4, 5))) == 2
    task = PASTIS(root, "test").task
    assert task.num_classes == 19 and task.ignore_index == -1
    assert task.class_names[0] == "background" and task.class_names[18] == "sorghum"


def test_monthly_sentinel2(root):
    item = PASTIS(root, "train")[0]  # patch 10000 (dates-S2 stored as a JSON string)
    s2 = np.load(root / "DATA_S2" / "S2_10000.npy").astype(np.float32)
    present = item.sample.present["sentinel2_l2a"]
    assert present.tolist() == [True, True, False, True, False, True, False, True, False, True,
                                False, True]  # fmt: skip
    arr = item.sample.arrays["sentinel2_l2a"]
    assert arr.shape == (SIDE, SIDE, 7, 12) and arr.dtype == np.float32
    stamps = item.sample.timestamps
    assert stamps[0].tolist() == [15, 9, 2018] and stamps[-1].tolist() == [15, 8, 2019]
    assert stamps[4].tolist() == [15, 1, 2019]
    for i, band in enumerate(S2_FILE_BANDS):
        c = L2A.band_index(band)
        np.testing.assert_array_equal(arr[:, :, 0, c], s2[0, i])  # Sept: one acquisition
        np.testing.assert_allclose(arr[:, :, 1, c], (s2[1, i] + s2[2, i]) / 2)  # Oct: median
        np.testing.assert_allclose(arr[:, :, 4, c], np.median(s2[5:7, i], axis=0))  # Apr
    assert (arr[..., L2A.band_index("B01")] == MISSING_VALUE).all()
    assert (arr[..., L2A.band_index("B09")] == MISSING_VALUE).all()
    full = item.sample.data["sentinel2_l2a"]
    assert full.shape == (SIDE, SIDE, 12, 12) and (full[:, :, 2] == MISSING_VALUE).all()


def test_window_and_mean(root):
    item = PASTIS(root, "val", first_month=(2018, 11), aggregation="mean")[0]  # patch 10003
    s2 = np.load(root / "DATA_S2" / "S2_10003.npy").astype(np.float32)
    present = item.sample.present["sentinel2_l2a"]
    assert present.tolist() == [False, True, False, True, False, True, False, True, False, True,
                                False, True]  # fmt: skip
    arr = item.sample.arrays["sentinel2_l2a"]
    np.testing.assert_allclose(arr[:, :, -1, L2A.band_index("B12")], s2[9, 9])  # Oct 2019
    np.testing.assert_allclose(
        arr[:, :, 2, L2A.band_index("B02")], s2[5:7, 0].mean(axis=0), rtol=1e-6
    )


def test_sentinel1_orbits(root):
    ds = PASTIS(root, "test", modalities=("sentinel2_l2a", "sentinel1"), s1_orbits=("S1A", "S1D"))
    item = ds[0]  # patch 10004
    assert ds.task.modalities == ("sentinel2_l2a", "sentinel1")
    a = np.load(root / "DATA_S1A" / "S1A_10004.npy")
    d = np.load(root / "DATA_S1D" / "S1D_10004.npy")
    present = item.sample.present["sentinel1"]
    assert present.tolist() == [True, False, True, False, False, False, True, False, False, False,
                                True, True]  # fmt: skip
    arr = item.sample.arrays["sentinel1"]
    assert arr.shape == (SIDE, SIDE, 5, 2)
    np.testing.assert_allclose(
        arr[:, :, 0], np.median([a[0, :2], d[0, :2]], axis=0).transpose(1, 2, 0)
    )
    np.testing.assert_allclose(  # Nov 2018: two ascending and one descending acquisition
        arr[:, :, 1, S1.band_index("vh")], np.median([a[1, 1], a[2, 1], d[1, 1]], axis=0)
    )
    only_a = PASTIS(root, "test", modalities=("sentinel1",))[0]
    assert only_a.sample.present["sentinel1"].nonzero()[0].tolist() == [0, 2, 6, 10]
    assert list(only_a.sample.arrays) == ["sentinel1"]
    assert len(S1A_DATES) == 5 and len(S1D_DATES) == 3


def test_labels_tiles_and_latlon(root):
    target = np.load(root / "ANNOTATIONS" / "TARGET_10001.npy")
    item = PASTIS(root, "train")[1]
    assert item.label.dtype == np.int64 and item.label[0, 0] == -1 and item.label[0, 1] == 0
    want = target[0].astype(np.int64)
    want[want == 19] = -1
    np.testing.assert_array_equal(item.label, want)
    lat, lon = item.sample.latlon
    assert 48.0 < lat < 50.0 and 1.5 < lon < 3.5  # Lambert-93 near Paris
    tiles = PASTIS(root, "train", tile_size=SIDE // 2)
    assert len(tiles) == 12
    h = SIDE // 2
    t = tiles[4 + 1]  # patch 10001, top-right tile
    np.testing.assert_array_equal(t.label, want[:h, h:])
    arr = item.sample.arrays["sentinel2_l2a"]
    np.testing.assert_array_equal(t.sample.arrays["sentinel2_l2a"], arr[:h, h:])
    assert t.sample.latlon[1] > lon > tiles[4].sample.latlon[1]


def test_stats_published_and_computed(tmp_path, root):
    stats = PASTIS(root, "val", modalities=("sentinel2_l2a", "sentinel1")).stats()
    # generator: fold f, channel c -> mean 100 f + c, std 10 f + c + 1; train folds 1, 2, 3
    assert stats.get("sentinel2_l2a", "B02").mean == pytest.approx(200.0)
    assert stats.get("sentinel2_l2a", "B12").std == pytest.approx(30.0)
    assert stats.get("sentinel1", "vh").mean == pytest.approx(201.0)
    assert stats.get("sentinel2_l2a", "B01") is None
    fresh = make_pastis(tmp_path)
    (fresh / "NORM_S2_patch.json").unlink()
    computed = PASTIS(fresh, "test", stats_samples=2).stats()
    train = PASTIS(fresh, "train")
    acc = RunningStats(12)
    for i in (0, 1):
        acc.update(train[i].sample.arrays["sentinel2_l2a"])
    b03 = computed.get("sentinel2_l2a", "B03")
    assert b03.count == acc.count[L2A.band_index("B03")] == 2 * 7 * SIDE * SIDE
    assert b03.mean == pytest.approx(acc.mean[L2A.band_index("B03")])


def test_monthly_composite_missing_pixels():
    values = np.array([[1.0, np.nan], [3.0, np.nan], [5.0, 7.0]], dtype=np.float32)
    comp, present = monthly_composite(values, np.array([0, 0, 2]), 4, "median")
    assert present.tolist() == [True, False, True, False]
    np.testing.assert_array_equal(comp, [[2.0, MISSING_VALUE], [5.0, 7.0]])


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="PASTIS folder not found"):
        PASTIS(tmp_path / "nope")
    root = make_pastis(tmp_path)
    with pytest.raises(ValueError, match="tile_size 5 must divide"):
        PASTIS(root, tile_size=5)
    np.save(root / "DATA_S2" / "S2_10001.npy", np.ones((3, 10, SIDE, SIDE), dtype=np.int16))
    with pytest.raises(ValueError, match="S2_10001.npy: 3 acquisitions but .* 10 dates-S2"):
        PASTIS(root)[1]
    (root / "DATA_S2" / "S2_10002.npy").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="S2_10002.npy: cannot read"):
        PASTIS(root)[2]
    (root / "ANNOTATIONS" / "TARGET_10003.npy").unlink()
    with pytest.raises(FileNotFoundError, match="TARGET_10003.npy: missing"):
        PASTIS(root, "val")[0]
    meta = json.loads((root / "metadata.geojson").read_text())
    del meta["features"][0]["properties"]["dates-S1A"]
    (root / "metadata.geojson").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="patch 10000.*no dates-S1A"):
        PASTIS(root, modalities=("sentinel1",))
    (root / "metadata.geojson").unlink()
    with pytest.raises(FileNotFoundError, match="metadata.geojson: missing"):
        PASTIS(root)
