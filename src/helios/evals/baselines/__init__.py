"""Baseline encoders behind the Helios encoder surface (docs/baselines.md).

Each wrapper loads weights from a local file only, declares the Helios `modalities` it reads,
exposes its own `normalizer` (the protocol normalizes raw inputs with it before `forward`), and
returns `TokensAndMasks` in the Helios [B, h, w, T, S, D] layout. Evals reach each through its
loader class (`helios.evals.baselines.loaders`), named by a short kind in
`helios.evals.models.BASELINE_KINDS`.
"""

from __future__ import annotations

from pathlib import Path

from helios.data.normalize import NormStats
from helios.evals.baselines.dinov3 import DINOv3Arch, DINOv3Encoder, DINOv3Variant
from helios.evals.baselines.galileo import GalileoEncoder
from helios.evals.baselines.loaders import (
    BaselineLoader,
    DINOv3SatLoader,
    DINOv3WebLoader,
    GalileoLoader,
    PanopticonLoader,
)
from helios.evals.baselines.panopticon import PanopticonArch, PanopticonEncoder
from helios.evals.components import ClassSpec, build
from helios.evals.models import BASELINE_KINDS
from helios.nn.api import Encoder


def load_baseline(kind: str, path: str | Path, stats: NormStats | None = None) -> Encoder:
    """Load the baseline of short name `kind` (`BASELINE_KINDS`) from local weights.

    galileo: a model folder (or its encoder.pt), normalized with Galileo's published stats.
    panopticon: the ViT-B/14 teacher .pth. dinov3-sat: the SAT-493M ViT-L/16 .pth. dinov3-web:
    an LVD-1689M ViT-S/B/L 16 .pth, the size read from the file. `stats` (dataset mean/std,
    or min/max for DINOv3) set the Panopticon and DINOv3 normalizers; Galileo ignores them.
    """
    if kind not in BASELINE_KINDS:
        raise ValueError(f"unknown baseline {kind!r}; known: {list(BASELINE_KINDS)}")
    loader: BaselineLoader = build(
        ClassSpec(BASELINE_KINDS[kind], {"path": str(path)}), BaselineLoader, kind
    )
    return loader.build(stats)


__all__ = [
    "BASELINE_KINDS",
    "BaselineLoader",
    "DINOv3Arch",
    "DINOv3Encoder",
    "DINOv3SatLoader",
    "DINOv3Variant",
    "DINOv3WebLoader",
    "GalileoEncoder",
    "GalileoLoader",
    "PanopticonArch",
    "PanopticonEncoder",
    "PanopticonLoader",
    "load_baseline",
]
