"""DINOv3 (facebookresearch/dinov3, DINOv3 License) behind the Helios encoder surface.

A plain ViT with 16 px patches, a class token and 4 register ("storage") tokens, 2-D rotary
position embeddings on the patch tokens (`rope_embed.periods`), LayerScale, and a qkv bias whose
key part is masked to zero (`bias_mask`). Module and parameter names follow the published
checkpoints (e.g. `dinov3_vitl16_pretrain_sat493m-eadcf0ff.pth`,
`dinov3_vits16_pretrain_lvd1689m-08c60483.pth`), which load strictly into the matching variant.

Inputs are RGB: B04 B03 B02 of sentinel2 or sentinel2_l2a, or B4 B3 B2 of landsat; each
modality present is encoded separately, every time step on its own. `normalizer` maps raw
values to 0..1 with the dataset min/max, clipped and quantized to 8 bits
(NORM_YES_CLIP_MIN_MAX_INT); forward then applies the variant's own mean/std (web: ImageNet,
sat: the SAT-493M values). Images are resized (bilinear, antialiased) so that each Helios patch
becomes one 16 px model patch. A patch whose RGB is hidden becomes the mask token and is left
out of the attention of the others. Output: "dinov3_<modality>" [B, h, w, T, 1, D].
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from helios.data.modalities import get_modality
from helios.data.normalize import Normalizer, NormMethod, NormStats
from helios.data.sample import MaskedBatch
from helios.evals.baselines._common import (
    ViTBlock,
    band_visibility,
    hidden_mask_value,
    load_strict,
    load_weights,
    resize_to_grid,
    to_pixels,
)
from helios.nn.api import Encoder, TokensAndMasks

RGB_BANDS: dict[str, tuple[str, str, str]] = {
    "sentinel2": ("B04", "B03", "B02"),
    "sentinel2_l2a": ("B04", "B03", "B02"),
    "landsat": ("B4", "B3", "B2"),
}
"""Helios modality -> its red, green and blue bands."""
WEB_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
"""ImageNet statistics, for the LVD-1689M (web) weights."""
SAT_MEAN_STD = ((0.430, 0.411, 0.296), (0.213, 0.156, 0.143))
"""The statistics DINOv3's README gives for the SAT-493M weights."""


@dataclass(frozen=True)
class DINOv3Arch:
    """Network size and options; the defaults are ViT-S/16."""

    embed_dim: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: float = 4.0
    patch_size: int = 16
    n_storage_tokens: int = 4
    rope_base: float = 100.0
    layerscale_init: float = 1e-5
    norm_eps: float = 1e-5
    local_cls_norm: bool = False
    """The SAT-493M ViT-L keeps a second, training-only class-token norm (`local_cls_norm`)."""


DINOv3Variant = Literal["vits16_web", "vitb16_web", "vitl16_web", "vitl16_sat"]
VARIANTS: dict[str, tuple[DINOv3Arch, tuple[tuple[float, ...], tuple[float, ...]]]] = {
    "vits16_web": (DINOv3Arch(), WEB_MEAN_STD),
    "vitb16_web": (DINOv3Arch(768, 12, 12), WEB_MEAN_STD),
    "vitl16_web": (DINOv3Arch(1024, 24, 16), WEB_MEAN_STD),
    "vitl16_sat": (DINOv3Arch(1024, 24, 16, local_cls_norm=True), SAT_MEAN_STD),
}
"""Published variants: architecture and input mean/std."""


class PatchEmbed(nn.Module):
    """Conv patch embedding: [N, 3, H, W] -> [N, H/16, W/16, D]."""

    def __init__(self, patch_size: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        """Project patches."""
        return self.proj(x).permute(0, 2, 3, 1)


class RopePositionEmbedding(nn.Module):
    """2-D RoPE: per-head sin/cos of patch-centre coordinates in [-1, 1] (rows, columns)."""

    periods: Tensor

    def __init__(self, dim: int, num_heads: int, base: float) -> None:
        super().__init__()
        head = dim // num_heads
        exponents = 2 * torch.arange(head // 4, dtype=torch.float32) / (head // 2)
        self.register_buffer("periods", base**exponents)

    def forward(self, h: int, w: int) -> tuple[Tensor, Tensor]:
        """(sin, cos), each [h w, head_dim]."""
        dev = self.periods.device
        ch = torch.arange(0.5, h, device=dev, dtype=torch.float32) / h
        cw = torch.arange(0.5, w, device=dev, dtype=torch.float32) / w
        coords = torch.stack(torch.meshgrid(ch, cw, indexing="ij"), dim=-1).flatten(0, 1)
        angles = 2 * math.pi * (2.0 * coords - 1.0)[:, :, None] / self.periods[None, None]
        angles = angles.flatten(1, 2).tile(2)
        return angles.sin(), angles.cos()


class DINOv3Net(nn.Module):
    """The DINOv3 ViT (published key layout), evaluated as at inference."""

    def __init__(self, arch: DINOv3Arch) -> None:
        super().__init__()
        d = arch.embed_dim
        self.arch = arch
        self.embed_dim = d
        self.patch_embed = PatchEmbed(arch.patch_size, d)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.storage_tokens = nn.Parameter(torch.zeros(1, arch.n_storage_tokens, d))
        self.rope_embed = RopePositionEmbedding(d, arch.num_heads, arch.rope_base)
        self.blocks = nn.ModuleList(
            [
                ViTBlock(
                    d, arch.num_heads, arch.mlp_ratio, arch.norm_eps, arch.layerscale_init, True
                )
                for _ in range(arch.depth)
            ]
        )
        self.norm = nn.LayerNorm(d, eps=arch.norm_eps)
        if arch.local_cls_norm:
            self.local_cls_norm = nn.LayerNorm(d, eps=arch.norm_eps)
        self.mask_token = nn.Parameter(torch.zeros(1, d))
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.storage_tokens, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def encode(self, x: Tensor, visible: Tensor | None = None) -> Tensor:
        """Normalized RGB [N, 3, H, W] -> normed patch tokens [N, H/16, W/16, D].

        Patches where `visible` [N, h, w] is False become the mask token and are not attended.
        """
        tok = self.patch_embed(x)
        n, h, w, d = tok.shape
        tok = tok.reshape(n, h * w, d)
        key_mask = None
        if visible is not None and not bool(visible.all()):
            vis = visible.reshape(n, h * w)
            tok = torch.where(vis[..., None], tok, self.mask_token.to(tok.dtype)[None])
            key_mask = F.pad(vis, (1 + self.arch.n_storage_tokens, 0), value=True)
        prefix = torch.cat([self.cls_token, self.storage_tokens], dim=1).expand(n, -1, -1)
        tok = torch.cat([prefix, tok], dim=1)
        rope = self.rope_embed(h, w)
        for blk in self.blocks:
            tok = blk(tok, key_mask=key_mask, rope=rope)
        return self.norm(tok[:, 1 + self.arch.n_storage_tokens :]).reshape(n, h, w, d)


class DINOv3Encoder(DINOv3Net, Encoder):
    """DINOv3 reading `MaskedBatch`es normalized by `self.normalizer` (min/max, 8 bit)."""

    rgb_mean: Tensor
    rgb_std: Tensor

    modalities = ("sentinel2", "sentinel2_l2a", "landsat")
    default_patch_size = 4
    """A 64 px tile gives a 256 px image, the size DINOv3's reference transform resizes to."""

    def __init__(
        self,
        weights: str | Path | None = None,
        variant: DINOv3Variant = "vitl16_sat",
        stats: NormStats | None = None,
        arch: DINOv3Arch | None = None,
    ) -> None:
        """Build `variant`; load `weights` (a local DINOv3 .pth) strictly if given.

        `stats` must hold the dataset's per-band min and max for the RGB bands (without them
        the modality's fixed range is used). `arch` overrides the variant's network size (for
        tests); the variant still picks the input mean/std.
        """
        default_arch, (mean, std) = VARIANTS[variant]
        super().__init__(arch or default_arch)
        self.variant = variant
        self.register_buffer("rgb_mean", torch.tensor(mean), persistent=False)
        self.register_buffer("rgb_std", torch.tensor(std), persistent=False)
        self.normalizer = Normalizer(stats, NormMethod.NORM_YES_CLIP_MIN_MAX_INT)
        if weights is not None:
            load_strict(self, load_weights(weights), str(weights))
        self.eval()

    @classmethod
    def from_pretrained(
        cls, path: str | Path, variant: DINOv3Variant = "vitl16_sat", stats: NormStats | None = None
    ) -> DINOv3Encoder:
        """Load published weights of `variant` from a local file."""
        return cls(path, variant, stats)

    def forward(self, batch: MaskedBatch, view: int = 0) -> TokensAndMasks:
        """Encode each RGB modality present, one time step at a time."""
        masks = batch.masks[view]
        present = [m for m in self.modalities if m in batch.data and m in masks]
        if not present:
            raise ValueError(f"DINOv3 needs one of {self.modalities}, got {list(batch.data)}")
        tokens: dict[str, Tensor] = {}
        out_masks: dict[str, Tensor] = {}
        for m in present:
            spec = get_modality(m)
            vis, val = band_visibility(batch, view, m, RGB_BANDS[m])  # [B, h, w, T]
            x = batch.data[m][..., [spec.band_index(b) for b in RGB_BANDS[m]]]
            x = (x - self.rgb_mean.to(x)) / self.rgb_std.to(x)
            x = torch.where(to_pixels(vis, x.shape[1], x.shape[2])[..., None], x, 0.0)
            b, h, w, t = vis.shape
            imgs = x.permute(0, 3, 4, 1, 2).reshape(b * t, 3, x.shape[1], x.shape[2])
            imgs = resize_to_grid(imgs, h, w, self.arch.patch_size, antialias=True)
            vis_n = vis.permute(0, 3, 1, 2).reshape(b * t, h, w)
            tok = self.encode(imgs, vis_n).reshape(b, t, h, w, -1).permute(0, 2, 3, 1, 4)
            tokens[f"dinov3_{m}"] = (tok * vis[..., None].to(tok.dtype))[:, :, :, :, None]
            out_masks[f"dinov3_{m}"] = hidden_mask_value(val, vis)[..., None]
        return TokensAndMasks(tokens, out_masks)


__all__ = ["DINOv3Arch", "DINOv3Encoder", "DINOv3Net", "RGB_BANDS", "VARIANTS"]
