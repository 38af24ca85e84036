"""Pieces shared by the baseline wrappers: strict local loading, token visibility, ViT blocks.

Every baseline reads a `MaskedBatch` whose `data` was normalized by the wrapper's own
`normalizer`, so `MISSING_VALUE` still marks absent pixels. `band_visibility` turns the batch's
per-band-set token masks plus those missing pixels into one boolean per token, which each
wrapper then maps onto its model's own notion of a masked token.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from helios.data.modalities import MISSING_VALUE, BandSet, get_modality
from helios.data.sample import MaskedBatch, MaskValue


def load_weights(path: str | Path) -> dict[str, Tensor]:
    """Read a plain state dict from a local file with `weights_only=True`.

    Raises FileNotFoundError naming the path, and ValueError when the file is not a plain
    tensor dictionary (e.g. a pickled module, which `weights_only` refuses to unpickle).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path} (baselines load local files only)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError) as err:
        raise ValueError(
            f"{path}: not a plain state dict loadable with weights_only=True ({err})"
        ) from err
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"{path}: expected a dict of tensors, got {type(obj).__name__}")
    return dict(obj)


def load_strict(module: nn.Module, state: dict[str, Tensor], source: str) -> None:
    """Load `state` into `module` requiring the exact key set and shapes.

    The error lists the first few missing, unexpected and mis-shaped keys, which is what one
    needs to tell a wrong model size from a wrong checkpoint.
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)):
            if keys:
                more = f" (+{len(keys) - 5} more)" if len(keys) > 5 else ""
                parts.append(f"{len(keys)} {label}: {keys[:5]}{more}")
        raise ValueError(
            f"{source}: state dict does not match {type(module).__name__}; " + "; ".join(parts)
        )
    module.load_state_dict(state, strict=True)


def band_visibility(
    batch: MaskedBatch, view: int, modality: str, bands: Sequence[str]
) -> tuple[Tensor, Tensor]:
    """Which tokens of `modality` have every one of `bands` visible, and their mask values.

    Returns (visible bool [B, h, w, T], mask int8 [B, h, w, T]). A token is visible when the
    band sets holding `bands` are all ENCODER there and none of its pixels of those bands is
    `MISSING_VALUE` or non-finite. The mask value of a hidden token is MISSING where pixels are
    missing, else the most hidden of the band sets' values.
    """
    spec = get_modality(modality)
    data = batch.data[modality]
    mask = batch.masks[view][modality]
    b, h, w, t, _ = mask.shape
    sets = sorted({_band_set_of(spec.band_sets, band) for band in bands})
    chans = [spec.band_index(band) for band in bands]
    values = mask[..., sets].amax(dim=-1)
    x = data[..., chans]
    bad_px = ((x == MISSING_VALUE) | ~torch.isfinite(x)).any(dim=-1)  # [B, H, W, T]
    ph, pw = data.shape[1] // h, data.shape[2] // w
    bad = bad_px.reshape(b, h, ph, w, pw, t).any(dim=4).any(dim=2)
    values = torch.where(bad, torch.full_like(values, int(MaskValue.MISSING)), values)
    return values == MaskValue.ENCODER, values.to(torch.int8)


def _band_set_of(band_sets: Sequence[BandSet], band: str) -> int:
    for i, bs in enumerate(band_sets):
        if band in bs.bands:
            return i
    raise KeyError(f"band {band!r} is in no band set")


def to_pixels(tokens: Tensor, height: int, width: int) -> Tensor:
    """Repeat a token-grid tensor [B, h, w, ...] onto a pixel grid [B, H, W, ...]."""
    rh, rw = height // tokens.shape[1], width // tokens.shape[2]
    return tokens.repeat_interleave(rh, dim=1).repeat_interleave(rw, dim=2)


def resize_to_grid(x: Tensor, h: int, w: int, patch: int, antialias: bool) -> Tensor:
    """Bilinearly resize images [N, C, H, W] so that an h x w token grid has `patch` px tokens."""
    size = (h * patch, w * patch)
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=antialias)


class LayerScale(nn.Module):
    """Per-channel residual scaling (`gamma`), as in DINOv2 and DINOv3."""

    def __init__(self, dim: int, init: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init))

    def forward(self, x: Tensor) -> Tensor:
        """Scale `x` channel-wise."""
        return x * self.gamma


class Mlp(nn.Module):
    """fc1 -> GELU -> fc2."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the MLP."""
        return self.fc2(self.act(self.fc1(x)))


def rope_rotate(x: Tensor, sin: Tensor, cos: Tensor) -> Tensor:
    """Rotary embedding with the rotate-half convention: x cos + [-x2, x1] sin."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class LinearKMaskedBias(nn.Linear):
    """qkv projection whose `bias_mask` buffer zeroes the key third of the bias (DINOv3)."""

    bias_mask: Tensor

    def __init__(self, dim: int, out: int) -> None:
        super().__init__(dim, out)
        keep = torch.ones(out)
        keep[out // 3 : 2 * out // 3] = 0.0
        self.register_buffer("bias_mask", keep)

    def forward(self, x: Tensor) -> Tensor:
        """Linear map with the masked bias."""
        return F.linear(x, self.weight, self.bias * self.bias_mask.to(self.bias.dtype))


class SelfAttention(nn.Module):
    """Fused-qkv multi-head self-attention with an optional key mask and optional RoPE.

    `mask_k_bias` uses `LinearKMaskedBias` for qkv (DINOv3). RoPE, when given, rotates the
    queries and keys of the last `sin.shape[0]` tokens (the patch tokens), not the prefix.
    """

    def __init__(self, dim: int, num_heads: int, mask_k_bias: bool = False) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = LinearKMaskedBias(dim, 3 * dim) if mask_k_bias else nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self, x: Tensor, key_mask: Tensor | None = None, rope: tuple[Tensor, Tensor] | None = None
    ) -> Tensor:
        """Attend over `x` [B, N, D]; `key_mask` [B, N] is True for keys that take part."""
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # [B, heads, N, hd]
        if rope is not None:
            sin, cos = rope
            pre = n - sin.shape[0]
            q = torch.cat([q[:, :, :pre], rope_rotate(q[:, :, pre:], sin, cos)], dim=2)
            k = torch.cat([k[:, :, :pre], rope_rotate(k[:, :, pre:], sin, cos)], dim=2)
        attn_mask = None if key_mask is None else key_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class ViTBlock(nn.Module):
    """Pre-norm transformer block with LayerScale, key names as in DINOv2 and DINOv3."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        norm_eps: float,
        layerscale_init: float = 1e-5,
        mask_k_bias: bool = False,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = SelfAttention(dim, num_heads, mask_k_bias=mask_k_bias)
        self.ls1 = LayerScale(dim, layerscale_init)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, layerscale_init)

    def forward(
        self, x: Tensor, key_mask: Tensor | None = None, rope: tuple[Tensor, Tensor] | None = None
    ) -> Tensor:
        """One residual attention step and one residual MLP step."""
        x = x + self.ls1(self.attn(self.norm1(x), key_mask=key_mask, rope=rope))
        return x + self.ls2(self.mlp(self.norm2(x)))


def hidden_mask_value(values: Tensor, visible: Tensor) -> Tensor:
    """Mask values for output tokens: ENCODER where visible, else `values` (at least 1)."""
    enc = torch.full_like(values, int(MaskValue.ENCODER))
    hidden = torch.clamp(values, min=int(MaskValue.TARGET_ONLY))
    return torch.where(visible, enc, hidden).to(torch.int8)
