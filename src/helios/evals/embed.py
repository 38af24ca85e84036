"""Turn models into embeddings of labelled benchmark samples.

Batches come from `helios.data.batching.LabeledCollate` with `fit="crop"`: normalized,
centre-cropped to a multiple of the patch size and unmasked (every available token visible),
with segmentation labels cropped the same way. `extract_embeddings` runs an encoder over a
whole dataset.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from helios.data.batching import LabeledCollate
from helios.data.normalize import Normalizer
from helios.data.sample import LabeledSample
from helios.nn.api import Encoder, PoolMode

EvalCollate = LabeledCollate
"""Former name of `LabeledCollate` (its default `fit="crop"` is what evals use)."""


@torch.no_grad()
def extract_embeddings(
    encoder: Encoder,
    dataset: Dataset[LabeledSample],
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
    collate = LabeledCollate(encoder.modalities, normalizer, patch_size, fit="crop")
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
