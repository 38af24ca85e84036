"""Per-view augmentations of pretraining samples, applied to raw values before normalization.

The masked views of a sample (`PretrainDataModule(num_views=2)`) share its crop and time
window. Without an augmentation they share its values too, so the view-level contrastive loss
(`LatentMIM(contrastive_weight=...)`) can match the two views of a sample by anything that
tells samples apart, a sensor's overall brightness included. An augmentation draws new values
for each view, and the pooled encodings must then agree on what it leaves alone. Choose one in
the data config (``augmentation: {class_path: helios.data.augment.GainJitter}``), or write your
own `ViewAugmentation` subclass and give its import path.

Every augmentation keeps `MISSING_VALUE` pixels as they are and draws all of its randomness
from the generator it is handed (so results do not depend on DataLoader workers).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from helios.data.modalities import MISSING_VALUE, get_modality

REFLECTANCE_MODALITIES = ("sentinel2", "sentinel2_l2a", "landsat")
"""Modalities whose values scale with illumination (reflectance or DNs)."""
DECIBEL_MODALITIES = ("sentinel1",)
"""Modalities stored in dB, where a gain is an offset of 10 log10(gain)."""


class ViewAugmentation(ABC):
    """Changes the raw values of one view of a sample."""

    @abstractmethod
    def __call__(
        self, arrays: dict[str, np.ndarray], rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        """New float32 arrays for `arrays` (per modality, [H, W, T, C] raw values)."""


class GainJitter(ViewAugmentation):
    """Scale each modality of a view by its own gain, drawn uniformly in 1 +- `max_gain`.

    Reflectance and DNs are multiplied by the gain and dB values offset by 10 log10(gain);
    modalities in neither list (maps, weather) are left alone. One gain per modality and
    view, the same for every pixel and timestep: a stand-in for the calibration, atmosphere
    and illumination differences between acquisitions, which an encoder should not rely on.
    """

    def __init__(
        self,
        max_gain: float = 0.15,
        reflectance: Sequence[str] = REFLECTANCE_MODALITIES,
        decibel: Sequence[str] = DECIBEL_MODALITIES,
    ) -> None:
        """Configure the jitter.

        Args:
            max_gain: largest relative change of a gain (0.15: 0.85-1.15); in [0, 1).
            reflectance: modalities that are multiplied by the gain.
            decibel: modalities (in dB) that are offset by 10 log10(gain).

        """
        if not 0 <= max_gain < 1:
            raise ValueError(f"GainJitter: max_gain must be in [0, 1), got {max_gain}")
        for name in (*reflectance, *decibel):
            get_modality(name)  # an unknown name fails here, with the known ones listed
        self.max_gain = float(max_gain)
        self.reflectance = tuple(reflectance)
        self.decibel = tuple(decibel)

    def __call__(
        self, arrays: dict[str, np.ndarray], rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        """The arrays with a gain applied to each modality listed (drawn in sorted order)."""
        out = {}
        for name in sorted(arrays):
            arr = arrays[name]
            if name not in self.reflectance and name not in self.decibel:
                out[name] = arr
                continue
            gain = rng.uniform(1 - self.max_gain, 1 + self.max_gain)
            valid = arr != MISSING_VALUE
            if name in self.reflectance:
                changed = arr * np.float32(gain)
            else:
                changed = arr + np.float32(10 * np.log10(gain))
            out[name] = np.where(valid, changed, arr).astype(np.float32)
        return {name: out[name] for name in arrays}
