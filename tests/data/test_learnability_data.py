"""The learnability study's data: balanced classes whose factors leave band means unchanged."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from helios.data.dataset import H5SampleDataset
from helios.data.synthetic import (
    LEARNABILITY_MODALITIES,
    LearnabilityDataset,
    LearnabilityOptions,
    _cell_map,
    _learnability_arrays,
    make_learnability_dataset,
)


def test_written_sets_are_balanced_and_reopen(tmp_path: Path) -> None:
    options = LearnabilityOptions(size=16, cell=8, timesteps=(6, 12))
    data = make_learnability_dataset(tmp_path, 16, 16, options=options, seed=3)
    again = LearnabilityDataset.open(tmp_path)
    assert again.train == data.train and again.heldout == data.heldout
    np.testing.assert_array_equal(again.factors, data.factors)
    assert np.bincount(data.labels, minlength=8).tolist() == [2] * 8
    sample = H5SampleDataset(data.heldout)[0]
    assert set(sample.arrays) == set(LEARNABILITY_MODALITIES)
    assert sample.data["sentinel2_l2a"].shape[:2] == (16, 16)
    assert sample.num_timesteps in (6, 12)


def test_phenology_leaves_the_time_mean_unchanged() -> None:
    """Once or twice a year: the same tile's time means agree, its series do not."""
    arrays = [
        _learnability_arrays(np.random.default_rng(0), np.array([p, 1, 1]), 16, 8, 12, 1.0)
        for p in (0, 1)
    ]
    for name in LEARNABILITY_MODALITIES:
        a, b = (x[name].astype(np.float64) for x in arrays)
        np.testing.assert_allclose(a.mean(axis=2), b.mean(axis=2), rtol=1e-4, atol=1e-2)
        assert np.abs(a - b).max() > 10 * np.abs(a.mean(axis=2) - b.mean(axis=2)).max()


def test_both_textures_cover_half_the_cells() -> None:
    rng = np.random.default_rng(0)
    for clustered in (True, False):
        maps = [_cell_map(rng, 4, clustered) for _ in range(20)]
        assert all(int(m.sum()) == 8 for m in maps)
        same = np.mean([(m[1:] == m[:-1]).mean() + (m[:, 1:] == m[:, :-1]).mean() for m in maps])
        assert (same > 1.2) if clustered else (same < 0.8)  # neighbours agree, or mostly not
