"""Baseline encoders behind the Helios encoder surface (docs/baselines.md).

Each wrapper loads weights from a local file only, declares the Helios `modalities` it reads,
exposes its own `normalizer` (the protocol normalizes raw inputs with it before `forward`), and
returns `TokensAndMasks` in the Helios [B, h, w, T, S, D] layout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from helios.data.normalize import NormStats
from helios.evals.baselines._common import load_strict, load_weights
from helios.evals.baselines.dinov3 import DINOv3Arch, DINOv3Encoder, DINOv3Variant
from helios.evals.baselines.galileo import GalileoEncoder
from helios.evals.baselines.panopticon import PanopticonArch, PanopticonEncoder

BaselineKind = Literal["galileo", "panopticon", "dinov3-sat", "dinov3-web"]
BASELINE_KINDS: tuple[str, ...] = ("galileo", "panopticon", "dinov3-sat", "dinov3-web")
_DINOV3_WEB_BY_WIDTH: dict[int, DINOv3Variant] = {
    384: "vits16_web",
    768: "vitb16_web",
    1024: "vitl16_web",
}

Baseline = GalileoEncoder | PanopticonEncoder | DINOv3Encoder


def load_baseline(
    kind: BaselineKind | str, path: str | Path, stats: NormStats | None = None
) -> Baseline:
    """Load a baseline from local weights.

    galileo: a model folder (or its encoder.pt), normalized with Galileo's published stats.
    panopticon: the ViT-B/14 teacher .pth. dinov3-sat: the SAT-493M ViT-L/16 .pth. dinov3-web:
    an LVD-1689M ViT-S/B/L 16 .pth, the size read from the file. `stats` (dataset mean/std,
    or min/max for DINOv3) set the Panopticon and DINOv3 normalizers; Galileo ignores them.
    """
    if kind == "galileo":
        return GalileoEncoder.from_pretrained(path)
    if kind == "panopticon":
        return PanopticonEncoder.from_pretrained(path, stats)
    if kind == "dinov3-sat":
        return DINOv3Encoder.from_pretrained(path, "vitl16_sat", stats)
    if kind == "dinov3-web":
        state = load_weights(path)
        proj = state.get("patch_embed.proj.weight")
        width = 0 if proj is None else int(proj.shape[0])
        if width not in _DINOV3_WEB_BY_WIDTH:
            raise ValueError(
                f"{path}: patch embedding width {width} is no DINOv3 web ViT/16 "
                f"({sorted(_DINOV3_WEB_BY_WIDTH)})"
            )
        model = DINOv3Encoder(None, _DINOV3_WEB_BY_WIDTH[width], stats)
        load_strict(model, state, str(path))
        return model
    raise ValueError(f"unknown baseline {kind!r}; known: {list(BASELINE_KINDS)}")


__all__ = [
    "BASELINE_KINDS",
    "Baseline",
    "BaselineKind",
    "DINOv3Arch",
    "DINOv3Encoder",
    "GalileoEncoder",
    "PanopticonArch",
    "PanopticonEncoder",
    "load_baseline",
]
