"""One `EncoderLoader` per baseline kind: local weights in, a Helios-surface encoder out.

`BaselineLoader.load()` builds the wrapper (`build(stats)`) and reports its own normalizer and
default patch size. `stats` (a Helios norm-stats JSON, `helios data stats`) sets the
dataset statistics the Panopticon and DINOv3 normalizers use; Galileo uses its published ones.
A new baseline is one file with its wrapper and a loader class like these, plus its short
name in `helios.evals.models.BASELINE_KINDS`.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import cast

from helios.data.normalize import Normalizer, NormStats
from helios.evals.baselines._common import load_strict, load_weights
from helios.evals.baselines.dinov3 import DINOv3Encoder, DINOv3Variant
from helios.evals.baselines.galileo import GalileoEncoder
from helios.evals.baselines.olmoearth import OlmoEarthEncoder, OlmoEarthSize, OlmoEarthVersion
from helios.evals.baselines.panopticon import PanopticonEncoder
from helios.evals.models import EncoderLoader, LoadedEncoder
from helios.nn.api import Encoder

DINOV3_WEB_BY_WIDTH: dict[int, DINOv3Variant] = {
    384: "vits16_web",
    768: "vitb16_web",
    1024: "vitl16_web",
}
"""LVD-1689M ViT/16 variant by patch-embedding width."""


class BaselineLoader(EncoderLoader):
    """A baseline wrapper (`helios.evals.baselines`) from its published local weights."""

    def __init__(self, path: str, stats: str | None = None) -> None:
        """Args: path: the local weights; stats: a norm-stats JSON for the normalizer."""
        super().__init__(path)
        self.stats = stats

    @abstractmethod
    def build(self, stats: NormStats | None = None) -> Encoder:
        """The wrapper with its weights loaded; `stats` set its normalizer where it has any."""

    def load(self) -> LoadedEncoder:
        """The wrapper, its own normalizer and default patch size."""
        model = self.build(NormStats.load(self.stats) if self.stats else None)
        # every wrapper declares both (docs/baselines.md); nn.Module types them loosely
        normalizer = cast(Normalizer, model.normalizer)
        return LoadedEncoder(model, normalizer, cast(int, model.default_patch_size))


class GalileoLoader(BaselineLoader):
    """Galileo: a model folder (or its encoder.pt), normalized with its published stats."""

    def __init__(
        self,
        path: str,
        include_ndvi: bool = False,
        include_latlon: bool = False,
        landsat_as_s2: bool = True,
    ) -> None:
        """Args: path: the model folder; the flags of `GalileoEncoder.from_pretrained`."""
        super().__init__(path)
        self.include_ndvi, self.include_latlon = include_ndvi, include_latlon
        self.landsat_as_s2 = landsat_as_s2

    def build(self, stats: NormStats | None = None) -> Encoder:
        """`GalileoEncoder.from_pretrained` (Galileo ignores `stats`)."""
        return GalileoEncoder.from_pretrained(
            self.path, self.include_ndvi, self.include_latlon, self.landsat_as_s2
        )


class PanopticonLoader(BaselineLoader):
    """Panopticon: the ViT-B/14 teacher .pth."""

    def build(self, stats: NormStats | None = None) -> Encoder:
        """`PanopticonEncoder.from_pretrained`."""
        return PanopticonEncoder.from_pretrained(self.path, stats)


class DINOv3SatLoader(BaselineLoader):
    """DINOv3 SAT-493M ViT-L/16 .pth."""

    def build(self, stats: NormStats | None = None) -> Encoder:
        """`DINOv3Encoder.from_pretrained` with the SAT variant."""
        return DINOv3Encoder.from_pretrained(self.path, "vitl16_sat", stats)


class DINOv3WebLoader(BaselineLoader):
    """DINOv3 LVD-1689M ViT-S, B or L/16 .pth; the size is read from the file."""

    def build(self, stats: NormStats | None = None) -> Encoder:
        """The variant whose patch-embedding width the file has."""
        state = load_weights(self.path)
        proj = state.get("patch_embed.proj.weight")
        width = 0 if proj is None else int(proj.shape[0])
        if width not in DINOV3_WEB_BY_WIDTH:
            raise ValueError(
                f"{self.path}: patch embedding width {width} is no DINOv3 web ViT/16 "
                f"({sorted(DINOV3_WEB_BY_WIDTH)})"
            )
        model = DINOv3Encoder(None, DINOV3_WEB_BY_WIDTH[width], stats)
        load_strict(model, state, str(self.path))
        return model


class OlmoEarthLoader(BaselineLoader):
    """OlmoEarth: a release bundle, an olmo-core checkpoint or a cached hub id; '' = random.

    With `path` empty the encoder gets seeded random weights of `size` and `version` (a
    baseline to beat, named as such in reports). Normalization is always OlmoEarth's own.
    """

    def __init__(
        self,
        path: str = "",
        size: OlmoEarthSize | None = None,
        version: OlmoEarthVersion | None = None,
        seed: int = 0,
    ) -> None:
        """Create the loader (no weights are read here).

        Args:
            path: A folder with config.json + weights.pth (a release bundle) or config.json +
                model_and_optim/ (an olmo-core checkpoint), or a model id such as
                OlmoEarth-v1-Nano found in the local Hugging Face cache; empty for random
                weights.
            size: nano, tiny, small, base or large: checked against the weights' config, and
                the architecture of random weights (default nano).
            version: v1, v1.1, v1.2 (or v1.3 from a bundle): checked likewise (default v1).
            seed: The seed of random weights.

        """
        super().__init__(path)
        self.size, self.version, self.seed = size, version, seed

    def build(self, stats: NormStats | None = None) -> Encoder:
        """The encoder (OlmoEarth ignores `stats`: it uses its published statistics)."""
        if self.path:
            return OlmoEarthEncoder.from_pretrained(self.path, self.size, self.version)
        version = self.version or "v1"
        if version == "v1.3":
            raise ValueError("OlmoEarth v1.3 is only built from its bundle: give its path")
        return OlmoEarthEncoder.random(self.size or "nano", version, self.seed)
