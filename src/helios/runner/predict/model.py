"""The model of a runner project: an exported encoder plus a task head (`RunnerModel`).

A project's `model.yaml` names it in LightningCLI form and `checkpoint.ckpt` holds its weights::

    model:
      class_path: helios.runner.predict.model.RunnerModel
      init_args: {encoder_path: runs/latent_mim_demo/encoder.pt, task: segmentation,
                  num_classes: 3}

`encoder_path` is needed only to start training (fine-tuning). It is an exported Helios encoder,
or, with `encoder_format: olmoearth`, published or trained OlmoEarth weights (a release bundle's
folder or its `weights.pth`, an olmo-core checkpoint folder, or a hub id found in the local
Hugging Face cache; `olmoearth_size` / `olmoearth_version` are checked against them)::

    init_args: {encoder_path: models/OlmoEarth-v1-Nano/weights.pth, encoder_format: olmoearth,
                olmoearth_size: nano, task: classification, num_classes: 6}

The encoder's architecture, modalities, patch size and normalization (OlmoEarth: its own
published statistics) are written into every checkpoint (`helios_encoder`), so
`RunnerModel.load_for_inference(checkpoint)` rebuilds the model from the checkpoint alone,
with `torch.load(weights_only=True)` and a strict state dict. Hyperparameters are plain
values only, for the same reason.

Training reuses the eval protocol `FineTune` (linear head, torchmetrics, encoder frozen for
the first `freeze_fraction` of epochs, then trained at `lr * unfrozen_lr_scale`). The
`embedding` task has no head and is not trained: it returns per-patch embeddings, and its
"checkpoint" is made by `RunnerModel.save_untrained`.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import yaml
from torch import Tensor

from helios.data.normalize import Normalizer
from helios.data.sample import MaskedBatch, MaskValue
from helios.evals.api import TaskSpec
from helios.evals.baselines.olmoearth import OlmoEarthEncoder, OlmoEarthSize, OlmoEarthVersion
from helios.evals.protocols import FineTune, LinearHead
from helios.nn.api import Encoder, PoolMode, TokensAndMasks
from helios.nn.export import EncoderConfig, load_encoder

RunnerTask = Literal["segmentation", "classification", "embedding"]
EncoderFormat = Literal["helios", "olmoearth"]
OLMOEARTH = "olmoearth"
"""`helios_encoder["family"]` of checkpoints whose encoder is OlmoEarth (absent: Helios's)."""
CHECKPOINT_KEY = "helios_encoder"
"""Checkpoint entry holding the encoder's config, modalities, patch size and normalization."""
MODEL_CLASS_PATHS = (
    "helios.runner.predict.model.RunnerModel",
    "helios.runner.model.RunnerModel",  # before the runner's subpackages (0.1)
    "helios.runner.RunnerModel",
    "RunnerModel",
)


class _Unbuilt(Encoder):
    """Stands in for the encoder until a checkpoint says which one to build."""

    embed_dim = 1
    modalities: tuple[str, ...] = ()

    def forward(self, batch: MaskedBatch, view: int = 0) -> TokensAndMasks:
        raise RuntimeError(
            "RunnerModel has no encoder yet: give encoder_path, or load a checkpoint with "
            "RunnerModel.load_for_inference(path)"
        )


class RunnerModel(FineTune):
    """Exported encoder + linear head for segmentation or classification, or embeddings alone.

    `forward(batch)` gives segmentation logits [B, K, H, W] on the batch's 10 m pixel grid
    (H = h * patch size), classification logits [B, K], or per-patch embeddings [B, D, h, w]
    for the `embedding` task. Training batches are `(MaskedBatch, labels)` as made by
    `helios.data.batching.LabeledCollate`; `val_*` / `test_*` metrics are accuracy and F1, plus
    mIoU for segmentation (pixels equal to `ignore_index` are not scored).
    """

    def __init__(
        self,
        encoder_path: str | None = None,
        task: RunnerTask = "segmentation",
        num_classes: int = 2,
        class_names: list[str] | None = None,
        patch_size: int | None = None,
        lr: float = 1e-3,
        freeze_fraction: float = 0.2,
        unfrozen_lr_scale: float = 0.1,
        pooling: Literal["mean", "max"] = "mean",
        ignore_index: int = 255,
        encoder_format: EncoderFormat = "helios",
        olmoearth_size: OlmoEarthSize | None = None,
        olmoearth_version: OlmoEarthVersion | None = None,
    ) -> None:
        """Create the model.

        Args:
            encoder_path: An exported encoder (`encoder.pt`, `helios.nn.export`), or OlmoEarth
                weights with `encoder_format: olmoearth`; its normalizer and patch size are
                adopted. Leave out when loading a checkpoint.
            task: "segmentation" (per pixel), "classification" (per window or crop) or
                "embedding" (per-patch embeddings; no head, not trainable).
            num_classes: Number of classes K; class k is class value k of the results.
            class_names: Optional names of the classes, in class order.
            patch_size: Patch size in 10 m pixels (default: the encoder's).
            lr: Learning rate of the head.
            freeze_fraction: Fraction of `max_epochs` during which the encoder stays frozen.
            unfrozen_lr_scale: Encoder learning rate as a fraction of `lr` once unfrozen.
            pooling: How tokens of one patch (timesteps, band sets) are pooled.
            ignore_index: Segmentation label value that is neither trained on nor scored.
            encoder_format: What `encoder_path` is: "helios" (an exported Helios encoder) or
                "olmoearth" (OlmoEarth weights, run by olmoearth-pretrain-minimal; patch size
                4 unless set).
            olmoearth_size: OlmoEarth only: the size the weights must be (nano ... large).
            olmoearth_version: OlmoEarth only: the version they must be (v1 ... v1.3).

        """
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class_names for num_classes={num_classes}")
        if task != "embedding" and num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        spec = TaskSpec(
            name="runner",
            kind="classification" if task == "embedding" else task,
            num_classes=max(2, num_classes),
            class_names=tuple(class_names or [str(k) for k in range(num_classes)]),
            modalities=(),
            ignore_index=ignore_index,
        )
        pool: PoolMode = pooling
        super().__init__(_Unbuilt(), spec, lr, freeze_fraction, unfrozen_lr_scale, pool)
        self.save_hyperparameters()
        self.kind: RunnerTask = task
        self.normalizer = Normalizer()
        self.encoder_config = EncoderConfig()
        self.olmoearth: dict[str, Any] | None = None
        """The OlmoEarth encoder's description (`OlmoEarthEncoder.describe`), else None."""
        self.modalities: list[str] = []
        self.patch_size = int(patch_size or 0)
        if encoder_path is not None and encoder_format == OLMOEARTH:
            oe = OlmoEarthEncoder.from_pretrained(encoder_path, olmoearth_size, olmoearth_version)
            self._build_olmoearth(oe, int(patch_size or oe.default_patch_size), oe.normalizer)
        elif encoder_path is not None:
            exported = load_encoder(encoder_path)
            self._build(
                exported.config,
                exported.modalities,
                int(patch_size or exported.patch_size),
                exported.normalizer,
                exported.encoder,
            )

    # -- building ------------------------------------------------------------------------
    @property
    def is_built(self) -> bool:
        """Whether an encoder was loaded (from `encoder_path` or a checkpoint)."""
        return not isinstance(self.encoder, _Unbuilt)

    def _build(
        self,
        config: EncoderConfig,
        modalities: list[str],
        patch_size: int,
        normalizer: Normalizer,
        encoder: Encoder | None = None,
    ) -> None:
        if not 1 <= patch_size <= config.max_patch_size:
            raise ValueError(f"patch_size {patch_size} outside 1..{config.max_patch_size}")
        self.encoder_config = config
        self.olmoearth = None
        self._adopt(encoder if encoder is not None else config.build(modalities), patch_size)
        self.modalities = list(modalities)
        self.normalizer = normalizer

    def _build_olmoearth(
        self, encoder: OlmoEarthEncoder, patch_size: int, normalizer: Normalizer
    ) -> None:
        if not 1 <= patch_size <= encoder.max_patch_size:
            raise ValueError(f"patch_size {patch_size} outside 1..{encoder.max_patch_size}")
        self.olmoearth = encoder.describe()
        self._adopt(encoder, patch_size)
        self.modalities = list(encoder.modalities)
        self.normalizer = normalizer

    def _adopt(self, encoder: Encoder, patch_size: int) -> None:
        # loaded encoders are in eval mode; modules start in train mode, as usual
        self.encoder = encoder.train()
        self.patch_size = patch_size
        if self.kind == "embedding":
            self.head = None  # type: ignore[assignment]
        else:
            self.head = LinearHead(self.encoder.embed_dim, self.task)

    def encoder_metadata(self) -> dict[str, Any]:
        """The `helios_encoder` checkpoint entry (plain values only)."""
        if not self.is_built:
            raise RuntimeError("RunnerModel has no encoder to describe")
        if self.olmoearth is not None:
            return {
                "family": OLMOEARTH,
                "olmoearth": self.olmoearth,
                "modalities": list(self.modalities),
                "patch_size": int(self.patch_size),
                "normalization": self.normalizer.to_dict(),
            }
        return {
            "config": asdict(self.encoder_config),
            "modalities": list(self.modalities),
            "patch_size": int(self.patch_size),
            "normalization": self.normalizer.to_dict(),
        }

    def _build_from_metadata(self, meta: dict[str, Any]) -> None:
        if meta.get("family") == OLMOEARTH:
            encoder = OlmoEarthEncoder.from_description(meta["olmoearth"])
            normalizer = Normalizer.from_dict(meta["normalization"])
            self._build_olmoearth(encoder, int(meta["patch_size"]), normalizer)
            return
        self._build(
            EncoderConfig(**meta["config"]),
            list(meta["modalities"]),
            int(meta["patch_size"]),
            Normalizer.from_dict(meta["normalization"]),
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store what rebuilding the model needs besides the hyperparameters."""
        checkpoint[CHECKPOINT_KEY] = self.encoder_metadata()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Build the encoder from the checkpoint when none was loaded; adopt its normalizer."""
        meta = checkpoint.get(CHECKPOINT_KEY)
        if meta is None:
            raise ValueError(f"checkpoint has no {CHECKPOINT_KEY!r} entry: not a RunnerModel's")
        if not self.is_built:
            self._build_from_metadata(meta)
        else:
            self.normalizer = Normalizer.from_dict(meta["normalization"])
            self.patch_size = int(meta["patch_size"])

    @classmethod
    def load_for_inference(
        cls,
        checkpoint_path: str | Path,
        model_yaml: str | Path | None = None,
        map_location: str | torch.device = "cpu",
    ) -> RunnerModel:
        """Rebuild a model from its checkpoint alone (no encoder.pt needed), in eval mode.

        Args:
            checkpoint_path: A RunnerModel checkpoint (`checkpoint.ckpt`).
            model_yaml: Optional model.yaml; its `init_args` override the checkpoint's
                hyperparameters (except `encoder_path`, which is never read).
            map_location: Where to load the tensors.

        """
        ckpt = torch.load(Path(checkpoint_path), map_location=map_location, weights_only=True)
        if not isinstance(ckpt, dict) or CHECKPOINT_KEY not in ckpt or "state_dict" not in ckpt:
            raise ValueError(f"{checkpoint_path}: not a RunnerModel checkpoint")
        hparams = dict(ckpt.get("hyper_parameters") or {})
        if model_yaml is not None:
            hparams.update(read_model_yaml(model_yaml))
        hparams["encoder_path"] = None
        model = cls(**hparams)
        model._build_from_metadata(ckpt[CHECKPOINT_KEY])
        model.load_state_dict(ckpt["state_dict"], strict=True)
        return model.eval()

    @classmethod
    def save_untrained(
        cls,
        path: str | Path,
        encoder_path: str | Path,
        task: RunnerTask = "embedding",
        num_classes: int = 2,
        class_names: list[str] | None = None,
        patch_size: int | None = None,
        pooling: Literal["mean", "max"] = "mean",
        encoder_format: EncoderFormat = "helios",
    ) -> Path:
        """Write a Lightning-format checkpoint of an untrained model (e.g. for `embedding`).

        The file loads with `load_for_inference` and with `RunnerModel.load_from_checkpoint`.
        `encoder_format: olmoearth` makes OlmoEarth embeddings from its published weights.
        """
        model = cls(
            encoder_path=str(encoder_path),
            task=task,
            num_classes=num_classes,
            class_names=class_names,
            patch_size=patch_size,
            pooling=pooling,
            encoder_format=encoder_format,
        )
        ckpt: dict[str, Any] = {
            "epoch": 0,
            "global_step": 0,
            "pytorch-lightning_version": L.__version__,
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "hyper_parameters": dict(model.hparams),
        }
        model.on_save_checkpoint(ckpt)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        torch.save(ckpt, tmp)
        os.replace(tmp, path)
        return path

    # -- forward -------------------------------------------------------------------------
    def forward(self, batch: MaskedBatch, out_size: tuple[int, int] | None = None) -> Tensor:
        """Logits or embeddings of a batch (shapes in the class docstring).

        `out_size` overrides the segmentation logits' size (default: h * p, w * p).
        """
        spatial = self.kind != "classification"
        emb = self.encoder(batch, 0).pool(self.pooling, spatial)
        if self.kind == "embedding":
            return emb.permute(0, 3, 1, 2)
        if self.kind == "segmentation" and out_size is None:
            p = batch.patch_size
            out_size = (emb.shape[1] * p, emb.shape[2] * p)
        logits: Tensor = self.head(emb, out_size)
        return logits

    def predict_step(self, batch: tuple[MaskedBatch, Tensor], batch_idx: int) -> Any:
        """(item ids, outputs, valid) of a prediction batch.

        Outputs are class probabilities (softmax of `forward`) or embeddings; `valid` is bool
        [B, h, w], True where a patch has at least one encoded token (others had no data).
        """
        mb, ids = batch
        out = self(mb)
        if self.kind != "embedding":
            out = out.softmax(dim=1)
        return ids, out.float(), token_validity(mb, self.modalities)

    def on_train_epoch_start(self) -> None:
        """Refuse to train the embedding task, else freeze or unfreeze the encoder."""
        if self.kind == "embedding":
            raise RuntimeError("the embedding task has no head to train")
        super().on_train_epoch_start()


def token_validity(batch: MaskedBatch, modalities: list[str]) -> Tensor:
    """Patches (bool [B, h, w]) where any spatial modality has an ENCODER token."""
    grids = [
        m
        for name, m in batch.masks[0].items()
        if name in modalities and m.shape[1] * m.shape[2] > 1
    ] or [m for name, m in batch.masks[0].items() if name in modalities]
    if not grids:
        raise ValueError(f"the batch holds none of the model's modalities {modalities}")
    return torch.stack([(m == MaskValue.ENCODER).flatten(3).any(-1) for m in grids]).any(0)


def read_model_yaml(path: str | Path) -> dict[str, Any]:
    """The `init_args` of a RunnerModel in a LightningCLI-style model.yaml.

    Accepts `{model: {class_path, init_args}}`, or `{class_path, init_args}` alone. The init
    args are checked against `RunnerModel`'s signature by jsonargparse.

    Raises:
        ValueError: the file does not describe a RunnerModel, or its arguments are invalid.

    """
    from jsonargparse import ArgumentParser

    raw = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping")
    section = raw.get("model", raw)
    if not isinstance(section, dict):
        raise ValueError(f"{path}: `model` must be a mapping with class_path and init_args")
    class_path = section.get("class_path", MODEL_CLASS_PATHS[0])
    if class_path not in MODEL_CLASS_PATHS:
        raise ValueError(
            f"{path}: model class_path {class_path!r} is not supported; use {MODEL_CLASS_PATHS[0]}"
        )
    init_args = dict(section.get("init_args") or {})
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(RunnerModel, "model")
    try:
        parsed = parser.parse_object({"model": init_args})
    except Exception as err:  # jsonargparse raises several types; all are config errors
        msg = " ".join(str(err).split())
        raise ValueError(f"{path}: invalid RunnerModel init_args: {msg}") from err
    out: dict[str, Any] = dict(vars(parsed.model))
    return {k: v for k, v in out.items() if k in init_args}
