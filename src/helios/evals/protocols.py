"""Evaluation protocols: kNN, linear probe and fine-tuning, with torchmetrics scores.

- `knn_predict`: k = 20 nearest neighbours by cosine similarity, votes weighted by
  exp(similarity / 0.07) as in DINO; multi-label votes average the neighbours' label vectors.
- `LinearProbe`: a linear layer on frozen embeddings; for segmentation one linear map per token
  whose logits are upsampled (bilinear) to pixels.
- `FineTune`: encoder + the same head, trained end to end; the encoder stays frozen for the first
  `freeze_fraction` of epochs, then trains at `lr * unfrozen_lr_scale`.

An eval config chooses a protocol by class (`EvalProtocol` subclasses: `KNNProtocol`,
`LinearProbeProtocol`, `FineTuneProtocol`, or one of your own by import path), or by the
short names in `PROTOCOLS` (knn, linear_probe, finetune).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassF1Score,
    MulticlassJaccardIndex,
    MultilabelAccuracy,
    MultilabelF1Score,
)

from helios.data.batching import LabeledCollate
from helios.data.normalize import Normalizer
from helios.data.sample import LabeledSample, MaskedBatch
from helios.evals.api import TaskSpec
from helios.evals.embed import extract_embeddings
from helios.nn.api import Encoder, PoolMode

PROTOCOLS: dict[str, str] = {
    "knn": "helios.evals.protocols.KNNProtocol",
    "linear_probe": "helios.evals.protocols.LinearProbeProtocol",
    "finetune": "helios.evals.protocols.FineTuneProtocol",
}
"""Short protocol names -> the import path of their `EvalProtocol`."""


def task_metrics(task: TaskSpec) -> MetricCollection:
    """The metrics of a task: accuracy, micro/macro F1 (classification), mIoU (segmentation)."""
    k = task.num_classes
    if task.kind == "multilabel":
        return MetricCollection(
            {
                "f1_micro": MultilabelF1Score(k, average="micro"),
                "f1_macro": MultilabelF1Score(k, average="macro"),
                "accuracy": MultilabelAccuracy(k, average="micro"),
                "f1_per_class": MultilabelF1Score(k, average="none"),
            }
        )
    ignore = task.ignore_index if task.kind == "segmentation" else None
    metrics: dict[str, Any] = {
        "accuracy": MulticlassAccuracy(k, average="micro", ignore_index=ignore),
        "f1_micro": MulticlassF1Score(k, average="micro", ignore_index=ignore),
        "f1_macro": MulticlassF1Score(k, average="macro", ignore_index=ignore),
        "f1_per_class": MulticlassF1Score(k, average="none", ignore_index=ignore),
    }
    if task.kind == "segmentation":
        metrics["miou"] = MulticlassJaccardIndex(k, average="macro", ignore_index=ignore)
        metrics["iou_per_class"] = MulticlassJaccardIndex(k, average="none", ignore_index=ignore)
    return MetricCollection(metrics)


def primary_metric(task: TaskSpec) -> str:
    """The score a sweep selects on: mIoU, micro F1 (multi-label) or accuracy."""
    return {"segmentation": "miou", "multilabel": "f1_micro"}.get(task.kind, "accuracy")


def to_jsonable(values: dict[str, Tensor]) -> dict[str, float | list[float]]:
    """Metric tensors to floats (per-class metrics to lists)."""
    return {k: v.tolist() if v.ndim else float(v) for k, v in values.items()}


@torch.no_grad()
def knn_predict(
    train: Tensor,
    train_y: Tensor,
    test: Tensor,
    task: TaskSpec,
    k: int = 20,
    temperature: float = 0.07,
) -> Tensor:
    """Class scores [N_test, K] of the test embeddings from their k nearest train embeddings."""
    if task.kind == "segmentation":
        raise ValueError("kNN is defined for classification tasks; use the linear probe")
    a = F.normalize(train.float(), dim=-1)
    scores = []
    targets = (
        train_y.float()
        if task.kind == "multilabel"
        else F.one_hot(train_y.long(), task.num_classes).float()
    )
    for chunk in torch.split(F.normalize(test.float(), dim=-1), 1024):
        sim = chunk @ a.T
        top, idx = sim.topk(min(k, a.shape[0]), dim=1)
        w = (top / temperature).exp()
        votes = (w.unsqueeze(-1) * targets[idx]).sum(1) / w.sum(1, keepdim=True)
        scores.append(votes)
    return torch.cat(scores)


def knn_eval(
    train: Tensor, train_y: Tensor, test: Tensor, test_y: Tensor, task: TaskSpec, k: int = 20
) -> dict[str, Any]:
    """Score kNN predictions with the task's metrics."""
    scores = knn_predict(train, train_y, test, task, k)
    metrics = task_metrics(task)
    target = test_y.long()
    metrics.update(scores if task.kind != "multilabel" else scores, target)
    return to_jsonable(metrics.compute())


class LinearHead(nn.Module):
    """Linear classifier on pooled embeddings, or per token for segmentation."""

    def __init__(self, embed_dim: int, task: TaskSpec) -> None:
        """Args: embed_dim: width of the embeddings; task: what to predict."""
        super().__init__()
        self.task = task
        self.norm = nn.BatchNorm1d(embed_dim, affine=False)
        self.linear = nn.Linear(embed_dim, task.num_classes)

    def forward(self, emb: Tensor, out_size: tuple[int, int] | None = None) -> Tensor:
        """[B, D] -> [B, K]; [B, h, w, D] -> [B, K, H, W] logits at `out_size`."""
        if emb.ndim == 2:
            return self.linear(self.norm(emb))
        b, h, w, d = emb.shape
        x = self.norm(emb.reshape(-1, d)).reshape(b, h, w, d)
        logits = self.linear(x).permute(0, 3, 1, 2)
        if out_size is not None and logits.shape[-2:] != out_size:
            logits = F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False)
        return logits


def task_loss(logits: Tensor, y: Tensor, task: TaskSpec) -> Tensor:
    """Cross-entropy (ignoring `ignore_index` pixels) or BCE for multi-label."""
    if task.kind == "multilabel":
        return F.binary_cross_entropy_with_logits(logits, y.float())
    return F.cross_entropy(logits, y.long(), ignore_index=task.ignore_index)


def adamw_cosine(
    params: Iterable[Any], lr: float, weight_decay: float, trainer: L.Trainer
) -> dict[str, Any]:
    """AdamW with a per-step cosine decay over the whole run (Lightning's optimizer config)."""
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    total = max(1, int(trainer.estimated_stepping_batches))
    return {
        "optimizer": opt,
        "lr_scheduler": {
            "scheduler": torch.optim.lr_scheduler.CosineAnnealingLR(opt, total),
            "interval": "step",
        },
    }


class _Scored(L.LightningModule):
    """Shared metric bookkeeping: train/val/test clones of the task's metrics."""

    def __init__(self, task: TaskSpec) -> None:
        super().__init__()
        self.task = task
        base = task_metrics(task)
        self.val_metrics = base.clone(prefix="val_")
        self.test_metrics = base.clone(prefix="test_")
        self.results: dict[str, Any] = {}

    def _logits(self, x: Any, y: Tensor) -> Tensor:
        raise NotImplementedError

    def training_step(self, batch: tuple[Any, Tensor], batch_idx: int) -> Tensor:
        """One optimisation step."""
        x, y = batch
        loss = task_loss(self._logits(x, y), y, self.task)
        self.log("train_loss", loss, prog_bar=True, batch_size=int(y.shape[0]))
        return loss

    def validation_step(self, batch: tuple[Any, Tensor], batch_idx: int) -> None:
        """Score a validation batch."""
        x, y = batch
        self._score(self._logits(x, y), y, "val")

    def test_step(self, batch: tuple[Any, Tensor], batch_idx: int) -> None:
        """Score a test batch."""
        x, y = batch
        self._score(self._logits(x, y), y, "test")

    def _score(self, logits: Tensor, y: Tensor, stage: str) -> None:
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        preds = logits.sigmoid() if self.task.kind == "multilabel" else logits
        metrics.update(preds, y.long())

    def _end(self, stage: str) -> None:
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        values = metrics.compute()
        self.results[stage] = to_jsonable(
            {k.removeprefix(f"{stage}_"): v for k, v in values.items()}
        )
        self.log_dict({k: v for k, v in values.items() if v.ndim == 0}, prog_bar=stage == "val")
        metrics.reset()

    def on_validation_epoch_end(self) -> None:
        """Compute and log validation metrics."""
        self._end("val")

    def on_test_epoch_end(self) -> None:
        """Compute and log test metrics."""
        self._end("test")


class LinearProbe(_Scored):
    """A linear head trained on precomputed (frozen) embeddings."""

    def __init__(
        self, embed_dim: int, task: TaskSpec, lr: float = 1e-3, weight_decay: float = 0.0
    ) -> None:
        """Args: embed_dim; task; lr (AdamW); weight_decay."""
        super().__init__(task)
        self.head = LinearHead(embed_dim, task)
        self.lr, self.weight_decay = lr, weight_decay

    def _logits(self, emb: Tensor, y: Tensor) -> Tensor:
        return self.head(emb, tuple(y.shape[-2:]) if self.task.kind == "segmentation" else None)

    def configure_optimizers(self) -> Any:
        """AdamW with a cosine schedule."""
        return adamw_cosine(self.head.parameters(), self.lr, self.weight_decay, self.trainer)


class FineTune(_Scored):
    """Encoder + linear head trained end to end, frozen encoder first."""

    def __init__(
        self,
        encoder: Encoder,
        task: TaskSpec,
        lr: float = 1e-3,
        freeze_fraction: float = 0.2,
        unfrozen_lr_scale: float = 0.1,
        pooling: PoolMode = "mean",
        weight_decay: float = 0.01,
    ) -> None:
        """Encoder + head; see the module docstring for the freeze-then-unfreeze schedule."""
        super().__init__(task)
        self.encoder = encoder
        self.head = LinearHead(encoder.embed_dim, task)
        self.lr, self.weight_decay = lr, weight_decay
        self.freeze_fraction, self.unfrozen_lr_scale = freeze_fraction, unfrozen_lr_scale
        self.pooling: PoolMode = pooling

    def forward(self, batch: MaskedBatch, out_size: tuple[int, int] | None = None) -> Tensor:
        """Logits of a batch."""
        spatial = self.task.kind == "segmentation"
        return self.head(self.encoder(batch, 0).pool(self.pooling, spatial), out_size)

    def _frozen(self) -> bool:
        max_epochs = self.trainer.max_epochs or 1
        return self.current_epoch < int(self.freeze_fraction * max_epochs)

    def on_train_epoch_start(self) -> None:
        """Freeze or unfreeze the encoder for this epoch."""
        frozen = self._frozen()
        self.encoder.requires_grad_(not frozen)
        self.encoder.train(not frozen)

    def _logits(self, batch: MaskedBatch, y: Tensor) -> Tensor:
        return self(batch, tuple(y.shape[-2:]) if self.task.kind == "segmentation" else None)

    def transfer_batch_to_device(
        self, batch: Any, device: torch.device, dataloader_idx: int
    ) -> Any:
        """Move a (MaskedBatch, labels) pair."""
        mb, y = batch
        return mb.to(device), y.to(device)

    def configure_optimizers(self) -> Any:
        """AdamW with a cosine schedule."""
        groups = [
            {"params": self.head.parameters(), "lr": self.lr},
            {"params": self.encoder.parameters(), "lr": self.lr * self.unfrozen_lr_scale},
        ]
        return adamw_cosine(groups, self.lr, self.weight_decay, self.trainer)


# -- protocols, as an eval config chooses them --------------------------------------------------


@dataclass
class ProtocolInputs:
    """What a protocol scores: an encoder, how to feed it, a task's splits and the settings."""

    encoder: Encoder
    normalizer: Normalizer
    """Applied to raw samples before the encoder (the model's or the benchmark's stats)."""
    patch_size: int
    task: TaskSpec
    train: Dataset[LabeledSample]
    val: Dataset[LabeledSample]
    test: Dataset[LabeledSample]
    lr: float
    epochs: int
    batch_size: int
    pooling: PoolMode
    k: int
    device: str
    """"cpu" or "cuda"."""
    progress: bool = True


class EvalProtocol(ABC):
    """How an encoder is scored on a task; `run` returns {"val": {...}, "test": {...}}."""

    ignores: ClassVar[frozenset[str]] = frozenset()
    """Settings of `EvalConfig` this protocol does not read (sweeps do not vary them)."""

    @abstractmethod
    def run(self, inputs: ProtocolInputs) -> dict[str, Any]:
        """The validation and test scores (metric name -> value, per-class lists allowed)."""


def embeddings(inputs: ProtocolInputs) -> dict[str, tuple[Tensor, Tensor]]:
    """Pooled embeddings and labels of the three splits (per token for segmentation)."""
    spatial = inputs.task.kind == "segmentation"
    return {
        name: extract_embeddings(
            inputs.encoder,
            ds,
            inputs.normalizer,
            inputs.patch_size,
            inputs.pooling,
            spatial,
            inputs.batch_size,
            device=inputs.device,
            progress=inputs.progress,
        )
        for name, ds in (("train", inputs.train), ("val", inputs.val), ("test", inputs.test))
    }


def trainer(inputs: ProtocolInputs) -> L.Trainer:
    """A quiet Lightning trainer for `inputs.epochs` epochs, validating at the end."""
    return L.Trainer(
        max_epochs=inputs.epochs,
        accelerator="gpu" if inputs.device == "cuda" else "cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        check_val_every_n_epoch=max(1, inputs.epochs),
    )


class KNNProtocol(EvalProtocol):
    """kNN on frozen embeddings (`knn_eval` with `k` neighbours)."""

    ignores = frozenset({"lr", "epochs"})

    def run(self, inputs: ProtocolInputs) -> dict[str, Any]:
        """Score val and test against the train embeddings."""
        emb = embeddings(inputs)
        return {
            s: knn_eval(*emb["train"], *emb[s], inputs.task, k=inputs.k) for s in ("val", "test")
        }


class LinearProbeProtocol(EvalProtocol):
    """A `LinearProbe` trained on frozen embeddings."""

    ignores = frozenset({"k"})

    def run(self, inputs: ProtocolInputs) -> dict[str, Any]:
        """Train on the train embeddings, score val and test."""
        emb = embeddings(inputs)
        probe = LinearProbe(emb["train"][0].shape[-1], inputs.task, lr=inputs.lr)
        loaders = {
            s: DataLoader(
                TensorDataset(*emb[s]), batch_size=inputs.batch_size, shuffle=s == "train"
            )
            for s in emb
        }
        fit = trainer(inputs)
        fit.fit(probe, loaders["train"], loaders["val"])
        fit.test(probe, loaders["test"], verbose=False)
        return probe.results


class FineTuneProtocol(EvalProtocol):
    """The encoder and a linear head trained end to end (`FineTune`)."""

    ignores = frozenset({"k"})

    def run(self, inputs: ProtocolInputs) -> dict[str, Any]:
        """Fine-tune on train, score val and test."""
        collate = LabeledCollate(
            inputs.encoder.modalities, inputs.normalizer, inputs.patch_size, fit="crop"
        )
        loaders: dict[str, DataLoader[Any]] = {
            s: DataLoader(
                ds, batch_size=inputs.batch_size, shuffle=s == "train", collate_fn=collate
            )
            for s, ds in (("train", inputs.train), ("val", inputs.val), ("test", inputs.test))
        }
        module = FineTune(inputs.encoder, inputs.task, lr=inputs.lr, pooling=inputs.pooling)
        fit = trainer(inputs)
        fit.fit(module, loaders["train"], loaders["val"])
        fit.test(module, loaders["test"], verbose=False)
        return module.results
