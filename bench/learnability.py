"""Does `helios fit` teach an encoder anything? A study pretraining must win.

The data (`helios.data.synthetic.make_learnability_dataset`) are tiles of Sentinel-2,
Sentinel-1 and Landsat whose 8 classes share the same distribution of per-sample band means
and brightness; they differ only in what an encoder has to learn: how often the vegetation
greens up over the year (phenology), how its cells are arranged (texture) and whether the
radar and Landsat see the same field layout as Sentinel-2 (cross-sensor agreement). The study

1. writes the unlabelled training set and a labelled held-out set (balanced, 60 per class),
2. pretrains nano with `helios fit --config configs/latent_mim.yaml --config <out>/study.yaml`
   (the delta `STUDY_CONFIG`, written next to the run),
3. embeds the held-out samples with the pretrained encoder, four random inits of the same
   architecture, and Galileo nano's published weights, and scores kNN (k = 20, the sweep's
   protocol) and a linear probe on a fixed half/half split of them, plus kNN per factor, a
   linear read-out per factor (ridge on standardized embeddings, its penalty chosen by 5-fold
   cross-validation on the fit half: is the factor in the embedding at all, whatever its
   scale?), the effective rank of the embeddings, and the z-scored band means as a reference.

One command reproduces the table in docs/benchmarks.md (each step is skipped when its output
exists):

    python bench/learnability.py --galileo tests/fixtures/galileo_nano

A variant of the recipe is a YAML delta over `STUDY_CONFIG` (those of docs/benchmarks.md are in
bench/learnability_variants/), pretrained and scored in its own folder:

    python bench/learnability.py --out runs/learnability/gain --seeds \
        --delta bench/learnability_variants/gain.yaml
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import yaml
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, TensorDataset

from helios.data.dataset import H5SampleDataset
from helios.data.modalities import MISSING_VALUE
from helios.data.sample import LabeledSample
from helios.data.stats import compute_stats
from helios.data.synthetic import (
    LEARNABILITY_FACTORS,
    LEARNABILITY_MODALITIES,
    LearnabilityDataset,
    make_learnability_dataset,
)
from helios.evals.api import TaskSpec
from helios.evals.embed import extract_embeddings
from helios.evals.models import LoadedEncoder, ModelSpec, load_model
from helios.evals.protocols import LinearProbe, knn_predict

ROOT = Path(__file__).resolve().parents[1]
PATCH = 8
"""Patch size of every embedding (4 x 4 tokens per 32 px tile: one per cell)."""
TASK = TaskSpec(
    name="learnability",
    kind="classification",
    num_classes=8,
    class_names=tuple(f"p{c >> 2}t{(c >> 1) & 1}a{c & 1}" for c in range(8)),
    modalities=LEARNABILITY_MODALITIES,
)
STUDY_CONFIG: dict[str, Any] = {
    "model": {"init_args": {"predictor_depth": 2, "warmup_steps": 30}},
    "data": {
        "init_args": {
            "batch_size": 16,
            "patch_sizes": [8],
            "crop_tokens": [2, 4],
            "token_budget": 400,
            "max_timesteps": 12,
            "masking": {
                "class_path": "helios.data.masking.RandomTimeWithDecodeMasking",
                "init_args": {"encode_ratio": 0.5, "decode_ratio": 0.5, "random_probability": 0.5},
            },
            "num_views": 2,
            "val_samples": 0,
            "num_workers": 1,
        }
    },
    "trainer": {
        "max_steps": 300,
        "val_check_interval": None,
        "logger": False,
        "enable_progress_bar": False,
        "log_every_n_steps": 10,
    },
}
"""The pretraining delta over configs/latent_mim.yaml (data paths are added per run)."""


class Heldout(Dataset[LabeledSample]):
    """The labelled held-out samples (raw values, as benchmark readers give them)."""

    def __init__(self, data: LearnabilityDataset) -> None:
        """Open the held-out H5 directory; labels come from `data.labels`."""
        self.samples = H5SampleDataset(data.heldout, list(LEARNABILITY_MODALITIES))
        self.labels = data.labels
        self.factors = data.factors

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> LabeledSample:
        return LabeledSample(self.samples[index], np.asarray(self.labels[index]))


def build_data(out: Path, seed: int) -> LearnabilityDataset:
    """The study's data under `out/data` (written once) and its normalization stats."""
    done = out / "data" / "DONE"
    if not done.exists():
        make_learnability_dataset(out / "data", seed=seed)
        data = LearnabilityDataset.open(out / "data")
        compute_stats(data.train, progress=False).save(out / "data" / "norm_stats.json")
        done.touch()
    return LearnabilityDataset.open(out / "data")


def pretrain(out: Path, data: LearnabilityDataset, steps: int, variant: Path | None) -> Path:
    """Run `helios fit` with the study delta (then `variant`) unless the encoder exists."""
    run = out / "pretrain"
    encoder = run / "encoder.pt"
    if encoder.exists():
        return encoder
    config = yaml.safe_load(yaml.safe_dump(STUDY_CONFIG))
    config["data"]["init_args"]["h5_dir"] = str(data.train)
    config["data"]["init_args"]["norm_stats"] = str(out / "data" / "norm_stats.json")
    config["trainer"]["max_steps"] = steps
    delta = out / "study.yaml"
    delta.write_text(yaml.safe_dump(config, sort_keys=False))
    cmd = [sys.executable, "-m", "helios.cli", "fit", "--config", "configs/latent_mim.yaml"]
    cmd += ["--config", str(delta)]
    if variant is not None:
        text = variant.read_text()
        (out / "variant.yaml").write_text(text)
        cmd += ["--config", str(out / "variant.yaml")]
        # a delta may set its own number of steps
        steps = (yaml.safe_load(text) or {}).get("trainer", {}).get("max_steps", steps)
    cmd += ["--trainer.default_root_dir", str(run)]
    print("$", " ".join(cmd), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    print(f"pretraining: {steps} steps in {time.perf_counter() - start:.0f} s", flush=True)
    return encoder


@dataclass
class Scores:
    """One row of the table."""

    knn: float
    probe: float
    factors: list[float]
    linear: list[float]
    rank: float


class Study:
    """The held-out set, its fixed split, and the scores of any [N, D] features."""

    def __init__(self, data: LearnabilityDataset) -> None:
        """Split the held-out samples in halves, balanced per class."""
        self.heldout = Heldout(data)
        n = len(self.heldout)
        self.y = torch.as_tensor(self.heldout.labels)
        self.fit = np.flatnonzero((np.arange(n) // 8) % 2 == 0)
        self.test = np.flatnonzero((np.arange(n) // 8) % 2 == 1)

    def embed(self, model: LoadedEncoder) -> Tensor:
        """Mean-pooled embeddings of every held-out sample (the model's own normalization)."""
        emb, _ = extract_embeddings(
            model.encoder, self.heldout, model.normalizer, PATCH, "mean", progress=False
        )
        return emb

    def knn(self, emb: Tensor, y: Tensor, num_classes: int) -> float:
        """kNN accuracy (k = 20) on the test half, neighbours from the fit half."""
        task = TaskSpec("factor", "classification", num_classes, (), TASK.modalities)
        scores = knn_predict(emb[self.fit], y[self.fit], emb[self.test], task, k=20)
        return float((scores.argmax(1) == y[self.test]).float().mean())

    def probe(self, emb: Tensor, epochs: int = 50) -> float:
        """Test accuracy of `LinearProbe` (AdamW, cosine) trained on the fit half."""
        L.seed_everything(0, verbose=False)
        probe = LinearProbe(emb.shape[1], TASK, lr=1e-2)
        loaders = [
            DataLoader(TensorDataset(emb[idx], self.y[idx]), batch_size=32, shuffle=shuffle)
            for idx, shuffle in ((self.fit, True), (self.test, False))
        ]
        trainer = L.Trainer(
            max_epochs=epochs, accelerator="cpu", devices=1, logger=False,
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            num_sanity_val_steps=0, check_val_every_n_epoch=epochs,
        )  # fmt: skip
        trainer.fit(probe, loaders[0], loaders[1])
        trainer.test(probe, loaders[1], verbose=False)
        return float(probe.results["test"]["accuracy"])

    def ridge(self, emb: Tensor, y: Tensor) -> float:
        """Test accuracy of a ridge read-out of a binary factor from standardized embeddings.

        Standardized with the fit half's statistics, so a factor held in a low-variance
        direction counts as much as one in a high-variance direction; the penalty is chosen by
        5-fold cross-validation on the fit half.
        """
        x = emb.double()
        x = (x - x[self.fit].mean(0)) / x[self.fit].std(0).clamp_min(1e-8)
        x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
        t = 2.0 * y.double() - 1.0

        def solve(rows: np.ndarray, lam: float) -> Tensor:
            a = x[rows]
            eye = torch.eye(a.shape[1], dtype=a.dtype)
            return torch.linalg.solve(a.T @ a + lam * eye, a.T @ t[rows])

        def accuracy(w: Tensor, rows: np.ndarray) -> float:
            return float(((x[rows] @ w > 0).long() == y[rows]).double().mean())

        folds = np.array_split(self.fit, 5)
        lams = [1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0]
        cv = [
            np.mean([accuracy(solve(np.setdiff1d(self.fit, f), lam), f) for f in folds])
            for lam in lams
        ]
        return accuracy(solve(self.fit, lams[int(np.argmax(cv))]), self.test)

    def score(self, emb: Tensor) -> Scores:
        """kNN and probe accuracy, kNN per factor, effective rank."""
        factors = torch.as_tensor(self.heldout.factors)
        return Scores(
            knn=self.knn(emb, self.y, TASK.num_classes),
            probe=self.probe(emb),
            factors=[self.knn(emb, factors[:, i], 2) for i in range(len(LEARNABILITY_FACTORS))],
            linear=[self.ridge(emb, factors[:, i]) for i in range(len(LEARNABILITY_FACTORS))],
            rank=effective_rank(emb),
        )

    def band_means(self) -> Tensor:
        """Per-sample band means over valid pixels and timesteps, z-scored over samples."""
        rows = []
        for i in range(len(self.heldout)):
            sample = self.heldout.samples[i]
            parts = []
            for name in LEARNABILITY_MODALITIES:
                x = sample.data[name].reshape(-1, sample.data[name].shape[-1])
                x = np.where(x == MISSING_VALUE, np.nan, x)
                parts.append(np.nanmean(x, axis=0))
            rows.append(np.concatenate(parts))
        means = torch.as_tensor(np.stack(rows), dtype=torch.float32)
        return (means - means.mean(0)) / means.std(0).clamp_min(1e-6)


def effective_rank(emb: Tensor) -> float:
    """exp(entropy) of the normalized singular values of the centred embeddings (Roy 2007)."""
    centred = emb.double() - emb.double().mean(0)
    s = torch.linalg.svdvals(centred)
    p = s / s.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def models(encoder: Path, seeds: list[int], galileo: str | None) -> list[ModelSpec]:
    """The pretrained encoder, its random inits and Galileo nano (when its folder is given)."""
    specs = [ModelSpec("helios", str(encoder), "pretrained")]
    specs += [ModelSpec("helios-random", str(encoder), f"random init {s}", seed=s) for s in seeds]
    if galileo:
        specs.append(ModelSpec("galileo", galileo, "Galileo nano (published)"))
    return specs


def row(cells: list[str]) -> None:
    """Print one markdown table row."""
    print("| " + " | ".join(cells) + " |", flush=True)


def print_row(name: str, s: Scores) -> None:
    """One model's row."""
    cells = [f"{v:.3f}" for v in (s.knn, s.probe, *s.factors, *s.linear)]
    row([name, *cells, f"{s.rank:.1f}"])


def main() -> None:
    """Build the data, pretrain, and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/learnability", help="study folder (data, run)")
    ap.add_argument("--steps", type=int, default=STUDY_CONFIG["trainer"]["max_steps"])
    ap.add_argument("--seed", type=int, default=0, help="seed of the data")
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2, 3], help="random inits")
    ap.add_argument("--galileo", default=None, help="Galileo nano's published model folder")
    ap.add_argument("--encoder", default=None, help="score this encoder.pt instead of pretraining")
    ap.add_argument("--delta", type=Path, default=None, help="YAML delta over STUDY_CONFIG")
    args = ap.parse_args()

    out = Path(args.out)
    data = build_data(out, args.seed)
    encoder = Path(args.encoder) if args.encoder else pretrain(out, data, args.steps, args.delta)
    study = Study(data)
    factor_cols = [f"kNN {f}" for f in LEARNABILITY_FACTORS]
    factor_cols += [f"linear {f}" for f in LEARNABILITY_FACTORS]
    row(["model", "kNN (8 classes)", "linear probe", *factor_cols, "effective rank"])
    row(["---"] * (4 + len(factor_cols)))
    for spec in models(encoder, args.seeds, args.galileo):
        print_row(spec.label, study.score(study.embed(load_model(spec))))
    print_row("reference: z-scored band means", study.score(study.band_means()))
    print(f"chance: {1 / TASK.num_classes:.3f} (8 classes), 0.500 per factor", flush=True)


if __name__ == "__main__":
    main()
