"""Contract: every path from samples to an unmasked batch gives the same `MaskedBatch`.

Whole samples at one patch size go through pretraining's predict loader, the evals'
embedding loop, fine-tuning's labeled-window collate and the runner's prediction crops; all
must produce the same tensors, because they are one tokenizer and one collate.
"""

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from helios.data.batching import LabeledCollate
from helios.data.datamodule import PretrainDataModule
from helios.data.sample import LabeledSample, MaskedBatch
from helios.data.synthetic import make_synthetic_dataset
from helios.evals.embed import EvalCollate, extract_embeddings
from helios.runner.finetune.labeled_data import LabeledWindowDataModule
from helios.runner.predict.crops import CropDataModule
from tests.data.test_batching import assert_same

MODS = ("sentinel2_l2a", "sentinel1", "srtm", "worldcover", "era5")
PATCH = 4


class RecordingEncoder:
    """Stands in for an `Encoder` in `extract_embeddings`, keeping the batches it is given."""

    def __init__(self, modalities: list[str]) -> None:
        self.modalities = modalities
        self.batches: list[MaskedBatch] = []

    def to(self, device: Any) -> "RecordingEncoder":
        return self

    def eval(self) -> "RecordingEncoder":
        return self

    def __call__(self, batch: MaskedBatch, view: int) -> SimpleNamespace:
        self.batches.append(batch)
        return SimpleNamespace(pool=lambda how, spatial: torch.zeros(batch.batch_size, 1))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    syn = make_synthetic_dataset(
        tmp_path_factory.mktemp("syn"), 4, size=32, num_timesteps=4, modalities=MODS, seed=5
    )
    dm = PretrainDataModule(str(syn.root), batch_size=4, num_workers=0, patch_sizes=[PATCH])
    (pretrain,) = list(dm.predict_dataloader())
    assert dm._base is not None and dm.modalities is not None
    rng = np.random.default_rng(0)
    items = [
        LabeledSample(dm._base[i], rng.integers(0, 3, (32, 32)).astype(np.int64))
        for i in range(len(dm._base))
    ]
    return dm, pretrain, items


def test_pretraining_predict_batches_are_whole_and_unmasked(setup):
    _, pretrain, _ = setup
    assert pretrain.patch_size == PATCH and pretrain.sample_ids == [0, 1, 2, 3]
    assert pretrain.data["sentinel2_l2a"].shape == (4, 32, 32, 4, 12)


def test_every_path_gives_the_same_batch(setup):
    dm, pretrain, items = setup
    mods, norm = list(dm.modalities), dm.normalizer

    encoder = RecordingEncoder(mods)
    _, eval_labels = extract_embeddings(encoder, items, norm, PATCH, progress=False)  # type: ignore[arg-type]
    (evals,) = encoder.batches

    finetune = LabeledWindowDataModule("unused", "unused")
    finetune.set_model_inputs(mods, norm, PATCH)
    windows, window_labels = finetune.collate()(items)

    model = SimpleNamespace(modalities=mods, normalizer=norm, patch_size=PATCH)
    crops, crop_labels = CropDataModule([], None, model, 32).collate(items)  # type: ignore[arg-type]

    legacy, legacy_labels = EvalCollate(mods, norm, PATCH)(items)

    for batch in (evals, windows, crops, legacy):
        assert_same(pretrain, batch)
    want = torch.from_numpy(np.stack([it.label for it in items]))
    for labels in (eval_labels, window_labels, crop_labels, legacy_labels):
        assert torch.equal(labels, want)


def test_fits_agree_on_whole_patch_samples(setup):
    dm, pretrain, items = setup
    for fit in ("crop", "pad"):
        batch, _ = LabeledCollate(list(dm.modalities), dm.normalizer, PATCH, fit=fit)(items)
        assert_same(pretrain, batch)
