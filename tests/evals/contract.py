"""The `helios.evals.api` contract, checked over every item of a benchmark reader.

One check for every reader (MADOS, Sen1Floods11, PASTIS, BreizhCrops, GEO-Bench), as timm's
`tests/test_models.py` runs one check over every model. Reader-specific facts (fixture sizes,
band values, dates) stay in each reader's own tests.
"""

from __future__ import annotations

import numpy as np

from helios.data.modalities import MISSING_VALUE, get_modality
from helios.evals.api import EvalDataset


def assert_contract(ds: EvalDataset) -> None:
    """Every item of `ds` follows helios.evals.api (see the checks below).

    - the task: `num_classes` class names; a segmentation `ignore_index` that is no class;
    - arrays: one per task modality, in task order, float32 in the registry layout ([H, W, T, C]
      / [H, W, C] / [T, C], bands in `band_order`), all on one square 10 m grid; values are
      finite, so absent bands, steps and pixels can only be MISSING_VALUE (never NaN);
    - multitemporal modalities: a bool [T] `present` mask whose True count is the stored steps;
    - timestamps int32 [T, 3] (day, month, year); latlon float32 [2], real or MISSING_VALUE;
    - labels: int64 scalar class (classification), float32 0/1 [num_classes] (multilabel), int64
      [H, W] on the 10 m grid with classes or `ignore_index` (segmentation).
    """
    task = ds.task
    assert isinstance(ds, EvalDataset)
    assert task.num_classes == len(task.class_names) > 0
    if task.kind == "segmentation":
        assert not 0 <= task.ignore_index < task.num_classes
    assert len(ds) > 0
    for i in range(len(ds)):
        item = ds[i]
        s, t = item.sample, item.sample.num_timesteps
        assert list(s.arrays) == list(task.modalities)
        assert s.timestamps.dtype == np.int32 and s.timestamps.shape == (t, 3)
        if t:
            day, month = s.timestamps[:, 0], s.timestamps[:, 1]
            assert ((day >= 1) & (day <= 31) & (month >= 1) & (month <= 12)).all()
        assert s.latlon.dtype == np.float32 and s.latlon.shape == (2,)
        if not (s.latlon == MISSING_VALUE).all():
            lat, lon = s.latlon
            assert -90 <= lat <= 90 and -180 <= lon <= 180
        ref = s.ref_size()
        for name, arr in s.arrays.items():
            spec = get_modality(name)
            assert arr.dtype == np.float32 and np.isfinite(arr).all()
            assert arr.ndim == spec.array_ndim() and arr.shape[-1] == spec.num_bands
            if spec.is_spatial:
                side = ref * spec.pixels_per_ref_pixel
                assert ref > 0 and arr.shape[:2] == (side, side)
            if spec.is_multitemporal:
                mask = s.present[name]
                steps = arr.shape[2] if spec.is_spatial else arr.shape[0]
                assert mask.dtype == bool and mask.shape == (t,) and steps == mask.sum()
        label = item.label
        if task.kind == "classification":
            assert label.dtype == np.int64 and label.shape == ()
            assert 0 <= label < task.num_classes
        elif task.kind == "multilabel":
            assert label.dtype == np.float32 and label.shape == (task.num_classes,)
            assert np.isin(label, (0.0, 1.0)).all()
        else:
            assert label.dtype == np.int64 and label.shape == (ref, ref)
            ok = (label == task.ignore_index) | ((label >= 0) & (label < task.num_classes))
            assert ok.all()
