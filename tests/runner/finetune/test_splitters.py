from __future__ import annotations

import hashlib
import random
from collections import Counter, defaultdict
from datetime import datetime, timezone

import numpy as np
import pytest

from helios.runner.core.geometry import Projection, WindowSpec
from helios.runner.finetune import (
    LabeledWindow,
    Problem,
    RandomDataSplitter,
    SpatialDataSplitter,
)

T0, T1 = datetime(2024, 1, 1, tzinfo=timezone.utc), datetime(2024, 3, 1, tzinfo=timezone.utc)


def windows(n=200, seed=0, spread=20000, size=1, crs="EPSG:32611"):
    """`n` windows at random pixels of a `spread` px square."""
    rng = np.random.default_rng(seed)
    out = []
    for i, (c, r) in enumerate(rng.integers(0, spread, size=(n, 2))):
        spec = WindowSpec(
            Projection(crs, 10, -10), (int(c), int(r), int(c) + size, int(r) + size), T0, T1
        )
        out.append(LabeledWindow(spec, 1, "vector", "t", Problem("a", i, "window")))
    return out


@pytest.mark.parametrize(
    ("props", "match"),
    [
        ((0.8, 0.1, 0.2), "must sum to 1, got 0.8 \\+ 0.1 \\+ 0.2 = 1.1"),
        ((1.2, -0.1, -0.1), "between 0 and 1"),
        ((0.5, 0.2, 0.2), "must sum to 1"),
    ],
)
def test_proportions_must_sum_to_one(props, match):
    with pytest.raises(ValueError, match=match):
        RandomDataSplitter(*props)
    with pytest.raises(ValueError, match=match):
        SpatialDataSplitter(*props, grid_size=100)


def test_random_proportions_and_determinism():
    ws = windows(200)
    splitter = RandomDataSplitter(0.7, 0.2, 0.1, seed=7)
    splits = [splitter.choose_split(w) for w in ws]
    counts = Counter(splits)
    assert abs(counts["train"] / 200 - 0.7) < 0.09
    assert abs(counts["val"] / 200 - 0.2) < 0.07
    assert abs(counts["test"] / 200 - 0.1) < 0.06
    again = RandomDataSplitter(0.7, 0.2, 0.1, seed=7)
    assert splits == [again.choose_split(w) for w in ws]
    other = RandomDataSplitter(0.7, 0.2, 0.1, seed=8)
    assert [other.choose_split(w) for w in ws] != splits
    only_train, no_test = RandomDataSplitter(1, 0, 0), RandomDataSplitter(0.5, 0.5, 0)
    assert {only_train.choose_split(w) for w in ws} == {"train"}
    assert {no_test.choose_split(w) for w in ws} == {"train", "val"}


def test_random_is_upstreams_sequence():
    """One draw of random.Random(seed) per window, in order, as upstream."""
    ws = windows(20)
    draws = random.Random(42)
    expect = []
    for _ in ws:
        r = draws.random()
        expect.append("train" if r < 0.6 else "val" if r < 0.8 else "test")
    splitter = RandomDataSplitter(0.6, 0.2, 0.2, seed=42)
    assert [splitter.choose_split(w) for w in ws] == expect
    assert splitter.choose_split(ws[3]) == expect[3]  # a window seen before keeps its split
    splitter.reset()
    assert [splitter.choose_split(w) for w in reversed(ws)] == expect  # order decides


def test_random_stable_depends_only_on_the_window():
    ws = windows(100)
    splitter = RandomDataSplitter(0.7, 0.2, 0.1, seed=7, stable=True)
    splits = [splitter.choose_split(w) for w in ws]
    assert [splitter.choose_split(w) for w in reversed(ws[:50])] == list(reversed(splits[:50]))
    assert len(set(splits)) == 3


def test_spatial_cells_never_span_two_splits():
    ws = windows(400, seed=1, spread=3000)  # ~ 9 windows per 100 px cell
    splitter = SpatialDataSplitter(0.6, 0.2, 0.2, grid_size=100)
    by_cell = defaultdict(set)
    for w in ws:
        by_cell[splitter.cell(w)].add(splitter.choose_split(w))
    assert len(by_cell) > 300 // 3  # many cells
    assert all(len(s) == 1 for s in by_cell.values())
    cell_splits = Counter(next(iter(s)) for s in by_cell.values())
    assert set(cell_splits) == {"train", "val", "test"}
    assert abs(cell_splits["train"] / len(by_cell) - 0.6) < 0.1
    for seed in (None, 0, 1):  # whatever the salt, windows of one cell share a split
        seeded = SpatialDataSplitter(0.6, 0.2, 0.2, grid_size=100, seed=seed)
        cells = defaultdict(set)
        for w in ws:
            cells[seeded.cell(w)].add(seeded.choose_split(w))
        assert all(len(s) == 1 for s in cells.values())


def test_spatial_is_upstreams_hash():
    w = windows(1, spread=1, size=63, crs="EPSG:32637")[0]
    w.spec = WindowSpec(w.spec.projection, (16889, -5064, 16952, -5001), T0, T1)
    ints = SpatialDataSplitter(0.8, 0.1, 0.1, grid_size=10)
    floats = SpatialDataSplitter(0.8, 0.1, 0.1, grid_size=10.0)
    assert ints.cell_id(w) == "EPSG:32637_1688_-507"  # floor division of the min corner
    assert floats.cell_id(w) == "EPSG:32637_1688.0_-507.0"  # as upstream: another hash
    h = int(hashlib.sha256(b"EPSG:32637_1688.0_-507.0").hexdigest(), 16) / 2**256
    assert floats.choose_split(w) == ("train" if h < 0.8 else "val" if h < 0.9 else "test")


def test_spatial_cell_units_and_zones():
    w = windows(1, spread=1)[0]  # pixel (0, 0) .. (1, 1)
    pixels = SpatialDataSplitter(0.6, 0.2, 0.2, grid_size=100)
    metres = SpatialDataSplitter(0.6, 0.2, 0.2, grid_size=1000, grid_units="metres")
    assert pixels.cell(w) == ("EPSG:32611", 0, 0)
    assert metres.cell(w) == ("EPSG:32611", 0.0, 0.0)
    big = windows(1, spread=1, size=250)[0]  # the min corner decides, not the centre
    assert pixels.cell(big) == ("EPSG:32611", 0, 0)
    other_zone = windows(1, spread=1, crs="EPSG:32612")[0]
    assert pixels.cell(other_zone)[0] == "EPSG:32612"
    salted = SpatialDataSplitter(0.6, 0.2, 0.2, 100, seed=1)
    assert salted.cell_id(w) == "1_EPSG:32611_0_0"
