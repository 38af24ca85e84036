"""The same checks over every baseline: surface, shapes, gradients, pooling, masks, loading."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from helios.data.modalities import MISSING_VALUE, MODALITIES, get_modality
from helios.data.normalize import Normalizer
from helios.data.sample import MaskValue
from helios.evals.baselines import DINOv3Encoder, GalileoEncoder, load_baseline
from helios.evals.baselines._common import load_strict, load_weights
from helios.evals.models import MODEL_KINDS, EncoderLoader, ModelSpec, encoder_loader, load_model
from helios.nn.api import Encoder

from .conftest import TINY_DINOV3, galileo_dir, make_batch

CASES = {
    "galileo": ("galileo", ("sentinel2_l2a", "sentinel1", "srtm", "era5")),
    "panopticon": ("tiny_panopticon", ("sentinel2_l2a", "sentinel1", "landsat")),
    "dinov3": ("tiny_dinov3", ("sentinel2_l2a", "landsat")),
}


@pytest.fixture(params=list(CASES))
def case(request: pytest.FixtureRequest) -> tuple[Encoder, tuple[str, ...]]:
    fixture, modalities = CASES[request.param]
    return request.getfixturevalue(fixture), modalities


def test_surface(case: tuple[Encoder, tuple[str, ...]]) -> None:
    enc, modalities = case
    assert isinstance(enc, Encoder)
    assert set(enc.modalities) <= set(MODALITIES) and set(modalities) <= set(enc.modalities)
    assert isinstance(enc.normalizer, Normalizer)
    assert isinstance(enc.embed_dim, int) and enc.embed_dim > 0
    assert isinstance(enc.default_patch_size, int) and enc.default_patch_size > 0


def test_forward_shapes_and_pooling(case: tuple[Encoder, tuple[str, ...]]) -> None:
    enc, modalities = case
    batch = make_batch(modalities, batch_size=2, size=32, steps=2, patch_size=4)
    with torch.no_grad():
        out = enc(batch)
    assert out.tokens and set(out.tokens) == set(out.masks)
    for key, tok in out.tokens.items():
        mask = out.masks[key]
        assert tok.ndim == 6 and tok.shape[-1] == enc.embed_dim, key
        assert tuple(mask.shape) == tuple(tok.shape[:-1]) and mask.dtype == torch.int8, key
        assert tok.shape[1:3] in {(8, 8), (1, 1)}, key
        assert torch.isfinite(tok).all(), key
        assert (mask == MaskValue.ENCODER).any(), key
        hidden = mask != MaskValue.ENCODER
        assert (tok[hidden] == 0).all(), key
    pooled = out.pool()
    assert pooled.shape == (2, enc.embed_dim) and torch.isfinite(pooled).all()
    assert out.pool("max", spatial=True).shape == (2, 8, 8, enc.embed_dim)
    assert torch.allclose(enc.embed(batch), pooled, atol=1e-6)


def test_backward(case: tuple[Encoder, tuple[str, ...]]) -> None:
    enc, modalities = case
    enc.zero_grad()
    enc(make_batch(modalities, size=16)).pool().square().sum().backward()
    grads = [p.grad for p in enc.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(bool(g.abs().sum() > 0) for g in grads)
    enc.zero_grad()


def test_hidden_tokens_are_ignored(case: tuple[Encoder, tuple[str, ...]]) -> None:
    """Data under DECODER tokens must not change what the visible tokens encode."""
    enc, modalities = case
    batch = make_batch(modalities, size=32, seed=1)
    spatial = [m for m in modalities if get_modality(m).is_spatial]
    for m in spatial:
        batch.masks[0][m][0, :2, :2] = MaskValue.DECODER
    with torch.no_grad():
        ref = enc(batch)
        for m in spatial:
            x = batch.data[m][0, :8, :8]
            x += 5 * torch.randn(x.shape)
        out = enc(batch)
    for key in ref.tokens:
        vis = ref.masks[key] == MaskValue.ENCODER
        assert torch.equal(ref.masks[key], out.masks[key])
        assert torch.allclose(ref.tokens[key][vis], out.tokens[key][vis], atol=1e-5), key
        if ref.tokens[key].shape[1] > 1:
            assert (ref.masks[key][0, :2, :2] != MaskValue.ENCODER).all(), key
            assert (ref.masks[key][1, :2, :2] == MaskValue.ENCODER).any(), key


def test_missing_pixels_hide_their_tokens(case: tuple[Encoder, tuple[str, ...]]) -> None:
    enc, modalities = case
    batch = make_batch(("sentinel2_l2a",), size=16, steps=1)
    batch.data["sentinel2_l2a"][1, 4:8, 8:12] = MISSING_VALUE  # token (1, 2) of sample 1
    with torch.no_grad():
        out = enc(batch)
    for key, tok in out.tokens.items():
        assert torch.isfinite(tok).all()
        if tok.shape[1] > 1:
            assert (out.masks[key][1, 1, 2] == MaskValue.MISSING).all(), key
            assert (out.masks[key][0, 1, 2] == MaskValue.ENCODER).any(), key


def test_normalizer_handles_raw_inputs(case: tuple[Encoder, tuple[str, ...]]) -> None:
    enc, modalities = case
    for m in modalities:
        n = get_modality(m).num_bands
        raw = torch.full((2, 4, 4, 1, n), 100.0)
        raw[0, 0, 0, 0, 0] = MISSING_VALUE
        y = enc.normalizer(m, raw)
        assert y[0, 0, 0, 0, 0] == MISSING_VALUE and torch.isfinite(y).all()


def test_state_dict_round_trip(case: tuple[Encoder, tuple[str, ...]], tmp_path) -> None:
    enc, _ = case
    path = tmp_path / "weights.pt"
    torch.save(enc.state_dict(), path)
    state = load_weights(path)
    assert set(state) == set(enc.state_dict())
    load_strict(enc, state, str(path))


def test_loading_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        GalileoEncoder(tmp_path / "nope.pt")
    module = nn.Linear(2, 2)
    torch.save(module, tmp_path / "module.pt")
    with pytest.raises(ValueError, match="weights_only"):
        load_weights(tmp_path / "module.pt")
    state = dict(module.state_dict())
    state["extra.weight"] = state.pop("bias")
    with pytest.raises(
        ValueError, match=r"1 missing: \['bias'\]; 1 unexpected: \['extra.weight'\]"
    ):
        load_strict(module, state, "test")
    with pytest.raises(ValueError, match="shape"):
        load_strict(module, {"weight": torch.zeros(3, 2), "bias": torch.zeros(2)}, "test")


def test_unaccepted_inputs_are_rejected(case: tuple[Encoder, tuple[str, ...]]) -> None:
    enc, _ = case
    with pytest.raises(ValueError, match="needs"):
        enc(make_batch(("openstreetmap_raster",)))


def test_load_baseline(tmp_path) -> None:
    assert isinstance(load_baseline("galileo", str(galileo_dir())), GalileoEncoder)
    torch.save(
        DINOv3Encoder(variant="vits16_web", arch=TINY_DINOV3).state_dict(), tmp_path / "t.pth"
    )
    with pytest.raises(ValueError, match="width 48"):
        load_baseline("dinov3-web", tmp_path / "t.pth")
    with pytest.raises(ValueError, match="unknown baseline"):
        load_baseline("prithvi", tmp_path / "t.pth")


@pytest.mark.parametrize("kind", list(MODEL_KINDS))
def test_every_model_kind_names_a_loader(kind: str) -> None:
    """Each short kind is an alias of one EncoderLoader class (no weights read to build it)."""
    loader = encoder_loader(ModelSpec(kind, "weights.pt"))
    assert isinstance(loader, EncoderLoader) and loader.path == "weights.pt"
    assert f"{type(loader).__module__}.{type(loader).__name__}" == MODEL_KINDS[kind]


def test_a_baseline_loads_through_its_loader() -> None:
    loaded = load_model(ModelSpec("galileo", str(galileo_dir()), options={"include_ndvi": True}))
    assert isinstance(loaded.encoder, GalileoEncoder) and loaded.patch_size == 4
    assert loaded.normalizer is loaded.encoder.normalizer
