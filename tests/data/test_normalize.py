import json
import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from helios.data import stats as stats_mod
from helios.data.h5 import Compression, read_sample, write_metadata, write_sample
from helios.data.modalities import MISSING_VALUE, get_modality
from helios.data.normalize import (
    BandStats,
    Normalizer,
    NormMethod,
    NormStats,
    RunningStats,
    compute_stats,
    normalize_array,
)

S2 = get_modality("sentinel2_l2a")


def _masked_columns(x: np.ndarray) -> list[np.ndarray]:
    flat = np.asarray(x, dtype=np.float64).reshape(-1, x.shape[-1])
    return [c[(c != MISSING_VALUE) & ~np.isnan(c)] for c in flat.T]


def _random_chunks(rng: np.random.Generator, c: int = 4) -> list[np.ndarray]:
    chunks = []
    for rows in (7, 1, 300, 53, 1000):
        x = rng.normal(1000.0, 250.0, size=(rows, c)).astype(np.float32)
        x[rng.random(x.shape) < 0.2] = MISSING_VALUE
        x[rng.random(x.shape) < 0.05] = np.nan
        chunks.append(x)
    chunks[1][:] = MISSING_VALUE  # a chunk with nothing valid
    return chunks


def _assert_matches(rs: RunningStats, cols: list[np.ndarray]) -> None:
    np.testing.assert_array_equal(rs.count, [len(c) for c in cols])
    np.testing.assert_allclose(rs.mean, [c.mean() for c in cols], rtol=1e-12)
    np.testing.assert_allclose(rs.var, [c.var() for c in cols], rtol=1e-10)
    np.testing.assert_array_equal(rs.min, [c.min() for c in cols])
    np.testing.assert_array_equal(rs.max, [c.max() for c in cols])


def test_running_stats_match_numpy_in_chunks_and_any_merge_order() -> None:
    chunks = _random_chunks(np.random.default_rng(0))
    cols = _masked_columns(np.concatenate(chunks))

    sequential = RunningStats(4)
    for x in chunks:
        sequential.update(x)
    _assert_matches(sequential, cols)

    parts = [RunningStats(4).update(x) for x in chunks]
    forward, backward = RunningStats(4), RunningStats(4)
    for p in parts:
        forward.merge(p)
    for p in reversed(parts):
        backward.merge(p)
    tree = parts[0].merge(parts[1]).merge(parts[2].merge(parts[3]).merge(parts[4]))
    for rs in (forward, backward, tree):
        _assert_matches(rs, cols)


def test_running_stats_blocks_and_leading_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stats_mod, "_BLOCK_ELEMENTS", 40)  # many blocks per update
    x = np.random.default_rng(1).normal(5.0, 2.0, size=(6, 5, 3, 4)).astype(np.float32)
    x[0, :, 1] = MISSING_VALUE
    _assert_matches(RunningStats(4).update(x), _masked_columns(x))


def test_running_stats_large_offset_small_variance() -> None:
    rng = np.random.default_rng(2)
    x = 1e8 + rng.normal(0.0, 1e-3, size=(30000, 1))
    rs = RunningStats(1)
    for part in np.array_split(x, 7):
        rs.update(part)
    np.testing.assert_allclose(rs.var, np.var(x - 1e8), rtol=1e-6)
    np.testing.assert_allclose(rs.mean, np.mean(x), rtol=1e-15)


def test_running_stats_empty_band_and_shape_check() -> None:
    x = np.ones((10, 2), dtype=np.float32)
    x[:, 1] = MISSING_VALUE
    rs = RunningStats(2).update(x)
    first, second = rs.band_stats()
    assert second is None
    assert first == BandStats(1.0, 0.0, 10, 1.0, 1.0)
    with pytest.raises(ValueError, match="expected 2 bands"):
        rs.update(np.ones((3, 3)))


def _write_fixture(root: Path) -> dict[str, list[np.ndarray]]:
    """Three samples: S2 L2A (8x8, T=3, one with a missing step and nodata) and SRTM."""
    rng = np.random.default_rng(3)
    root.mkdir(parents=True)
    stored: dict[str, list[np.ndarray]] = {"sentinel2_l2a": [], "srtm": []}
    rows = []
    for i in range(3):
        present = np.array([True, i != 1, True])
        s2 = rng.integers(1, 10000, size=(8, 8, int(present.sum()), S2.num_bands), dtype=np.uint16)
        s2[0, :3] = 0  # source nodata: must be ignored
        data = {"sentinel2_l2a": s2}
        stored["sentinel2_l2a"].append(s2)
        if i != 2:
            data["srtm"] = rng.integers(-20, 3000, size=(8, 8, 1), dtype=np.int16)
            stored["srtm"].append(data["srtm"])
        ts = np.array([[1, m, 2022] for m in (1, 2, 3)], dtype=np.int32)
        present_masks = {"sentinel2_l2a": present}
        write_sample(root / f"sample_{i}.h5", data, ts, np.ones(2), present_masks, Compression())
        rows.append((i, list(data)))
    write_metadata(root, rows, ["sentinel2_l2a", "srtm"], Compression(), np.zeros((3, 2)))
    return stored


@pytest.fixture(scope="module")
def h5_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[np.ndarray]]]:
    root = tmp_path_factory.mktemp("h5") / "sentinel2_l2a_srtm" / "3"
    return root, _write_fixture(root)


def _numpy_stats(arrays: list[np.ndarray], nodata: float | None) -> list[np.ndarray]:
    c = arrays[0].shape[-1]
    flat = np.concatenate([a.reshape(-1, c).astype(np.float64) for a in arrays])
    return [col[col != nodata] if nodata is not None else col for col in flat.T]


def test_compute_stats_matches_numpy_and_workers(h5_dir: tuple[Path, dict]) -> None:
    root, stored = h5_dir
    one = compute_stats(root, workers=1, progress=False, chunk_size=1)
    for name, nodata in (("sentinel2_l2a", 0), ("srtm", None)):
        cols = _numpy_stats(stored[name], nodata)
        order = get_modality(name).band_order
        assert list(one.bands[name]) == list(order)
        for band, col in zip(order, cols):
            s = one.bands[name][band]
            assert s.count == len(col)
            assert s.mean == pytest.approx(col.mean(), rel=1e-12)
            assert s.std == pytest.approx(col.std(), rel=1e-12)
            assert (s.min, s.max) == (col.min(), col.max())
    assert one.meta == {
        "tile_path": str(root),
        "total_n": 3,
        "sampled_n": 3,
        "failed_n": 0,
        "nonfinite_n": 0,
        "problems": [],
    }
    two = compute_stats(root, workers=2, progress=False, chunk_size=1)
    assert two.bands == one.bands  # chunks merge in order: bit-identical

    via_data: dict[str, RunningStats] = {}  # the float32 `Sample.data` contract agrees
    for i in range(3):
        for name, arr in read_sample(root / f"sample_{i}.h5").data.items():
            via_data.setdefault(name, RunningStats(arr.shape[-1])).update(arr)
    for name, per_band in NormStats.from_running(via_data).bands.items():
        for band, s in per_band.items():
            ref = one.bands[name][band]
            assert (s.count, s.min, s.max) == (ref.count, ref.min, ref.max)
            assert (s.mean, s.std) == pytest.approx((ref.mean, ref.std), rel=1e-12)


def test_compute_stats_subset_and_modalities(h5_dir: tuple[Path, dict]) -> None:
    root, stored = h5_dir
    sub = compute_stats(root, modalities=["srtm"], max_samples=2, progress=False)
    assert list(sub.bands) == ["srtm"]
    col = _numpy_stats(stored["srtm"], None)[0]  # positions 0 and 1: both have srtm
    assert sub.bands["srtm"]["srtm"].mean == pytest.approx(col.mean(), rel=1e-12)
    assert sub.meta["sampled_n"] == 2


def test_compute_stats_skips_and_names_bad_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "ds"
    _write_fixture(root)
    (root / "sample_1.h5").write_bytes(b"not an hdf5 file")
    with caplog.at_level(logging.WARNING, logger="helios.data.normalize"):
        stats = compute_stats(root, progress=False)
    assert "sample_1.h5" in caplog.text and "skipped 1" in caplog.text
    assert stats.meta["failed_n"] == 1 and stats.meta["sampled_n"] == 2
    for i in (0, 2):
        (root / f"sample_{i}.h5").unlink()
    with pytest.raises(ValueError, match=r"no sample could be read.*sample_0\.h5"):
        compute_stats(root, progress=False)


def _stats() -> NormStats:
    return NormStats(
        bands={"srtm": {"srtm": BandStats(mean=100.0, std=50.0, count=7, min=-5.0, max=900.0)}},
        meta={"total_n": 3},
    )


def test_json_round_trip(tmp_path: Path) -> None:
    stats = _stats()
    path = tmp_path / "stats.json"
    stats.save(path)
    payload = json.loads(path.read_text())
    expected = {"mean": 100.0, "std": 50.0, "var": 2500.0, "count": 7, "min": -5.0, "max": 900.0}
    assert payload["srtm"]["srtm"] == expected
    assert payload["total_n"] == 3 and "var_definition" in payload
    assert NormStats.load(path) == stats
    assert [p.name for p in tmp_path.iterdir()] == ["stats.json"]


def test_load_upstream_layout_and_errors_name_the_file(tmp_path: Path) -> None:
    upstream = {
        "sampled_n": 10,
        "tile_path": "/data/h5",
        "srtm": {"srtm": {"count": 4, "mean": 10.0, "std": 2.0, "var": 16.0}},
        "era5_10": {"2m-temperature": {"count": 4, "mean": 280.0, "std": 9.0, "var": 324.0}},
    }
    path = tmp_path / "computed.json"
    path.write_text(json.dumps(upstream))
    with pytest.raises(ValueError, match=r"computed\.json: unknown modality 'era5_10'"):
        NormStats.load(path)
    stats = NormStats.load(path, strict=False)
    assert stats.bands == {"srtm": {"srtm": BandStats(10.0, 2.0, 4)}}
    assert stats.bands["srtm"]["srtm"].var == 4.0  # upstream's var (M2) is not read
    assert stats.meta == {"sampled_n": 10, "tile_path": "/data/h5"}

    path.write_text(json.dumps({"srtm": {"elevation": {"mean": 1.0, "std": 1.0}}}))
    with pytest.raises(ValueError, match=r"computed\.json: srtm has no band 'elevation'"):
        NormStats.load(path)
    path.write_text(json.dumps({"srtm": {"srtm": {"mean": 1.0}}}))
    with pytest.raises(ValueError, match=r"computed\.json: srtm/srtm: bad band stats"):
        NormStats.load(path)
    path.write_text("{")
    with pytest.raises(ValueError, match=r"computed\.json: not valid JSON"):
        NormStats.load(path)


# mean 10, std 2 (k=1: [8, 12], k=2: [6, 14], k=3: [4, 16]); min 0, max 20.
X = np.array([4.0, 6.0, 7.0, 10.0, 13.0, 14.0, 18.0], dtype=np.float32)[:, None]
Q = lambda *v: np.floor(np.array(v) * 255) / 255  # noqa: E731
EXPECTED = {
    NormMethod.NORM_NO_CLIP: [-1.0, -0.5, -0.25, 0.5, 1.25, 1.5, 2.5],
    NormMethod.NORM_NO_CLIP_2_STD: [-0.25, 0.0, 0.125, 0.5, 0.875, 1.0, 1.5],
    NormMethod.NORM_YES_CLIP: [0.0, 0.0, 0.0, 0.5, 1.0, 1.0, 1.0],
    NormMethod.NORM_YES_CLIP_2_STD: [0.0, 0.0, 0.125, 0.5, 0.875, 1.0, 1.0],
    NormMethod.NORM_YES_CLIP_3_STD: [0.0, 1 / 6, 0.25, 0.5, 0.75, 5 / 6, 1.0],
    NormMethod.NORM_YES_CLIP_INT: Q(0, 0, 0, 0.5, 1, 1, 1),
    NormMethod.NORM_YES_CLIP_2_STD_INT: Q(0, 0, 0.125, 0.5, 0.875, 1, 1),
    NormMethod.NORM_YES_CLIP_3_STD_INT: Q(0, 1 / 6, 0.25, 0.5, 0.75, 5 / 6, 1),
    NormMethod.NORM_YES_CLIP_MIN_MAX_INT: Q(0.2, 0.3, 0.35, 0.5, 0.65, 0.7, 0.9),
    NormMethod.STANDARDIZE: [-3.0, -2.0, -1.5, 0.0, 1.5, 2.0, 4.0],
    NormMethod.NO_NORM: [4.0, 6.0, 7.0, 10.0, 13.0, 14.0, 18.0],
}


@pytest.mark.parametrize("method", list(NormMethod))
def test_each_method_on_known_inputs(method: NormMethod) -> None:
    expected = np.asarray(EXPECTED[method], dtype=np.float64)[:, None]
    out = normalize_array(X, method, [10.0], [2.0], [0.0], [20.0])
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-6)
    via_torch = normalize_array(torch.from_numpy(X), method.value, [10.0], [2.0], [0.0], [20.0])
    np.testing.assert_allclose(via_torch.numpy(), expected, rtol=0, atol=1e-6)
    stats = NormStats({"srtm": {"srtm": BandStats(10.0, 2.0, 1, 0.0, 20.0)}})
    np.testing.assert_array_equal(Normalizer(stats, method)("srtm", X), out)


@pytest.mark.parametrize("method", list(NormMethod))
def test_missing_values_stay_missing(method: NormMethod) -> None:
    x = np.full((2, 3, 4, S2.num_bands), 500.0, dtype=np.float32)
    x[0, 1, 2] = MISSING_VALUE
    x[1, :, 0, 3] = MISSING_VALUE
    missing = x == MISSING_VALUE
    stats = NormStats.from_running({S2.name: RunningStats(S2.num_bands).update(x * 3)})
    for normalizer in (Normalizer(stats, method), Normalizer(None, NormMethod.NO_NORM)):
        out = normalizer(S2.name, x)
        assert out.dtype == np.float32 and out.shape == x.shape
        np.testing.assert_array_equal(out == MISSING_VALUE, missing)
        t = normalizer(S2.name, torch.from_numpy(x))
        assert torch.equal(t == MISSING_VALUE, torch.from_numpy(missing))
    out = normalize_array(x, method, [400.0] * 12, [50.0] * 12, [0.0] * 12, [1e3] * 12)
    np.testing.assert_array_equal(out == MISSING_VALUE, missing)


def test_min_max_method_needs_min_max() -> None:
    with pytest.raises(ValueError, match="needs per-band min and max"):
        normalize_array(X, NormMethod.NORM_YES_CLIP_MIN_MAX_INT, [10.0], [2.0])


def test_pretraining_transform_and_fallback_ranges(caplog: pytest.LogCaptureFixture) -> None:
    x = np.array([[0.0, 50.0], [-10.0, MISSING_VALUE]], dtype=np.float32)[..., None]
    srtm = Normalizer(_stats())("srtm", x)  # (x - (100 - 2 * 50)) / (4 * 50)
    np.testing.assert_allclose(srtm[..., 0], [[0.0, 0.25], [-0.05, MISSING_VALUE]])

    fixed = Normalizer()  # no stats: fixed ranges, srtm 0..8000, sentinel1 -50..0
    np.testing.assert_allclose(fixed("srtm", x)[..., 0], [[0.0, 50 / 8000], [-10 / 8000, -99999]])
    s1 = np.array([[-50.0, -25.0], [0.0, -12.5]], dtype=np.float32)
    np.testing.assert_allclose(Normalizer(_stats())("sentinel1", s1), [[0, 0.5], [1, 0.75]])

    constant = BandStats(1.0, 0.0, 9)
    partial = NormStats({S2.name: {"B02": BandStats(1000.0, 500.0, 9)}, "srtm": {"srtm": constant}})
    with caplog.at_level(logging.WARNING, logger="helios.data.normalize"):
        a, b = Normalizer(partial).bounds(S2.name)
        srtm_a, srtm_b = Normalizer(partial).bounds("srtm")  # std 0: unusable
    assert (srtm_a.tolist(), srtm_b.tolist()) == ([0.0], [8000.0])
    assert (a[0], b[0]) == (0.0, 2000.0)
    np.testing.assert_array_equal(a[1:], 0.0)
    np.testing.assert_array_equal(b[1:], 10000.0)
    assert "B03" in caplog.text and "srtm" in caplog.text
    with pytest.raises(ValueError, match=r"standardize needs mean/std for sentinel2_l2a"):
        Normalizer(partial, NormMethod.STANDARDIZE)(S2.name, np.zeros((1, 12), np.float32))
    with pytest.raises(ValueError, match="expected 12 bands"):
        fixed(S2.name, np.zeros((1, 11), np.float32))


def test_std_multiplier_and_serialization() -> None:
    ranges = {"sentinel1": (-30.0, 10.0)}
    custom = Normalizer(_stats(), "norm_yes_clip", std_multiplier=4.0, fallback_ranges=ranges)
    x = np.array([[-100.0], [100.0], [500.0]], dtype=np.float32)
    np.testing.assert_allclose(custom("srtm", x)[:, 0], [0.0, 0.5, 1.0])
    payload = json.loads(json.dumps(custom.to_dict()))
    assert payload["method"] == "norm_yes_clip" and payload["std_multiplier"] == 4.0
    restored = Normalizer.from_dict(payload)
    assert restored.stats == custom.stats and restored.method is NormMethod.NORM_YES_CLIP
    assert restored.fallback_ranges == custom.fallback_ranges
    s1 = np.array([[-30.0, 10.0]], dtype=np.float32)
    np.testing.assert_array_equal(restored("sentinel1", s1), custom("sentinel1", s1))
    assert Normalizer.from_dict(Normalizer().to_dict()).stats is None
    pickled = pickle.loads(pickle.dumps(custom))  # DataLoader workers get a copy
    np.testing.assert_array_equal(pickled("srtm", x), custom("srtm", x))
    with pytest.raises(ValueError, match="std_multiplier"):
        Normalizer(None, NormMethod.STANDARDIZE, std_multiplier=2.0)


def test_dataset_stats_min_max_from_compute_stats(h5_dir: tuple[Path, dict]) -> None:
    root, stored = h5_dir
    stats = compute_stats(root, modalities=["srtm"], progress=False)
    col = _numpy_stats(stored["srtm"], None)[0]
    normalizer = Normalizer(stats, NormMethod.NORM_YES_CLIP_MIN_MAX_INT)
    out = normalizer("srtm", np.array([[col.min()], [col.max()]], dtype=np.float32))
    np.testing.assert_array_equal(out[:, 0], [0.0, 1.0])
    vec = NormStats.from_vectors("srtm", [col.mean()], [col.std()], [col.min()], [col.max()])
    assert vec.bands["srtm"]["srtm"].max == col.max()
