"""Helios's pretraining losses against OlmoEarth's reference implementation, on identical tensors.

The reference values were computed by `olmoearth-pretrain` 0.1.2 itself and stored in
tests/train/golden/olmoearth_losses.json by tests/peer/loss_golden.py (run in the peer env);
these tests read the file and need no peer install. Every Helios default must equal the
reference to 1e-6; the deliberate differences (docs/training.md, "Fidelity to OlmoEarth") are
checked to be exactly what the docs say.
"""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from helios.data.sample import MaskValue
from helios.nn.export import EncoderConfig
from helios.nn.losses import (
    covariance_loss,
    info_nce_loss,
    mae_loss,
    modality_patch_discrimination_loss,
    patch_discrimination_loss,
    patchify,
    select_tokens,
    variance_loss,
)
from helios.train.pretrain import EMATarget, LatentMIM, PatchDiscrimination

GOLDEN = Path(__file__).parent / "golden" / "olmoearth_losses.json"
TOL = 1e-6
DATA = json.loads(GOLDEN.read_text())
CASES = {c["name"]: c for c in DATA["cases"]}
MAE_CASES = {c["name"]: c for c in DATA["mae_cases"]}


def tensor(entry: dict[str, Any]) -> torch.Tensor:
    """A float32 tensor from the golden file's base64 encoding."""
    raw = np.frombuffer(base64.b64decode(entry["b64"]), dtype="<f4")
    return torch.from_numpy(raw.reshape(entry["shape"]).copy())


def case_tensors(case: dict[str, Any]) -> tuple[dict, dict, dict]:
    """Predictions, targets [B, h, w, T, S, D] and masks [B, h, w, T, S] per modality."""
    pred = {m: tensor(v["pred"]) for m, v in case["modalities"].items()}
    target = {m: tensor(v["target"]) for m, v in case["modalities"].items()}
    masks = {m: torch.tensor(v["mask"], dtype=torch.int8) for m, v in case["modalities"].items()}
    return pred, target, masks


def reference(case: dict[str, Any], key: str) -> float:
    value = case["outputs"][key]
    assert isinstance(value, float), f"{case['name']}/{key}: the reference gave {value}"
    return value


def raised(case: dict[str, Any], key: str) -> bool:
    return isinstance(case["outputs"][key], dict)


def pooled_patch_disc(case: dict[str, Any], tau: float, **kwargs: Any) -> float:
    pred, target, masks = case_tensors(case)
    p, index = select_tokens(pred, masks)
    t, _ = select_tokens(target, masks)
    return float(patch_discrimination_loss(p, t, index, tau, **kwargs))


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize(
    ("key", "tau"), [("patch_discrimination", 0.1), ("patch_discrimination_tau0.2", 0.2)]
)
def test_patch_discrimination_equals_the_reference(name: str, key: str, tau: float) -> None:
    case = CASES[name]
    got = pooled_patch_disc(case, tau)
    if raised(case, key):  # no DECODER token at all: the reference's stack of nothing raises
        assert name == "no_decoder" and got == 0.0
        return
    assert got == pytest.approx(reference(case, key), abs=TOL)
    # the documented option: plain cross-entropy, exactly 1 / (2 tau) times the reference
    unscaled = pooled_patch_disc(case, tau, scale_by_tau=False)
    assert unscaled * 2 * tau == pytest.approx(reference(case, key), abs=TOL)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize(
    "key", ["modality_patch_discrimination", "modality_patch_discrimination_vec"]
)
def test_modality_patch_discrimination_equals_the_reference(name: str, key: str) -> None:
    case = CASES[name]
    pred, target, masks = case_tensors(case)
    got = float(modality_patch_discrimination_loss(pred, target, masks, tau=0.1))
    if raised(case, key):  # the loop version sums nothing and calls .item() on 0
        assert name == "no_decoder" and got == 0.0
        assert CASES[name]["outputs"]["modality_patch_discrimination_vec"] == 0.0
        return
    assert got == pytest.approx(reference(case, key), abs=TOL)


def test_masked_negatives_is_the_one_loss_without_a_counterpart() -> None:
    """v1.1's masked-negatives loss equals PatchDisc per modality unless targets repeat."""
    key = "modality_patch_discrimination_masked_negatives_vec"
    for name, case in CASES.items():
        pred, target, masks = case_tensors(case)
        got = float(modality_patch_discrimination_loss(pred, target, masks, tau=0.1))
        if name == "repeated_targets":
            assert got - reference(case, key) > 0.05  # same-target negatives are not masked
        else:
            assert got == pytest.approx(reference(case, key), abs=TOL), name


@pytest.mark.parametrize("name", sorted(CASES))
def test_info_nce_equals_the_reference(name: str) -> None:
    case = CASES[name]
    a, b = tensor(case["pooled_a"]), tensor(case["pooled_b"])
    assert float(info_nce_loss(a, b, tau=0.1)) == pytest.approx(
        reference(case, "info_nce_a_b"), abs=TOL
    )
    assert float(info_nce_loss(a, b, tau=0.2)) == pytest.approx(
        reference(case, "info_nce_tau0.2_a_b"), abs=TOL
    )
    both = 0.5 * (reference(case, "info_nce_a_b") + reference(case, "info_nce_b_a"))
    assert float(info_nce_loss(a, b, tau=0.1, symmetric=True)) == pytest.approx(both, abs=TOL)


def mae_tensors(case: dict[str, Any], only_decode: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The pixels of the scored tokens, flattened, as `PixelReconstruction` selects them."""
    p = case["patch_size"]
    data = {m: tensor(v["pred"]) for m, v in case["modalities"].items()}
    truth = {m: tensor(v["target"]) for m, v in case["modalities"].items()}
    pred, target = patchify(data, p), patchify(truth, p)
    preds, targets = [], []
    for m, v in case["modalities"].items():
        mask = torch.tensor(v["token_mask"])
        hit = mask == MaskValue.DECODER if only_decode else mask != MaskValue.MISSING
        preds.append(pred[m][hit].flatten())
        targets.append(target[m][hit].flatten())
    return torch.cat(preds), torch.cat(targets)


@pytest.mark.parametrize("name", sorted(MAE_CASES))
def test_mae_equals_the_reference(name: str) -> None:
    case = MAE_CASES[name]
    pred, target = mae_tensors(case, only_decode=True)
    assert float(mae_loss(pred, target)) == pytest.approx(
        case["outputs"]["mae_mse_decoder"], abs=TOL
    )
    pred, target = mae_tensors(case, only_decode=False)
    assert float(mae_loss(pred, target)) == pytest.approx(
        case["outputs"]["mae_mse_all_available"], abs=TOL
    )


# -- LatentMIM composes the terms as the reference does ------------------------------------------


def tiny_model(**kwargs: Any) -> LatentMIM:
    torch.manual_seed(0)
    return LatentMIM(
        ["sentinel2_l2a", "sentinel1"], EncoderConfig(embed_dim=16, depth=1, num_heads=2), **kwargs
    )


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_latent_objective_as_latent_mim_calls_it(name: str) -> None:
    """`PatchDiscrimination.loss` with LatentMIM's defaults is the v1 recipe's loss."""
    case = CASES[name]
    pred, target, masks = case_tensors(case)
    defaults = tiny_model()
    model = SimpleNamespace(
        tau=defaults.tau,
        negatives=defaults.negatives,
        scale_by_tau=defaults.scale_by_tau,
        targets=lambda batch, view: target,
    )
    batch = SimpleNamespace(masks=[masks])
    loss, n_dec = PatchDiscrimination().loss(model, batch, 0, pred)  # type: ignore[arg-type]
    assert n_dec == sum(case["decoder_tokens_per_sample"])
    expected = case["outputs"]["modality_patch_discrimination_vec"]
    assert float(loss) == pytest.approx(expected, abs=TOL)
    model.negatives = "sample"
    loss, _ = PatchDiscrimination().loss(model, batch, 0, pred)  # type: ignore[arg-type]
    if not raised(case, "patch_discrimination"):
        assert float(loss) == pytest.approx(reference(case, "patch_discrimination"), abs=TOL)


def test_latent_mim_defaults_are_the_reference_recipe() -> None:
    model = tiny_model()
    assert (model.tau, model.negatives, model.scale_by_tau) == (0.1, "modality", True)
    assert model.contrastive_weight == 0.1 and not model.contrastive_symmetric
    head = model.contrastive_head
    assert isinstance(head, torch.nn.Linear) and head.in_features == head.out_features == 16
    # the lite target is a frozen copy of the encoder's patch embedding at initialisation
    online = model.encoder.token_embedding.state_dict()
    frozen = model.target_projection.state_dict()
    assert online.keys() == frozen.keys()
    assert all(torch.equal(online[k], frozen[k]) for k in online)
    assert not any(p.requires_grad for p in model.target_projection.parameters())
    assert not hasattr(tiny_model(contrastive_head=False), "contrastive_head")


def test_step_loss_is_mean_of_views_plus_weighted_info_nce(monkeypatch: pytest.MonkeyPatch) -> None:
    """loss = (mim_a + mim_b) / 2 + w * InfoNCE(head(pooled_a), head(pooled_b)), as upstream."""
    model = tiny_model()
    pooled = [torch.randn(3, 16), torch.randn(3, 16)]
    mim = [torch.tensor(1.5), torch.tensor(2.5)]
    views = iter(range(2))

    def fake_view_loss(batch: Any, view: int) -> tuple[torch.Tensor, Any, int]:
        v = next(views)
        return mim[v], SimpleNamespace(pool=lambda how, v=v: pooled[v]), 4

    monkeypatch.setattr(model, "_view_loss", fake_view_loss)
    monkeypatch.setattr(model, "log", lambda *a, **k: None)
    batch = SimpleNamespace(
        num_views=2, batch_size=3, num_tokens=lambda v: dict.fromkeys(MaskValue, 0)
    )
    loss = model._step(batch, "train")  # type: ignore[arg-type]
    head = model.contrastive_head
    expected = 2.0 + 0.1 * info_nce_loss(head(pooled[0]), head(pooled[1]), tau=0.1)
    torch.testing.assert_close(loss, expected)


def test_variance_and_covariance_terms_add_to_the_step_loss_on_every_view(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Off by default (the reference has neither); on, weighted, over both views' pooled rows."""
    assert tiny_model().variance_weight == tiny_model().covariance_weight == 0.0
    model = tiny_model(contrastive_weight=0.0, variance_weight=2.0, covariance_weight=0.5)
    pooled = [torch.randn(3, 16), torch.randn(3, 16)]
    views = iter(range(2))

    def fake_view_loss(batch: Any, view: int) -> tuple[torch.Tensor, Any, int]:
        v = next(views)
        return torch.tensor(1.0), SimpleNamespace(pool=lambda how, v=v: pooled[v]), 4

    monkeypatch.setattr(model, "_view_loss", fake_view_loss)
    monkeypatch.setattr(model, "log", lambda *a, **k: None)
    batch = SimpleNamespace(
        num_views=2, batch_size=3, num_tokens=lambda v: dict.fromkeys(MaskValue, 0)
    )
    loss = model._step(batch, "train")  # type: ignore[arg-type]
    both = torch.cat(pooled)
    expected = 1.0 + 2.0 * variance_loss(both) + 0.5 * covariance_loss(both)
    torch.testing.assert_close(loss, expected)


def test_ema_update_is_the_reference_rule() -> None:
    """Decay moves linearly from start to end over the run; t <- d t + (1 - d) online."""
    model = tiny_model(target="ema", ema_decay=(0.9, 1.0))
    target = model.target_encoder
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(1.0)
    before = [t.detach().clone() for t in target.parameters()]
    online = [p.detach().clone() for p in model.encoder.parameters()]
    total, step = 10, 4
    model._trainer = SimpleNamespace(estimated_stepping_batches=total, global_step=step)  # type: ignore[assignment]
    monkeypatch_step = type(model).global_step
    try:
        type(model).global_step = property(lambda self: step)  # type: ignore[assignment]
        EMATarget().after_step(model, target)
    finally:
        type(model).global_step = monkeypatch_step  # type: ignore[method-assign]
    decay = 0.9 + step * (1.0 - 0.9) / total  # train_module.update_target_encoder
    for t, t0, o in zip(target.parameters(), before, online):
        torch.testing.assert_close(t, decay * t0 + (1 - decay) * o)
    assert math.isclose(decay, 0.94)


def test_spread_on_tokens_sees_every_visible_token_of_every_view(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from helios.nn.api import TokensAndMasks

    model = tiny_model(contrastive_weight=0.0, variance_weight=1.0, spread_on="tokens")
    tok = torch.randn(2, 2, 2, 1, 1, 16)
    masks = torch.full((2, 2, 2, 1, 1), int(MaskValue.DECODER), dtype=torch.int8)
    masks[0, 0, 0] = masks[1, 1, 1] = masks[1, 0, 1] = int(MaskValue.ENCODER)
    encoded = TokensAndMasks({"sentinel2_l2a": tok}, {"sentinel2_l2a": masks})
    (visible,) = encoded.visible()
    torch.testing.assert_close(
        visible, torch.stack([tok[0, 0, 0, 0, 0], tok[1, 0, 1, 0, 0], tok[1, 1, 1, 0, 0]])
    )
    monkeypatch.setattr(model, "_view_loss", lambda batch, view: (torch.tensor(0.0), encoded, 1))
    monkeypatch.setattr(model, "log", lambda *a, **k: None)
    batch = SimpleNamespace(
        num_views=2, batch_size=2, num_tokens=lambda v: dict.fromkeys(MaskValue, 0)
    )
    loss = model._step(batch, "train")  # type: ignore[arg-type]
    torch.testing.assert_close(loss, variance_loss(torch.cat([visible, visible])))
