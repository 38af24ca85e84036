"""helios.data.batching: the typed tokenized item, collation and the labelled collate."""

import numpy as np
import pytest
import torch

from helios.data.batching import (
    BatchPlan,
    LabeledCollate,
    SampleTokenizer,
    TokenizedSample,
    collate,
    to_5d,
)
from helios.data.masking import NoMasking, RandomMasking
from helios.data.modalities import MISSING_VALUE, get_modality
from helios.data.normalize import Normalizer
from helios.data.sample import LabeledSample, MaskedBatch, MaskValue, Sample

MODS = ("sentinel2_l2a", "srtm", "openstreetmap_raster", "era5")
NORM = Normalizer()


def make_sample(size: int, t: int = 3, seed: int = 0) -> Sample:
    """A square sample whose SRTM band holds each pixel's number (`pixel_ids`), plus noise."""
    rng = np.random.default_rng(seed)
    k = get_modality("openstreetmap_raster").pixels_per_ref_pixel
    arrays = {
        "sentinel2_l2a": rng.integers(1, 10000, (size, size, t, 12)).astype(np.uint16),
        "srtm": pixel_ids(size).astype(np.float32)[..., None],
        "openstreetmap_raster": rng.integers(0, 2, (size * k, size * k, 30)).astype(np.float32),
        "era5": rng.normal(size=(t, 6)).astype(np.float32),
    }
    present = {"sentinel2_l2a": np.ones(t, bool), "era5": np.ones(t, bool)}
    stamps = np.array([[1, m + 1, 2020] for m in range(t)], dtype=np.int32)
    latlon = np.array([seed, -seed], dtype=np.float32)
    return Sample(arrays, present, stamps, latlon, source=f"sample{seed}")


def pixel_ids(size: int) -> np.ndarray:
    """int64 [size, size]: a distinct number per pixel (the label of `make_sample`)."""
    return np.arange(size * size, dtype=np.int64).reshape(size, size) + 1


def labeled(sizes: list[int], t: int = 3) -> list[LabeledSample]:
    return [LabeledSample(make_sample(s, t, seed=i), pixel_ids(s)) for i, s in enumerate(sizes)]


def srtm_of(label: np.ndarray) -> torch.Tensor:
    """What the batch's SRTM [H, W] must hold where a label pixel came with its imagery."""
    return torch.from_numpy(NORM("srtm", to_5d("srtm", label.astype(np.float32)[..., None])))[
        ..., 0, 0
    ]


def test_tokenizer_returns_a_typed_item():
    tok = SampleTokenizer(MODS, NORM, RandomMasking(), num_views=2)
    plan = BatchPlan(patch_size=4, crop_tokens=3, num_timesteps=2, seed=0)
    item = tok(make_sample(16), plan, np.random.default_rng(0), 5)
    assert isinstance(item, TokenizedSample)
    assert item.index == 5 and item.patch_size == 4
    assert item.data["sentinel2_l2a"].shape == (12, 12, 2, 12)
    assert item.data["srtm"].shape == (12, 12, 1, 1)
    assert item.data["openstreetmap_raster"].shape == (48, 48, 1, 30)
    assert item.data["era5"].shape == (1, 1, 2, 6)
    assert len(item.views) == 2 and item.views[0]["sentinel2_l2a"].shape == (3, 3, 2, 3)
    assert item.timestamps.shape == (2, 3)


def test_tokenizer_fills_absent_modalities_with_missing_tokens():
    sample = make_sample(8)
    del sample.arrays["srtm"]
    tok = SampleTokenizer(MODS, NORM, NoMasking())
    item = tok(sample, BatchPlan(4, 2, 3, 0), np.random.default_rng(0), 0)
    assert (item.data["srtm"] == MISSING_VALUE).all()
    assert (item.views[0]["srtm"] == MaskValue.MISSING).all()
    assert (item.views[0]["sentinel2_l2a"] == MaskValue.ENCODER).all()


def test_collate_stacks_items_into_a_masked_batch():
    tok = SampleTokenizer(MODS, NORM, RandomMasking(), num_views=2)
    plan = BatchPlan(patch_size=2, crop_tokens=4, num_timesteps=3, seed=0)
    rng = np.random.default_rng(1)
    items = [tok(make_sample(8, seed=i), plan, rng, index) for i, index in enumerate((7, 3))]
    batch = collate(items)
    assert isinstance(batch, MaskedBatch)
    assert batch.sample_ids == [7, 3] and batch.patch_size == 2 and batch.num_views == 2
    assert batch.data["sentinel2_l2a"].shape == (2, 8, 8, 3, 12)
    assert batch.masks[1]["srtm"].shape == (2, 4, 4, 1, 1)
    assert batch.timestamps.dtype == torch.int64 and batch.latlon.dtype == torch.float32
    assert torch.equal(batch.latlon[1], torch.tensor([1.0, -1.0]))
    np.testing.assert_array_equal(batch.data["srtm"][1].numpy(), items[1].data["srtm"])


def test_crop_centres_imagery_and_labels_on_the_patch_grid():
    items = labeled([20, 20])
    batch, y = LabeledCollate(MODS, NORM, patch_size=8, fit="crop")(items)
    # 20 px -> 16 px (two 8 px patches), 2 px off every side
    assert y.shape == (2, 16, 16) and y.dtype == torch.int64
    np.testing.assert_array_equal(y[1].numpy(), pixel_ids(20)[2:18, 2:18])
    for b in range(2):
        assert torch.equal(batch.data["srtm"][b, :, :, 0, 0], srtm_of(y[b].numpy()))
    osm = items[0].sample.arrays["openstreetmap_raster"][8:72, 8:72]  # 4 px per 10 m pixel
    np.testing.assert_array_equal(batch.data["openstreetmap_raster"][0, :, :, 0].numpy(), osm)
    assert batch.sample_ids == [0, 1] and batch.patch_size == 8
    assert (batch.masks[0]["sentinel2_l2a"] == MaskValue.ENCODER).all()


def test_crop_needs_one_sample_size_at_least_a_patch():
    with pytest.raises(ValueError, match="fixed sample size"):
        LabeledCollate(MODS, NORM, 4, fit="crop")(labeled([16, 12]))
    with pytest.raises(ValueError, match="smaller than the patch size"):
        LabeledCollate(MODS, NORM, 8, fit="crop")(labeled([6]))


def test_pad_fills_imagery_with_missing_and_labels_with_ignore_index():
    items = labeled([13, 7])
    batch, y = LabeledCollate(MODS, NORM, patch_size=4, fit="pad", ignore_index=-5)(items)
    assert y.shape == (2, 16, 16) and batch.data["srtm"].shape == (2, 16, 16, 1, 1)
    for b, size in enumerate((13, 7)):
        np.testing.assert_array_equal(y[b, :size, :size].numpy(), pixel_ids(size))
        assert (y[b, size:] == -5).all() and (y[b, :, size:] == -5).all()
        srtm = batch.data["srtm"][b, :, :, 0, 0]
        assert torch.equal(srtm[:size, :size], srtm_of(pixel_ids(size)))
        assert (srtm[size:] == MISSING_VALUE).all() and (srtm[:, size:] == MISSING_VALUE).all()
        osm = batch.data["openstreetmap_raster"][b]
        assert (osm[size * 4 :] == MISSING_VALUE).all()
        # a token with any padded pixel is missing; the rest are visible
        mask = batch.masks[0]["srtm"][b, :, :, 0, 0]
        want = torch.full((4, 4), int(MaskValue.MISSING), dtype=torch.int8)
        want[: size // 4, : size // 4] = int(MaskValue.ENCODER)
        assert torch.equal(mask, want)
    # non-spatial series are not padded
    era5 = NORM("era5", to_5d("era5", items[1].sample.arrays["era5"]))
    np.testing.assert_array_equal(batch.data["era5"][1].numpy(), era5)


def test_pad_keeps_whole_patch_samples_as_they_are():
    items = labeled([16, 16])
    crop, y_crop = LabeledCollate(MODS, NORM, 4, fit="crop")(items)
    pad, y_pad = LabeledCollate(MODS, NORM, 4, fit="pad")(items)
    assert_same(crop, pad)
    assert torch.equal(y_crop, y_pad)


@pytest.mark.parametrize("fit", ["crop", "pad"])
def test_other_labels_are_stacked_with_their_dtype(fit):
    samples = [make_sample(8, seed=i) for i in range(3)]
    scalar = [LabeledSample(s, np.asarray(i, dtype=np.int64)) for i, s in enumerate(samples)]
    _, y = LabeledCollate(MODS, NORM, 4, fit=fit)(scalar)
    assert y.dtype == torch.int64 and y.tolist() == [0, 1, 2]
    multi = [LabeledSample(s, np.eye(3, dtype=np.float32)[i]) for i, s in enumerate(samples)]
    _, y = LabeledCollate(MODS, NORM, 4, fit=fit)(multi)
    assert y.dtype == torch.float32 and torch.equal(y, torch.eye(3))


def test_time_cap_windows_are_reproducible():
    items = labeled([8, 8, 8], t=6)
    a, _ = LabeledCollate(MODS, NORM, 4, max_timesteps=2)(items)
    b, _ = LabeledCollate(MODS, NORM, 4, max_timesteps=2)(items)
    assert a.timestamps.shape == (3, 2, 3)
    assert_same(a, b)


def test_series_only_samples_get_one_patch():
    series = [
        LabeledSample(
            Sample({"era5": s.arrays["era5"]}, {"era5": s.present["era5"]}, s.timestamps, s.latlon),
            np.asarray(1),
        )
        for s in (make_sample(8, seed=i) for i in range(2))
    ]
    for fit in ("crop", "pad"):
        batch, _ = LabeledCollate(MODS, NORM, 4, fit=fit)(series)
        assert batch.data["srtm"].shape == (2, 4, 4, 1, 1)
        assert (batch.masks[0]["srtm"] == MaskValue.MISSING).all()
        assert (batch.masks[0]["era5"] == MaskValue.ENCODER).all()


def assert_same(a: MaskedBatch, b: MaskedBatch) -> None:
    """Two batches hold the same tensors, masks, ids and patch size."""
    assert a.data.keys() == b.data.keys() and a.num_views == b.num_views
    for name in a.data:
        assert torch.equal(a.data[name], b.data[name]), name
        for va, vb in zip(a.masks, b.masks):
            assert torch.equal(va[name], vb[name]), name
    assert torch.equal(a.timestamps, b.timestamps) and torch.equal(a.latlon, b.latlon)
    assert a.patch_size == b.patch_size and a.sample_ids == b.sample_ids
