"""Encoder checkpoints that carry everything needed to use them.

An exported encoder file holds the weights, the encoder's size, its modalities and their bands,
the patch size it was trained with, and the normalization (stats and method). Evals and the
runner call `load_encoder(path)` and never re-specify any of it. Files hold only tensors and
plain Python values, so they load with `torch.load(..., weights_only=True)`.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from helios.data.modalities import get_modality
from helios.data.normalize import Normalizer
from helios.nn.attention import BlockLayer, NormLayer, part_class
from helios.nn.encoder import FlexiEncoder
from helios.nn.encodings import POSITION_ENCODINGS, PositionEncoding
from helios.nn.patch_embed import TokenEmbedding

FORMAT_VERSION = 1


@dataclass
class EncoderConfig:
    """Size and options of a `FlexiEncoder` (presets live in configs/model/).

    Parts are named by strings (a short name or an import path), so the config stays plain
    values in checkpoints and exported files (`torch.load(weights_only=True)`).
    """

    embed_dim: int = 128
    """Token width."""
    depth: int = 4
    """Number of transformer blocks."""
    num_heads: int = 8
    """Attention heads per block."""
    mlp_ratio: float = 4.0
    """MLP hidden width as a multiple of embed_dim."""
    max_patch_size: int = 8
    """Largest patch size; the patch-embedding kernels are stored at this size."""
    drop_path: float = 0.0
    """Stochastic depth rate."""
    position: str = "sincos"
    """Position encoding: `sincos` (additive 2-D sin-cos), `rope` (rotary), or the import path
    of a `helios.nn.encodings.PositionEncoding` subclass."""
    qk_norm: bool = False
    """LayerNorm on queries and keys."""
    block_layer: str = "helios.nn.attention.Block"
    """Import path of the transformer block class (built like `helios.nn.attention.Block`)."""
    norm_layer: str = "torch.nn.LayerNorm"
    """Import path of the norm class (built with the width) of the blocks and the final norm."""
    embedding_layer: str = "helios.nn.patch_embed.TokenEmbedding"
    """Import path of the patch embedding, a `helios.nn.patch_embed.TokenEmbedding` class
    (`InputResizeEmbedding`: OlmoEarth's resized input at patch sizes below the maximum)."""

    def __post_init__(self) -> None:
        self.parts()  # an unknown part fails when the config is read, not at build time

    def parts(
        self,
    ) -> tuple[type[PositionEncoding], BlockLayer, NormLayer, type[TokenEmbedding]]:
        """The position-encoding, block, norm and patch-embedding classes the strings name."""
        try:
            position = part_class(self.position, PositionEncoding, POSITION_ENCODINGS)
            block = cast(BlockLayer, part_class(self.block_layer, nn.Module))
            norm = cast(NormLayer, part_class(self.norm_layer, nn.Module))
            embedding = part_class(self.embedding_layer, TokenEmbedding)
        except ValueError as err:
            raise ValueError(f"EncoderConfig: {err}") from None
        return position, block, norm, embedding

    def build(self, modalities: list[str]) -> FlexiEncoder:
        """Instantiate the encoder for `modalities`."""
        position, block, norm, embedding = self.parts()
        return FlexiEncoder(
            modalities=modalities,
            embed_dim=self.embed_dim,
            depth=self.depth,
            num_heads=self.num_heads,
            mlp_ratio=self.mlp_ratio,
            max_patch_size=self.max_patch_size,
            drop_path=self.drop_path,
            position=position,
            qk_norm=self.qk_norm,
            block_layer=block,
            norm_layer=norm,
            embedding_layer=embedding,
        )


@dataclass
class ExportedEncoder:
    """What `load_encoder` returns."""

    encoder: FlexiEncoder
    normalizer: Normalizer
    config: EncoderConfig
    modalities: list[str]
    patch_size: int
    metadata: dict[str, Any] = field(default_factory=dict)


def export_encoder(
    path: Path | str,
    encoder: FlexiEncoder,
    config: EncoderConfig,
    normalizer: Normalizer,
    patch_size: int,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write an encoder checkpoint atomically; returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    modalities = list(encoder.modalities)
    payload = {
        "format": "helios-encoder",
        "version": FORMAT_VERSION,
        "config": asdict(config),
        "modalities": modalities,
        "bands": {m: list(get_modality(m).band_order) for m in modalities},
        "patch_size": int(patch_size),
        "normalization": normalizer.to_dict(),
        "metadata": dict(metadata or {}),
        "state_dict": {k: v.detach().cpu() for k, v in encoder.state_dict().items()},
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_encoder(path: Path | str, map_location: str | torch.device = "cpu") -> ExportedEncoder:
    """Load an exported encoder strictly (every key, nothing unexpected)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such encoder checkpoint")
    payload = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != "helios-encoder":
        raise ValueError(
            f"{path}: not a Helios encoder checkpoint (a run exports one as <run dir>/encoder.pt)"
        )
    for name, bands in payload["bands"].items():
        if list(get_modality(name).band_order) != list(bands):
            raise ValueError(f"{path}: bands of {name} differ from this Helios version's registry")
    config = EncoderConfig(**payload["config"])
    encoder = config.build(list(payload["modalities"]))
    encoder.load_state_dict(payload["state_dict"], strict=True)
    encoder.eval()
    return ExportedEncoder(
        encoder=encoder,
        normalizer=Normalizer.from_dict(payload["normalization"]),
        config=config,
        modalities=list(payload["modalities"]),
        patch_size=int(payload["patch_size"]),
        metadata=dict(payload.get("metadata", {})),
    )
