import math

import pytest
import torch
import torch.nn.functional as F

from helios.data.modalities import MISSING_VALUE, get_modality
from helios.data.sample import MaskValue
from helios.nn.losses import (
    PixelHead,
    covariance_loss,
    info_nce_loss,
    mae_loss,
    modality_patch_discrimination_loss,
    patch_discrimination_loss,
    patchify,
    select_tokens,
    variance_loss,
)
from tests.nn.conftest import ALL_MODALITIES, data_shape


def naive_patch_disc(pred, target, index, tau, reduction="sample"):  # noqa: ANN001, ANN201
    """Plain cross-entropy within each sample (no 2 tau factor)."""
    p, t = F.normalize(pred, dim=-1), F.normalize(target, dim=-1)
    logits = (p @ t.T / tau).masked_fill(index[:, None] != index[None, :], float("-inf"))
    ce = F.cross_entropy(logits, torch.arange(len(p)), reduction="none")
    if reduction == "token":
        return ce.mean()
    return torch.stack([ce[index == i].mean() for i in index.unique()]).mean()


def test_patch_disc_matches_naive_reference() -> None:
    index = torch.tensor([2, 0, 0, 2, 1, 0, 2, 2, 5])  # unsorted, sample 5 alone, gaps
    pred, target = torch.randn(9, 8), torch.randn(9, 8)
    for reduction in ("sample", "token"):
        ref = naive_patch_disc(pred, target, index, 0.2, reduction)
        got = patch_discrimination_loss(pred, target, index, 0.2, reduction=reduction)
        torch.testing.assert_close(got, 0.4 * ref)  # x 2 tau by default, as the reference
        chunked = patch_discrimination_loss(
            pred, target, index, 0.2, reduction=reduction, max_chunk_logits=1, scale_by_tau=False
        )
        torch.testing.assert_close(chunked, ref)


def test_patch_disc_gradients_match_reference() -> None:
    index = torch.tensor([0, 0, 1, 1, 1])
    pred = torch.randn(5, 4, requires_grad=True)
    target = torch.randn(5, 4)
    patch_discrimination_loss(pred, target, index).backward()
    g = pred.grad.clone()
    pred.grad = None
    (0.2 * naive_patch_disc(pred, target, index, 0.1)).backward()
    torch.testing.assert_close(g, pred.grad)


def test_patch_disc_random_is_log_n_and_perfect_is_zero() -> None:
    n = 64
    index = torch.arange(4).repeat_interleave(n)
    loss = patch_discrimination_loss(
        torch.randn(4 * n, 256), torch.randn(4 * n, 256), index, scale_by_tau=False
    )
    assert abs(loss.item() - math.log(n)) < 0.1 * math.log(n)
    same = torch.randn(4 * n, 64)
    assert patch_discrimination_loss(same, same, index, tau=0.01).item() < 1e-3


def test_patch_disc_samples_are_independent() -> None:
    a, b, c = torch.randn(5, 8), torch.randn(7, 8), torch.randn(7, 8)
    ta, tb, tc = torch.randn(5, 8), torch.randn(7, 8), torch.randn(7, 8)
    ia, ib = torch.zeros(5, dtype=torch.long), torch.ones(7, dtype=torch.long)
    la = patch_discrimination_loss(a, ta, ia)
    lb = patch_discrimination_loss(b, tb, ib)
    lc = patch_discrimination_loss(c, tc, ib)
    both = patch_discrimination_loss(torch.cat([a, b]), torch.cat([ta, tb]), torch.cat([ia, ib]))
    other = patch_discrimination_loss(torch.cat([a, c]), torch.cat([ta, tc]), torch.cat([ia, ib]))
    torch.testing.assert_close(both, (la + lb) / 2)
    torch.testing.assert_close(other, (la + lc) / 2)


def test_losses_are_float32_under_bf16_autocast() -> None:
    pred, target = torch.randn(12, 16), torch.randn(12, 16)
    index = torch.tensor([0] * 6 + [1] * 6)
    ref = patch_discrimination_loss(pred.bfloat16().float(), target.bfloat16().float(), index)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = patch_discrimination_loss(pred.bfloat16(), target.bfloat16(), index)
        nce = info_nce_loss(pred.bfloat16(), target.bfloat16())
        mae = mae_loss(pred.bfloat16(), target)
    assert got.dtype == nce.dtype == mae.dtype == torch.float32
    torch.testing.assert_close(got, ref)


def test_empty_inputs_give_zero() -> None:
    pred = torch.zeros(0, 4, requires_grad=True)
    loss = patch_discrimination_loss(pred, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    assert loss.item() == 0.0
    loss.backward()


def test_info_nce() -> None:
    z = torch.randn(8, 32)
    assert info_nce_loss(z, z, tau=0.01).item() < 1e-3
    rnd = info_nce_loss(torch.randn(64, 512), torch.randn(64, 512))
    assert abs(rnd.item() - math.log(64)) < 0.15 * math.log(64)
    z1, z2 = torch.randn(8, 32), torch.randn(8, 32)
    sym = info_nce_loss(z1, z2, symmetric=True)
    torch.testing.assert_close(sym, info_nce_loss(z2, z1, symmetric=True))
    torch.testing.assert_close(sym, 0.5 * (info_nce_loss(z1, z2) + info_nce_loss(z2, z1)))


def test_modality_patch_disc_sums_modalities_and_skips_empty_ones() -> None:
    shape = (2, 2, 2, 3, 1)
    pred = {m: torch.randn(*shape, 8) for m in ("a", "b", "c")}
    target = {m: torch.randn(*shape, 8) for m in ("a", "b", "c")}
    masks = {m: torch.randint(0, 4, shape, dtype=torch.int8) for m in ("a", "b")}
    masks["c"] = torch.zeros(shape, dtype=torch.int8)  # no DECODER token
    total = modality_patch_discrimination_loss(pred, target, masks)
    parts = []
    for m in ("a", "b"):
        rows, index = select_tokens({m: pred[m]}, {m: masks[m]})
        tgt, _ = select_tokens({m: target[m]}, {m: masks[m]})
        parts.append(patch_discrimination_loss(rows, tgt, index))
    torch.testing.assert_close(total, parts[0] + parts[1])
    weighted = modality_patch_discrimination_loss(pred, target, masks, modality_weights={"a": 2.0})
    torch.testing.assert_close(weighted, 2 * parts[0] + parts[1])
    none = {m: torch.zeros(shape, dtype=torch.int8) for m in pred}
    assert modality_patch_discrimination_loss(pred, target, none).item() == 0.0


def test_mae_loss_skips_missing() -> None:
    target = torch.tensor([[1.0, MISSING_VALUE], [3.0, 4.0]])
    pred = torch.tensor([[2.0, 1e6], [3.0, 2.0]])
    assert mae_loss(pred, target).item() == pytest.approx((1 + 0 + 4) / 3)


@pytest.mark.parametrize("patch", [1, 2, 3, 8])
def test_patchify_and_pixel_head_shapes(patch: int) -> None:
    data = {m: torch.randn(data_shape(m, 2, 2 * patch, 3)) for m in ALL_MODALITIES}
    targets = patchify(data, patch)
    head = PixelHead(ALL_MODALITIES, embed_dim=8)
    tokens = {m: torch.randn(*t.shape[:-1], 8) for m, t in targets.items()}
    preds = head(tokens, patch)
    for m in ALL_MODALITIES:
        spec = get_modality(m)
        q = patch * spec.pixels_per_ref_pixel if spec.is_spatial else 1
        c_max = max(len(bs.bands) for bs in spec.band_sets)
        assert targets[m].shape[-1] == q * q * c_max
        assert preds[m].shape == targets[m].shape
        assert torch.isfinite(mae_loss(preds[m], targets[m]))


def test_patchify_layout() -> None:
    x = torch.randn(1, 4, 4, 1, 12)
    t = patchify({"sentinel2_l2a": x}, 2)["sentinel2_l2a"]  # [1, 2, 2, 1, 3, 2*2*6]
    assert t.shape == (1, 2, 2, 1, 3, 24)
    pix = t[0, 1, 0, 0].view(3, 2, 2, 6)  # band set, row, col, channel
    torch.testing.assert_close(pix[0, 1, 1, :4], x[0, 3, 1, 0, :4])
    torch.testing.assert_close(pix[1, 0, 1], x[0, 2, 1, 0, 4:10])
    assert (pix[2, ..., 2:] == MISSING_VALUE).all()  # 2-band set padded to 6


def test_select_tokens() -> None:
    tokens = {"a": torch.arange(8.0).view(2, 2, 1, 1, 2, 1).expand(2, 2, 1, 1, 2, 3)}
    masks = {"a": torch.tensor([2, 0, 1, 2, 0, 0, 2, 3], dtype=torch.int8).view(2, 2, 1, 1, 2)}
    rows, index = select_tokens(tokens, masks, MaskValue.DECODER)
    assert rows[:, 0].tolist() == [0.0, 3.0, 6.0] and index.tolist() == [0, 0, 1]


def test_variance_term_is_zero_when_every_dimension_is_spread_and_grows_as_one_collapses():
    torch.manual_seed(0)
    spread = torch.randn(4096, 8) * 2.0
    assert float(variance_loss(spread)) == 0.0
    collapsed = spread.clone()
    collapsed[:, 3] = 0.5  # one dimension constant: relu(1 - sqrt(eps)) / 8
    torch.testing.assert_close(variance_loss(collapsed), torch.tensor((1 - 1e-2) / 8))
    z = torch.zeros(16, 4, requires_grad=True)
    variance_loss(z + torch.arange(16.0)[:, None] * 1e-3).backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()


def test_covariance_term_counts_only_off_diagonal_covariance():
    torch.manual_seed(0)
    x = torch.randn(20000, 3)
    assert float(covariance_loss(x * torch.tensor([1.0, 5.0, 0.1]))) < 0.02  # variances: free
    a = torch.randn(20000, 1)
    y = torch.cat([a, a, torch.randn(20000, 1)], dim=1)  # cov(0, 1) = 1: 2 * 1^2 / 3
    torch.testing.assert_close(covariance_loss(y), torch.tensor(2 / 3), atol=0.03, rtol=0)
