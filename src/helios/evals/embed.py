"""Turn labelled benchmark samples into model inputs, and models into embeddings.

`EvalCollate` normalizes, centre-crops to a multiple of the patch size and tokenizes a list of
`EvalSample`s into an unmasked `MaskedBatch` (every available token visible) plus the labels,
cropped the same way. `extract_embeddings` runs an encoder over a whole dataset.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from helios.data.datamodule import collate_masked
from helios.data.dataset import BatchPlan, PretrainSampleTransform
from helios.data.masking import NoMasking
from helios.data.normalize import Normalizer
from helios.data.sample import MaskedBatch
from helios.evals.api import EvalSample
from helios.nn.api import Encoder, PoolMode


class EvalCollate:
    """Collate `EvalSample`s into (MaskedBatch, labels) for one model and patch size."""

    def __init__(
        self,
        modalities: Sequence[str],
        normalizer: Normalizer,
        patch_size: int,
        max_timesteps: int = 12,
    ) -> None:
        """Args: modalities the model reads; its normalizer; patch size; time cap."""
        self.patch_size = patch_size
        self.max_timesteps = max_timesteps
        self.transform = PretrainSampleTransform(
            modalities, normalizer, NoMasking(), num_views=1, center_crop=True
        )

    def __call__(self, items: list[EvalSample]) -> tuple[MaskedBatch, Tensor]:
        """Stack the items; segmentation labels are cropped like the imagery."""
        size = items[0].sample.ref_size()
        p = self.patch_size
        if size and size < p:
            raise ValueError(f"samples of {size} px are smaller than the patch size {p}")
        tokens = size // p if size else 1
        t = max(1, min(self.max_timesteps, max(it.sample.num_timesteps for it in items)))
        plan = BatchPlan(patch_size=p, crop_tokens=tokens, num_timesteps=t, seed=0)
        rng = np.random.default_rng(0)
        out: list[dict[str, Any]] = []
        labels = []
        crop = tokens * p
        y0 = (size - crop) // 2 if size else 0
        for k, item in enumerate(items):
            if item.sample.ref_size() != size:
                raise ValueError(
                    f"{item.sample.source}: sample size {item.sample.ref_size()} differs from "
                    f"the batch's {size}; this benchmark needs a fixed sample size"
                )
            d = self.transform(item.sample, plan, rng)
            d["index"], d["patch_size"] = k, p
            out.append(d)
            label = np.asarray(item.label)
            if label.ndim == 2:
                label = label[y0 : y0 + crop, y0 : y0 + crop]
            labels.append(label)
        return collate_masked(out), torch.from_numpy(np.stack(labels))


@torch.no_grad()
def extract_embeddings(
    encoder: Encoder,
    dataset: Dataset[EvalSample],
    normalizer: Normalizer,
    patch_size: int,
    pooling: PoolMode = "mean",
    spatial: bool = False,
    batch_size: int = 32,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> tuple[Tensor, Tensor]:
    """Pooled embeddings ([N, D], or [N, h, w, D] when `spatial`) and labels of a dataset."""
    collate = EvalCollate(encoder.modalities, normalizer, patch_size)
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate
    )
    encoder = encoder.to(device).eval()
    embs, labels = [], []
    for batch, y in tqdm(loader, desc="embed", disable=not progress, leave=False):
        batch = batch.to(device)
        with torch.autocast(device_type=torch.device(device).type, enabled=False):
            embs.append(encoder(batch, 0).pool(pooling, spatial).float().cpu())
        labels.append(y)
    return torch.cat(embs), torch.cat(labels)
