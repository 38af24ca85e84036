"""Masking strategies: which tokens of a sample the encoder sees and which the decoder predicts.

The contract (`MaskingStrategy`), the counting rules (`split_counts`, `split_groups`) and the
base of the ratio strategies (`RatioMasking`) are in `helios.data.masking_base`, re-exported
here. Every strategy matches the mask statistics of OlmoEarth's reference implementation on the
same token layouts, except for the deliberate differences docs/training.md lists (per-sample
rather than per-batch rules, ratios over available units, at least one encoder and one decoder
unit); tests/data/test_masking_fidelity.py checks both against golden statistics.

Strategies are plain classes, chosen in a config by `class_path` with their ratios as
`init_args` (e.g. `helios.data.masking.SpaceMasking`); upstream's names map one to one
(`random` -> `RandomMasking`, `space_time` -> `SpaceTimeMasking`, `random_with_decode` ->
`RandomTimeWithDecodeMasking` with ``random_probability=1``, `modality_cross_space` ->
`ModalityCrossSpaceMasking`, ...). The modality-cross strategies mask the
``decode_only_modalities`` with their base instead, and never encode them, as upstream does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from helios.data.masking_base import (
    MaskingStrategy,
    Masks,
    NoMasking,
    RatioMasking,
    has_both,
    split_counts,
    split_groups,
    timestep_presence,
)
from helios.data.modalities import get_modality
from helios.data.sample import MaskValue

_ENC = np.int8(MaskValue.ENCODER)
_TGT = np.int8(MaskValue.TARGET_ONLY)
_DEC = np.int8(MaskValue.DECODER)
_MIS = np.int8(MaskValue.MISSING)

__all__ = [
    "MaskingStrategy",
    "ModalityCrossMasking",
    "ModalityCrossRandomMasking",
    "ModalityCrossSpaceMasking",
    "ModalityCrossTimeMasking",
    "NoMasking",
    "RandomMasking",
    "RandomTimeWithDecodeMasking",
    "RatioMasking",
    "SpaceMasking",
    "SpaceTimeMasking",
    "TimeMasking",
    "split_counts",
    "split_groups",
]


class RandomMasking(RatioMasking):
    """Units are the individual available tokens of each modality (split modality by modality).

    When that leaves the sample without an encoder or a decoder token (every modality has a
    single token), the split is redone over all of the sample's tokens together.
    """

    def _mask(self, names: list[str], avail: Masks, out: Masks, rng: np.random.Generator) -> None:
        self._mask_tokens(names, avail, out, rng)


class SpaceMasking(RatioMasking):
    """Units are spatial positions (i, j) of the shared token grid.

    Every token of every spatial modality at a position (all timesteps and band sets) shares
    that position's fate; positions with no available token do not count (the reference counts
    every position). Tokens of non-spatial modalities (era5) are split token-wise at random.
    With fewer than 2 available positions the sample falls back to `RandomMasking`.
    """

    def _mask(self, names: list[str], avail: Masks, out: Masks, rng: np.random.Generator) -> None:
        spatial = [m for m in names if get_modality(m).is_spatial]
        other = [m for m in names if m not in spatial]
        grids = {avail[m].shape[:2] for m in spatial}
        if len(grids) > 1:
            raise ValueError(
                f"spatial modalities must share one token grid, got "
                f"{ {m: avail[m].shape[:2] for m in spatial} }"
            )
        positions = np.zeros(grids.pop() if grids else (0, 0), dtype=bool)
        for m in spatial:
            positions |= avail[m].any(axis=(2, 3))
        if positions.sum() < 2:
            self._mask_tokens(names, avail, out, rng)
            return
        fates = self._fates(positions, rng)[:, :, None, None]
        for m in spatial:
            out[m] = np.where(avail[m], fates, _MIS)
        self._mask_tokens(other, avail, out, rng)


class TimeMasking(RatioMasking):
    """Units are the timesteps of the shared time axis.

    Every token of every multitemporal modality (spatial or not, e.g. era5) at a timestep shares
    that timestep's fate; the units are the sample's timesteps with any available token (the
    reference's are the timesteps complete in every sample of the batch). Tokens of static
    modalities (srtm, worldcover...) are split token-wise at random. With fewer than
    `MIN_TIMESTEPS` available timesteps the sample falls back to `RandomMasking`.
    """

    MIN_TIMESTEPS = 3
    """Fewest timesteps time masking splits (the reference's minimum)."""

    def _mask(self, names: list[str], avail: Masks, out: Masks, rng: np.random.Generator) -> None:
        steps = timestep_presence(names, avail)
        if steps is None or steps.sum() < self.MIN_TIMESTEPS:
            self._mask_tokens(names, avail, out, rng)
            return
        fates = self._fates(steps, rng)[None, None, :, None]
        static = []
        for m in names:
            if get_modality(m).is_multitemporal:
                out[m] = np.where(avail[m], fates, _MIS)
            else:
                static.append(m)
        self._mask_tokens(static, avail, out, rng)


class SpaceTimeMasking(RatioMasking):
    """Per sample, `TimeMasking` with probability `time_probability`, else `SpaceMasking`.

    Time masking is only chosen when the sample has at least `TimeMasking.MIN_TIMESTEPS`
    available timesteps. The reference tosses one coin per batch.
    """

    def __init__(
        self,
        encode_ratio: float = 0.5,
        decode_ratio: float = 0.5,
        decode_only_modalities: Sequence[str] = (),
        time_probability: float = 0.5,
    ) -> None:
        """See `RatioMasking`; `time_probability` is the chance of time masking per sample."""
        super().__init__(encode_ratio, decode_ratio, decode_only_modalities)
        if not 0.0 <= time_probability <= 1.0:
            raise ValueError(f"time_probability must be in [0, 1], got {time_probability}")
        self.time_probability = time_probability
        self.space = SpaceMasking(encode_ratio, decode_ratio, decode_only_modalities)
        self.time = TimeMasking(encode_ratio, decode_ratio, decode_only_modalities)

    def _mask(self, names: list[str], avail: Masks, out: Masks, rng: np.random.Generator) -> None:
        use_time = rng.random() < self.time_probability
        steps = timestep_presence(names, avail)
        if use_time and steps is not None and steps.sum() >= TimeMasking.MIN_TIMESTEPS:
            self.time._mask(names, avail, out, rng)
        else:
            self.space._mask(names, avail, out, rng)


class RandomTimeWithDecodeMasking(RatioMasking):
    """Band sets are split into encode-only and decode-only ones, then masked by token or time.

    Upstream's ``random_time_with_decode`` (``random_probability=1``: ``random_with_decode``):

    1. ``decode_only_modalities`` are all DECODER (as in every strategy here).
    2. The other available (modality, band set) pairs are shuffled; ``ceil(n * encode_ratio)``
       of them (`split_groups`) are encode band sets, holding only ENCODER / TARGET_ONLY
       tokens, and the rest decode band sets, holding only DECODER / TARGET_ONLY.
    3. With probability `random_probability` (or when fewer than 2 timesteps are available)
       tokens are picked at random: ``floor(n * encode_ratio)`` of an encode band set's n
       tokens are ENCODER, ``floor(n * decode_ratio)`` of a decode band set's are DECODER (at
       least 1; the rest TARGET_ONLY). Otherwise the available timesteps are split the same way
       into encode and decode steps, and a multitemporal band set takes its role at all of its
       tokens at its steps; static band sets, and band sets with no data at their steps, fall
       back to the random pick.

    So the encoded fraction of tokens is about ``encode_ratio ** 2``. With a single band set
    the sample is masked token-wise (`RandomMasking`). Differences from upstream: era5-like
    non-spatial series follow the time split too, and a band set always gets at least one token
    of its role (upstream decodes none of a 3-token band set at decode_ratio 0.3, and encodes a
    decode band set's single token).
    """

    def __init__(
        self,
        encode_ratio: float = 0.5,
        decode_ratio: float = 0.5,
        decode_only_modalities: Sequence[str] = (),
        random_probability: float = 0.5,
    ) -> None:
        """See `RatioMasking`; `random_probability` is the chance of token-wise masking."""
        super().__init__(encode_ratio, decode_ratio, decode_only_modalities)
        if not 0.0 <= random_probability <= 1.0:
            raise ValueError(f"random_probability must be in [0, 1], got {random_probability}")
        self.random_probability = random_probability

    def _roles(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """ENCODER or DECODER for each of `n` >= 2 shuffled groups (`split_groups`)."""
        roles = np.full(n, _DEC, dtype=np.int8)
        roles[rng.permutation(n)[: split_groups(n, self.encode_ratio)]] = _ENC
        return roles

    def _mask(self, names: list[str], avail: Masks, out: Masks, rng: np.random.Generator) -> None:
        band_sets = [
            (m, int(s))
            for m in names
            for s in np.flatnonzero(avail[m].reshape(-1, avail[m].shape[3]).any(axis=0))
        ]
        if len(band_sets) <= 1:
            self._mask_tokens(names, avail, out, rng)
            return
        steps = timestep_presence(names, avail)
        step_fates = None
        if steps is not None and steps.sum() >= 2 and rng.random() >= self.random_probability:
            step_fates = np.full(steps.shape, _MIS, dtype=np.int8)
            step_fates[steps] = self._roles(int(steps.sum()), rng)
        for (m, s), role in zip(band_sets, self._roles(len(band_sets), rng)):
            present = avail[m][..., s]
            if step_fates is not None and get_modality(m).is_multitemporal:
                hit = present & (step_fates[None, None, :] == role)
                if hit.any():
                    out[m][..., s] = np.where(hit, role, np.where(present, _TGT, _MIS))
                    continue
            ratio = self.encode_ratio if role == _ENC else self.decode_ratio
            idx = np.flatnonzero(present)
            count = min(idx.size, max(1, int(idx.size * ratio)))
            fates = np.where(present, _TGT, _MIS).reshape(-1)
            fates[rng.permutation(idx)[:count]] = role
            out[m][..., s] = fates.reshape(present.shape)


class ModalityCrossMasking(MaskingStrategy):
    """Apply `base`, then give each band set an encoder role, a decoder role or both.

    Upstream's ``modality_cross_*``, per sample. The *present* band sets are those that hold
    ENCODER tokens after the base mask, and every band set of the `decode_only_modalities`
    (masked by the base like the others, but never encoded). One present band set is encoded;
    of two, one (never a decode-only one) is encoded and the other decoded; of three or more,
    ``k`` of the encodable ones are encoded, ``k`` uniform in [`min_encoded_band_sets`,
    `max_encoded_band_sets`] and at most all but one (all with `allow_same_band_set`), and
    every other present band set is decoded (with `allow_same_band_set`: a random subset of
    1 to all present band sets, of random size). Then, in a band set outside the encode set,
    the base's ENCODER tokens become TARGET_ONLY; in an encoded band set outside the decode
    set, its DECODER tokens do. `force_non_spatial` presets give non-spatial modalities (era5)
    one role over all their tokens. A sample left without encoder or decoder tokens is masked
    token-wise at random instead (its decode-only modalities keep their mask).

    Differences from upstream (deliberate): of two present band sets the encoded one is drawn
    at random (upstream takes the first in modality order), and at least one band set is
    always encoded.
    """

    force_non_spatial = False
    """Whether non-spatial modalities take one role per band set (upstream's space/time)."""

    def __init__(
        self,
        base: MaskingStrategy | None = None,
        min_encoded_band_sets: int = 2,
        max_encoded_band_sets: int | None = None,
        allow_same_band_set: bool = False,
        decode_only_modalities: Sequence[str] = (),
    ) -> None:
        """Store the parts.

        Args:
            base: the strategy applied first; `RandomMasking()` when None.
            min_encoded_band_sets: fewest band sets in the encode set (>= 1; upstream's 2).
            max_encoded_band_sets: most band sets in the encode set; None for no limit.
            allow_same_band_set: let encoded band sets keep their decoder tokens too.
            decode_only_modalities: modalities never encoded (the base's own are added).

        """
        if min_encoded_band_sets < 1:
            raise ValueError(f"min_encoded_band_sets must be >= 1, got {min_encoded_band_sets}")
        if max_encoded_band_sets is not None and max_encoded_band_sets < min_encoded_band_sets:
            raise ValueError(
                f"max_encoded_band_sets ({max_encoded_band_sets}) must be >= "
                f"min_encoded_band_sets ({min_encoded_band_sets})"
            )
        for name in decode_only_modalities:
            get_modality(name)
        self.base = base if base is not None else RandomMasking()
        self.min_encoded_band_sets = min_encoded_band_sets
        self.max_encoded_band_sets = max_encoded_band_sets
        self.allow_same_band_set = allow_same_band_set
        self._decode_only = tuple(decode_only_modalities)

    @property
    def decode_only_modalities(self) -> tuple[str, ...]:
        """Modalities that are never encoded (this strategy's and the base's)."""
        extra = tuple(m for m in self.base.decode_only_modalities if m not in self._decode_only)
        return self._decode_only + extra

    def _sets(
        self, present: list[tuple[str, int]], rng: np.random.Generator
    ) -> tuple[set[tuple[str, int]], set[tuple[str, int]]]:
        """The encode and decode sets among the present (modality, band set) pairs."""
        fixed = self.decode_only_modalities
        encodable = [p for p in present if p[0] not in fixed]
        if len(present) <= 2:
            if len(present) == 1 or not encodable:
                return set(encodable), set()
            first = encodable[int(rng.integers(len(encodable)))]
            return {first}, {p for p in present if p != first}
        high = len(encodable) - (0 if self.allow_same_band_set else 1)
        if self.max_encoded_band_sets is not None:
            high = min(high, self.max_encoded_band_sets)
        high = max(1, min(high, len(encodable)))
        low = min(self.min_encoded_band_sets, high)
        k = int(rng.integers(low, high + 1))
        encode = {encodable[i] for i in rng.choice(len(encodable), size=k, replace=False)}
        if not self.allow_same_band_set:
            return encode, set(present) - encode
        n_dec = int(rng.integers(1, len(present) + 1))
        return encode, {present[i] for i in rng.choice(len(present), size=n_dec, replace=False)}

    def __call__(
        self, tokens: dict[str, np.ndarray], rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        """Return new int8 [h, w, T, S] masks for `tokens` (ENCODER or MISSING on input)."""
        masks = self.base(tokens, rng)
        fixed = self.decode_only_modalities
        present = [
            (m, s)
            for m, arr in masks.items()
            for s in range(arr.shape[3])
            if (arr[..., s] == _ENC).any() or (m in fixed and (arr != _MIS).any())
        ]
        encode, decode = self._sets(present, rng)
        for m in {m for m, _ in present}:
            arr = masks[m]
            for s in range(arr.shape[3]):
                part = arr[..., s]
                if self.force_non_spatial and not get_modality(m).is_spatial:
                    role = _ENC if (m, s) in encode else _DEC if (m, s) in decode else None
                    if role is not None:
                        arr[..., s] = np.where(part != _MIS, role, part)
                elif (m, s) not in encode:
                    arr[..., s] = np.where(part == _ENC, _TGT, part)
                elif (m, s) not in decode:
                    arr[..., s] = np.where(part == _DEC, _TGT, part)
        names = [m for m in masks if m not in fixed]
        if not has_both(masks, list(masks)):
            ratios = self.base if isinstance(self.base, RatioMasking) else RandomMasking()
            redo = RandomMasking(ratios.encode_ratio, ratios.decode_ratio)
            masks.update(redo({m: tokens[m] for m in names}, rng) if names else {})
        return masks


class _ModalityCrossPreset(ModalityCrossMasking):
    """`ModalityCrossMasking` over a fixed base class, built from ratios (flat config keys)."""

    base_class: type[RatioMasking]

    def __init__(
        self,
        encode_ratio: float = 0.5,
        decode_ratio: float = 0.5,
        decode_only_modalities: Sequence[str] = (),
        min_encoded_band_sets: int = 2,
        max_encoded_band_sets: int | None = None,
        allow_same_band_set: bool = False,
    ) -> None:
        """Build the base from the ratios; see `RatioMasking` and `ModalityCrossMasking`."""
        super().__init__(
            self.base_class(encode_ratio, decode_ratio),
            min_encoded_band_sets,
            max_encoded_band_sets,
            allow_same_band_set,
            decode_only_modalities,
        )


class ModalityCrossRandomMasking(_ModalityCrossPreset):
    """`ModalityCrossMasking` over `RandomMasking` (upstream ``modality_cross_random``)."""

    base_class = RandomMasking


class ModalityCrossSpaceMasking(_ModalityCrossPreset):
    """`ModalityCrossMasking` over `SpaceMasking` (upstream ``modality_cross_space``)."""

    base_class = SpaceMasking
    force_non_spatial = True


class ModalityCrossTimeMasking(_ModalityCrossPreset):
    """`ModalityCrossMasking` over `TimeMasking` (upstream ``modality_cross_time``).

    Upstream's base is in fact space masking, a reference bug Helios does not copy.
    """

    base_class = TimeMasking
    force_non_spatial = True
