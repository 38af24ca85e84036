"""MaskedBatch fixtures for the nn tests: random data of the right shapes and random masks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import torch

from helios.data.modalities import MISSING_VALUE, get_modality
from helios.data.sample import MaskedBatch, MaskValue

ALL_MODALITIES = (
    "sentinel2_l2a",
    "sentinel2",
    "sentinel1",
    "landsat",
    "worldcover",
    "srtm",
    "openstreetmap_raster",
    "era5",
)

TINY = {"embed_dim": 32, "depth": 2, "num_heads": 2, "mlp_ratio": 2.0}
"""Encoder settings small enough for CPU tests."""


def data_shape(name: str, batch: int, ref_size: int, timesteps: int) -> tuple[int, ...]:
    """[B, H, W, T, C] of `name` in a MaskedBatch."""
    spec = get_modality(name)
    side = ref_size * spec.pixels_per_ref_pixel if spec.is_spatial else 1
    t = timesteps if spec.is_multitemporal else 1
    return (batch, side, side, t, spec.num_bands)


def mask_shape(name: str, batch: int, ref_size: int, timesteps: int, patch: int) -> tuple[int, ...]:
    """[B, h, w, T, S] of `name`'s token mask."""
    spec = get_modality(name)
    side = ref_size // patch if spec.is_spatial else 1
    t = timesteps if spec.is_multitemporal else 1
    return (batch, side, side, t, spec.num_band_sets)


def make_batch(
    modalities: Sequence[str],
    patch_size: int = 2,
    ref_size: int = 8,
    timesteps: int = 3,
    batch_size: int = 2,
    seed: int = 0,
    probs: Sequence[float] = (0.5, 0.1, 0.3, 0.1),
    num_views: int = 1,
) -> MaskedBatch:
    """A random batch; masks draw MaskValue 0..3 with `probs`, every sample has an ENCODER token."""
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    data, views = {}, []
    for name in modalities:
        data[name] = torch.randn(data_shape(name, batch_size, ref_size, timesteps), generator=gen)
    for _ in range(num_views):
        masks = {}
        for name in modalities:
            shape = mask_shape(name, batch_size, ref_size, timesteps, patch_size)
            masks[name] = torch.from_numpy(rng.choice(4, size=shape, p=probs).astype(np.int8))
        first = modalities[0]
        masks[first].view(batch_size, -1)[:, 0] = int(MaskValue.ENCODER)
        views.append(masks)
    months = torch.randint(1, 13, (batch_size, timesteps), generator=gen)
    timestamps = torch.stack(
        [torch.full_like(months, 15), months, torch.full_like(months, 2021)], dim=-1
    )
    return MaskedBatch(
        data=data,
        masks=views,
        timestamps=timestamps,
        latlon=torch.zeros(batch_size, 2),
        patch_size=patch_size,
        sample_ids=list(range(batch_size)),
    )


def pixel_mask(batch: MaskedBatch, name: str, view: int = 0) -> torch.Tensor:
    """bool [B, H, W, T, C]: True on the pixels/channels of tokens that are not ENCODER."""
    spec = get_modality(name)
    hidden = batch.masks[view][name] != int(MaskValue.ENCODER)  # [B, h, w, T, S]
    if spec.is_spatial:
        q = batch.patch_size * spec.pixels_per_ref_pixel
        hidden = hidden.repeat_interleave(q, 1).repeat_interleave(q, 2)
    sizes = [s.stop - s.start for s in spec.band_set_slices()]
    return hidden.repeat_interleave(torch.tensor(sizes), dim=-1)


def perturb_hidden(batch: MaskedBatch, seed: int = 1, view: int = 0) -> MaskedBatch:
    """A copy of `batch` whose non-ENCODER tokens hold other random values and MISSING_VALUE."""
    gen = torch.Generator().manual_seed(seed)
    data = {}
    for name, x in batch.data.items():
        hidden = pixel_mask(batch, name, view)
        noise = torch.randn(x.shape, generator=gen) * 100
        noise = torch.where(torch.rand(x.shape, generator=gen) < 0.3, MISSING_VALUE, noise)
        data[name] = torch.where(hidden, noise, x)
    return MaskedBatch(
        data=data,
        masks=batch.masks,
        timestamps=batch.timestamps,
        latlon=batch.latlon,
        patch_size=batch.patch_size,
    )


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
