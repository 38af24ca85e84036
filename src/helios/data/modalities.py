"""The modality registry: every sensor Helios knows, its bands, band sets and grid.

Everything else (conversion, normalization, tokenization, evals, the runner) reads this
module. Adding a modality is one `ModalitySpec` entry in `MODALITIES`.

Resolutions are multiples of `BASE_RESOLUTION` (0.625 m): a resolution factor of 16 is 10 m,
32 is 20 m, 64 is 40 m and 4 is 2.5 m. A standard tile is `TILE_SIZE` (256) pixels at 10 m.
Band sets coarser than their modality's grid are stored upsampled (pixel repeat) onto it, so
one array per modality holds every band, in `band_order`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

BASE_RESOLUTION = 0.625
"""Metres per pixel at resolution factor 1."""

BASE_FACTOR = 16
"""The resolution factor of the 10 m reference grid that tiles, crops and tokens are counted on."""

TILE_SIZE = 256
"""Pixels per side of a standard tile on the 10 m reference grid (2.56 km)."""

MISSING_VALUE = -99999
"""Marks a missing pixel or timestep in H5 samples and in every array Helios hands around."""

SENTINEL1_NODATA = -32768
"""Nodata value of Sentinel-1 source rasters."""

WORLDCOVER_CLASSES = (10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 100)

OSM_FEATURES = (
    "aerialway_pylon",
    "aerodrome",
    "airstrip",
    "amenity_fuel",
    "building",
    "chimney",
    "communications_tower",
    "crane",
    "flagpole",
    "fountain",
    "generator_wind",
    "helipad",
    "highway",
    "leisure",
    "lighthouse",
    "obelisk",
    "observatory",
    "parking",
    "petroleum_well",
    "power_plant",
    "power_substation",
    "power_tower",
    "river",
    "runway",
    "satellite_dish",
    "silo",
    "storage_tank",
    "taxiway",
    "water_tower",
    "works",
)


@dataclass(frozen=True)
class BandSet:
    """A group of bands sampled at one resolution: the unit of tokenization."""

    bands: tuple[str, ...]
    """Band names, in storage order."""
    resolution_factor: int
    """Native resolution as a multiple of `BASE_RESOLUTION` (16 = 10 m)."""

    @property
    def resolution(self) -> float:
        """Native resolution in metres."""
        return self.resolution_factor * BASE_RESOLUTION


@dataclass(frozen=True)
class ModalitySpec:
    """Everything Helios needs to know about one modality."""

    name: str
    band_sets: tuple[BandSet, ...]
    is_multitemporal: bool
    """True for time series (stored [H, W, T, C]); False for static layers ([H, W, C])."""
    is_spatial: bool = True
    """False for per-tile series such as ERA5 (stored [T, C])."""
    nodata: float | None = None
    """Nodata value used by source rasters, mapped to `MISSING_VALUE` on conversion."""
    dtype: str = "uint16"
    """Storage dtype in H5 samples."""
    is_map: bool = False
    """Maps (land cover, OSM, elevation...) are usually prediction targets, not encoder inputs."""
    value_range: tuple[float, float] = (0.0, 10000.0)
    """Fixed fallback normalization range where no computed stats exist."""
    classes: tuple[int, ...] = field(default=())
    """Class codes of categorical maps."""

    @property
    def band_order(self) -> tuple[str, ...]:
        """Every band, band sets concatenated in order."""
        return tuple(b for bs in self.band_sets for b in bs.bands)

    @property
    def num_bands(self) -> int:
        """Total number of bands (channels) in the stored array."""
        return len(self.band_order)

    @property
    def num_band_sets(self) -> int:
        """Number of band sets, i.e. tokens per position and timestep."""
        return len(self.band_sets)

    @property
    def grid_factor(self) -> int:
        """Resolution factor of the modality's own grid: its finest band set."""
        return min(bs.resolution_factor for bs in self.band_sets)

    @property
    def pixels_per_ref_pixel(self) -> int:
        """Modality-grid pixels per 10 m reference pixel along one side (4 for 2.5 m OSM).

        Grids coarser than 10 m (which no shipped spatial modality has) are not supported.
        """
        if not self.is_spatial:
            return 1
        return max(1, BASE_FACTOR // self.grid_factor)

    def tile_pixels(self, ref_size: int = TILE_SIZE) -> int:
        """Pixels per side of this modality's array for a tile `ref_size` 10 m pixels wide."""
        return ref_size * self.pixels_per_ref_pixel

    def band_set_pixels(self, band_set: int, ref_size: int = TILE_SIZE) -> int:
        """Native pixels per side of one band set over a tile `ref_size` 10 m pixels wide."""
        factor = self.band_sets[band_set].resolution_factor
        return max(1, ref_size * BASE_FACTOR // factor)

    def band_set_slices(self) -> list[slice]:
        """Channel slices of each band set within `band_order`."""
        out, start = [], 0
        for bs in self.band_sets:
            out.append(slice(start, start + len(bs.bands)))
            start += len(bs.bands)
        return out

    def band_index(self, band: str) -> int:
        """Channel index of `band`; raises KeyError naming the valid bands."""
        try:
            return self.band_order.index(band)
        except ValueError:
            raise KeyError(
                f"modality {self.name!r} has no band {band!r}; bands are {list(self.band_order)}"
            ) from None

    def array_ndim(self) -> int:
        """Rank of the stored array: [H,W,T,C], [H,W,C] or [T,C]."""
        if not self.is_spatial:
            return 2
        return 4 if self.is_multitemporal else 3


def _spec(name: str, sets: list[tuple[Sequence[str], int]], **kw: object) -> ModalitySpec:
    return ModalitySpec(
        name=name,
        band_sets=tuple(BandSet(tuple(b), f) for b, f in sets),
        **kw,  # type: ignore[arg-type]
    )


_S2_10M = ["B02", "B03", "B04", "B08"]
_S2_20M = ["B05", "B06", "B07", "B8A", "B11", "B12"]

# H5 samples keep the source dtype and store only the timesteps that exist (see
# `missing_timesteps_masks`); in memory every array is float32 with MISSING_VALUE for the rest.
MODALITIES: dict[str, ModalitySpec] = {
    m.name: m
    for m in [
        _spec(
            "sentinel2_l2a",
            [(_S2_10M, 16), (_S2_20M, 32), (["B01", "B09"], 64)],
            is_multitemporal=True,
            nodata=0,
        ),
        _spec(
            "sentinel2",
            [(_S2_10M, 16), (_S2_20M, 32), (["B01", "B09", "B10"], 64)],
            is_multitemporal=True,
            nodata=0,
        ),
        _spec(
            "sentinel1",
            [(["vv", "vh"], 16)],
            is_multitemporal=True,
            nodata=SENTINEL1_NODATA,
            dtype="float32",
            value_range=(-50.0, 0.0),
        ),
        _spec(
            "landsat",
            [(["B8"], 16), (["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B9", "B10", "B11"], 32)],
            is_multitemporal=True,
            nodata=0,
            value_range=(0.0, 65535.0),
        ),
        _spec(
            "worldcover",
            [(["B1"], 16)],
            is_multitemporal=False,
            nodata=0,
            dtype="uint8",
            is_map=True,
            value_range=(0.0, 100.0),
            classes=WORLDCOVER_CLASSES,
        ),
        _spec(
            "srtm",
            [(["srtm"], 16)],
            is_multitemporal=False,
            dtype="int16",
            is_map=True,
            value_range=(0.0, 8000.0),
        ),
        _spec(
            "openstreetmap_raster",
            [(OSM_FEATURES, 4)],
            is_multitemporal=False,
            dtype="uint8",
            is_map=True,
            value_range=(0.0, 1.0),
        ),
        _spec(
            "wri_canopy_height",
            [(["B1"], 16)],
            is_multitemporal=False,
            dtype="uint8",
            is_map=True,
            value_range=(0.0, 100.0),
        ),
        _spec(
            "cdl",
            [(["cdl"], 16)],
            is_multitemporal=False,
            dtype="uint8",
            is_map=True,
            value_range=(0.0, 255.0),
        ),
        _spec(
            "worldcereal",
            [
                (
                    [
                        "tc-annual-temporarycrops-classification",
                        "tc-maize-main-irrigation-classification",
                        "tc-maize-main-maize-classification",
                        "tc-maize-second-irrigation-classification",
                        "tc-maize-second-maize-classification",
                        "tc-springcereals-springcereals-classification",
                        "tc-wintercereals-irrigation-classification",
                        "tc-wintercereals-wintercereals-classification",
                    ],
                    16,
                )
            ],
            is_multitemporal=False,
            dtype="uint8",
            is_map=True,
            value_range=(0.0, 100.0),
        ),
        _spec(
            "era5",
            [
                (
                    [
                        "2m-temperature",
                        "2m-dewpoint-temperature",
                        "surface-pressure",
                        "10m-u-component-of-wind",
                        "10m-v-component-of-wind",
                        "total-precipitation",
                    ],
                    4096,
                )
            ],
            is_multitemporal=True,
            is_spatial=False,
            dtype="float32",
            value_range=(-50.0, 110000.0),
        ),
    ]
}

PRETRAINING_MODALITIES = (
    "sentinel2_l2a",
    "sentinel1",
    "landsat",
    "worldcover",
    "srtm",
    "openstreetmap_raster",
)
"""The modalities of the standard pretraining recipe."""


def get_modality(name: str) -> ModalitySpec:
    """Look up a modality by name; the error lists the known ones."""
    try:
        return MODALITIES[name]
    except KeyError:
        raise KeyError(
            f"unknown modality {name!r}; known modalities: {sorted(MODALITIES)}"
        ) from None


def resolution_m(factor: int) -> float:
    """Metres per pixel for a resolution factor."""
    return factor * BASE_RESOLUTION
