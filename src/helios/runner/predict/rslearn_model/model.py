"""An rslearn fine-tune (model.yaml + checkpoint.ckpt) as a model of the prediction runner.

`RslearnModel.load(model_yaml, checkpoint)` rebuilds rslearn's module tree natively (the
OlmoEarth encoder from `olmoearth-pretrain-minimal`, the decoders from `modules`), with
rslearn's attribute names, and loads the Lightning checkpoint's `state_dict` into it strictly
(`torch.load(weights_only=True)`; any missing, unexpected or mis-shaped key is named). The
encoder's architecture is that of the published OlmoEarth size and version the checkpoint's
tensors have (or the config.json of the encoder folder model.yaml names, where it exists).

It offers what inference reads of a Helios `RunnerModel`: `kind`, `patch_size`, `modalities`,
`hparams["class_names"]` and `predict_step` returning (item ids, probabilities, valid patches).
Its crops come from `RslearnCropDataModule`, which reads the layers model.yaml names.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from torch import Tensor, nn

from helios.evals.baselines._common import load_strict
from helios.evals.baselines._olmoearth_load import (
    CONFIG_JSON,
    LEGACY_KEYS,
    build_encoder,
    folder_encoder_config,
    infer_preset,
)
from helios.runner.predict.rslearn_model.config import RslearnConfig, read_config
from helios.runner.predict.rslearn_model.data import Batch
from helios.runner.predict.rslearn_model.encoder import (
    MODALITY_NAMES,
    RasterInput,
    RslearnOlmoEarth,
)
from helios.runner.predict.rslearn_model.modules import HEAD_KINDS, build_module

logger = logging.getLogger(__name__)
ENCODER_PREFIX = "model.encoder.0.model."


class RslearnNet(nn.Module):
    """rslearn's MultiTaskModel (`decoders.<task>`) or SingleTaskModel (`decoder`) layout."""

    def __init__(self, encoder: RslearnOlmoEarth, decoder: list[nn.Module], task: str | None):
        """Args: the encoder; the task's decoder chain (ending in a head); the task or None."""
        super().__init__()
        self.encoder = nn.ModuleList([encoder])
        self.task = task
        if task is None:
            self.decoder = nn.ModuleList(decoder)
        else:
            self.decoders = nn.ModuleDict({task: nn.ModuleList(decoder)})

    def chain(self) -> nn.ModuleList:
        """The decoder modules of the task."""
        return self.decoder if self.task is None else self.decoders[self.task]  # type: ignore[return-value]

    def forward(self, inputs: list[dict[str, RasterInput]], image_size: tuple[int, int]) -> Tensor:
        """Probabilities: [B, K] (classification) or [B, K, H, W] (segmentation)."""
        out: Any = self.encoder[0](inputs)
        for module in self.chain():
            out = module(out, image_size)
        assert isinstance(out, Tensor)
        return out


class RslearnModel(L.LightningModule):
    """An rslearn fine-tune behind the runner's prediction surface."""

    def __init__(self, config: RslearnConfig, net: RslearnNet, source: str = "") -> None:
        """Wrap a built network (see `load`)."""
        super().__init__()
        self.model = net
        self.config = config
        self.source = source
        self.kind: Literal["classification", "segmentation"] = config.task.kind
        self.patch_size = config.encoder.patch_size
        self.modalities = [m for m in MODALITY_NAMES if m in config.inputs]
        names = list(config.task.class_names) or None
        self.save_hyperparameters({"class_names": names, "task": config.task.kind})

    @classmethod
    def load(
        cls,
        model_yaml: str | Path,
        checkpoint: str | Path,
        values: Mapping[str, str] | None = None,
        map_location: str | torch.device = "cpu",
    ) -> RslearnModel:
        """model.yaml's model with checkpoint.ckpt's weights, strictly, in eval mode.

        `values` fill model.yaml's templates (before the environment does).
        """
        ckpt = torch.load(Path(checkpoint), map_location=map_location, weights_only=True)
        state = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
        if not isinstance(state, dict) or not any(k.startswith(ENCODER_PREFIX) for k in state):
            raise ValueError(
                f"{checkpoint}: not an rslearn OlmoEarth fine-tune checkpoint "
                f"(no state_dict keys under {ENCODER_PREFIX})"
            )
        encoder = {
            k.removeprefix(ENCODER_PREFIX): v
            for k, v in state.items()
            if k.startswith(ENCODER_PREFIX) and k.removeprefix(ENCODER_PREFIX) not in LEGACY_KEYS
        }
        width = encoder.get("norm.weight")
        filled = {"ENCODER_EMBEDDING_SIZE": str(0 if width is None else int(width.shape[0]))}
        config = read_config(model_yaml, {**filled, **(values or {})})
        arch = _architecture(config, encoder, str(checkpoint))
        wrapper = RslearnOlmoEarth(
            build_encoder(arch), config.encoder.patch_size, config.encoder.use_legacy_timestamps
        )
        decoder = [
            build_module(c, f"{model_yaml}: decoder {i}") for i, c in enumerate(config.decoder)
        ]
        last = config.decoder[-1].class_path if config.decoder else ""
        if HEAD_KINDS.get(last) != config.task.kind:
            raise ValueError(
                f"{model_yaml}: the {config.task.kind} task's decoder must end in its head "
                f"(ClassificationHead / SegmentationHead), got {last or 'nothing'}"
            )
        net = RslearnNet(wrapper, decoder, config.task.name if config.multi_task else None)
        model = cls(config, net, str(checkpoint))
        kept = {k: v for k, v in state.items() if k.removeprefix(ENCODER_PREFIX) not in LEGACY_KEYS}
        load_strict(model, kept, str(checkpoint))
        for skipped in config.skipped_transforms:
            logger.info("%s: %s is a training transform, not applied", model_yaml, skipped)
        return model.eval()

    def forward(self, inputs: list[dict[str, RasterInput]], image_size: tuple[int, int]) -> Tensor:
        """Class probabilities of the task (see `RslearnNet.forward`)."""
        return self.model(inputs, image_size)

    def predict_step(self, batch: Batch, batch_idx: int) -> tuple[Tensor, Tensor, Tensor]:
        """(item ids, probabilities, valid patches bool [B, h, w]) of a batch of crops."""
        inputs, ids, inside = batch
        moved = [
            {k: RasterInput(v.image.to(self.device), v.time_ranges) for k, v in inp.items()}
            for inp in inputs
        ]
        size = (int(inside.shape[1]), int(inside.shape[2]))
        probs = self(moved, size)
        scales = self.config.task.prob_scales
        if scales is not None:
            probs = (
                probs * torch.tensor(scales, device=probs.device, dtype=probs.dtype)[:, None, None]
            )
        if self.kind == "segmentation" and tuple(probs.shape[-2:]) != size:
            raise ValueError(
                f"the segmentation decoder outputs {tuple(probs.shape[-2:])} per crop, not the "
                f"crop's {size} pixels"
            )
        p = self.patch_size
        b, h, w = inside.shape
        valid = inside.reshape(b, h // p, p, w // p, p).any(dim=4).any(dim=2)
        return ids, probs.float(), valid


def _architecture(config: RslearnConfig, encoder: dict[str, Tensor], source: str) -> dict[str, Any]:
    """The encoder's config: the named encoder folder's config.json, else the tensors'."""
    hint = config.encoder.weights_hint
    if hint and (Path(hint).expanduser() / CONFIG_JSON).is_file():
        return folder_encoder_config(Path(hint).expanduser())
    return infer_preset(encoder, source)
