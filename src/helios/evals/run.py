"""One evaluation run: a model, a task, a protocol and its settings -> scores in results.json.

`EvalConfig` is the whole recipe, as plain data (the sweep generator writes one per run as
YAML); `run_eval(config)` executes it and writes `<output>/results.json` atomically, so a
finished run is recognisable and skipped by sweeps. Model, task and protocol are each a
`{class_path, init_args}` choice (`ClassSpec`) or its short form: `ModelSpec` (`kind:`),
`TaskConfig` (`name:`) and a protocol name.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from torch.utils.data import Subset

from helios.data.normalize import Normalizer, NormMethod
from helios.evals.api import EvalDataset, Split
from helios.evals.components import ClassSpec, build, located, resolve_alias
from helios.evals.models import (
    MODEL_KINDS,
    EncoderLoader,
    LoadedEncoder,
    ModelSpec,
    encoder_loader,
    load_model,
    model_label,
)
from helios.evals.protocols import (
    PROTOCOLS,
    EvalProtocol,
    ProtocolInputs,
    primary_metric,
)
from helios.evals.tasks import TaskConfig, TaskFactory, task_factory

RESULTS = "results.json"


@dataclass
class EvalConfig:
    """A complete, reproducible evaluation recipe."""

    model: ModelSpec | ClassSpec = field(default_factory=ModelSpec)
    """The encoder: `{kind, path, name}` (a short kind, `MODEL_KINDS`), or
    `{class_path, init_args}` of an `EncoderLoader` (init args include `path`)."""
    task: TaskConfig | ClassSpec = field(default_factory=TaskConfig)
    """The benchmark: `{name, root, options}` (a task name), or `{class_path, init_args}` of an
    `EvalDataset` subclass taking a `split` (init args without it)."""
    protocol: str | ClassSpec = "knn"
    """knn, linear_probe, finetune, or an `EvalProtocol` by import path or class_path."""
    lr: float = 1e-3
    """Learning rate (linear probe / fine-tune)."""
    epochs: int = 20
    batch_size: int = 32
    pooling: Literal["mean", "max"] = "mean"
    normalization: Literal["model", "dataset"] = "model"
    """The model's own normalization (checkpoint stats) or the benchmark's statistics."""
    norm_method: NormMethod = NormMethod.NORM_NO_CLIP_2_STD
    """Method used with dataset stats (FORMATS §3), by its value, e.g. norm_no_clip_2_std."""
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

    def __post_init__(self) -> None:
        self.norm_method = NormMethod(self.norm_method)  # a value read from YAML or a sweep


def protocol_spec(protocol: str | ClassSpec) -> ClassSpec:
    """The `{class_path, init_args}` form of a protocol name or spec."""
    if isinstance(protocol, ClassSpec):
        return protocol
    return ClassSpec(resolve_alias(protocol, PROTOCOLS, "protocol"))


def protocol_label(protocol: str | ClassSpec) -> str:
    """How reports name a protocol: its short name, or its class's name."""
    return protocol.rpartition(".")[2] if isinstance(protocol, str) else protocol.name


def eval_protocol(protocol: str | ClassSpec, where: str = "protocol") -> EvalProtocol:
    """The protocol object a config names."""
    with located(where):
        spec = protocol_spec(protocol)
    built: EvalProtocol = build(spec, EvalProtocol, where)
    return built


@dataclass
class Resolved:
    """The parts of an `EvalConfig`, built and checked (nothing loaded or read yet)."""

    loader: EncoderLoader
    task: TaskFactory
    protocol: EvalProtocol


def resolve(config: EvalConfig) -> Resolved:
    """Build the config's model loader, task opener and protocol, checking every init arg."""
    return Resolved(
        loader=encoder_loader(config.model),
        task=task_factory(config.task),
        protocol=eval_protocol(config.protocol),
    )


def _subset(ds: EvalDataset, fraction: float, seed: int) -> EvalDataset | Subset[Any]:
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
    start = time.perf_counter()
    parts = resolve(config)
    L.seed_everything(config.seed, verbose=False)
    model: LoadedEncoder = parts.loader.load()
    splits: dict[Split, EvalDataset] = {s: parts.task(split=s) for s in ("train", "val", "test")}
    task = splits["train"].task
    if config.normalization == "model":
        normalizer = model.normalizer
    else:
        normalizer = Normalizer(splits["train"].stats(), method=config.norm_method)
    train_ds = _subset(splits["train"], config.label_fraction, config.seed)
    inputs = ProtocolInputs(
        encoder=model.encoder,
        normalizer=normalizer,
        patch_size=config.patch_size or model.patch_size,
        task=task,
        train=train_ds,
        val=splits["val"],
        test=splits["test"],
        lr=config.lr,
        epochs=config.epochs,
        batch_size=config.batch_size,
        pooling=config.pooling,
        k=config.k,
        device=_device(config.device),
        progress=progress,
    )
    results = parts.protocol.run(inputs)
    out = {
        "config": config_dict(config),
        "model": model_label(config.model),
        "task": task.name,
        "protocol": protocol_label(config.protocol),
        "primary_metric": primary_metric(task),
        "val": results.get("val", {}),
        "test": results.get("test", {}),
        "train_samples": len(train_ds),
        "seconds": round(time.perf_counter() - start, 2),
    }
    write_results(Path(config.output), out)
    return out


def config_dict(config: EvalConfig) -> dict[str, Any]:
    """The config as plain JSON/YAML values (what `helios eval run --config` reads back)."""
    return _plain(asdict(config))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    return value


def write_results(folder: Path, payload: dict[str, Any]) -> Path:
    """Write `<folder>/results.json` atomically (its presence marks the run finished)."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{RESULTS}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, folder / RESULTS)
    return folder / RESULTS


__all__ = [
    "MODEL_KINDS",
    "PROTOCOLS",
    "ClassSpec",
    "EvalConfig",
    "ModelSpec",
    "TaskConfig",
    "config_dict",
    "load_model",
    "resolve",
    "run_eval",
    "write_results",
]
