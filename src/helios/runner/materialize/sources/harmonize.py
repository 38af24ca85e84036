"""Sentinel-2 harmonization: remove the +1000 offset of processing baseline 04.00 and later.

From baseline 04.00 (products from 25 January 2022 on, and reprocessed older ones) ESA adds
1000 to every L1C/L2A reflectance (`RADIO_ADD_OFFSET` / `BOA_ADD_OFFSET` = -1000 in the
product XML). Harmonizing makes those values comparable with older baselines: valid pixels
become `max(x - 1000, 1)` (rslearn 0.1's rule: clip at 1000, subtract, and keep formerly
non-zero pixels at 1 so they do not turn into nodata 0). Which items need it is decided from
item metadata, never by downloading the product XML (rslearn does, on every read):

1. `earthsearch:boa_offset_applied: true` (Earth Search): Element84 already removed the
   offset, so nothing is subtracted (rslearn 0.0.27 subtracted a second time);
2. else the processing baseline: `s2:processing_baseline` (Planetary Computer, Earth
   Search), else the `_Nxxyy_` token of an ESA product name (`..._N0510_...` is 05.10);
   >= 04.00 subtracts 1000;
3. else (no baseline known) the acquisition date: on or after 2022-01-25 subtracts 1000.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

import numpy as np

from helios.runner.core.geometry import parse_time

OFFSET = 1000.0
BASELINE_04_START = datetime(2022, 1, 25, tzinfo=timezone.utc)
"""First acquisitions processed with baseline 04.00."""
_BASELINE_IN_NAME = re.compile(r"_N(\d{2})(\d{2})_")


def processing_baseline(properties: dict[str, Any], item_id: str) -> float | None:
    """The item's processing baseline (e.g. 5.1 for "05.10"), or None when unknown."""
    value = properties.get("s2:processing_baseline")
    if value is not None:
        try:
            return float(value)
        except (TypeError, ValueError):
            pass
    for text in (item_id, str(properties.get("s2:product_uri", ""))):
        m = _BASELINE_IN_NAME.search(text)
        if m:
            return int(m.group(1)) + int(m.group(2)) / 100
    return None


def s2_offset(properties: dict[str, Any], item_id: str) -> float:
    """The offset to subtract from an item's reflectances (1000 or 0); see module doc."""
    if properties.get("earthsearch:boa_offset_applied") is True:
        return 0.0
    baseline = processing_baseline(properties, item_id)
    if baseline is not None:
        return OFFSET if baseline >= 4.0 else 0.0
    when = properties.get("datetime") or properties.get("start_datetime")
    if when and parse_time(when) >= BASELINE_04_START:
        return OFFSET
    return 0.0


def harmonize(data: np.ndarray, offset: float) -> np.ndarray:
    """Float32 reflectances (NaN: nodata) with `offset` removed, valid pixels kept >= 1."""
    if not offset:
        return data
    out = np.maximum(data - np.float32(offset), np.float32(1))
    return np.where(np.isfinite(data), out, np.nan).astype(np.float32)
