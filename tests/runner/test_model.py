from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from helios.data.sample import MaskedBatch, Sample
from helios.evals.api import EvalSample
from helios.evals.embed import EvalCollate
from helios.runner.predict.model import CHECKPOINT_KEY, RunnerModel, read_model_yaml
from tests.runner.data.model import tiny_encoder, write_model_files

SIZE = 16


@pytest.fixture(scope="module")
def encoder_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_encoder(tmp_path_factory.mktemp("enc") / "encoder.pt", patch_size=4)


def items(n: int = 4, seed: int = 0, segmentation: bool = True) -> list[EvalSample]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        arr = rng.integers(1, 3000, (SIZE, SIZE, 2, 12)).astype(np.float32)
        sample = Sample(
            arrays={"sentinel2_l2a": arr},
            present={"sentinel2_l2a": np.ones(2, bool)},
            timestamps=np.array([[1, 6, 2017], [1, 7, 2017]], np.int32),
            latlon=np.array([37.7, -75.7], np.float32),
        )
        label = rng.integers(0, 3, (SIZE, SIZE)) if segmentation else rng.integers(0, 3, ())
        if segmentation:
            label[0] = 255  # ignored
        out.append(EvalSample(sample, np.asarray(label)))
    return out


def batch_of(model: RunnerModel, segmentation: bool = True) -> tuple[MaskedBatch, torch.Tensor]:
    collate = EvalCollate(model.modalities, model.normalizer, model.patch_size)
    return collate(items(segmentation=segmentation))


@pytest.mark.parametrize(
    ("task", "shape"),
    [
        ("segmentation", (4, 3, SIZE, SIZE)),
        ("classification", (4, 3)),
        ("embedding", (4, 16, SIZE // 4, SIZE // 4)),
    ],
)
def test_forward_shapes_and_checkpoint_round_trip(encoder_file, tmp_path, task, shape):
    torch.manual_seed(0)
    model = RunnerModel(str(encoder_file), task=task, num_classes=3).eval()
    assert model.patch_size == 4 and model.modalities == ["sentinel2_l2a", "sentinel2"]
    mb, _ = batch_of(model, task == "segmentation")
    with torch.no_grad():
        out = model(mb)
    assert tuple(out.shape) == shape
    torch.manual_seed(0)  # the same random head as `model`
    ckpt = RunnerModel.save_untrained(tmp_path / "m.ckpt", encoder_file, task, num_classes=3)
    payload = torch.load(ckpt, weights_only=True)  # plain values only
    assert payload[CHECKPOINT_KEY]["patch_size"] == 4
    assert payload["hyper_parameters"]["task"] == task
    loaded = RunnerModel.load_for_inference(ckpt)
    assert not loaded.training and loaded.normalizer.to_dict() == model.normalizer.to_dict()
    with torch.no_grad():
        torch.testing.assert_close(loaded(mb), out)
    assert ("head.linear.weight" in loaded.state_dict()) == (task != "embedding")
    # Lightning's own loader works too once the encoder path is dropped
    again = RunnerModel.load_from_checkpoint(ckpt, encoder_path=None, weights_only=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(again(mb), out)


def test_patch_size_override_and_validation(encoder_file):
    assert RunnerModel(str(encoder_file), patch_size=2).patch_size == 2
    with pytest.raises(ValueError, match="patch_size"):
        RunnerModel(str(encoder_file), patch_size=16)
    with pytest.raises(ValueError, match="class_names"):
        RunnerModel(str(encoder_file), num_classes=3, class_names=["a", "b"])
    with pytest.raises(RuntimeError, match="no encoder"):
        RunnerModel()(batch_of(RunnerModel(str(encoder_file)))[0])


def test_training_saves_a_loadable_checkpoint_and_freezes_the_encoder(encoder_file, tmp_path):
    model = RunnerModel(str(encoder_file), task="segmentation", num_classes=3, freeze_fraction=0.5)
    collate = EvalCollate(model.modalities, model.normalizer, model.patch_size)
    loader = DataLoader(items(8), batch_size=4, collate_fn=collate)
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    frozen = []

    class Probe(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            frozen.append(all(not p.requires_grad for p in pl_module.encoder.parameters()))

    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Probe()],
        default_root_dir=tmp_path,
    )
    trainer.fit(model, loader, loader)
    assert frozen == [True, False]
    assert {"val_accuracy", "val_miou"} <= set(trainer.callback_metrics)
    changed = any(not torch.equal(before[k], v) for k, v in model.encoder.state_dict().items())
    assert changed  # trained in the second epoch
    trainer.save_checkpoint(tmp_path / "ft.ckpt")
    loaded = RunnerModel.load_for_inference(tmp_path / "ft.ckpt")
    mb, _ = batch_of(model)
    with torch.no_grad():
        torch.testing.assert_close(loaded(mb), model.eval()(mb))
    metrics = trainer.test(loaded, loader, verbose=False)[0]
    assert 0 <= metrics["test_miou"] <= 1


def test_embedding_task_is_not_trainable(encoder_file):
    model = RunnerModel(str(encoder_file), task="embedding")
    with pytest.raises(RuntimeError, match="no head"):
        model.on_train_epoch_start()


def test_read_model_yaml(encoder_file, tmp_path):
    write_model_files(tmp_path, encoder_file, "classification", num_classes=4)
    args = read_model_yaml(tmp_path / "model.yaml")
    assert args == {"encoder_path": str(encoder_file), "task": "classification", "num_classes": 4}
    model = RunnerModel.load_for_inference(tmp_path / "checkpoint.ckpt", tmp_path / "model.yaml")
    assert model.kind == "classification" and model.task.num_classes == 4
    (tmp_path / "bad.yaml").write_text("model:\n  class_path: x.Y\n")
    with pytest.raises(ValueError, match="not supported"):
        read_model_yaml(tmp_path / "bad.yaml")
    (tmp_path / "bad.yaml").write_text("model:\n  init_args: {task: detection}\n")
    with pytest.raises(ValueError, match="invalid RunnerModel init_args"):
        read_model_yaml(tmp_path / "bad.yaml")
