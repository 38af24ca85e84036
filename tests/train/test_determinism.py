"""The same seed on the same machine gives the same pretraining, with loader workers and
validation, in separate processes (so with different string-hash seeds) as in one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from helios.cli import main
from helios.data.synthetic import make_synthetic_dataset
from tests.train.probe import tiny_run

ROOT = Path(__file__).resolve().parents[2]
MODS = ("sentinel2_l2a", "sentinel1", "srtm")


@pytest.fixture(scope="module")
def syn(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return make_synthetic_dataset(
        tmp_path_factory.mktemp("syn"), 20, size=32, num_timesteps=3, modalities=MODS, seed=2
    )


def _config(tmp_path: Path, syn: Any) -> Path:
    """A tiny run with two loader workers, two masked views and validation every 2 steps."""
    callbacks = ["tests.train.probe.LossRecorder", "tests.train.probe.ValLossRecorder"]
    cfg = tiny_run(
        syn.root, callbacks, num_workers=2, encoder={"drop_path": 0.1},
        max_steps=5, val_check_interval=2, limit_val_batches=1,
    )  # fmt: skip
    path = tmp_path / "determinism.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _args(run: Path, config: Path) -> list[str]:
    base = str(ROOT / "configs" / "latent_mim.yaml")
    return [
        "fit",
        "--config",
        base,
        "--config",
        str(config),
        "--trainer.default_root_dir",
        str(run),
    ]


def _outcome(run: Path) -> tuple[dict[str, float], list[float], dict[str, torch.Tensor]]:
    losses = json.loads((run / "probe_rank0.json").read_text())["losses"]
    val = json.loads((run / "val_losses.json").read_text())
    state = torch.load(run / "encoder.pt", weights_only=True)["state_dict"]
    return losses, val, state


def _assert_identical(a: Path, b: Path) -> None:
    (la, va, sa), (lb, vb, sb) = _outcome(a), _outcome(b)
    assert len(la) == 5 and len(va) == 2
    assert la == lb, "training losses differ"
    assert va == vb, "validation losses differ"
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_measuring_the_matmul_peak_leaves_the_random_stream_alone() -> None:
    from helios.train.callbacks import measure_matmul_peak

    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    assert measure_matmul_peak(torch.device("cpu"), n=64) > 0
    assert torch.equal(torch.rand(3), expected)


def test_two_fits_with_workers_and_validation_are_identical(tmp_path: Path, syn: Any) -> None:
    config = _config(tmp_path, syn)
    for run in ("a", "b"):
        assert main(_args(tmp_path / run, config)) == 0
    _assert_identical(tmp_path / "a", tmp_path / "b")


@pytest.mark.slow
def test_two_fits_in_separate_processes_are_identical(tmp_path: Path, syn: Any) -> None:
    """Separate interpreters with different PYTHONHASHSEED: no set or dict order leaks in."""
    config = _config(tmp_path, syn)
    for run, hash_seed in (("a", "1"), ("b", "2")):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed, PYTHONPATH=str(ROOT))
        cmd = [sys.executable, "-m", "helios.cli", *_args(tmp_path / run, config)]
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
    _assert_identical(tmp_path / "a", tmp_path / "b")


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize("protocol", ["linear_probe", "finetune"])
def test_eval_protocols_repeat_exactly(
    demo_build: Any, tiny_encoder_file: Path, tmp_path: Path, protocol: str
) -> None:
    """The demo sweep's trained protocols give the same scores for the same seed."""
    from helios.evals.run import EvalConfig, ModelSpec, TaskConfig, run_eval

    scores = []
    for run in ("a", "b"):
        cfg = EvalConfig(
            model=ModelSpec("helios", str(tiny_encoder_file)),
            task=TaskConfig("demo-cloud-tiles", str(demo_build.out)),
            protocol=protocol,
            epochs=3,
            batch_size=16,
            normalization="dataset",
            output=str(tmp_path / run),
            device="cpu",
        )
        result = run_eval(cfg, progress=False)
        scores.append((result["val"], result["test"]))
    assert scores[0] == scores[1]
