"""MADOS: marine debris and oil spill segmentation on Sentinel-2 patches (Kikaki et al., 2024).

On-disk format (Zenodo record 10664073, read unchanged)::

    <root>/splits/{train,val,test}_X.txt     one patch a line: <scene>_<crop>, e.g. Scene_0_1
    <root>/<scene>/10/<scene>_L2R_rhorc_<nm>_<crop>.tif   10 m bands (240 x 240 px)
    <root>/<scene>/20/<scene>_L2R_rhorc_<nm>_<crop>.tif   20 m bands (120 x 120 px)
    <root>/<scene>/60/<scene>_L2R_rhorc_<nm>_<crop>.tif   60 m band  (40 x 40 px)
    <root>/<scene>/10/<scene>_L2R_cl_<crop>.tif            class mask, 0 = not annotated
    <root>/<scene>/10/<scene>_L2R_conf_<crop>.tif          annotation confidence (not read)

Each band file holds one float32 band of ACOLITE Rayleigh-corrected reflectance (rhorc, about
0..0.2, NaN where invalid), named by its rounded central wavelength, which differs between
Sentinel-2A and -2B (e.g. 443 vs 442 for B01). Wavelengths map to band names by the nearest
S2A/S2B central wavelength (within 6 nm): 11 bands, B01 B02 B03 B04 B05 B06 B07 B08 B8A B11 B12;
B09 is missing. Coarser bands are upsampled onto the 10 m grid by pixel repeat (what MADOS's own
loader does with nearest resampling), values are scaled by `reflectance_scale` (10000, the
Sentinel-2 L2A digital-number scale of Helios's `sentinel2_l2a`, so pretraining stats apply),
and NaN becomes MISSING_VALUE. Labels are the mask minus one: 15 classes 0..14 and -1 (not
annotated) ignored. The files carry no acquisition date: every sample gets `timestamp`.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.warp import transform as warp_transform

from helios.data.modalities import MISSING_VALUE, get_modality
from helios.data.normalize import BandStats, NormStats
from helios.data.sample import Sample
from helios.evals.api import EvalDataset, EvalSample, Split, TaskSpec

MODALITY = "sentinel2_l2a"
CLASS_NAMES = (
    "marine_debris",
    "dense_sargassum",
    "sparse_floating_algae",
    "natural_organic_material",
    "ship",
    "oil_spill",
    "marine_water",
    "sediment_laden_water",
    "foam",
    "turbid_water",
    "shallow_water",
    "waves_and_wakes",
    "oil_platform",
    "jellyfish",
    "sea_snot",
)
IGNORE_INDEX = -1
CENTRAL_WAVELENGTHS_NM: dict[str, tuple[float, float]] = {
    "B01": (442.7, 442.3),
    "B02": (492.4, 492.1),
    "B03": (559.8, 559.0),
    "B04": (664.6, 665.0),
    "B05": (704.1, 703.8),
    "B06": (740.5, 739.1),
    "B07": (782.8, 779.7),
    "B08": (832.8, 833.0),
    "B8A": (864.7, 864.0),
    "B09": (945.1, 943.2),
    "B11": (1613.7, 1610.4),
    "B12": (2202.4, 2185.7),
}
"""Sentinel-2A and -2B central wavelengths (ESA) of the bands `sentinel2_l2a` has."""
WAVELENGTH_TOLERANCE_NM = 6.0
PUBLISHED_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
PUBLISHED_MEAN = (0.0582676, 0.05223386, 0.04381474, 0.0357083, 0.03412902, 0.03680401,
                  0.03999107, 0.03566642, 0.03965081, 0.0267993, 0.01978944)  # fmt: skip
PUBLISHED_STD = (0.03240627, 0.03432253, 0.0354812, 0.0375769, 0.03785412, 0.04992323,
                 0.05884482, 0.05545856, 0.06423746, 0.04211187, 0.03019115)  # fmt: skip
"""Per-band reflectance mean and std of MADOS's own loader (utils/dataset.py), same order."""
RESOLUTION_DIRS = ("10", "20", "60")


def band_for_wavelength(nm: int) -> str | None:
    """The band whose S2A or S2B central wavelength is within 6 nm of `nm`, or None."""
    best = min(
        CENTRAL_WAVELENGTHS_NM,
        key=lambda b: min(abs(nm - c) for c in CENTRAL_WAVELENGTHS_NM[b]),
    )
    gap = min(abs(nm - c) for c in CENTRAL_WAVELENGTHS_NM[best])
    return best if gap <= WAVELENGTH_TOLERANCE_NM else None


@dataclass(frozen=True)
class _Item:
    scene: str
    crop: str
    tile: int
    """Row-major tile index within the patch (0 without tiling)."""


class MADOS(EvalDataset):
    """MADOS semantic segmentation (see module docstring)."""

    def __init__(
        self,
        root: str | Path,
        split: Split = "train",
        tile_size: int | None = None,
        drop_unlabeled: bool = False,
        reflectance_scale: float = 10000.0,
        timestamp: tuple[int, int, int] = (1, 6, 2020),
    ) -> None:
        """Index one split.

        Args:
            root: the MADOS folder (holding `splits/` and the `Scene_*` folders).
            split: "train", "val" or "test" (`splits/<split>_X.txt`).
            tile_size: split each 240 px patch into square tiles of this side (must divide it);
                None keeps whole patches.
            drop_unlabeled: skip tiles without any annotated pixel (reads every mask up front).
            reflectance_scale: factor applied to the rhorc reflectances.
            timestamp: (day, month, year) given to every sample; the files carry no date.

        """
        self.root = Path(root)
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be train, val or test, not {split!r}")
        self.split: Split = split
        self.tile_size = tile_size
        self.reflectance_scale = reflectance_scale
        self.timestamp = timestamp
        self.task = TaskSpec(
            name="mados",
            kind="segmentation",
            num_classes=len(CLASS_NAMES),
            class_names=CLASS_NAMES,
            modalities=(MODALITY,),
            ignore_index=IGNORE_INDEX,
        )
        patches = self._read_split()
        self._tiles_per_side = 1
        if tile_size is not None and patches:
            side = self._read_mask(*patches[0]).shape[0]
            if tile_size <= 0 or side % tile_size:
                raise ValueError(f"tile_size {tile_size} must divide the patch side {side}")
            self._tiles_per_side = side // tile_size
        tiles = range(self._tiles_per_side**2)
        self.items = [_Item(s, c, t) for s, c in patches for t in tiles]
        if drop_unlabeled:
            self.items = [it for it in self.items if (self._label(it) != IGNORE_INDEX).any()]

    # ----------------------------------------------------------------------------- indexing

    def _read_split(self) -> list[tuple[str, str]]:
        if not self.root.is_dir():
            raise FileNotFoundError(f"MADOS folder not found: {self.root}")
        path = self.root / "splits" / f"{self.split}_X.txt"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing (MADOS split file)")
        patches = []
        for n, line in enumerate(path.read_text().splitlines(), start=1):
            name = line.strip()
            if not name:
                continue
            scene, sep, crop = name.rpartition("_")
            if not sep or not scene or not crop:
                raise ValueError(f"{path}, line {n}: expected <scene>_<crop>, got {name!r}")
            if not (self.root / scene).is_dir():
                raise FileNotFoundError(f"{self.root / scene}: scene folder missing ({path}:{n})")
            patches.append((scene, crop))
        return patches

    def _mask_path(self, scene: str, crop: str) -> Path:
        return self.root / scene / "10" / f"{scene}_L2R_cl_{crop}.tif"

    def _read_mask(self, scene: str, crop: str) -> np.ndarray:
        return _read_band(self._mask_path(scene, crop))[0]

    def _label(self, item: _Item, mask: np.ndarray | None = None) -> np.ndarray:
        if mask is None:
            mask = self._read_mask(item.scene, item.crop)
        if mask.min() < 0 or mask.max() > len(CLASS_NAMES):
            raise ValueError(
                f"{self._mask_path(item.scene, item.crop)}: class values must be in "
                f"0..{len(CLASS_NAMES)}, got {mask.min()}..{mask.max()}"
            )
        return self._crop(mask.astype(np.int64) - 1, item.tile)

    def _crop(self, arr: np.ndarray, tile: int) -> np.ndarray:
        if self.tile_size is None:
            return arr
        ty, tx = divmod(tile, self._tiles_per_side)
        s = self.tile_size
        return arr[ty * s : (ty + 1) * s, tx * s : (tx + 1) * s]

    def __len__(self) -> int:
        """Number of patches (or tiles) in the split."""
        return len(self.items)

    # ----------------------------------------------------------------------------- reading

    def __getitem__(self, index: int) -> EvalSample:
        """One patch (or tile) on the 10 m grid and its labels."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        item = self.items[index]
        mask_path = self._mask_path(item.scene, item.crop)
        mask = self._read_mask(item.scene, item.crop)
        label, side = self._label(item, mask), mask.shape[0]
        spec = get_modality(MODALITY)
        image = np.full((side, side, spec.num_bands), MISSING_VALUE, dtype=np.float32)
        seen: dict[str, Path] = {}
        pattern = re.compile(
            rf"{re.escape(item.scene)}_L2R_rhorc_(\d+)_{re.escape(item.crop)}\.tif"
        )
        for res in RESOLUTION_DIRS:
            folder = self.root / item.scene / res
            for path in sorted(folder.glob(f"{item.scene}_L2R_rhorc_*_{item.crop}.tif")):
                match = pattern.fullmatch(path.name)
                if match is None:
                    continue
                band = band_for_wavelength(int(match.group(1)))
                if band is None:
                    raise ValueError(
                        f"{path}: unknown band wavelength {match.group(1)} nm; known S2A/S2B "
                        f"central wavelengths: {CENTRAL_WAVELENGTHS_NM}"
                    )
                if band in seen:
                    raise ValueError(f"{path}: band {band} already read from {seen[band]}")
                seen[band] = path
                data = _read_band(path)[0].astype(np.float32)
                factor = int(res) // 10
                if data.shape[0] * factor != side or data.shape[1] * factor != side:
                    raise ValueError(
                        f"{path}: {data.shape} px at {res} m does not cover the {side} px "
                        f"10 m grid of {mask_path.name}"
                    )
                data = np.repeat(np.repeat(data, factor, axis=0), factor, axis=1)
                valid = np.isfinite(data)
                image[..., spec.band_index(band)] = np.where(
                    valid, data * self.reflectance_scale, MISSING_VALUE
                )
        if not seen:
            raise FileNotFoundError(
                f"{self.root / item.scene}: no <scene>_L2R_rhorc_<nm>_{item.crop}.tif band files"
            )
        tile = self._crop(image, item.tile)
        sample = Sample(
            arrays={MODALITY: tile[:, :, None, :]},
            present={MODALITY: np.ones(1, dtype=bool)},
            timestamps=np.asarray([self.timestamp], dtype=np.int32),
            latlon=self._latlon(mask_path, item.tile),
            source=str(mask_path),
        )
        return EvalSample(sample=sample, label=label)

    def _latlon(self, mask_path: Path, tile: int) -> np.ndarray:
        """Centre of the patch (or tile) in degrees; MISSING_VALUE for non-georeferenced files."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(mask_path) as src:
                crs, affine, side = src.crs, src.transform, src.height
        if crs is None or affine.is_identity:
            return np.full(2, MISSING_VALUE, dtype=np.float32)
        s = side if self.tile_size is None else self.tile_size
        ty, tx = divmod(tile, self._tiles_per_side)
        x, y = affine @ (tx * s + s / 2, ty * s + s / 2)
        lon, lat = warp_transform(crs, "EPSG:4326", [x], [y])
        return np.array([lat[0], lon[0]], dtype=np.float32)

    def stats(self) -> NormStats:
        """MADOS's published per-band mean and std, times `reflectance_scale` (B09 has none)."""
        k = self.reflectance_scale
        bands = {
            b: BandStats(m * k, s * k)
            for b, m, s in zip(PUBLISHED_BANDS, PUBLISHED_MEAN, PUBLISHED_STD)
        }
        return NormStats(bands={MODALITY: bands}, meta={"source": "MADOS utils/dataset.py"})


def _read_band(path: Path) -> np.ndarray:
    """All bands of a GeoTIFF; errors name the file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                return src.read()
    except RasterioError as err:
        raise ValueError(f"{path}: cannot read GeoTIFF ({err})") from err
