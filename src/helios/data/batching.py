"""One path from `Sample` to `MaskedBatch`: plan, tokenize, collate.

Pretraining, evals, fine-tuning and prediction all go through it:

- `plan_batch` draws a `BatchPlan` (patch size, crop, timesteps, seed) per pretraining batch;
  evals and the runner use a fixed plan per batch.
- `SampleTokenizer` crops, cuts the time window, normalizes and masks one `Sample` under a plan
  into a `TokenizedSample`. All of its randomness comes from the generator it is handed, so
  results do not depend on the number of DataLoader workers.
- `collate` stacks `TokenizedSample`s into a `MaskedBatch`.
- `LabeledCollate` does all three for `LabeledSample`s (evals, fine-tuning, prediction crops):
  an unmasked `MaskedBatch` plus the labels, fitted to the patch grid with the imagery.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from torch import Tensor

from helios.data.masking import NoMasking
from helios.data.modalities import MISSING_VALUE, get_modality
from helios.data.sample import LabeledSample, MaskedBatch, MaskValue, Sample

if TYPE_CHECKING:
    from helios.data.augment import ViewAugmentation
    from helios.data.masking import MaskingStrategy
    from helios.data.normalize import Normalizer

Fit = Literal["crop", "pad"]
"""How `LabeledCollate` fits samples to the patch grid (see there)."""


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


def plan_batch(
    rng: np.random.Generator,
    modalities: Sequence[str],
    sample_size: int,
    patch_sizes: Sequence[int],
    crop_tokens: tuple[int, int],
    token_budget: int,
    max_timesteps: int,
) -> BatchPlan:
    """Draw patch size and crop, then fit as many timesteps as the token budget allows."""
    patch = int(rng.choice(np.asarray(patch_sizes)))
    hi = min(crop_tokens[1], sample_size // patch)
    lo = min(crop_tokens[0], hi)
    if hi < 1:
        raise ValueError(f"patch size {patch} does not fit a {sample_size} px sample")
    side = int(rng.integers(lo, hi + 1))
    # Shrink the crop until one timestep of every modality fits the budget.
    while side > 1 and sum(tokens_per_sample(modalities, side, 1)) > token_budget:
        side -= 1
    static, per_step = tokens_per_sample(modalities, side, 1)
    steps = max_timesteps if per_step == 0 else (token_budget - static) // per_step
    steps = int(max(1, min(max_timesteps, steps)))
    return BatchPlan(
        patch_size=patch, crop_tokens=side, num_timesteps=steps, seed=int(rng.integers(2**62))
    )


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


@dataclass
class TokenizedSample:
    """One sample as `SampleTokenizer` leaves it for `collate` (shapes as in `MaskedBatch`)."""

    data: dict[str, np.ndarray]
    """Per modality, normalized float32 [H, W, T, C]."""
    views: list[dict[str, np.ndarray]]
    """Per masked view, per modality, int8 [h, w, T, S] `MaskValue`s."""
    timestamps: np.ndarray
    """int32 [T, 3] as (day, month, year)."""
    latlon: np.ndarray
    """float32 [2]."""
    index: int
    """The sample's id in the batch (`MaskedBatch.sample_ids`)."""
    patch_size: int
    """Patch size in 10 m pixels the token masks were made for."""
    view_data: list[dict[str, np.ndarray]] = field(default_factory=list)
    """Per view, its own augmented `data` (empty: every view reads `data`)."""


class SampleTokenizer:
    """Crop, cut the time window, normalize and mask one sample according to a `BatchPlan`."""

    def __init__(
        self,
        modalities: Sequence[str],
        normalizer: Normalizer,
        masking: MaskingStrategy,
        num_views: int = 1,
        center_crop: bool = False,
        augmentation: ViewAugmentation | None = None,
        view_crops: bool = False,
    ) -> None:
        """Configure the tokenizer.

        Args:
            modalities: Modalities to emit; those a sample lacks come out all missing.
            normalizer: Normalization applied to every modality.
            masking: Masking strategy of each view.
            num_views: Independently masked views per sample.
            center_crop: Centred crops instead of random ones.
            augmentation: draws each view's own values (`TokenizedSample.view_data`);
                without one the views share `data`.
            view_crops: each view draws its own crop (of the plan's size; same time window).

        """
        self.augmentation = augmentation
        self.view_crops = view_crops
        self.center_crop = center_crop
        self.modalities = list(modalities)
        self.normalizer = normalizer
        self.masking = masking
        self.num_views = num_views

    def __call__(
        self, sample: Sample, plan: BatchPlan, rng: np.random.Generator, index: int
    ) -> TokenizedSample:
        """Tokenize `sample` under `plan`, drawing crop, time window and masks from `rng`."""
        crop = plan.crop_tokens * plan.patch_size
        size = sample.ref_size()
        if size and size < crop:
            raise ValueError(f"{sample.source}: sample is {size} px, smaller than the crop {crop}")
        offset = self._offset(size, crop, rng)
        t_full = sample.num_timesteps
        t = plan.num_timesteps
        steps = np.arange(t) + self._time_start(sample, t, rng) if t_full else np.arange(t)

        first = self._cut(sample, offset, crop, steps, plan)
        cuts, views = [], []
        for v in range(self.num_views):  # a view's own crop (if asked for), then its mask
            if v == 0 or not self.view_crops:
                cuts.append(first)
            else:
                cuts.append(self._cut(sample, self._offset(size, crop, rng), crop, steps, plan))
            views.append(self.masking(cuts[-1][2], rng))
        data = first[1]
        view_data = []
        if self.augmentation is not None or self.view_crops:
            for raw_v, data_v, _ in cuts:
                if self.augmentation is not None:
                    changed = self.augmentation(raw_v, rng)
                    data_v = {n: self.normalizer(n, changed[n]) if n in changed else a
                              for n, a in data_v.items()}  # fmt: skip
                view_data.append(data_v)
            data = view_data[0]
        ts = (
            sample.timestamps[np.minimum(steps, t_full - 1)]
            if t_full
            else np.zeros((t, 3), np.int32)
        )
        return TokenizedSample(
            data, views, ts, sample.latlon, index, plan.patch_size, view_data=view_data
        )

    def _offset(self, size: int, crop: int, rng: np.random.Generator) -> tuple[int, int]:
        """Top-left corner (y0, x0) of a crop: centred, or drawn from `rng`."""
        if self.center_crop:
            y0 = x0 = (size - crop) // 2 if size else 0
            return y0, x0
        y0 = int(rng.integers(0, size - crop + 1)) if size else 0
        x0 = int(rng.integers(0, size - crop + 1)) if size else 0
        return y0, x0

    def _cut(
        self,
        sample: Sample,
        offset: tuple[int, int],
        crop: int,
        steps: np.ndarray,
        plan: BatchPlan,
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
        """(raw, normalized, token availability) of every modality for one crop."""
        raw: dict[str, np.ndarray] = {}
        data: dict[str, np.ndarray] = {}
        tokens: dict[str, np.ndarray] = {}
        for name in self.modalities:
            spec = get_modality(name)
            side = crop * spec.pixels_per_ref_pixel if spec.is_spatial else 1
            if name in sample.arrays:
                arr = sample.window(name, *offset, crop, steps if spec.is_multitemporal else None)
                raw[name] = to_5d(name, arr)
                out = self.normalizer(name, raw[name])
            else:
                t_m = len(steps) if spec.is_multitemporal else 1
                out = np.full((side, side, t_m, spec.num_bands), MISSING_VALUE, dtype=np.float32)
            data[name] = out
            tokens[name] = token_missing(name, out, plan.patch_size)
        return raw, data, tokens

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


def collate(items: Sequence[TokenizedSample]) -> MaskedBatch:
    """Stack tokenized samples (of one plan) into a `MaskedBatch`."""
    names = list(items[0].data)
    data = {n: torch.from_numpy(np.stack([it.data[n] for it in items])) for n in names}
    views = [
        {n: torch.from_numpy(np.stack([it.views[v][n] for it in items])) for n in names}
        for v in range(len(items[0].views))
    ]
    view_data = [
        {n: torch.from_numpy(np.stack([it.view_data[v][n] for it in items])) for n in names}
        for v in range(len(items[0].view_data))
    ]
    return MaskedBatch(
        data=data,
        masks=views,
        view_data=view_data,
        timestamps=torch.from_numpy(np.stack([it.timestamps for it in items]).astype(np.int64)),
        latlon=torch.from_numpy(np.stack([it.latlon for it in items]).astype(np.float32)),
        patch_size=int(items[0].patch_size),
        sample_ids=[int(it.index) for it in items],
    )


def cut_square(arr: np.ndarray, y0: int, x0: int, size: int, fill: float) -> np.ndarray:
    """`arr[y0:y0+size, x0:x0+size]`, `fill` where the square leaves the array."""
    out = np.full((size, size, *arr.shape[2:]), fill, dtype=arr.dtype)
    h, w = arr.shape[:2]
    ys, xs = max(0, y0), max(0, x0)
    ye, xe = min(h, y0 + size), min(w, x0 + size)
    if ye > ys and xe > xs:
        out[ys - y0 : ye - y0, xs - x0 : xe - x0] = arr[ys:ye, xs:xe]
    return out


def pad_labeled(item: LabeledSample, side: int, ignore_index: int) -> LabeledSample:
    """Pad a sample's spatial arrays (MISSING_VALUE) and raster label (`ignore_index`) to `side`.

    Padding goes at the bottom and right, so pixel (0, 0) stays in place. Padded arrays are
    float32 (a storage dtype such as uint16 cannot hold MISSING_VALUE).
    """
    s = item.sample
    arrays = {}
    for name, arr in s.arrays.items():
        spec = get_modality(name)
        if spec.is_spatial:
            side_m = side * spec.pixels_per_ref_pixel
            arr = cut_square(arr.astype(np.float32, copy=False), 0, 0, side_m, MISSING_VALUE)
        arrays[name] = arr
    label = np.asarray(item.label)
    if label.ndim == 2:
        label = cut_square(label, 0, 0, side, ignore_index)
    return LabeledSample(Sample(arrays, s.present, s.timestamps, s.latlon, s.source), label)


class LabeledCollate:
    """`LabeledSample`s -> (unmasked `MaskedBatch`, labels) for one model and patch size.

    Every token with data is visible (ENCODER); a token with any missing pixel is MISSING.
    Raster labels ([H, W] on the 10 m grid) are cropped or padded with the imagery; other
    labels are stacked as they are, keeping their dtype. `fit` says how samples meet the patch
    grid:

    - `"crop"`: centre-crop to the largest multiple of the patch size; every sample of a batch
      must have the same size (benchmarks, prediction crops).
    - `"pad"`: pad every sample to the batch's largest side rounded up to the patch size, with
      missing pixels and `ignore_index` labels (labeled windows of varying size).

    Sample `k` of a batch gets sample id `k`.
    """

    def __init__(
        self,
        modalities: Sequence[str],
        normalizer: Normalizer,
        patch_size: int,
        max_timesteps: int = 12,
        fit: Fit = "crop",
        ignore_index: int = -1,
    ) -> None:
        """Configure the collate for one model.

        Args:
            modalities: The model's modalities.
            normalizer: The model's normalizer.
            patch_size: Patch size in 10 m pixels.
            max_timesteps: Timesteps per sample at most.
            fit: How samples meet the patch grid (see the class docstring).
            ignore_index: Label of padded pixels (`fit="pad"`).

        """
        self.patch_size = patch_size
        self.max_timesteps = max_timesteps
        self.fit: Fit = fit
        self.ignore_index = ignore_index
        self.tokenizer = SampleTokenizer(
            modalities, normalizer, NoMasking(), num_views=1, center_crop=True
        )

    def _side(self, items: Sequence[LabeledSample]) -> int:
        """Side in 10 m pixels every sample is brought to (0: no spatial modality)."""
        p = self.patch_size
        if self.fit == "pad":
            return -(-max(it.sample.ref_size() for it in items) // p) * p
        size = items[0].sample.ref_size()
        if size and size < p:
            raise ValueError(f"samples of {size} px are smaller than the patch size {p}")
        for it in items:
            if it.sample.ref_size() != size:
                raise ValueError(
                    f"{it.sample.source}: sample size {it.sample.ref_size()} differs from "
                    f"the batch's {size}; this benchmark needs a fixed sample size"
                )
        return size // p * p

    def _fit(self, item: LabeledSample, crop: int) -> LabeledSample:
        """The item brought to `crop` pixels (the tokenizer centre-crops the imagery itself)."""
        size = item.sample.ref_size()
        if self.fit == "pad":
            return pad_labeled(item, crop, self.ignore_index) if size != crop else item
        label = np.asarray(item.label)
        if label.ndim == 2:
            y0 = (size - crop) // 2 if size else 0
            label = label[y0 : y0 + crop, y0 : y0 + crop]
        return LabeledSample(item.sample, label)

    def __call__(self, items: Sequence[LabeledSample]) -> tuple[MaskedBatch, Tensor]:
        """Fit, tokenize and stack the items; labels are fitted like the imagery."""
        p = self.patch_size
        side = self._side(items)
        t = max(1, min(self.max_timesteps, max(it.sample.num_timesteps for it in items)))
        tokens = side // p if side else 1  # no spatial modality: one (missing) patch
        crop = tokens * p
        plan = BatchPlan(patch_size=p, crop_tokens=tokens, num_timesteps=t, seed=0)
        rng = np.random.default_rng(0)  # drawn from only to place time windows longer than `t`
        out, labels = [], []
        for k, item in enumerate(items):
            fitted = self._fit(item, crop)
            out.append(self.tokenizer(fitted.sample, plan, rng, k))
            labels.append(fitted.label)
        return collate(out), torch.from_numpy(np.stack(labels))
