"""Reading benchmark: H5SampleDataset against the floor of raw zstd decompression.

For 128 px and 256 px samples holding every pretraining modality (12 monthly steps), one
process reads each sample three ways, in the same run and from a warm page cache:

  raw      the compressed chunk bytes (`read_direct_chunk`) decompressed by `zstandard`
  h5py     `dataset[()]` through HDF5's filter pipeline (hdf5plugin's zstd)
  helios   `H5SampleDataset[i]`: h5py decode + float32 + nodata -> MISSING + time expansion

and reports samples/s and decoded MB/s (storage-dtype bytes) per process. The goal is
helios >= 70% of raw. Usage: python bench/bench_read.py [--samples 8] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import h5py
import zstandard

from helios.data.dataset import H5SampleDataset
from helios.data.h5 import tune_allocator
from helios.data.modalities import PRETRAINING_MODALITIES
from helios.data.synthetic import make_synthetic_dataset


def _raw_pass(paths: list[Path]) -> int:
    dctx = zstandard.ZstdDecompressor()
    total = 0
    for path in paths:
        with h5py.File(path, "r") as f:
            for ds in f.values():
                if not isinstance(ds, h5py.Dataset) or ds.chunks is None:
                    continue
                _, chunk = ds.id.read_direct_chunk((0,) * ds.ndim)
                total += len(dctx.decompress(chunk, max_output_size=ds.nbytes))
    return total


def _h5py_pass(paths: list[Path]) -> int:
    total = 0
    for path in paths:
        with h5py.File(path, "r") as f:
            for ds in f.values():
                if isinstance(ds, h5py.Dataset):
                    total += ds[()].nbytes
    return total


def _helios_pass(ds: H5SampleDataset) -> int:
    for i in range(len(ds)):
        ds[i]
    return 0


def _best_of(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def run(size: int, samples: int, out: Path, repeats: int) -> dict[str, float]:
    """Benchmark one sample size; returns rates."""
    syn = make_synthetic_dataset(
        out / f"s{size}",
        samples,
        size=size,
        num_timesteps=12,
        modalities=PRETRAINING_MODALITIES,
        missing_timestep_rate=0.1,
        missing_modality_rate=0.0,
        seed=size,
    )
    ds = H5SampleDataset(syn.root)
    paths = [ds.path(i) for i in range(len(ds))]
    decoded = _raw_pass(paths)  # also warms the page cache
    t_raw = _best_of(lambda: _raw_pass(paths), repeats)
    t_h5 = _best_of(lambda: _h5py_pass(paths), repeats)
    t_helios = _best_of(lambda: _helios_pass(ds), repeats)
    mb = decoded / 1e6
    on_disk = sum(p.stat().st_size for p in paths) / 1e6
    return {
        "size": size,
        "samples": samples,
        "decoded_mb_per_sample": mb / samples,
        "disk_mb_per_sample": on_disk / samples,
        "raw_sps": samples / t_raw,
        "h5py_sps": samples / t_h5,
        "helios_sps": samples / t_helios,
        "raw_mbps": mb / t_raw,
        "h5py_mbps": mb / t_h5,
        "helios_mbps": mb / t_helios,
        "ratio": t_raw / t_helios,
    }


def main() -> None:
    """Run the benchmark and print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    # As in PretrainDataModule's workers; the raw floor runs under the same allocator settings.
    tuned = tune_allocator()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        rows = [run(s, args.samples, out, args.repeats) for s in args.sizes]
    print(
        f"host: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"python {platform.python_version()}, h5py {h5py.__version__}, one process, "
        f"allocator tuned: {tuned}"
    )
    print("modalities:", ", ".join(PRETRAINING_MODALITIES), "(12 steps, synthetic)")
    print()
    print(
        "| px | MB decoded/sample | MB on disk/sample | raw zstd samples/s (MB/s) | "
        "h5py samples/s (MB/s) | Helios Dataset samples/s (MB/s) | Helios / raw |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['size']} | {r['decoded_mb_per_sample']:.1f} | {r['disk_mb_per_sample']:.1f} | "
            f"{r['raw_sps']:.1f} ({r['raw_mbps']:.0f}) | "
            f"{r['h5py_sps']:.1f} ({r['h5py_mbps']:.0f}) | "
            f"{r['helios_sps']:.1f} ({r['helios_mbps']:.0f}) | {r['ratio']:.0%} |"
        )


if __name__ == "__main__":
    main()
