"""H5 directory -> `Sample`, and the per-sample pretraining transform (crop, time window, mask).

`H5SampleDataset` yields raw `Sample`s. `PretrainSampleTransform` turns one into what the
collate step stacks: unified 5-D float32 arrays, per-token missing maps and masked views. It
runs inside DataLoader workers, and all of its randomness comes from the `BatchPlan` it is
handed, so results do not depend on the number of workers.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from torch.utils.data import Dataset

from helios.data.h5 import H5Directory, read_sample
from helios.data.modalities import MISSING_VALUE, get_modality
from helios.data.sample import MaskValue, Sample

if TYPE_CHECKING:
    from helios.data.masking import MaskingStrategy
    from helios.data.normalize import Normalizer


class H5SampleDataset(Dataset[Sample]):
    """Map-style dataset over an H5 training-set directory.

    Only `modalities` are decoded; samples holding none of them (per sample_metadata.csv) are
    left out.
    """

    def __init__(self, h5_dir: Path | str, modalities: Sequence[str] | None = None) -> None:
        self.directory = H5Directory.open(h5_dir)
        found = self.directory.modalities() or None
        self.modalities = list(modalities) if modalities else list(found or [])
        for name in self.modalities:
            get_modality(name)
        keep = np.ones(len(self.directory), dtype=bool)
        if self.directory.presence and self.modalities:
            cols = [
                self.directory.presence[m] for m in self.modalities if m in self.directory.presence
            ]
            keep = np.any(np.stack(cols), axis=0) if cols else np.zeros_like(keep)
        self.positions = np.flatnonzero(keep)
        if len(self.positions) == 0:
            raise ValueError(f"{h5_dir}: no sample holds any of the modalities {self.modalities}")

    def __len__(self) -> int:
        return len(self.positions)

    def path(self, index: int) -> Path:
        """File of the `index`-th sample."""
        return self.directory.path(int(self.positions[index]))

    def subset(self, indices: np.ndarray) -> H5SampleDataset:
        """A view over some of this dataset's samples (no files are re-read)."""
        view = copy.copy(self)
        view.positions = self.positions[indices]
        return view

    def sample_index(self, index: int) -> int:
        """The H5 sample number (the `i` of `sample_{i}.h5`) of the `index`-th sample."""
        return self.directory.indices[int(self.positions[index])]

    def __getitem__(self, index: int) -> Sample:
        return read_sample(self.path(index), self.modalities or None)


@dataclass(frozen=True)
class BatchPlan:
    """The shape of one batch, drawn in the main process by the batch sampler."""

    patch_size: int
    """Patch size in 10 m pixels."""
    crop_tokens: int
    """Tokens per side of the spatial crop (crop = crop_tokens * patch_size pixels)."""
    num_timesteps: int
    """Timesteps every sample of the batch is cut or padded to."""
    seed: int
    """Base seed of the batch; sample `k` of the batch derives its own from it."""


def tokens_per_sample(
    modalities: Sequence[str], crop_tokens: int, num_timesteps: int
) -> tuple[int, int]:
    """(static tokens, tokens per timestep) of one sample holding every modality."""
    static = per_step = 0
    for name in modalities:
        spec = get_modality(name)
        grid = crop_tokens * crop_tokens if spec.is_spatial else 1
        if spec.is_multitemporal:
            per_step += grid * spec.num_band_sets
        else:
            static += grid * spec.num_band_sets
    return static, per_step


def to_5d(name: str, arr: np.ndarray) -> np.ndarray:
    """On-disk shape -> [H, W, T, C] (static T = 1, non-spatial H = W = 1)."""
    spec = get_modality(name)
    if not spec.is_spatial:
        return arr[None, None]
    if not spec.is_multitemporal:
        return arr[:, :, None]
    return arr


def token_missing(name: str, arr5: np.ndarray, patch_size: int) -> np.ndarray:
    """int8 [h, w, T, S]: MISSING where any pixel of a token's band set is missing, else ENCODER."""
    spec = get_modality(name)
    h, w, t, _ = arr5.shape
    p = patch_size * spec.pixels_per_ref_pixel if spec.is_spatial else 1
    if spec.is_spatial:
        missing = (arr5 == MISSING_VALUE).reshape(h // p, p, w // p, p, t, -1).any(axis=(1, 3))
    else:
        missing = arr5 == MISSING_VALUE
    per_set = np.stack([missing[..., sl].any(axis=-1) for sl in spec.band_set_slices()], axis=-1)
    return np.where(per_set, np.int8(MaskValue.MISSING), np.int8(MaskValue.ENCODER)).astype(np.int8)


class PretrainSampleTransform:
    """Crop, cut the time window, normalize and mask one sample according to a `BatchPlan`."""

    def __init__(
        self,
        modalities: Sequence[str],
        normalizer: Normalizer,
        masking: MaskingStrategy,
        num_views: int = 1,
        center_crop: bool = False,
    ) -> None:
        self.center_crop = center_crop
        self.modalities = list(modalities)
        self.normalizer = normalizer
        self.masking = masking
        self.num_views = num_views

    def __call__(self, sample: Sample, plan: BatchPlan, rng: np.random.Generator) -> dict[str, Any]:
        """Return arrays for collation: data, views (token masks), timestamps, latlon."""
        crop = plan.crop_tokens * plan.patch_size
        size = sample.ref_size()
        if size and size < crop:
            raise ValueError(f"{sample.source}: sample is {size} px, smaller than the crop {crop}")
        if self.center_crop:
            y0 = x0 = (size - crop) // 2 if size else 0
        else:
            y0 = int(rng.integers(0, size - crop + 1)) if size else 0
            x0 = int(rng.integers(0, size - crop + 1)) if size else 0
        t_full = sample.num_timesteps
        t = plan.num_timesteps
        steps = np.arange(t) + self._time_start(sample, t, rng) if t_full else np.arange(t)

        data: dict[str, np.ndarray] = {}
        tokens: dict[str, np.ndarray] = {}
        for name in self.modalities:
            spec = get_modality(name)
            side = crop * spec.pixels_per_ref_pixel if spec.is_spatial else 1
            if name in sample.arrays:
                arr = sample.window(name, y0, x0, crop, steps if spec.is_multitemporal else None)
                out = self.normalizer(name, to_5d(name, arr))
            else:
                t_m = t if spec.is_multitemporal else 1
                out = np.full((side, side, t_m, spec.num_bands), MISSING_VALUE, dtype=np.float32)
            data[name] = out
            tokens[name] = token_missing(name, out, plan.patch_size)
        views = [self.masking(tokens, rng) for _ in range(self.num_views)]
        ts = (
            sample.timestamps[np.minimum(steps, t_full - 1)]
            if t_full
            else np.zeros((t, 3), np.int32)
        )
        return {"data": data, "views": views, "timestamps": ts, "latlon": sample.latlon}

    def _time_start(self, sample: Sample, t: int, rng: np.random.Generator) -> int:
        """A random window start whose window holds at least one present step, if any does."""
        t_full = sample.num_timesteps
        if t_full <= t:
            return 0
        present = np.zeros(t_full, dtype=bool)
        for name in self.modalities:
            if name in sample.data and get_modality(name).is_multitemporal:
                present |= sample.present_timesteps(name)
        window_has = np.convolve(present.astype(int), np.ones(t, dtype=int), "valid") > 0
        starts = np.flatnonzero(window_has)
        if len(starts) == 0:
            starts = np.arange(t_full - t + 1)
        return int(rng.choice(starts))
