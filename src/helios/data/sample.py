"""The two types that cross from data/ to nn/: `Sample` (one tile) and `MaskedBatch`.

`LabeledSample` pairs a `Sample` with its label: the item of every benchmark reader and of
the runner's fine-tuning and prediction datasets, turned into batches by
`helios.data.batching.LabeledCollate`.

Array conventions (in memory, after loading an H5 sample):

- `Sample.arrays[modality]` is the array as stored (source dtype, present timesteps only);
  `Sample.data[modality]` / `Sample.window(...)` give float32 in the on-disk shape: [H, W, T, C]
  for multitemporal spatial modalities (T is the sample's full time axis, `len(timestamps)`),
  [H, W, C] for static ones, [T, C] for non-spatial series. Missing timesteps and nodata pixels
  hold `MISSING_VALUE`; they are never replaced by numbers.
- `MaskedBatch.data[modality]` is float32 [B, H, W, T, C] for every modality: static modalities
  have T = 1 and non-spatial ones H = W = 1, so the encoder sees one shape.
- `MaskedBatch.masks[v][modality]` is int8 [B, h, w, T, S]: one `MaskValue` per token, where
  (h, w) is the token grid (10 m pixels / patch size, 1 for non-spatial), T as in `data` and S
  the number of band sets. There is one dict per masked view (`num_views`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from functools import cached_property

import numpy as np
import torch

from helios.data.modalities import MISSING_VALUE, get_modality


class MaskValue(IntEnum):
    """The role of one token in a masked view."""

    ENCODER = 0
    """Visible to the online encoder (and to the target)."""
    TARGET_ONLY = 1
    """Seen only by the target encoder; neither encoded nor predicted."""
    DECODER = 2
    """Hidden from the encoder; the predictor must reconstruct its target."""
    MISSING = 3
    """No data: never encoded, never a target."""


@dataclass
class Sample:
    """One tile, as decoded from disk; float32 views are made on demand (see module docstring).

    `arrays` keep the storage dtype and hold only the timesteps present (`present` places them
    on the time axis), so decoding costs no more than decompression. `data` gives the full
    float32 arrays; `window()` converts just a crop and a time window, which is what training
    needs and far cheaper for large tiles.
    """

    arrays: dict[str, np.ndarray]
    present: dict[str, np.ndarray]
    """Per multitemporal modality, bool [T]: True where the modality has that timestep."""
    timestamps: np.ndarray
    """int32 [T, 3] as (day, month, year)."""
    latlon: np.ndarray
    """float32 [2], the tile centre."""
    source: str = ""
    """Where the sample came from (a file path), for error messages."""

    @property
    def num_timesteps(self) -> int:
        """Length of the shared time axis."""
        return int(self.timestamps.shape[0])

    @property
    def modalities(self) -> list[str]:
        """Modalities present in this sample."""
        return list(self.arrays)

    @cached_property
    def data(self) -> dict[str, np.ndarray]:
        """Every modality as float32 on the full time axis, MISSING_VALUE where absent."""
        return {name: self.window(name) for name in self.arrays}

    def ref_size(self) -> int:
        """Side of the sample in 10 m reference pixels (0 if it has no spatial modality)."""
        for name, arr in self.arrays.items():
            spec = get_modality(name)
            if spec.is_spatial:
                return int(arr.shape[0] // spec.pixels_per_ref_pixel)
        return 0

    def present_timesteps(self, modality: str) -> np.ndarray:
        """Bool [T]: True where `modality` has that timestep (static modalities: [True])."""
        if not get_modality(modality).is_multitemporal:
            return np.ones(1, dtype=bool)
        return self.present[modality]

    def window(
        self,
        modality: str,
        y0: int = 0,
        x0: int = 0,
        size: int | None = None,
        steps: np.ndarray | None = None,
    ) -> np.ndarray:
        """float32 crop of one modality, MISSING_VALUE for absent steps and nodata pixels.

        `y0`, `x0`, `size` are in 10 m reference pixels (scaled to the modality's grid);
        `steps` are indices on the time axis (out-of-range indices give missing steps).
        """
        spec = get_modality(modality)
        arr = self.arrays[modality]
        if spec.is_spatial:
            k = spec.pixels_per_ref_pixel
            side = arr.shape[0] // k if size is None else size
            arr = arr[y0 * k : (y0 + side) * k, x0 * k : (x0 + side) * k]
        if spec.is_multitemporal:
            axis = 2 if spec.is_spatial else 0
            present = self.present[modality]
            t = self.num_timesteps
            want = np.arange(t) if steps is None else np.asarray(steps)
            stored = np.cumsum(present) - 1  # full-axis index -> stored index
            ok = (want < t) & present[np.minimum(want, t - 1)]
            shape = list(arr.shape)
            shape[axis] = len(want)
            out = np.full(shape, MISSING_VALUE, dtype=np.float32)
            take = stored[want[ok]]
            if axis == 2:
                out[:, :, ok] = arr[:, :, take]
            else:
                out[ok] = arr[take]
        else:
            out = arr.astype(np.float32)
        if spec.nodata is not None:
            out[out == spec.nodata] = MISSING_VALUE
        return out


@dataclass
class LabeledSample:
    """A `Sample` and its label.

    `label` is an int64 scalar (classification), float32 [num_classes] multi-hot (multilabel)
    or int64 [H, W] on the sample's 10 m grid (segmentation), which is cropped and padded with
    the imagery.
    """

    sample: Sample
    label: np.ndarray


@dataclass
class MaskedBatch:
    """A collated, normalized, masked batch (see module docstring for shapes)."""

    data: dict[str, torch.Tensor]
    masks: list[dict[str, torch.Tensor]]
    timestamps: torch.Tensor
    """long [B, T, 3] as (day, month, year)."""
    latlon: torch.Tensor
    """float32 [B, 2]."""
    patch_size: int
    """Patch size in 10 m pixels for this batch."""
    sample_ids: list[int] = field(default_factory=list)
    """H5 sample numbers (`sample_{i}.h5`) of the samples, in batch order."""
    view_data: list[dict[str, torch.Tensor]] = field(default_factory=list)
    """Per view, its own augmented values (`helios.data.augment`); empty: views share `data`."""

    def inputs(self, view: int = 0) -> dict[str, torch.Tensor]:
        """The values a view's tokens are made from: its own `view_data`, else `data`."""
        return self.view_data[view] if self.view_data else self.data

    @property
    def batch_size(self) -> int:
        """Number of samples."""
        return int(self.timestamps.shape[0])

    @property
    def num_views(self) -> int:
        """Number of independently masked views of the batch."""
        return len(self.masks)

    def to(self, device: torch.device | str) -> MaskedBatch:
        """Move every tensor to `device` (non-blocking where pinned)."""
        return MaskedBatch(
            data={k: v.to(device, non_blocking=True) for k, v in self.data.items()},
            masks=[{k: v.to(device, non_blocking=True) for k, v in m.items()} for m in self.masks],
            timestamps=self.timestamps.to(device, non_blocking=True),
            latlon=self.latlon.to(device, non_blocking=True),
            patch_size=self.patch_size,
            sample_ids=list(self.sample_ids),
            view_data=[
                {k: v.to(device, non_blocking=True) for k, v in d.items()} for d in self.view_data
            ],  # fmt: skip
        )

    def pin_memory(self) -> MaskedBatch:
        """Pin every tensor (called by DataLoader when pin_memory=True)."""
        return MaskedBatch(
            data={k: v.pin_memory() for k, v in self.data.items()},
            masks=[{k: v.pin_memory() for k, v in m.items()} for m in self.masks],
            timestamps=self.timestamps.pin_memory(),
            latlon=self.latlon.pin_memory(),
            patch_size=self.patch_size,
            sample_ids=list(self.sample_ids),
            view_data=[{k: v.pin_memory() for k, v in d.items()} for d in self.view_data],
        )

    def num_tokens(self, view: int = 0) -> dict[MaskValue, int]:
        """Count tokens per mask value in one view."""
        counts = dict.fromkeys(MaskValue, 0)
        for m in self.masks[view].values():
            vals, n = torch.unique(m, return_counts=True)
            for v, c in zip(vals.tolist(), n.tolist()):
                counts[MaskValue(v)] += c
        return counts
