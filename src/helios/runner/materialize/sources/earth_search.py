"""rslearn's AWS sources, backed by public STAC APIs.

- `aws_sentinel2_element84.Sentinel2` -> `Sentinel2`: Element84's Earth Search
  (`sentinel-2-l2a`), public COGs on `sentinel-cogs`, no credentials.
- `aws_sentinel1.Sentinel1` -> `Sentinel1`: Earth Search `sentinel-1-grd`; the GRD files
  live in the requester-pays bucket `sentinel-s1-l1c` (as for rslearn, which finds them
  through Copernicus's OData catalogue instead), so reads need AWS credentials.
- `aws_landsat.LandsatOliTirs` -> `LandsatOliTirs`: USGS LandsatLook's STAC API
  (`landsat-c2l1`, Landsat 8/9 OLI-TIRS), read from the requester-pays `usgs-landsat`
  bucket (as rslearn, which lists the bucket instead), so reads need AWS credentials.

Without AWS credentials in the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY,
AWS_PROFILE, or ~/.aws files) the last two fail each window with an error that says so.
Endpoints: the `endpoint` argument, else $HELIOS_EARTH_SEARCH_STAC_URL /
$HELIOS_LANDSATLOOK_STAC_URL, else the public ones.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any, Literal

from helios.runner.materialize.sources.base import SourceContext, band_key
from helios.runner.materialize.sources.stac_api import StacApi

EARTH_SEARCH_URL = "https://earth-search.aws.element84.com/v1"
EARTH_SEARCH_ENV = "HELIOS_EARTH_SEARCH_STAC_URL"
LANDSATLOOK_URL = "https://landsatlook.usgs.gov/stac-server"
LANDSATLOOK_ENV = "HELIOS_LANDSATLOOK_STAC_URL"


def _endpoint(endpoint: str | None, env: str, default: str) -> str:
    return endpoint or os.environ.get(env) or default


class Sentinel2(StacApi):
    """Sentinel-2 L2A COGs on AWS (Earth Search `sentinel-2-l2a`), uint16, nodata 0.

    Assets by common name: coastal B01, blue B02, green B03, red B04, rededge1..3 B05..B07,
    nir B08, nir09 B09, swir16 B11, swir22 B12, nir08 B8A, visual R G B. Earth Search removes
    the baseline >= 04.00 offset itself (`earthsearch:boa_offset_applied: true`), so
    `harmonize` subtracts only where that flag is absent or false (harmonize.py); rslearn
    0.0.27 subtracted a second time, and 0.1 no longer accepts the argument.
    """

    modality = "sentinel2_l2a"
    COLLECTION = "sentinel-2-l2a"
    BANDS: dict[str, list[str]] = {
        "coastal": ["B01"],
        "blue": ["B02"],
        "green": ["B03"],
        "red": ["B04"],
        "rededge1": ["B05"],
        "rededge2": ["B06"],
        "rededge3": ["B07"],
        "nir": ["B08"],
        "nir09": ["B09"],
        "swir16": ["B11"],
        "swir22": ["B12"],
        "nir08": ["B8A"],
        "visual": ["R", "G", "B"],
    }

    def __init__(
        self,
        assets: list[str] | None = None,
        query: dict[str, Any] | None = None,
        max_cloud_cover: float | None = None,
        sort_by: str | None = None,
        sort_ascending: bool = True,
        cache_dir: str | None = None,
        timeout: timedelta | float = timedelta(seconds=10),
        harmonize: bool = False,
        endpoint: str | None = None,
        retries: int = 3,
        backoff: float = 0.5,
        limit: int = 100,
    ) -> None:
        """Create the source (rslearn's arguments, plus Helios's last four).

        Args:
            assets: Read only these assets (default: every asset holding a layer band).
            query: STAC query filter, e.g. {"eo:cloud_cover": {"lt": 50}}.
            max_cloud_cover: Adds `eo:cloud_cover < max_cloud_cover` to the query.
            sort_by: Item property ranking items, e.g. "eo:cloud_cover".
            sort_ascending: Rank by ascending `sort_by`.
            cache_dir: Search cache folder, relative to the scratch's dataset folder.
            timeout: Seconds (or a timedelta) one request may take.
            harmonize: Remove the baseline >= 04.00 offset where Earth Search has not.
            endpoint: STAC API root (default: $HELIOS_EARTH_SEARCH_STAC_URL, else Earth
                Search's).
            retries: Retries of a failed request.
            backoff: Backoff factor of the retries, in seconds.
            limit: Items per page.

        """
        super().__init__(
            endpoint=_endpoint(endpoint, EARTH_SEARCH_ENV, EARTH_SEARCH_URL),
            collection_name=self.COLLECTION,
            asset_bands={k: v for k, v in self.BANDS.items() if assets is None or k in assets},
            query=query,
            max_cloud_cover=max_cloud_cover,
            sort_by=sort_by,
            sort_ascending=sort_ascending,
            skip_items_missing_assets=True,
            limit=limit,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            cache_dir=cache_dir,
            harmonize=harmonize,
        )
        self.assets = assets


class Sentinel1(StacApi):
    """Sentinel-1 IW GRD (Earth Search `sentinel-1-grd`), VV+VH, from requester-pays S3.

    Values are GRD digital numbers georeferenced by GCPs, not the calibrated gamma0 of
    `planetary_computer.Sentinel1` (and not the dB of the Helios `sentinel1` modality): use
    that source for model inputs. Bands are the asset keys (`vv`, `vh`).
    """

    COLLECTION = "sentinel-1-grd"
    credentials_hint = (
        "; without AWS credentials, rslearn.data_sources.planetary_computer.Sentinel1 reads "
        "calibrated Sentinel-1 RTC backscatter (what Helios models take) for free"
    )

    def __init__(
        self,
        orbit_direction: Literal["ASCENDING", "DESCENDING"] | None = None,
        query: dict[str, Any] | None = None,
        cache_dir: str | None = None,
        timeout: timedelta | float = timedelta(seconds=10),
        endpoint: str | None = None,
        retries: int = 3,
        backoff: float = 0.5,
        limit: int = 100,
    ) -> None:
        """Create the source (rslearn's argument, plus Helios's).

        Args:
            orbit_direction: Only ascending or descending passes (default: both).
            query: STAC query filter (default: IW mode, VV+VH).
            cache_dir: Search cache folder, relative to the scratch's dataset folder.
            timeout: Seconds (or a timedelta) one request may take.
            endpoint: STAC API root (default as `Sentinel2`).
            retries: Retries of a failed request.
            backoff: Backoff factor of the retries, in seconds.
            limit: Items per page.

        """
        q: dict[str, Any] = (
            dict(query)
            if query is not None
            else {
                "sar:instrument_mode": {"eq": "IW"},
                "sar:polarizations": {"eq": ["VV", "VH"]},
            }
        )
        if orbit_direction is not None:
            q["sat:orbit_state"] = {"eq": orbit_direction.lower()}
        super().__init__(
            endpoint=_endpoint(endpoint, EARTH_SEARCH_ENV, EARTH_SEARCH_URL),
            collection_name=self.COLLECTION,
            query=q,
            limit=limit,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            cache_dir=cache_dir,
            requester_pays=True,
        )
        self.orbit_direction = orbit_direction

    def asset_table(self, context: SourceContext) -> dict[str, list[str]]:
        """Each band is the asset of its (lower-case) name."""
        return {b.lower(): [b] for b in context.bands or ("vv", "vh")}


class LandsatOliTirs(StacApi):
    """Landsat 8/9 OLI-TIRS Collection 2 Level-1 (LandsatLook `landsat-c2l1`), uint16 DN.

    Bands B1..B11 (B8 panchromatic at 15 m), read from each asset's `s3` alternate in the
    requester-pays `usgs-landsat` bucket. Assets are matched by their common name (coastal,
    blue, green, red, nir08, swir16, swir22, pan, cirrus, lwir11, lwir12) or band name.
    Only `LC08_` / `LC09_` scenes (OLI and TIRS together) are kept, as rslearn 0.1.
    `sort_by: cloud_cover` (rslearn's only choice) ranks by `eo:cloud_cover`.
    """

    COLLECTION = "landsat-c2l1"
    credentials_hint = (
        "; without AWS credentials, rslearn.data_sources.planetary_computer.LandsatC2L2 reads "
        "Landsat 8/9 Level-2 surface reflectance (no B8, B9, B11) for free"
    )
    COMMON = {
        "coastal": "B1",
        "blue": "B2",
        "green": "B3",
        "red": "B4",
        "nir08": "B5",
        "swir16": "B6",
        "swir22": "B7",
        "pan": "B8",
        "cirrus": "B9",
        "lwir11": "B10",
        "lwir12": "B11",
    }

    def __init__(
        self,
        metadata_cache_dir: str | None = None,
        sort_by: str | None = None,
        max_cloud_cover: float | None = None,
        timeout: timedelta | float = timedelta(seconds=10),
        endpoint: str | None = None,
        retries: int = 3,
        backoff: float = 0.5,
        limit: int = 100,
    ) -> None:
        """Create the source (rslearn's arguments, plus Helios's).

        Args:
            metadata_cache_dir: Search cache folder, relative to the scratch's dataset
                folder (rslearn caches its bucket listings there).
            sort_by: "cloud_cover" (as rslearn) or any item property.
            max_cloud_cover: Adds `eo:cloud_cover < max_cloud_cover` to the query.
            timeout: Seconds (or a timedelta) one request may take.
            endpoint: STAC API root (default: $HELIOS_LANDSATLOOK_STAC_URL, else
                LandsatLook's).
            retries: Retries of a failed request.
            backoff: Backoff factor of the retries, in seconds.
            limit: Items per page.

        """
        super().__init__(
            endpoint=_endpoint(endpoint, LANDSATLOOK_ENV, LANDSATLOOK_URL),
            collection_name=self.COLLECTION,
            max_cloud_cover=max_cloud_cover,
            sort_by="eo:cloud_cover" if sort_by == "cloud_cover" else sort_by,
            id_pattern=r"^LC0[89]_",
            limit=limit,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            cache_dir=metadata_cache_dir,
            alternate_href="s3",
            requester_pays=True,
        )
        self.metadata_cache_dir = metadata_cache_dir

    def asset_table(self, context: SourceContext) -> dict[str, list[str]]:
        """Assets by common name or band name -> the layer's name for that band."""
        names = {band_key(b): b for b in context.bands}
        table: dict[str, list[str]] = {}
        for common, band in self.COMMON.items():
            name = names.get(band_key(band), band)
            table[common] = [name]
            table[band] = [name]
        return table
