"""The existing H5 layout (FORMATS §2), built by hand with h5py, loads through Helios unchanged."""

import csv
import json

import h5py
import hdf5plugin
import numpy as np
import pytest

from helios.data.dataset import H5SampleDataset
from helios.data.h5 import (
    Compression,
    H5Directory,
    H5FormatError,
    read_sample,
    recipe_dirname,
    write_sample,
)
from helios.data.modalities import MISSING_VALUE

T = 4


def _hand_built(tmp_path):
    """Three samples written the way upstream writers do, one compression codec each."""
    root = (
        tmp_path
        / "h5py_data_w_missing_timesteps_zstd_3_128_x_4"
        / "sentinel1_sentinel2_l2a_srtm"
        / "3"
    )
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    codecs = [
        hdf5plugin.Zstd(clevel=3),
        {"compression": "gzip", "compression_opts": 4},
        hdf5plugin.LZ4(nbytes=0),
    ]
    truth = []
    for i, codec in enumerate(codecs):
        s2 = rng.integers(1, 10000, size=(16, 16, 3, 12)).astype(np.uint16)  # 3 of 4 steps present
        s1 = rng.normal(-12, 3, size=(16, 16, T, 2)).astype(np.float32)
        srtm = rng.integers(0, 500, size=(16, 16, 1)).astype(np.int16)
        mask_s2 = np.array([True, False, True, True])
        ts = np.array([[1, m, 2022] for m in (3, 4, 5, 6)], dtype=np.int64)
        with h5py.File(root / f"sample_{i}.h5", "w") as f:
            f.create_dataset("latlon", data=np.array([38.1, -75.4 + i], dtype=np.float32))
            f.create_dataset("timestamps", data=ts)
            f.create_dataset("sentinel2_l2a", data=s2, chunks=s2.shape, **codec)
            if i != 1:  # sample 1 has no Sentinel-1
                f.create_dataset("sentinel1", data=s1, chunks=s1.shape, **codec)
            f.create_dataset("srtm", data=srtm, chunks=srtm.shape, **codec)
            g = f.create_group("missing_timesteps_masks")
            g.create_dataset("sentinel2_l2a", data=mask_s2)
            if i != 1:
                g.create_dataset("sentinel1", data=np.ones(T, dtype=bool))
        truth.append((s2, s1 if i != 1 else None, srtm, mask_s2))
    with (root / "sample_metadata.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["sample_index", "sentinel1", "sentinel2_l2a", "srtm"])
        for i in range(3):
            w.writerow([i, int(i != 1), 1, 1])
    (root / "compression_settings.json").write_text(
        json.dumps({"compression": "zstd", "compression_opts": 3, "shuffle": None})
    )
    np.save(root / "latlon_distribution.npy", np.zeros((3, 2), dtype=np.float32))
    return root, truth


def test_hand_built_directory_loads_unchanged(tmp_path):
    root, truth = _hand_built(tmp_path)
    directory = H5Directory.open(root)
    assert directory.indices == [0, 1, 2]
    assert directory.compression == Compression("zstd", 3)
    assert directory.presence["sentinel1"].tolist() == [1, 0, 1]

    ds = H5SampleDataset(root)
    assert len(ds) == 3
    assert set(ds.modalities) == {"sentinel1", "sentinel2_l2a", "srtm"}
    for i, (s2, s1, srtm, mask) in enumerate(truth):
        sample = ds[i]
        assert sample.timestamps.tolist()[0] == [1, 3, 2022]
        assert sample.latlon[1] == pytest.approx(-75.4 + i)
        got = sample.data["sentinel2_l2a"]
        assert got.shape == (16, 16, T, 12) and got.dtype == np.float32
        np.testing.assert_array_equal(got[:, :, mask], s2.astype(np.float32))
        assert (got[:, :, 1] == MISSING_VALUE).all()  # the missing step stays missing
        assert sample.present_timesteps("sentinel2_l2a").tolist() == mask.tolist()
        np.testing.assert_array_equal(sample.data["srtm"], srtm.astype(np.float32))
        if s1 is None:
            assert "sentinel1" not in sample.data
        else:
            np.testing.assert_allclose(sample.data["sentinel1"], s1)


def test_nodata_becomes_missing(tmp_path):
    path = tmp_path / "sample_0.h5"
    s2 = np.full((8, 8, 1, 12), 500, dtype=np.uint16)
    s2[0, 0, 0, 3] = 0  # Sentinel-2 nodata
    write_sample(
        path,
        {"sentinel2_l2a": s2},
        np.array([[1, 1, 2020]]),
        np.zeros(2),
        {"sentinel2_l2a": np.array([True])},
        Compression(),
    )
    arr = read_sample(path).data["sentinel2_l2a"]
    assert arr[0, 0, 0, 3] == MISSING_VALUE and (arr[1:] == 500).all()


@pytest.mark.parametrize(
    "comp",
    [
        Compression("zstd", 5),
        Compression("gzip", 6),
        Compression("lz4", None),
        Compression("none", None),
    ],
)
def test_write_read_round_trip(tmp_path, comp):
    rng = np.random.default_rng(1)
    s2 = rng.integers(1, 10000, size=(8, 8, 2, 12)).astype(np.uint16)
    present = {"sentinel2_l2a": np.array([True, False, True])}
    path = tmp_path / "sample_7.h5"
    write_sample(
        path,
        {"sentinel2_l2a": s2},
        np.array([[1, 1, 2020], [1, 2, 2020], [1, 3, 2020]]),
        np.array([1.0, 2.0]),
        present,
        comp,
    )
    assert not list(tmp_path.glob(".*tmp"))  # no temporary left behind
    sample = read_sample(path)
    np.testing.assert_array_equal(sample.data["sentinel2_l2a"][:, :, [0, 2]], s2)
    with h5py.File(path) as f:
        ds = f["sentinel2_l2a"]
        filters = [
            ds.id.get_create_plist().get_filter(i)[0]
            for i in range(ds.id.get_create_plist().get_nfilters())
        ]
        expected = {"zstd": [32015], "gzip": [1], "lz4": [32004], "none": []}[comp.name]
        assert filters == expected
        if comp.name != "none":
            assert ds.chunks == ds.shape  # one chunk per dataset


def test_recipe_names():
    assert (
        recipe_dirname(Compression("zstd", 3), 128)
        == "h5py_data_w_missing_timesteps_zstd_3_128_x_4"
    )
    assert (
        recipe_dirname(Compression("gzip", 4), 256)
        == "h5py_data_w_missing_timesteps_gzip_4_256_x_1"
    )
    with pytest.raises(ValueError, match="zstd level"):
        Compression("zstd", 40)
    with pytest.raises(ValueError, match="unknown compression"):
        Compression("brotli", 1)  # type: ignore[arg-type]


def test_errors_name_the_file(tmp_path):
    bad = tmp_path / "sample_0.h5"
    bad.write_bytes(b"not an hdf5 file at all")
    with pytest.raises(H5FormatError, match="sample_0.h5"):
        read_sample(bad)
    with h5py.File(tmp_path / "sample_1.h5", "w") as f:
        f.create_dataset("latlon", data=np.zeros(2, dtype=np.float32))
        f.create_dataset("timestamps", data=np.zeros((2, 3), dtype=np.int32))
        f.create_dataset("sentinel2_l2a", data=np.zeros((4, 4, 2, 5), dtype=np.uint16))
    with pytest.raises(H5FormatError, match="sample_1.h5.*5 bands"):
        read_sample(tmp_path / "sample_1.h5")
    with pytest.raises(FileNotFoundError, match="no such H5"):
        H5Directory.open(tmp_path / "absent")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(H5FormatError, match="no samples"):
        H5Directory.open(empty)
