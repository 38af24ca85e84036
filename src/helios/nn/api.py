"""The encoder surface every model offers (ours and the baselines'): embed, then pool.

Evals and the runner speak only to this: `Encoder.forward(batch, view)` returns
`TokensAndMasks`, and `TokensAndMasks.pool(...)` turns it into one vector per sample or one per
spatial patch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from helios.data.sample import MaskedBatch, MaskValue

PoolMode = Literal["mean", "max"]


@dataclass
class TokensAndMasks:
    """Per-modality token embeddings with the mask of the view they came from.

    `tokens[name]` is [B, h, w, T, S, D] and `masks[name]` is int8 [B, h, w, T, S] (`MaskValue`),
    with the same layout as `MaskedBatch.masks`. Only ENCODER tokens carry encoder output;
    the others are zeros.
    """

    tokens: dict[str, Tensor]
    masks: dict[str, Tensor]

    @property
    def embed_dim(self) -> int:
        """Width D of the tokens."""
        return int(next(iter(self.tokens.values())).shape[-1])

    def visible(self) -> list[Tensor]:
        """Per modality, the [N, D] embeddings of its visible (ENCODER) tokens."""
        return [tok[self.masks[n] == MaskValue.ENCODER] for n, tok in self.tokens.items()]

    def pool(self, how: PoolMode = "mean", spatial: bool = False) -> Tensor:
        """Pool the visible (ENCODER) tokens.

        Global pooling gives [B, D] over every modality, position, timestep and band set.
        Spatial pooling gives [B, h, w, D] over timesteps, band sets and the spatial modalities
        (which share one token grid); a position with no visible token gives zeros.
        """
        grid = _has_grid(self.tokens)
        pairs = []
        for name, tok in self.tokens.items():
            vis = (self.masks[name] == MaskValue.ENCODER).to(tok.dtype)
            if spatial:
                if grid and tok.shape[1] == 1 and tok.shape[2] == 1:
                    continue  # a non-spatial modality has no place on the grid
                pairs.append((tok.flatten(3, 4), vis.flatten(3, 4)))  # [B, h, w, T*S, (D)]
            else:
                pairs.append((tok.flatten(1, 4), vis.flatten(1, 4)))  # [B, N, (D)]
        dim = 3 if spatial else 1
        tok = torch.cat([t for t, _ in pairs], dim=dim)
        vis = torch.cat([m for _, m in pairs], dim=dim)
        return _masked_reduce(tok, vis, dim=dim, how=how)


def _has_grid(tokens: dict[str, Tensor]) -> bool:
    return any(t.shape[1] > 1 or t.shape[2] > 1 for t in tokens.values())


def _masked_reduce(tok: Tensor, vis: Tensor, dim: int | tuple[int, ...], how: PoolMode) -> Tensor:
    """Mean or max of `tok` over `dim` counting only entries where `vis` is 1."""
    v = vis.unsqueeze(-1)
    if how == "mean":
        return (tok * v).sum(dim) / v.sum(dim).clamp_min(1)
    neg = torch.finfo(tok.dtype).min
    out = tok.masked_fill(v == 0, neg).amax(dim)
    return torch.where(out == neg, torch.zeros_like(out), out)


class Encoder(nn.Module, ABC):
    """The surface of every encoder: a width, the modalities it reads, and a forward pass."""

    embed_dim: int
    modalities: tuple[str, ...]

    @abstractmethod
    def forward(self, batch: MaskedBatch, view: int = 0) -> TokensAndMasks:
        """Encode the ENCODER tokens of `batch.masks[view]`."""

    def embed(self, batch: MaskedBatch, how: PoolMode = "mean", spatial: bool = False) -> Tensor:
        """Encode every available token and pool: [B, D] or [B, h, w, D]."""
        return self.forward(batch, 0).pool(how, spatial)
