import pytest
import torch

from helios.data.sample import MaskValue
from helios.nn.encoder import FlexiEncoder
from helios.nn.predictor import Predictor
from tests.nn.conftest import TINY, make_batch, perturb_hidden

MODS = ("sentinel2_l2a", "sentinel1", "worldcover", "era5")


@pytest.mark.parametrize("position", ["sincos", "rope"])
def test_predictions_only_at_decoder_slots(position: str) -> None:
    enc = FlexiEncoder(MODS, position=position, **TINY)
    pred = Predictor(
        MODS, encoder_dim=32, embed_dim=16, depth=1, num_heads=2, output_dim=8, position=position
    )
    batch = make_batch(MODS, patch_size=2, ref_size=8)
    encoded = enc(batch)
    out = pred(encoded, batch.timestamps, batch.patch_size)
    assert set(out) == set(MODS)
    for m in MODS:
        mask = batch.masks[0][m]
        assert out[m].shape == (*mask.shape, 8)
        assert (out[m][mask != MaskValue.DECODER] == 0).all()
        assert (out[m][mask == MaskValue.DECODER] != 0).any()
    sum(o.sum() for o in out.values()).backward()
    assert enc.blocks[0].attn.qkv.weight.grad is not None
    assert pred.mask_token.grad is not None


def test_default_widths_and_hidden_data_invariance() -> None:
    enc = FlexiEncoder(MODS, **TINY).eval()
    pred = Predictor(MODS, encoder_dim=32, depth=1, num_heads=2).eval()
    assert pred.embed_dim == 32 and pred.output_dim == 32
    batch = make_batch(MODS, patch_size=4, ref_size=8, batch_size=3)
    with torch.no_grad():
        a = pred(enc(batch), batch.timestamps, 4)
        other = perturb_hidden(batch)
        b = pred(enc(other), other.timestamps, 4)
    for m in MODS:
        torch.testing.assert_close(a[m], b[m], rtol=1e-5, atol=1e-5)


def test_encoder_and_predictor_under_bf16_autocast() -> None:
    enc = FlexiEncoder(MODS, **TINY)
    pred = Predictor(MODS, encoder_dim=32, depth=1, num_heads=2)
    batch = make_batch(MODS, patch_size=2, ref_size=8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        encoded = enc(batch)
        out = pred(encoded, batch.timestamps, batch.patch_size)
    for m in MODS:
        assert encoded.tokens[m].dtype == torch.float32
        assert torch.isfinite(out[m]).all()
    sum(o.float().sum() for o in out.values()).backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in enc.parameters())


def test_predicts_modalities_the_encoder_does_not_read() -> None:
    enc = FlexiEncoder(("sentinel2_l2a",), **TINY)
    pred = Predictor(("sentinel2_l2a", "worldcover"), encoder_dim=32, depth=1, num_heads=2)
    batch = make_batch(("sentinel2_l2a", "worldcover"), patch_size=2, ref_size=8)
    encoded = enc(batch)
    assert set(encoded.tokens) == {"sentinel2_l2a"}
    assert set(pred(encoded, batch.timestamps, 2)) == {"sentinel2_l2a"}
    out = pred(encoded, batch.timestamps, 2, masks=batch.masks[0])
    wc = batch.masks[0]["worldcover"]
    assert out["worldcover"].shape == (*wc.shape, 32)
    assert (out["worldcover"][wc != MaskValue.DECODER] == 0).all()
    assert (out["worldcover"][wc == MaskValue.DECODER] != 0).all()
