"""The two types that cross from data/ to nn/: `Sample` (one tile) and `MaskedBatch`.

Array conventions (in memory, after loading an H5 sample):

- `Sample.data[modality]` is float32 in the on-disk shape: [H, W, T, C] for multitemporal
  spatial modalities (T is the sample's full time axis, `len(timestamps)`), [H, W, C] for static
  ones, [T, C] for non-spatial series. Missing timesteps and nodata pixels hold
  `MISSING_VALUE`; they are never replaced by numbers.
- `MaskedBatch.data[modality]` is float32 [B, H, W, T, C] for every modality: static modalities
  have T = 1 and non-spatial ones H = W = 1, so the encoder sees one shape.
- `MaskedBatch.masks[v][modality]` is int8 [B, h, w, T, S]: one `MaskValue` per token, where
  (h, w) is the token grid (10 m pixels / patch size, 1 for non-spatial), T as in `data` and S
  the number of band sets. There is one dict per masked view (`num_views`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

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
    """One tile: per-modality arrays on a shared time axis (see module docstring)."""

    data: dict[str, np.ndarray]
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
        return list(self.data)

    def ref_size(self) -> int:
        """Side of the sample in 10 m reference pixels (0 if it has no spatial modality)."""
        for name, arr in self.data.items():
            spec = get_modality(name)
            if spec.is_spatial:
                return int(arr.shape[0] // spec.pixels_per_ref_pixel)
        return 0

    def present_timesteps(self, modality: str) -> np.ndarray:
        """bool [T]: True where `modality` has any data at that timestep."""
        spec = get_modality(modality)
        arr = self.data[modality]
        if not spec.is_multitemporal:
            return np.ones(1, dtype=bool)
        time_axis = 2 if spec.is_spatial else 0
        other = tuple(i for i in range(arr.ndim) if i != time_axis)
        return np.asarray((arr != MISSING_VALUE).any(axis=other))


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
    """Dataset indices of the samples, in batch order."""

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
        )

    def num_tokens(self, view: int = 0) -> dict[MaskValue, int]:
        """Count tokens per mask value in one view."""
        counts = dict.fromkeys(MaskValue, 0)
        for m in self.masks[view].values():
            vals, n = torch.unique(m, return_counts=True)
            for v, c in zip(vals.tolist(), n.tolist()):
                counts[MaskValue(v)] += c
        return counts
