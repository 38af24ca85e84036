"""The masking contract and its counting rules; the strategies are in `helios.data.masking`.

A strategy is called once per sample (inside DataLoader workers) on the sample's token grid:
``tokens[modality]`` is int8 [h, w, T, S] (token grid, timesteps, band sets) in which every
token is `MaskValue.ENCODER` (available) or `MaskValue.MISSING`. It returns new int8 arrays of
the same shapes where every available token is ENCODER, TARGET_ONLY or DECODER and every missing
token stays MISSING. All randomness comes from the `rng` argument, so a seed fixes the mask.

Strategies split *units* (tokens, positions, timesteps or band sets, depending on the strategy)
with `split_counts`: of ``n`` available units, ``floor(n * encode_ratio)`` are ENCODER and
``floor(n * decode_ratio)`` DECODER (as OlmoEarth's reference implementation counts), each at
least 1 and clipped so that both fit when ``n >= 2``; the rest are TARGET_ONLY. A single unit is
ENCODER; no unit, nothing to do. Token-wise splits are made per modality with plain floors, as
the reference's; a sample they leave without an encoder or a decoder token is split again over
all of its tokens together.

``decode_only_modalities`` (maps such as worldcover used only as targets) take no part in the
split: all their available tokens are DECODER and none is ever ENCODER.
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

    Rounds down (the reference's ``int(n * ratio)``); with ``n >= 2`` both counts are at least 1
    and sum to at most ``n``. One unit is encoded, ``(1, 0)``; zero units give ``(0, 0)``.
    """
    if n <= 1:
        return n, 0
    n_enc = min(max(1, int(n * encode_ratio)), n - 1)
    n_dec = min(max(1, int(n * decode_ratio)), n - n_enc)
    return n_enc, n_dec


def split_groups(n: int, encode_ratio: float) -> int:
    """How many of `n` >= 2 groups (band sets, timesteps) take the encoder role; the rest decode.

    ``ceil(n * encode_ratio)`` as the reference's ``*_with_decode`` strategies, kept in
    [1, n - 1] so that both roles exist.
    """
    return min(max(1, math.ceil(n * encode_ratio)), n - 1)


def timestep_presence(names: Sequence[str], avail: dict[str, np.ndarray]) -> np.ndarray | None:
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
        names = [m for m in tokens if m not in self._decode_only]
        self._mask(names, avail, out, rng)
        if sum(int(avail[m].sum()) for m in names) >= 2 and not has_both(out, names):
            self._mask_pooled(names, avail, out, rng)  # e.g. single-token modalities only
        return out

    @abstractmethod
    def _mask(self, names: list[str], avail: Masks, out: Masks, rng: np.random.Generator) -> None:
        """Write the masks of modalities `names` into `out` (bool `avail`: token present)."""

    def _fates(
        self, present: np.ndarray, rng: np.random.Generator, guard: bool = True
    ) -> np.ndarray:
        """int8 fates for the units of a bool array: split by the ratios, MISSING if absent.

        `guard`: `split_counts` (at least one unit of each role); else plain floors, as the
        reference splits each modality's tokens.
        """
        idx = np.flatnonzero(present)
        if guard or idx.size <= 1:
            n_enc, n_dec = split_counts(idx.size, self.encode_ratio, self.decode_ratio)
        else:
            n_enc, n_dec = int(idx.size * self.encode_ratio), int(idx.size * self.decode_ratio)
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
        """Token-wise random masking, each modality of `names` split on its own (floors)."""
        for name in names:
            out[name] = self._fates(avail[name], rng, guard=False)

    def _mask_pooled(
        self, names: list[str], avail: Masks, out: Masks, rng: np.random.Generator
    ) -> None:
        """Token-wise random masking, pooled over all tokens of `names`."""
        if not names:
            return
        fates = self._fates(np.concatenate([avail[m].reshape(-1) for m in names]), rng)
        offsets = np.cumsum([avail[m].size for m in names])[:-1]
        for name, part in zip(names, np.split(fates, offsets)):
            out[name] = part.reshape(avail[name].shape)


def has_both(out: Masks, names: Sequence[str]) -> bool:
    """Whether the masks of `names` hold at least one ENCODER and one DECODER token."""
    return any((out[m] == _ENC).any() for m in names) and any((out[m] == _DEC).any() for m in names)
