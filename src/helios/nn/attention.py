"""Transformer parts, timm-style: swap a part by passing a class, never by a name string.

Blocks take either a dense batch [B, N, D] or a flat stream of the M real tokens of a batch
[M, D] together with a `Packing` that says which sample (and padded slot) each token belongs
to. With a stream, every per-token op (norms, qkv, projections, MLP) runs on exactly M tokens;
only the attention core pads each sample to N_max slots and calls
`torch.nn.functional.scaled_dot_product_attention` (fused flash / memory-efficient kernels on
GPU, the flash kernel on CPU) with a bool key-padding mask [B, 1, 1, N_max] (True = attend), or
with no mask at all when no sample needs padding, which lets SDPA pick its fastest kernel.

Saved configs name parts by import path (plain strings load with `weights_only=True`);
`part_class` turns such a name, or a short alias, back into the class.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from helios.nn.encodings import Rope, apply_rope

T = TypeVar("T")


@dataclass
class Packing:
    """How a flat token stream [M, D] splits into samples, and its padded layout [B, N_max]."""

    batch_size: int
    n_max: int
    sample: Tensor
    """long [M]: the sample of each token (tokens of a sample are contiguous, in order)."""
    slots: Tensor | None
    """long [M]: each token's slot in the flat padded layout [B * N_max]; None if no padding."""
    attn_mask: Tensor | None
    """bool [B, 1, 1, N_max] key mask (True = attend); None when no sample is padded."""

    def pad(self, x: Tensor) -> Tensor:
        """[M, ...] -> [B, N_max, ...], zeros in padded slots."""
        rest = x.shape[1:]
        if self.slots is None:
            return x.view(self.batch_size, self.n_max, *rest)
        out = x.new_zeros(self.batch_size * self.n_max, *rest).index_copy(0, self.slots, x)
        return out.view(self.batch_size, self.n_max, *rest)

    def unpad(self, x: Tensor) -> Tensor:
        """[B, N_max, ...] -> [M, ...]: the real tokens, in stream order."""
        flat = x.reshape(self.batch_size * self.n_max, *x.shape[2:])
        return flat if self.slots is None else flat[self.slots]


def drop_path(x: Tensor, rate: float, training: bool, packing: Packing | None) -> Tensor:
    """Stochastic depth: drop the residual branch of whole samples with probability `rate`."""
    if rate == 0.0 or not training:
        return x
    batch = x.shape[0] if packing is None else packing.batch_size
    keep = torch.empty(batch, device=x.device, dtype=x.dtype).bernoulli_(1 - rate) / (1 - rate)
    if packing is not None:
        keep = keep[packing.sample]
    return x * keep.view(-1, *([1] * (x.dim() - 1)))


NormLayer = Callable[[int], nn.Module]
"""A norm constructor taking the width, e.g. `nn.LayerNorm`."""


class Attention(nn.Module):
    """Multi-head self-attention over [B, N, D] with optional qk-norm and 2D RoPE."""

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        qk_norm: bool = False,
        norm_layer: NormLayer = nn.LayerNorm,
    ) -> None:
        """Build the fused qkv and output projections.

        Args:
            dim: token width; a multiple of `num_heads`.
            num_heads: attention heads.
            qkv_bias: bias in the qkv projection.
            qk_norm: normalize queries and keys per head (ViT-22B) with `norm_layer`.
            norm_layer: norm used for qk-norm.

        """
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.q_norm = norm_layer(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = norm_layer(self.head_dim) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(
        self, x: Tensor, packing: Packing | None = None, rope: Rope | None = None
    ) -> Tensor:
        """Self-attention within each sample.

        Args:
            x: dense [B, N, D] (every token attends to every token of its row), or a flat
                stream [M, D] with `packing`.
            packing: how the stream splits into samples.
            rope: RoPE tables [B, 1, N|N_max, head_dim] in the (padded) layout.

        """
        d = x.shape[-1]
        qkv = self.qkv(x)
        if packing is not None:
            qkv = packing.pad(qkv)
        b, n = qkv.shape[:2]
        qkv = qkv.view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, rope), apply_rope(k, rope)
        mask = None if packing is None else packing.attn_mask
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2)
        out = out.reshape(b, n, d) if packing is None else packing.unpad(out).reshape(-1, d)
        result: Tensor = self.proj(out)
        return result


class Mlp(nn.Module):
    """Two-layer feed-forward network."""

    def __init__(
        self,
        dim: int,
        hidden_dim: int,
        act_layer: Callable[[], nn.Module] = nn.GELU,
        bias: bool = True,
    ) -> None:
        """Build ``fc2(act(fc1(x)))`` with `hidden_dim` hidden units."""
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim, bias=bias)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_dim, dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the MLP to the last dimension."""
        out: Tensor = self.fc2(self.act(self.fc1(x)))
        return out


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        qkv_bias: bool = True,
        qk_norm: bool = False,
        norm_layer: NormLayer = nn.LayerNorm,
        mlp_layer: type[Mlp] = Mlp,
        attn_layer: type[Attention] = Attention,
    ) -> None:
        """Assemble the block from its parts.

        Args:
            dim: token width.
            num_heads: attention heads.
            mlp_ratio: MLP hidden width as a multiple of `dim`.
            drop_path: stochastic-depth rate of both residual branches.
            qkv_bias: bias in the qkv projection.
            qk_norm: per-head query/key normalization.
            norm_layer: norm constructor (pre-norms and qk-norm).
            mlp_layer: feed-forward class, called as ``mlp_layer(dim, hidden_dim)``.
            attn_layer: attention class, called with ``(dim, num_heads, qkv_bias, qk_norm,
                norm_layer)``.

        """
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = attn_layer(
            dim, num_heads=num_heads, qkv_bias=qkv_bias, qk_norm=qk_norm, norm_layer=norm_layer
        )
        self.drop_path = drop_path
        self.norm2 = norm_layer(dim)
        self.mlp = mlp_layer(dim, int(dim * mlp_ratio))

    def forward(
        self, x: Tensor, packing: Packing | None = None, rope: Rope | None = None
    ) -> Tensor:
        """Apply the block to dense [B, N, D] or a packed stream [M, D] (see `Attention`)."""
        attn = self.attn(self.norm1(x), packing=packing, rope=rope)
        x = x + drop_path(attn, self.drop_path, self.training, packing)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path, self.training, packing)


class BlockLayer(Protocol):
    """What an encoder calls to build a block (`Block` itself, or a class with its signature).

    The built module is called as ``block(x, packing, rope)`` (see `Block.forward`).
    """

    def __call__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        qkv_bias: bool = True,
        qk_norm: bool = False,
        norm_layer: NormLayer = nn.LayerNorm,
    ) -> nn.Module:
        """Build one block (the arguments of `Block`)."""
        ...


def part_class(name: str, base: type[T], aliases: Mapping[str, type[T]] | None = None) -> type[T]:
    """The class `name` stands for: a key of `aliases`, or an import path like `pkg.mod.Cls`.

    Raises:
        ValueError: for an unknown alias, a path that does not import, or a class that is
            not a `base` subclass; the message lists the aliases.

    """
    aliases = aliases or {}
    known = f"; short names: {', '.join(sorted(aliases))}" if aliases else ""
    if name in aliases:
        return aliases[name]
    module, _, attr = name.rpartition(".")
    if not module:
        raise ValueError(f"unknown {base.__name__} {name!r}: give an import path{known}")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"cannot import {base.__name__} {name!r} ({err}){known}") from None
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ValueError(f"{name} is not a {base.__module__}.{base.__qualname__} subclass")
    return cls


def class_path(cls: type) -> str:
    """The import path of a class, as `part_class` reads it back."""
    return f"{cls.__module__}.{cls.__qualname__}"


def init_weights(module: nn.Module) -> None:
    """Timm ViT init: truncated-normal(0.02) Linear weights, zero biases, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm) and module.elementwise_affine:
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
