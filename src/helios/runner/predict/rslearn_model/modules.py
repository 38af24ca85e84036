"""rslearn's decoders and heads, written for Helios with rslearn's parameter names.

Each class takes the init args its rslearn namesake takes in model.yaml and registers the
same submodules, so a fine-tune's state dict (`model.decoders.<task>.<i>.*`) loads strictly.
Components pass `FeatureMaps` (a list of [B, C, H, W] maps, finest first) or a
`FeatureVector` ([B, C]) along, as in rslearn; heads turn the last one into probabilities.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from helios.runner.predict.rslearn_model.config import Component, UnsupportedRslearnConfig


@dataclass
class FeatureMaps:
    """Feature maps [B, C, H, W], in rslearn's order (the last is the coarsest)."""

    maps: list[Tensor]


@dataclass
class FeatureVector:
    """One feature vector per sample, [B, C]."""

    vector: Tensor


Features = FeatureMaps | FeatureVector
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "torch.nn.Identity": nn.Identity,
    "torch.nn.ReLU": nn.ReLU,
    "torch.nn.GELU": nn.GELU,
    "torch.nn.Sigmoid": nn.Sigmoid,
    "torch.nn.Tanh": nn.Tanh,
}
"""Activations a `Conv` may name by class path."""


def _maps(x: Features, who: str) -> list[Tensor]:
    if not isinstance(x, FeatureMaps):
        raise ValueError(f"the input to {who} must be feature maps")
    return x.maps


class PoolingDecoder(nn.Module):
    """Convs (3x3 + ReLU), a global spatial MAX pool, FC layers (+ ReLU), then a Linear."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_conv_layers: int = 0,
        num_fc_layers: int = 0,
        conv_channels: int = 128,
        fc_channels: int = 512,
    ) -> None:
        super().__init__()
        convs: list[nn.Module] = []
        width = in_channels
        for _ in range(num_conv_layers):
            convs.append(nn.Sequential(nn.Conv2d(width, conv_channels, 3, padding=1), nn.ReLU()))
            width = conv_channels
        self.conv_layers = nn.Sequential(*convs)
        fcs: list[nn.Module] = []
        for _ in range(num_fc_layers):
            fcs.append(nn.Sequential(nn.Linear(width, fc_channels), nn.ReLU()))
            width = fc_channels
        self.fc_layers = nn.Sequential(*fcs)
        self.output_layer = nn.Linear(width, out_channels)

    def forward(self, x: Features, image_size: tuple[int, int]) -> Features:
        """The last feature map -> [B, out_channels]."""
        feats = self.conv_layers(_maps(x, type(self).__name__)[-1])
        return FeatureVector(self.output_layer(self.fc_layers(torch.amax(feats, dim=(2, 3)))))


class SegmentationPoolingDecoder(PoolingDecoder):
    """`PoolingDecoder`'s vector repeated over the input image's pixels ([B, C, H, W])."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        image_key: str = "image",
        num_conv_layers: int = 0,
        num_fc_layers: int = 0,
        conv_channels: int = 128,
        fc_channels: int = 512,
    ) -> None:
        super().__init__(
            in_channels, out_channels, num_conv_layers, num_fc_layers, conv_channels, fc_channels
        )
        self.image_key = image_key

    def forward(self, x: Features, image_size: tuple[int, int]) -> Features:
        """Broadcast the pooled logits to every pixel of the input."""
        vec = super().forward(x, image_size)
        assert isinstance(vec, FeatureVector)
        h, w = image_size
        return FeatureMaps([vec.vector[:, :, None, None].expand(-1, -1, h, w)])


class UNetDecoder(nn.Module):
    """rslearn's UNet decoder: from the coarsest map, convs and 2x nearest upsampling."""

    def __init__(
        self,
        in_channels: list[tuple[int, int]],
        out_channels: int | None,
        conv_layers_per_resolution: int = 1,
        kernel_size: int = 3,
        num_channels: Mapping[int | str, int] | None = None,
        target_resolution_factor: int = 1,
        original_size_to_interpolate: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        channels = {int(k): int(v) for k, v in (num_channels or {}).items()}
        by_factor = {int(f): int(c) for f, c in in_channels}
        factor, width = int(in_channels[-1][0]), int(in_channels[-1][1])

        def conv(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, kernel_size, padding="same"), nn.ReLU()]

        layers: list[nn.Module] = []
        cur = conv(width, width)
        while factor > target_resolution_factor:
            cur.append(nn.Upsample(scale_factor=2))
            factor //= 2
            if factor in by_factor:  # concatenated with the input map at this factor
                layers.append(nn.Sequential(*cur))
                out = channels.get(factor, by_factor[factor])
                cur = conv(width + by_factor[factor], out)
            else:
                out = channels.get(factor, width)
                cur += conv(width, out)
            width = out
            for _ in range(conv_layers_per_resolution - 1):
                cur += conv(width, width)
        if out_channels is not None:
            cur.append(nn.Conv2d(width, out_channels, kernel_size, padding="same"))
        layers.append(nn.Sequential(*cur))
        self.layers = nn.ModuleList(layers)
        self.original_size_to_interpolate = original_size_to_interpolate

    def forward(self, x: Features, image_size: tuple[int, int]) -> Features:
        """Decode the feature maps into one map at `target_resolution_factor`."""
        maps = list(reversed(_maps(x, "UNetDecoder")))
        out = self.layers[0](maps[0])
        for skip, layer in zip(maps[1:], self.layers[1:]):
            out = layer(torch.cat([out, skip], dim=1))
        if self.original_size_to_interpolate is not None:
            size = tuple(self.original_size_to_interpolate)
            out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
        return FeatureMaps([out])


class Upsample(nn.Module):
    """Every feature map upsampled by `scale_factor`."""

    def __init__(self, scale_factor: int, mode: str = "bilinear") -> None:
        super().__init__()
        self.layer = nn.Upsample(scale_factor=scale_factor, mode=mode)

    def forward(self, x: Features, image_size: tuple[int, int]) -> Features:
        """Upsample each map."""
        return FeatureMaps([self.layer(m) for m in _maps(x, "Upsample")])


class Conv(nn.Module):
    """One Conv2d (and activation) applied to every feature map."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        padding: str | int = "same",
        stride: int = 1,
        activation: Component | None = None,
    ) -> None:
        super().__init__()
        self.layer = nn.Conv2d(
            in_channels, out_channels, kernel_size, padding=padding, stride=stride
        )
        name = "torch.nn.ReLU" if activation is None else activation.class_path
        if name not in ACTIVATIONS:
            raise UnsupportedRslearnConfig(
                f"Conv activation {name}; supported: {list(ACTIVATIONS)}"
            )
        self.activation = ACTIVATIONS[name]()

    def forward(self, x: Features, image_size: tuple[int, int]) -> Features:
        """Convolve each map."""
        return FeatureMaps([self.activation(self.layer(m)) for m in _maps(x, "Conv")])


class PickFeatures(nn.Module):
    """A subset of the feature maps (`collapse`, from older rslearn, changes nothing here)."""

    def __init__(self, indexes: list[int], collapse: bool = False) -> None:
        super().__init__()
        self.indexes = list(indexes)

    def forward(self, x: Features, image_size: tuple[int, int]) -> Features:
        """Keep the maps at `indexes`."""
        maps = _maps(x, "PickFeatures")
        return FeatureMaps([maps[i] for i in self.indexes])


class ClassificationHead(nn.Module):
    """Softmax over the classes of a feature vector: probabilities [B, K]."""

    def forward(self, x: Features, image_size: tuple[int, int]) -> Tensor:
        """Class probabilities."""
        if not isinstance(x, FeatureVector):
            raise ValueError("the input to ClassificationHead must be a feature vector")
        return x.vector.softmax(dim=1)


class SegmentationHead(nn.Module):
    """Softmax (with temperature) over the channels of one map: probabilities [B, K, H, W]."""

    weights: Tensor | None

    def __init__(
        self, weights: list[float] | None = None, dice_loss: bool = False, temperature: float = 1.0
    ) -> None:
        super().__init__()
        if weights is not None:  # the class weights of the loss; a buffer in the state dict
            self.register_buffer("weights", torch.tensor(weights, dtype=torch.float32))
        else:
            self.weights = None
        self.temperature = temperature

    def forward(self, x: Features, image_size: tuple[int, int]) -> Tensor:
        """Per-pixel class probabilities."""
        maps = _maps(x, "SegmentationHead")
        if len(maps) != 1:
            raise ValueError(f"the input to SegmentationHead must be one map, got {len(maps)}")
        return (maps[0] / self.temperature).softmax(dim=1)


MODULES: dict[str, type[nn.Module]] = {
    "rslearn.models.pooling_decoder.PoolingDecoder": PoolingDecoder,
    "rslearn.models.pooling_decoder.SegmentationPoolingDecoder": SegmentationPoolingDecoder,
    "rslearn.models.unet.UNetDecoder": UNetDecoder,
    "rslearn.models.upsample.Upsample": Upsample,
    "rslearn.models.conv.Conv": Conv,
    "rslearn.models.pick_features.PickFeatures": PickFeatures,
    "rslearn.train.tasks.classification.ClassificationHead": ClassificationHead,
    "rslearn.train.tasks.segmentation.SegmentationHead": SegmentationHead,
}
"""rslearn class path -> its Helios implementation."""
HEAD_KINDS = {
    "rslearn.train.tasks.classification.ClassificationHead": "classification",
    "rslearn.train.tasks.segmentation.SegmentationHead": "segmentation",
}


def build_module(component: Component, where: str) -> nn.Module:
    """The Helios module of one decoder entry; bad init args name the class."""
    cls = MODULES.get(component.class_path)
    if cls is None:
        raise UnsupportedRslearnConfig(
            f"{where}: {component.class_path} is not supported; supported: {list(MODULES)}"
        )
    args = dict(component.init_args)
    if cls is Conv and isinstance(args.get("activation"), dict):
        act = args["activation"]
        args["activation"] = Component(str(act.get("class_path")), dict(act.get("init_args") or {}))
    try:
        return cls(**args)
    except TypeError as err:
        raise ValueError(f"{where}: {component.class_path}: {err}") from err
