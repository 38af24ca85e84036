"""OlmoEarth (allenai, Apache-2.0) behind the Helios encoder surface.

The network is the authors' own `olmoearth-pretrain-minimal` encoder (v1, v1.1, v1.2 and v1.3,
every published size), with weights from a local release bundle, an olmo-core training
checkpoint or a cached Hugging Face id (`helios.evals.baselines._olmoearth_load`), or seeded
random weights. The wrapper only translates:

- inputs: the released encoders read `sentinel2_l2a`, `sentinel1` and `landsat`, whose band
  orders and (v1) band sets are the same in Helios and OlmoEarth. v1 makes one token per band
  set; v1.1 and later one per patch for all Sentinel-2 bands (and all Landsat bands);
- normalization (`normalizer`): OlmoEarth's published statistics (the package's
  `computed.json`) with its formula, (x - (mean - 2 std)) / (4 std), unclipped
  (NORM_NO_CLIP_2_STD). Sentinel-1 is in dB, Landsat in Level-1 digital numbers, as both were
  in pretraining;
- masks: a token is encoded when its band sets are visible (`band_visibility`). For v1.1 and
  later, whose one token spans several Helios band sets, a token is encoded when any of them
  is, and the bands of hidden sets are 0 (what `NormalizerV1_1` does with missing bands).
  Hidden tokens are left out of attention (OlmoEarth's own masked pass; when nothing is hidden,
  its `fast_pass`, which gives the same result);
- time: the real dates of `batch.timestamps` (OlmoEarth counts months from 0), not the
  dummy months rslearn's legacy wrapper passes.

Outputs are `olmoearth_<modality>` [B, h, w, T, S, D] (S: the model's token groups).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.data.normalize import load_computed_config
from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.nn.flexi_vit import (
    Encoder as OlmoEarthNet,
)
from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.utils.constants import (
    Modality as OlmoEarthModality,
)
from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.utils.datatypes import (
    MaskedOlmoEarthSample,
)
from torch import Tensor

from helios.data.modalities import MISSING_VALUE, get_modality
from helios.data.normalize import Normalizer, NormMethod, NormStats
from helios.data.sample import MaskedBatch, MaskValue
from helios.evals.baselines._common import band_visibility, to_pixels
from helios.evals.baselines._olmoearth_load import (
    LoadedOlmoEarth,
    OlmoEarthSize,
    OlmoEarthVersion,
    PresetVersion,
    build_encoder,
    describe_config,
    load_weights_folder,
    random_encoder,
)
from helios.nn.api import Encoder, TokensAndMasks

READABLE = ("sentinel2_l2a", "sentinel1", "landsat")
"""Helios modalities the wrapper can hand to OlmoEarth (same name, bands and units there)."""


def olmoearth_normalizer(modalities: tuple[str, ...] = READABLE) -> Normalizer:
    """OlmoEarth's own normalization: its published stats, mean +- 2 std onto [0, 1]."""
    computed = load_computed_config()
    stats = NormStats.from_json({m: computed[m] for m in modalities}, source="olmoearth")
    return Normalizer(stats, NormMethod.NORM_NO_CLIP_2_STD)


class OlmoEarthEncoder(Encoder):
    """An OlmoEarth encoder reading `MaskedBatch`es normalized by `self.normalizer`."""

    default_patch_size = 4
    """The patch size of OlmoEarth's published evaluations and fine-tunes."""

    def __init__(self, loaded: LoadedOlmoEarth) -> None:
        """Wrap a loaded encoder (see `from_pretrained` and `random`)."""
        super().__init__()
        self.net: OlmoEarthNet = loaded.net
        self.size, self.version, self.source = loaded.size, loaded.version, loaded.source
        self.encoder_config = loaded.encoder_config
        self.embed_dim = int(loaded.encoder_config["embedding_size"])
        self.max_patch_size = int(loaded.encoder_config.get("max_patch_size", 8))
        self.modalities = tuple(m for m in READABLE if m in loaded.inputs)
        if not self.modalities:
            raise ValueError(f"{loaded.source}: the encoder reads none of {READABLE}")
        self.normalizer = olmoearth_normalizer(self.modalities)
        self.square_grid = loaded.encoder_config.get("position_encoding", "absolute") in (
            "absolute",
            None,
        )
        self.eval()

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        size: OlmoEarthSize | None = None,
        version: OlmoEarthVersion | None = None,
    ) -> OlmoEarthEncoder:
        """Published or trained weights from a local folder or a cached hub id (strict)."""
        return cls(load_weights_folder(path, size, version))

    @classmethod
    def random(
        cls, size: OlmoEarthSize = "nano", version: PresetVersion = "v1", seed: int = 0
    ) -> OlmoEarthEncoder:
        """A published architecture with seeded random weights."""
        return cls(random_encoder(size, version, seed))

    def describe(self) -> dict[str, Any]:
        """Plain values that rebuild this architecture (`from_description`)."""
        return {
            "encoder_config": self.encoder_config,
            "size": self.size,
            "version": self.version,
            "inputs": list(self.modalities),
        }

    @classmethod
    def from_description(cls, desc: dict[str, Any]) -> OlmoEarthEncoder:
        """The architecture of `describe()` with fresh weights (a checkpoint loads them)."""
        net = build_encoder(desc["encoder_config"])
        loaded = LoadedOlmoEarth(
            net,
            desc["encoder_config"],
            desc.get("size"),
            str(desc.get("version") or describe_config(desc["encoder_config"])[1]),
            tuple(desc.get("inputs") or READABLE),
            "checkpoint",
        )
        return cls(loaded)

    def band_groups(self, modality: str) -> list[list[int]]:
        """The model's token groups of `modality`: channel indices into its band order."""
        tok = self.net.patch_embeddings.tokenization_config
        return [list(g) for g in tok.get_bandset_indices(modality)]

    def to_sample(
        self, batch: MaskedBatch, view: int = 0
    ) -> tuple[MaskedOlmoEarthSample, dict[str, Tensor]]:
        """The OlmoEarth input of a batch, and per modality the token masks [B, h, w, T, S]."""
        present = [m for m in self.modalities if m in batch.data and m in batch.masks[view]]
        if not present:
            raise ValueError(f"OlmoEarth needs one of {self.modalities}, got {sorted(batch.data)}")
        fields: dict[str, Tensor] = {}
        token_masks: dict[str, Tensor] = {}
        for m in present:
            data, mask = self._modality(batch, view, m)
            fields[m] = data
            fields[f"{m}_mask"] = to_pixels(mask, data.shape[1], data.shape[2])
            token_masks[m] = mask
        stamps = batch.timestamps.to(torch.long)
        day = stamps[..., 0].clamp(1, 31)
        month = (stamps[..., 1] - 1).clamp(0, 11)  # OlmoEarth counts months from 0
        fields["timestamps"] = torch.stack([day, month, stamps[..., 2]], dim=-1)
        return MaskedOlmoEarthSample(**fields), token_masks

    def _modality(self, batch: MaskedBatch, view: int, m: str) -> tuple[Tensor, Tensor]:
        """Data [B, H, W, T, C] in OlmoEarth's band order and token masks [B, h, w, T, S]."""
        spec = get_modality(m)
        order = OlmoEarthModality.get(m).band_order
        x = batch.data[m][..., [spec.band_index(b) for b in order]]
        sets = [band_visibility(batch, view, m, bs.bands) for bs in spec.band_sets]
        set_of = [next(i for i, bs in enumerate(spec.band_sets) if b in bs.bands) for b in order]
        visible, values = [], []
        keep = torch.zeros_like(x, dtype=torch.bool)
        for group in self.band_groups(m):
            covered = sorted({set_of[c] for c in group})
            vis = torch.stack([sets[j][0] for j in covered]).any(0)  # [B, h, w, T]
            val = torch.stack([sets[j][1] for j in covered]).amax(0)
            visible.append(vis)
            values.append(torch.where(vis, torch.zeros_like(val), val.clamp(min=1)))
            for c in group:  # a band counts where its own set and its token are visible
                own = sets[set_of[c]][0] & vis
                keep[..., c] = to_pixels(own, x.shape[1], x.shape[2])
        ok = keep & (x != MISSING_VALUE) & torch.isfinite(x)
        data = torch.where(ok, x, torch.zeros((), dtype=x.dtype, device=x.device))
        mask = torch.stack(values, dim=-1).to(torch.int8)  # [B, h, w, T, S]
        return data, mask

    def forward(self, batch: MaskedBatch, view: int = 0) -> TokensAndMasks:
        """Encode the visible tokens of the readable modalities present in the batch."""
        sample, token_masks = self.to_sample(batch, view)
        p = int(batch.patch_size)
        if not 1 <= p <= self.max_patch_size:
            raise ValueError(f"OlmoEarth patch size must be 1..{self.max_patch_size}, got {p}")
        for m, mask in token_masks.items():
            h, w = mask.shape[1:3]
            if getattr(sample, m).shape[1] != h * p or getattr(sample, m).shape[2] != w * p:
                raise ValueError(f"{m}: image side is not a multiple of patch size {p}")
            if self.square_grid and h != w:
                raise ValueError(f"OlmoEarth {self.version} needs a square token grid, got {h}x{w}")
        everything = all(bool((mk == MaskValue.ENCODER).all()) for mk in token_masks.values())
        out = self.net(sample, patch_size=p, fast_pass=everything)["tokens_and_masks"]
        tokens, masks = {}, {}
        for m, mask in token_masks.items():
            tok = getattr(out, m)
            vis = (mask == MaskValue.ENCODER).unsqueeze(-1)
            tokens[f"olmoearth_{m}"] = torch.where(vis, tok, torch.zeros((), dtype=tok.dtype))
            masks[f"olmoearth_{m}"] = mask
        return TokensAndMasks(tokens, masks)


__all__ = [
    "READABLE",
    "OlmoEarthEncoder",
    "OlmoEarthSize",
    "OlmoEarthVersion",
    "PresetVersion",
    "olmoearth_normalizer",
]
