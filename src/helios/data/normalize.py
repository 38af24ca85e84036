"""Normalization: the pretraining and eval transforms over per-band statistics.

The statistics (`NormStats`, `RunningStats`, `compute_stats`) live in `helios.data.stats`
and are re-exported here. `Normalizer` applies one `NormMethod` per call; the
default is the pretraining transform (x - (mean - 2 std)) / (4 std), without clipping. Bands
without usable stats fall back to the modality's fixed `value_range`. `MISSING_VALUE` entries
are never turned into numbers (docs/normalization.md).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from enum import Enum
from typing import Any, TypeVar

import numpy as np
import torch

from helios.data.modalities import MISSING_VALUE, MODALITIES, get_modality
from helios.data.stats import (
    VAR_DEFINITION,
    BandStats,
    NormStats,
    RunningStats,
    compute_stats,
)

__all__ = [
    "VAR_DEFINITION",
    "BandStats",
    "NormMethod",
    "NormStats",
    "Normalizer",
    "RunningStats",
    "compute_stats",
    "normalize_array",
]

logger = logging.getLogger(__name__)

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


class NormMethod(str, Enum):
    """Normalization methods; the values are olmoearth_pretrain's strings."""

    NORM_NO_CLIP = "norm_no_clip"
    NORM_NO_CLIP_2_STD = "norm_no_clip_2_std"
    NORM_YES_CLIP = "norm_yes_clip"
    NORM_YES_CLIP_2_STD = "norm_yes_clip_2_std"
    NORM_YES_CLIP_3_STD = "norm_yes_clip_3_std"
    NORM_YES_CLIP_INT = "norm_yes_clip_int"
    NORM_YES_CLIP_2_STD_INT = "norm_yes_clip_2_std_int"
    NORM_YES_CLIP_3_STD_INT = "norm_yes_clip_3_std_int"
    NORM_YES_CLIP_MIN_MAX_INT = "norm_yes_clip_min_max_int"
    STANDARDIZE = "standardize"
    NO_NORM = "no_norm"

    @property
    def std_multiplier(self) -> float | None:
        """Multiplier k of the methods mapping [mean - k std, mean + k std] to [0, 1], or None."""
        return _STD_MULTIPLIERS.get(self)

    @property
    def clips(self) -> bool:
        """Whether results are clipped to [0, 1]."""
        return self.name.startswith("NORM_YES_CLIP")

    @property
    def quantizes(self) -> bool:
        """Whether results are quantized to 8 bits (k / 255, k = 0..255)."""
        return self.name.endswith("_INT")


_STD_MULTIPLIERS = {
    NormMethod.NORM_NO_CLIP: 1.0,
    NormMethod.NORM_NO_CLIP_2_STD: 2.0,
    NormMethod.NORM_YES_CLIP: 1.0,
    NormMethod.NORM_YES_CLIP_2_STD: 2.0,
    NormMethod.NORM_YES_CLIP_3_STD: 3.0,
    NormMethod.NORM_YES_CLIP_INT: 1.0,
    NormMethod.NORM_YES_CLIP_2_STD_INT: 2.0,
    NormMethod.NORM_YES_CLIP_3_STD_INT: 3.0,
}


def _bounds(
    method: NormMethod,
    mean: np.ndarray,
    std: np.ndarray,
    lo: np.ndarray | None,
    hi: np.ndarray | None,
    k: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Return (a, b) per band such that the method's affine step is (x - a) / (b - a)."""
    if method is NormMethod.NO_NORM:
        return np.zeros_like(mean), np.ones_like(mean)
    if method is NormMethod.STANDARDIZE:
        return mean, mean + std
    if method is NormMethod.NORM_YES_CLIP_MIN_MAX_INT:
        if lo is None or hi is None:
            raise ValueError(f"{method.value} needs per-band min and max")
        return lo, hi
    k = method.std_multiplier if k is None else k
    assert k is not None
    return mean - k * std, mean + k * std


def _apply(x: ArrayT, a: np.ndarray, b: np.ndarray, method: NormMethod) -> ArrayT:
    """(x - a) / (b - a), then the method's clip/quantize; MISSING_VALUE stays as it is."""
    if method is NormMethod.NO_NORM:
        return x
    if isinstance(x, torch.Tensor):
        dtype = x.dtype if x.is_floating_point() else torch.float32
        ta = torch.as_tensor(a, dtype=dtype, device=x.device)
        span = torch.as_tensor(b - a, dtype=dtype, device=x.device)
        t = (x.to(dtype) - ta) / span
        if method.clips:
            t = t.clamp(0.0, 1.0)
        if method.quantizes:
            t = torch.floor((t * 255.0).clamp(0.0, 255.0)) / 255.0
        return torch.where(x == MISSING_VALUE, torch.full_like(t, MISSING_VALUE), t)
    arr = np.asarray(x)
    dt = arr.dtype if np.issubdtype(arr.dtype, np.floating) else np.dtype(np.float32)
    y = np.subtract(arr, a.astype(dt), dtype=dt)
    np.divide(y, (b - a).astype(dt), out=y)
    if method.clips:
        np.clip(y, 0.0, 1.0, out=y)
    if method.quantizes:
        np.multiply(y, 255.0, out=y)
        np.clip(y, 0.0, 255.0, out=y)
        np.floor(y, out=y)
        np.divide(y, 255.0, out=y)
    np.copyto(y, dt.type(MISSING_VALUE), where=arr == MISSING_VALUE)
    return y


def normalize_array(
    x: ArrayT,
    method: NormMethod | str,
    mean: Sequence[float] | np.ndarray,
    std: Sequence[float] | np.ndarray,
    min: Sequence[float] | np.ndarray | None = None,
    max: Sequence[float] | np.ndarray | None = None,
) -> ArrayT:
    """Normalize bands-last `x` (numpy or torch) with per-band vectors; missing stays missing."""
    method = NormMethod(method)
    lo = None if min is None else np.asarray(min, dtype=np.float64)
    hi = None if max is None else np.asarray(max, dtype=np.float64)
    m, s = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
    a, b = _bounds(method, m, s, lo, hi)
    return _apply(x, a, b, method)


def _usable(s: BandStats, need_min_max: bool) -> bool:
    """Whether stats can define a band's range: finite, std > 0 (and min < max if needed)."""
    ok = bool(np.isfinite(s.mean) and np.isfinite(s.std) and s.std > 0)
    if need_min_max:
        ok = ok and s.min is not None and s.max is not None and bool(s.min < s.max)
    return ok


class Normalizer:
    """Per-modality normalization with one method; serializable into checkpoints.

    Each band uses `stats` where usable (std > 0; for MIN_MAX_INT also min < max) and the
    modality's fixed range otherwise: (x - lo) / (hi - lo), then the method's clip or
    quantization. STANDARDIZE has no fixed-range fallback and raises instead.
    """

    def __init__(
        self,
        stats: NormStats | None = None,
        method: NormMethod | str = NormMethod.NORM_NO_CLIP_2_STD,
        std_multiplier: float | None = None,
        fallback_ranges: Mapping[str, tuple[float, float]] | None = None,
    ) -> None:
        """Set up; `std_multiplier` overrides the method's k; ranges default to the registry."""
        self.stats = stats
        self.method = NormMethod(method)
        if std_multiplier is not None and (
            self.method.std_multiplier is None or not std_multiplier > 0
        ):
            raise ValueError(
                f"std_multiplier={std_multiplier} needs a positive value and a "
                f"mean +- k std method, not {self.method.value}"
            )
        self.std_multiplier = std_multiplier
        ranges = {m: spec.value_range for m, spec in MODALITIES.items()}
        ranges.update(fallback_ranges or {})
        self.fallback_ranges = {m: (float(lo), float(hi)) for m, (lo, hi) in ranges.items()}
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def bounds(self, modality: str) -> tuple[np.ndarray, np.ndarray]:
        """Per band (a, b), float64: the affine step is (x - a) / (b - a)."""
        if modality in self._cache:
            return self._cache[modality]
        spec = get_modality(modality)
        got = [None if self.stats is None else self.stats.get(modality, b) for b in spec.band_order]
        mm = self.method is NormMethod.NORM_YES_CLIP_MIN_MAX_INT
        usable = [s is not None and _usable(s, mm) for s in got]

        def vec(attr: str) -> np.ndarray:
            vals = [getattr(s, attr) if ok else None for s, ok in zip(got, usable)]
            return np.array([np.nan if v is None else v for v in vals], dtype=np.float64)

        k = self.std_multiplier
        a, b = _bounds(self.method, vec("mean"), vec("std"), vec("min"), vec("max"), k)
        fallback = [band for band, ok in zip(spec.band_order, usable) if not ok]
        if fallback and self.method is not NormMethod.NO_NORM:
            if self.method is NormMethod.STANDARDIZE:
                raise ValueError(f"standardize needs mean/std for {modality} bands {fallback}")
            lo, hi = self.fallback_ranges[modality]
            keep = np.asarray(usable)
            a, b = np.where(keep, a, lo), np.where(keep, b, hi)
            log = logger.info if self.stats is None else logger.warning
            log("no usable stats for %s %s: fixed range %s", modality, fallback, (lo, hi))
        self._cache[modality] = (a, b)
        return a, b

    def __call__(self, modality: str, x: ArrayT) -> ArrayT:
        """Normalize `x` (numpy or torch, bands last, any leading shape) of `modality`."""
        n = get_modality(modality).num_bands
        if x.shape[-1] != n:
            raise ValueError(f"{modality}: expected {n} bands last, got shape {tuple(x.shape)}")
        a, b = self.bounds(modality)
        return _apply(x, a, b, self.method)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe description (method, stats, ranges) to embed in checkpoints."""
        return {
            "method": self.method.value,
            "std_multiplier": self.std_multiplier,
            "stats": None if self.stats is None else self.stats.to_json(),
            "fallback_ranges": {m: list(r) for m, r in self.fallback_ranges.items()},
        }

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> Normalizer:
        """Rebuild from `to_dict` output."""
        stats = payload.get("stats")
        ranges = payload.get("fallback_ranges") or {}
        return cls(
            stats=None if stats is None else NormStats.from_json(stats, source="normalizer"),
            method=payload["method"],
            std_multiplier=payload.get("std_multiplier"),
            fallback_ranges={m: (r[0], r[1]) for m, r in ranges.items() if m in MODALITIES},
        )
