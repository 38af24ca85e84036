"""rslearn's OlmoEarth feature extractor, on `olmoearth-pretrain-minimal`'s encoder.

Reproduces `rslearn.models.olmoearth_pretrain.model.OlmoEarth.forward` (rslearn 0.0.27) for
the fine-tunes it wrote, including what makes its outputs differ from a plain OlmoEarth call:

- inputs are per sample [C, T, H, W]; samples with fewer timesteps are padded at the end
  with zeros marked MISSING, and then the encoder takes its masked path, whose eval mode
  attends the padding rows (so a window's output depends on the batch it is in, as upstream);
- timestamps: legacy (the default, and what the fixtures were trained with) are dummies,
  (day 1, month t, 2024) for slot t; otherwise the midpoint of each step's time range;
- token pooling: per modality the mean over timesteps and band sets (non-MISSING ones when
  any is MISSING), then the mean over modalities: one [B, D, H/p, W/p] map.

The OlmoEarth module sits at `model` so that rslearn's state-dict keys
(`encoder.0.model.<encoder keys>`) load unchanged. rslearn's bf16 autocast is not applied:
Helios runs at the trainer's precision.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import torch
from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.nn.flexi_vit import (
    Encoder as OlmoEarthNet,
)
from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.utils.datatypes import (
    MaskedOlmoEarthSample,
)
from torch import Tensor, nn

from helios.data.sample import MaskValue
from helios.runner.predict.rslearn_model.modules import FeatureMaps

MODALITY_NAMES = ("sentinel2_l2a", "sentinel1", "worldcover", "openstreetmap_raster", "landsat")
"""Inputs rslearn's wrapper hands to OlmoEarth, in its order; other input keys are ignored."""
TimeRange = tuple[datetime, datetime]


@dataclass
class RasterInput:
    """One sample's input: image [C, T, H, W] and each step's time range (or None)."""

    image: Tensor
    time_ranges: list[TimeRange] | None = None


class RslearnOlmoEarth(nn.Module):
    """OlmoEarth as rslearn's fine-tunes call it (see the module docstring)."""

    def __init__(
        self, model: OlmoEarthNet, patch_size: int, legacy_timestamps: bool = True
    ) -> None:
        super().__init__()
        self.model = model
        self.patch_size = patch_size
        self.legacy_timestamps = legacy_timestamps

    def sample(self, inputs: list[dict[str, RasterInput]]) -> tuple[MaskedOlmoEarthSample, bool]:
        """The `MaskedOlmoEarthSample` rslearn builds, and whether any token is MISSING."""
        present = [m for m in MODALITY_NAMES if m in inputs[0]]
        if not present:
            raise ValueError(f"OlmoEarth needs one of the inputs {list(MODALITY_NAMES)}")
        steps = max(inp[m].image.shape[1] for m in present for inp in inputs)
        ranges: list[list[TimeRange]] = [[] for _ in inputs]
        fields: dict[str, Tensor] = {}
        missing = False
        groups = self.model.patch_embeddings.tokenization_config
        for m in present:
            images = []
            for i, inp in enumerate(inputs):
                img = inp[m].image
                if inp[m].time_ranges is not None and len(inp[m].time_ranges or []) > len(
                    ranges[i]
                ):
                    ranges[i] = list(inp[m].time_ranges or [])
                pad = steps - img.shape[1]
                images.append(torch.cat([img, img.new_zeros(img.shape[0], pad, *img.shape[2:])], 1))
            data = torch.stack(images).permute(0, 3, 4, 2, 1)  # b c t h w -> b h w t c
            b, h, w = data.shape[:3]
            mask = torch.full(
                (b, h, w, steps, groups.get_num_bandsets(m)),
                MaskValue.ENCODER.value,
                dtype=torch.int32,
                device=data.device,
            )
            for i, inp in enumerate(inputs):
                if inp[m].image.shape[1] < steps:
                    mask[i, :, :, inp[m].image.shape[1] :] = MaskValue.MISSING.value
                    missing = True
            fields[m], fields[f"{m}_mask"] = data, mask
        device = fields[present[0]].device
        fields["timestamps"] = self._timestamps(ranges, len(inputs), steps, device)
        return MaskedOlmoEarthSample(**fields), missing

    def _timestamps(
        self, ranges: list[list[TimeRange]], batch: int, steps: int, device: torch.device
    ) -> Tensor:
        """[B, T, 3] int32 (day, month from 0, year): legacy dummies or range midpoints."""
        out = torch.zeros((batch, steps, 3), dtype=torch.int32, device=device)
        if self.legacy_timestamps:
            out[:, :, 0] = 1
            out[:, :, 1] = torch.arange(steps, device=device)
            out[:, :, 2] = 2024
            return out
        if not any(ranges):
            raise ValueError("no input has timestamps (needed with use_legacy_timestamps: false)")
        for i, sample in enumerate(ranges):
            for t, (start, end) in enumerate(sample[:steps]):
                mid = start + (end - start) / 2
                out[i, t] = torch.tensor([mid.day, mid.month - 1, mid.year], dtype=torch.int32)
        return out

    def forward(self, inputs: list[dict[str, RasterInput]]) -> FeatureMaps:
        """One feature map [B, D, H/p, W/p], pooled over time, band sets and modalities."""
        sample, missing = self.sample(inputs)
        out = self.model(sample, fast_pass=not missing, patch_size=self.patch_size)
        tokens = out["tokens_and_masks"]
        pooled = []
        for m in (m for m in MODALITY_NAMES if getattr(sample, m) is not None):
            feats = getattr(tokens, m)  # [B, h, w, T, S, D]
            if missing:
                keep = (getattr(tokens, f"{m}_mask") != MaskValue.MISSING.value).unsqueeze(-1)
                count = keep.sum(dim=(3, 4))
                mean = (feats * keep).sum(dim=(3, 4)) / count.clamp(min=1)
            else:
                mean = feats.mean(dim=(3, 4))
            pooled.append(mean.permute(0, 3, 1, 2))
        return FeatureMaps([torch.stack(pooled).mean(dim=0)])
