from __future__ import annotations

import pytest

from helios.runner.finetune import ChooseNSampler, NoopSampler, load_annotations
from tests.runner.data.annotations import point_export


@pytest.fixture
def tasks(tmp_path):
    return load_annotations(point_export(seed=0, tasks=10, points_per_task=1).write(tmp_path)).tasks


def test_noop_keeps_everything(tasks):
    assert NoopSampler().sample(tasks) == tasks


def test_choose_n_counts_and_determinism(tasks):
    chosen = ChooseNSampler(4, seed=1).sample(tasks)
    assert len(chosen) == 4
    assert [t.task_id for t in chosen] == [t.task_id for t in tasks if t in chosen]  # file order
    again = ChooseNSampler(4, seed=1).sample(list(reversed(tasks)))
    assert {t.task_id for t in again} == {t.task_id for t in chosen}  # order does not matter
    subsets = {
        frozenset(t.task_id for t in ChooseNSampler(4, seed=s).sample(tasks)) for s in range(6)
    }
    assert len(subsets) > 1  # the seed matters
    assert ChooseNSampler(50).sample(tasks) == tasks
    assert ChooseNSampler(0).sample(tasks) == []
    with pytest.raises(ValueError, match="n must be >= 0"):
        ChooseNSampler(-1)
