"""How far apart are a pretrained encoder and random inits on the demo tile labels?

The demo kNN task has 196 labelled samples (36 in the test split), so one split says little.
This study embeds every labelled sample once per model and reports kNN accuracy (k=20, the
sweep's protocol) on the val and test splits and leave-one-tile-out over all samples, for the
pretrained encoder, several random initialisations of the same architecture and any baselines;
how much of the pooled features' variance the top principal directions hold and how well each
tracks the cloud fraction; and, per 8 x 8 token, how well a ridge read-out of the token
features predicts the patch's cloud fraction (R^2 on the test split of demo-cloud-seg). Two
reference rows put the kNN numbers in scale: the z-scored band means of each sample, and the
true cloud fraction itself (as the vector (fraction, 0.3), so cosine similarity orders by it).

    python bench/knn_study.py runs/latent_mim_demo/encoder.pt --root demo_data --seeds 0 1 2 3 \
        --baseline galileo=tests/fixtures/galileo_nano
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from helios.data.modalities import MISSING_VALUE
from helios.data.normalize import Normalizer, NormMethod
from helios.evals.api import TaskSpec
from helios.evals.datasets.demo import DemoCloudDataset
from helios.evals.embed import extract_embeddings
from helios.evals.protocols import knn_predict
from helios.evals.run import EvalConfig, ModelSpec, load_model
from helios.nn.api import Encoder

PATCH = 8
"""Token side for the per-token read-out (the demo sweep's patch size)."""


class Study:
    """The demo splits, their labels, and the kNN scores of any [N, D] features."""

    def __init__(self, root: str) -> None:
        """Load the three splits of both demo tasks."""
        names = ("train", "val", "test")
        self.splits = [DemoCloudDataset(root, "demo-cloud-tiles", s) for s in names]
        self.seg = [DemoCloudDataset(root, "demo-cloud-seg", s) for s in ("train", "test")]
        self.task: TaskSpec = self.splits[0].task
        method = NormMethod(EvalConfig().norm_method)
        self.normalizer = Normalizer(self.splits[0].stats(), method=method)
        labels = self.splits[0].labels
        self.tiles = np.concatenate([np.asarray(labels.tile_ids)[ds.rows] for ds in self.splits])
        self.cloud = np.concatenate(
            [np.asarray(labels.cloud_fraction)[ds.rows] for ds in self.splits]
        )
        self.y = torch.as_tensor(
            np.concatenate([np.asarray(labels.classes)[ds.rows] for ds in self.splits])
        )
        n_train, n_val = len(self.splits[0]), len(self.splits[1])
        self.index = np.arange(len(self.tiles))
        self.train = self.index[:n_train]
        self.val = self.index[n_train : n_train + n_val]
        self.test = self.index[n_train + n_val :]

    def _accuracy(self, emb: Tensor, fit: np.ndarray, score: np.ndarray) -> float:
        pred = knn_predict(emb[fit], self.y[fit], emb[score], self.task, k=20).argmax(1)
        return float((pred == self.y[score]).float().mean())

    def knn(self, emb: Tensor) -> tuple[float, float, float]:
        """kNN accuracy on val, on test, and leave-one-tile-out over every sample."""
        loto = sum(
            self._accuracy(emb, self.index[self.tiles != t], self.index[self.tiles == t])
            * int((self.tiles == t).sum())
            for t in np.unique(self.tiles)
        ) / len(self.tiles)
        return (
            self._accuracy(emb, self.train, self.val),
            self._accuracy(emb, self.train, self.test),
            loto,
        )

    def principal(self, emb: Tensor) -> tuple[list[float], list[float]]:
        """Variance share of the top 3 directions of the normalized features, and abs(r) of
        each with the cloud fraction."""
        centred = F.normalize(emb, dim=-1)
        centred = centred - centred.mean(0)
        u, s, _ = torch.linalg.svd(centred, full_matrices=False)
        share = (s**2 / (s**2).sum())[:3].tolist()
        corr = [abs(float(np.corrcoef(u[:, i].numpy(), self.cloud)[0, 1])) for i in range(3)]
        return share, corr

    def embed(self, encoder: Encoder) -> Tensor:
        """Mean-pooled embeddings of every labelled sample, in split order."""
        parts = [
            extract_embeddings(encoder, ds, self.normalizer, PATCH, "mean", progress=False)[0]
            for ds in self.splits
        ]
        return torch.cat(parts)

    def token_r2(self, encoder: Encoder) -> float:
        """R^2 on the test split of a ridge read-out of each token's patch cloud fraction."""
        data = []
        for ds in self.seg:
            emb, y = extract_embeddings(
                encoder, ds, self.normalizer, PATCH, "mean", spatial=True, progress=False
            )
            b, h, w, _ = emb.shape
            y = y.float().reshape(b, h, PATCH, w, PATCH)
            valid = (y >= 0).float().sum((2, 4))
            fraction = (y == 1).float().sum((2, 4)) / valid.clamp_min(1)
            keep = valid > PATCH * PATCH / 2  # tokens at least half labelled
            data.append((emb[keep], fraction[keep]))
        (x_fit, y_fit), (x_test, y_test) = data
        mu, sd = x_fit.mean(0), x_fit.std(0) + 1e-6
        design = F.pad((x_fit - mu) / sd, (0, 1), value=1.0)
        ridge = design.T @ design + torch.eye(design.shape[1])
        weights = torch.linalg.solve(ridge, design.T @ y_fit)
        pred = F.pad((x_test - mu) / sd, (0, 1), value=1.0) @ weights
        return float(1 - ((pred - y_test) ** 2).sum() / ((y_test - y_test.mean()) ** 2).sum())

    def band_means(self) -> Tensor:
        """Per-sample Landsat band means over valid pixels, z-scored over all samples."""
        rows = []
        for ds in self.splits:
            for i in range(len(ds)):
                pixels = ds[i].sample.data["landsat"].reshape(-1, 11)
                rows.append(pixels[(pixels != MISSING_VALUE).all(1)].mean(0))
        means = torch.as_tensor(np.stack(rows))
        return (means - means.mean(0)) / means.std(0)


def row(cells: list[str]) -> None:
    """Print one markdown table row."""
    print("| " + " | ".join(cells) + " |", flush=True)


def main() -> None:
    """Print one row per model, then the two reference rows."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("encoder", help="an exported encoder.pt")
    ap.add_argument("--root", default="demo_data", help="the `helios data demo --out` folder")
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2, 3])
    ap.add_argument(
        "--baseline",
        action="append",
        default=[],
        metavar="KIND=PATH",
        help="also study a baseline with local weights (repeatable), e.g. galileo=DIR",
    )
    args = ap.parse_args()

    study = Study(args.root)
    specs = [ModelSpec("helios", args.encoder, "pretrained")]
    specs += [
        ModelSpec("helios-random", args.encoder, f"random seed {s}", seed=s) for s in args.seeds
    ]
    for item in args.baseline:
        kind, _, path = item.partition("=")
        specs.append(ModelSpec(kind, path, kind))  # type: ignore[arg-type]
    row(["model", "kNN val", "kNN test", "kNN leave-one-tile-out", "top-3 PC variance",
         "top-3 PC abs(r) with cloud fraction", "per-token cloud R^2"])  # fmt: skip
    row(["---"] * 7)
    for spec in specs:
        encoder, _, _ = load_model(spec)
        emb = study.embed(encoder)
        share, corr = study.principal(emb)
        row(
            [spec.name]
            + [f"{v:.3f}" for v in study.knn(emb)]
            + [" / ".join(f"{v:.2f}" for v in share), " / ".join(f"{c:.2f}" for c in corr)]
            + [f"{study.token_r2(encoder):.3f}"]
        )
    cloud = torch.as_tensor(study.cloud, dtype=torch.float32)[:, None]
    for name, feats in (
        ("reference: z-scored band means", study.band_means()),
        ("reference: true cloud fraction", torch.cat([cloud, torch.full_like(cloud, 0.3)], 1)),
    ):
        row([name] + [f"{v:.3f}" for v in study.knn(feats)] + ["", "", ""])


if __name__ == "__main__":
    main()
