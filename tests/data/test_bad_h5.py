"""Bad H5 input: named once, counted, never fatal to a whole stats or inspect run.

Each test writes a small directory with one bad sample next to good ones and checks that
reading, `helios data inspect` and `helios data stats` flag the file and keep the rest.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from helios.data.dataset import H5SampleDataset
from helios.data.h5 import (
    Compression,
    H5Directory,
    H5FormatError,
    read_sample,
    write_metadata,
    write_sample,
)
from helios.data.inspect import format_summary, summarize
from helios.data.modalities import MISSING_VALUE
from helios.data.normalize import NormStats, compute_stats

T = 2
TS = np.array([[1, m, 2022] for m in range(1, T + 1)], dtype=np.int32)
RECIPE = "h5py_data_w_missing_timesteps_zstd_3_16_x_256"  # 16 px samples (FORMATS §2 naming)


def _s1(rng: np.random.Generator, side: int = 16) -> np.ndarray:
    return rng.normal(-12, 3, size=(side, side, T, 2)).astype(np.float32)


def _s2(rng: np.random.Generator, side: int = 16) -> np.ndarray:
    return rng.integers(1, 10000, size=(side, side, T, 12)).astype(np.uint16)


def _write_dir(
    root: Path, samples: list[dict[str, np.ndarray]], listed: list[list[str]] | None = None
) -> Path:
    """Samples as given; `listed` (default: what each holds) goes into sample_metadata.csv."""
    root.mkdir(parents=True)
    for i, data in enumerate(samples):
        masks = {m: np.ones(T, dtype=bool) for m, a in data.items() if a.ndim == 4}
        write_sample(root / f"sample_{i}.h5", data, TS, np.zeros(2), masks, Compression())
    rows = [(i, mods) for i, mods in enumerate(listed or [list(s) for s in samples])]
    mods = sorted({m for _, ms in rows for m in ms})
    write_metadata(root, rows, mods, Compression(), np.zeros((len(rows), 2)))
    return root


def _root(tmp_path: Path, mods: str = "sentinel1_sentinel2_l2a") -> Path:
    return tmp_path / RECIPE / mods / "3"


def _problems_of(summary: dict, name: str) -> list[str]:
    return [p for p in summary["problems"] if p.startswith(name)]


def _nonfinite_dir(tmp_path: Path) -> tuple[Path, list[np.ndarray]]:
    rng = np.random.default_rng(0)
    s1 = [_s1(rng) for _ in range(3)]
    s1[1][2, 3, 0, 0] = np.inf
    s1[1][4, 5, 1, 1] = np.nan
    s1[1][6, 7, 1, 0] = -np.inf
    root = _write_dir(_root(tmp_path, "sentinel1"), [{"sentinel1": a} for a in s1])
    return root, s1


def test_stats_treat_non_finite_values_as_missing_and_name_the_file_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root, s1 = _nonfinite_dir(tmp_path)
    with caplog.at_level(logging.WARNING):
        stats = compute_stats(root, progress=False, chunk_size=1)
    out = tmp_path / "stats.json"
    stats.save(out)  # was: "Out of range float values are not JSON compliant"
    loaded = NormStats.load(out)
    values = np.concatenate([a.reshape(-1, 2) for a in s1]).astype(np.float64)
    for c, band in enumerate(("vv", "vh")):
        col = values[:, c][np.isfinite(values[:, c])]
        got = loaded.bands["sentinel1"][band]
        assert got.count == col.size and got.mean == pytest.approx(col.mean(), rel=1e-9)
    assert loaded.meta["nonfinite_n"] == 3 and loaded.meta["failed_n"] == 0
    assert [p for p in loaded.meta["problems"] if "sample_1.h5" in p] == loaded.meta["problems"]
    assert len(loaded.meta["problems"]) == 1 and "3 non-finite" in loaded.meta["problems"][0]
    assert caplog.text.count("sample_1.h5") == 1


def test_stats_cli_writes_stats_despite_non_finite_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from helios.cli import main

    root, _ = _nonfinite_dir(tmp_path)
    out = tmp_path / "stats.json"
    assert main(["data", "stats", str(root), "--out", str(out), "--no-progress"]) == 0
    assert json.loads(out.read_text())["nonfinite_n"] == 3


def test_dataset_reads_non_finite_values_as_missing_and_warns_once_per_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root, s1 = _nonfinite_dir(tmp_path)
    ds = H5SampleDataset(root)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):  # epochs
            data = ds[1].data["sentinel1"]
            assert np.isfinite(ds[1].arrays["sentinel1"]).all()
    bad = ~np.isfinite(s1[1])
    assert (data[bad] == MISSING_VALUE).all() and (data[~bad] == s1[1][~bad]).all()
    assert caplog.text.count("sample_1.h5") == 1 and "3 non-finite" in caplog.text
    assert np.isfinite(ds[0].data["sentinel1"]).all()


def test_signed_data_in_an_unsigned_modality_is_refused_and_reported(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    s2 = [_s2(rng) for _ in range(3)]
    signed = rng.integers(-100, 100, size=(16, 16, T, 12)).astype(np.int8)
    samples = [{"sentinel2_l2a": signed}, {"sentinel2_l2a": s2[1]}, {"sentinel2_l2a": s2[2]}]
    root = _write_dir(_root(tmp_path, "sentinel2_l2a"), samples)
    with pytest.raises(H5FormatError, match=r"sample_0\.h5: sentinel2_l2a .*int8.*uint16"):
        read_sample(root / "sample_0.h5")
    stats = compute_stats(root, progress=False)
    assert stats.meta["failed_n"] == 1 and stats.meta["sampled_n"] == 2
    col = np.concatenate([a[..., 0].ravel() for a in s2[1:]]).astype(np.float64)
    assert stats.bands["sentinel2_l2a"]["B02"].mean == pytest.approx(col.mean(), rel=1e-9)
    assert any("sample_0.h5" in p and "int8" in p for p in stats.meta["problems"])
    summary = summarize(root)
    assert any("sentinel2_l2a" in p and "int8" in p for p in _problems_of(summary, "sample_0.h5"))


def test_negative_floats_in_an_unsigned_modality_are_refused(tmp_path: Path) -> None:
    s2 = _s2(np.random.default_rng(2)).astype(np.float32)
    s2[0, 0, 0, 0] = -3.0
    s2[1, 1, 0, 0] = MISSING_VALUE  # a missing value is not a negative value
    root = _write_dir(_root(tmp_path, "sentinel2_l2a"), [{"sentinel2_l2a": s2}])
    with pytest.raises(H5FormatError, match=r"sample_0\.h5: sentinel2_l2a .*1 negative"):
        read_sample(root / "sample_0.h5")


def test_a_listed_modality_absent_from_the_file_is_flagged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rng = np.random.default_rng(3)
    samples = [{"sentinel2_l2a": _s2(rng), "sentinel1": _s1(rng)} for _ in range(3)]
    del samples[1]["sentinel1"]
    listed = [["sentinel1", "sentinel2_l2a"]] * 3  # the CSV claims sample 1 has Sentinel-1
    root = _write_dir(_root(tmp_path), samples, listed)
    problems = _problems_of(summarize(root), "sample_1.h5")
    assert (
        len(problems) == 1 and "sentinel1" in problems[0] and "sample_metadata.csv" in problems[0]
    )
    assert "sample_1.h5" in format_summary(summarize(root))
    stats = compute_stats(root, progress=False)
    assert [p for p in stats.meta["problems"] if "sentinel1" in p and "sample_1.h5" in p]
    assert stats.meta["failed_n"] == 0  # its Sentinel-2 still counts
    assert stats.bands["sentinel2_l2a"]["B02"].count == 3 * 16 * 16 * T
    ds = H5SampleDataset(root)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        for _ in range(2):  # epochs: one warning
            assert "sentinel1" not in ds[1].arrays
    assert caplog.text.count("sample_1.h5") == 1 and "sentinel1" in caplog.text


def test_wrong_shapes_are_flagged_naming_file_modality_and_shape(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    samples = [{"srtm": rng.integers(0, 500, size=(16, 16, 1)).astype(np.int16)} for _ in range(3)]
    samples[1]["srtm"] = rng.integers(0, 500, size=(100, 77, 1)).astype(np.int16)
    root = _write_dir(_root(tmp_path, "srtm"), samples)
    with pytest.raises(H5FormatError, match=r"sample_1\.h5: srtm .*\(100, 77, 1\)"):
        read_sample(root / "sample_1.h5")
    problems = _problems_of(summarize(root), "sample_1.h5")
    assert len(problems) == 1 and "srtm" in problems[0] and "(100, 77, 1)" in problems[0]
    stats = compute_stats(root, progress=False)
    assert stats.meta["failed_n"] == 1
    assert any("sample_1.h5" in p and "(100, 77, 1)" in p for p in stats.meta["problems"])


def test_modalities_on_different_grids_or_off_the_recipe_are_flagged(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    samples = [{"sentinel2_l2a": _s2(rng), "sentinel1": _s1(rng)} for _ in range(3)]
    samples[0]["sentinel1"] = _s1(rng, side=8)
    samples[2] = {"sentinel2_l2a": _s2(rng, 32), "sentinel1": _s1(rng, 32)}
    root = _write_dir(_root(tmp_path), samples)
    with pytest.raises(H5FormatError, match=r"sample_0\.h5: sentinel1 .*8 .*16"):
        read_sample(root / "sample_0.h5")
    summary = summarize(root)
    assert len(_problems_of(summary, "sample_0.h5")) == 1
    (recipe,) = _problems_of(summary, "sample_2.h5")
    assert "32 px" in recipe and "16 px" in recipe and RECIPE in recipe
    assert not _problems_of(summary, "sample_1.h5")


def test_malformed_metadata_names_the_file_and_the_line(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    root = _write_dir(_root(tmp_path, "sentinel2_l2a"), [{"sentinel2_l2a": _s2(rng)}] * 3)
    settings = root / "compression_settings.json"
    good = settings.read_text()
    settings.write_text('{"compression": "zstd",\n "compression_opts": }')
    with pytest.raises(H5FormatError, match=r"compression_settings\.json.*line 2"):
        H5Directory.open(root)
    for bad, what in (('["zstd"]', "object"), ('{"compression": "brotli"}', "brotli"),
                      ('{"compression": "zstd", "compression_opts": "high"}', "high")):  # fmt: skip
        settings.write_text(bad)
        with pytest.raises(H5FormatError, match=rf"compression_settings\.json.*{what}"):
            H5Directory.open(root)
    settings.write_text(good)
    table = root / "sample_metadata.csv"
    rows = list(csv.reader(table.open()))
    for line, row in ((3, ["x", "1"]), (4, ["2", "yes"]), (2, ["0"]), (3, ["0", "1"])):
        bad_rows = [r[:] for r in rows]
        bad_rows[line - 1] = row
        with table.open("w", newline="") as fh:
            csv.writer(fh).writerows(bad_rows)
        with pytest.raises(H5FormatError, match=rf"sample_metadata\.csv, line {line}: "):
            H5Directory.open(root)


def test_inspect_cli_errors_are_one_line_and_max_samples_defaults_to_1000(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from helios.cli import build_parser, main

    args = build_parser().parse_args(["data", "inspect", str(tmp_path)])
    assert args.max_samples == 1000
    root = _write_dir(
        _root(tmp_path, "sentinel2_l2a"), [{"sentinel2_l2a": _s2(np.random.default_rng(7))}]
    )
    (root / "compression_settings.json").write_text("{")
    assert main(["data", "inspect", str(root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "compression_settings.json" in err[0] and "line 1" in err[0]
