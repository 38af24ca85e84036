import pytest
import torch

from helios.data.modalities import MISSING_VALUE, get_modality
from helios.nn.patch_embed import (
    TokenEmbedding,
    downsample_matrix,
    pi_resize_matrix,
    upsample_matrix,
)
from tests.nn.conftest import ALL_MODALITIES, data_shape


@pytest.mark.parametrize("patch", range(1, 9))
def test_shapes_every_modality(patch: int) -> None:
    emb = TokenEmbedding(ALL_MODALITIES, embed_dim=16)
    data = {m: torch.randn(data_shape(m, 2, 2 * patch, 3)) for m in ALL_MODALITIES}
    out = emb(data, patch)
    for m in ALL_MODALITIES:
        spec = get_modality(m)
        side = 2 if spec.is_spatial else 1
        t = 3 if spec.is_multitemporal else 1
        assert out[m].shape == (2, side, side, t, spec.num_band_sets, 16)
        assert torch.isfinite(out[m]).all()


def test_resize_to_base_is_identity() -> None:
    assert torch.equal(pi_resize_matrix(8, 8), torch.eye(64, dtype=torch.float64))
    emb = TokenEmbedding(["sentinel2_l2a"], embed_dim=8)
    w8, _ = emb.kernel("sentinel2_l2a", 8)
    base = emb.embeds["sentinel2_l2a"].block_weight().flatten(0, 1).flatten(1)
    assert torch.equal(w8, base)


@pytest.mark.parametrize("patch", range(1, 8))
def test_pi_resize_is_flexivit_formula(patch: int) -> None:
    # pinv(B^T) for B = pinv(U) reduces to U^T, and B inverts U exactly
    up = upsample_matrix(patch, 8)
    down = downsample_matrix(8, patch)
    torch.testing.assert_close(pi_resize_matrix(8, patch), up.T)
    torch.testing.assert_close(down @ up, torch.eye(patch * patch, dtype=torch.float64))
    torch.testing.assert_close(down.sum(1), torch.ones(patch * patch, dtype=torch.float64))


def test_constant_image_same_token_at_every_patch_size() -> None:
    emb = TokenEmbedding(["sentinel2_l2a", "openstreetmap_raster"], embed_dim=16)
    values = torch.randn(12)
    ref = None
    for p in range(1, 9):
        x = values.expand(1, p, p, 1, 12).clone()
        osm = torch.full((1, 4 * p, 4 * p, 1, 30), 0.25)
        out = emb({"sentinel2_l2a": x, "openstreetmap_raster": osm}, p)
        tok = torch.cat([out["sentinel2_l2a"][0, 0, 0, 0], out["openstreetmap_raster"][0, 0, 0, 0]])
        if ref is None:
            ref = tok
        torch.testing.assert_close(tok, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("patch", [1, 3, 5, 7])
def test_pi_resize_property_for_smooth_patches(patch: int) -> None:
    # <x_p, w_p> == <U x_p, w_8>: a p-patch embeds like its bilinear upsampling to 8
    emb = TokenEmbedding(["sentinel1"], embed_dim=16)
    x_p = torch.randn(patch * patch, 2, dtype=torch.float64)
    x_8 = (upsample_matrix(patch, 8) @ x_p).float()
    small = emb({"sentinel1": x_p.float().view(1, patch, patch, 1, 2)}, patch)["sentinel1"]
    big = emb({"sentinel1": x_8.view(1, 8, 8, 1, 2)}, 8)["sentinel1"]
    torch.testing.assert_close(small.flatten(), big.flatten(), rtol=1e-4, atol=1e-4)


def test_missing_values_are_zeroed() -> None:
    emb = TokenEmbedding(["sentinel2_l2a", "era5"], embed_dim=16)
    x = torch.randn(1, 4, 4, 2, 12)
    x[..., 0, :] = MISSING_VALUE
    e = torch.full((1, 1, 1, 2, 6), float(MISSING_VALUE))
    out = emb({"sentinel2_l2a": x, "era5": e}, 2)
    clean = torch.where(x == MISSING_VALUE, 0.0, x)
    zeroed = emb({"sentinel2_l2a": clean, "era5": e * 0}, 2)
    for m in out:
        assert torch.isfinite(out[m]).all()
        torch.testing.assert_close(out[m], zeroed[m])


def test_band_sets_use_only_their_channels() -> None:
    emb = TokenEmbedding(["sentinel2_l2a"], embed_dim=8)
    x = torch.randn(1, 4, 4, 1, 12)
    y = x.clone()
    y[..., 4:10] += 1.0  # the 20 m set only
    a, b = (
        emb({"sentinel2_l2a": x}, 4)["sentinel2_l2a"],
        emb({"sentinel2_l2a": y}, 4)["sentinel2_l2a"],
    )
    assert torch.equal(a[..., 0, :], b[..., 0, :]) and torch.equal(a[..., 2, :], b[..., 2, :])
    assert not torch.allclose(a[..., 1, :], b[..., 1, :])


def test_osm_is_pooled_to_reference_grid() -> None:
    emb = TokenEmbedding(["openstreetmap_raster"], embed_dim=8)
    fine = (torch.rand(1, 16, 16, 1, 30) > 0.5).float()
    pooled = fine.view(1, 4, 4, 4, 4, 1, 30).mean((2, 4))
    spec = get_modality("openstreetmap_raster")
    assert spec.pixels_per_ref_pixel == 4
    out = emb({"openstreetmap_raster": fine}, 2)["openstreetmap_raster"]
    w, b = emb.kernel("openstreetmap_raster", 2)
    patches = pooled.view(1, 2, 2, 2, 2, 1, 30).permute(0, 1, 3, 5, 2, 4, 6).reshape(4, -1)
    torch.testing.assert_close(out.reshape(4, 8), patches @ w.T + b)


def test_rejects_indivisible_sizes() -> None:
    emb = TokenEmbedding(["sentinel1"], embed_dim=8)
    with pytest.raises(ValueError, match="multiple"):
        emb({"sentinel1": torch.randn(1, 6, 6, 1, 2)}, 4)
    with pytest.raises(ValueError, match="patch_size"):
        emb({"sentinel1": torch.randn(1, 18, 18, 1, 2)}, 9)
