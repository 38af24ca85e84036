"""A sweep killed by process group and run again ends with an uninterrupted sweep's results."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from helios.cli import main
from tests.killing import kill_when

ROOT = Path(__file__).resolve().parents[2]
VOLATILE = ("seconds", "output")
"""Fields of results.json that differ between two sweeps by design: wall time, run folder."""


def _sweep_file(tmp_path: Path, name: str, demo: Path, encoder: Path) -> Path:
    sweep = {
        "name": name,
        "output": str(tmp_path / name),
        "models": [{"kind": "helios", "path": str(encoder), "name": "tiny"}],
        "tasks": [
            {"name": "demo-cloud-tiles", "root": str(demo), "protocols": ["knn", "linear_probe"]}
        ],
        "grid": {"lr": [0.001, 0.01]},
        "settings": {"epochs": 2, "batch_size": 32},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def _results(folder: Path) -> dict[str, Any]:
    out = {}
    for path in sorted(folder.rglob("results.json")):
        data = json.loads(path.read_text())
        data["config"] = {k: v for k, v in data["config"].items() if k not in VOLATILE}
        out[path.parent.name] = {k: v for k, v in data.items() if k not in VOLATILE}
    return out


@pytest.mark.slow
def test_a_killed_sweep_resumes_to_the_same_results(tmp_path, demo_build, tiny_encoder_file):
    demo = demo_build.out
    straight = _sweep_file(tmp_path, "straight", demo, tiny_encoder_file)
    assert main(["sweep", str(straight)]) == 0
    expected = _results(tmp_path / "straight")
    assert len(expected) == 3

    killed = _sweep_file(tmp_path, "killed", demo, tiny_encoder_file)
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "helios.cli", "sweep", str(killed)]
    # killed while its second run works: the first one's results.json exists
    kill_when(command, lambda: len(list(out.rglob("results.json"))) >= 1)
    finished = len(list(out.rglob("results.json")))
    assert finished < 3
    assert main(["sweep", str(killed)]) == 0
    assert _results(out) == expected
    report = (out / "results.csv").read_text().splitlines()
    assert len(report) == len((tmp_path / "straight" / "results.csv").read_text().splitlines())
