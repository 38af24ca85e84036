"""Tiny random-init models for runner tests: an exported encoder and a project's model files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import yaml

from helios.data.normalize import Normalizer
from helios.nn.export import EncoderConfig, export_encoder
from helios.runner.predict.model import RunnerModel, RunnerTask

MODALITIES = ("sentinel2_l2a", "sentinel2")


def tiny_encoder(
    path: Path, modalities: Sequence[str] = MODALITIES, patch_size: int = 4, seed: int = 0
) -> Path:
    """Export a random-init encoder (16 wide, 1 block) reading `modalities`."""
    torch.manual_seed(seed)
    config = EncoderConfig(embed_dim=16, depth=1, num_heads=2, max_patch_size=8)
    encoder = config.build(list(modalities))
    return export_encoder(path, encoder, config, Normalizer(), patch_size=patch_size)


def write_model_files(
    project: Path,
    encoder_path: Path,
    task: RunnerTask = "segmentation",
    num_classes: int = 3,
    class_names: list[str] | None = None,
) -> Path:
    """Write checkpoint.ckpt (untrained) and model.yaml into a project folder."""
    RunnerModel.save_untrained(
        project / "checkpoint.ckpt", encoder_path, task, num_classes, class_names
    )
    init_args = {"encoder_path": str(encoder_path), "task": task, "num_classes": num_classes}
    model = {
        "model": {"class_path": "helios.runner.predict.model.RunnerModel", "init_args": init_args}
    }
    (project / "model.yaml").write_text(yaml.safe_dump(model, sort_keys=False))
    return project
