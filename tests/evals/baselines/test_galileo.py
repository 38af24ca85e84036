"""Galileo: strict loading of the published nano weights, numerics, and real imagery."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helios.data.modalities import MISSING_VALUE, get_modality
from helios.data.sample import MaskedBatch, MaskValue
from helios.evals.baselines._galileo_nn import GALILEO_SIZES, GalileoNet, sincos_1d
from helios.evals.baselines.galileo import (
    DW_CLASSES,
    PUBLISHED_NORMALIZATION,
    TOKEN_GROUPS,
    WORLDCOVER_TO_DW,
    GalileoEncoder,
)

from .conftest import galileo_dir, make_batch, read_s2_crop


def test_published_weights_are_a_plain_state_dict_matching_our_keys() -> None:
    state = torch.load(galileo_dir() / "encoder.pt", map_location="cpu", weights_only=True)
    assert isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
    ours = GalileoEncoder().state_dict()
    assert set(state) == set(ours)
    assert all(state[k].shape == ours[k].shape for k in state)
    assert len(state) == 106


def test_from_pretrained_reads_size_and_normalization(galileo: GalileoEncoder) -> None:
    assert galileo.size == "nano" and galileo.embed_dim == 128 and len(galileo.blocks) == 4
    from_file = GalileoEncoder(galileo_dir() / "encoder.pt")
    for k, v in galileo.state_dict().items():
        assert torch.equal(v, from_file.state_dict()[k]), k


def test_fixed_encodings_equal_the_published_tables() -> None:
    """Our sin-cos time and month tables reproduce the ones stored in encoder.pt."""
    state = torch.load(galileo_dir() / "encoder.pt", map_location="cpu", weights_only=True)
    fresh = GalileoNet(GALILEO_SIZES["nano"])
    assert torch.allclose(fresh.pos_embed, state["pos_embed"], atol=1e-6)
    assert torch.allclose(fresh.month_embed.weight, state["month_embed.weight"], atol=1e-6)
    assert torch.allclose(state["pos_embed"], sincos_1d(32, torch.arange(24)), atol=1e-6)


def test_patch_embedding_is_the_convolution_of_the_loaded_kernel(galileo: GalileoEncoder) -> None:
    embed = galileo.space_time_embed["S2_RGB"]
    x = torch.randn(2, 16, 16, 3, 3)  # [B, H, W, T, C]
    tok = embed(x, 8)
    conv = F.conv2d(
        x.permute(0, 3, 4, 1, 2).reshape(6, 3, 16, 16), embed.proj.weight, embed.proj.bias, stride=8
    )
    assert torch.allclose(tok, conv.reshape(2, 3, 128, 2, 2).permute(0, 3, 4, 1, 2), atol=1e-5)


def test_flexi_resize_preserves_tokens_under_upsampling(galileo: GalileoEncoder) -> None:
    """PI-resize: the resized kernel on a bicubically upsampled patch gives the same token."""
    embed = galileo.space_time_embed["S2_SWIR"]
    x8 = torch.randn(4, 2, 8, 8)
    x16 = F.interpolate(x8, (16, 16), mode="bicubic", antialias=True)
    t8 = F.conv2d(x8, embed.weight(8), stride=8)
    t16 = F.conv2d(x16, embed.weight(16), stride=16)
    assert torch.allclose(t8, t16, atol=1e-3 * t8.abs().max().item())


def test_block_matches_a_plain_reference(galileo: GalileoEncoder) -> None:
    blk = galileo.blocks[1]
    torch.manual_seed(0)
    x = torch.randn(2, 7, 128)
    keys = torch.ones(2, 7, dtype=torch.bool)
    keys[1, 4:] = False
    with torch.no_grad():
        out = blk(x, keys)
        h = F.layer_norm(x, (128,), blk.norm1.weight, blk.norm1.bias)
        q, k, v = (F.linear(h, m.weight, m.bias) for m in (blk.attn.q, blk.attn.k, blk.attn.v))
        split = lambda t: t.reshape(2, 7, 8, 16).transpose(1, 2)  # noqa: E731
        scores = split(q) @ split(k).transpose(-1, -2) / math.sqrt(16)
        scores = scores.masked_fill(~keys[:, None, None, :], float("-inf"))
        att = (scores.softmax(-1) @ split(v)).transpose(1, 2).reshape(2, 7, 128)
        y = x + F.linear(att, blk.attn.proj.weight, blk.attn.proj.bias)
        h2 = F.layer_norm(y, (128,), blk.norm2.weight, blk.norm2.bias)
        y = y + blk.mlp.fc2(F.gelu(blk.mlp.fc1(h2)))
    assert torch.allclose(out, y, atol=1e-5)


def test_published_normalization_and_formula(galileo: GalileoEncoder) -> None:
    payload = json.loads((galileo_dir() / "normalization.json").read_text())
    for key, stats in PUBLISHED_NORMALIZATION.items():
        n = len(stats["mean"])
        assert payload[key]["mean"][:n] == stats["mean"] and payload[key]["std"][:n] == stats["std"]
    mean, std = payload["13"]["mean"][4], payload["13"]["std"][4]  # B4
    raw = torch.tensor([0.0, 1000.0, 5000.0])
    x = torch.zeros(3, get_modality("sentinel2").num_bands)
    x[:, get_modality("sentinel2").band_index("B04")] = raw
    y = galileo.normalizer("sentinel2", x)[:, get_modality("sentinel2").band_index("B04")]
    assert torch.allclose(y, (raw - (mean - 2 * std)) / (4 * std))
    vv = galileo.normalizer("sentinel1", torch.tensor([[-11.728724389184965, 0.0]]))[0, 0]
    assert vv == pytest.approx(0.5)


def test_worldcover_becomes_dynamic_world_one_hot(galileo: GalileoEncoder) -> None:
    batch = make_batch(("sentinel2_l2a", "worldcover"), size=16, steps=1)
    codes = torch.tensor(sorted(WORLDCOVER_TO_DW)).repeat(24)[:256].reshape(16, 16).float()
    batch.data["worldcover"][:] = codes[None, :, :, None, None]
    inputs: dict = {}
    vis: dict = {}
    vals: dict = {}
    galileo._worldcover(batch, 0, inputs, vis, vals)
    dw = inputs["DW"]
    assert dw.shape == (2, 16, 16, 9) and torch.equal(dw.sum(-1), torch.ones(2, 16, 16))
    assert dw[0, 0, 0, DW_CLASSES.index("trees")] == 1  # code 10
    assert torch.allclose(inputs["DW_static"].sum(-1), torch.ones(2))
    batch.data["worldcover"][0, 0, 0] = 55.0  # not a WorldCover class
    galileo._worldcover(batch, 0, inputs, vis, vals)
    assert not vis["DW"][0, 0, 0] and vals["DW"][0, 0, 0] == MaskValue.MISSING
    with torch.no_grad():
        out = galileo(batch)
    assert out.masks["galileo_space"].shape == (2, 4, 4, 1, 3)
    assert out.masks["galileo_static"][0, 0, 0, 0].tolist() == [3, 3, 0, 3]


def test_token_groups_cover_every_output(galileo: GalileoEncoder) -> None:
    batch = make_batch(("sentinel2_l2a", "sentinel1", "srtm", "era5", "worldcereal"), size=16)
    with torch.no_grad():
        out = galileo(batch)
    for key, groups in TOKEN_GROUPS.items():
        assert out.tokens[key].shape[4] == len(groups)
    hidden = out.masks["galileo_space_time"][..., TOKEN_GROUPS["galileo_space_time"].index("NDVI")]
    assert (hidden == MaskValue.MISSING).all()  # NDVI is off by default
    assert out.masks["galileo_static"][..., 1].eq(MaskValue.MISSING).all()  # so is location
    with_latlon = GalileoEncoder.from_pretrained(galileo_dir(), include_latlon=True)
    with torch.no_grad():
        out = with_latlon(batch)
    assert out.masks["galileo_static"][..., 1].eq(MaskValue.ENCODER).all()
    assert not torch.allclose(out.pool(), galileo(batch).pool())


def _s2_batch(enc: GalileoEncoder, crops: list[np.ndarray]) -> MaskedBatch:
    spec = get_modality("sentinel2")
    raw = torch.from_numpy(np.stack(crops))  # [B, 64, 64, 1, 13]
    data = enc.normalizer("sentinel2", raw)
    b, side = raw.shape[0], raw.shape[1] // 4
    masks = torch.zeros(b, side, side, 1, spec.num_band_sets, dtype=torch.int8)
    masks[..., 2] = MaskValue.MISSING  # B01 B09 B10 were not read
    return MaskedBatch(
        data={"sentinel2": data},
        masks=[{"sentinel2": masks}],
        timestamps=torch.tensor([[[1, 6, 2017]]]).expand(b, 1, 3).clone(),
        latlon=torch.tensor([[37.7, -75.7]]).expand(b, 2).clone(),
        patch_size=4,
    )


@pytest.mark.realdata
def test_real_sentinel2_tile(galileo: GalileoEncoder) -> None:
    """Embed real L1C crops: land, the same land shifted by 8 px, and open water."""
    crops = [read_s2_crop(200, 200), read_s2_crop(208, 208), read_s2_crop(1700, 1700)]
    assert all((c[..., :10] != MISSING_VALUE).all() and c[..., 0].mean() > 0 for c in crops)
    batch = _s2_batch(galileo, crops)
    with torch.no_grad():
        out = galileo(batch)
        again = galileo(batch)
    tok = out.tokens["galileo_space_time"]
    assert tok.shape == (3, 16, 16, 1, 7, 128)
    assert torch.isfinite(tok).all()
    assert torch.equal(tok, again.tokens["galileo_space_time"])
    vis = out.masks["galileo_space_time"] == MaskValue.ENCODER
    assert vis[..., 1:6].all() and not vis[..., [0, 6]].any()  # S2 groups, not S1 or NDVI
    assert tok[vis].std() > 0.1
    emb = F.normalize(out.pool(), dim=-1)
    near = 1 - (emb[0] * emb[1]).sum()
    far = 1 - (emb[0] * emb[2]).sum()
    assert far > 2 * near, (near.item(), far.item())
    spatial = out.pool(spatial=True)
    assert spatial.shape == (3, 16, 16, 128) and spatial.std(dim=(1, 2)).min() > 0
    shifted = F.cosine_similarity(spatial[0, 2:, 2:], spatial[1, :-2, :-2], dim=-1).mean()
    unrelated = F.cosine_similarity(spatial[0, 2:, 2:], spatial[2, :-2, :-2], dim=-1).mean()
    assert shifted > unrelated


@pytest.mark.realdata
def test_real_tile_with_ndvi_and_patch_sizes() -> None:
    enc = GalileoEncoder.from_pretrained(galileo_dir(), include_ndvi=True)
    batch = _s2_batch(enc, [read_s2_crop(600, 300)])
    with torch.no_grad():
        base = enc(batch)
        batch.masks[0]["sentinel2"] = batch.masks[0]["sentinel2"][:, ::2, ::2]
        batch.patch_size = 8
        coarse = enc(batch)
    ndvi = TOKEN_GROUPS["galileo_space_time"].index("NDVI")
    assert (base.masks["galileo_space_time"][..., ndvi] == MaskValue.ENCODER).all()
    assert coarse.tokens["galileo_space_time"].shape[1:3] == (8, 8)
    sim = F.cosine_similarity(base.pool(), coarse.pool()).item()
    assert 0.5 < sim < 1.0
