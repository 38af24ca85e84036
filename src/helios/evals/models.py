"""What `model:` in an eval config names: an `EncoderLoader`, with local weights.

A loader is a class whose init takes the local `path` of the weights and its options, and
whose `load()` returns the encoder, the model's own normalizer and its default patch size.
One class per kind: `HeliosEncoder` (an exported encoder.pt), `RandomInit` (its architecture,
seeded random weights), and the baselines' loaders (`helios.evals.baselines.loaders`).
Configs choose one by class path (`model: {class_path: ..., init_args: {path: ...}}`), a class
of your own included, or by short name (`model: {kind: galileo, path: ...}`, `MODEL_KINDS`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch

from helios.data.normalize import Normalizer
from helios.evals.components import ClassSpec, build, located, resolve_alias
from helios.nn.api import Encoder

HELIOS_KINDS: dict[str, str] = {
    "helios": "helios.evals.models.HeliosEncoder",
    "helios-random": "helios.evals.models.RandomInit",
}
"""Short names of Helios's own encoders."""

BASELINE_KINDS: dict[str, str] = {
    "galileo": "helios.evals.baselines.loaders.GalileoLoader",
    "panopticon": "helios.evals.baselines.loaders.PanopticonLoader",
    "dinov3-sat": "helios.evals.baselines.loaders.DINOv3SatLoader",
    "dinov3-web": "helios.evals.baselines.loaders.DINOv3WebLoader",
    "olmoearth": "helios.evals.baselines.loaders.OlmoEarthLoader",
}
"""Short names of the baselines (a new baseline: its loader class, plus one entry here)."""

MODEL_KINDS: dict[str, str] = {**HELIOS_KINDS, **BASELINE_KINDS}
"""Every short model name -> the import path of its `EncoderLoader`."""


class LoadedEncoder(NamedTuple):
    """What a loader returns."""

    encoder: Encoder
    normalizer: Normalizer
    """The model's own normalization (applied when `normalization: model`)."""
    patch_size: int
    """The patch size used unless the config sets one."""


class EncoderLoader(ABC):
    """Builds an encoder from local weights; subclasses add their options to `__init__`."""

    def __init__(self, path: str) -> None:
        """Args: path: the local weights (a file or folder, as the kind expects)."""
        self.path = path

    @abstractmethod
    def load(self) -> LoadedEncoder:
        """The encoder, its normalizer and default patch size (weights read here, not in init)."""


class HeliosEncoder(EncoderLoader):
    """A Helios encoder exported by training (`<run dir>/encoder.pt`)."""

    def load(self) -> LoadedEncoder:
        """The exported weights, normalization and patch size."""
        from helios.nn.export import load_encoder

        exported = load_encoder(self.path)
        return LoadedEncoder(exported.encoder, exported.normalizer, exported.patch_size)


class RandomInit(EncoderLoader):
    """The architecture of an exported encoder with seeded random weights (a baseline).

    Compare a pretrained encoder with several seeds: on small tasks the spread between random
    inits can exceed the gap.
    """

    def __init__(self, path: str, seed: int = 0) -> None:
        """Args: path: the exported encoder.pt; seed: the seed of the random weights."""
        super().__init__(path)
        self.seed = seed

    def load(self) -> LoadedEncoder:
        """A fresh encoder of the file's config, seeded; the file's normalization."""
        from helios.nn.export import load_encoder

        exported = load_encoder(self.path)
        with torch.random.fork_rng():
            torch.manual_seed(self.seed)
            encoder = exported.config.build(exported.modalities)
        return LoadedEncoder(encoder, exported.normalizer, exported.patch_size)


@dataclass
class ModelSpec:
    """A model by short name (the short form of a `{class_path, init_args}` model)."""

    kind: str = "helios"
    """A short name (`MODEL_KINDS`: helios, helios-random, galileo, panopticon, dinov3-sat,
    dinov3-web, olmoearth) or the import path of an `EncoderLoader` subclass."""
    path: str = ""
    """The encoder file (helios) or the baseline's local weights (olmoearth: empty for
    random weights)."""
    name: str = ""
    """Label in reports (default: kind + file name)."""
    seed: int = 0
    """helios-random only: the seed of the random weights."""
    options: dict[str, Any] = field(default_factory=dict)
    """Further init args of the loader (e.g. {"include_ndvi": true} for galileo)."""

    @property
    def label(self) -> str:
        """Display name."""
        if self.name:
            return self.name
        return f"{self.kind}:{Path(self.path).name}" if self.path else self.kind

    def spec(self) -> ClassSpec:
        """The loader class and init args this model stands for."""
        class_path = resolve_alias(self.kind, MODEL_KINDS, "model kind")
        seed = {"seed": self.seed} if self.seed else {}  # only loaders with a seed take one
        return ClassSpec(class_path, {"path": self.path, **seed, **self.options})


def model_label(model: ModelSpec | ClassSpec) -> str:
    """How reports name a model: its `name`, else its kind (or class) and weights file."""
    if isinstance(model, ModelSpec):
        return model.label
    path = str(model.init_args.get("path") or "")
    return f"{model.name}:{Path(path).name}" if path else model.name


def model_spec(model: ModelSpec | ClassSpec) -> ClassSpec:
    """The `{class_path, init_args}` form of either way of writing a model."""
    return model.spec() if isinstance(model, ModelSpec) else model


def encoder_loader(model: ModelSpec | ClassSpec, where: str = "model") -> EncoderLoader:
    """The loader of a model, its init args checked (no weights are read yet)."""
    with located(where):
        spec = model_spec(model)
    loader: EncoderLoader = build(spec, EncoderLoader, where)
    return loader


def load_model(model: ModelSpec | ClassSpec) -> LoadedEncoder:
    """The encoder, its own normalization and its default patch size."""
    return encoder_loader(model).load()
