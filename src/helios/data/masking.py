"""Masking strategies: which tokens of a sample the encoder sees and which the decoder predicts.

A strategy is called once per sample (inside DataLoader workers) on the sample's token grid:
``tokens[modality]`` is int8 [h, w, T, S] (token grid, timesteps, band sets) in which every
token is `MaskValue.ENCODER` (available) or `MaskValue.MISSING`. It returns new int8 arrays of
the same shapes where every available token is ENCODER, TARGET_ONLY or DECODER and every missing
token stays MISSING. All randomness comes from the `rng` argument, so a seed fixes the mask.

Strategies split *units* (tokens, positions, timesteps or band sets, depending on the strategy)
with `split_counts`: of ``n`` available units, ``round(n * encode_ratio)`` are ENCODER and
``round(n * decode_ratio)`` DECODER (rounding half up), each at least 1 and clipped so that both
fit when ``n >= 2``; the rest are TARGET_ONLY. A single unit is ENCODER; no unit, nothing to do.

``decode_only_modalities`` (maps such as worldcover used only as targets) take no part in the
split: all their available tokens are DECODER and none is ever ENCODER.

Strategies are plain classes, chosen in a config by `class_path` with their ratios as
`init_args` (e.g. `helios.data.masking.SpaceMasking`); upstream's names map one to one
(`random` -> `RandomMasking`, `space_time` -> `SpaceTimeMasking`, `modality_cross_space` ->
`ModalityCrossSpaceMasking`, ...).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from helios.data.modalities import get_modality
from helios.data.sample import MaskValue

_ENC = np.int8(MaskValue.ENCODER)
_TGT = np.int8(MaskValue.TARGET_ONLY)
_DEC = np.int8(MaskValue.DECODER)
_MIS = np.int8(MaskValue.MISSING)

Masks = dict[str, np.ndarray]
"""Per-modality int8 [h, w, T, S] token masks (or bool availability) of one sample."""


def split_counts(n: int, encode_ratio: float, decode_ratio: float) -> tuple[int, int]:
    """Numbers of ENCODER and DECODER units among `n` available units (the rest: TARGET_ONLY).

    Rounds half up; with ``n >= 2`` both counts are at least 1 and sum to at most ``n``.
    One unit is encoded, ``(1, 0)``; zero units give ``(0, 0)``.
    """
    if n <= 1:
        return n, 0
    n_enc = min(max(1, math.floor(n * encode_ratio + 0.5)), n - 1)
    n_dec = min(max(1, math.floor(n * decode_ratio + 0.5)), n - n_enc)
    return n_enc, n_dec


def _timestep_presence(names: Sequence[str], avail: dict[str, np.ndarray]) -> np.ndarray | None:
    """Which steps (bool [T]) any multitemporal modality in `names` has; None if none."""
    temporal = [m for m in names if get_modality(m).is_multitemporal]
    if not temporal:
        return None
    lengths = {avail[m].shape[2] for m in temporal}
    if len(lengths) > 1:
        raise ValueError(
            f"multitemporal modalities must share one time axis, got T = "
            f"{ {m: avail[m].shape[2] for m in temporal} }"
        )
    steps = np.zeros(lengths.pop(), dtype=bool)
    for m in temporal:
        steps |= avail[m].any(axis=(0, 1, 3))
    return steps


class MaskingStrategy(ABC):
    """Assigns each available token of one sample a `MaskValue` (see the module docstring)."""

    @property
    def decode_only_modalities(self) -> tuple[str, ...]:
        """Modalities whose available tokens are always DECODER, never ENCODER."""
        return ()

    @abstractmethod
    def __call__(
        self, tokens: dict[str, np.ndarray], rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        """Return new int8 [h, w, T, S] masks for `tokens` (ENCODER or MISSING on input)."""


class NoMasking(MaskingStrategy):
    """Every available token is ENCODER: for embedding whole samples (predict, evals)."""

    def __call__(
        self, tokens: dict[str, np.ndarray], rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        """Return copies of `tokens` (ENCODER where available, MISSING elsewhere)."""
        return {name: np.asarray(t, dtype=np.int8).copy() for name, t in tokens.items()}


class RatioMasking(MaskingStrategy):
    """Base of the strategies that split units by `encode_ratio` and `decode_ratio`.

    Subclasses implement `_mask`, which fills ``out`` for the modalities that may be encoded;
    `__call__` handles missing tokens and ``decode_only_modalities``.
    """

    def __init__(
        self,
        encode_ratio: float = 0.5,
        decode_ratio: float = 0.5,
        decode_only_modalities: Sequence[str] = (),
    ) -> None:
        """Validate and store the ratios.

        Args:
            encode_ratio: fraction of available units given to the encoder, in (0, 1].
            decode_ratio: fraction of available units the decoder predicts, in (0, 1].
                ``encode_ratio + decode_ratio <= 1``; the remainder is TARGET_ONLY.
            decode_only_modalities: modalities that are only ever decoded (all DECODER).

        """
        for label, ratio in (("encode_ratio", encode_ratio), ("decode_ratio", decode_ratio)):
            if not 0.0 < ratio <= 1.0:
                raise ValueError(f"{label} must be in (0, 1], got {ratio}")
        if encode_ratio + decode_ratio > 1.0 + 1e-9:
            raise ValueError(
                f"encode_ratio + decode_ratio must be <= 1, got {encode_ratio} + {decode_ratio}"
            )
        for name in decode_only_modalities:
            get_modality(name)  # raises KeyError listing the known modalities
        self.encode_ratio = encode_ratio
        self.decode_ratio = decode_ratio
        self._decode_only = tuple(decode_only_modalities)

    @property
    def decode_only_modalities(self) -> tuple[str, ...]:
        """Modalities whose available tokens are always DECODER, never ENCODER."""
        return self._decode_only

    def __call__(
        self, tokens: dict[str, np.ndarray], rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        """Return new int8 [h, w, T, S] masks for `tokens` (ENCODER or MISSING on input)."""
        avail: dict[str, np.ndarray] = {}
        out: dict[str, np.ndarray] = {}
        for name, tok in tokens.items():
            if tok.ndim != 4:
                raise ValueError(f"tokens[{name!r}] must be [h, w, T, S], got shape {tok.shape}")
            avail[name] = tok != _MIS
            out[name] = np.full(tok.shape, _MIS, dtype=np.int8)
            if name in self._decode_only:
                out[name][avail[name]] = _DEC
        self._mask([m for m in tokens if m not in self._decode_only], avail, out, rng)
        return out

    @abstractmethod
    def _mask(self, names: list[str], avail: Masks, out: Masks, rng: np.random.Generator) -> None:
        """Write the masks of modalities `names` into `out` (bool `avail`: token present)."""

    def _fates(self, present: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """int8 fates for the units of a bool array: split by the ratios, MISSING if absent."""
        idx = np.flatnonzero(present)
        n_enc, n_dec = split_counts(idx.size, self.encode_ratio, self.decode_ratio)
        fates = np.full(present.shape, _MIS, dtype=np.int8)
        flat = fates.reshape(-1)
        flat[idx] = _TGT
        order = rng.permutation(idx)
        flat[order[:n_enc]] = _ENC
        flat[order[n_enc : n_enc + n_dec]] = _DEC
        return fates

    def _mask_tokens(
        self, names: list[str], avail: Masks, out: Masks, rng: np.random.Generator
    ) -> None:
        """Token-wise random masking, pooled over all tokens of `names`."""
        if not names:
            return
        fates = self._fates(np.concatenate([avail[m].reshape(-1) for m in names]), rng)
        offsets = np.cumsum([avail[m].size for m in names])[:-1]
        for name, part in zip(names, np.split(fates, offsets)):
            out[name] = part.reshape(avail[name].shape)


class RandomMasking(RatioMasking):
    """Units are the individual available tokens, pooled over all modalities of the sample."""

    def _mask(self, names: list[str], avail: Masks, out: Masks, rng: np.random.Generator) -> None:
        self._mask_tokens(names, avail, out, rng)


class SpaceMasking(RatioMasking):
    """Units are spatial positions (i, j) of the shared token grid.

    Every token of every spatial modality at a position (all timesteps and band sets) shares
    that position's fate; positions with no available token do not count. Tokens of
    non-spatial modalities (era5) are split token-wise at random as a separate pool. With
    fewer than 2 available positions the sample falls back to `RandomMasking`.
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
    that timestep's fate; timesteps with no available token do not count. Tokens of static
    modalities (srtm, worldcover...) are split token-wise at random as a separate pool. With
    fewer than 2 available timesteps the sample falls back to `RandomMasking`.
    """

    def _mask(self, names: list[str], avail: Masks, out: Masks, rng: np.random.Generator) -> None:
        steps = _timestep_presence(names, avail)
        if steps is None or steps.sum() < 2:
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

    Time masking is only chosen when the sample has at least 2 available timesteps.
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
        steps = _timestep_presence(names, avail)
        if use_time and steps is not None and steps.sum() >= 2:
            self.time._mask(names, avail, out, rng)
        else:
            self.space._mask(names, avail, out, rng)


class RandomTimeWithDecodeMasking(RatioMasking):
    """Band sets are split into encode-only and decode-only ones, then masked by token or time.

    Equivalent of upstream ``random_time_with_decode``:

    1. ``decode_only_modalities`` are all DECODER (as in every strategy here).
    2. The other available (modality, band set) pairs are split by `split_counts`: encode band
       sets only ever hold ENCODER / TARGET_ONLY tokens, decode band sets only DECODER /
       TARGET_ONLY (any leftover band sets, when the ratios sum below 1, are all TARGET_ONLY).
    3. Within the band sets, with probability `random_probability` (or when fewer than 2
       timesteps are available) tokens are picked at random: ``round(n * encode_ratio)`` of an
       encode band set's n tokens are ENCODER, ``round(n * decode_ratio)`` of a decode band
       set's are DECODER (at least 1). Otherwise the available timesteps are split by
       `split_counts` into encode and decode steps, and a multitemporal band set takes its role
       at its steps only; static band sets, and band sets with no data at their steps, fall
       back to the random pick.

    So the encoded fraction of tokens is about ``encode_ratio ** 2``. With a single band set
    the sample is masked token-wise (`RandomMasking`). Differences from upstream: era5-like
    non-spatial series follow the time split too, and counts round half up rather than
    ceil / floor. ``random_probability=1`` gives upstream ``random_with_decode``.
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

    def _mask(self, names: list[str], avail: Masks, out: Masks, rng: np.random.Generator) -> None:
        band_sets = [
            (m, int(s))
            for m in names
            for s in np.flatnonzero(avail[m].reshape(-1, avail[m].shape[3]).any(axis=0))
        ]
        if len(band_sets) <= 1:
            self._mask_tokens(names, avail, out, rng)
            return
        roles = self._fates(np.ones(len(band_sets), dtype=bool), rng)
        steps = _timestep_presence(names, avail)
        step_fates = None
        if steps is not None and steps.sum() >= 2 and rng.random() >= self.random_probability:
            step_fates = self._fates(steps, rng)[None, None, :]
        for (m, s), role in zip(band_sets, roles):
            present = avail[m][..., s]
            if role == _TGT:
                out[m][..., s] = np.where(present, _TGT, _MIS)
                continue
            if step_fates is not None and get_modality(m).is_multitemporal:
                hit = present & (step_fates == role)
                if hit.any():
                    out[m][..., s] = np.where(hit, role, np.where(present, _TGT, _MIS))
                    continue
            ratio = self.encode_ratio if role == _ENC else self.decode_ratio
            idx = np.flatnonzero(present)
            count = min(idx.size, max(1, math.floor(idx.size * ratio + 0.5)))
            fates = np.where(present, _TGT, _MIS).reshape(-1)
            fates[rng.permutation(idx)[:count]] = role
            out[m][..., s] = fates.reshape(present.shape)


class ModalityCrossMasking(MaskingStrategy):
    """Apply `base`, then keep each band set either encoder-side or decoder-side.

    The sample's available (modality, band set) pairs are split at random into an encode set
    and a decode set: in encode-set band sets the base's DECODER tokens become TARGET_ONLY, in
    decode-set band sets its ENCODER tokens do. So the model predicts some band sets from the
    others. Band sets of the base's ``decode_only_modalities`` are always in the decode set.

    The encode set has ``k`` band sets, ``k`` uniform in [`min_encoded_band_sets`,
    `max_encoded_band_sets`] (clipped to leave a decode set); it always contains a band set
    with ENCODER tokens and the decode set one with DECODER tokens, so both survive. With
    `allow_same_band_set`, each encode-set band set is also in the decode set with probability
    0.5, keeping the base mask there. The base mask is returned unchanged when fewer than 2
    band sets are available or no such pair of distinct band sets exists. Unlike upstream
    (whose presets default to at least 2 encoded band sets), the default minimum is 1, and
    tokens the base masked at random (e.g. era5 under space masking) are not forced to one role.
    """

    def __init__(
        self,
        base: MaskingStrategy | None = None,
        min_encoded_band_sets: int = 1,
        max_encoded_band_sets: int | None = None,
        allow_same_band_set: bool = False,
    ) -> None:
        """Store the parts.

        Args:
            base: the strategy applied first; `RandomMasking()` when None.
            min_encoded_band_sets: fewest band sets in the encode set (>= 1).
            max_encoded_band_sets: most band sets in the encode set; None for no limit.
            allow_same_band_set: let band sets be in both sets (then they keep the base mask).

        """
        if min_encoded_band_sets < 1:
            raise ValueError(f"min_encoded_band_sets must be >= 1, got {min_encoded_band_sets}")
        if max_encoded_band_sets is not None and max_encoded_band_sets < min_encoded_band_sets:
            raise ValueError(
                f"max_encoded_band_sets ({max_encoded_band_sets}) must be >= "
                f"min_encoded_band_sets ({min_encoded_band_sets})"
            )
        self.base = base if base is not None else RandomMasking()
        self.min_encoded_band_sets = min_encoded_band_sets
        self.max_encoded_band_sets = max_encoded_band_sets
        self.allow_same_band_set = allow_same_band_set

    @property
    def decode_only_modalities(self) -> tuple[str, ...]:
        """The base strategy's decode-only modalities."""
        return self.base.decode_only_modalities

    def __call__(
        self, tokens: dict[str, np.ndarray], rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        """Return new int8 [h, w, T, S] masks for `tokens` (ENCODER or MISSING on input)."""
        masks = self.base(tokens, rng)
        names = list(masks)
        flat = [masks[m].reshape(-1, masks[m].shape[3]) for m in names]
        n_avail = np.concatenate([(f != _MIS).sum(axis=0) for f in flat])
        has_enc = np.concatenate([(f == _ENC).any(axis=0) for f in flat])
        has_dec = np.concatenate([(f == _DEC).any(axis=0) for f in flat])
        fixed = np.concatenate(
            [np.full(f.shape[1], m in self.decode_only_modalities) for m, f in zip(names, flat)]
        )
        present = n_avail > 0
        cand = np.flatnonzero(present & ~fixed)
        n_fixed = int((present & fixed).sum())
        enc_ok = cand[has_enc[cand]]
        if cand.size + n_fixed < 2 or enc_ok.size == 0:
            return masks
        first_enc = rng.choice(enc_ok)
        dec_ok = np.flatnonzero(present & has_dec)
        dec_ok = dec_ok[dec_ok != first_enc]
        if dec_ok.size == 0:
            return masks
        first_dec = rng.choice(dec_ok)
        rest = cand[(cand != first_enc) & (cand != first_dec)]

        high = cand.size if (n_fixed or self.allow_same_band_set) else cand.size - 1
        if self.max_encoded_band_sets is not None:
            high = min(high, self.max_encoded_band_sets)
        low = min(self.min_encoded_band_sets, high)
        k = min(int(rng.integers(low, high + 1)), rest.size + 1)
        encode = np.zeros(present.size, dtype=bool)
        encode[first_enc] = True
        encode[rng.permutation(rest)[: k - 1]] = True
        decode = present & ~encode
        if self.allow_same_band_set:
            decode |= encode & (rng.random(present.size) < 0.5)

        start = 0
        for m, f in zip(names, flat):
            stop = start + f.shape[1]
            arr = masks[m]
            arr = np.where((arr == _DEC) & ~decode[start:stop], _TGT, arr)
            masks[m] = np.where((arr == _ENC) & ~encode[start:stop], _TGT, arr)
            start = stop
        return masks


class _ModalityCrossPreset(ModalityCrossMasking):
    """`ModalityCrossMasking` over a fixed base class, built from ratios (flat config keys)."""

    base_class: type[RatioMasking]

    def __init__(
        self,
        encode_ratio: float = 0.5,
        decode_ratio: float = 0.5,
        decode_only_modalities: Sequence[str] = (),
        min_encoded_band_sets: int = 1,
        max_encoded_band_sets: int | None = None,
        allow_same_band_set: bool = False,
    ) -> None:
        """Build the base from the ratios; see `RatioMasking` and `ModalityCrossMasking`."""
        super().__init__(
            self.base_class(encode_ratio, decode_ratio, decode_only_modalities),
            min_encoded_band_sets,
            max_encoded_band_sets,
            allow_same_band_set,
        )


class ModalityCrossRandomMasking(_ModalityCrossPreset):
    """`ModalityCrossMasking` over `RandomMasking` (upstream ``modality_cross_random``)."""

    base_class = RandomMasking


class ModalityCrossSpaceMasking(_ModalityCrossPreset):
    """`ModalityCrossMasking` over `SpaceMasking` (upstream ``modality_cross_space``)."""

    base_class = SpaceMasking


class ModalityCrossTimeMasking(_ModalityCrossPreset):
    """`ModalityCrossMasking` over `TimeMasking` (upstream ``modality_cross_time``)."""

    base_class = TimeMasking
