"""How far apart are a pretrained encoder and random inits on the demo tile labels?

The demo kNN task has 196 labelled samples (36 in the test split), so one split says little.
This study embeds every labelled sample once per model and reports kNN accuracy (k=20, the
sweep's protocol) on the val and test splits and leave-one-tile-out over all samples, for the
pretrained encoder and several random initialisations of the same architecture, plus how much
of the pooled features' variance the top principal directions hold and how well each tracks
the cloud fraction.

    python bench/knn_study.py runs/latent_mim_demo/encoder.pt --root demo_data --seeds 0 1 2 3 \
        --baseline galileo=../shared/fixtures/galileo_nano
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from helios.data.normalize import Normalizer, NormMethod
from helios.evals.datasets.demo import DemoCloudDataset
from helios.evals.embed import extract_embeddings
from helios.evals.protocols import knn_predict
from helios.evals.run import EvalConfig, ModelSpec, load_model


def main() -> None:
    """Print one row per model."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("encoder", help="an exported encoder.pt")
    ap.add_argument("--root", default="demo_data", help="the `helios data demo --out` folder")
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2, 3])
    ap.add_argument("--patch-size", type=int, default=8)
    ap.add_argument(
        "--baseline",
        action="append",
        default=[],
        metavar="KIND=PATH",
        help="also study a baseline with local weights (repeatable), e.g. galileo=DIR",
    )
    args = ap.parse_args()

    splits = [DemoCloudDataset(args.root, "demo-cloud-tiles", s) for s in ("train", "val", "test")]
    task = splits[0].task
    method = NormMethod(EvalConfig().norm_method)
    normalizer = Normalizer(splits[0].stats(), method=method)
    labels = splits[0].labels
    tiles = np.concatenate([np.asarray(labels.tile_ids)[ds.rows] for ds in splits])
    cloud = np.concatenate([np.asarray(labels.cloud_fraction)[ds.rows] for ds in splits])
    n_train, n_val = len(splits[0]), len(splits[1])
    index = np.arange(len(tiles))
    train, val, test = index[:n_train], index[n_train : n_train + n_val], index[n_train + n_val :]

    specs = [ModelSpec("helios", args.encoder, "pretrained")]
    specs += [
        ModelSpec("helios-random", args.encoder, f"random seed {s}", seed=s) for s in args.seeds
    ]
    print(
        "| model | kNN val | kNN test | kNN leave-one-tile-out | top-3 PC variance "
        "| top-3 PC abs(r) with cloud fraction |"
    )
    print("|---|---|---|---|---|---|")
    for item in args.baseline:
        kind, _, path = item.partition("=")
        specs.append(ModelSpec(kind, path, kind))  # type: ignore[arg-type]
    for spec in specs:
        encoder, _, _ = load_model(spec)
        parts = [
            extract_embeddings(encoder, ds, normalizer, args.patch_size, "mean", progress=False)
            for ds in splits
        ]
        emb = torch.cat([e for e, _ in parts])
        y = torch.cat([t for _, t in parts])

        def accuracy(fit: np.ndarray, score: np.ndarray, e=emb, y=y) -> float:
            pred = knn_predict(e[fit], y[fit], e[score], task, k=20).argmax(1)
            return float((pred == y[score]).float().mean())

        loto = sum(
            accuracy(index[tiles != t], index[tiles == t]) * int((tiles == t).sum())
            for t in np.unique(tiles)
        ) / len(tiles)
        val_acc, test_acc = accuracy(train, val), accuracy(train, test)
        centred = F.normalize(emb, dim=-1)
        centred = centred - centred.mean(0)
        u, s, _ = torch.linalg.svd(centred, full_matrices=False)
        share = (s**2 / (s**2).sum())[:3].tolist()
        corr = [abs(float(np.corrcoef(u[:, i].numpy(), cloud)[0, 1])) for i in range(3)]
        print(
            f"| {spec.name} | {val_acc:.3f} | {test_acc:.3f} | {loto:.3f} "
            f"| {' / '.join(f'{v:.2f}' for v in share)} | {' / '.join(f'{c:.2f}' for c in corr)} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
