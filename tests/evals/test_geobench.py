from __future__ import annotations

import ast
import io
import json
import pickle
import shutil
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from helios.data.modalities import MISSING_VALUE, get_modality
from helios.data.normalize import Normalizer
from helios.evals.datasets.geobench import (
    PLACEHOLDER_DATE,
    SPECS,
    GeoBenchDataset,
    GeoBenchFormatError,
    _SafeUnpickler,
    split_descriptor,
)
from tests.evals.contract import assert_contract
from tests.evals.data.geobench import TASKS, make_geobench, make_task, upstream_classes


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_geobench(tmp_path_factory.mktemp("geobench"))


def _raw(ds: GeoBenchDataset, index: int) -> dict[str, np.ndarray]:
    """The sample's stored datasets, keyed by band name without the date suffix."""
    with h5py.File(ds.dataset_dir / f"{ds.sample_names[index]}.hdf5") as f:
        return {split_descriptor(key)[0]: f[key][()] for key in f}


def _stored_label(ds: GeoBenchDataset, index: int) -> Any:
    """The label as GEO-Bench's loader sees it (a plain unpickle, upstream classes stood in)."""
    with h5py.File(ds.dataset_dir / f"{ds.sample_names[index]}.hdf5") as f, upstream_classes():
        return pickle.loads(ast.literal_eval(f.attrs["pickle"]))["label"]


def _band(ds: GeoBenchDataset, index: int, modality: str, band: str) -> np.ndarray:
    arr = ds[index].sample.arrays[modality]
    return arr[:, :, 0, get_modality(modality).band_index(band)]


@pytest.mark.parametrize("name", sorted(TASKS))
@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_contract(root: Path, name: str, split: str) -> None:
    ds = GeoBenchDataset(root, name, split)  # type: ignore[arg-type]
    assert_contract(ds)
    partition = json.loads((ds.dataset_dir / "default_partition.json").read_text())
    assert ds.sample_names == partition["valid" if split == "val" else split]
    assert ds.task.num_classes == TASKS[name].num_classes
    size = TASKS[name].size
    for i in range(len(ds)):
        item = ds[i]
        for modality, arr in item.sample.arrays.items():
            assert arr.shape == (size, size, 1, get_modality(modality).num_bands)
            assert item.sample.present[modality].tolist() == [True]
        assert item.sample.timestamps.shape == (1, 3)
        if ds.task.kind == "multilabel":
            assert item.label.shape == (43,)


def test_eurosat_bands_follow_the_files_order(root: Path) -> None:
    ds = GeoBenchDataset(root, "m-eurosat")
    raw = _raw(ds, 1)
    assert ds.task.modalities == ("sentinel2",)
    np.testing.assert_array_equal(_band(ds, 1, "sentinel2", "B02"), raw["02 - Blue"])
    # EuroSAT files hold B8A last; GEO-Bench stored it as "12 - SWIR" (geo-bench#28).
    np.testing.assert_array_equal(_band(ds, 1, "sentinel2", "B8A"), raw["12 - SWIR"])
    np.testing.assert_array_equal(
        _band(ds, 1, "sentinel2", "B09"), raw["08A - Vegetation Red Edge"]
    )
    np.testing.assert_array_equal(_band(ds, 1, "sentinel2", "B12"), raw["11 - SWIR"])
    as_stored = GeoBenchDataset(root, "m-eurosat", corrected_bands=False)
    np.testing.assert_array_equal(_band(as_stored, 1, "sentinel2", "B12"), raw["12 - SWIR"])
    assert int(ds[1].label) == _stored_label(ds, 1)


def test_l1c_as_l2a_drops_b10(root: Path) -> None:
    ds = GeoBenchDataset(root, "m-eurosat", l1c_as="sentinel2_l2a")
    raw = _raw(ds, 0)
    assert ds.task.modalities == ("sentinel2_l2a",)
    np.testing.assert_array_equal(_band(ds, 0, "sentinel2_l2a", "B11"), raw["10 - SWIR - Cirrus"])
    assert not any(np.array_equal(_band(ds, 0, "sentinel2_l2a", b), raw["09 - Water vapour"])
                   for b in get_modality("sentinel2_l2a").band_order)  # fmt: skip


def test_bigearthnet_multi_hot(root: Path) -> None:
    ds = GeoBenchDataset(root, "m-bigearthnet", "test")
    raw = _raw(ds, 1)
    np.testing.assert_array_equal(ds[1].label, _stored_label(ds, 1).astype(np.float32))
    assert ds[1].label.sum() >= 1
    np.testing.assert_array_equal(
        _band(ds, 1, "sentinel2_l2a", "B8A"), raw["08A - Vegetation Red Edge"]
    )
    assert ds.task.class_names[-1] == "Sea and ocean"


def test_so2sat_units_and_missing_bands(root: Path) -> None:
    ds = GeoBenchDataset(root, "m-so2sat")
    raw, item = _raw(ds, 0), ds[0]
    assert ds.task.modalities == ("sentinel2", "sentinel1")
    np.testing.assert_allclose(_band(ds, 0, "sentinel2", "B04"), raw["04 - Red"] * 10000, rtol=1e-6)
    for band in ("B01", "B09", "B10"):  # So2Sat has no coastal, water-vapour or cirrus band
        assert (_band(ds, 0, "sentinel2", band) == MISSING_VALUE).all()
    vv, lee_vv = _band(ds, 0, "sentinel1", "vv"), raw["06 - VV.LEE Filtered"]
    ok = lee_vv > 0
    np.testing.assert_allclose(vv[ok], 10 * np.log10(lee_vv[ok]), rtol=1e-5)
    assert vv[0, 0] == MISSING_VALUE and not ok[0, 0]  # zero intensity has no dB value
    assert not np.isnan(item.sample.arrays["sentinel1"]).any()


def test_brick_kiln_corrected_and_located(root: Path) -> None:
    ds = GeoBenchDataset(root, "m-brick-kiln", "val")
    raw = _raw(ds, 0)
    np.testing.assert_array_equal(
        _band(ds, 0, "sentinel2_l2a", "B8A"), raw["07 - Vegetation Red Edge"]
    )
    np.testing.assert_array_equal(
        _band(ds, 0, "sentinel2_l2a", "B11"), raw["08A - Vegetation Red Edge"]
    )
    for band in ("B06", "B09"):  # not exported; TCI_R/G/B (stored as B10-B12) are dropped
        assert (_band(ds, 0, "sentinel2_l2a", band) == MISSING_VALUE).all()
    lat, lon = ds[0].sample.latlon
    assert 21 < lat < 26 and 88 < lon < 92


def test_forestnet_landsat_dates_and_centre(root: Path) -> None:
    ds = GeoBenchDataset(root, "m-forestnet", "test")
    raw, item = _raw(ds, 1), ds[1]
    assert ds.task.modalities == ("landsat",)
    np.testing.assert_array_equal(_band(ds, 1, "landsat", "B5"), raw["05 - NIR"])
    np.testing.assert_array_equal(_band(ds, 1, "landsat", "B4"), raw["04 - Red"])
    for band in ("B1", "B8", "B9", "B10", "B11"):
        assert (_band(ds, 1, "landsat", band) == MISSING_VALUE).all()
    lat, lon, year, month, day = ds.sample_names[1].split("_")
    assert item.sample.timestamps.tolist() == [[int(day), int(month), int(year)]]
    np.testing.assert_allclose(item.sample.latlon, [float(lat), float(lon)], atol=1e-3)


@pytest.mark.parametrize("name", ["m-cashew-plant", "m-SA-crop-type"])
def test_segmentation(root: Path, name: str) -> None:
    ds = GeoBenchDataset(root, name, "val")  # type: ignore[arg-type]
    raw, item = _raw(ds, 1), ds[1]
    np.testing.assert_array_equal(item.label, raw["label"].astype(np.int64))
    np.testing.assert_array_equal(_band(ds, 1, "sentinel2_l2a", "B12"), raw["12 - SWIR"])
    assert item.sample.arrays["sentinel2_l2a"].shape[-1] == 12  # cloud band dropped
    assert (item.sample.latlon == MISSING_VALUE).all()
    if name == "m-SA-crop-type":
        assert item.sample.timestamps.tolist() == [list(PLACEHOLDER_DATE)]
    else:
        with h5py.File(ds.dataset_dir / f"{ds.sample_names[1]}.hdf5") as f:
            date = next(k for k in f if k.startswith("02 - Blue_")).split("_")[1]
        y, m, d = (int(v) for v in date.split("-"))
        assert item.sample.timestamps.tolist() == [[d, m, y]]


def test_label_fraction_partitions(root: Path) -> None:
    full = GeoBenchDataset(root, "m-eurosat", "train")
    everything = GeoBenchDataset(root, "m-eurosat", "train", "1.00x_train")
    assert sorted(everything.sample_names) == sorted(full.sample_names)
    for partition, size in [("0.01x_train", 1), ("0.50x_train", 2)]:
        sub = GeoBenchDataset(root, "m-eurosat", "train", partition)
        assert len(sub) == size and set(sub.sample_names) <= set(full.sample_names)
        assert GeoBenchDataset(root, "m-eurosat", "test", partition).sample_names == (
            GeoBenchDataset(root, "m-eurosat", "test").sample_names
        )


def test_stats(root: Path) -> None:
    ds = GeoBenchDataset(root, "m-eurosat")
    payload = json.loads((ds.dataset_dir / "band_stats.json").read_text())
    stats = ds.stats()
    b8a = stats.get("sentinel2", "B8A")
    assert b8a is not None and b8a.mean == pytest.approx(payload["12 - SWIR"]["mean"])
    assert b8a.min == pytest.approx(payload["12 - SWIR"]["min"])
    so2sat = GeoBenchDataset(root, "m-so2sat").stats()
    red = json.loads((root / "classification_v1.0/m-so2sat/band_stats.json").read_text())[
        "04 - Red"
    ]
    assert so2sat.bands["sentinel2"]["B04"].std == pytest.approx(red["std"] * 10000)
    assert "sentinel1" not in so2sat.bands and "B01" not in so2sat.bands["sentinel2"]
    big = GeoBenchDataset(root, "m-bigearthnet").stats()
    assert len(big.bands["sentinel2_l2a"]) == 12
    arr = GeoBenchDataset(root, "m-so2sat")[0].sample.arrays["sentinel2"]
    out = Normalizer(so2sat)("sentinel2", arr)
    assert (out[arr == MISSING_VALUE] == MISSING_VALUE).all()
    assert np.abs(out[arr != MISSING_VALUE]).max() < 10


def test_errors_name_the_file(root: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="classification_v1.0/m-eurosat"):
        GeoBenchDataset(tmp_path, "m-eurosat")
    with pytest.raises(FileNotFoundError, match=r"0.33x_train_partition.json.*0.01x_train"):
        GeoBenchDataset(root, "m-eurosat", partition="0.33x_train")
    task = shutil.copytree(root / "classification_v1.0/m-eurosat", tmp_path / "m-eurosat")
    ds = GeoBenchDataset(tmp_path, "m-eurosat")
    bad = task / f"{ds.sample_names[0]}.hdf5"
    bad.write_bytes(b"not an hdf5 file")
    with pytest.raises(GeoBenchFormatError, match=bad.name):
        ds[0]
    with h5py.File(task / f"{ds.sample_names[1]}.hdf5", "a") as f:
        f.create_dataset("13 - Mystery", data=np.zeros((64, 64), np.int16))
    with pytest.raises(GeoBenchFormatError, match="unknown band '13 - Mystery'"):
        ds[1]
    with h5py.File(task / f"{ds.sample_names[2]}.hdf5", "a") as f:
        f.attrs["pickle"] = str(pickle.dumps({"bands_order": [], "label": 99}))
    with pytest.raises(GeoBenchFormatError, match="not a class index"):
        ds[2]
    (task / "band_stats.json").write_text("{")
    with pytest.raises(GeoBenchFormatError, match="band_stats.json"):
        ds.stats()
    (task / "default_partition.json").write_text(json.dumps({"train": ["nope"]}))
    with pytest.raises(FileNotFoundError, match="nope.hdf5"):
        GeoBenchDataset(tmp_path, "m-eurosat")


class _Exploit:
    def __init__(self, func: object, arg: str) -> None:
        self.func, self.arg = func, arg

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return self.func, (self.arg,)


def test_pickles_cannot_run_code(root: Path, tmp_path: Path) -> None:
    import os

    marker = tmp_path / "ran"
    payload = pickle.dumps({"label": 1, "x": _Exploit(os.system, f"touch {marker}")})
    attrs = _SafeUnpickler(io.BytesIO(payload)).load()
    assert not marker.exists() and type(attrs["x"]).__name__ == "system"
    with pytest.raises(pickle.UnpicklingError, match="builtins.eval"):
        _SafeUnpickler(io.BytesIO(pickle.dumps(_Exploit(eval, "1")))).load()
    old_numpy = _SafeUnpickler(io.BytesIO(b"")).find_class("numpy.core.multiarray", "_reconstruct")
    assert old_numpy is np.zeros(1).__reduce__()[0]
    task = make_task(tmp_path, "m-so2sat")
    ds = GeoBenchDataset(tmp_path, "m-so2sat")
    with h5py.File(task / f"{ds.sample_names[0]}.hdf5", "a") as f:
        f.attrs["pickle"] = str(pickle.dumps({"label": _Exploit(eval, "3")}))
    with pytest.raises(GeoBenchFormatError, match=ds.sample_names[0]):
        ds[0]


def test_specs_cover_the_generator() -> None:
    assert set(SPECS) == set(TASKS)
    for name, spec in SPECS.items():
        assert spec.size == TASKS[name].size and spec.folder == TASKS[name].folder
