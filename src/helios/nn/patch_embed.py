"""Token embedding of every modality band set at any patch size from one set of weights.

Each band set of a spatial modality owns a base kernel at `max_patch_size` (P). At patch size
p the kernel is resized with FlexiViT's pseudo-inverse resize (PI-resize, Beyer et al. 2023):
``w_p = pinv(B^T) w_P`` for a resize ``B`` from P x P to p x p patches. We take ``B`` to be the
least-squares inverse of bilinear upsampling ``U`` (p -> P), ``B = pinv(U)``; then
``pinv(B^T) = U^T`` exactly, so a p-patch is embedded exactly as the base kernel embeds its
bilinear upsampling to P. Constant and bilinear-smooth patches therefore get the same token at
every patch size (the antialiased-bilinear ``B`` misses that by ~25 % at p = 1). The resize
matrices are computed once per (P, p) and kept as buffers, so resizing costs one small matmul.

Grids finer than 10 m (openstreetmap_raster at 2.5 m, ``pixels_per_ref_pixel`` k = 4) are
average-pooled by k onto the 10 m reference grid first: binary OSM layers become per-10 m
coverage fractions, and one kernel size (and parameter count) serves every modality. Sub-10 m
placement inside a reference pixel is lost; features smaller than 10 m survive as fractions.

All band sets of a modality are embedded by ONE matmul: the per-band-set kernels are placed
block-diagonally over the modality's channels, so the output comes out directly in the
``[B, h, w, T, S, D]`` layout of `MaskedBatch.masks`. Non-spatial modalities (era5,
``[B, 1, 1, T, C]``) get a Linear per band set, batched the same way. Inputs equal to
`MISSING_VALUE` are zeroed before the projection, so they never produce NaN/inf.

`InputResizeEmbedding` is the other way to a patch size p < P, OlmoEarth's: the whole image
is resized by P / p (antialiased bicubic, across patch borders) and the base kernels applied
at P. An encoder converted from OlmoEarth weights uses it (`helios.nn.olmoearth`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from helios.data.modalities import MISSING_VALUE, ModalitySpec, get_modality


@cache
def upsample_matrix(src: int, dst: int) -> Tensor:
    """float64 [dst*dst, src*src]: bilinear upsampling (align_corners=False) of a square patch."""
    basis = torch.eye(src * src, dtype=torch.float64, device="cpu").view(src * src, 1, src, src)
    out = F.interpolate(basis, size=(dst, dst), mode="bilinear", align_corners=False)
    return out.reshape(src * src, dst * dst).T.contiguous()


@cache
def downsample_matrix(src: int, dst: int) -> Tensor:
    """float64 [dst*dst, src*src]: the resize ``B = pinv(U)`` from src to dst <= src pixels.

    ``U`` is bilinear upsampling dst -> src; ``B`` is its least-squares inverse. It preserves
    constants (rows sum to 1) and inverts ``U`` exactly (``B U = I``).
    """
    if dst > src:
        raise ValueError(f"downsample_matrix needs dst <= src, got {src} -> {dst}")
    if dst == src:
        return torch.eye(src * src, dtype=torch.float64, device="cpu")
    return torch.linalg.pinv(upsample_matrix(dst, src))


@cache
def pi_resize_matrix(base: int, patch: int) -> Tensor:
    """float64 [patch*patch, base*base]: FlexiViT PI-resize ``pinv(B^T)`` for ``B`` base -> patch.

    With ``B = downsample_matrix(base, patch)`` this equals ``upsample_matrix(patch, base).T``;
    it is computed through the pseudo-inverse to keep the definition explicit.
    """
    if patch == base:
        return torch.eye(base * base, dtype=torch.float64, device="cpu")
    return torch.linalg.pinv(downsample_matrix(base, patch).T)


def zero_missing(x: Tensor) -> Tensor:
    """`x` with `MISSING_VALUE` entries replaced by 0 (NaN-free; gradients flow elsewhere)."""
    return x.masked_fill(x == MISSING_VALUE, 0.0)


def pool_to_reference(x: Tensor, spec: ModalitySpec) -> Tensor:
    """Average-pool a [B, H*k, W*k, T, C] array of a finer grid onto the 10 m grid."""
    k = spec.pixels_per_ref_pixel
    if k == 1:
        return x
    b, hk, wk, t, c = x.shape
    return x.view(b, hk // k, k, wk // k, k, t, c).mean(dim=(2, 4))


class _ModalityEmbed(nn.Module):
    """The base kernels (or Linear weights) of every band set of one modality."""

    def __init__(self, spec: ModalitySpec, embed_dim: int, max_patch_size: int) -> None:
        super().__init__()
        self.spec = spec
        self.embed_dim = embed_dim
        self.channels = spec.num_bands
        self.slices = spec.band_set_slices()
        base = max_patch_size if spec.is_spatial else 1
        self.base = base
        self.weights = nn.ParameterList(
            nn.Parameter(torch.empty(embed_dim, base, base, s.stop - s.start)) for s in self.slices
        )
        self.bias = nn.Parameter(torch.empty(len(self.slices), embed_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Default Conv2d / Linear init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) per band set."""
        with torch.no_grad():
            for i, (w, s) in enumerate(zip(self.weights, self.slices)):
                bound = 1.0 / math.sqrt(self.base * self.base * (s.stop - s.start))
                nn.init.uniform_(w, -bound, bound)
                nn.init.uniform_(self.bias[i], -bound, bound)

    def block_weight(self) -> Tensor:
        """[S, D, P*P, C]: each band set's kernel over its own channels, zeros elsewhere."""
        parts = [
            F.pad(w, (s.start, self.channels - s.stop)).flatten(1, 2)
            for w, s in zip(self.weights, self.slices)
        ]
        return torch.stack(parts)


class TokenEmbedding(nn.Module):
    """Embeds each modality's band sets into tokens [B, h, w, T, S, D] at any patch size 1..P."""

    def __init__(self, modalities: Sequence[str], embed_dim: int, max_patch_size: int = 8) -> None:
        """Create base kernels for every band set of `modalities`.

        Args:
            modalities: names from the modality registry this embedding reads.
            embed_dim: token width D.
            max_patch_size: base kernel size P (10 m pixels); patch sizes 1..P are supported.

        """
        super().__init__()
        self.modalities = tuple(modalities)
        self.embed_dim = embed_dim
        self.max_patch_size = max_patch_size
        self.embeds = nn.ModuleDict(
            {m: _ModalityEmbed(get_modality(m), embed_dim, max_patch_size) for m in self.modalities}
        )
        for p in range(1, max_patch_size + 1):
            self.register_buffer(
                f"pi_resize_{p}", pi_resize_matrix(max_patch_size, p).float(), persistent=False
            )

    def resize_matrix(self, patch_size: int) -> Tensor:
        """float32 [p*p, P*P] PI-resize matrix on the module's device."""
        if not 1 <= patch_size <= self.max_patch_size:
            raise ValueError(f"patch_size must be in 1..{self.max_patch_size}, got {patch_size}")
        out: Tensor = getattr(self, f"pi_resize_{patch_size}")
        return out

    def kernel(self, modality: str, patch_size: int) -> tuple[Tensor, Tensor]:
        """Weight [S*D, p*p*C] and bias [S*D] of `modality` resized to `patch_size`."""
        emb: _ModalityEmbed = self.embeds[modality]  # type: ignore[assignment]
        w = emb.block_weight()  # [S, D, P*P, C]
        if emb.spec.is_spatial and patch_size != self.max_patch_size:
            w = torch.einsum("sdrc,qr->sdqc", w, self.resize_matrix(patch_size).to(w.dtype))
        return w.flatten(0, 1).flatten(1), emb.bias.flatten()

    def kernel_size(self, patch_size: int) -> int:
        """Side of the kernels applied at `patch_size`: `patch_size` (PI-resized kernels)."""
        return patch_size

    def resample(self, x: Tensor, patch_size: int) -> Tensor:
        """The pixels [B, H', W', T, C] the kernels see at `patch_size`: `x` [B, H, W, T, C]."""
        return x

    def forward(self, data: dict[str, Tensor], patch_size: int) -> dict[str, Tensor]:
        """Embed every modality of `data` that this module reads.

        Args:
            data: float32 [B, H, W, T, C] per modality (`MaskedBatch.data`); H and W must be
                multiples of ``patch_size * pixels_per_ref_pixel``; era5-like modalities are
                [B, 1, 1, T, C]. Modalities not in `self.modalities` are ignored.
            patch_size: token side in 10 m pixels.

        Returns:
            [B, h, w, T, S, D] per modality, h = H / (patch_size * k) (1 for non-spatial).

        """
        out = {}
        for name in self.modalities:
            if name not in data:
                continue
            x = zero_missing(data[name])
            spec = get_modality(name)
            weight, bias = self.kernel(name, self.kernel_size(patch_size))
            b, hh, ww, t, c = x.shape
            if spec.is_spatial:
                k = spec.pixels_per_ref_pixel
                if hh % (patch_size * k) or ww % (patch_size * k):
                    raise ValueError(
                        f"{name}: spatial size {hh}x{ww} is not a multiple of patch_size "
                        f"{patch_size} x {k} pixels per 10 m pixel"
                    )
                x = pool_to_reference(x, spec)
                h, w = x.shape[1] // patch_size, x.shape[2] // patch_size
                x = self.resample(x, patch_size)
                side = x.shape[1] // h  # pixels per token side, as the kernels see them
                x = x.view(b, h, side, w, side, t, c).permute(0, 1, 3, 5, 2, 4, 6)
                x = x.reshape(b * h * w * t, side * side * c)
            else:
                h, w = hh, ww
                x = x.reshape(b * h * w * t, c)
            tokens = F.linear(x, weight, bias)
            out[name] = tokens.view(b, h, w, t, spec.num_band_sets, self.embed_dim)
        return out


class InputResizeEmbedding(TokenEmbedding):
    """OlmoEarth's flexible patch size: resize the image to the base kernel, not the kernel.

    At patch size p < P every band is resized from H x W to (H / p * P) x (W / p * P) pixels
    with `torch.nn.functional.interpolate` (bicubic, ``antialias=True``), as OlmoEarth's
    `FlexiPatchEmbed` does, and the base P x P kernels are applied; at p = P it is
    `TokenEmbedding`. Same parameters (and state-dict keys) as `TokenEmbedding`.
    """

    def kernel_size(self, patch_size: int) -> int:
        """Always the base size P (after checking `patch_size` is in 1..P)."""
        self.resize_matrix(patch_size)  # the range check
        return self.max_patch_size

    def resample(self, x: Tensor, patch_size: int) -> Tensor:
        """`x` [B, H, W, T, C] resized by P / `patch_size` (bicubic, antialiased)."""
        big = self.max_patch_size
        if patch_size == big:
            return x
        b, hh, ww, t, c = x.shape
        image = x.permute(0, 3, 4, 1, 2).reshape(b * t, c, hh, ww)
        size = (hh // patch_size * big, ww // patch_size * big)
        image = F.interpolate(image, size=size, mode="bicubic", antialias=True)
        return image.view(b, t, c, *size).permute(0, 3, 4, 1, 2).contiguous()
