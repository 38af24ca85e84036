"""Panopticon (Panopticon-FM/panopticon, Apache-2.0; weights CC-BY-4.0) behind the Helios surface.

Panopticon is a DINOv2 ViT whose patch embedding accepts any set of channels: each channel is
patchified on its own (a 1 x P x P Conv3d to `attn_dim`), tagged with an embedding of its
central wavelength in nm (sin-cos; SAR channels use learned transmit/receive/orbit embeddings
addressed by negative ids, -1 = VV and -2 = VH), and one learned query cross-attends over the
channels of each patch. Module and parameter names follow the published
`panopticon_vitb14_teacher.pth`, which loads strictly into the default `PanopticonArch`.

In Helios every optical or SAR band of sentinel2, sentinel2_l2a, sentinel1 and landsat is a
channel (`CHANNEL_IDS`); all present modalities are fused into one token per patch and time
step. Each time step is encoded on its own. Images are resized (bilinear) so that each Helios
patch becomes one 14 px model patch. Hidden band sets are left out of the channel attention of
their patch; a patch with no visible channel becomes DINOv2's mask token and is left out of the
attention of the others. Output: "panopticon" [B, h, w, T, 1, D].
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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

S2_WAVELENGTHS_NM: dict[str, float] = {
    "B01": 442.922568734037,
    "B02": 492.9971095687347,
    "B03": 559.5987534818435,
    "B04": 664.6300422881802,
    "B05": 704.0059319834206,
    "B06": 740.5521320760564,
    "B07": 782.4190761493182,
    "B08": 827.5394062383036,
    "B8A": 864.7801257644385,
    "B09": 945.0294901407692,
    "B10": 1373.3636762095748,
    "B11": 1613.8624163477282,
    "B12": 2203.6182057820033,
}
"""Gaussian SRF centres of Sentinel-2 MSI, from Panopticon's sensor config."""
LANDSAT_WAVELENGTHS_NM: dict[str, float] = {
    "B1": 442.6486977867469,
    "B2": 482.626742301136,
    "B3": 560.991848338365,
    "B4": 654.2860463136833,
    "B5": 864.6129891438968,
    "B6": 1608.7469945334756,
    "B7": 2203.5048261584875,
    "B8": 596.8190587207782,
    "B9": 1374.1802289606335,
    "B10": 10847.467021274,
    "B11": 12017.038582815621,
}
"""Landsat 8/9 OLI/TIRS SRF centres, from Panopticon's landsat9 config."""
CHANNEL_IDS: dict[str, dict[str, float]] = {
    "sentinel2": S2_WAVELENGTHS_NM,
    "sentinel2_l2a": S2_WAVELENGTHS_NM,
    "sentinel1": {"vv": -1.0, "vh": -2.0},  # SAR ids: VV / VH, both orbits
    "landsat": LANDSAT_WAVELENGTHS_NM,
}
"""Helios modality -> band -> Panopticon channel id (wavelength in nm, negative for SAR)."""


@dataclass(frozen=True)
class PanopticonArch:
    """Network size; the defaults are the published ViT-B/14."""

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    patch_size: int = 14
    pos_grid: int = 37
    """Side of the learned position-embedding grid (518 px / 14)."""
    attn_dim: int = 2304
    """Width of the per-channel patch features and the channel cross-attention."""
    channel_heads: int = 16


def sincos_1d(dim: int, pos: Tensor) -> Tensor:
    """MAE 1-D sin-cos table [len(pos), dim]: frequencies 1 / 10000^(i / (dim / 2))."""
    omega = torch.arange(dim // 2, dtype=torch.float32, device=pos.device) / (dim / 2.0)
    out = pos.reshape(-1, 1).float() * (1.0 / 10000**omega)[None]
    return torch.cat([out.sin(), out.cos()], dim=1)


class Conv3dWrapper(nn.Module):
    """Patchify every channel separately: [N, C, H, W] -> [N, C, L, attn_dim]."""

    def __init__(self, patch_size: int, dim: int) -> None:
        super().__init__()
        k = (1, patch_size, patch_size)
        self.conv3d = nn.Conv3d(1, dim, kernel_size=k, stride=k)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the per-channel patch projection."""
        return self.conv3d(x[:, None]).flatten(-2).permute(0, 2, 3, 1)


class ChnEmb(nn.Module):
    """Channel embeddings: sin-cos of the wavelength (nm) for optical, learned for SAR."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        third = dim // 3
        self.embed_transmit = nn.Parameter(torch.zeros(2, third))  # V, H
        self.embed_receive = nn.Parameter(torch.zeros(2, third))  # V, H
        self.embed_orbit = nn.Parameter(torch.zeros(2, dim - 2 * third))  # asc, desc

    def sar_table(self) -> Tensor:
        """[12, dim] for ids -1..-12: VV VH HH HV for both orbits, ascending, descending."""
        t, r, o = self.embed_transmit, self.embed_receive, self.embed_orbit
        transmit = torch.stack([t[0], t[0], t[1], t[1]]).repeat(3, 1)
        receive = torch.stack([r[0], r[1], r[1], r[0]]).repeat(3, 1)
        orbit = torch.stack([o.mean(0), o[0], o[1]]).repeat_interleave(4, dim=0)
        return torch.cat([transmit, receive, orbit], dim=1)

    def forward(self, ids: Tensor) -> Tensor:
        """[N, C] channel ids -> [N, C, dim]."""
        sar = ids < 0
        optical = sincos_1d(self.dim, torch.floor(ids.clamp(min=0)).flatten()).reshape(
            *ids.shape, -1
        )
        sar_idx = (-(ids + 1)).clamp(0, 11).long()
        return torch.where(sar[..., None], self.sar_table()[sar_idx], optical.to(self.embed_orbit))


class CrossAttnNoQueryProj(nn.Module):
    """Multi-head cross-attention of a given query over keys/values (no q or out projection)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.inproj_k = nn.Linear(dim, dim, bias=False)
        self.inproj_v = nn.Linear(dim, dim, bias=False)

    def forward(self, q: Tensor, kv: Tensor, key_mask: Tensor) -> Tensor:
        """Attend: query [N, 1, D] over kv [N, C, D]; key_mask [N, C] is True where used."""
        n, c, d = kv.shape
        hd = d // self.num_heads
        qh = q.reshape(n, 1, self.num_heads, hd).transpose(1, 2)
        k = self.inproj_k(kv).reshape(n, c, self.num_heads, hd).transpose(1, 2)
        v = self.inproj_v(kv).reshape(n, c, self.num_heads, hd).transpose(1, 2)
        out = F.scaled_dot_product_attention(qh, k, v, attn_mask=key_mask[:, None, None, :])
        return out.transpose(1, 2).reshape(n, 1, d)


class ChnAttn(nn.Module):
    """Fuse any number of channels of a patch into one vector with a learned query."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.chnemb = ChnEmb(dim)
        self.query = nn.Parameter(torch.randn(1, 1, dim))
        self.xattn = CrossAttnNoQueryProj(dim, num_heads)

    def forward(self, x: Tensor, ids: Tensor, keep: Tensor) -> Tensor:
        """Fuse [N, C, L, D] to [N, L, D]; ids [N, C]; keep [N, L, C] is True where visible."""
        n, c, length, d = x.shape
        x = (x + self.chnemb(ids)[:, :, None]).permute(0, 2, 1, 3).reshape(n * length, c, d)
        keep = keep.reshape(n * length, c)
        keep = keep | ~keep.any(dim=1, keepdim=True)  # no visible channel: replaced afterwards
        out = self.xattn(self.query.expand(n * length, 1, d), x, keep)
        return out.reshape(n, length, d)


class PanopticonPE(nn.Module):
    """Panopticon's patch embedding: per-channel patches, channel attention, projection."""

    def __init__(self, arch: PanopticonArch) -> None:
        super().__init__()
        self.conv3d = Conv3dWrapper(arch.patch_size, arch.attn_dim)
        self.chnfus = ChnAttn(arch.attn_dim, arch.channel_heads)
        self.proj = nn.Linear(arch.attn_dim, arch.embed_dim)

    def forward(self, x: Tensor, ids: Tensor, keep: Tensor) -> Tensor:
        """[N, C, H, W] -> [N, L, D]."""
        return self.proj(self.chnfus(self.conv3d(x), ids, keep))


class PanopticonNet(nn.Module):
    """The DINOv2 ViT with Panopticon's patch embedding (published key layout)."""

    def __init__(self, arch: PanopticonArch) -> None:
        super().__init__()
        d = arch.embed_dim
        self.arch = arch
        self.embed_dim = d
        self.patch_embed = PanopticonPE(arch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, arch.pos_grid**2 + 1, d))
        self.mask_token = nn.Parameter(torch.zeros(1, d))
        self.blocks = nn.ModuleList(
            [ViTBlock(d, arch.num_heads, arch.mlp_ratio, norm_eps=1e-6) for _ in range(arch.depth)]
        )
        self.norm = nn.LayerNorm(d, eps=1e-6)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def pos_encoding(self, h: int, w: int) -> Tensor:
        """Position embeddings [1, 1 + h w, D], bicubically resized as DINOv2 does."""
        g = self.arch.pos_grid
        if (h, w) == (g, g):
            return self.pos_embed
        cls, grid = self.pos_embed[:, :1], self.pos_embed[:, 1:].float()
        grid = grid.reshape(1, g, g, -1).permute(0, 3, 1, 2)
        scale = ((h + 0.1) / g, (w + 0.1) / g)  # DINOv2's offset against rounding down
        grid = F.interpolate(grid, scale_factor=scale, mode="bicubic", antialias=False)
        grid = grid.permute(0, 2, 3, 1).reshape(1, h * w, -1).to(cls.dtype)
        return torch.cat([cls, grid], dim=1)

    def encode(self, x: Tensor, ids: Tensor, keep: Tensor) -> tuple[Tensor, Tensor]:
        """Normalized images [N, C, H, W] -> (patch tokens [N, h, w, D], visible [N, h, w]).

        `keep` [N, h, w, C] is True where a channel of a patch is visible.
        """
        n, _, hh, ww = x.shape
        p = self.arch.patch_size
        h, w = hh // p, ww // p
        keep = keep.reshape(n, h * w, -1)
        visible = keep.any(dim=-1)
        tok = self.patch_embed(x, ids, keep)
        tok = torch.where(visible[..., None], tok, self.mask_token.to(tok.dtype)[None])
        tok = torch.cat([self.cls_token.expand(n, -1, -1), tok], dim=1) + self.pos_encoding(h, w)
        key_mask = None if bool(visible.all()) else F.pad(visible, (1, 0), value=True)
        for blk in self.blocks:
            tok = blk(tok, key_mask=key_mask)
        tok = self.norm(tok)[:, 1:]
        return tok.reshape(n, h, w, -1), visible.reshape(n, h, w)


class PanopticonEncoder(PanopticonNet, Encoder):
    """Panopticon reading `MaskedBatch`es standardized by `self.normalizer` (z-scores)."""

    modalities = ("sentinel2", "sentinel2_l2a", "sentinel1", "landsat")
    default_patch_size = 4
    """A 64 px tile gives 16 x 16 tokens from a 224 px image, as Panopticon was pretrained."""

    def __init__(
        self,
        weights: str | Path | None = None,
        stats: NormStats | None = None,
        arch: PanopticonArch | None = None,
    ) -> None:
        """Build (ViT-B/14 by default); load `weights` (local teacher .pth) strictly if given.

        `stats` are the dataset's per-band mean and std for the STANDARDIZE normalization.
        """
        super().__init__(arch or PanopticonArch())
        self.normalizer = Normalizer(stats, NormMethod.STANDARDIZE)
        if weights is not None:
            load_strict(self, load_weights(weights), str(weights))
        self.eval()

    @classmethod
    def from_pretrained(cls, path: str | Path, stats: NormStats | None = None) -> PanopticonEncoder:
        """Load the published ViT-B/14 teacher weights from a local file."""
        return cls(path, stats)

    def forward(self, batch: MaskedBatch, view: int = 0) -> TokensAndMasks:
        """Encode every time step of the present modalities as one fused token per patch."""
        masks = batch.masks[view]
        present = [m for m in self.modalities if m in batch.data and m in masks]
        if not present:
            raise ValueError(f"Panopticon needs one of {self.modalities}, got {list(batch.data)}")
        xs, ids, keeps, vals = [], [], [], []
        for m in present:
            spec = get_modality(m)
            for band in spec.band_order:
                if band not in CHANNEL_IDS[m]:
                    continue
                vis, val = band_visibility(batch, view, m, (band,))
                x = batch.data[m][..., spec.band_index(band)]
                xs.append(torch.where(to_pixels(vis, x.shape[1], x.shape[2]), x, 0.0))
                ids.append(CHANNEL_IDS[m][band])
                keeps.append(vis)
                vals.append(val)
        x = torch.stack(xs, dim=-1)  # [B, H, W, T, C]
        keep = torch.stack(keeps, dim=-1)  # [B, h, w, T, C]
        b, h, w, t, c = keep.shape
        imgs = x.permute(0, 3, 4, 1, 2).reshape(b * t, c, x.shape[1], x.shape[2])
        imgs = resize_to_grid(imgs, h, w, self.arch.patch_size, antialias=False)
        chn = torch.tensor(ids, dtype=imgs.dtype, device=imgs.device).expand(b * t, c)
        keep_n = keep.permute(0, 3, 1, 2, 4).reshape(b * t, h, w, c)
        tok, visible = self.encode(imgs, chn, keep_n)
        tok = tok.reshape(b, t, h, w, -1).permute(0, 2, 3, 1, 4)
        visible = visible.reshape(b, t, h, w).permute(0, 2, 3, 1)
        val = torch.stack(vals, dim=-1).amin(dim=-1)  # least hidden channel
        tok = tok * visible[..., None].to(tok.dtype)
        mask = hidden_mask_value(val, visible)
        return TokensAndMasks(
            {"panopticon": tok[:, :, :, :, None]}, {"panopticon": mask[..., None]}
        )


__all__ = ["CHANNEL_IDS", "PanopticonArch", "PanopticonEncoder", "PanopticonNet"]
