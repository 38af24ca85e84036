"""Monthly composites: the shared time axis of benchmarks that read irregular acquisitions.

PASTIS and BreizhCrops reduce their per-acquisition series to one composite per calendar month
(the per-element median or mean of the month's valid observations), so a sample has the fixed
12-step monthly axis of Helios pretraining. A month without a valid observation is an absent
timestep; composites carry the 15th of their month as timestamp.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np

from helios.data.modalities import MISSING_VALUE

Aggregation = Literal["median", "mean"]

COMPOSITE_DAY = 15
"""Day of month written into the timestamps of monthly composites."""


def monthly_composite(
    values: np.ndarray, steps: np.ndarray, num_steps: int, method: Aggregation
) -> tuple[np.ndarray, np.ndarray]:
    """Aggregate observations into `num_steps` monthly composites.

    Args:
        values: float [N, ...] observations, NaN where an observation has no valid value.
        steps: int [N], the month index (0..num_steps-1) of each observation; others are dropped.
        num_steps: length of the output time axis.
        method: per-element "median" or "mean" over the valid observations of a month.

    Returns:
        (composites float32 [P, ...] for the P months with any valid value, in order, with
        MISSING_VALUE where an element has none; present bool [num_steps]).

    """
    present = np.zeros(num_steps, dtype=bool)
    out: list[np.ndarray] = []
    reduce = np.nanmedian if method == "median" else np.nanmean
    for step in range(num_steps):
        group = values[steps == step]
        if group.shape[0] == 0 or not np.isfinite(group).any():
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels -> NaN, handled below
            comp = np.asarray(reduce(group, axis=0), dtype=np.float32)
        comp[~np.isfinite(comp)] = MISSING_VALUE
        out.append(comp)
        present[step] = True
    shape = (0, *values.shape[1:])
    return (np.stack(out) if out else np.zeros(shape, dtype=np.float32)), present


def month_steps(dates: Sequence[int], first: tuple[int, int]) -> np.ndarray:
    """Month index of YYYYMMDD dates relative to the month `first` = (year, month)."""
    d = np.asarray(dates, dtype=np.int64)
    return (d // 10000 - first[0]) * 12 + (d // 100 % 100) - first[1]


def month_timestamps(first: tuple[int, int], num_months: int) -> np.ndarray:
    """int32 [num_months, 3] (day, month, year) of consecutive months from `first`."""
    idx = first[1] - 1 + np.arange(num_months)
    return np.stack(
        [np.full(num_months, COMPOSITE_DAY), idx % 12 + 1, first[0] + idx // 12], axis=1
    ).astype(np.int32)
