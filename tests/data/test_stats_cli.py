import json
from pathlib import Path

import numpy as np
import pytest

from helios.cli import main
from helios.data.h5 import Compression, write_metadata, write_sample
from helios.data.normalize import NormStats


def _srtm_dir(root: Path, values: list[np.ndarray]) -> None:
    root.mkdir(parents=True)
    ts = np.array([[1, 1, 2022]], dtype=np.int32)
    for i, v in enumerate(values):
        write_sample(root / f"sample_{i}.h5", {"srtm": v}, ts, np.zeros(2), {}, Compression())
    rows = [(i, ["srtm"]) for i in range(len(values))]
    write_metadata(root, rows, ["srtm"], Compression(), np.zeros((len(values), 2)))


def test_stats_command_writes_loadable_json(tmp_path: Path) -> None:
    values = [np.full((4, 4, 1), 10 * (i + 1), dtype=np.int16) for i in range(3)]
    _srtm_dir(tmp_path / "ds", values)
    out = tmp_path / "stats.json"
    args = ["data", "stats", str(tmp_path / "ds"), "--out", str(out), "--no-progress"]
    assert main([*args, "--workers", "2"]) == 0
    stats = NormStats.load(out)
    srtm = stats.bands["srtm"]["srtm"]
    assert (srtm.count, srtm.mean, srtm.min, srtm.max) == (48, 20.0, 10.0, 30.0)
    assert srtm.std == pytest.approx(np.std([10, 20, 30]))


def test_stats_command_prints_json_and_reports_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _srtm_dir(tmp_path / "ds", [np.ones((4, 4, 1), dtype=np.int16)])
    assert main(["data", "stats", str(tmp_path / "ds"), "--no-progress", "--workers", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["srtm"]["srtm"]["mean"] == 1.0
    (tmp_path / "ds" / "sample_0.h5").write_bytes(b"broken")
    assert main(["data", "stats", str(tmp_path / "ds"), "--no-progress"]) == 2
    assert "sample_0.h5" in capsys.readouterr().err
