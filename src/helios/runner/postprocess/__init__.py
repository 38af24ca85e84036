"""Postprocessing: per-window and per-partition strategies, seam-free mosaics, combining."""

from helios.runner.postprocess.postprocessors import (
    BUILTIN_POSTPROCESSORS,
    CombineGeojson,
    CombineGeotiff,
    LinearValueTransform,
    NoopRaster,
    NoopVector,
    Postprocessor,
    Postprocessors,
)
from helios.runner.postprocess.steps import combine, postprocess_partition

__all__ = [
    "BUILTIN_POSTPROCESSORS",
    "CombineGeojson",
    "CombineGeotiff",
    "LinearValueTransform",
    "NoopRaster",
    "NoopVector",
    "Postprocessor",
    "Postprocessors",
    "combine",
    "postprocess_partition",
]
