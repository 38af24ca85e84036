"""PretrainDataModule: plans, token budget, masking in workers, determinism, sharding, resume."""

import numpy as np
import pytest
import torch

from helios.data.batching import plan_batch, tokens_per_sample
from helios.data.datamodule import PretrainDataModule
from helios.data.masking import SpaceMasking
from helios.data.modalities import MISSING_VALUE, get_modality
from helios.data.sample import MaskedBatch, MaskValue
from helios.data.synthetic import make_synthetic_dataset

MODS = ("sentinel2_l2a", "sentinel1", "srtm", "worldcover", "era5")


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    return make_synthetic_dataset(
        tmp_path_factory.mktemp("syn"), 12, size=32, num_timesteps=6, modalities=MODS, seed=3
    )


def _dm(root, **kw):
    args = dict(batch_size=4, num_workers=0, seed=7, crop_tokens=(2, 4), patch_sizes=[1, 2, 4, 8])
    args.update(kw)
    dm = PretrainDataModule(str(root), **args)
    dm.setup("fit")
    return dm


def _take(dm, n, consume=True):
    out = []
    for batch in dm.train_dataloader():
        if consume:
            dm.on_after_batch_transfer(batch, 0)
        out.append(batch)
        if len(out) == n:
            break
    return out


def _same(a: MaskedBatch, b: MaskedBatch) -> bool:
    return (
        a.sample_ids == b.sample_ids
        and a.patch_size == b.patch_size
        and all(torch.equal(a.data[k], b.data[k]) for k in a.data)
        and all(torch.equal(x[k], y[k]) for x, y in zip(a.masks, b.masks) for k in x)
        and torch.equal(a.timestamps, b.timestamps)
    )


def test_batches_have_the_contract_shapes(syn):
    dm = _dm(syn.root, num_views=2, masking=SpaceMasking())
    for batch in _take(dm, 3):
        p = batch.patch_size
        b = batch.batch_size
        assert b == 4 and batch.num_views == 2
        t = batch.timestamps.shape[1]
        crop = batch.data["srtm"].shape[1]
        h = crop // p
        assert batch.data["sentinel2_l2a"].shape == (b, crop, crop, t, 12)
        assert batch.data["srtm"].shape == (b, crop, crop, 1, 1)
        assert batch.data["era5"].shape == (b, 1, 1, t, 6)
        assert batch.masks[0]["sentinel2_l2a"].shape == (b, h, h, t, 3)
        assert batch.masks[1]["era5"].shape == (b, 1, 1, t, 1)
        assert batch.masks[0]["sentinel2_l2a"].dtype == torch.int8
        static, per_step = tokens_per_sample(MODS, h, t)
        assert static + per_step * t <= 2250
        for name, mask in batch.masks[0].items():
            spec = get_modality(name)
            data = batch.data[name]
            miss = data == MISSING_VALUE
            k = p * spec.pixels_per_ref_pixel if spec.is_spatial else 1
            if spec.is_spatial:
                bb, hh, ww, tt, c = data.shape
                pix = miss.reshape(bb, hh // k, k, ww // k, k, tt, c).any(2).any(3)
            else:
                pix = miss
            per_set = torch.stack([pix[..., sl].any(-1) for sl in spec.band_set_slices()], -1)
            assert torch.equal(per_set, mask == MaskValue.MISSING), name
            visible = data[~miss]
            assert torch.isfinite(visible).all()
        # both views share missing tokens but differ in what they hide
        for name in batch.masks[0]:
            m0, m1 = batch.masks[0][name], batch.masks[1][name]
            assert torch.equal(m0 == MaskValue.MISSING, m1 == MaskValue.MISSING)
        counts = batch.num_tokens()
        assert counts[MaskValue.ENCODER] > 0 and counts[MaskValue.DECODER] > 0


def test_missing_timesteps_stay_missing(syn):
    dm = _dm(syn.root)
    for batch in _take(dm, 3):
        s2 = batch.data["sentinel2_l2a"]
        all_missing_steps = (s2 == MISSING_VALUE).flatten(1, 2).all(1).all(-1)  # [B, T]
        masks = batch.masks[0]["sentinel2_l2a"]
        for bi, ti in zip(*torch.nonzero(all_missing_steps, as_tuple=True)):
            assert (masks[bi, :, :, ti] == MaskValue.MISSING).all()


def test_token_budget_limits_timesteps():
    rng = np.random.default_rng(0)
    for _ in range(50):
        plan = plan_batch(rng, MODS, 32, [1, 2, 4], (2, 16), 300, 12)
        static, per_step = tokens_per_sample(MODS, plan.crop_tokens, 1)
        assert static + per_step * plan.num_timesteps <= 300 or plan.num_timesteps == 1
        assert plan.crop_tokens * plan.patch_size <= 32


def test_deterministic_for_a_seed_and_independent_of_workers(syn):
    a = _take(_dm(syn.root), 3)
    b = _take(_dm(syn.root, num_workers=2), 3)
    assert all(_same(x, y) for x, y in zip(a, b))
    c = _take(_dm(syn.root, seed=8), 3)
    assert not all(_same(x, y) for x, y in zip(a, c))


def test_shards_across_ranks(syn):
    dm0, dm1 = _dm(syn.root), _dm(syn.root)
    dm0._rank_world = lambda: (0, 2)  # type: ignore[method-assign]
    dm1._rank_world = lambda: (1, 2)  # type: ignore[method-assign]
    b0, b1 = _take(dm0, 10), _take(dm1, 10)
    ids0 = {i for b in b0 for i in b.sample_ids}
    ids1 = {i for b in b1 for i in b.sample_ids}
    assert len(b0) == len(b1) == 12 // 2 // 4
    assert not ids0 & ids1
    # ranks agree on the shape of each step
    assert [b.patch_size for b in b0] == [b.patch_size for b in b1]
    assert [b.data["srtm"].shape for b in b0] == [b.data["srtm"].shape for b in b1]


def test_resume_mid_epoch_continues_the_same_stream(syn):
    full = _take(_dm(syn.root, batch_size=2), 6)
    first = _dm(syn.root, batch_size=2)
    _take(first, 2)
    state = first.state_dict()
    assert state["batches_consumed"] == 2
    resumed = _dm(syn.root, batch_size=2)
    resumed.load_state_dict(state)
    rest = _take(resumed, 4)
    assert all(_same(x, y) for x, y in zip(full[2:], rest))
    # a new epoch starts from its beginning and reshuffles
    loader = resumed.train_dataloader()
    loader.batch_sampler.set_epoch(1)
    epoch1 = next(iter(loader))
    assert epoch1.sample_ids != full[0].sample_ids or epoch1.patch_size != full[0].patch_size


def test_resume_rejects_a_different_seed(syn):
    dm = _dm(syn.root)
    with pytest.raises(ValueError, match="seed"):
        dm.load_state_dict({"epoch": 0, "batches_consumed": 1, "seed": 99})


def test_validation_batches_are_fixed(syn):
    dm = _dm(syn.root, val_samples=4)
    v1 = list(dm.val_dataloader())
    v2 = list(dm.val_dataloader())
    assert len(v1) == 1 and all(_same(x, y) for x, y in zip(v1, v2))
    train_ids = {i for b in _take(dm, 10) for i in b.sample_ids}
    assert not train_ids & set(v1[0].sample_ids)
