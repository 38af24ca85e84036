"""Helios's masking strategies against OlmoEarth's reference implementation, on the same layouts.

tests/data/golden/olmoearth_masking.json holds, for seeded token layouts, the statistics of
200 calls of each reference strategy (`olmoearth-pretrain` 0.1.2, written by
tests/peer/loss_golden.py in the peer env). These tests run the Helios strategy that each
upstream name maps to on the same layouts, sample by sample, and compare the mean count of
every mask value per sample, modality and band set. Settings in `DIFFERENCES` differ on
purpose; each names its reason, and docs/training.md ("Fidelity to OlmoEarth") lists them.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from helios.data.masking import (
    MaskingStrategy,
    ModalityCrossRandomMasking,
    ModalityCrossSpaceMasking,
    ModalityCrossTimeMasking,
    RandomMasking,
    RandomTimeWithDecodeMasking,
    SpaceMasking,
    SpaceTimeMasking,
    TimeMasking,
)

GOLDEN = json.loads((Path(__file__).parent / "golden" / "olmoearth_masking.json").read_text())
DRAWS = 64
"""Helios draws per sample (the reference's: 200)."""
Z = 4.5
"""Allowed difference of means, in standard errors."""
ENC, TGT, DEC, MIS = 0, 1, 2, 3


def _kwargs(config: str) -> dict[str, Any]:
    kwargs: dict[str, Any] = GOLDEN["meta"]["strategies"][config]["kwargs"]
    return kwargs


def _cross(cls: type) -> Callable[[str, float, float], MaskingStrategy]:
    def build(config: str, e: float, d: float) -> MaskingStrategy:
        kw = _kwargs(config)
        return cls(
            e,
            d,
            kw.get("only_decode_modalities", ()),
            min_encoded_band_sets=kw.get("min_encoded_bandsets", 2),
            allow_same_band_set=kw.get("allow_encoding_decoding_same_bandset", False),
        )

    return build


def _with_decode(config: str, e: float, d: float) -> MaskingStrategy:
    kw = _kwargs(config)
    return RandomTimeWithDecodeMasking(
        e, d, kw.get("only_decode_modalities", ()), random_probability=kw.get("random_ratio", 1.0)
    )


UPSTREAM: dict[str, Callable[[str, float, float], MaskingStrategy]] = {
    "random": lambda c, e, d: RandomMasking(e, d),
    "space": lambda c, e, d: SpaceMasking(e, d),
    "time": lambda c, e, d: TimeMasking(e, d),
    "space_time": lambda c, e, d: SpaceTimeMasking(e, d),
    "random_with_decode": _with_decode,  # random_probability=1: upstream random_with_decode
    "random_time_with_decode": _with_decode,
    "modality_cross_random": _cross(ModalityCrossRandomMasking),
    "modality_cross_space": _cross(ModalityCrossSpaceMasking),
    "modality_cross_time": _cross(ModalityCrossTimeMasking),
}
"""Upstream registry key -> the Helios class it maps to, built from the golden kwargs."""

HELIOS_NAMES = {"era5_10": "era5"}

DIFFERENCES: dict[tuple[str, str, str], str] = {
    # (layout, configuration, ratios) glob patterns -> reason (docs/training.md)
    ("single_token", "random", "*"): "min-one",
    ("single_token", "space*", "*"): "min-one",
    ("single_token", "time", "*"): "min-one",
    ("single_token", "modality_cross_random_v1", "enc0.5_dec0.5"): "min-one",
    ("tiny", "space*", "enc0.1_dec0.75"): "min-one",
    ("with_era5", "space", "enc0.1_dec0.75"): "min-one",
    ("partial_pixel", "space", "enc0.1_dec0.75"): "min-one",
    ("partial_pixel", "space_time", "enc0.1_dec0.75"): "min-one",
    ("with_era5", "random", "enc0.3_dec0.5"): "available-units",
    ("with_era5", "space", "enc0.3_dec0.5"): "available-units",
    ("with_era5", "modality_cross_space", "enc0.3_dec0.5"): "available-units",
    ("partial_pixel", "random", "enc0.3_dec0.5"): "available-units",
    ("sparse", "time", "*"): "per-sample-time",
    ("sparse", "space_time", "*"): "per-sample-time",
    ("partial_pixel", "time", "*"): "per-sample-time",
    ("partial_pixel", "space_time", "enc0.[35]*"): "per-sample-time",
    ("with_era5", "random_time_with_decode_time_only", "enc0.3_dec0.5"): "era5-time",
    ("dense", "modality_cross_time", "*"): "cross-time-base",
    ("sparse", "modality_cross_time", "*"): "cross-time-base",
    ("tiny", "modality_cross_time", "*"): "cross-time-base",
    ("partial_pixel", "modality_cross_time", "*"): "cross-time-base",
}
"""Settings that differ on purpose, with the reason's key in docs/training.md."""


def settings() -> list[tuple[str, str, str]]:
    return [
        (layout, config, ratios)
        for layout, by_config in GOLDEN["results"].items()
        for config, by_ratio in by_config.items()
        for ratios in by_ratio
    ]


def difference(layout: str, config: str, ratios: str) -> str | None:
    """The documented reason this setting differs, if it does."""
    for pattern, reason in DIFFERENCES.items():
        if all(fnmatch.fnmatchcase(v, p) for v, p in zip((layout, config, ratios), pattern)):
            return reason
    return None


@cache
def helios_counts(layout: str, config: str, ratios: str) -> dict[str, np.ndarray]:
    """Per modality, counts [draws, B, S, 4] of each mask value from the Helios strategy."""
    info = GOLDEN["layouts"][layout]
    e, d = (float(v) for v in ratios.removeprefix("enc").split("_dec"))
    strategy = UPSTREAM[GOLDEN["meta"]["strategies"][config]["registry_key"]](config, e, d)
    avail = {m: np.array(v["available"], dtype=bool) for m, v in info["modalities"].items()}
    counts = {m: np.zeros((DRAWS, a.shape[0], a.shape[-1], 4)) for m, a in avail.items()}
    for b in range(info["batch_size"]):
        tokens = {
            HELIOS_NAMES.get(m, m): np.where(a[b], ENC, MIS).astype(np.int8)
            for m, a in avail.items()
        }
        for s in range(DRAWS):
            out = strategy(tokens, np.random.default_rng([s, b]))
            for m in avail:
                flat = out[HELIOS_NAMES.get(m, m)].reshape(-1, avail[m].shape[-1])
                counts[m][s, b] = np.stack([(flat == v).sum(0) for v in range(4)], -1)
    return counts


def mismatches(layout: str, config: str, ratios: str) -> list[str]:
    """Where the Helios means leave the reference's beyond sampling error."""
    ref = GOLDEN["results"][layout][config][ratios]
    info = GOLDEN["layouts"][layout]
    out = []
    for m, c in helios_counts(layout, config, ratios).items():
        want = np.asarray(ref["counts_mean"][m])  # [B, S, 4]
        mean, sd = c.mean(0), c.std(0)
        se = np.sqrt(sd**2 / DRAWS + sd**2 / GOLDEN["meta"]["draws"])
        avail = np.array(info["modalities"][m]["available"], dtype=bool)
        flat = avail.reshape(avail.shape[0], -1)
        # ratios over all tokens (upstream) vs available ones: a partly missing modality's
        # counts may differ by up to one token per value
        partial = (flat.any(1) & ~flat.all(1))[:, None, None]
        bad = np.abs(mean - want) > Z * se + np.where(partial, 1.0, 1e-9)
        for b, s, v in zip(*np.nonzero(bad)):
            out.append(
                f"{m}[{b}] band set {s} value {v}: {mean[b, s, v]:.2f} vs {want[b, s, v]:.2f}"
            )
    return out


def test_every_upstream_strategy_maps_to_a_class() -> None:
    keys = {v["registry_key"] for v in GOLDEN["meta"]["strategies"].values()}
    assert keys == set(UPSTREAM)


@pytest.mark.parametrize(("layout", "config", "ratios"), settings())
def test_mask_statistics_match_the_reference(layout: str, config: str, ratios: str) -> None:
    ref = GOLDEN["results"][layout][config][ratios]
    counts = helios_counts(layout, config, ratios)  # Helios runs every layout
    info = GOLDEN["layouts"][layout]
    for m, c in counts.items():
        avail = np.array(info["modalities"][m]["available"], dtype=bool)
        missing = (~avail).reshape(avail.shape[0], -1, avail.shape[-1]).sum(1)  # [B, S]
        assert (c[..., MIS] == missing).all(), "missing tokens stay MISSING, nothing else does"
    totals = sum(c.sum(2) for c in counts.values())  # [draws, B, 4]
    has_data = totals[0, :, :3].sum(-1) >= 2
    assert ((totals[..., ENC] > 0) & (totals[..., DEC] > 0))[:, has_data].all()
    if "error" in ref:
        pytest.skip(f"the reference fails on this layout: {ref['error'][:60]}")
    assert ref["missing_not_missing"] == ref["available_made_missing"] == 0
    reason = difference(layout, config, ratios)
    bad = mismatches(layout, config, ratios)
    if reason is None:
        assert not bad, "\n".join(bad[:10])
    else:
        assert bad, f"documented as different ({reason}) but matches: drop it from DIFFERENCES"
