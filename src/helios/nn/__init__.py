"""Neural network parts: patch embeddings, encodings, transformer blocks, encoder, predictor."""

from helios.nn.api import Encoder, TokensAndMasks
from helios.nn.attention import Attention, Block, Mlp, Packing
from helios.nn.encoder import FlexiEncoder, TokenPacker
from helios.nn.encodings import TokenEncodings
from helios.nn.losses import (
    PixelHead,
    info_nce_loss,
    mae_loss,
    patch_discrimination_loss,
    patchify,
    select_tokens,
)
from helios.nn.patch_embed import TokenEmbedding
from helios.nn.predictor import Predictor

__all__ = [
    "Attention",
    "Block",
    "Encoder",
    "FlexiEncoder",
    "Mlp",
    "Packing",
    "PixelHead",
    "Predictor",
    "TokenEmbedding",
    "TokenEncodings",
    "TokenPacker",
    "TokensAndMasks",
    "info_nce_loss",
    "mae_loss",
    "patch_discrimination_loss",
    "patchify",
    "select_tokens",
]
