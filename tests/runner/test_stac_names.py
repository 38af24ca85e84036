"""rslearn's data-source names in the upstream projects' dataset.json files, parsed unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helios.runner.materialize.dataset_config import load_dataset_config
from helios.runner.materialize.sources import earth_search, gcp_sentinel2, hf_srtm
from helios.runner.materialize.sources import planetary_computer as pc
from helios.runner.materialize.sources.base import SourceContext
from helios.runner.materialize.sources.registry import (
    HELIOS,
    UPSTREAM,
    UnavailableSource,
    resolve_source,
)
from helios.runner.materialize.sources.stac_api import StacApi

LAYERS = json.loads((Path(__file__).parent / "data/stac/upstream_layers.json").read_text())
EXPECT = {
    "awf:sentinel1": (pc.Sentinel1, "sentinel1"),
    "awf:sentinel2": (pc.Sentinel2, "sentinel2_l2a"),
    "burn-scar:sentinel2_l2a": (pc.Sentinel2, "sentinel2_l2a"),
    "forest_loss_driver_esrun:pre_landsat": (earth_search.LandsatOliTirs, "landsat"),
    "lfmc_base_s1_s2:sentinel2": (pc.Sentinel2, "sentinel2_l2a"),
    "nandi_inference:sentinel1_ascending": (pc.Sentinel1, "sentinel1"),
    "solar_farm:sentinel2": (gcp_sentinel2.Sentinel2, "sentinel2"),
    "landslide:pre_sentinel1": (earth_search.Sentinel1, "sentinel1"),
    "landslide:post_sentinel2": (pc.Sentinel2, "sentinel2_l2a"),
    "landslide:srtm": (hf_srtm.SRTM, "srtm"),
}


def parse(tmp_path: Path, key: str):
    """One upstream layer in a dataset.json of its own, under its own name."""
    name = key.split(":")[1]
    path = tmp_path / key.replace(":", "_") / "dataset.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({"layers": {name: LAYERS["layers"][key]}}))
    config, problems = load_dataset_config(path)
    assert config is not None and problems == []
    return config, config.layers[name]


def test_every_upstream_data_source_parses_unchanged(tmp_path):
    for key, (cls, modality) in EXPECT.items():
        _, layer = parse(tmp_path, key)
        assert type(layer.data_source.source) is cls and layer.modality == modality, key
    burn = parse(tmp_path, "burn-scar:sentinel2_l2a")[1].data_source
    assert burn.source.query == {"eo:cloud_cover": {"lt": 50}}
    assert burn.sort_by == "eo:cloud_cover" and burn.source.harmonize
    # rslearn drops max_cloud_cover for this source; Helios honours it as a query
    lfmc = parse(tmp_path, "lfmc_base_s1_s2:sentinel2")[1].data_source.source
    assert lfmc.query == {"eo:cloud_cover": {"lt": 50.0}}
    landsat = parse(tmp_path, "forest_loss_driver_esrun:pre_landsat")[1].data_source
    assert landsat.sort_by == "eo:cloud_cover" and landsat.source.cache_dir == "cache/landsat"
    s1 = parse(tmp_path, "nandi_inference:sentinel1_ascending")[1].data_source.source
    assert s1.query["sat:orbit_state"] == {"eq": "ascending"}
    for key, says in (
        ("geo:gse", "Google Earth Engine"),
        ("geo:sentinel2", "planetary_computer.Sentinel2"),
    ):
        config, _ = parse(tmp_path, key)
        assert says in config.unavailable[key.split(":")[1]]


@pytest.mark.parametrize("name", sorted(UPSTREAM))
def test_every_mapped_name_builds_a_helios_source(name):
    args = {"index_cache_dir": "cache"} if name.startswith("gcp_") else {}
    args = {"src_dir": "imagery"} if name.startswith("local_files") else args
    source, why = resolve_source(f"rslearn.data_sources.{name}", args, "t", problems := [])
    assert not why and not problems and UPSTREAM[name].startswith(HELIOS)
    assert type(source).__module__ + "." + type(source).__name__ == UPSTREAM[name]
    if isinstance(source, StacApi):
        assert source.endpoint.startswith("https://") and source.needs_network
        assert source.check(SourceContext(Path("."), None, ("B02",))) == []


def test_unknown_and_unsupported_names_say_what_to_use(tmp_path):
    for name, says in [
        ("rslearn.data_sources.google_earth_engine.GEE", "LocalFiles or StacItems"),
        ("rslp.satlas.data_sources.MonthlyAzureSentinel2", "planetary_computer.Sentinel2"),
        ("rslearn.data_sources.usgs_landsat.LandsatOliTirs", "planetary_computer.Sentinel2"),
    ]:
        source, why = resolve_source(name, {}, "t", [])
        assert isinstance(source, UnavailableSource) and says in why
    problems: list[str] = []
    assert resolve_source(StacApi.__module__ + ".StacApi", {"nope": 1}, "t", problems)[0] is None
    assert problems and "nope" in problems[0]


def test_stac_api_by_short_name_and_timedelta_timeouts():
    args = {"endpoint": "https://example.org/stac", "collection_name": "c", "timeout": "0:00:30"}
    source, _ = resolve_source("StacApi", args, "t", [])
    assert isinstance(source, StacApi) and source.http.timeout_s == 30
    source, _ = resolve_source("StacApi", {**args, "timeout": 5}, "t", [])
    assert isinstance(source, StacApi) and source.http.timeout_s == 5
