"""One evaluation run: a model, a task, a protocol and its settings -> scores in results.json.

`EvalConfig` is the whole recipe (the sweep generator writes one per run as YAML);
`run_eval(config)` executes it and writes `<output>/results.json` atomically, so a finished run
is recognisable and skipped by sweeps.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Subset, TensorDataset

from helios.data.normalize import Normalizer, NormMethod
from helios.evals.api import EvalDataset, Split
from helios.evals.embed import EvalCollate, extract_embeddings
from helios.evals.protocols import FineTune, LinearProbe, knn_eval, primary_metric
from helios.nn.api import Encoder

ModelKind = Literal["helios", "helios-random", "galileo", "panopticon", "dinov3-sat", "dinov3-web"]
Protocol = Literal["knn", "linear_probe", "finetune"]
NormMethodName = Literal[
    "norm_no_clip",
    "norm_no_clip_2_std",
    "norm_yes_clip",
    "norm_yes_clip_2_std",
    "norm_yes_clip_3_std",
    "norm_yes_clip_int",
    "norm_yes_clip_2_std_int",
    "norm_yes_clip_3_std_int",
    "norm_yes_clip_min_max_int",
    "standardize",
    "no_norm",
]
RESULTS = "results.json"


@dataclass
class ModelSpec:
    """Which encoder to evaluate."""

    kind: ModelKind = "helios"
    """helios (an exported encoder.pt), helios-random (same architecture, random weights),
    or a baseline."""
    path: str = ""
    """The encoder file (helios) or the baseline's local weights."""
    name: str = ""
    """Label in reports (default: kind + file name)."""
    seed: int = 0
    """helios-random only: the seed of the random weights. Compare a pretrained encoder with
    several seeds: on small tasks the spread between random inits can exceed the gap."""

    @property
    def label(self) -> str:
        """Display name."""
        return self.name or f"{self.kind}:{Path(self.path).name}" if self.path else self.kind


@dataclass
class TaskConfig:
    """Which benchmark, from where."""

    name: str = "demo-cloud-tiles"
    """A task name (see `helios.evals.tasks.TASKS`)."""
    root: str = "demo_data"
    """The benchmark's folder as downloaded (for demo tasks: `helios data demo --out`)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Extra reader options (e.g. {"modalities": ["sentinel1"]} for Sen1Floods11)."""


@dataclass
class EvalConfig:
    """A complete, reproducible evaluation recipe."""

    model: ModelSpec = field(default_factory=ModelSpec)
    task: TaskConfig = field(default_factory=TaskConfig)
    protocol: Protocol = "knn"
    lr: float = 1e-3
    """Learning rate (linear probe / fine-tune)."""
    epochs: int = 20
    batch_size: int = 32
    pooling: Literal["mean", "max"] = "mean"
    normalization: Literal["model", "dataset"] = "model"
    """The model's own normalization (checkpoint stats) or the benchmark's statistics."""
    norm_method: NormMethodName = "norm_no_clip_2_std"
    """Method used with dataset stats (FORMATS §3)."""
    label_fraction: float = 1.0
    """Fraction of the train split used (seeded subset)."""
    patch_size: int | None = None
    """Patch size (default: the model's)."""
    k: int = 20
    """Neighbours for kNN."""
    seed: int = 0
    device: str = "auto"
    output: str = "eval_runs/run"
    """Folder for results.json."""


def load_model(spec: ModelSpec) -> tuple[Encoder, Normalizer, int]:
    """The encoder, its own normalization and its default patch size."""
    if spec.kind in ("helios", "helios-random"):
        from helios.nn.export import load_encoder

        exported = load_encoder(spec.path)
        encoder = exported.encoder
        if spec.kind == "helios-random":
            with torch.random.fork_rng():
                torch.manual_seed(spec.seed)
                encoder = exported.config.build(exported.modalities)
        return encoder, exported.normalizer, exported.patch_size
    from helios.evals.baselines import load_baseline

    model = load_baseline(spec.kind, spec.path)
    return model, model.normalizer, model.default_patch_size


def _subset(ds: EvalDataset, fraction: float, seed: int) -> EvalDataset | Subset:
    if fraction >= 1.0:
        return ds
    n = max(1, int(round(len(ds) * fraction)))
    keep = np.sort(np.random.default_rng(seed).permutation(len(ds))[:n])
    return Subset(ds, keep.tolist())


def _device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def run_eval(config: EvalConfig, progress: bool = True) -> dict[str, Any]:
    """Execute `config`; returns the results and writes `<output>/results.json`."""
    from helios.evals.tasks import build_task

    start = time.perf_counter()
    L.seed_everything(config.seed, verbose=False)
    encoder, model_norm, default_patch = load_model(config.model)
    splits: dict[Split, EvalDataset] = {
        s: build_task(config.task.name, config.task.root, s, config.task.options)
        for s in ("train", "val", "test")
    }
    task = splits["train"].task
    if config.normalization == "model":
        normalizer = model_norm
    else:
        normalizer = Normalizer(splits["train"].stats(), method=NormMethod(config.norm_method))
    patch = config.patch_size or default_patch
    device = _device(config.device)
    train_ds = _subset(splits["train"], config.label_fraction, config.seed)
    results: dict[str, Any] = {}
    if config.protocol in ("knn", "linear_probe"):
        spatial = task.kind == "segmentation"
        emb = {}
        for name, ds in (("train", train_ds), ("val", splits["val"]), ("test", splits["test"])):
            emb[name] = extract_embeddings(
                encoder,
                ds,
                normalizer,
                patch,
                config.pooling,
                spatial,
                config.batch_size,
                device=device,
                progress=progress,
            )
        if config.protocol == "knn":
            for stage in ("val", "test"):
                results[stage] = knn_eval(*emb["train"], *emb[stage], task, k=config.k)
        else:
            probe = LinearProbe(emb["train"][0].shape[-1], task, lr=config.lr)
            loaders = {
                s: DataLoader(
                    TensorDataset(*emb[s]), batch_size=config.batch_size, shuffle=s == "train"
                )
                for s in emb
            }
            trainer = _trainer(config, device)
            trainer.fit(probe, loaders["train"], loaders["val"])
            trainer.test(probe, loaders["test"], verbose=False)
            results = probe.results
    else:
        collate = EvalCollate(encoder.modalities, normalizer, patch)
        tuned: dict[str, DataLoader[Any]] = {
            s: DataLoader(
                ds,
                batch_size=config.batch_size,
                shuffle=s == "train",
                collate_fn=collate,
            )
            for s, ds in (("train", train_ds), ("val", splits["val"]), ("test", splits["test"]))
        }
        module = FineTune(encoder, task, lr=config.lr, pooling=config.pooling)
        trainer = _trainer(config, device)
        trainer.fit(module, tuned["train"], tuned["val"])
        trainer.test(module, tuned["test"], verbose=False)
        results = module.results
    out = {
        "config": _plain(asdict(config)),
        "model": config.model.label,
        "task": task.name,
        "primary_metric": primary_metric(task),
        "val": results.get("val", {}),
        "test": results.get("test", {}),
        "train_samples": len(train_ds),
        "seconds": round(time.perf_counter() - start, 2),
    }
    write_results(Path(config.output), out)
    return out


def _trainer(config: EvalConfig, device: str) -> L.Trainer:
    return L.Trainer(
        max_epochs=config.epochs,
        accelerator="gpu" if device == "cuda" else "cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        check_val_every_n_epoch=max(1, config.epochs),
    )


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, NormMethod):
        return value.value
    return value


def write_results(folder: Path, payload: dict[str, Any]) -> Path:
    """Write `<folder>/results.json` atomically (its presence marks the run finished)."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{RESULTS}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, folder / RESULTS)
    return folder / RESULTS
