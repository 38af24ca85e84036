"""The Galileo encoder network (nasaharvest/galileo, MIT), written from its published design.

Galileo tokenizes each channel group separately: space-time groups (S1, the S2 groups, NDVI)
per patch and month, space groups (SRTM, Dynamic World, WorldCereal) per patch, time groups
(ERA5, TerraClimate, VIIRS) per month and static groups (LandScan, location, tile-mean DW and
WorldCereal) once. Patch embeddings are FlexiViT-style: one kernel at `max_patch_size`,
resampled to any patch size through the pseudo-inverse of a bicubic resize. Every token gets a
learned group embedding plus fixed sin-cos encodings of its time step, month and position (a
quarter of the width each), then a plain pre-norm transformer runs over the visible tokens only.

Module and parameter names follow the published `encoder.pt`, which loads strictly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from helios.evals.baselines._common import Mlp

SPACE_TIME_GROUPS: dict[str, int] = {
    "S1": 2,
    "S2_RGB": 3,
    "S2_Red_Edge": 3,
    "S2_NIR_10m": 1,
    "S2_NIR_20m": 1,
    "S2_SWIR": 2,
    "NDVI": 1,
}
"""Space-time groups and their channel counts, in Galileo's order."""
SPACE_GROUPS: dict[str, int] = {"SRTM": 2, "DW": 9, "WC": 5}
TIME_GROUPS: dict[str, int] = {"ERA5": 2, "TC": 3, "VIIRS": 1}
STATIC_GROUPS: dict[str, int] = {"LS": 1, "location": 3, "DW_static": 9, "WC_static": 5}
FAMILIES: dict[str, dict[str, int]] = {
    "space_time": SPACE_TIME_GROUPS,
    "space": SPACE_GROUPS,
    "time": TIME_GROUPS,
    "static": STATIC_GROUPS,
}
BASE_GSD = 10.0
"""Metres per input pixel that Galileo's spatial encoding is relative to."""


@dataclass(frozen=True)
class GalileoArch:
    """Encoder hyper-parameters, as in Galileo's `config.json` (`model.encoder`)."""

    embedding_size: int = 128
    depth: int = 4
    num_heads: int = 8
    mlp_ratio: float = 4.0
    max_sequence_length: int = 24
    max_patch_size: int = 8


GALILEO_SIZES: dict[str, GalileoArch] = {
    "nano": GalileoArch(128, 4, 8),
    "tiny": GalileoArch(192, 12, 3),
    "base": GalileoArch(768, 12, 12),
}


def sincos_1d(dim: int, pos: Tensor) -> Tensor:
    """Galileo's 1-D sin-cos table [len(pos), dim]; frequencies 1 / 10000^(i / (2 dim))."""
    omega = 1.0 / 10000 ** (
        torch.arange(dim // 2, dtype=torch.float32, device=pos.device) / dim / 2.0
    )
    out = pos.reshape(-1, 1).float() * omega[None]
    return torch.cat([out.sin(), out.cos()], dim=1)


def month_table(dim: int) -> Tensor:
    """Fixed month encodings [12, dim]: sin then cos of the month angle, repeated."""
    angles = torch.arange(12, dtype=torch.float32) * (2 * math.pi / 12)
    half = angles[:, None].expand(12, dim // 2)
    return torch.cat([half.sin(), half.cos()], dim=1)


def spatial_table(dim: int, h: int, w: int, res: float, device: torch.device) -> Tensor:
    """Position encodings [h, w, dim]: the column's table, then the row's, scaled by `res`."""
    cols = sincos_1d(dim // 2, torch.arange(w, device=device) * res)  # [w, dim/2]
    rows = sincos_1d(dim // 2, torch.arange(h, device=device) * res)  # [h, dim/2]
    return torch.cat([cols[None].expand(h, w, -1), rows[:, None].expand(h, w, -1)], dim=-1)


class FlexiPatchEmbed(nn.Module):
    """Conv patch embedding whose kernel is resampled to any patch size (FlexiViT PI-resize)."""

    def __init__(self, in_chans: int, dim: int, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)
        self._pinv: dict[int, Tensor] = {}

    def resize_matrix_pinv(self, size: int) -> Tensor:
        """Pseudo-inverse of the bicubic (antialiased) resize of each basis kernel: [s^2, P^2]."""
        if size not in self._pinv:
            p = self.patch_size
            basis = torch.eye(p * p).reshape(p * p, 1, p, p)
            resized = F.interpolate(basis, (size, size), mode="bicubic", antialias=True)
            self._pinv[size] = torch.linalg.pinv(resized.reshape(p * p, size * size))
        return self._pinv[size]

    def weight(self, size: int) -> Tensor:
        """The kernel at patch size `size`."""
        w = self.proj.weight
        if size == self.patch_size:
            return w
        pinv = self.resize_matrix_pinv(size).to(w)
        d, c = w.shape[:2]
        return (w.reshape(d * c, -1) @ pinv.T).reshape(d, c, size, size)

    def forward(self, x: Tensor, patch_size: int) -> Tensor:
        """[B, H, W, (T,) C] -> [B, H/p, W/p, (T,) D]."""
        has_time = x.ndim == 5
        if has_time:
            b, hh, ww, t, c = x.shape
            x = x.permute(0, 3, 4, 1, 2).reshape(b * t, c, hh, ww)
        else:
            x = x.permute(0, 3, 1, 2)
        y = F.conv2d(x, self.weight(patch_size), self.proj.bias, stride=patch_size)
        if has_time:
            y = y.reshape(b, t, *y.shape[1:]).permute(0, 3, 4, 1, 2)
        else:
            y = y.permute(0, 2, 3, 1)
        return y


class Attention(nn.Module):
    """Multi-head self-attention with separate q, k, v projections and a key mask."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, key_mask: Tensor) -> Tensor:
        """`key_mask` [B, N] is True for tokens that take part as keys."""
        b, n, d = x.shape
        q, k, v = (
            p(x).reshape(b, n, self.num_heads, -1).transpose(1, 2) for p in (self.q, self.k, self.v)
        )
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None, None, :])
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-norm transformer block (no LayerScale)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, key_mask: Tensor) -> Tensor:
        """Residual attention then residual MLP."""
        x = x + self.attn(self.norm1(x), key_mask)
        return x + self.mlp(self.norm2(x))


class GalileoNet(nn.Module):
    """Galileo's encoder: group embeddings, encodings, transformer over visible tokens, norm."""

    pos_embed: Tensor

    def __init__(self, arch: GalileoArch) -> None:
        super().__init__()
        d, q = arch.embedding_size, arch.embedding_size // 4
        self.arch = arch
        self.embed_dim = d
        self.blocks = nn.ModuleList(
            [Block(d, arch.num_heads, arch.mlp_ratio) for _ in range(arch.depth)]
        )
        self.register_buffer("pos_embed", sincos_1d(q, torch.arange(arch.max_sequence_length)))
        self.month_embed = nn.Embedding.from_pretrained(month_table(q), freeze=True)
        self.s_t_channel_embed = nn.Parameter(torch.zeros(len(SPACE_TIME_GROUPS), q))
        self.sp_channel_embed = nn.Parameter(torch.zeros(len(SPACE_GROUPS), q))
        self.t_channel_embed = nn.Parameter(torch.zeros(len(TIME_GROUPS), q))
        self.st_channel_embed = nn.Parameter(torch.zeros(len(STATIC_GROUPS), q))
        p = arch.max_patch_size
        self.space_time_embed = nn.ModuleDict(
            {g: FlexiPatchEmbed(c, d, p) for g, c in SPACE_TIME_GROUPS.items()}
        )
        self.space_embed = nn.ModuleDict(
            {g: FlexiPatchEmbed(c, d, p) for g, c in SPACE_GROUPS.items()}
        )
        self.time_embed = nn.ModuleDict({g: nn.Linear(c, d) for g, c in TIME_GROUPS.items()})
        self.static_embed = nn.ModuleDict({g: nn.Linear(c, d) for g, c in STATIC_GROUPS.items()})
        self.norm = nn.LayerNorm(d)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def encode_groups(
        self,
        inputs: dict[str, Tensor],
        visible: dict[str, Tensor],
        months: Tensor,
        patch_size: int,
        input_resolution_m: float = BASE_GSD,
    ) -> dict[str, Tensor]:
        """Encode normalized group inputs; returns tokens per group, zeros where not visible.

        `inputs[g]` is [B, H, W, T, C] (space-time), [B, H, W, C] (space), [B, T, C] (time) or
        [B, C] (static) with Galileo's channels of group g; `visible[g]` has the token shape
        ([B, h, w, T], [B, h, w], [B, T], [B]). Absent groups are masked. `months` is long
        [B, T] (0 = January). Output tokens have the token shape plus D.
        """
        b, t = months.shape
        if t > self.arch.max_sequence_length:
            raise ValueError(f"{t} timesteps exceed Galileo's {self.arch.max_sequence_length}")
        q = self.embed_dim // 4
        month = self.month_embed(months)  # [B, T, q]
        pos = self.pos_embed[:t]  # [T, q]
        spatial: Tensor | None = None
        toks: list[Tensor] = []
        vis: list[Tensor] = []
        shapes: list[tuple[str, torch.Size]] = []
        for fam, groups in FAMILIES.items():
            for gi, g in enumerate(groups):
                if g not in inputs:
                    continue
                x = inputs[g]
                if fam in ("space_time", "space"):
                    embed = self.space_time_embed if fam == "space_time" else self.space_embed
                    tok = embed[g](x, patch_size)
                    h, w = tok.shape[1:3]
                    if spatial is None:
                        res = input_resolution_m * patch_size / BASE_GSD
                        spatial = spatial_table(q, h, w, res, x.device).to(tok.dtype)
                    if fam == "space_time":
                        enc = [
                            self.s_t_channel_embed[gi].expand(b, h, w, t, q),
                            pos[None, None, None].expand(b, h, w, t, q),
                            month[:, None, None].expand(b, h, w, t, q),
                            spatial[None, :, :, None].expand(b, h, w, t, q),
                        ]
                    else:
                        enc = [
                            self.sp_channel_embed[gi].expand(b, h, w, q),
                            tok.new_zeros(b, h, w, 2 * q),
                            spatial[None].expand(b, h, w, q),
                        ]
                elif fam == "time":
                    tok = self.time_embed[g](x)
                    enc = [
                        self.t_channel_embed[gi].expand(b, t, q),
                        pos[None].expand(b, t, q),
                        month,
                        tok.new_zeros(b, t, q),
                    ]
                else:
                    tok = self.static_embed[g](x)
                    enc = [self.st_channel_embed[gi].expand(b, q), tok.new_zeros(b, 3 * q)]
                tok = tok + torch.cat(enc, dim=-1).to(tok.dtype)
                shapes.append((g, tok.shape[:-1]))
                toks.append(tok.reshape(b, -1, self.embed_dim))
                vis.append(visible[g].reshape(b, -1))
        if not toks:
            return {}
        x, v = self.attend(torch.cat(toks, dim=1), torch.cat(vis, dim=1))
        x = self.norm(x) * v[..., None].to(x.dtype)
        out, start = {}, 0
        for g, shape in shapes:
            n = shape[1:].numel()
            out[g] = x[:, start : start + n].reshape(*shape, self.embed_dim)
            start += n
        return out

    def attend(self, x: Tensor, vis: Tensor) -> tuple[Tensor, Tensor]:
        """Run the blocks over the visible tokens of [B, N, D] (compacted to the longest row)."""
        length = int(vis.sum(dim=1).max())
        if length == 0 or len(self.blocks) == 0:
            return x, vis
        order = torch.argsort((~vis).to(torch.int8), dim=1, stable=True)[:, :length]
        xs = torch.gather(x, 1, order[..., None].expand(-1, -1, x.shape[-1]))
        keys = torch.gather(vis, 1, order)
        keys = keys | ~keys.any(dim=1, keepdim=True)  # a row with nothing visible attends to all
        for blk in self.blocks:
            xs = blk(xs, keys)
        out = x.scatter(1, order[..., None].expand(-1, -1, x.shape[-1]), xs)
        return out, vis
