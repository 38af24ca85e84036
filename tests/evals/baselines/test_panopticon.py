"""Panopticon: the published ViT-B/14 key layout, numerics against a plain reference, inputs."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import nn

from helios.data.modalities import get_modality
from helios.data.normalize import NormMethod, NormStats
from helios.data.sample import MaskValue
from helios.evals.baselines.panopticon import (
    CHANNEL_IDS,
    PanopticonArch,
    PanopticonEncoder,
    PanopticonNet,
)

from .conftest import TINY_PANOPTICON, make_batch


def published_vitb14_layout() -> dict[str, tuple[int, ...]]:
    """Keys and shapes of `panopticon_vitb14_teacher.pth`, from the public code.

    hubconf.py `_panopticon_vitb14`: DINOv2 `vit_base` (768 wide, 12 blocks, MLP ratio 4, qkv and
    proj biases, LayerScale, no registers, block_chunks=0, img_size 518 / patch 14 -> 37 x 37
    positions) with `embed_layer='PanopticonPE'`, attn_dim 2304, channel attention with 16 heads
    and no layer norm. dinov2/models/panopticon.py: Conv3dWrapper.conv3d (1 x 14 x 14),
    ChnAttn.query [1, 1, 2304], ChnEmb transmit/receive [2, 768] and orbit [2, 2304 - 2 * 768],
    CrossAttnNoQueryProj inproj_k / inproj_v without bias, then proj 2304 -> 768.
    """
    d, a, p = 768, 2304, 14
    keys: dict[str, tuple[int, ...]] = {
        "cls_token": (1, 1, d),
        "pos_embed": (1, 37 * 37 + 1, d),
        "mask_token": (1, d),
        "patch_embed.conv3d.conv3d.weight": (a, 1, 1, p, p),
        "patch_embed.conv3d.conv3d.bias": (a,),
        "patch_embed.chnfus.query": (1, 1, a),
        "patch_embed.chnfus.chnemb.embed_transmit": (2, a // 3),
        "patch_embed.chnfus.chnemb.embed_receive": (2, a // 3),
        "patch_embed.chnfus.chnemb.embed_orbit": (2, a - 2 * (a // 3)),
        "patch_embed.chnfus.xattn.inproj_k.weight": (a, a),
        "patch_embed.chnfus.xattn.inproj_v.weight": (a, a),
        "patch_embed.proj.weight": (d, a),
        "patch_embed.proj.bias": (d,),
    }
    for i in range(12):
        b = f"blocks.{i}."
        keys.update(
            {
                b + "norm1.weight": (d,),
                b + "norm1.bias": (d,),
                b + "attn.qkv.weight": (3 * d, d),
                b + "attn.qkv.bias": (3 * d,),
                b + "attn.proj.weight": (d, d),
                b + "attn.proj.bias": (d,),
                b + "ls1.gamma": (d,),
                b + "norm2.weight": (d,),
                b + "norm2.bias": (d,),
                b + "mlp.fc1.weight": (4 * d, d),
                b + "mlp.fc1.bias": (4 * d,),
                b + "mlp.fc2.weight": (d, 4 * d),
                b + "mlp.fc2.bias": (d,),
                b + "ls2.gamma": (d,),
            }
        )
    keys.update({"norm.weight": (d,), "norm.bias": (d,)})
    return keys


def test_vitb14_matches_the_published_layout() -> None:
    with torch.device("meta"):
        net = PanopticonNet(PanopticonArch())
    ours = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    expected = published_vitb14_layout()
    assert list(ours) == list(expected)
    assert ours == expected
    assert len(ours) == 183


def test_round_trip_through_a_local_file(tiny_panopticon: PanopticonEncoder, tmp_path) -> None:
    path = tmp_path / "panopticon.pth"
    torch.save(tiny_panopticon.state_dict(), path)
    loaded = PanopticonEncoder(path, tiny_panopticon.normalizer.stats, TINY_PANOPTICON)
    batch = make_batch(("sentinel2_l2a", "sentinel1"), size=24, steps=1)
    with torch.no_grad():
        a, b = tiny_panopticon(batch), loaded(batch)
    assert torch.equal(a.tokens["panopticon"], b.tokens["panopticon"])
    with pytest.raises(ValueError, match="missing"):
        PanopticonEncoder.from_pretrained(path)  # ViT-B/14 does not fit tiny weights


def _mae_sincos(dim: int, pos: torch.Tensor) -> torch.Tensor:
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    out = pos.double()[:, None] * omega[None]
    return torch.cat([out.sin(), out.cos()], 1).float()


def test_encode_matches_a_plain_reference(tiny_panopticon: PanopticonEncoder) -> None:
    """Per-channel patches + wavelength embeddings + channel cross-attention + DINOv2 blocks."""
    net, arch = tiny_panopticon, TINY_PANOPTICON
    torch.manual_seed(1)
    n, g, p, a, heads = 2, arch.pos_grid, arch.patch_size, arch.attn_dim, arch.channel_heads
    x = torch.randn(n, 4, g * p, g * p)
    ids = torch.tensor([[664.63, 559.6, 493.0, -2.0]]).expand(n, 4)
    keep = torch.ones(n, g, g, 4, dtype=torch.bool)
    keep[0, 0, 0, 1:] = False  # one patch sees only its red channel
    with torch.no_grad():
        ours, visible = net.encode(x, ids, keep)
        pe = net.patch_embed
        w = pe.conv3d.conv3d.weight[:, 0, 0]  # [a, p, p]
        feats = torch.stack(
            [
                F.conv2d(x[:, c : c + 1], w[:, None], pe.conv3d.conv3d.bias, stride=p)
                for c in range(4)
            ],
            dim=1,
        )  # [n, C, a, g, g]
        feats = feats.flatten(3).permute(0, 3, 1, 2)  # [n, L, C, a]
        sar = pe.chnfus.chnemb.sar_table()[1]  # id -2: VH
        emb = torch.cat([_mae_sincos(a, torch.floor(ids[0, :3])), sar[None]], 0)
        kv = feats + emb
        k = pe.chnfus.xattn.inproj_k(kv).reshape(n, g * g, 4, heads, -1)
        v = pe.chnfus.xattn.inproj_v(kv).reshape(n, g * g, 4, heads, -1)
        q = pe.chnfus.query.reshape(heads, -1)
        scores = torch.einsum("hd,nlchd->nlhc", q, k) / math.sqrt(a // heads)
        scores = scores.masked_fill(~keep.reshape(n, g * g, 1, 4), float("-inf"))
        fused = torch.einsum("nlhc,nlchd->nlhd", scores.softmax(-1), v).reshape(n, g * g, a)
        tok = torch.cat([net.cls_token.expand(n, -1, -1), pe.proj(fused)], 1) + net.pos_embed
        for ours_blk in net.blocks:
            ref_blk = Block(
                arch.embed_dim,
                arch.num_heads,
                qkv_bias=True,
                init_values=1.0,
                norm_layer=partial(nn.LayerNorm, eps=1e-6),
            )
            ref_blk.load_state_dict(ours_blk.state_dict(), strict=True)  # DINOv2 == timm names
            tok = ref_blk.eval()(tok)
        ref = net.norm(tok)[:, 1:].reshape(n, g, g, -1)
    assert visible.all()
    assert torch.allclose(ours, ref, atol=1e-4), (ours - ref).abs().max()


def test_position_embeddings_are_resized() -> None:
    net = PanopticonNet(TINY_PANOPTICON)
    assert net.pos_encoding(6, 6) is net.pos_embed
    assert net.pos_encoding(4, 9).shape == (1, 1 + 36, TINY_PANOPTICON.embed_dim)


def test_channel_ids_follow_panopticon_conventions() -> None:
    assert CHANNEL_IDS["sentinel1"] == {"vv": -1.0, "vh": -2.0}
    s2 = CHANNEL_IDS["sentinel2_l2a"]
    assert s2["B04"] == pytest.approx(664.63, abs=0.01) and s2["B02"] == pytest.approx(
        493.0, abs=0.01
    )
    for m, ids in CHANNEL_IDS.items():
        assert set(get_modality(m).band_order) <= set(ids), m
    ordered = [s2[b] for b in ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B11", "B12")]
    assert ordered == sorted(ordered)


def test_hidden_band_sets_leave_the_channel_attention(tiny_panopticon: PanopticonEncoder) -> None:
    """Hiding the 20 m set of S2 changes the fused token; hiding everything makes it MISSING."""
    batch = make_batch(("sentinel2_l2a",), size=28, steps=1, patch_size=7)
    with torch.no_grad():
        full = tiny_panopticon(batch)
        batch.masks[0]["sentinel2_l2a"][0, 1, 1, 0, 1] = MaskValue.DECODER
        part = tiny_panopticon(batch)
        batch.masks[0]["sentinel2_l2a"][0, 1, 1, 0, :] = MaskValue.DECODER
        none = tiny_panopticon(batch)
    assert part.masks["panopticon"][0, 1, 1, 0, 0] == MaskValue.ENCODER
    assert not torch.allclose(
        full.tokens["panopticon"][0, 1, 1], part.tokens["panopticon"][0, 1, 1]
    )
    assert none.masks["panopticon"][0, 1, 1, 0, 0] == MaskValue.DECODER
    assert (none.tokens["panopticon"][0, 1, 1] == 0).all()


def test_normalizer_standardizes() -> None:
    stats = NormStats.from_vectors("sentinel1", mean=[-12.0, -19.0], std=[5.0, 6.0])
    enc = PanopticonEncoder(stats=stats, arch=TINY_PANOPTICON)
    assert enc.normalizer.method is NormMethod.STANDARDIZE
    y = enc.normalizer("sentinel1", torch.tensor([[-7.0, -19.0]]))
    assert torch.allclose(y, torch.tensor([[1.0, 0.0]]))
    with pytest.raises(ValueError, match="standardize needs"):
        PanopticonEncoder(arch=TINY_PANOPTICON).normalizer("sentinel1", torch.zeros(1, 2))
