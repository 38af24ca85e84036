"""helios.data.augment: per-view values for the contrastive loss, through tokenizer to model."""

import numpy as np
import pytest
import torch

from helios.data.augment import GainJitter
from helios.data.batching import BatchPlan, SampleTokenizer, collate
from helios.data.datamodule import PretrainDataModule
from helios.data.masking import RandomMasking
from helios.data.modalities import MISSING_VALUE
from helios.data.normalize import Normalizer
from helios.data.synthetic import make_synthetic_dataset
from helios.nn.export import EncoderConfig
from helios.train.pretrain import LatentMIM
from tests.data.test_batching import make_sample

MODS = ("sentinel2_l2a", "sentinel1", "srtm")


def _arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    s2 = rng.uniform(100, 5000, (8, 8, 3, 12)).astype(np.float32)
    s2[0, 0] = MISSING_VALUE
    s1 = rng.uniform(-25, -5, (8, 8, 3, 2)).astype(np.float32)
    srtm = rng.uniform(0, 900, (8, 8, 1, 1)).astype(np.float32)
    return {"sentinel2_l2a": s2, "sentinel1": s1, "srtm": srtm}


def test_gain_scales_reflectance_offsets_decibels_and_leaves_maps_and_missing_alone():
    arrays = _arrays()
    out = GainJitter(max_gain=0.2)(arrays, np.random.default_rng(3))
    s2, s2_in = out["sentinel2_l2a"], arrays["sentinel2_l2a"]
    assert np.all(s2[0, 0] == MISSING_VALUE)
    ratio = s2[1:] / s2_in[1:]
    gain = float(ratio.flat[0])
    assert 0.8 <= gain <= 1.2 and gain != pytest.approx(1.0, abs=1e-4)
    np.testing.assert_allclose(ratio, gain, rtol=1e-5)  # one gain for every pixel and step
    offset = out["sentinel1"] - arrays["sentinel1"]
    np.testing.assert_allclose(offset, offset.flat[0], atol=1e-4)
    assert abs(offset.flat[0]) <= 10 * np.log10(1.2) + 1e-5 and abs(offset.flat[0]) > 1e-4
    assert out["srtm"] is arrays["srtm"]
    assert list(out) == list(arrays)


def test_gain_is_drawn_from_the_generator_only():
    a = GainJitter()(_arrays(), np.random.default_rng(7))
    b = GainJitter()(_arrays(), np.random.default_rng(7))
    c = GainJitter()(_arrays(), np.random.default_rng(8))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["sentinel2_l2a"], c["sentinel2_l2a"])


def test_bad_settings_are_refused_by_name():
    with pytest.raises(ValueError, match="max_gain must be in"):
        GainJitter(max_gain=1.5)
    with pytest.raises(KeyError, match="sentinel2_l1c"):
        GainJitter(reflectance=["sentinel2_l1c"])


def test_tokenizer_gives_each_view_its_values_and_keeps_the_masks():
    sample = make_sample(16, t=3, seed=1)
    plan = BatchPlan(patch_size=4, crop_tokens=4, num_timesteps=3, seed=11)
    mods = ["sentinel2_l2a", "srtm"]
    plain = SampleTokenizer(mods, Normalizer(), RandomMasking(), num_views=2)
    jitter = SampleTokenizer(
        mods, Normalizer(), RandomMasking(), num_views=2, augmentation=GainJitter()
    )
    a = plain(sample, plan, np.random.default_rng(0), 0)
    b = jitter(sample, plan, np.random.default_rng(0), 0)
    assert a.view_data == [] and len(b.view_data) == 2
    for va, vb in zip(a.views, b.views):  # masks are drawn before the augmentation
        assert all(np.array_equal(va[k], vb[k]) for k in va)
    v0, v1 = (v["sentinel2_l2a"] for v in b.view_data)
    assert not np.allclose(v0, v1)
    assert b.data is b.view_data[0]
    np.testing.assert_array_equal(b.view_data[1]["srtm"], a.data["srtm"])  # a map: unchanged

    batch = collate([b, jitter(sample, plan, np.random.default_rng(1), 1)])
    assert len(batch.view_data) == 2 and batch.view_data[1]["sentinel2_l2a"].shape[0] == 2
    assert batch.inputs(1) is batch.view_data[1]
    assert torch.equal(batch.to("cpu").inputs(1)["sentinel2_l2a"], batch.inputs(1)["sentinel2_l2a"])
    unaugmented = collate([a])
    assert unaugmented.inputs(1) is unaugmented.data


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    return make_synthetic_dataset(
        tmp_path_factory.mktemp("syn"), 8, size=16, num_timesteps=3, modalities=MODS, seed=2
    )


def test_datamodule_batches_carry_view_values_and_the_model_reads_them(syn):
    dm = PretrainDataModule(
        str(syn.root), batch_size=4, num_workers=0, patch_sizes=[4], crop_tokens=(4, 4),
        num_views=2, augmentation=GainJitter(max_gain=0.3),
    )  # fmt: skip
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert len(batch.view_data) == 2
    model = LatentMIM(
        modalities=dm.modalities,
        encoder=EncoderConfig(embed_dim=16, depth=1, num_heads=2),
        contrastive_weight=0.1,
    )
    same_masks = type(batch)(**{**batch.__dict__, "masks": [batch.masks[0], batch.masks[0]]})
    with torch.no_grad():
        t0 = model.encoder(same_masks, 0).tokens["sentinel2_l2a"]
        t1 = model.encoder(same_masks, 1).tokens["sentinel2_l2a"]
    assert not torch.allclose(t0, t1)  # the same tokens, from each view's own values
    loss = model.training_step(batch, 0)
    assert torch.isfinite(loss)
    loss.backward()


def test_view_crops_give_each_view_its_own_window_of_the_same_size():
    sample = make_sample(32, t=3, seed=4)
    plan = BatchPlan(patch_size=4, crop_tokens=2, num_timesteps=3, seed=5)
    tok = SampleTokenizer(["srtm"], Normalizer(), RandomMasking(), num_views=2, view_crops=True)
    shared = SampleTokenizer(["srtm"], Normalizer(), RandomMasking(), num_views=2)
    seen = set()
    for seed in range(6):
        item = tok(sample, plan, np.random.default_rng(seed), 0)
        v0, v1 = (v["srtm"] for v in item.view_data)
        assert v0.shape == v1.shape == (8, 8, 1, 1)
        assert item.data is item.view_data[0]
        # SRTM holds each pixel's number: a window's corner value says where it was cut
        seen.add((float(v0[0, 0, 0, 0]), float(v1[0, 0, 0, 0])))
        base = shared(sample, plan, np.random.default_rng(seed), 0)
        np.testing.assert_array_equal(base.data["srtm"], v0)  # view 0 is the shared crop
    assert any(a != b for a, b in seen)
