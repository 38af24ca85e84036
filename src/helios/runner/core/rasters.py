"""Raster conventions shared by inference outputs and mosaics: tags, class colours, feathering.

Window outputs carry `HELIOS_KIND` / `HELIOS_OUTPUT_NAME` tags and, for class maps, a
`CLASS_NAMES` tag (JSON `{value: label}`) and a colour table; mosaics keep them. Crop outputs
(inference) and window outputs (mosaics) are both blended with `taper_weights`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

TAG_KIND = "HELIOS_KIND"
TAG_NAME = "HELIOS_OUTPUT_NAME"
TAG_CLASSES = "CLASS_NAMES"


def class_map(class_names: Sequence[str] | Mapping[int, str] | None) -> dict[int, str]:
    """Class value -> name (a sequence is indexed from 0)."""
    if class_names is None:
        return {}
    if isinstance(class_names, Mapping):
        return {int(k): str(v) for k, v in class_names.items()}
    return dict(enumerate(class_names))


def default_colormap(values: Sequence[int]) -> dict[int, tuple[int, int, int, int]]:
    """A fixed, distinguishable colour per class value (tab20-like cycle)."""
    palette = [
        (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
        (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
        (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213),
    ]  # fmt: skip
    return {int(v): (*palette[i % len(palette)], 255) for i, v in enumerate(sorted(values))}


def taper_weights(height: int, width: int, blend_pixels: int | None = None) -> np.ndarray:
    """float32 [height, width] feathering weights: a separable ramp towards the edges.

    The weight is the product of a row and a column ramp, each rising linearly over
    `blend_pixels` from 1 / (blend_pixels + 1) at the edge to 1. Every weight is positive, so
    a raster alone still keeps its values; where rasters overlap, each fades into the
    other. Separable ramps keep the transition smooth along mosaic borders too. Default
    `blend_pixels`: a quarter of the shorter side.
    """
    return _taper_part(height, width, 0, 0, height, width, blend_pixels)


def _ramp(n: int, start: int, size: int, blend: int) -> np.ndarray:
    i = np.arange(start, start + size)
    d = np.minimum(i, n - 1 - i).astype(np.float32)
    return np.minimum(1.0, (d + 1.0) / (blend + 1.0)).astype(np.float32)


def _taper_part(
    height: int, width: int, r0: int, c0: int, h: int, w: int, blend: int | None
) -> np.ndarray:
    blend = max(1, min(height, width) // 4) if blend is None else max(1, blend)
    return _ramp(height, r0, h, blend)[:, None] * _ramp(width, c0, w, blend)[None, :]
