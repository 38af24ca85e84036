"""Evaluation protocols: kNN, linear probe and fine-tuning, with torchmetrics scores.

- `knn_predict`: k = 20 nearest neighbours by cosine similarity, votes weighted by
  exp(similarity / 0.07) as in DINO; multi-label votes average the neighbours' label vectors.
- `LinearProbe`: a linear layer on frozen embeddings; for segmentation one linear map per token
  whose logits are upsampled (bilinear) to pixels.
- `FineTune`: encoder + the same head, trained end to end; the encoder stays frozen for the first
  `freeze_fraction` of epochs, then trains at `lr * unfrozen_lr_scale`.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassF1Score,
    MulticlassJaccardIndex,
    MultilabelAccuracy,
    MultilabelF1Score,
)

from helios.data.sample import MaskedBatch
from helios.evals.api import TaskSpec
from helios.nn.api import Encoder, PoolMode


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
        opt = torch.optim.AdamW(self.head.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        return {
            "optimizer": opt,
            "lr_scheduler": {
                "scheduler": torch.optim.lr_scheduler.CosineAnnealingLR(opt, total),
                "interval": "step",
            },
        }


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
        opt = torch.optim.AdamW(
            [
                {"params": self.head.parameters(), "lr": self.lr},
                {"params": self.encoder.parameters(), "lr": self.lr * self.unfrozen_lr_scale},
            ],
            weight_decay=self.weight_decay,
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        return {
            "optimizer": opt,
            "lr_scheduler": {
                "scheduler": torch.optim.lr_scheduler.CosineAnnealingLR(opt, total),
                "interval": "step",
            },
        }
