"""Eval benchmark: embeddings/s for kNN extraction on the real demo tasks.

Usage: python bench/bench_eval.py [--demo demo_data] [--encoder runs/latent_mim_demo/encoder.pt]
(the wall time of the defaults-only demo sweep is printed by `time helios sweep
configs/sweeps/demo.yaml --defaults-only --jobs 2`).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from helios.evals.embed import extract_embeddings
from helios.evals.tasks import build_task
from helios.nn.export import load_encoder


def main() -> None:
    """Time embedding extraction for every split of demo-cloud-tiles."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--demo", default="demo_data")
    parser.add_argument("--encoder", default="runs/latent_mim_demo/encoder.pt")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--patch-size", type=int, nargs="+", default=[8, 4])
    args = parser.parse_args()
    exported = load_encoder(args.encoder)
    ds = build_task("demo-cloud-tiles", args.demo, "train")
    print(
        f"host: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; encoder {exported.config.embed_dim} wide, "
        f"{exported.config.depth} deep; {len(ds)} samples of 128 px Landsat-8"
    )
    print("\n| patch | tokens/sample | samples | seconds | embeddings/s |\n|---|---|---|---|---|")
    for patch in args.patch_size:
        extract_embeddings(
            exported.encoder,
            torch.utils.data.Subset(ds, range(8)),
            exported.normalizer,
            patch,
            batch_size=8,
            progress=False,
        )  # warm-up
        t0 = time.perf_counter()
        emb, _ = extract_embeddings(
            exported.encoder,
            ds,
            exported.normalizer,
            patch,
            batch_size=args.batch_size,
            progress=False,
        )
        dt = time.perf_counter() - t0
        tokens = (128 // patch) ** 2 * 2
        print(f"| {patch} | {tokens} | {emb.shape[0]} | {dt:.2f} | {emb.shape[0] / dt:.1f} |")


if __name__ == "__main__":
    main()
