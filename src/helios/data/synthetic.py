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
