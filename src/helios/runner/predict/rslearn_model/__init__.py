"""rslearn fine-tunes (model.yaml + checkpoint.ckpt) run natively by the prediction runner.

Helios reads rslearn's model.yaml (`config`), rebuilds its modules with rslearn's parameter
names (`modules`, `encoder`: OlmoEarth from `olmoearth-pretrain-minimal`), loads the
checkpoint strictly (`model`) and reads the inputs model.yaml names from the rslearn-layout
windows (`data`). rslearn itself is not needed (docs/architecture.md, "rslearn models").
"""

from helios.runner.predict.rslearn_model.config import (
    SUPPORTED,
    RslearnConfig,
    UnsupportedRslearnConfig,
    is_rslearn_model_yaml,
    read_config,
)
from helios.runner.predict.rslearn_model.data import RslearnCropDataModule, RslearnCropDataset
from helios.runner.predict.rslearn_model.encoder import RasterInput, RslearnOlmoEarth
from helios.runner.predict.rslearn_model.model import RslearnModel, RslearnNet

__all__ = [
    "SUPPORTED",
    "RasterInput",
    "RslearnConfig",
    "RslearnCropDataModule",
    "RslearnCropDataset",
    "RslearnModel",
    "RslearnNet",
    "RslearnOlmoEarth",
    "UnsupportedRslearnConfig",
    "is_rslearn_model_yaml",
    "read_config",
]
