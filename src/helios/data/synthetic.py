"""A seeded synthetic H5 training set with plausible spectra per land-cover class.

Each sample gets a smooth land-cover map (water, tree cover, cropland, built-up, bare) and every
modality is rendered from it: class spectra with a vegetation season for optical sensors, class
backscatter in dB for Sentinel-1, an elevation field for SRTM and the matching WorldCover codes.
Timesteps go missing per modality, and whole modalities go missing per sample, at set rates, so
loaders and masking see the gaps real data has.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from helios.data.h5 import (
    Compression,
    dataset_dirname,
    recipe_dirname,
    sample_filename,
    write_metadata,
    write_sample,
)
from helios.data.modalities import get_modality

CLASSES = ("water", "tree", "crop", "built", "bare")
WORLDCOVER_CODE = {"water": 80, "tree": 10, "crop": 40, "built": 50, "bare": 60}

# Surface reflectance x 10000 for Sentinel-2 band order B02 B03 B04 B08 B05 B06 B07 B8A B11 B12
# B01 B09 (B10 appended for L1C), from typical library spectra.
_S2 = {
    "water": [600, 700, 500, 300, 450, 350, 320, 300, 150, 100, 700, 80, 10],
    "tree": [300, 550, 300, 3200, 800, 2200, 2800, 3100, 1500, 700, 350, 900, 15],
    "crop": [500, 800, 600, 2800, 1100, 2000, 2500, 2700, 2200, 1300, 550, 850, 15],
    "built": [1100, 1200, 1300, 1800, 1400, 1600, 1700, 1800, 2200, 2000, 1100, 700, 20],
    "bare": [1300, 1600, 2000, 2600, 2200, 2400, 2500, 2600, 3200, 2800, 1200, 900, 20],
}
_S1_DB = {
    "water": (-22, -28),
    "tree": (-8, -14),
    "crop": (-10, -17),
    "built": (-4, -10),
    "bare": (-12, -19),
}
_VEGETATED = {"tree": 0.3, "crop": 0.8}  # seasonal amplitude of the NIR/red-edge swing


@dataclass
class SyntheticDataset:
    """Where the synthetic set was written and what it contains."""

    root: Path
    class_maps: np.ndarray
    """uint8 [N, S, S] land-cover class index per 10 m pixel (index into `CLASSES`)."""
    modalities: tuple[str, ...]


def _class_map(rng: np.random.Generator, size: int) -> np.ndarray:
    """A blobby class map: a coarse random grid, upsampled and jittered at the edges."""
    cells = max(2, size // 16)
    coarse = rng.integers(0, len(CLASSES), size=(cells, cells))
    rep = -(-size // cells)
    fine = np.kron(coarse, np.ones((rep, rep), dtype=coarse.dtype))[:size, :size]
    shift = rng.integers(-2, 3, size=(2,))
    return np.asarray(np.roll(fine, tuple(shift), axis=(0, 1)), dtype=np.uint8)


def _optical(
    cmap: np.ndarray, months: np.ndarray, bands: int, rng: np.random.Generator
) -> np.ndarray:
    """Reflectance [H, W, T, bands] with a vegetation season and sensor noise."""
    table = np.array([_S2[c][:bands] for c in CLASSES], dtype=np.float32)  # [K, bands]
    base = table[cmap]  # [H, W, bands]
    season = np.sin((months - 4) / 12.0 * 2 * np.pi)  # peaks mid-summer
    amp = np.zeros(len(CLASSES), dtype=np.float32)
    for name, a in _VEGETATED.items():
        amp[CLASSES.index(name)] = a
    gain = 1.0 + amp[cmap][..., None] * season[None, None, :] * 0.5  # [H, W, T]
    out = base[:, :, None, :] * gain[..., None]
    out += rng.normal(0, 40, size=out.shape).astype(np.float32)
    return np.asarray(np.clip(out, 1, 10000), dtype=np.float32)


def _upsample_bandsets(arr: np.ndarray, modality: str) -> np.ndarray:
    """Make coarser band sets blocky, as if stored upsampled from their native grid."""
    spec = get_modality(modality)
    out = arr.copy()
    for bs, sl in zip(spec.band_sets, spec.band_set_slices()):
        k = bs.resolution_factor // spec.grid_factor
        if k <= 1:
            continue
        h, w = arr.shape[:2]
        block = arr[: h - h % k or h : k, : w - w % k or w : k, ..., sl]
        out[..., sl] = np.repeat(np.repeat(block, k, axis=0), k, axis=1)[:h, :w]
    return out


def make_synthetic_dataset(
    out_root: Path | str,
    num_samples: int = 8,
    *,
    size: int = 64,
    num_timesteps: int = 6,
    modalities: Sequence[str] = ("sentinel2_l2a", "sentinel1", "srtm", "worldcover"),
    missing_timestep_rate: float = 0.2,
    missing_modality_rate: float = 0.15,
    compression: Compression | None = None,
    seed: int = 0,
) -> SyntheticDataset:
    """Write a synthetic H5 training set in the FORMATS §2 layout and return its directory.

    `size` is the sample side in 10 m pixels. The first modality is never dropped, so every
    sample has data. The directory is `<out_root>/<recipe>/<modalities>/<num_samples>/`.
    """
    compression = compression or Compression("zstd", 3)
    rng = np.random.default_rng(seed)
    root = (
        Path(out_root)
        / recipe_dirname(compression, 128 if size <= 128 else 256)
        / dataset_dirname(modalities)
        / str(num_samples)
    )
    root.mkdir(parents=True, exist_ok=True)
    rows, latlons, maps = [], [], []
    for i in range(num_samples):
        cmap = _class_map(rng, size)
        maps.append(cmap)
        year = int(rng.integers(2019, 2024))
        months = np.arange(1, num_timesteps + 1) % 12
        months[months == 0] = 12
        timestamps = np.stack([np.full(num_timesteps, 15), months, np.full(num_timesteps, year)], 1)
        latlon = np.array([rng.uniform(-60, 70), rng.uniform(-180, 180)], dtype=np.float32)
        data: dict[str, np.ndarray] = {}
        present: dict[str, np.ndarray] = {}
        for j, name in enumerate(modalities):
            if j > 0 and rng.random() < missing_modality_rate:
                continue
            spec = get_modality(name)
            if spec.is_multitemporal:
                keep = rng.random(num_timesteps) >= missing_timestep_rate
                if j == 0:
                    keep[0] = True
                if not keep.any():
                    continue
                present[name] = keep
            arr = _render(name, cmap, months, rng)
            if spec.is_multitemporal and spec.is_spatial:
                arr = arr[:, :, present[name]]
            elif spec.is_multitemporal:
                arr = arr[present[name]]
            data[name] = arr.astype(spec.dtype)
        write_sample(root / sample_filename(i), data, timestamps, latlon, present, compression)
        rows.append((i, list(data)))
        latlons.append(latlon)
    write_metadata(root, rows, list(modalities), compression, np.stack(latlons))
    return SyntheticDataset(root=root, class_maps=np.stack(maps), modalities=tuple(modalities))


def _render(
    name: str, cmap: np.ndarray, months: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """One modality's full-time-axis array for a class map."""
    spec = get_modality(name)
    k = spec.pixels_per_ref_pixel
    fine = np.kron(cmap, np.ones((k, k), dtype=cmap.dtype)) if k > 1 else cmap
    t = len(months)
    if name in ("sentinel2_l2a", "sentinel2"):
        return _upsample_bandsets(_optical(fine, months, spec.num_bands, rng), name)
    if name == "landsat":
        # Landsat order B8 | B1 B2 B3 B4 B5 B6 B7 B9 B10 B11 from the nearest Sentinel-2 bands
        s2 = _optical(fine, months, 13, rng)
        pick = [3, 10, 0, 1, 2, 3, 8, 9, 12, 12, 12]
        out = s2[..., pick] * 2.0 + 5000  # Landsat L1 DNs sit around 5000-30000
        out[..., 9:] = 22000 + rng.normal(0, 300, size=out[..., 9:].shape)  # thermal
        return _upsample_bandsets(out, name)
    if name == "sentinel1":
        table = np.array([_S1_DB[c] for c in CLASSES], dtype=np.float32)
        base = table[fine][:, :, None, :]
        noise = rng.normal(0, 1.5, size=(*fine.shape, t, 2)).astype(np.float32)
        return base + noise
    if name == "srtm":
        yy, xx = np.mgrid[0 : fine.shape[0], 0 : fine.shape[1]].astype(np.float32)
        slope = rng.uniform(-2, 2, size=2)
        elev = 200 + slope[0] * yy + slope[1] * xx + 30 * (cmap_value(fine, "bare"))
        return np.clip(elev, 0, None)[..., None]
    if name == "worldcover":
        codes = np.array([WORLDCOVER_CODE[c] for c in CLASSES], dtype=np.uint8)
        return codes[fine][..., None]
    if name == "openstreetmap_raster":
        out = np.zeros((*fine.shape, spec.num_bands), dtype=np.uint8)
        out[..., spec.band_index("building")] = cmap_value(fine, "built")
        out[..., spec.band_index("river")] = cmap_value(fine, "water")
        return out
    if name == "era5":
        temp = 283 + 10 * np.sin((months - 4) / 12 * 2 * np.pi)
        cols = [
            temp,
            temp - 5,
            np.full(t, 101000.0),
            rng.normal(0, 2, t),
            rng.normal(0, 2, t),
            rng.gamma(1.0, 0.002, t),
        ]
        return np.stack(cols, axis=1).astype(np.float32)
    return rng.integers(0, 100, size=(*fine.shape, spec.num_bands)).astype(np.float32)


def cmap_value(cmap: np.ndarray, name: str) -> np.ndarray:
    """1 where the class map holds class `name`, else 0."""
    return (cmap == CLASSES.index(name)).astype(np.uint8)


# -- the learnability set (bench/learnability.py) -----------------------------------------------

LEARNABILITY_MODALITIES = ("sentinel2_l2a", "sentinel1", "landsat")
LEARNABILITY_FACTORS = ("phenology", "texture", "agreement")
"""Binary factors of a learnability sample; its class is ``4 * phenology + 2 * texture +
agreement`` (8 classes)."""
_PAIRS = (("bare", "crop"), ("built", "tree"))
"""(background, vegetation) cover pairs a sample draws from (a nuisance, the same per class)."""
_SEASON = np.array([-0.3, -0.2, -0.3, 0.5, 0.1, 0.4, 0.5, 0.5, 0.1, 0.0, -0.1, 0.3, 0.0])
"""Relative seasonal swing of vegetation per Sentinel-2 band (the `_S2` order)."""
_LANDSAT_FROM_S2 = [3, 10, 0, 1, 2, 3, 8, 9, 12, 12, 12]
_FACTOR_CODES = ((np.arange(8)[:, None] >> np.array([2, 1, 0])) & 1).astype(np.int64)
"""[8, 3] factor values of each class."""


@dataclass
class LearnabilityDataset:
    """The unlabelled training set and the labelled held-out set of `make_learnability_dataset`."""

    train: Path
    """H5 directory of the pretraining samples (no labels)."""
    heldout: Path
    """H5 directory of the held-out samples, in label order."""
    factors: np.ndarray
    """int [N_heldout, 3] factor values (`LEARNABILITY_FACTORS`) of the held-out samples."""

    @property
    def labels(self) -> np.ndarray:
        """Class of each held-out sample, int [N_heldout] in 0-7."""
        return np.asarray(self.factors @ np.array([4, 2, 1]), dtype=np.int64)

    @classmethod
    def open(cls, out_root: Path | str) -> LearnabilityDataset:
        """The set `make_learnability_dataset(out_root, ...)` wrote."""
        train = next((Path(out_root) / "train").glob("*/*/*"))
        heldout = next((Path(out_root) / "heldout").glob("*/*/*"))
        n = int(heldout.name)
        return cls(train, heldout, _FACTOR_CODES[np.arange(n) % 8])


def _cell_map(rng: np.random.Generator, cells: int, clustered: bool) -> np.ndarray:
    """A bool [cells, cells] map, half True: one smooth region, or a near-checkerboard."""
    n = cells * cells
    if clustered:
        yy, xx = np.mgrid[0:cells, 0:cells].astype(np.float64)
        angle, shift = rng.uniform(0, 2 * np.pi, size=2)
        field = np.cos(angle) * yy + np.sin(angle) * xx + 0.8 * np.cos(yy * 1.3 + xx + shift)
        field += rng.normal(0, 0.05, size=field.shape)
    else:
        field = np.indices((cells, cells)).sum(0) % 2 + rng.normal(0, 0.05, size=(cells, cells))
        flip = rng.choice(n, size=2, replace=False)  # swap one pair: not a perfect checkerboard
        flat = field.reshape(-1)
        flat[flip] = flat[flip[::-1]]
    out = np.zeros(n, dtype=bool)
    out[np.argsort(field.reshape(-1))[n // 2 :]] = True
    return out.reshape(cells, cells)


def _learnability_arrays(
    rng: np.random.Generator,
    factors: np.ndarray,
    size: int,
    cell: int,
    steps: int,
    phase_jitter: float,
) -> dict[str, np.ndarray]:
    """Sentinel-2 reflectance, Sentinel-1 dB and Landsat DNs [H, W, T, C] of one sample."""
    phenology, texture, agreement = (bool(v) for v in factors)
    cells = size // cell
    maps = [_cell_map(rng, cells, bool(texture))]
    maps.append(maps[0] if agreement else _cell_map(rng, cells, bool(texture)))
    background, vegetation = _PAIRS[int(rng.integers(len(_PAIRS)))]
    shift = rng.uniform(-phase_jitter, phase_jitter) / 12  # in years
    season = np.sin(2 * np.pi * (1 + phenology) * (np.arange(steps) / steps + shift))
    gain = rng.uniform(0.85, 1.15)
    optical, radar = [], []
    for veg_cells in maps:
        veg = np.kron(veg_cells, np.ones((cell, cell), dtype=bool))[..., None, None]  # [H, W, 1, 1]
        spectra = np.where(veg, np.array(_S2[vegetation]), np.array(_S2[background]))
        swing = 1 + np.where(veg, _SEASON * season[:, None], 0.0)  # [H, W, T, 13]
        refl = gain * spectra * swing + rng.normal(0, 40, size=(size, size, steps, 13))
        optical.append(np.clip(refl, 1, 10000))
        db = np.where(veg, np.array(_S1_DB[vegetation]), np.array(_S1_DB[background]))
        db = db + np.where(veg, np.array([1.5, 2.5]) * season[:, None], 0.0)
        radar.append(db + rng.normal(0, 0.8, size=(size, size, steps, 2)))
    s2 = _upsample_bandsets(optical[0][..., :12].astype(np.float32), "sentinel2_l2a")
    landsat = optical[1][..., _LANDSAT_FROM_S2] * 2.0 + 5000
    landsat[..., 9:] = 22000 + rng.normal(0, 300, size=landsat[..., 9:].shape)
    return {
        "sentinel2_l2a": s2,
        "sentinel1": radar[1].astype(np.float32),
        "landsat": _upsample_bandsets(landsat.astype(np.float32), "landsat"),
    }


@dataclass(frozen=True)
class LearnabilityOptions:
    """How `make_learnability_dataset` renders its samples."""

    size: int = 32
    """Tile side in 10 m pixels."""
    cell: int = 8
    """Side of a land-cover cell in pixels (one token at patch size 8)."""
    timesteps: tuple[int, ...] = (12,)
    """Series lengths a sample draws from, each spread evenly over one year."""
    phase_jitter: float = 1.0
    """Green-up dates vary uniformly by up to this many months."""
    missing_timestep_rate: float = 0.0
    """Chance that a modality misses a timestep."""


def _write_learnability_split(
    root: Path,
    factors: np.ndarray,
    rng: np.random.Generator,
    options: LearnabilityOptions,
    compression: Compression,
) -> None:
    """One H5 directory with a sample per row of `factors`."""
    root.mkdir(parents=True, exist_ok=True)
    rows, latlons = [], []
    for i, f in enumerate(factors):
        steps = int(rng.choice(np.asarray(options.timesteps)))
        arrays = _learnability_arrays(
            rng, f, options.size, options.cell, steps, options.phase_jitter
        )
        months = 1 + (np.arange(steps) * 12) // steps
        year = int(rng.integers(2019, 2024))
        timestamps = np.stack([np.full(steps, 15), months, np.full(steps, year)], 1)
        data, present = {}, {}
        for j, (name, arr) in enumerate(arrays.items()):
            keep = rng.random(steps) >= options.missing_timestep_rate
            if j == 0 and not keep.any():
                keep[0] = True
            if not keep.any():
                continue
            present[name] = keep
            data[name] = arr[:, :, keep].astype(get_modality(name).dtype)
        latlon = np.array([rng.uniform(-60, 70), rng.uniform(-180, 180)], dtype=np.float32)
        write_sample(root / sample_filename(i), data, timestamps, latlon, present, compression)
        rows.append((i, list(data)))
        latlons.append(latlon)
    write_metadata(root, rows, list(LEARNABILITY_MODALITIES), compression, np.stack(latlons))


def make_learnability_dataset(
    out_root: Path | str,
    num_train: int = 1024,
    num_heldout: int = 480,
    *,
    options: LearnabilityOptions | None = None,
    seed: int = 0,
) -> LearnabilityDataset:
    """Write the learnability study's training set and labelled held-out set.

    Every sample is a tile of Sentinel-2 L2A, Sentinel-1 and Landsat (12 monthly timesteps by
    default, `LearnabilityOptions`) made of cells of a background and a vegetation cover, half
    of the cells each. Three binary factors set its class, and none of them changes the
    distribution of any band's per-sample mean:

    - phenology: vegetation greens up once or twice a year (whole cycles, so the time mean is
      the same);
    - texture: the vegetation cells form one smooth region, or a near-checkerboard;
    - agreement: Sentinel-1 and Landsat see the same cell map as Sentinel-2, or another map
      of the same texture.

    Nuisances shared by all classes: the cover pair, an optical gain in [0.85, 1.15], the
    green-up date, pixel noise (and missing timesteps, if asked for). Classes are balanced in
    both sets.
    """
    options = options or LearnabilityOptions()
    compression = Compression("zstd", 3)
    rng = np.random.default_rng(seed)
    base = Path(out_root)
    recipe = recipe_dirname(compression, options.size)
    splits = {}
    for split, n in (("train", num_train), ("heldout", num_heldout)):
        factors = _FACTOR_CODES[np.arange(n) % 8]
        if split == "train":
            factors = factors[rng.permutation(n)]
        root = base / split / recipe / dataset_dirname(LEARNABILITY_MODALITIES) / str(n)
        _write_learnability_split(root, factors, rng, options, compression)
        splits[split] = (root, factors)
    return LearnabilityDataset(splits["train"][0], splits["heldout"][0], splits["heldout"][1])
