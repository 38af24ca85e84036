"""rslearn's `planetary_computer.*` sources: Microsoft Planetary Computer's STAC API.

Each class is `StacApi` with Planetary Computer's endpoint, a collection and its band table
(rslearn's), signing on: asset hrefs on `*.blob.core.windows.net` get a SAS token from the
`planetary-computer` package just before each read (PC_SDK_SUBSCRIPTION_KEY and
PC_SDK_SAS_URL are read from the environment by that package; other hrefs are not touched).
The endpoint is the `endpoint` argument, else $HELIOS_PLANETARY_COMPUTER_STAC_URL, else the
public API (docs/runner.md, "Data sources").
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import numpy as np

from helios.runner.materialize.sources.base import SourceContext, band_key
from helios.runner.materialize.sources.stac_api import StacApi

STAC_URL = "https://planetarycomputer.microsoft.com/api/stac/v1"
ENDPOINT_ENV = "HELIOS_PLANETARY_COMPUTER_STAC_URL"
S1_MIN_LINEAR = 1e-6
"""Linear backscatter is clamped here before dB (-60 dB), as rslearn's Sentinel1ToDecibels."""


def endpoint_url(endpoint: str | None) -> str:
    """The configured endpoint, else $HELIOS_PLANETARY_COMPUTER_STAC_URL, else the public one."""
    return endpoint or os.environ.get(ENDPOINT_ENV) or STAC_URL


class Sentinel2(StacApi):
    """Sentinel-2 L2A (`sentinel-2-l2a`): COGs per band at 10/20/60 m, uint16, nodata 0.

    Assets B01..B09, B11, B12, B8A hold the band of their name (there is no B10 in L2A),
    `SCL` the scene classification, `visual` R, G, B. Items lacking an asset the layer reads
    are skipped (as rslearn). `harmonize` removes the baseline >= 04.00 offset, decided from
    `s2:processing_baseline` (harmonize.py); SCL and visual are left alone.
    """

    modality = "sentinel2_l2a"
    COLLECTION = "sentinel-2-l2a"
    BANDS: dict[str, list[str]] = {
        **{b: [b] for b in ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08")},
        **{b: [b] for b in ("B09", "B11", "B12", "B8A", "SCL")},
        "visual": ["R", "G", "B"],
    }

    def __init__(
        self,
        harmonize: bool = False,
        assets: list[str] | None = None,
        query: dict[str, Any] | None = None,
        max_cloud_cover: float | None = None,
        sort_by: str | None = None,
        sort_ascending: bool = True,
        timeout: timedelta | float = timedelta(seconds=10),
        skip_items_missing_assets: bool = True,
        cache_dir: str | None = None,
        endpoint: str | None = None,
        retries: int = 3,
        backoff: float = 0.5,
        limit: int = 100,
    ) -> None:
        """Create the source (rslearn's arguments, plus Helios's last five).

        Args:
            harmonize: Remove the +1000 offset of processing baseline >= 04.00.
            assets: Read only these assets (default: every asset holding a layer band).
            query: STAC query filter, e.g. {"eo:cloud_cover": {"lt": 50}}.
            max_cloud_cover: Adds `eo:cloud_cover < max_cloud_cover` to the query
                (rslearn silently drops this argument for this source; Helios honours it).
            sort_by: Item property ranking items, e.g. "eo:cloud_cover".
            sort_ascending: Rank by ascending `sort_by`.
            timeout: Seconds (or a timedelta) one request may take.
            skip_items_missing_assets: Skip items lacking an asset the layer reads.
            cache_dir: Search cache folder, relative to the scratch's dataset folder.
            endpoint: STAC API root (default: $HELIOS_PLANETARY_COMPUTER_STAC_URL, else
                Planetary Computer's).
            retries: Retries of a failed request.
            backoff: Backoff factor of the retries, in seconds.
            limit: Items per page.

        """
        table = {k: v for k, v in self.BANDS.items() if assets is None or k in assets}
        super().__init__(
            endpoint=endpoint_url(endpoint),
            collection_name=self.COLLECTION,
            asset_bands=table,
            query=query,
            max_cloud_cover=max_cloud_cover,
            sort_by=sort_by,
            sort_ascending=sort_ascending,
            skip_items_missing_assets=skip_items_missing_assets,
            limit=limit,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            cache_dir=cache_dir,
            sign="planetary_computer",
            harmonize=harmonize,
        )
        self.assets = assets


class Sentinel1(StacApi):
    """Sentinel-1 RTC (`sentinel-1-rtc`): terrain-corrected gamma0, linear power, float32.

    An asset key is the band name (`vv`, `vh`, `hh`, `hv`), as rslearn. The materialized layer
    keeps rslearn's linear values; `to_model_units` turns them into the dB the Helios
    `sentinel1` modality holds: `10 * log10(max(x, 1e-6))`. Planetary Computer asks for an
    account for this collection's SAS tokens: set PC_SDK_SUBSCRIPTION_KEY.
    """

    modality = "sentinel1"
    COLLECTION = "sentinel-1-rtc"

    def __init__(
        self,
        band_names: list[str] | None = None,
        query: dict[str, Any] | None = None,
        sort_by: str | None = None,
        sort_ascending: bool = True,
        timeout: timedelta | float = timedelta(seconds=10),
        skip_items_missing_assets: bool = False,
        cache_dir: str | None = None,
        endpoint: str | None = None,
        retries: int = 3,
        backoff: float = 0.5,
        limit: int = 100,
    ) -> None:
        """Create the source (rslearn's arguments, plus Helios's last four).

        Args:
            band_names: Polarizations to read when the layer names none (default: the
                layer's bands).
            query: STAC query filter, e.g. {"sar:instrument_mode": {"eq": "IW"},
                "sar:polarizations": {"eq": ["VV", "VH"]}, "sat:orbit_state": {"eq":
                "ascending"}}.
            sort_by: Item property ranking items.
            sort_ascending: Rank by ascending `sort_by`.
            timeout: Seconds (or a timedelta) one request may take.
            skip_items_missing_assets: Skip items lacking a polarization the layer reads.
            cache_dir: Search cache folder, relative to the scratch's dataset folder.
            endpoint: STAC API root (default as `Sentinel2`).
            retries: Retries of a failed request.
            backoff: Backoff factor of the retries, in seconds.
            limit: Items per page.

        """
        super().__init__(
            endpoint=endpoint_url(endpoint),
            collection_name=self.COLLECTION,
            query=query,
            sort_by=sort_by,
            sort_ascending=sort_ascending,
            skip_items_missing_assets=skip_items_missing_assets,
            limit=limit,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            cache_dir=cache_dir,
            sign="planetary_computer",
        )
        self.band_names = band_names

    def asset_table(self, context: SourceContext) -> dict[str, list[str]]:
        """Each band is the asset of its (lower-case) name."""
        return {b.lower(): [b] for b in (context.bands or tuple(self.band_names or ()))}

    def to_model_units(self, modality: str, data: np.ndarray) -> np.ndarray:
        """Linear gamma0 -> dB for the `sentinel1` modality (NaN stays NaN)."""
        if modality != "sentinel1":
            return data
        with np.errstate(invalid="ignore"):
            db = 10.0 * np.log10(np.maximum(data, S1_MIN_LINEAR))
        return np.where(np.isfinite(data), db, np.nan).astype(np.float32)


class LandsatC2L2(StacApi):
    """Landsat 8/9 Collection 2 Level-2 (`landsat-c2-l2`): surface reflectance, uint16.

    Assets are keyed by common name; the bands are Landsat band names: coastal B1, blue B2,
    green B3, red B4, nir08 B5, swir16 B6, swir22 B7, lwir11 B10 (a layer may also say
    `red` or `OLI_B4`). Level 2 has no B8, B9 or B11 (those read as nodata). These values are
    Level-2 (scale 2.75e-5, offset -0.2), not the Level-1 DN of `aws_landsat`.
    """

    COLLECTION = "landsat-c2-l2"
    ASSETS = {
        "coastal": "B1",
        "blue": "B2",
        "green": "B3",
        "red": "B4",
        "nir08": "B5",
        "swir16": "B6",
        "swir22": "B7",
        "lwir11": "B10",
    }
    DEFAULT_QUERY: dict[str, Any] = {"platform": {"in": ["landsat-8", "landsat-9"]}}

    def __init__(
        self,
        band_names: list[str] | None = None,
        query: dict[str, Any] | None = None,
        max_cloud_cover: float | None = None,
        sort_by: str | None = None,
        sort_ascending: bool = True,
        timeout: timedelta | float = timedelta(seconds=10),
        skip_items_missing_assets: bool = True,
        cache_dir: str | None = None,
        endpoint: str | None = None,
        retries: int = 3,
        backoff: float = 0.5,
        limit: int = 100,
    ) -> None:
        """Create the source (rslearn's arguments, plus Helios's last five).

        Args:
            band_names: Bands to read when the layer names none.
            query: STAC query filter (default: Landsat 8 and 9 only).
            max_cloud_cover: Adds `eo:cloud_cover < max_cloud_cover` to the query.
            sort_by: Item property ranking items, e.g. "eo:cloud_cover".
            sort_ascending: Rank by ascending `sort_by`.
            timeout: Seconds (or a timedelta) one request may take.
            skip_items_missing_assets: Skip items lacking an asset the layer reads.
            cache_dir: Search cache folder, relative to the scratch's dataset folder.
            endpoint: STAC API root (default as `Sentinel2`).
            retries: Retries of a failed request.
            backoff: Backoff factor of the retries, in seconds.
            limit: Items per page.

        """
        super().__init__(
            endpoint=endpoint_url(endpoint),
            collection_name=self.COLLECTION,
            asset_bands={k: [v] for k, v in self.ASSETS.items()},
            query=query if query is not None else self.DEFAULT_QUERY,
            max_cloud_cover=max_cloud_cover,
            sort_by=sort_by,
            sort_ascending=sort_ascending,
            skip_items_missing_assets=skip_items_missing_assets,
            limit=limit,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            cache_dir=cache_dir,
            sign="planetary_computer",
        )
        self.band_names = band_names

    def asset_table(self, context: SourceContext) -> dict[str, list[str]]:
        """Asset -> the layer's name for its band (B4, red or OLI_B4 alike)."""
        table = {k: [v] for k, v in self.ASSETS.items()}
        for band in context.bands or tuple(self.band_names or ()):
            key = band_key(band)
            for asset, name in self.ASSETS.items():
                if key in (
                    band_key(name),
                    band_key(asset),
                    band_key(f"OLI_{name}"),
                    band_key(f"TIRS_{name}"),
                ):
                    table[asset] = [band]
        return table


class CopDemGlo30(StacApi):
    """Copernicus DEM GLO-30 (`cop-dem-glo-30`): 1-degree float32 elevation tiles (m).

    Asset `data` holds the layer's single band (default "DEM"); items are timeless, so the
    search has no datetime filter and every tile matches any time range.
    """

    modality = "srtm"
    COLLECTION = "cop-dem-glo-30"

    def __init__(
        self,
        band_name: str = "DEM",
        query: dict[str, Any] | None = None,
        sort_by: str | None = None,
        sort_ascending: bool = True,
        skip_items_missing_assets: bool = True,
        timeout: timedelta | float = timedelta(seconds=10),
        cache_dir: str | None = None,
        endpoint: str | None = None,
        retries: int = 3,
        backoff: float = 0.5,
        limit: int = 100,
    ) -> None:
        """Create the source (rslearn's arguments, plus Helios's last four).

        Args:
            band_name: The band's name when the layer names none.
            query: STAC query filter.
            sort_by: Item property ranking items.
            sort_ascending: Rank by ascending `sort_by`.
            skip_items_missing_assets: Skip items without a `data` asset.
            timeout: Seconds (or a timedelta) one request may take.
            cache_dir: Search cache folder, relative to the scratch's dataset folder.
            endpoint: STAC API root (default as `Sentinel2`).
            retries: Retries of a failed request.
            backoff: Backoff factor of the retries, in seconds.
            limit: Items per page.

        """
        super().__init__(
            endpoint=endpoint_url(endpoint),
            collection_name=self.COLLECTION,
            query=query,
            sort_by=sort_by,
            sort_ascending=sort_ascending,
            skip_items_missing_assets=skip_items_missing_assets,
            timeless=True,
            limit=limit,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            cache_dir=cache_dir,
            sign="planetary_computer",
        )
        self.band_name = band_name

    def asset_table(self, context: SourceContext) -> dict[str, list[str]]:
        """The `data` asset holds the layer's (single) band."""
        return {"data": [context.bands[0] if context.bands else self.band_name]}
