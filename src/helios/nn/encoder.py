"""The multimodal FlexiViT encoder, and the packing of variable token counts per sample.

Only the tokens the encoder may see (ENCODER by default) enter the transformer: `TokenPacker`
gathers them out of every modality's [B, h, w, T, S, D] grid into one flat stream [M, D]
before the first block, sample by sample in (modality, h, w, T, S) order, and scatters the
outputs back (zeros elsewhere). Counts per sample differ (missing data, rounding), so the
attention core pads each sample to N_max slots (`Packing`); all other work runs on the M real
tokens only. When no sample needs padding no attention mask is passed at all, which lets SDPA
use its fastest kernels. Padded keys are masked out; slot 0 of every row stays attendable so
that a sample with no visible token produces no NaN (its padded row is dropped).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from helios.data.sample import MaskedBatch, MaskValue
from helios.nn.api import Encoder, TokensAndMasks
from helios.nn.attention import Block, BlockLayer, NormLayer, Packing, init_weights
from helios.nn.encodings import (
    Position,
    PositionEncoding,
    Rope,
    SinCosPosition,
    TokenEncodings,
    position_encoding,
)
from helios.nn.patch_embed import TokenEmbedding


class TokenPacker:
    """Gathers the tokens with chosen mask values into a flat stream [M, D], sample by sample."""

    def __init__(self, masks: dict[str, Tensor], keep: Sequence[MaskValue]) -> None:
        """Index the kept tokens.

        Args:
            masks: int8 [B, h, w, T, S] `MaskValue`s per modality (the packing order).
            keep: the mask values whose tokens are packed.

        """
        if not masks:
            raise ValueError("TokenPacker needs at least one modality")
        self.names = list(masks)
        self.shapes = {m: tuple(masks[m].shape) for m in self.names}
        flat = torch.cat([masks[m].flatten(1) for m in self.names], dim=1)  # [B, N]
        self.batch_size, self.num_tokens = flat.shape
        sel = torch.zeros_like(flat, dtype=torch.bool)
        for v in keep:
            sel |= flat == int(v)
        counts = sel.sum(1)
        n_max, n_min = (int(v) for v in torch.stack([counts.max(), counts.min()]).tolist())
        n_max = max(n_max, 1)
        rows, cols = sel.nonzero(as_tuple=True)
        self.counts = counts
        """long [B]: kept tokens per sample."""
        self.src = rows * self.num_tokens + cols
        """long [M]: flat index of each kept token in the [B * N] concatenation of modalities."""
        self.values = flat.view(-1)[self.src]
        """int8 [M]: the mask value of each kept token."""
        slots, attn_mask = None, None
        if n_min != n_max:
            slot = torch.arange(n_max, device=flat.device)
            starts = counts.cumsum(0) - counts
            slots = rows * n_max + torch.arange(rows.numel(), device=flat.device) - starts[rows]
            attn_mask = ((slot[None] < counts[:, None]) | (slot == 0)[None])[:, None, None, :]
        self.packing = Packing(self.batch_size, n_max, rows, slots, attn_mask)
        """The stream's split into samples and its padded layout for attention."""

    @property
    def padding_fraction(self) -> float:
        """Share of padded slots in the attention layout [B, N_max]."""
        total = self.batch_size * self.packing.n_max
        return 1.0 - int(self.counts.sum()) / total if total else 0.0

    def pack(self, tokens: dict[str, Tensor]) -> Tensor:
        """Gather [B, h, w, T, S, C] per modality into the stream [M, C]."""
        b = self.batch_size
        x = torch.cat([tokens[m].reshape(b, -1, tokens[m].shape[-1]) for m in self.names], 1)
        return x.reshape(b * self.num_tokens, -1)[self.src]

    def unpack(self, x: Tensor, only: Sequence[MaskValue] | None = None) -> dict[str, Tensor]:
        """Scatter the stream [M, C] back to [B, h, w, T, S, C] grids, zeros elsewhere.

        `only` restricts the scatter to tokens with those mask values (others stay zero).
        """
        src = self.src
        if only is not None:
            pick = torch.zeros_like(self.values, dtype=torch.bool)
            for v in only:
                pick |= self.values == int(v)
            src, x = src[pick], x[pick]
        c = x.shape[-1]
        full = x.new_zeros(self.batch_size * self.num_tokens, c).index_copy(0, src, x)
        full = full.view(self.batch_size, self.num_tokens, c)
        sizes = [math.prod(self.shapes[m][1:]) for m in self.names]
        return {
            m: part.reshape(*self.shapes[m], c)
            for m, part in zip(self.names, full.split(sizes, dim=1))
        }


def select_masks(batch: MaskedBatch, view: int, modalities: Sequence[str]) -> dict[str, Tensor]:
    """The masks of `view` for the modalities of `modalities` present in the batch."""
    return {m: batch.masks[view][m] for m in modalities if m in batch.data}


class FlexiEncoder(Encoder):
    """Multimodal FlexiViT encoder: flexible patch embedding, additive encodings, ViT blocks.

    Its parts are passed in, timm style: `position` (a `PositionEncoding` class), `block_layer`
    (called like `Block`), `norm_layer` (the blocks' norms and the final norm) and
    `embedding_layer` (a `TokenEmbedding` class).
    """

    def __init__(
        self,
        modalities: Sequence[str],
        embed_dim: int = 128,
        depth: int = 4,
        num_heads: int = 8,
        mlp_ratio: float = 4.0,
        max_patch_size: int = 8,
        drop_path: float = 0.0,
        position: Position | type[PositionEncoding] = SinCosPosition,
        qk_norm: bool = False,
        block_layer: BlockLayer = Block,
        norm_layer: NormLayer = nn.LayerNorm,
        embedding_layer: type[TokenEmbedding] = TokenEmbedding,
    ) -> None:
        """Build the encoder.

        Args:
            modalities: modalities the encoder reads (others in a batch are ignored).
            embed_dim: token width, a multiple of 16 and of `num_heads`.
            depth: number of transformer blocks.
            num_heads: attention heads.
            mlp_ratio: MLP hidden width as a multiple of `embed_dim`.
            max_patch_size: base kernel size; batches may use patch sizes 1..max_patch_size.
            drop_path: stochastic-depth rate of the last block (linear from 0 over depth).
            position: `SinCosPosition` (additive space code, alias ``"sincos"``),
                `RopePosition` (2D rotary attention, ``"rope"``), or another
                `PositionEncoding` subclass.
            qk_norm: normalize queries and keys per head.
            block_layer: builds each transformer block (see `BlockLayer`).
            norm_layer: norm constructor for the blocks and the final norm.
            embedding_layer: the patch embedding, built as ``embedding_layer(modalities,
                embed_dim, max_patch_size)``: `TokenEmbedding` (PI-resized kernels) or
                `InputResizeEmbedding` (OlmoEarth's resized input).

        """
        super().__init__()
        self.modalities = tuple(modalities)
        self.embed_dim = embed_dim
        self.max_patch_size = max_patch_size
        self.position = position_encoding(position)
        self.head_dim = embed_dim // num_heads
        self.token_embedding = embedding_layer(self.modalities, embed_dim, max_patch_size)
        self.encodings = TokenEncodings(self.modalities, embed_dim, type(self.position))
        rates = [drop_path * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(
            block_layer(
                embed_dim,
                num_heads,
                mlp_ratio,
                drop_path=r,
                qk_norm=qk_norm,
                norm_layer=norm_layer,
            )
            for r in rates
        )
        self.norm = norm_layer(embed_dim)
        self.blocks.apply(init_weights)
        self.norm.apply(init_weights)

    def encode_positions(
        self, tokens: dict[str, Tensor], timestamps: Tensor, patch_size: int
    ) -> dict[str, Tensor]:
        """Add band-set, time, month and (additive) space encodings to [B, h, w, T, S, D] tokens."""
        return self.encodings(tokens, timestamps, patch_size)

    def rope(self, packer: TokenPacker, tokens: dict[str, Tensor], patch_size: int) -> Rope | None:
        """Rotary tables in the padded attention layout, or None with additive positions."""
        if not self.position.rotary:
            return None
        positions = packer.pack(self.encodings.positions(tokens, patch_size))
        return self.position.rotation(packer.packing.pad(positions), self.head_dim)

    def forward(
        self,
        batch: MaskedBatch,
        view: int = 0,
        visible: Sequence[MaskValue] = (MaskValue.ENCODER,),
    ) -> TokensAndMasks:
        """Encode the tokens of `batch.masks[view]` whose mask value is in `visible`.

        Args:
            batch: the masked batch.
            view: which masked view to encode.
            visible: mask values the encoder sees; pass every value but MISSING to encode all
                available tokens (e.g. for an EMA target encoder).

        Returns:
            Tokens [B, h, w, T, S, D] (final LayerNorm applied, zeros at other slots) and the
            view's masks, for each modality of the encoder present in the batch.

        """
        masks = select_masks(batch, view, self.modalities)
        patch_size = batch.patch_size
        inputs = batch.inputs(view)
        tokens = self.token_embedding({m: inputs[m] for m in masks}, patch_size)
        for m, t in tokens.items():
            if t.shape[:-1] != masks[m].shape:
                raise ValueError(
                    f"{m}: tokens {tuple(t.shape[:-1])} at patch size {patch_size} do not match "
                    f"mask {tuple(masks[m].shape)}"
                )
        tokens = self.encode_positions(tokens, batch.timestamps, patch_size)
        packer = TokenPacker(masks, visible)
        rope = self.rope(packer, tokens, patch_size)
        x = packer.pack(tokens)
        for blk in self.blocks:
            x = blk(x, packer.packing, rope)
        x = self.norm(x)
        return TokensAndMasks(tokens=packer.unpack(x), masks=masks)
