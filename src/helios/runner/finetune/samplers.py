"""Samplers: choose which annotation tasks become labeled windows (`window_prep.sampler`).

A sampler receives every task of the export and returns the ones to use. Write your own by
subclassing `Sampler` (typed `__init__`, no `**kwargs`) and naming it by `class_path`.
"""

from __future__ import annotations

import random

from helios.runner.finetune.annotations import AnnotationTask


class Sampler:
    """Base class of samplers."""

    def sample(self, tasks: list[AnnotationTask]) -> list[AnnotationTask]:
        """The tasks to prepare windows for, in their original order."""
        raise NotImplementedError


class NoopSampler(Sampler):
    """Every task (the default when `window_prep` names no sampler)."""

    def sample(self, tasks: list[AnnotationTask]) -> list[AnnotationTask]:
        """All tasks, unchanged."""
        return list(tasks)


class ChooseNSampler(Sampler):
    """A seeded random subset of `n` tasks, e.g. to try a workflow end to end quickly."""

    def __init__(self, n: int, seed: int = 0) -> None:
        """Create the sampler.

        Args:
            n: How many tasks to keep (all of them when there are fewer).
            seed: Seed of the choice; the same seed and tasks give the same subset, whatever
                the order the tasks come in.

        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        self.n = n
        self.seed = seed

    def sample(self, tasks: list[AnnotationTask]) -> list[AnnotationTask]:
        """`n` tasks chosen at random (by task id, so file order does not matter)."""
        if self.n >= len(tasks):
            return list(tasks)
        ids = sorted(t.task_id for t in tasks)
        keep = set(random.Random(self.seed).sample(ids, self.n))
        return [t for t in tasks if t.task_id in keep]


BUILTIN_SAMPLERS: tuple[type[Sampler], ...] = (NoopSampler, ChooseNSampler)
