import pytest
import torch

from helios.data.modalities import get_modality
from helios.data.sample import MaskValue
from helios.nn import attention
from helios.nn.encoder import FlexiEncoder, TokenPacker
from helios.nn.encodings import RopePosition
from tests.nn.conftest import ALL_MODALITIES, TINY, make_batch, perturb_hidden

COMBOS = [(m,) for m in ALL_MODALITIES] + [ALL_MODALITIES]
SIZES = {
    "nano": (128, 4, 8),
    "tiny": (192, 12, 3),
    "small": (384, 12, 6),
    "base": (768, 12, 12),
    "large": (1024, 24, 16),
}


def visible(out, name):  # noqa: ANN001, ANN202
    return out.tokens[name][out.masks[name] == MaskValue.ENCODER]


@pytest.mark.parametrize("combo", COMBOS, ids=lambda c: "all" if len(c) > 1 else c[0])
def test_output_shapes_every_modality_and_patch_size(combo: tuple[str, ...]) -> None:
    enc = FlexiEncoder(combo, **TINY).eval()
    for patch in range(1, 9):
        batch = make_batch(combo, patch_size=patch, ref_size=2 * patch, seed=patch)
        with torch.no_grad():
            out = enc(batch)
        for m in combo:
            spec = get_modality(m)
            side = 2 if spec.is_spatial else 1
            t = 3 if spec.is_multitemporal else 1
            assert out.tokens[m].shape == (2, side, side, t, spec.num_band_sets, 32)
            assert out.masks[m] is batch.masks[0][m]
            hidden = out.masks[m] != MaskValue.ENCODER
            assert (out.tokens[m][hidden] == 0).all()
            assert torch.isfinite(out.tokens[m]).all()
        assert out.pool().shape == (2, 32)


@pytest.mark.parametrize("position", ["sincos", "rope"])
def test_hidden_tokens_have_no_effect(position: str) -> None:
    mods = ("sentinel2_l2a", "sentinel1", "openstreetmap_raster", "era5")
    enc = FlexiEncoder(mods, position=position, **TINY).eval()
    batch = make_batch(mods, patch_size=2, ref_size=8, timesteps=4, batch_size=3)
    other = perturb_hidden(batch)
    assert not torch.equal(other.data["sentinel2_l2a"], batch.data["sentinel2_l2a"])
    with torch.no_grad():
        a, b = enc(batch), enc(other)
    for m in mods:
        torch.testing.assert_close(a.tokens[m], b.tokens[m], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("position", ["sincos", "rope"])
def test_sample_output_independent_of_batch(position: str) -> None:
    mods = ("sentinel2_l2a", "landsat", "srtm")
    enc = FlexiEncoder(mods, position=position, **TINY).eval()
    batch = make_batch(mods, patch_size=2, ref_size=8, batch_size=3, seed=3)
    counts = [
        int((torch.cat([batch.masks[0][m][i].flatten() for m in mods]) == 0).sum())
        for i in range(3)
    ]
    assert len(set(counts)) > 1, "the fixture should need padding"
    with torch.no_grad():
        full = enc(batch)
        for i in range(3):
            one = make_batch(mods, patch_size=2, ref_size=8, batch_size=3, seed=3)
            one.data = {m: x[i : i + 1] for m, x in one.data.items()}
            one.masks = [{m: x[i : i + 1] for m, x in one.masks[0].items()}]
            one.timestamps = one.timestamps[i : i + 1]
            alone = enc(one)
            for m in mods:
                torch.testing.assert_close(
                    full.tokens[m][i : i + 1], alone.tokens[m], rtol=1e-5, atol=1e-5
                )


def test_sample_without_visible_tokens_gives_zeros_and_finite_grads() -> None:
    mods = ("sentinel2_l2a", "sentinel1")
    enc = FlexiEncoder(mods, **TINY)
    batch = make_batch(mods, patch_size=4, ref_size=8)
    for m in mods:
        batch.masks[0][m][1] = int(MaskValue.DECODER)
    out = enc(batch)
    loss = sum(t.square().sum() for t in out.tokens.values())
    loss.backward()
    for m in mods:
        assert (out.tokens[m][1] == 0).all()
        assert (out.tokens[m][0] != 0).any()
    for p in enc.parameters():
        assert p.grad is None or torch.isfinite(p.grad).all()


def test_packer_roundtrip_and_padding() -> None:
    masks = {
        "a": torch.tensor([[0, 1, 0, 0], [2, 0, 3, 3]], dtype=torch.int8).view(2, 2, 2, 1, 1),
        "b": torch.tensor([[0], [0]], dtype=torch.int8).view(2, 1, 1, 1, 1),
    }
    packer = TokenPacker(masks, [MaskValue.ENCODER])
    packing = packer.packing
    assert packing.n_max == 4 and packer.counts.tolist() == [4, 2]
    assert packer.padding_fraction == pytest.approx(0.25)
    assert packing.sample.tolist() == [0, 0, 0, 0, 1, 1]
    assert packing.attn_mask is not None and packing.attn_mask.shape == (2, 1, 1, 4)
    assert packing.attn_mask[1, 0, 0].tolist() == [True, True, False, False]
    tokens = {m: torch.randn(*x.shape, 3) for m, x in masks.items()}
    stream = packer.pack(tokens)
    assert stream.shape == (6, 3)
    padded = packing.pad(stream)
    assert padded.shape == (2, 4, 3) and (padded[1, 2:] == 0).all()
    torch.testing.assert_close(padded[1, 0], tokens["a"][1, 0, 1, 0, 0])
    torch.testing.assert_close(packing.unpad(padded), stream)
    back = packer.unpack(stream)
    for m, x in masks.items():
        keep = (x == 0).unsqueeze(-1)
        torch.testing.assert_close(back[m], tokens[m] * keep)
    even = TokenPacker({"a": torch.zeros(2, 2, 2, 1, 1, dtype=torch.int8)}, [MaskValue.ENCODER])
    assert even.packing.attn_mask is None and even.packing.slots is None
    assert even.padding_fraction == 0.0


def test_uses_sdpa(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(kwargs.get("attn_mask"))
        return real(*args, **kwargs)

    monkeypatch.setattr(attention.F, "scaled_dot_product_attention", spy)
    enc = FlexiEncoder(("sentinel1",), **TINY)
    enc(make_batch(("sentinel1",), patch_size=2, ref_size=8))
    assert len(calls) == TINY["depth"]
    assert calls[0] is None or calls[0].dtype == torch.bool


def test_visible_argument_encodes_more_tokens() -> None:
    mods = ("sentinel2_l2a",)
    enc = FlexiEncoder(mods, **TINY).eval()
    batch = make_batch(mods)
    everything = (MaskValue.ENCODER, MaskValue.TARGET_ONLY, MaskValue.DECODER)
    with torch.no_grad():
        out = enc(batch, visible=everything)
    m = batch.masks[0]["sentinel2_l2a"]
    assert (out.tokens["sentinel2_l2a"][m == MaskValue.DECODER] != 0).any()
    assert (out.tokens["sentinel2_l2a"][m == MaskValue.MISSING] == 0).all()


def test_qk_norm_drop_path_and_backward() -> None:
    mods = ("sentinel2_l2a", "era5")
    enc = FlexiEncoder(mods, qk_norm=True, drop_path=0.2, **TINY)
    out = enc(make_batch(mods))
    out.pool().sum().backward()
    assert enc.token_embedding.embeds["sentinel2_l2a"].weights[0].grad is not None


@pytest.mark.parametrize("size", list(SIZES))
def test_presets_build(size: str) -> None:
    dim, depth, heads = SIZES[size]
    with torch.device("meta"):
        enc = FlexiEncoder(("sentinel2_l2a", "sentinel1"), dim, depth, heads)
    blocks = sum(p.numel() for p in enc.blocks.parameters())
    assert blocks == pytest.approx(12 * dim * dim * depth, rel=0.01)
    assert enc.embed_dim == dim and len(enc.blocks) == depth


class ScaledBlock(attention.Block):
    """A user's own block: the stock block with its residual stream scaled (for the tests)."""

    def forward(self, x, packing=None, rope=None):  # noqa: ANN001, ANN201, D102
        return super().forward(x, packing, rope) * 0.5


def test_parts_are_passed_in_as_classes() -> None:
    mods = ("sentinel2_l2a", "era5")
    batch = make_batch(mods, patch_size=2, ref_size=8)
    outs = {}
    for position in ("rope", RopePosition):
        torch.manual_seed(0)
        enc = FlexiEncoder(mods, position=position, **TINY).eval()
        with torch.no_grad():
            outs[str(position)] = enc(batch).tokens["sentinel2_l2a"]
    a, b = outs.values()
    assert torch.equal(a, b)  # the short name and the class are the same part
    torch.manual_seed(0)
    custom = FlexiEncoder(mods, block_layer=ScaledBlock, norm_layer=torch.nn.RMSNorm, **TINY)
    assert all(isinstance(blk, ScaledBlock) for blk in custom.blocks)
    assert isinstance(custom.norm, torch.nn.RMSNorm) and isinstance(
        custom.blocks[0].norm1, torch.nn.RMSNorm
    )
    assert torch.isfinite(custom(batch).pool()).all()
    with pytest.raises(ValueError, match="unknown position encoding 'alibi'"):
        FlexiEncoder(mods, position="alibi", **TINY)  # type: ignore[arg-type]
