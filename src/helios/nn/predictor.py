"""The LatentMIM predictor: reconstructs the targets of DECODER tokens from the encoded ones.

Design (I-JEPA / MAE-decoder style): encoder tokens are projected to the predictor width; every
DECODER slot gets a learnable mask token instead; both get the same kind of band-set, time,
month and space encodings as in the encoder (the predictor owns its own `TokenEncodings`).
The union of ENCODER and DECODER tokens of each sample is packed like in the encoder and runs
through `depth` self-attention blocks, so decoder tokens attend to the visible tokens and to
each other, and visible tokens are refined as context. An output head maps to `output_dim`;
only DECODER slots are written, every other slot is zero. Modalities the encoder does not read
(decode-only maps) can still be predicted by passing the view's masks: they contribute mask
tokens at their DECODER slots and no context.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from helios.data.sample import MaskValue
from helios.nn.api import TokensAndMasks
from helios.nn.attention import Block, init_weights
from helios.nn.encoder import TokenPacker
from helios.nn.encodings import Position, TokenEncodings, rope_tables


class Predictor(nn.Module):
    """Predicts per-token targets [B, h, w, T, S, output_dim] at the DECODER slots."""

    def __init__(
        self,
        modalities: Sequence[str],
        encoder_dim: int,
        embed_dim: int | None = None,
        depth: int = 4,
        num_heads: int = 8,
        mlp_ratio: float = 4.0,
        output_dim: int | None = None,
        max_patch_size: int = 8,
        position: Position = "sincos",
        qk_norm: bool = False,
    ) -> None:
        """Build the predictor.

        Args:
            modalities: modalities to predict (and read context from).
            encoder_dim: width of the encoder tokens.
            embed_dim: predictor width (default `encoder_dim`), a multiple of 16 and `num_heads`.
            depth: number of transformer blocks.
            num_heads: attention heads.
            mlp_ratio: MLP hidden width as a multiple of `embed_dim`.
            output_dim: width of the predictions (default `encoder_dim`).
            max_patch_size: largest patch size the predictor is used with (kept for symmetry
                with the encoder; the encodings work at any patch size).
            position: ``"sincos"`` additive space encoding, or ``"rope"`` 2D rotary attention.
            qk_norm: normalize queries and keys per head.

        """
        super().__init__()
        self.modalities = tuple(modalities)
        self.encoder_dim = encoder_dim
        self.embed_dim = embed_dim or encoder_dim
        self.output_dim = output_dim or encoder_dim
        self.max_patch_size = max_patch_size
        self.position = position
        self.head_dim = self.embed_dim // num_heads
        self.input_proj = nn.Linear(encoder_dim, self.embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(self.embed_dim))
        self.encodings = TokenEncodings(self.modalities, self.embed_dim, position)
        self.blocks = nn.ModuleList(
            Block(self.embed_dim, num_heads, mlp_ratio, qk_norm=qk_norm) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(self.embed_dim)
        self.head = nn.Linear(self.embed_dim, self.output_dim)
        for part in (self.input_proj, self.blocks, self.norm, self.head):
            part.apply(init_weights)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def forward(
        self,
        encoded: TokensAndMasks,
        timestamps: Tensor,
        patch_size: int,
        masks: dict[str, Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """Predict the DECODER tokens of `encoded`.

        Args:
            encoded: encoder output (tokens at ENCODER slots) with the view's masks.
            timestamps: long [B, T, 3] (day, month, year).
            patch_size: token side in 10 m pixels.
            masks: the view's masks (`MaskedBatch.masks[view]`), only needed to predict
                modalities the encoder does not read (decode-only maps such as worldcover):
                those get mask tokens at their DECODER slots and add no context.

        Returns:
            [B, h, w, T, S, output_dim] per modality: predictions at DECODER slots, zeros
            elsewhere.

        """
        extra = masks or {}
        names = [m for m in self.modalities if m in encoded.tokens or m in extra]
        grid: dict[str, Tensor] = {}
        tokens = {}
        for m in names:
            if m in encoded.tokens:
                grid[m] = encoded.masks[m]
                x = self.input_proj(encoded.tokens[m])
            else:  # not encoded: nothing visible, only slots to predict
                grid[m] = torch.where(
                    extra[m] == MaskValue.ENCODER, int(MaskValue.TARGET_ONLY), extra[m]
                ).to(extra[m].dtype)
                x = self.mask_token.expand(*grid[m].shape, self.embed_dim)
            decode = (grid[m] == MaskValue.DECODER).unsqueeze(-1)
            tokens[m] = torch.where(decode, self.mask_token.to(x.dtype), x)
        tokens = self.encodings(tokens, timestamps, patch_size)
        packer = TokenPacker(grid, (MaskValue.ENCODER, MaskValue.DECODER))
        rope = None
        if self.position == "rope":
            positions = packer.pack(self.encodings.positions(tokens, patch_size))
            rope = rope_tables(packer.packing.pad(positions), self.head_dim)
        x = packer.pack(tokens)
        for blk in self.blocks:
            x = blk(x, packer.packing, rope)
        x = self.head(self.norm(x))
        return packer.unpack(x, only=(MaskValue.DECODER,))
