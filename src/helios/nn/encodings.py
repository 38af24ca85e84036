"""Token encodings: band set, time index, month and GSD-scaled space, plus 2D rotary positions.

The additive encodings each fill one quarter of the token width D, as in Galileo/olmoearth:
``[band set | time index | month | space]``.

- band set: a learnable vector per (modality, band set), so S2's 10 m and 20 m sets and S1 are
  told apart after their projections.
- time index: sinusoid of the step index t on the sample's time axis (multitemporal modalities).
- month: Fourier features of the month angle ``2 pi (month - 1) / 12`` from
  ``timestamps[..., 1]`` (1..12), harmonics 1..6 cycled over the quarter: harmonics 1..6 span
  every function of the month, so this is as expressive as a learnable 12-row table while being
  fixed, smooth across December/January and safe for out-of-range months (no table lookup).
- space (`SinCosPosition`, ``position="sincos"``): 2D sin-cos of the token centre in 10 m
  reference pixels,
  ``((i + 0.5) p, (j + 0.5) p)``, i.e. scaled by the token GSD ``p * 10 m`` relative to the
  10 m reference (olmoearth's "gsd ratio"), so tokens at different patch sizes over the same
  ground get the same code. Non-spatial modalities (era5) get none.

With `RopePosition` (``position="rope"``) the space quarter stays free and attention rotates
queries and keys by 2D axial RoPE over the same token centres (`rope_tables`, `apply_rope`);
non-spatial tokens sit at the tile centre. Time stays additive in both modes.

The position encoding is a part passed in as a class (`PositionEncoding` subclasses); the
strings ``"sincos"`` and ``"rope"`` are aliases of the two built-ins (`POSITION_ENCODINGS`).
A part computes the time-index, month and space codes (`PositionEncoding.time_index`,
`month`, `space`); `OlmoEarthEncodings` reproduces OlmoEarth v1's codes exactly, for encoders
converted from OlmoEarth weights (`helios.nn.olmoearth`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from helios.data.modalities import get_modality

Position = Literal["sincos", "rope"]
"""Aliases of the built-in position encodings: additive 2D sin-cos, or rotary (RoPE)."""

Rope = tuple[Tensor, Tensor]
"""(cos, sin) tables [B, 1, N, head_dim] for `apply_rope`."""


def sincos(pos: Tensor, dim: int, base: float = 10000.0) -> Tensor:
    """float32 [..., dim] features ``[sin(pos w_k), cos(pos w_k)]``, ``w_k = base^(-k/(dim/2))``."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(base) * torch.arange(half, device=pos.device, dtype=torch.float32) / half
    )
    angles = pos.to(torch.float32).unsqueeze(-1) * freqs
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def month_encoding(months: Tensor, dim: int) -> Tensor:
    """float32 [..., dim] Fourier features of months 1..12 (harmonics 1..6, cycled)."""
    half = dim // 2
    harmonics = (torch.arange(half, device=months.device) % 6 + 1).to(torch.float32)
    angles = (months.to(torch.float32) - 1.0).unsqueeze(-1) * (2 * math.pi / 12) * harmonics
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def token_centers(h: int, w: int, patch_size: int, device: torch.device) -> Tensor:
    """float32 [h, w, 2] token centres (row, col) in 10 m reference pixels."""
    rows = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) * patch_size
    cols = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) * patch_size
    return torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1)


def sincos_2d(centers: Tensor, dim: int) -> Tensor:
    """float32 [..., dim]: half for the row coordinate, half for the column coordinate."""
    return torch.cat([sincos(centers[..., 0], dim // 2), sincos(centers[..., 1], dim // 2)], -1)


def rope_tables(positions: Tensor, head_dim: int, base: float = 10000.0) -> Rope:
    """2D axial RoPE tables for positions [B, N, 2] (row, col): cos, sin [B, 1, N, head_dim].

    The head dimension is split into a row half and a column half; each half rotates pairs
    ``(x[k], x[k + f])`` (f = head_dim / 4) by ``pos * base^(-k/f)``.
    """
    if head_dim % 4:
        raise ValueError(f"2D RoPE needs head_dim divisible by 4, got {head_dim}")
    f = head_dim // 4
    freqs = torch.exp(
        -math.log(base) * torch.arange(f, device=positions.device, dtype=torch.float32) / f
    )
    angles = positions.to(torch.float32).unsqueeze(-1) * freqs  # [B, N, 2, f]
    angles = angles.unsqueeze(-2).expand(*angles.shape[:-1], 2, f).flatten(-3)  # [B, N, hd]
    return angles.cos().unsqueeze(1), angles.sin().unsqueeze(1)


def apply_rope(x: Tensor, rope: Rope) -> Tensor:
    """Rotate queries or keys [B, H, N, head_dim] by `rope_tables` output."""
    cos, sin = rope
    f = x.shape[-1] // 4
    halves = x.unflatten(-1, (2, 2, f))
    rotated = torch.stack((-halves[..., 1, :], halves[..., 0, :]), dim=-2).flatten(-3)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


class PositionEncoding:
    """How token positions in space and time enter the model; holds no weights.

    Subclasses give an additive code for spatial tokens (`additive`, or `space` for codes
    that are not a function of the token centres), rotary tables for attention (`rotary`
    True, `rotation`), or both. `time_index` and `month` give the time quarters; the defaults
    are Helios's `sincos` and `month_encoding`.
    """

    rotary: ClassVar[bool] = False
    """Whether attention rotates queries and keys by `rotation`."""

    def time_index(self, steps: Tensor, dim: int) -> Tensor:
        """float32 [T, dim] code of the step indices `steps` (long [T]) on the time axis."""
        return sincos(steps, dim)

    def month(self, months: Tensor, dim: int) -> Tensor:
        """float32 [..., dim] code of `months` (1..12)."""
        return month_encoding(months, dim)

    def space(
        self, h: int, w: int, patch_size: int, dim: int, device: torch.device
    ) -> Tensor | None:
        """float32 [h, w, dim] code of an h x w token grid, or None: `additive` of the centres."""
        return self.additive(token_centers(h, w, patch_size, device), dim)

    def additive(self, centers: Tensor, dim: int) -> Tensor | None:
        """float32 [..., dim] code added to spatial tokens at `centers` [..., 2], or None."""
        return None

    def rotation(self, positions: Tensor, head_dim: int) -> Rope:
        """Rotary tables for padded positions [B, N, 2] (only called when `rotary`)."""
        raise NotImplementedError(f"{type(self).__name__} is not a rotary encoding")


class SinCosPosition(PositionEncoding):
    """Additive 2D sin-cos of the token centres, in the last quarter of the token width."""

    def additive(self, centers: Tensor, dim: int) -> Tensor:
        """`sincos_2d` of the centres."""
        return sincos_2d(centers, dim)


class RopePosition(PositionEncoding):
    """2D axial RoPE over the token centres inside attention; no additive space code."""

    rotary = True

    def rotation(self, positions: Tensor, head_dim: int) -> Rope:
        """`rope_tables` of the positions."""
        return rope_tables(positions, head_dim)


def olmoearth_sincos(pos: Tensor, dim: int) -> Tensor:
    """OlmoEarth's 1-D code: ``[sin(pos w_k), cos(pos w_k)]``, ``w_k = 10000^(-k/(2 dim))``.

    The same float32 operations as OlmoEarth's `get_1d_sincos_pos_encoding`, so the codes agree
    bit for bit (its frequencies differ from `sincos`: ``k / (2 dim)``, not ``k / (dim / 2)``).
    """
    omega = torch.arange(dim // 2, device=pos.device) / dim / 2.0
    omega = 1.0 / 10000**omega
    angles = pos.to(torch.float32).unsqueeze(-1) * omega
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def olmoearth_month_encoding(months: Tensor, dim: int) -> Tensor:
    """OlmoEarth's month code of `months` (1..12): ``[sin a] * dim/2 ++ [cos a] * dim/2``.

    ``a = 2 pi (month - 1) / 12``: one harmonic repeated over each half, as OlmoEarth's frozen
    12-row `month_embed` table (computed here, so any month value is defined).
    """
    angles = ((months - 1).to(torch.float32) / (12 / (2 * math.pi))).unsqueeze(-1)
    shape = (*angles.shape[:-1], dim // 2)
    return torch.cat([angles.sin().expand(shape), angles.cos().expand(shape)], dim=-1)


def olmoearth_space(h: int, w: int, patch_size: int, dim: int, device: torch.device) -> Tensor:
    """OlmoEarth's space code [h, w, dim]: `olmoearth_sincos` of column, then row, positions.

    Positions are the integer token index times the GSD ratio (the patch size at 10 m input),
    not the token centre; OlmoEarth itself needs h == w, this gives the same code on any grid.
    """
    ratio = float(patch_size)
    cols = (torch.arange(w, device=device).to(torch.float32) * ratio)[None, :].expand(h, w)
    rows = (torch.arange(h, device=device).to(torch.float32) * ratio)[:, None].expand(h, w)
    return torch.cat([olmoearth_sincos(cols, dim // 2), olmoearth_sincos(rows, dim // 2)], -1)


class OlmoEarthEncodings(PositionEncoding):
    """OlmoEarth v1's additive time-index, month and space codes (for converted encoders)."""

    def time_index(self, steps: Tensor, dim: int) -> Tensor:
        """`olmoearth_sincos` of the step indices."""
        return olmoearth_sincos(steps, dim)

    def month(self, months: Tensor, dim: int) -> Tensor:
        """`olmoearth_month_encoding`."""
        return olmoearth_month_encoding(months, dim)

    def space(
        self, h: int, w: int, patch_size: int, dim: int, device: torch.device
    ) -> Tensor | None:
        """`olmoearth_space`."""
        return olmoearth_space(h, w, patch_size, dim, device)


POSITION_ENCODINGS: dict[str, type[PositionEncoding]] = {
    "sincos": SinCosPosition,
    "rope": RopePosition,
}
"""The short names configs (and exported encoder files) use for the built-in encodings."""


def position_encoding(position: Position | type[PositionEncoding]) -> PositionEncoding:
    """An instance of `position`: a `PositionEncoding` class, or one of its short names."""
    if isinstance(position, str):
        if position not in POSITION_ENCODINGS:
            raise ValueError(
                f"unknown position encoding {position!r}; use {sorted(POSITION_ENCODINGS)} "
                "or a PositionEncoding subclass"
            )
        return POSITION_ENCODINGS[position]()
    if not (isinstance(position, type) and issubclass(position, PositionEncoding)):
        raise TypeError(f"position must be a PositionEncoding subclass, got {position!r}")
    return position()


class TokenEncodings(nn.Module):
    """Adds band-set, time-index, month and (additive positions) space encodings to tokens."""

    def __init__(
        self,
        modalities: Sequence[str],
        embed_dim: int,
        position: Position | type[PositionEncoding] = SinCosPosition,
    ) -> None:
        """Create the learnable band-set embeddings.

        Args:
            modalities: the modalities whose tokens will be encoded.
            embed_dim: token width D, a multiple of 16 (four quarters of sin/cos pairs, 2D).
            position: the position encoding (class or short name): `SinCosPosition` adds the
                space code, `RopePosition` leaves it to attention.

        """
        super().__init__()
        if embed_dim % 16:
            raise ValueError(f"embed_dim must be a multiple of 16, got {embed_dim}")
        self.embed_dim = embed_dim
        self.quarter = embed_dim // 4
        self.position = position_encoding(position)
        self.channel = nn.ParameterDict(
            {
                m: nn.Parameter(torch.zeros(get_modality(m).num_band_sets, self.quarter))
                for m in modalities
            }
        )
        for p in self.channel.values():
            nn.init.trunc_normal_(p, std=0.02)

    def _static(self, name: str, h: int, w: int, patch_size: int, device: torch.device) -> Tensor:
        """[h|1, w|1, 1, S, D]: band-set code, plus any additive space code of spatial tokens."""
        q, d = self.quarter, self.embed_dim
        enc = F.pad(self.channel[name], (0, d - q))[None, None, None]
        if get_modality(name).is_spatial:
            space = self.position.space(h, w, patch_size, q, device)
            if space is not None:
                enc = enc + F.pad(space, (3 * q, 0))[:, :, None, None]
        return enc

    def _temporal(self, timestamps: Tensor, t: int) -> Tensor:
        """[B, 1, 1, T, 1, D]: time-index and month codes."""
        q, d = self.quarter, self.embed_dim
        steps = self.position.time_index(torch.arange(t, device=timestamps.device), q)
        months = self.position.month(timestamps[:, :t, 1], q)
        enc = F.pad(steps, (q, d - 2 * q)) + F.pad(months, (2 * q, d - 3 * q))
        return enc[:, None, None, :, None, :]

    def forward(
        self, tokens: dict[str, Tensor], timestamps: Tensor, patch_size: int
    ) -> dict[str, Tensor]:
        """Return ``tokens + encodings`` for every modality (tokens [B, h, w, T, S, D]).

        Args:
            tokens: [B, h, w, T, S, D] per modality.
            timestamps: long [B, T, 3] (day, month, year) of the shared time axis.
            patch_size: token side in 10 m pixels (scales the space encoding).

        """
        out = {}
        for name, x in tokens.items():
            _, h, w, t, _, _ = x.shape
            # in the parameters' dtype: under autocast the residual stream becomes float32
            dtype = self.channel[name].dtype
            x = x + self._static(name, h, w, patch_size, x.device).to(dtype)
            if get_modality(name).is_multitemporal:
                if t > timestamps.shape[1]:
                    raise ValueError(
                        f"{name} has {t} timesteps but timestamps only {timestamps.shape[1]}"
                    )
                x = x + self._temporal(timestamps, t).to(dtype)
            out[name] = x
        return out

    @staticmethod
    def positions(tokens: dict[str, Tensor], patch_size: int) -> dict[str, Tensor]:
        """Token centres [B, h, w, T, S, 2] in 10 m pixels (expanded views); tile centre if 1x1.

        Non-spatial modalities sit at the centre of the spatial grid of the other modalities.
        """
        grids = [x.shape[1:3] for n, x in tokens.items() if get_modality(n).is_spatial]
        h0, w0 = grids[0] if grids else (0, 0)
        out = {}
        for name, x in tokens.items():
            b, h, w, t, s, _ = x.shape
            if get_modality(name).is_spatial:
                pos = token_centers(h, w, patch_size, x.device)
            else:
                centre = torch.tensor([h0 * patch_size / 2, w0 * patch_size / 2], device=x.device)
                pos = centre.view(1, 1, 2).expand(h, w, 2)
            out[name] = pos[None, :, :, None, None, :].expand(b, h, w, t, s, 2)
        return out
