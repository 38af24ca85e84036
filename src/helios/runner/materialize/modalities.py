"""Which Helios modality a dataset.json layer feeds, and which Helios band each band is.

rslearn layers have no modality: Helios infers it, in this order (docs/runner.md,
"Layers and modalities"):

1. the layer's own `modality` key (a Helios extension);
2. the data source's modality (`planetary_computer.Sentinel2` is `sentinel2_l2a`,
   `gcp_public_data.Sentinel2` is `sentinel2` (L1C), `...Sentinel1` is `sentinel1`, ...);
3. the layer's `alias`, then its name, once decorations are removed: a month suffix
   (`sentinel2_l2a_mo01`), a numeric suffix, a `pre_` / `post_` prefix and an orbit suffix
   (`sentinel1_ascending`), then synonyms (`dem` is `srtm`).

Layers that infer to no modality are still materialized (an rslearn model may read them) but
are not Helios model inputs. Layers feeding one modality together form one multitemporal
input: their item groups are ordered by time (`sentinel2_l2a_mo01` ... `_mo12` become 12
timesteps of `sentinel2_l2a`).
"""

from __future__ import annotations

import re
from typing import Any

from helios.data.modalities import MODALITIES, ModalitySpec
from helios.runner.materialize.sources.base import band_key

SYNONYMS = {
    "dem": "srtm",
    "elevation": "srtm",
    "copdem": "srtm",
    "cop_dem": "srtm",
    "landsat8": "landsat",
    "landsat9": "landsat",
    "sentinel1_rtc": "sentinel1",
    "s1": "sentinel1",
    "wri_canopy_height_map": "wri_canopy_height",
}
BAND_SYNONYMS = {"srtm": {"DEM": "srtm", "ELEVATION": "srtm", "SRTM": "srtm"}}
"""Band names of upstream layers -> Helios band names, per modality (upper-case keys)."""
_DECORATIONS = (
    re.compile(r"_mo\d+$"),
    re.compile(r"_\d+$"),
    re.compile(r"^(pre|post|before|after)_"),
    re.compile(r"_(ascending|descending|asc|desc)$"),
)


def _normalized(name: str) -> str | None:
    text = name.strip().lower()
    for _ in range(3):
        if text in MODALITIES:
            return text
        if text in SYNONYMS:
            return SYNONYMS[text]
        for pattern in _DECORATIONS:
            text = pattern.sub("", text)
    return text if text in MODALITIES else SYNONYMS.get(text)


def infer_modality(
    name: str, alias: str | None, explicit: str | None, source: Any
) -> tuple[str | None, str]:
    """(modality or None, a problem or "") of a layer with a data source."""
    if explicit is not None:
        if explicit in MODALITIES:
            return explicit, ""
        return None, f"modality: unknown {explicit!r}; known: {sorted(MODALITIES)}"
    declared = getattr(source, "modality", None)
    if isinstance(declared, str) and declared in MODALITIES:
        return declared, ""
    for text in (alias, name):
        if text:
            found = _normalized(text)
            if found is not None:
                return found, ""
    return None, ""


def helios_band(spec: ModalitySpec, band: str) -> str | None:
    """The Helios band of `spec` that an upstream band name means, or None."""
    key = band_key(band)
    for b in spec.band_order:
        if band_key(b) == key:
            return b
    return BAND_SYNONYMS.get(spec.name, {}).get(key)
