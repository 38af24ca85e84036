from __future__ import annotations

import h5py
import numpy as np
import pytest

from helios.data.modalities import MISSING_VALUE, get_modality
from helios.data.normalize import RunningStats
from helios.evals.datasets.breizhcrops import COLUMNS, BreizhCrops, helios_band
from tests.evals.contract import assert_contract
from tests.evals.data.breizhcrops import CLASSES, make_breizhcrops

L1C, L2A = get_modality("sentinel2"), get_modality("sentinel2_l2a")
PRESENT = [True, False, True, False, True, False, True, True, False, True, False, True]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_breizhcrops(tmp_path_factory.mktemp("breizhcrops"))


def series(root, region, pid, level="L1C"):
    with h5py.File(root / "2017" / level / f"{region}.h5", "r") as f:
        x = f[f"2017/{level}/{region}/csv/{pid}.csv"][()]
    return x[np.argsort(x[:, COLUMNS[level].index("doa")])]


def test_contract(root):
    for split in ("train", "val", "test"):
        assert_contract(BreizhCrops(root, split))
    assert_contract(BreizhCrops(root, "train", monthly=False))


def test_splits_skip_unknown_codes_and_empty_series(root):
    assert [len(BreizhCrops(root, s)) for s in ("train", "val", "test")] == [5, 2, 2]
    assert len(BreizhCrops(root, "train", train_regions=("frh02",))) == 2  # rewritten index
    task = BreizhCrops(root, "val").task
    assert task.kind == "classification" and task.num_classes == 9
    assert task.class_names == tuple(name for name, _ in CLASSES)
    assert task.modalities == ("sentinel2",)


def test_monthly_l1c(root):
    item = BreizhCrops(root, "train")[1]  # frh01 parcel 101001, code CZH (rapeseed)
    assert item.label.dtype == np.int64 and item.label.shape == () and int(item.label) == 2
    x = series(root, "frh01", 101001)
    arr = item.sample.arrays["sentinel2"]
    assert arr.shape == (1, 1, 7, 13) and arr.dtype == np.float32
    assert item.sample.present["sentinel2"].tolist() == PRESENT
    stamps = item.sample.timestamps
    assert stamps.shape == (12, 3) and stamps[4].tolist() == [15, 5, 2017]
    for band in COLUMNS["L1C"][:13]:
        got = arr[0, 0, :, L1C.band_index(helios_band(band))]
        col = x[:, COLUMNS["L1C"].index(band)]
        assert got[0] == pytest.approx((col[0] + col[1]) / 2)  # January: two acquisitions
        assert got[1] == pytest.approx(col[2])  # March
        assert got[2] == pytest.approx((col[3] + col[4]) / 2)  # May
        assert got[-1] == pytest.approx(col[-1])  # December
    assert helios_band("B1") == "B01" and helios_band("B8A") == "B8A"
    assert (item.sample.latlon == MISSING_VALUE).all()
    assert item.sample.ref_size() == 1


def test_raw_series(root):
    item = BreizhCrops(root, "test", monthly=False)[0]  # frh04 parcel 104000
    x = series(root, "frh04", 104000)
    arr = item.sample.arrays["sentinel2"]
    assert arr.shape == (1, 1, 9, 13) and item.sample.present["sentinel2"].all()
    assert item.sample.timestamps[:3].tolist() == [[3, 1, 2017], [23, 1, 2017], [14, 3, 2017]]
    np.testing.assert_allclose(arr[0, 0, :, L1C.band_index("B10")], x[:, 10])
    np.testing.assert_allclose(arr[0, 0, :, L1C.band_index("B12")], x[:, 12])


def test_l2a(tmp_path):
    root = make_breizhcrops(tmp_path, level="L2A")
    ds = BreizhCrops(root, "val", level="L2A", aggregation="mean")
    assert ds.task.modalities == ("sentinel2_l2a",)
    arr = ds[0].sample.arrays["sentinel2_l2a"]
    x = series(root, "frh03", 103000, "L2A")
    assert arr.shape == (1, 1, 7, 12)
    assert (arr[..., L2A.band_index("B01")] == MISSING_VALUE).all()
    assert (arr[..., L2A.band_index("B09")] == MISSING_VALUE).all()
    b11 = x[:, COLUMNS["L2A"].index("B11")]
    assert arr[0, 0, 0, L2A.band_index("B11")] == pytest.approx(b11[:2].mean())


def test_stats(root):
    stats = BreizhCrops(root, "test", stats_samples=3).stats()
    train = BreizhCrops(root, "train")
    acc = RunningStats(13)
    for i in (0, 1, 3):  # evenly spaced: floor(k * 5 / 3)
        acc.update(train[i].sample.arrays["sentinel2"])
    b8a = stats.get("sentinel2", "B8A")
    assert b8a.count == 3 * 7
    assert b8a.mean == pytest.approx(acc.mean[L1C.band_index("B8A")])
    assert stats.meta["sampled_n"] == 3 and stats.meta["total_n"] == 5


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="BreizhCrops folder not found"):
        BreizhCrops(tmp_path / "nope")
    root = make_breizhcrops(tmp_path)
    with pytest.raises(FileNotFoundError, match="2017/L2A/frh03.h5: missing"):
        BreizhCrops(root, "val", level="L2A")
    with h5py.File(root / "2017/L1C/frh03.h5", "a") as f:
        del f["2017/L1C/frh03/csv/103000.csv"]
        f["2017/L1C/frh03/csv/103000.csv"] = np.zeros((4, 5))
        del f["2017/L1C/frh03/csv/103001.csv"]
    ds = BreizhCrops(root, "val")
    with pytest.raises(ValueError, match=r"frh03.h5: .*103000.csv has shape \(4, 5\)"):
        ds[0]
    with pytest.raises(ValueError, match="frh03.h5: no dataset '2017/L1C/frh03/csv/103001.csv'"):
        ds[1]
    with h5py.File(root / "2017/L1C/frh04.h5", "a") as f:
        f["2017/L1C/frh04/csv/104000.csv"][:, -1] = 20170103.0  # a date, not nanoseconds
    with pytest.raises(ValueError, match="104000.csv: the doa column"):
        BreizhCrops(root, "test")[0]
    (root / "2017/L1C/frh02.csv").write_text("id,path\n1,x\n")
    with pytest.raises(ValueError, match=r"frh02.csv: missing column\(s\) \['CODE_CULTU'\]"):
        BreizhCrops(root, "train")
    (root / "classmapping.csv").write_text(",id,classname,code\n0,0,barley,ORH\n1,2,wheat,BTH\n")
    with pytest.raises(ValueError, match="classmapping.csv: class ids must be 0..K-1"):
        BreizhCrops(root)
    (root / "classmapping.csv").unlink()
    with pytest.raises(FileNotFoundError, match="classmapping.csv: missing"):
        BreizhCrops(root)
